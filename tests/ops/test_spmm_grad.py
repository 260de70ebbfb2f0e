"""Gradients through spmm with respect to x and the bias (stoicc_ext.autograd); the compressed
weight is frozen and a gradient for it is refused.

The op takes fp16/bf16 only, so ``torch.autograd.gradcheck`` (float64 finite differences) cannot
run on it directly, nor in fp32. It runs on a float64 wrapper, ``x -> spmm(x.half(), Wc).double()``,
on values chosen so that fp16 is exact: weight entries multiples of 1/8 in [-1/2, 1/2], x and
bias multiples of 1/16 in [-9/16, 9/16], perturbation eps = 1/16. Every product is then a
multiple of 1/128 and every output below 16 in magnitude, which fp16 holds exactly, so the
finite differences are exact and gradcheck's default tolerances apply. Random fp16/bf16 inputs
are checked against F.linear's gradient in float64 with the rounding bound of the output dtype.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import stoicc_ext
from stoicc_ext.testing import UNIT_ROUNDOFF, random_patch_weight
from stoicc_ext.tuning.densify import densify_linear

from conftest import DEVICES, needs_ext
from model_helpers import hidden, patch_model

pytestmark = needs_ext


def weight(N, K, dtype=torch.float16, device="cpu", seed=0, grid=None):
    g = torch.Generator().manual_seed(seed)
    W, _ = random_patch_weight(N, K, 0.6, 0.1, dtype=torch.float32, generator=g)
    if grid is not None:
        W = (W * grid).round().clamp(-grid // 2, grid // 2) / grid
    return W.to(dtype=dtype, device=device)


def test_gradcheck_on_an_exact_float64_wrapper():
    W = weight(128, 128, grid=8)
    Wc = stoicc_ext.compress(W, 128, 128)
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(-9, 10, (3, 128), generator=g) / 16).double().requires_grad_()
    b = (torch.randint(-9, 10, (128,), generator=g) / 16).double().requires_grad_()

    def f(x, b):
        return stoicc_ext.spmm(x.half(), Wc, b.half()).double()

    assert torch.equal(f(x, b), x.detach() @ W.double().T + b.detach())    # exact, as the docstring says
    assert torch.autograd.gradcheck(f, (x, b), eps=1 / 16, atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_grad_matches_f_linear(device, dtype):
    N, K, M = 256, 384, 5
    W = weight(N, K, dtype, device)
    Wc = stoicc_ext.compress(W, 128, 128)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, M, K, generator=g).to(dtype=dtype, device=device).requires_grad_()
    b = torch.randn(N, generator=g).to(dtype=dtype, device=device).requires_grad_()
    gy = torch.randn(2, M, N, generator=g).to(dtype=dtype, device=device)
    stoicc_ext.spmm(x, Wc, b).backward(gy)
    xd, bd = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    F.linear(xd, W.double(), bd).backward(gy.double())
    eps = UNIT_ROUNDOFF[dtype]
    for got, ref in ((x.grad, xd.grad), (b.grad, bd.grad)):
        assert got.dtype == dtype and got.shape == ref.shape
        scale = ref.abs().max().item()
        assert (got.double() - ref).abs().max().item() <= 4 * eps * scale, "gradient off by more than rounding"


def test_executor_and_no_grad_paths():
    """The executors of inspect are differentiable too; with no gradient wanted they make the plain
    op call (no graph recorded)."""
    N, K = 256, 256
    W = weight(N, K)
    x = torch.randn(4, K).half()
    ex, cfg = stoicc_ext.Inspector(verbose=False).inspect(x, W)
    Wc = stoicc_ext.compress(W, cfg)
    xg = x.clone().requires_grad_()
    y = ex(xg, *Wc, **cfg)
    assert y.grad_fn is not None
    y.float().sum().backward()
    assert torch.allclose(xg.grad.float(), W.float().sum(0).expand(4, K), atol=1e-2, rtol=1e-2)
    with torch.no_grad():
        assert ex(xg, *Wc, **cfg).grad_fn is None
    assert ex(x, *Wc, **cfg).grad_fn is None


def test_weight_gradient_is_refused():
    W = weight(256, 256)
    Wc = stoicc_ext.compress(W, 128, 128)
    x = torch.randn(4, 256).half()
    for i in (2, 6):
        ts = list(Wc)
        ts[i] = ts[i].clone().requires_grad_()
        name = Wc.names[i]
        with pytest.raises(RuntimeError, match=f"{name} requires grad, but the compressed weight is frozen"):
            stoicc_ext.spmm(x, stoicc_ext.CompressedWeight(ts, **Wc._kwargs()))
        with pytest.raises(RuntimeError, match=f"{name} requires grad"):
            densify_linear(x, *ts, BLOCK_N=128, BLOCK_K=128)
        with torch.no_grad():                      # no gradient wanted: runs
            stoicc_ext.spmm(x, stoicc_ext.CompressedWeight(ts, **Wc._kwargs()))


def test_mixed_module_backward_to_x(fresh_tuning_cache):
    """A converted model passes gradients to its input (an adapter upstream would train), equal to
    the dense model's within fp16 rounding."""
    dense = patch_model(n_layers=1)
    model = copy.deepcopy(dense)
    stoicc_ext.sparsify_(model, decode_tokens=8, prefill_tokens=64, verbose=False)
    for n_tokens in (3, 50):                       # decode and prefill executors
        x = hidden(n_tokens).requires_grad_()
        sum(o.float().sum() for o in model(x)).backward()
        xr = hidden(n_tokens).float().requires_grad_()
        sum(o.sum() for o in dense.float()(xr)).backward()
        dense.half()
        err = (x.grad.float() - xr.grad).norm() / xr.grad.norm()
        assert x.grad is not None and err < 2e-2, f"{n_tokens} tokens: relative error {err:.3g}"
