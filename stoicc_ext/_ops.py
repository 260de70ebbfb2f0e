"""Python side of the torch.ops.stoicc ops: fake (meta) kernels for torch.compile / FakeTensor,
and thin helpers. The ops themselves are defined and implemented in C++ (csrc/ops.cpp).

Per call, `torch.ops.stoicc.spmm` is one dispatcher call: nothing here sits on the hot path.
"""
import torch

from ._library import extension_loaded, extension_error


def _require_extension():
    if not extension_loaded:
        raise RuntimeError(f"stoicc_ext: the compiled extension is not available ({extension_error})")


if extension_loaded:

    @torch.library.register_fake("stoicc::spmm")
    def _spmm_fake(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                   dense_values, bias, N, K, block_n, block_k, instance=-1, split_k=0):
        torch._check(x.dim() == 2, lambda: "stoicc.spmm: x must be 2-D (M, K)")
        torch._check(x.shape[1] == K, lambda: f"stoicc.spmm: x has {x.shape[1]} columns but K={K}")
        torch._check(x.dtype in (torch.float16, torch.bfloat16), lambda: "stoicc.spmm: x must be fp16 or bf16")
        return x.new_empty((x.shape[0], N))

    @torch.library.register_fake("stoicc::densify")
    def _densify_fake(sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                      dense_values, N, K, block_n, block_k):
        torch._check(dense_values.dtype in (torch.float16, torch.bfloat16),
                     lambda: "stoicc.densify: dense_values must be fp16 or bf16")
        return dense_values.new_empty((N, K))


def spmm(x, Wc, bias=None, *, instance=-1, split_k=0):
    """Y = x @ W.T (+ bias) from the compressed weight `Wc` (a CompressedWeight).

    `x` may have leading batch dimensions; they are flattened for the op and restored.
    `instance` (an index into list_instances()) and `split_k` force a kernel; -1 / 0 let the
    built-in heuristic choose (the Inspector tunes them instead).
    """
    _require_extension()
    lead = x.shape[:-1]
    y = torch.ops.stoicc.spmm(x.reshape(-1, x.shape[-1]), *Wc, bias, Wc.N, Wc.K, Wc.block_n, Wc.block_k,
                              instance, split_k)
    return y.reshape(*lead, Wc.N)


def densify(Wc):
    """The dense ``[N, K]`` weight of ``Wc`` as one ``torch.ops.stoicc.densify`` call (a CUDA kernel
    on the GPU; the C++ reference on the CPU). Same values as ``stoicc_ext.decompress``, which
    also validates the tuple and is the reference the tests compare it with."""
    _require_extension()
    return torch.ops.stoicc.densify(*Wc, Wc.N, Wc.K, Wc.block_n, Wc.block_k)


# The built-in kernel choice (csrc/dispatch.cpp), for a device given by its properties: the same
# C++ code that spmm runs when no instance is forced, callable without a GPU.

def choose_config(M, N, K, block_n, block_k, n_sparse, n_dense, *, sm_count, cc, max_smem_optin, max_smem_per_sm,
                  instances=()):
    """``(instance index, split_k)`` the heuristic picks (instance -1: none fits), among
    ``instances`` (indices) when given."""
    _require_extension()
    inst, split = torch.ops.stoicc.choose_config(M, N, K, block_n, block_k, n_sparse, n_dense, sm_count, cc,
                                                 max_smem_optin, max_smem_per_sm, list(instances))
    return inst, split


def stream_k_max_ctas(n_sparse, n_dense):
    """The most CTAs a stream_k launch may use on a weight with these stored tile counts."""
    _require_extension()
    return torch.ops.stoicc.stream_k_max_ctas(n_sparse, n_dense)
