"""The fake (meta) kernels check devices as the real kernels do: torch runs them whenever one
argument is on ``meta``, so a CPU x with a bias or weight tensor left on meta must raise, naming
the tensor, as F.linear does, instead of returning uninitialized CPU memory."""
import pytest
import torch
import torch.nn.functional as F

import stoicc_ext
from stoicc_ext.testing import random_patch_weight
from stoicc_ext.tuning.kernels import kernel_config

from conftest import needs_ext

pytestmark = needs_ext
N, K = 256, 256


def case():
    g = torch.Generator().manual_seed(0)
    W, _ = random_patch_weight(N, K, 0.5, 0.1, dtype=torch.float16, generator=g)
    return W, stoicc_ext.compress(W, 128, 128), torch.randn(4, K, generator=g).half(), torch.randn(N).half()


def on_meta(Wc, i):
    return stoicc_ext.CompressedWeight([t.to("meta") if j == i else t for j, t in enumerate(Wc)], **Wc._kwargs())


def test_spmm_meta_mixed_with_cpu_raises():
    W, Wc, x, bias = case()
    with pytest.raises(RuntimeError, match="expected device cpu"):           # what F.linear does
        F.linear(x, W, bias.to("meta"))
    with pytest.raises(RuntimeError, match="stoicc.spmm: bias is on device meta but x is on cpu"):
        stoicc_ext.spmm(x, Wc, bias.to("meta"))
    for i, name in enumerate(Wc.names):
        with pytest.raises(RuntimeError, match=f"stoicc.spmm: {name} is on device meta but x is on cpu"):
            stoicc_ext.spmm(x, on_meta(Wc, i), bias)
    with pytest.raises(RuntimeError, match="stoicc.spmm: sparse_row_ptr is on device cpu but x is on meta"):
        stoicc_ext.spmm(x.to("meta"), Wc)
    y = stoicc_ext.spmm(x.to("meta"), Wc.to("meta"), bias.to("meta"))       # all on meta: shapes only
    assert y.device.type == "meta" and y.shape == (4, N) and y.dtype == torch.float16


def test_densify_meta_mixed_with_cpu_raises():
    _, Wc, _, _ = case()
    for i, name in enumerate(Wc.names[:6]):
        with pytest.raises(RuntimeError, match=f"stoicc.densify: {name} is on device meta but dense_values is on cpu"):
            stoicc_ext.ops.densify(on_meta(Wc, i))
    with pytest.raises(RuntimeError, match="sparse_row_ptr is on device cpu but dense_values is on meta"):
        stoicc_ext.ops.densify(on_meta(Wc, 6))
    W = stoicc_ext.ops.densify(Wc.to("meta"))
    assert W.device.type == "meta" and W.shape == (N, K)


def test_mixed_module_with_bias_left_on_meta_raises():
    _, Wc, x, bias = case()
    e = next(e for e in stoicc_ext.list_instances() if (e["BLOCK_N"], e["BLOCK_K"]) == (128, 128)
             and e["schedule"] == "sequential")
    cfg = kernel_config(e, 1)
    ex = stoicc_ext.executor_for(cfg, N, K)
    mm = stoicc_ext.MixedModule(Wc, ex, ex, cfg, cfg, N, K, bias=bias)
    mm.bias = mm.bias.to("meta")
    with pytest.raises(RuntimeError, match="bias is on device meta but x is on cpu"):
        mm(x)
