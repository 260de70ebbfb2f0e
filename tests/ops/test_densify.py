"""torch.ops.stoicc.densify (the dense weight of a compressed one) and the Inspector's "densify"
schedule (densify + cuBLAS): exact against decompress, every tile shape and tile type, bad
input, and the schedule through inspect, MixedModule, torch.compile and checkpoints."""
import pytest
import torch

import stoicc_ext
import stoicc_ext as STOICC
from stoicc_ext.tuning.densify import densify_executor, densify_linear
from stoicc_ext.testing import random_patch_weight

from conftest import DEVICES, FakeTimer, assert_matches, needs_cuda, needs_ext, poison_allocator, reference

pytestmark = needs_ext

TILES = [(128, 128), (128, 64), (64, 128), (64, 64)]


def patch_weight(N, K, frac, empty, dtype, device, seed=0, row_pattern=None):
    g = torch.Generator().manual_seed(seed)
    W, _ = random_patch_weight(N, K, frac, empty, dtype=dtype, device=device, generator=g, tile=64,
                               row_pattern=row_pattern)
    return W


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("frac,empty,pattern", [(0.6, 0.2, "both"), (1.0, 0.0, None), (0.0, 0.0, None),
                                                (0.0, 1.0, None)])
def test_densify_equals_decompress(device, dtype, tile, frac, empty, pattern):
    """Every value, including the +0.0 of empty tiles and of dropped 2:4 positions (the output is
    allocated over NaN-filled memory first, so an unwritten element cannot pass)."""
    N, K = 384, 512
    W = patch_weight(N, K, frac, empty, dtype, device, seed=tile[0] + tile[1], row_pattern=pattern)
    Wc = stoicc_ext.compress(W, *tile)
    poison_allocator(device, 4 * N * K)
    D = stoicc_ext.ops.densify(Wc)
    assert D.dtype == dtype and D.shape == (N, K) and D.device == W.device
    assert torch.equal(D, stoicc_ext.decompress(Wc))
    assert torch.equal(D, W)  # compress is lossless for a weight that fits its tile map


@pytest.mark.parametrize("device", DEVICES)
def test_densify_bad_input(device):
    W = patch_weight(256, 256, 0.5, 0.0, torch.float16, device)
    Wc = stoicc_ext.compress(W, 128, 128)
    op = torch.ops.stoicc.densify
    with pytest.raises(RuntimeError, match="stoicc.densify: dense_values must be float16 or bfloat16"):
        op(*Wc[:6], Wc[6].float(), 256, 256, 128, 128)
    with pytest.raises(RuntimeError, match="stoicc.densify: sparse_values must have dtype float16"):
        op(Wc[0], Wc[1], Wc[2].bfloat16(), *Wc[3:], 256, 256, 128, 128)
    with pytest.raises(RuntimeError, match="stoicc.densify: sparse_row_ptr has 3 entries, expected 5"):
        op(*Wc, 512, 256, 128, 128)
    with pytest.raises(RuntimeError, match="stoicc.densify: K=200 is not a multiple of block_k=128"):
        op(*Wc, 256, 200, 128, 128)
    with pytest.raises(RuntimeError, match="stoicc.densify: block_n must be 64 or 128"):
        op(*Wc, 256, 256, 32, 128)


def test_densify_cpu_names_corrupted_indices():
    W = patch_weight(256, 256, 0.5, 0.0, torch.float16, "cpu")
    Wc = stoicc_ext.compress(W, 128, 128)
    t = [x.clone() for x in Wc]
    t[1][0] = 7                                     # a K-tile index outside [0, 2)
    with pytest.raises(RuntimeError, match="stoicc.densify: corrupted compressed weight: K-tile index 7"):
        torch.ops.stoicc.densify(*t, 256, 256, 128, 128)


@needs_cuda
@pytest.mark.gpu
def test_densify_cuda_corrupted_indices_do_not_fault():
    """Indices are clamped like the GEMM's: garbage values, but no fault (the CPU op and
    validate() name the corruption)."""
    W = patch_weight(256, 256, 0.5, 0.0, torch.float16, "cuda")
    Wc = stoicc_ext.compress(W, 128, 128)
    t = [x.clone() for x in Wc]
    t[0][1] = 10 ** 6
    t[1][0] = -5
    torch.ops.stoicc.densify(*t, 256, 256, 128, 128)
    torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_densify(device):
    W = patch_weight(256, 256, 0.5, 0.25, torch.float16, device)
    Wc = stoicc_ext.compress(W, 128, 64)
    torch.library.opcheck(torch.ops.stoicc.densify.default, (*Wc, 256, 256, 128, 64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M", [1, 17, 300])
def test_densify_linear_matches_reference(device, dtype, M):
    N, K = 256, 384
    W = patch_weight(N, K, 0.7, 0.1, dtype, device, seed=M)
    g = torch.Generator().manual_seed(M)
    x = torch.randn(M, K, generator=g).to(dtype).to(device)
    bias = torch.randn(N, generator=g).to(dtype).to(device)
    Wc = stoicc_ext.compress(W, 64, 128)
    for b in (None, bias):
        y = densify_linear(x, *Wc, bias=b, BLOCK_N=64, BLOCK_K=128, M=M, N=N, K=K)
        assert_matches(y, reference(x, W, b), dtype)


@needs_cuda
@pytest.mark.gpu
def test_densify_linear_in_cuda_graph():
    N, K, M = 512, 512, 64
    W = patch_weight(N, K, 0.5, 0.25, torch.float16, "cuda", seed=5)
    Wc = stoicc_ext.compress(W, 128, 128)
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    ex = densify_executor(dict(schedule="densify", BLOCK_N=128, BLOCK_K=128))
    ex(x, *Wc)  # warm-up outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = ex(x, *Wc)
    for _ in range(2):
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        assert_matches(y, reference(x, W), torch.float16)


def test_inspector_picks_densify_when_fastest(fresh_tuning_cache):
    """With densify timed fastest, inspect returns its executor and config, the config keeps the
    tile shape (so recipe pins and compress work), and the executor computes X @ W.T."""
    W = patch_weight(256, 512, 0.7, 0.0, torch.float16, "cpu")
    x = torch.randn(300, 512).half()
    timer = FakeTimer(lambda c: 1.0, densify_ms=0.5)
    insp = STOICC.Inspector(timer=timer, verbose=False)
    ex, cfg = insp.inspect(x, W)
    assert cfg["schedule"] == "densify" and (cfg["BLOCK_N"], cfg["BLOCK_K"]) in TILES
    Wc = insp.compress(W, cfg)
    assert isinstance(Wc, STOICC.CompressedWeight) and (Wc.block_n, Wc.block_k) == (cfg["BLOCK_N"], cfg["BLOCK_K"])
    y = ex(x, *Wc, M=x.shape[0], N=W.shape[0], K=W.shape[1], **cfg)
    assert_matches(y, reference(x, W), torch.float16)
    # the decode/prefill recipe: decode tuned (a compiled instance wins), prefill pinned to its tile shape
    # may pick densify; MixedModule runs both, eagerly and compiled
    timer2 = FakeTimer(lambda c: 1.0 + 0.01 * c.get("SPLIT_K", 0), densify_ms=None)
    timer2.score = lambda c: 0.1 if c["schedule"] == "densify" and c.get("BLOCK_N") == 128 and \
        c.get("BLOCK_K") == 128 and timer2.M > 16 else (5.0 if c["schedule"] == "densify" else 1.0)
    timer2.M = 16
    insp2 = STOICC.Inspector(timer=timer2, verbose=False)
    insp2.set_configs(STOICC.create_configs(BLOCK_N=[128], BLOCK_K=[128]))
    ex_d, cfg_d = insp2.inspect(torch.randn(16, 512).half(), W)
    timer2.M = 300
    ex_p, cfg_p = insp2.inspect(x, W)
    assert cfg_d["schedule"] != "densify" and cfg_p["schedule"] == "densify"
    mm = STOICC.MixedModule(insp2.compress(W, cfg_d), ex_p, ex_d, cfg_p, cfg_d, 256, 512)
    for xx in (x, x[:16]):
        assert_matches(mm(xx), reference(xx, W), torch.float16)
    compiled = torch.compile(mm, fullgraph=True, backend="aot_eager")
    assert_matches(compiled(x), reference(x, W), torch.float16)


def test_checkpoint_round_trip_with_densify_prefill(tmp_path):
    from torch import nn
    W = patch_weight(256, 512, 0.7, 0.0, torch.float16, "cpu")
    Wc = stoicc_ext.compress(W, 128, 128)
    cfg_p = dict(schedule="densify", BLOCK_N=128, BLOCK_K=128)
    ex_d, cfg_d = None, None
    for e in stoicc_ext.list_instances():
        if (e["BLOCK_N"], e["BLOCK_K"], e["schedule"]) == (128, 128, "split_k"):
            cfg_d = dict(BLOCK_M=e["BLOCK_M"], BLOCK_N=128, BLOCK_K=128, schedule="split_k", SPLIT_K=1,
                         instance=e["name"])
            ex_d = STOICC.executor_for(cfg_d, 256, 512)
            break
    model = nn.Sequential(STOICC.MixedModule(Wc, densify_executor(cfg_p), ex_d, cfg_p, cfg_d, 256, 512))
    STOICC.save_compressed(model, tmp_path / "m.safetensors")
    loaded = STOICC.load_compressed(nn.Sequential(nn.Linear(512, 256, bias=False).half()), tmp_path / "m.safetensors")
    x = torch.randn(40, 512).half()
    assert loaded[0].cfg_prefill["schedule"] == "densify"
    assert torch.equal(loaded[0](x), model(x))
