"""The built-in kernel schedules: the compiled instances of one schedule ("sequential",
"split_k", "stream_k"), their configs and the executors ``inspect`` returns for them."""
import functools
from typing import Any, Callable

import torch

from ..autograd import grad_wanted, spmm_recording
from ..ops import list_instances, stream_k_max_ctas
from .configs import ConfigSpace, with_aliases
from .schedules import Candidate, TunedSchedule

__all__ = ["BUILTIN_SCHEDULES", "KernelSchedule", "executor_for", "is_kernel_config", "SPLITS"]

BUILTIN_SCHEDULES = ("sequential", "split_k", "stream_k")
# split_k values tried (filtered per problem by KernelSchedule.splits; bench/bench_kernels.py sweeps
# the candidates, so the same).
SPLITS = (1, 2, 3, 4, 6, 8, 12, 16)


@functools.lru_cache(maxsize=None)
def compiled_instances():
    """Compiled instances of this build (list_instances(), read once)."""
    return tuple(list_instances())


def instance_by_name(name):
    return next((e for e in compiled_instances() if e["name"] == name), None)


def kernel_config(e, split):
    """The config of instance ``e`` at ``split`` (what ``inspect`` returns)."""
    return with_aliases(dict(BLOCK_M=e["BLOCK_M"], BLOCK_N=e["BLOCK_N"], BLOCK_K=e["BLOCK_K"],
                             num_warps=e["num_warps"], num_stages=e["num_stages"], schedule=e["schedule"],
                             SPLIT_K=int(split), instance=e["name"]))


def is_kernel_config(config):
    """Whether ``config`` names a compiled instance of a built-in schedule."""
    return config.get("schedule") in BUILTIN_SCHEDULES and "instance" in config


def executor_for(config: dict[str, Any], N: int, K: int) -> Callable[..., torch.Tensor]:
    """The executor of a built-in config (as ``inspect`` returns): a closure that makes one
    ``torch.ops.stoicc.spmm`` call with the instance and split fixed.

    ``executor(x, *Wc, bias=None, **ignored)``: ``x`` is ``[M, K]``; ``N=`` and ``K=`` keyword
    arguments, if given, override the baked-in sizes (``MixedModule``'s forward passes them);
    every other keyword (``M=``, the config's own keys) is ignored. ``executor.bound_shape`` =
    (N, K) tells ``MixedModule`` that the config is fixed inside, so it can call ``executor(x,
    *Wc, bias=b)`` without re-passing the config on every call.
    """
    e = instance_by_name(config.get("instance"))
    if e is None:
        raise ValueError(f"config names instance {config.get('instance')!r}, which this build does not have "
                         f"(see stoicc_ext.list_instances())")
    op = torch.ops.stoicc.spmm.default
    idx, split = int(e["index"]), int(config.get("SPLIT_K", 0))
    bn, bk = int(e["BLOCK_N"]), int(e["BLOCK_K"])
    N0, K0 = int(N), int(K)

    def executor(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                 dense_values, bias=None, N=N0, K=K0, **_ignored):
        if grad_wanted(x, sparse_values, dense_values, bias):   # the op has no autograd kernel: stoicc_ext.autograd
            return spmm_recording(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr,
                                  dense_cols, dense_values, bias, N, K, bn, bk, idx, split)
        return op(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                  dense_values, bias, N, K, bn, bk, idx, split)

    executor.__name__ = executor.__qualname__ = f"stoicc_{e['name']}_split{split}"
    executor.__doc__ = (f"torch.ops.stoicc.spmm with instance {e['name']} (index {idx}), SPLIT_K={split}, "
                        f"{bn}x{bk} tiles; call as executor(x, *Wc, bias=None, **config).")
    executor.config = dict(config)
    executor.instance_index = idx
    executor.bound_shape = (N0, K0)
    return executor


class KernelSchedule(TunedSchedule):
    """The compiled instances of one built-in schedule, optionally restricted by the configs of
    the user's ``Schedule()`` given under its name."""

    must_capture = True

    def __init__(self, name, spec=None):
        self.name = name
        self.restricted = spec is not None and spec.configs is not None
        self.constraints = spec.filter_constraints() if spec is not None else {}
        self.filter = ConfigSpace(self.constraints) if self.constraints else None

    def signature(self):
        return dict(name=self.name, builtin=True,
                    filter=ConfigSpace(self.constraints).signature() if self.restricted else None)

    def allows(self, config, space):
        """Whether ``config`` is in the config space (None: any) and this schedule's restriction."""
        if space is not None and not space.allows(config):
            return False
        return self.filter is None or self.filter.allows(config)

    def splits(self, e, M, N, K, props, counts):
        """The split values timed for instance ``e`` (and swept by bench/bench_kernels.py);
        ``counts``: the weight's (2:4, dense) tile counts at its tile shape, or None."""
        if e["schedule"] == "sequential":
            return [1]
        sms = props.sm_count
        if e["schedule"] == "stream_k":
            gs = [0, sms, 2 * sms]
            if counts is not None:
                cap = stream_k_max_ctas(*counts)
                gs = [g for g in gs if g == 0 or g <= cap]
            return gs
        tiles = -(-M // e["BLOCK_M"]) * (N // e["BLOCK_N"])
        hopper = props.cc >= 90
        return [s for s in SPLITS
                if s == 1 or not (tiles * s > 8 * sms or s > K // e["BLOCK_K"] or (s > 8 and hopper))]

    def candidate(self, e, split):
        return Candidate(self, kernel_config(e, split), instance=e, split=int(split))

    def instance_candidates(self, M, N, K, props, counts, space):
        """Every compiled instance of this schedule that fits W's shape and the device, at each of
        its splits, within the config space. ``counts(bn, bk)``: W's tile counts, or None."""
        out = []
        for e in compiled_instances():
            if e["schedule"] != self.name:
                continue
            bn, bk = e["BLOCK_N"], e["BLOCK_K"]
            if N % bn or K % bk or e["smem_bytes"] > props.max_smem_optin or props.cc < e["min_sm"]:
                continue
            if e.get("exact_sm") and (props.cc != e["min_sm"] or not props.arch_specific):
                continue  # sm_90a code runs on sm_90 only; a portable choice leaves it out
            for split in self.splits(e, M, N, K, props, counts(bn, bk)):
                c = self.candidate(e, split)
                if self.allows(c.config, space):
                    out.append(c)
        return out

    def launch_fn(self, cand, X, N, K):
        op = torch.ops.stoicc.spmm.default
        e = cand.instance
        idx, split, bn, bk = e["index"], cand.split, e["BLOCK_N"], e["BLOCK_K"]
        return lambda *w: op(X, *w, None, N, K, bn, bk, idx, split)

    def bind(self, config, N, K):
        e = instance_by_name(config.get("instance"))
        if e is None or e["schedule"] != self.name:
            return None
        cfg = kernel_config(e, int(config.get("SPLIT_K", 0)))
        return executor_for(cfg, N, K), cfg
