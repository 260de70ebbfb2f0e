"""Python side of the torch.ops.stoicc ops: fake (meta) kernels for torch.compile / FakeTensor,
thin wrappers, and the compiled kernel instances (the manifest stoicc_ext/instances.json, written
by csrc/generate_instances.py, checked against the registry compiled into the binary). The ops
themselves are defined and implemented in C++ (csrc/ops.cpp).

Per call, `torch.ops.stoicc.spmm` is one dispatcher call: nothing here sits on the hot path.
"""
import functools
import json
import os
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ._library import extension_loaded, extension_error
from .autograd import spmm as _spmm_op

if TYPE_CHECKING:
    from .format.compressed import CompressedWeight


def _require_extension():
    if not extension_loaded:
        raise RuntimeError(f"stoicc_ext: the compiled extension is not available ({extension_error})")


_WEIGHT_NAMES = ("sparse_row_ptr", "sparse_cols", "sparse_values", "sparse_meta", "dense_row_ptr", "dense_cols",
                 "dense_values")


def _check_devices(op, ref_name, ref, named):
    """Every tensor of ``named`` (name -> tensor or None) on ``ref``'s device, as the real kernels
    check. The fake kernels run whenever one argument is on ``meta``: without this, a CPU x with a
    bias left on meta returned uninitialized CPU memory."""
    for name, t in named.items():
        if t is not None and t.device != ref.device:
            raise RuntimeError(f"{op}: {name} is on device {t.device} but {ref_name} is on {ref.device}: every tensor "
                               f"must be on {ref_name}'s device (Tensor on device {t.device} is not on the expected "
                               f"device {ref.device}!)")


if extension_loaded:

    @torch.library.register_fake("stoicc::spmm")
    def _spmm_fake(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                   dense_values, bias, N, K, block_n, block_k, instance=-1, split_k=0):
        _check_devices("stoicc.spmm", "x", x, dict(zip(_WEIGHT_NAMES, (
            sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols, dense_values)),
            bias=bias))
        torch._check(x.dim() == 2, lambda: "stoicc.spmm: x must be 2-D (M, K)")
        torch._check(x.shape[1] == K, lambda: f"stoicc.spmm: x has {x.shape[1]} columns but K={K}")
        torch._check(x.dtype in (torch.float16, torch.bfloat16), lambda: "stoicc.spmm: x must be fp16 or bf16")
        return x.new_empty((x.shape[0], N))

    @torch.library.register_fake("stoicc::densify")
    def _densify_fake(sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                      dense_values, N, K, block_n, block_k):
        _check_devices("stoicc.densify", "dense_values", dense_values, dict(zip(_WEIGHT_NAMES[:6], (
            sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols))))
        torch._check(dense_values.dtype in (torch.float16, torch.bfloat16),
                     lambda: "stoicc.densify: dense_values must be fp16 or bf16")
        return dense_values.new_empty((N, K))


def spmm(x: torch.Tensor, Wc: "CompressedWeight", bias: torch.Tensor | None = None, *, instance: int = -1,
         split_k: int = 0) -> torch.Tensor:
    """Y = x @ W.T (+ bias) from the compressed weight `Wc` (a CompressedWeight).

    `x` may have leading batch dimensions; they are flattened for the op and restored.
    `instance` (an index into list_instances()) and `split_k` force a kernel; -1 / 0 let the
    built-in heuristic choose (the Inspector tunes them instead). Differentiable with respect to
    `x` and `bias` (stoicc_ext.autograd); the compressed weight is frozen.
    """
    _require_extension()
    flat = x.dim() != 2  # a 2-D x is the op's own shape: no reshapes (about 1 us of host time each)
    y = _spmm_op(x.reshape(-1, x.shape[-1]) if flat else x, *Wc, bias, Wc.N, Wc.K, Wc.block_n, Wc.block_k,
                 instance, split_k)
    return y.reshape(*x.shape[:-1], Wc.N) if flat else y


def densify(Wc):
    """The dense ``[N, K]`` weight of ``Wc`` as one ``torch.ops.stoicc.densify`` call (a CUDA kernel
    on the GPU; the C++ reference on the CPU). Same values as ``stoicc_ext.decompress``, which
    also validates the tuple and is the reference the tests compare it with."""
    _require_extension()
    return torch.ops.stoicc.densify(*Wc, Wc.N, Wc.K, Wc.block_n, Wc.block_k)


# The built-in kernel choice (csrc/dispatch.cpp), for a device given by its properties: the same
# C++ code that spmm runs when no instance is forced, callable without a GPU.

def choose_config(M, N, K, block_n, block_k, n_sparse, n_dense, props, instances=()):
    """``(instance index, split_k)`` the heuristic picks (instance -1: none fits) on the device that
    ``props`` describes (its ``sm_count``, ``cc``, ``max_smem_optin``, ``max_smem_per_sm``), among
    ``instances`` (indices) when given."""
    _require_extension()
    inst, split = torch.ops.stoicc.choose_config(M, N, K, block_n, block_k, n_sparse, n_dense, props.sm_count,
                                                 props.cc, props.max_smem_optin, props.max_smem_per_sm,
                                                 list(instances))
    return inst, split


def stream_k_max_ctas(n_sparse, n_dense):
    """The most CTAs a stream_k launch may use on a weight with these stored tile counts."""
    _require_extension()
    return torch.ops.stoicc.stream_k_max_ctas(n_sparse, n_dense)


# --- The compiled kernel instances ----------------------------------------------------------

MANIFEST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instances.json")
# ScheduleId (csrc/common.h) by value.
SCHEDULE_NAMES = ("sequential", "split_k", "stream_k")


class InstanceInfo(NamedTuple):
    """One instance as the binary's registry describes it (``torch.ops.stoicc.instance_info``)."""
    block_m: int
    block_n: int
    block_k: int
    warps_n: int
    warps_m: int
    stages: int
    schedule: str       # "sequential", "split_k" or "stream_k"
    min_sm: int         # lowest compute capability, major * 10 + minor
    smem_bytes: int     # dynamic shared memory per CTA
    compiled: bool      # False: this build left it out (STOICC_INSTANCES)
    exact_sm: bool      # arch-specific code (sm_90a wgmma kernels): runs on min_sm only


def instance_info(index):
    """The registry's record of instance ``index`` (an ``InstanceInfo``)."""
    v = torch.ops.stoicc.instance_info(index)
    return InstanceInfo(*v[:6], SCHEDULE_NAMES[v[6]], v[7], v[8], bool(v[9]), bool(v[10]))


@functools.lru_cache(maxsize=None)
def manifest() -> dict[str, Any]:
    """The manifest as a dict: generator, manifest_hash, instances (list of dicts)."""
    with open(MANIFEST_PATH) as f:
        return json.load(f)


def list_instances(compiled_only: bool = True) -> list[dict[str, Any]]:
    """Instance dicts (index, name, BLOCK_M/N/K, num_warps, num_stages, schedule, why, ...).

    Raises RuntimeError if the binary was built from another instance list than the manifest,
    which would make instance indices point at the wrong kernels.
    """
    man = manifest()
    out = []
    if extension_loaded:
        binary_hash = torch.ops.stoicc.manifest_hash()
        if binary_hash != man["manifest_hash"]:
            raise RuntimeError(
                f"stoicc_ext: the compiled extension (instance hash {binary_hash}) does not match "
                f"instances.json ({man['manifest_hash']}); rebuild with pip install .")
    for entry in man["instances"]:
        e = dict(entry)
        e["compiled"] = bool(extension_loaded and instance_info(e["index"]).compiled)
        if e["compiled"] or not compiled_only:
            out.append(e)
    return out
