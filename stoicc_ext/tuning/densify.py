"""The ``densify`` schedule: expand the compressed weight into a dense scratch with
``torch.ops.stoicc.densify`` and hand the GEMM to cuBLAS (``F.linear``).

Why: at prefill sizes (M in the thousands) the GEMM is compute bound. cuBLAS on Hopper runs
wgmma/TMA kernels at about twice the FLOP rate of our mma.sync tile-sparse kernels, and the
expansion costs one read of the compressed bytes and one write of the dense bytes: 10-30 % of
the M = 2048 GEMM's time on an H100, so densify + cuBLAS runs at 0.72-0.92x of dense cuBLAS,
against 0.33-0.50x for the compiled instances. At decode sizes the tile-sparse kernels win by
reading fewer bytes, so the Inspector times this schedule beside the built-in ones and keeps
whichever is faster; the model stays compressed in memory either way. The price: while a layer runs, one
dense copy of that layer's weight lives in torch's caching allocator (it is freed, and reused
by the next layer, as soon as the call returns).

It is a launcher schedule (``DensifySchedule``, a ``UserSchedule`` whose executor fixes the tile
shape) that ``Inspector`` includes with ``use_default_configs=True``; its configs are the four tile
shapes, and its compressor is ``stoicc_ext.compress``, so the weight it reads is the same
``CompressedWeight`` that the kernel schedules read.
"""
import torch
import torch.nn.functional as F

from ..autograd import refuse_weight_grad
from .schedules import Schedule, UserSchedule

__all__ = ["DENSIFY", "DensifySchedule", "densify_linear", "densify_schedule", "densify_executor"]

DENSIFY = "densify"
TILE_CONFIGS = dict(BLOCK_N=[128, 64], BLOCK_K=[128, 64])


def densify_linear(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                   dense_values, bias=None, *, BLOCK_N, BLOCK_K, **_ignored):
    """``x @ W.T (+ bias)`` as densify + ``F.linear``. N follows from the row pointers and the tile
    height, K from ``x``; the ``M=/N=/K=`` keywords that executors receive are ignored."""
    K = x.shape[-1]
    if torch.is_grad_enabled():     # F.linear gives x and bias their gradients; the expansion has none
        refuse_weight_grad("stoicc densify", sparse_values, dense_values)
    N = (sparse_row_ptr.shape[0] - 1) * BLOCK_N
    W = torch.ops.stoicc.densify.default(sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr,
                                         dense_cols, dense_values, N, K, BLOCK_N, BLOCK_K)
    return F.linear(x, W, bias)


def densify_executor(cfg):
    """The executor of a ``densify`` config (as ``inspect`` returns it, and as a saved model is
    rebuilt with): ``executor(x, *Wc, bias=None, **ignored)``, the tile shape fixed inside."""
    bn, bk = int(cfg["BLOCK_N"]), int(cfg["BLOCK_K"])

    def executor(x, *Wc, bias=None, **_ignored):
        return densify_linear(x, *Wc, bias=bias, BLOCK_N=bn, BLOCK_K=bk)

    executor.__name__ = executor.__qualname__ = f"stoicc_densify_{bn}x{bk}"
    executor.config = dict(cfg)
    executor.bound_shape = None     # config fixed; N and K follow from the weight and x
    return executor


class DensifySchedule(UserSchedule):
    """The ``densify`` schedule: ``densify_linear`` over the four tile shapes; its executors are
    ``densify_executor``'s (tile shape fixed inside, like the kernel schedules' executors)."""

    def __init__(self, name=DENSIFY):
        super().__init__(name, Schedule(densify_linear, None, dict(TILE_CONFIGS)))

    def executor(self, full, added_keys):
        return densify_executor(full)


def densify_schedule():
    """The schedule ``Inspector(use_default_configs=True)`` adds under the name ``"densify"``."""
    return DensifySchedule()
