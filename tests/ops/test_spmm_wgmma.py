"""The Hopper prefill kernels (family "wgmma": wgmma.sp for 2:4 tiles, wgmma for dense tiles,
sm_90a only) against a float64 reference on fresh random PATCH-like weights: every compiled
instance, fp16 and bf16, every tile shape, ragged M around the token block, rows with only 2:4
tiles, only dense tiles or nothing, bias; bitwise repeatability and CUDA-graph replay."""
import pytest
import torch

import stoicc_ext
from stoicc_ext.testing import random_patch_weight

from conftest import assert_matches, needs_ext, poison_allocator, reference

IS_SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
pytestmark = [needs_ext, pytest.mark.gpu,
              pytest.mark.skipif(not IS_SM90, reason="the wgmma kernels need an sm_90 GPU (H100/H200)")]

DTYPES = [torch.float16, torch.bfloat16]
BLOCKS = [(128, 128), (128, 64), (64, 128), (64, 64)]


def wgmma_instances(bn, bk):
    return [e for e in stoicc_ext.list_instances() if e["name"].startswith("wgmma")
            and e["BLOCK_N"] == bn and e["BLOCK_K"] == bk]


def make_weight(N, K, frac, dtype, seed, empty=0.15):
    g = torch.Generator().manual_seed(seed)
    W, _ = random_patch_weight(N, K, frac, empty, dtype=dtype, device="cuda", generator=g, row_pattern="both")
    return W, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bn,bk", BLOCKS)
def test_every_wgmma_instance(dtype, bn, bk):
    insts = wgmma_instances(bn, bk)
    assert insts, f"no compiled wgmma instance for {bn}x{bk} tiles"
    N, K = 640, 1408  # 5 / 10 tile rows, 11 / 22 tile columns: ragged rows of all three kinds
    W, g = make_weight(N, K, 0.5, dtype, seed=bn * 3 + bk)
    bias = torch.randn(N, generator=g).to(dtype).cuda()
    Wc = stoicc_ext.compress(W, bn, bk)
    for M in (1, 77, 128, 255, 256, 300, 513):
        x = torch.randn(M, K, generator=g).to(dtype).cuda()
        ref = reference(x, W, bias)
        for inst in insts:
            poison_allocator("cuda", M * N * 2)
            y = stoicc_ext.spmm(x, Wc, bias, instance=inst["index"], split_k=1)
            assert_matches(y, ref, dtype, f"{inst['name']} M={M}")
            poison_allocator("cuda", M * N * 2)
            y = stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=1)
            assert_matches(y, reference(x, W), dtype, f"{inst['name']} M={M} no bias")


@pytest.mark.parametrize("frac", [0.0, 1.0])
def test_wgmma_all_dense_and_all_sparse(frac):
    """Weights of one tile kind only (f = 0: the dense wgmma alone; f = 1: wgmma.sp alone)."""
    N, K = 512, 2048
    W, g = make_weight(N, K, frac, torch.float16, seed=int(frac * 7) + 1, empty=0.0)
    x = torch.randn(384, K, generator=g).half().cuda()
    ref = reference(x, W)
    for bn, bk in BLOCKS:
        Wc = stoicc_ext.compress(W, bn, bk)
        for inst in wgmma_instances(bn, bk):
            poison_allocator("cuda", 384 * N * 2)
            assert_matches(stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=1), ref, torch.float16,
                           f"{inst['name']} f={frac}")


@pytest.mark.parametrize("bn,bk", BLOCKS)
def test_wgmma_repeatable_and_graph_replay(bn, bk):
    """Long rows through a deep pipeline: every stage refilled many times. Back-to-back launches
    into poisoned outputs give the same bits (a stage overwritten early would show as a moving
    error), and a CUDA-graph replay gives them too."""
    N, K = 256, 8192
    W, g = make_weight(N, K, 0.6, torch.bfloat16, seed=bn + bk, empty=0.05)
    Wc = stoicc_ext.compress(W, bn, bk)
    for inst in wgmma_instances(bn, bk):
        x = torch.randn(300, K, generator=g).bfloat16().cuda()
        ref = reference(x, W)
        outs = []
        for _ in range(12):
            poison_allocator("cuda", 300 * N * 2)
            outs.append(stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=1))
        torch.cuda.synchronize()
        for i, y in enumerate(outs[1:], 1):
            assert torch.equal(y, outs[0]), f"{inst['name']}: launch {i} differs from launch 0"
        assert_matches(outs[0], ref, torch.bfloat16, inst["name"])
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=1)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            y_graph = stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=1)
        x.copy_(torch.randn(300, K, generator=g).bfloat16().cuda())
        graph.replay()
        torch.cuda.synchronize()
        assert_matches(y_graph, reference(x, W), torch.bfloat16, f"{inst['name']} graph replay")
