"""torch.ops.stoicc.spmm against a float64 reference on fresh random PATCH-like weights.

CPU runs the reference implementation; CUDA runs every compiled instance that can take the
weight's tile shape (sequential and split-K schedules), so the whole registry is covered.
"""
import itertools

import pytest
import torch

import stoicc_ext
from stoicc_ext.ops import instance_info
from stoicc_ext.testing import random_patch_weight

from conftest import DEVICES, assert_matches, needs_cuda, needs_ext, poison_allocator, reference

pytestmark = needs_ext

DTYPES = [torch.float16, torch.bfloat16]
BLOCKS = [(128, 128), (128, 64), (64, 128), (64, 64)]
# (sm_count, cc, max_smem_optin, max_smem_per_sm) of an H100 SXM and an H200, an A100 and an L4
H100 = (132, 90, 232448, 233472)
A100 = (108, 80, 166912, 167936)
L4 = (58, 89, 101376, 102400)


def make_case(N, K, frac, dtype, device, seed, empty=0.1, row_pattern="both"):
    g = torch.Generator().manual_seed(seed)
    W, _ = random_patch_weight(N, K, frac, empty if frac < 1.0 else 0.0, dtype=dtype, device=device,
                               generator=g, row_pattern=row_pattern if N >= 256 else None)
    return W, g


def instances_for(block_n, block_k):
    return [e for e in stoicc_ext.list_instances() if e["BLOCK_N"] == block_n and e["BLOCK_K"] == block_k]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("frac", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("M", [1, 3, 16, 17, 100])
def test_spmm_default_choice(device, dtype, frac, M):
    """Heuristic instance choice over the M grid, all tile-type mixes, with bias."""
    N, K = 256, 512
    W, g = make_case(N, K, frac, dtype, device, seed=M * 10 + int(frac * 10))
    Wc = stoicc_ext.compress(W, 128, 128)
    x = torch.randn(M, K, generator=g).to(dtype).to(device)
    bias = torch.randn(N, generator=g).to(dtype).to(device)
    poison_allocator(device, M * N * 2)
    y = stoicc_ext.spmm(x, Wc, bias)
    assert y.shape == (M, N) and y.dtype == dtype and y.device.type == device
    assert_matches(y, reference(x, W, bias), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(384, 256), (128, 1024), (512, 384)])
def test_spmm_shapes(device, dtype, N, K):
    """Several N and K (ragged tile counts per row) with every PATCH sub-tile shape."""
    W, g = make_case(N, K, 0.6, dtype, device, seed=N + K)
    x = torch.randn(33, K, generator=g).to(dtype).to(device)
    ref = reference(x, W)
    for bn, bk in BLOCKS:
        Wc = stoicc_ext.compress(W, bn, bk)
        poison_allocator(device, 33 * N * 2)
        assert_matches(stoicc_ext.spmm(x, Wc), ref, dtype, f"block {bn}x{bk}")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bn,bk", BLOCKS)
def test_every_instance(dtype, bn, bk):
    """Each compiled instance, both schedules, several split counts, M below/at/above its block."""
    N, K = 512, 1024
    W, g = make_case(N, K, 0.5, dtype, "cuda", seed=bn * 7 + bk)
    bias = torch.randn(N, generator=g).to(dtype).cuda()
    Wc = stoicc_ext.compress(W, bn, bk)
    insts = instances_for(bn, bk)
    assert insts, f"no compiled instance for {bn}x{bk}"
    for inst, M in itertools.product(insts, [1, 16, 17, 64, 130]):
        x = torch.randn(M, K, generator=g).to(dtype).cuda()
        ref = reference(x, W, bias)
        splits = {"split_k": [1, 3, 7], "stream_k": [1, 2, 5, 0], "sequential": [1]}[inst["schedule"]]
        for s in splits:
            poison_allocator("cuda", M * N * 2)
            y = stoicc_ext.spmm(x, Wc, bias, instance=inst["index"], split_k=s)
            assert_matches(y, ref, dtype, f"{inst['name']} split_k={s} M={M}")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("bn,bk", BLOCKS)
def test_pipeline_slot_reuse_is_race_free(bn, bk):
    """Long rows through few CTAs: every pipeline slot is refilled dozens of times while the
    previous item's readers may still be in it (on sm_90 a producer warp runs ahead of the
    compute warps, guarded only by per-slot mbarriers). Back-to-back launches (PDL lets each
    start early) into freshly poisoned outputs must give the same bits every time, and the
    right answer: a slot overwritten too early shows up as a moving error."""
    N, K = 256, 16384
    W, g = make_case(N, K, 0.5, torch.float16, "cuda", seed=bn + 3 * bk)
    Wc = stoicc_ext.compress(W, bn, bk)
    for inst in instances_for(bn, bk):
        if inst["BLOCK_M"] > 64:
            continue
        M = inst["BLOCK_M"] - 1 if inst["BLOCK_M"] > 1 else 1
        x = torch.randn(M, K, generator=g).half().cuda()
        split = 1 if inst["schedule"] != "stream_k" else 2
        outs = []
        for _ in range(24):
            poison_allocator("cuda", M * N * 2)
            outs.append(stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=split))
        torch.cuda.synchronize()
        for i, y in enumerate(outs[1:], 1):
            assert torch.equal(y, outs[0]), f"{inst['name']}: launch {i} differs from launch 0"
        assert_matches(outs[0], reference(x, W), torch.float16, inst["name"])


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_m2048(dtype):
    N, K = 512, 768
    W, g = make_case(N, K, 0.7, dtype, "cuda", seed=2048)
    x = torch.randn(2048, K, generator=g).to(dtype).cuda()
    for bn, bk in BLOCKS:
        Wc = stoicc_ext.compress(W, bn, bk)
        poison_allocator("cuda", 2048 * N * 2)
        assert_matches(stoicc_ext.spmm(x, Wc), reference(x, W), dtype, f"block {bn}x{bk}")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("schedule", ["split_k", "stream_k"])
def test_split_schedules_are_deterministic_and_graph_safe(schedule):
    """Split-K / stream-K sum partials in a fixed order (bitwise repeatable) and their counters
    reset themselves, so capture + many replays give the same bits as eager."""
    N, K, M = 1024, 2048, 16
    W, g = make_case(N, K, 0.5, torch.float16, "cuda", seed=5)
    Wc = stoicc_ext.compress(W, 128, 128)
    inst = next(e for e in instances_for(128, 128) if e["schedule"] == schedule)
    x = torch.randn(M, K, generator=g).half().cuda()
    y0 = stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=8)
    for _ in range(3):
        assert torch.equal(stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=8), y0)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=8)  # warm-up off the default stream
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y_g = stoicc_ext.spmm(x, Wc, instance=inst["index"], split_k=8)
    for _ in range(5):
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y_g, y0)
    assert_matches(y0, reference(x, W), torch.float16)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_stream_k_uneven_rows(dtype):
    """Stream-K ranges cross rows of very different cost: empty rows, 2:4-only rows, dense-only
    rows, one-tile rows; every G from 1 to the maximum."""
    N, K = 1024, 1024
    W, g = make_case(N, K, 0.5, dtype, "cuda", seed=21, empty=0.3)
    W[128:256] = 0                     # an empty tile row
    W[256:384, 128:] = 0               # a row with one tile
    bias = torch.randn(N, generator=g).to(dtype).cuda()
    x = torch.randn(16, K, generator=g).to(dtype).cuda()
    ref = reference(x, W, bias)
    for bn, bk in BLOCKS:
        Wc = stoicc_ext.compress(W, bn, bk)
        for inst in (e for e in instances_for(bn, bk) if e["schedule"] == "stream_k"):
            cost = 9 * Wc.num_sparse_tiles + 16 * Wc.num_dense_tiles
            for G in sorted({1, 2, 3, 7, 13, 64, max(1, cost // 16)}):
                if G > cost // 16 and G > 1:
                    continue
                poison_allocator("cuda", 16 * N * 2)
                y = stoicc_ext.spmm(x, Wc, bias, instance=inst["index"], split_k=G)
                assert_matches(y, ref, dtype, f"{inst['name']} G={G}")


@pytest.mark.parametrize("device", DEVICES)
def test_strided_and_batched_input(device):
    """Non-contiguous x (a column slice) and misaligned rows are copied, not misread."""
    N, K = 256, 256
    W, g = make_case(N, K, 0.5, torch.float16, device, seed=9)
    Wc = stoicc_ext.compress(W, 128, 64)
    big = torch.randn(8, 2 * K + 1, generator=g).half().to(device)
    for x in (big[:, :K], big[:, 1:K + 1], big[:, ::2][:, :K], big[:, :K].t().contiguous().t()):
        assert_matches(stoicc_ext.spmm(x, Wc), reference(x, W), torch.float16)
    x3 = torch.randn(2, 5, K, generator=g).half().to(device)
    y3 = stoicc_ext.spmm(x3, Wc)
    assert y3.shape == (2, 5, N)
    assert_matches(y3.reshape(10, N), reference(x3.reshape(10, K), W), torch.float16)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_rows_and_all_empty(device):
    """A weight with a fully EMPTY tile row, and a fully EMPTY weight: output is the bias."""
    N, K = 256, 256
    W, g = make_case(N, K, 0.5, torch.float16, device, seed=11, row_pattern=None)
    W[:128] = 0
    bias = torch.randn(N, generator=g).half().to(device)
    x = torch.randn(4, K, generator=g).half().to(device)
    assert_matches(stoicc_ext.spmm(x, stoicc_ext.compress(W, 128, 128), bias), reference(x, W, bias), torch.float16)
    Z = torch.zeros_like(W)
    y = stoicc_ext.spmm(x, stoicc_ext.compress(Z, 64, 64), bias)
    assert torch.equal(y, bias.expand(4, N))


@pytest.mark.parametrize("device", DEVICES)
def test_zero_rows(device):
    W, g = make_case(128, 128, 1.0, torch.float16, device, seed=1)
    y = stoicc_ext.spmm(torch.empty(0, 128, dtype=torch.float16, device=device), stoicc_ext.compress(W))
    assert y.shape == (0, 128)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    W, g = make_case(256, 256, 0.5, torch.float16, device, seed=3)
    Wc = stoicc_ext.compress(W, 128, 128)
    x = torch.randn(5, 256, generator=g).half().to(device)
    bias = torch.randn(256, generator=g).half().to(device)
    for b in (None, bias):
        torch.library.opcheck(torch.ops.stoicc.spmm.default, (x, *Wc, b, 256, 256, 128, 128, -1, 0))


def test_opcheck_introspection_ops():
    torch.library.opcheck(torch.ops.stoicc.num_instances.default, ())
    torch.library.opcheck(torch.ops.stoicc.instance_info.default, (0,))
    torch.library.opcheck(torch.ops.stoicc.manifest_hash.default, ())
    # aot_dispatch cannot compare str outputs (a limitation of opcheck's comparator), so the
    # str-returning op runs the other three checks.
    torch.library.opcheck(torch.ops.stoicc.instance_name.default, (0,),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    torch.library.opcheck(torch.ops.stoicc.default_config.default, (16, 4096, 4096, 128, 128, 512, 512))
    torch.library.opcheck(torch.ops.stoicc.choose_config.default, (16, 4096, 4096, 128, 128, 512, 512) + H100)
    torch.library.opcheck(torch.ops.stoicc.auto_split.default, (0, 16, 4096, 4096, 512, 512) + H100)
    torch.library.opcheck(torch.ops.stoicc.stream_k_max_ctas.default, (512, 512))


def test_manifest_matches_binary():
    insts = stoicc_ext.list_instances(compiled_only=False)
    assert len(insts) == torch.ops.stoicc.num_instances()
    for e in insts:
        info = instance_info(e["index"])
        assert (info.block_m, info.block_n, info.block_k, info.warps_n, info.warps_m, info.stages) == (
            e["BLOCK_M"], e["BLOCK_N"], e["BLOCK_K"], e["warps_n"], e["warps_m"], e["num_stages"])
        assert (info.schedule, info.min_sm, info.smem_bytes, info.compiled, info.exact_sm) == (
            e["schedule"], e["min_sm"], e["smem_bytes"], e["compiled"], e["exact_sm"])
        assert torch.ops.stoicc.instance_name(e["index"]) == e["name"]


# --------------------------------------------------------------------------------------
# The built-in kernel choice without a GPU (device properties as arguments)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("props", [H100, A100, L4], ids=["H100", "A100", "L4"])
@pytest.mark.parametrize("M,want_bm", [(1, 16), (16, 16), (17, 32), (64, 64), (512, 128), (2048, 256)])
def test_choose_config_on_given_device(props, M, want_bm):
    """The heuristic runs on the CPU for a described device: a compiled instance of the weight's
    tile shape that fits the device, the token block nearest M, and for a split schedule the split
    that auto_split gives the same instance."""
    N, K, nS, nD = 4096, 4096, 1400, 648
    inst, split = torch.ops.stoicc.choose_config(M, N, K, 128, 64, nS, nD, *props)
    info = instance_info(inst)
    assert (info.block_n, info.block_k) == (128, 64) and info.compiled
    assert info.smem_bytes <= props[2] and info.min_sm <= props[1]
    runs = [e for e in instances_for(128, 64) if e["smem_bytes"] <= props[2]
            and (not e["exact_sm"] or e["min_sm"] == props[1])]  # sm_90a code: sm_90 only
    blocks = {e["BLOCK_M"] for e in runs}
    assert info.block_m == min(blocks, key=lambda b: abs(b - want_bm))
    assert not info.exact_sm or info.min_sm == props[1]
    if M >= 128 and props[1] == 90:  # prefill on Hopper: the wgmma kernels
        assert stoicc_ext.manifest()["instances"][inst]["family"] == "wgmma"
    assert split == torch.ops.stoicc.auto_split(inst, M, N, K, nS, nD, *props)
    if info.schedule == "split_k":
        assert 1 <= split <= (8 if props[1] >= 90 else 32)
    if info.schedule == "stream_k":
        assert 1 <= split <= torch.ops.stoicc.stream_k_max_ctas(nS, nD)


def test_choose_config_restricted_to_instances():
    everything = torch.ops.stoicc.choose_config(16, 4096, 4096, 128, 64, 500, 12, *H100)
    others = [e["index"] for e in instances_for(128, 64) if e["index"] != everything[0]]
    inst, _ = torch.ops.stoicc.choose_config(16, 4096, 4096, 128, 64, 500, 12, *H100, others)
    assert inst in others
    none = [e["index"] for e in instances_for(64, 64)]
    assert torch.ops.stoicc.choose_config(16, 4096, 4096, 128, 64, 500, 12, *H100, none)[0] == -1


def test_auto_split_rules():
    """split_k: about 1.5 CTAs per SM, at most a quarter of the K tiles and at most 8 on sm_90
    (cluster size); sequential: 1; stream_k: one CTA per resident slot, within the weight's cap."""
    by_sched = {s: next(e for e in stoicc_ext.list_instances() if e["schedule"] == s and e["BLOCK_M"] == 16
                        and e["BLOCK_N"] == 128)
                for s in ("split_k", "sequential", "stream_k")}
    sk, seq, strk = (by_sched[s]["index"] for s in ("split_k", "sequential", "stream_k"))
    assert torch.ops.stoicc.auto_split(seq, 16, 4096, 4096, 500, 500, *H100) == 1
    assert torch.ops.stoicc.auto_split(sk, 16, 4096, 4096, 500, 500, *H100) == 7    # ceil(1.5 * 132 / 32) = 7
    assert torch.ops.stoicc.auto_split(sk, 16, 1024, 4096, 500, 500, *H100) == 8    # 25 wanted, cluster cap 8
    assert torch.ops.stoicc.auto_split(sk, 16, 1024, 4096, 500, 500, *A100) == 8    # K / 128 / 4 = 8
    assert torch.ops.stoicc.auto_split(sk, 16, 1024, 512, 500, 500, *A100) == 1     # 4 K tiles
    assert torch.ops.stoicc.stream_k_max_ctas(10, 2) == 7                          # (90 + 32) // 16
    assert torch.ops.stoicc.auto_split(strk, 16, 4096, 4096, 10, 2, *H100) == 7
    slots = torch.ops.stoicc.auto_split(strk, 16, 4096, 4096, 5000, 5000, *H100)
    assert slots % 132 == 0 and slots >= 132


def test_choose_config_rejects_bad_device_props():
    with pytest.raises(RuntimeError, match="device properties must be positive"):
        torch.ops.stoicc.choose_config(16, 4096, 4096, 128, 128, 1, 1, 0, 90, 232448, 233472)
