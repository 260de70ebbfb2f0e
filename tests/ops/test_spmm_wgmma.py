"""The Hopper prefill kernels (families "wgmma" and "wgmma2": wgmma.sp for 2:4 tiles, wgmma for
dense tiles, sm_90a only) against a float64 reference on fresh random PATCH-like weights: every
compiled instance, fp16 and bf16, every tile shape, ragged M around the token block, rows with only
2:4 tiles, only dense tiles or nothing, bias; bitwise repeatability and CUDA-graph replay. The
"wgmma2" kernels (two tile rows per CTA on the union of their K tiles: 2 x 128 rows x 128 tokens,
or 2 x 64 rows x 256 tokens) also get weights built tile by tile: pairs of rows with disjoint /
shared / no K tiles, odd tile-row counts (the last CTA has one row), unsorted tile lists and
corrupted indices."""
import pytest
import torch

import stoicc_ext
from stoicc_ext import TileType, classify_tiles
from stoicc_ext.testing import prune_to_24, random_patch_weight

from conftest import assert_matches, needs_ext, poison_allocator, reference

IS_SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
pytestmark = [needs_ext, pytest.mark.gpu,
              pytest.mark.skipif(not IS_SM90, reason="the wgmma kernels need an sm_90 GPU (H100/H200)")]

DTYPES = [torch.float16, torch.bfloat16]
BLOCKS = [(128, 128), (128, 64), (64, 128), (64, 64)]


WGMMA_FAMILIES = ("wgmma", "wgmma2")


def wgmma_instances(bn, bk, families=WGMMA_FAMILIES):
    """The compiled instances of the Hopper prefill families for bn x bk tiles (wgmma for every
    tile shape; wgmma2, 256 tokens, for 64-row tiles only)."""
    return [e for e in stoicc_ext.list_instances() if e["family"] in families
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
    check_repeatable_and_graph_replay(W, stoicc_ext.compress(W, bn, bk), wgmma_instances(bn, bk), g)


def check_repeatable_and_graph_replay(W, Wc, insts, g, M=300):
    """12 back-to-back launches into poisoned outputs give the same bits and the right answer; a
    CUDA-graph capture replayed on new X gives the right answer too. W is bf16."""
    N, K = W.shape
    for inst in insts:
        x = torch.randn(M, K, generator=g).bfloat16().cuda()
        ref = reference(x, W)
        outs = []
        for _ in range(12):
            poison_allocator("cuda", M * N * 2)
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
        x.copy_(torch.randn(M, K, generator=g).bfloat16().cuda())
        graph.replay()
        torch.cuda.synchronize()
        assert_matches(y_graph, reference(x, W), torch.bfloat16, f"{inst['name']} graph replay")


# ---- two tile rows per CTA (family "wgmma2") ------------------------------------------------

WGMMA2_BLOCKS = [(64, 128), (64, 64)]  # generated for 64-row tiles only: m256, one m64n256 per row


def wgmma2_instances(bn, bk):
    insts = wgmma_instances(bn, bk, families=("wgmma2",))
    assert insts, f"no compiled wgmma2 instance for {bn}x{bk} tiles"
    return insts


def tiled_weight(TR, TC, bn, bk, dtype, seed):
    """W [TR * bn, TC * bk] built tile by tile (bn x bk tiles), the kind chosen per tile row r:
    r % 7 = 0: 2:4 at even K tiles, EMPTY at odd; 1: DENSE at odd, EMPTY at even (so rows 0 and 1,
    which share a CTA, never have a tile at the same K); 2, 3, 4: random kinds (rows 2 and 3 share
    some K tiles with different kinds); 5: all EMPTY; 6: all DENSE. Returns (W, g)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.arange(TC)
    E, S, D = int(TileType.EMPTY), int(TileType.SPARSE_24), int(TileType.DENSE)
    kinds = torch.empty(TR, TC, dtype=torch.int8)
    for r in range(TR):
        p = r % 7
        if p == 0:
            kinds[r] = torch.where(c % 2 == 0, S, E)
        elif p == 1:
            kinds[r] = torch.where(c % 2 == 1, D, E)
        elif p == 5:
            kinds[r] = E
        elif p == 6:
            kinds[r] = D
        else:
            kinds[r] = torch.randint(0, 3, (TC,), generator=g).to(torch.int8)
            kinds[r, :3] = torch.tensor([E, S, D], dtype=torch.int8)[torch.randperm(3, generator=g)]
    W = (torch.rand(TR * bn, TC * bk, generator=g) * 0.9 + 0.1) * (torch.randint(0, 2, (TR * bn, TC * bk), generator=g) * 2 - 1)
    W = W.to(dtype)
    per_elem = kinds.repeat_interleave(bn, 0).repeat_interleave(bk, 1)
    W = torch.where(per_elem == S, prune_to_24(W), W)
    W = torch.where(per_elem == E, torch.zeros((), dtype=dtype), W)
    assert torch.equal(classify_tiles(W, bn, bk), kinds)
    return W.cuda(), g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bn,bk", WGMMA2_BLOCKS)
@pytest.mark.parametrize("tile_rows", [3, 5, 7])
def test_wgmma2_row_pairs_and_odd_tile_rows(dtype, bn, bk, tile_rows):
    """Row pairs with disjoint K sets, shared K tiles of different kinds, an empty row beside a
    full one, and (odd tile-row counts) a last CTA with one row, whose missing second row must
    not be written: ragged M (around both token blocks, 128 and 256), bias and no bias, outputs
    poisoned."""
    W, g = tiled_weight(tile_rows, 12, bn, bk, dtype, seed=tile_rows * 31 + bk)
    N, K = W.shape
    bias = torch.randn(N, generator=g).to(dtype).cuda()
    Wc = stoicc_ext.compress(W, bn, bk)
    for M in (1, 127, 128, 200, 256, 300, 513):
        x = torch.randn(M, K, generator=g).to(dtype).cuda()
        ref_b, ref = reference(x, W, bias), reference(x, W)
        for inst in wgmma2_instances(bn, bk):
            poison_allocator("cuda", M * N * 2)
            assert_matches(stoicc_ext.spmm(x, Wc, bias, instance=inst["index"], split_k=1), ref_b, dtype,
                           f"{inst['name']} TR={tile_rows} M={M}")
            poison_allocator("cuda", M * N * 2)
            assert_matches(stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=1), ref, dtype,
                           f"{inst['name']} TR={tile_rows} M={M} no bias")


def _reverse_rows(Wc):
    """Wc with each tile row's sparse and dense lists (and their tiles) in descending K order: the
    same weight, stored against the format's ascending rule."""
    t = [x.clone() for x in Wc]
    for ptr_i, cols_i, vals, per_tile in ((0, 1, (2, 3), (Wc.block_n * Wc.block_k // 2, Wc.block_n * Wc.block_k // 32)),
                                          (4, 5, (6,), (Wc.block_n * Wc.block_k,))):
        ptr = Wc[ptr_i].tolist()
        for r in range(len(ptr) - 1):
            a, b = ptr[r], ptr[r + 1]
            if b - a < 2:
                continue
            t[cols_i][a:b] = Wc[cols_i][a:b].flip(0)
            for vi, n in zip(vals, per_tile):
                t[vi][a * n:b * n] = Wc[vi][a * n:b * n].view(b - a, n).flip(0).reshape(-1)
    return stoicc_ext.CompressedWeight(t, **Wc._kwargs())


@pytest.mark.parametrize("bn,bk", WGMMA2_BLOCKS)
def test_wgmma2_unsorted_lists_still_sum_every_tile(bn, bk):
    """The producer merges the two rows' lists by comparing heads, so every stored tile is used
    exactly once whatever the order: descending lists give the same product (only the X sharing
    between the rows is lost)."""
    W, g = tiled_weight(5, 12, bn, bk, torch.float16, seed=7 + bk)
    Wc = _reverse_rows(stoicc_ext.compress(W, bn, bk))
    x = torch.randn(200, W.shape[1], generator=g).half().cuda()
    for inst in wgmma2_instances(bn, bk):
        poison_allocator("cuda", 200 * W.shape[0] * 2)
        assert_matches(stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=1), reference(x, W), torch.float16,
                       f"{inst['name']} unsorted")


@pytest.mark.parametrize("bn,bk", WGMMA2_BLOCKS)
def test_wgmma2_corrupted_indices_never_fault(bn, bk):
    """Clamped CSR ranges and K indices: a corrupted tuple gives garbage, never a fault or a hang."""
    W, g = tiled_weight(5, 12, bn, bk, torch.float16, seed=11 + bk)
    Wc = stoicc_ext.compress(W, bn, bk)
    x = torch.randn(130, W.shape[1], generator=g).half().cuda()
    bad = [
        {1: lambda c: torch.full_like(c, 10 ** 6), 5: lambda c: torch.full_like(c, -(10 ** 6))},
        {0: lambda p: torch.full_like(p, 10 ** 6), 4: lambda p: torch.full_like(p, -5)},
        {0: lambda p: p.flip(0), 4: lambda p: p.flip(0)},
    ]
    for inst in wgmma2_instances(bn, bk):
        for edits in bad:
            t = [edits[i](x_) if i in edits else x_ for i, x_ in enumerate(Wc)]
            y = stoicc_ext.spmm(x, stoicc_ext.CompressedWeight(t, **Wc._kwargs()), instance=inst["index"], split_k=1)
            torch.cuda.synchronize()
            assert y.shape == (130, W.shape[0])


@pytest.mark.parametrize("bn,bk", WGMMA2_BLOCKS)
def test_wgmma2_repeatable_and_graph_replay_odd_tile_rows(bn, bk):
    """Long rows (48 K tiles: every stage refilled many times; the row pairs have different step
    counts, so the END stage falls on different stages and phases in different CTAs) with 5 tile
    rows, so the last CTA holds one row: same bits over back-to-back launches into poisoned
    outputs, and a graph replay on new X."""
    W, g = tiled_weight(5, 48, bn, bk, torch.bfloat16, seed=3 * bk + 1)
    check_repeatable_and_graph_replay(W, stoicc_ext.compress(W, bn, bk), wgmma2_instances(bn, bk), g)
