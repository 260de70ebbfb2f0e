"""Gradients through ``stoicc.spmm`` with respect to x and the bias; the compressed weight is frozen.

``y = x @ W.T + b`` gives ``dx = dy @ W`` and ``db = dy.sum(0)``. W is expanded once per backward by
``stoicc.densify`` (the densify schedule's expansion) and the product runs on cuBLAS (torch.matmul
on the CPU): the case of adapters (LoRA and the like) trained on a PATCH model, where only the
activations need gradients. A gradient for the compressed values is refused when the forward runs:
they are not parameters (fine-tune the dense weight and compress again).

Why not ``torch.library.register_autograd`` on the op: it puts a Python kernel on the path of every
call, gradient wanted or not (10-12 us per eager call measured on the 2-core development machine,
several us on a server CPU), against the target of at most 2 us of host time above ``F.linear``. So
``torch.ops.stoicc.spmm`` stays one C++ dispatcher call (a direct call is not differentiable: torch
warns at backward), and the library's callers of the op (``stoicc_ext.spmm``, the executors of
``executor_for`` and so ``MixedModule``) go through ``spmm`` below, which costs one grad-mode check
when no gradient is wanted.
"""
import torch

__all__ = ["spmm", "spmm_recording", "grad_wanted", "refuse_weight_grad"]


def refuse_weight_grad(op, sparse_values, dense_values):
    for name, t in (("sparse_values", sparse_values), ("dense_values", dense_values)):
        if t.requires_grad:
            raise RuntimeError(
                f"{op}: {name} requires grad, but the compressed weight is frozen: stoicc computes gradients "
                "for x and the bias only. Train adapters beside it (e.g. LoRA), or fine-tune the dense weight and "
                "compress it again; .detach() the compressed tensors to run the op.")


def grad_wanted(x, sparse_values, dense_values, bias):
    """Whether a call must record a backward: grad mode is on and x, the bias or the compressed values
    require grad (the last is refused)."""
    return torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)
                                        or sparse_values.requires_grad or dense_values.requires_grad)


class _Spmm(torch.autograd.Function):
    @staticmethod
    def forward(*args):
        return torch.ops.stoicc.spmm.default(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[1:8])        # the seven compressed tensors: references, no copy
        ctx.shape = inputs[9:13]                   # N, K, block_n, block_k

    @staticmethod
    def backward(ctx, gy):
        needs = ctx.needs_input_grad
        gx = gb = None
        if needs[0]:
            W = torch.ops.stoicc.densify.default(*ctx.saved_tensors, *ctx.shape)
            gx = gy.to(W.dtype) @ W
        if needs[8]:
            gb = gy.sum(0, dtype=torch.float32).to(gy.dtype)
        return (gx,) + (None,) * 7 + (gb,) + (None,) * 6


def spmm(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols, dense_values, bias,
         N, K, block_n, block_k, instance=-1, split_k=0):
    """``torch.ops.stoicc.spmm`` with the same arguments, differentiable with respect to x and bias."""
    args = (x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols, dense_values, bias,
            N, K, block_n, block_k, instance, split_k)
    if not grad_wanted(x, sparse_values, dense_values, bias):
        return torch.ops.stoicc.spmm.default(*args)
    return spmm_recording(*args)


def spmm_recording(*args):
    """``spmm`` for a call that ``grad_wanted`` said must record a backward (the executors check
    first themselves, so that the no-gradient call stays one check and one op call)."""
    refuse_weight_grad("stoicc.spmm", args[3], args[7])
    return _Spmm.apply(*args)
