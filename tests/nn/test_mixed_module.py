"""MixedModule: its constructor and forward, routing by token count, bias,
buffers, torch.compile(fullgraph=True) on the CPU, from_linear (the decode/prefill recipe), and on a GPU:
capture/replay in CUDA graphs and the recipe end to end on a tiny model."""
import copy
import warnings

import pytest
import torch
from torch import nn

import stoicc_ext
import stoicc_ext as STOICC
from stoicc_ext.nn.mixed_module import MixedModule
from stoicc_ext.nn.recipe import tune_weight, has_24_tile
from stoicc_ext.testing import random_patch_weight

from conftest import HAS_CUDA, FakeTimer, assert_matches, needs_ext, reference
from model_helpers import hidden, patch_model

pytestmark = needs_ext
gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")]


@pytest.fixture(autouse=True)
def fresh_cache(fresh_tuning_cache):
    """Every test here starts from an empty tuning cache (conftest.fresh_tuning_cache)."""
    yield


def weight(N=256, K=384, frac=0.6, empty=0.1, dtype=torch.float16, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    W, _ = random_patch_weight(N, K, frac, empty, dtype=dtype, device=device, generator=g)
    return W


def linear_of(W, bias=False, seed=3):
    N, K = W.shape
    lin = nn.Linear(K, N, bias=bias, dtype=W.dtype, device=W.device).requires_grad_(False)
    lin.weight.copy_(W)
    if bias:
        g = torch.Generator().manual_seed(seed)
        lin.bias.copy_(torch.randn(N, generator=g).to(W.dtype))
    return lin


def x_of(*shape, dtype=torch.float16, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)


def spec_module(W, bias=None, decode_tokens=16, prefill_tokens=2048):
    """The recipe call by call: decode inspect, pin, prefill inspect, compress, construct."""
    X_decoding = torch.randn(decode_tokens, W.shape[1], dtype=W.dtype, device=W.device)
    inspector = STOICC.Inspector(use_default_configs=True, verbose=False)
    best_exec_dec, best_config_dec = inspector.inspect(X_decoding, W, sparse_arg=1)
    inspector.set_configs(STOICC.create_configs(BLOCK_N=[best_config_dec["BLOCK_N"]],
                                                BLOCK_K=[best_config_dec["BLOCK_K"]]))
    X_prefill = torch.randn(prefill_tokens, W.shape[1], dtype=W.dtype, device=W.device)
    best_exec_pre, best_config_pre = inspector.inspect(X_prefill, W, sparse_arg=1)
    Wc = inspector.compress(W, best_config_dec)
    return MixedModule(compressed_weight=Wc, exec_prefill=best_exec_pre, exec_decoding=best_exec_dec,
                       cfg_prefill=best_config_pre, cfg_decoding=best_config_dec, N=W.shape[0], K=W.shape[1],
                       bias=bias)


class Spy:
    """An executor that records the token count it saw and returns x @ W.T from a dense W."""

    def __init__(self, W, name, log):
        self.W, self.name, self.log = W, name, log

    def __call__(self, x, *Wc, bias=None, M=None, N=None, K=None, **cfg):
        assert x.dim() == 2 and M == x.shape[0] and N == self.W.shape[0] and K == self.W.shape[1]
        self.log.append((self.name, x.shape[0]))
        y = (x.float() @ self.W.float().T)
        return (y if bias is None else y + bias.float()).to(x.dtype)


def spy_module(W, log, decode_max_tokens=16):
    Wc = stoicc_ext.compress(W, 128, 128)
    cfg = dict(BLOCK_N=128, BLOCK_K=128)
    return MixedModule(Wc, Spy(W, "prefill", log), Spy(W, "decode", log), dict(cfg), dict(cfg), W.shape[0],
                       W.shape[1], decode_max_tokens=decode_max_tokens)


class Recorder:
    """An executor that records the keyword arguments of each call; ``bound_shape`` as the library's
    executors carry it (their config fixed inside)."""

    def __init__(self, bound_shape):
        self.bound_shape, self.kwargs = bound_shape, []

    def __call__(self, x, *Wc, **kwargs):
        self.kwargs.append(kwargs)
        return torch.zeros(x.shape[0], 256, dtype=x.dtype)


def test_bound_executors_get_no_config_per_call():
    """Library executors (config fixed inside) are called as ex(x, *Wc, bias=b); an executor bound
    to another shape, like any other executor, gets the full call with M, N, K and the config."""
    W = weight()
    Wc = stoicc_ext.compress(W, 128, 128)
    cfg = dict(BLOCK_N=128, BLOCK_K=128)
    for shape, want_keys in (((256, 384), {"bias"}), ((512, 384), {"bias", "M", "N", "K", "BLOCK_N", "BLOCK_K"})):
        ex = Recorder(shape)
        mm = MixedModule(Wc, ex, ex, dict(cfg), dict(cfg), 256, 384)
        mm(x_of(3, 384))
        mm(x_of(40, 384))
        assert [set(k) for k in ex.kwargs] == [want_keys, want_keys]
    dec = stoicc_ext.executor_for(dict(instance=stoicc_ext.list_instances()[0]["name"], SPLIT_K=1), 256, 384)
    assert dec.bound_shape == (256, 384)


# --------------------------------------------------------------------------------------
# eager
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M", [1, 16, 17, 300])
def test_spec_constructor_matches_reference(dtype, M):
    W = weight(dtype=dtype)
    mm = spec_module(W)
    x = x_of(M, 384, dtype=dtype)
    y = mm(x)
    assert y.shape == (M, 256) and y.dtype == dtype
    assert_matches(y, reference(x, W), dtype)


def test_bias_both_phases():
    W = weight()
    lin = linear_of(W, bias=True)
    mm = spec_module(W, bias=lin.bias)
    for M in (4, 40):
        x = x_of(M, 384)
        assert_matches(mm(x), reference(x, W, lin.bias), torch.float16, f"M={M}")
    assert "bias" in dict(mm.named_buffers())


def test_routing_by_token_count():
    W = weight()
    log = []
    mm = spy_module(W, log)
    cases = [((16, 384), "decode"), ((16, 1, 384), "decode"), ((1, 16, 384), "decode"), ((2, 8, 384), "decode"),
             ((1, 384), "decode"), ((17, 384), "prefill"), ((2, 9, 384), "prefill"), ((16, 128, 384), "prefill")]
    for shape, want in cases:
        log.clear()
        x = x_of(*shape)
        y = mm(x)
        assert y.shape == (*shape[:-1], 256)
        assert log == [(want, x.numel() // 384)], (shape, log)
        assert_matches(y.reshape(-1, 256), reference(x.reshape(-1, 384), W), torch.float16)
    log.clear()
    mm4 = spy_module(W, log, decode_max_tokens=4)
    mm4(x_of(2, 2, 384))
    mm4(x_of(5, 384))
    assert [p for p, _ in log] == ["decode", "prefill"]


def test_hf_style_3d_input_real_kernels():
    """[B, T, K] as a Hugging Face model passes it: prefill [B, T, K], decode [B, 1, K]."""
    W = weight()
    lin = linear_of(W, bias=True)
    mm = MixedModule.from_linear(lin, decode_tokens=4, prefill_tokens=64)
    assert mm.decode_max_tokens == 4
    for shape in ((4, 16, 384), (4, 1, 384), (1, 1, 384)):
        x = x_of(*shape)
        y = mm(x)
        assert y.shape == (*shape[:-1], 256)
        assert_matches(y.reshape(-1, 256), reference(x.reshape(-1, 384), W, lin.bias), torch.float16, str(shape))


def test_non_contiguous_input_and_wrong_width():
    W = weight()
    mm = spec_module(W)
    x = x_of(384, 8).T                  # [8, 384], not contiguous
    assert_matches(mm(x), reference(x, W), torch.float16)
    with pytest.raises(RuntimeError, match="768 columns"):
        mm(x_of(4, 2 * 384))             # numel divisible by K, but the width is wrong: no silent reshape


def test_buffers_state_dict_to_and_copy():
    W = weight()
    mm = MixedModule.from_linear(linear_of(W, bias=True))
    names = list(mm.state_dict())
    assert names == list(STOICC.CompressedWeight.names) + ["bias"]
    assert not list(mm.parameters())
    Wc = mm.compressed_weight
    assert isinstance(Wc, STOICC.CompressedWeight) and (Wc.N, Wc.K) == (256, 384)
    assert torch.equal(STOICC.decompress(Wc), W)
    x = x_of(3, 384)
    y = mm(x)
    assert torch.equal(copy.deepcopy(mm)(x), y)
    mm2 = mm.to("cpu")
    assert mm2 is mm and torch.equal(mm(x), y)
    assert mm.in_features == 384 and mm.out_features == 256
    assert "tile=" in repr(mm) and "decode (<= 16 tokens)" in repr(mm)
    assert mm.weight_nbytes == Wc.nbytes < W.numel() * 2


def test_constructor_errors():
    W = weight()
    Wc = stoicc_ext.compress(W, 128, 128)
    ex, cfg = STOICC.Inspector(verbose=False).inspect(x_of(16, 384), W)
    with pytest.raises(TypeError, match="compressed_weight"):
        MixedModule(W, ex, ex, cfg, cfg, 256, 384)
    with pytest.raises(TypeError, match="exec_prefill"):
        MixedModule(Wc, None, ex, cfg, cfg, 256, 384)
    with pytest.raises(ValueError, match="must not hold"):
        MixedModule(Wc, ex, ex, dict(cfg, M=3), cfg, 256, 384)
    with pytest.raises(ValueError, match="N=512"):
        MixedModule(Wc, ex, ex, cfg, cfg, 512, 384)
    with pytest.raises(ValueError, match="bias"):
        MixedModule(Wc, ex, ex, cfg, cfg, 256, 384, bias=torch.zeros(255, dtype=torch.float16))
    with pytest.raises(ValueError, match="decode_max_tokens"):
        MixedModule(Wc, ex, ex, cfg, cfg, 256, 384, decode_max_tokens=0)


# --------------------------------------------------------------------------------------
# from_linear and the recipe
# --------------------------------------------------------------------------------------

def test_from_linear_errors():
    with pytest.raises(TypeError, match="nn.Linear"):
        MixedModule.from_linear(nn.Conv1d(4, 4, 1))
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        MixedModule.from_linear(linear_of(weight().float()))
    meta = nn.Linear(384, 256, device="meta", dtype=torch.float16)
    with pytest.raises(ValueError, match="meta"):
        MixedModule.from_linear(meta)


def test_from_linear_keeps_a_weight_without_24_tiles_dense():
    dense = (torch.randn(256, 384) * 0.1).half()
    empty_dense = dense.clone()
    empty_dense[:128] = 0                                                   # empty + dense tiles, no 2:4 tile
    x = x_of(20, 384)
    for W in (dense, empty_dense):
        assert not has_24_tile(W)
        mm = MixedModule.from_linear(linear_of(W))
        assert mm.cfg_decoding == mm.cfg_prefill == {"schedule": "dense"}
        assert "no 2:4 tile" in mm.tuning_info["dense_reason"]
        (kept,) = mm.compressed_tensors()
        assert kept is mm.compressed_tensors()[0] and torch.equal(kept, W)  # W as it is, not compressed
        assert torch.equal(mm(x), torch.nn.functional.linear(x, W))          # F.linear itself
        assert torch.equal(mm(x[:3]), torch.nn.functional.linear(x[:3], W))


def test_recipe_pins_decode_tile_and_restores_the_space():
    """With a (fake) timer the full tuning path runs: decode prefers 64x128, prefill would prefer
    128x128 but is pinned to the decode tile; the inspector's own space comes back afterwards."""
    W = weight()

    def score(c):
        tile = (c["BLOCK_N"], c["BLOCK_K"])
        if c["instance"].startswith("wgmma"):      # the Hopper prefill kernels, timed at every M: never best here
            return 5.0
        if c["BLOCK_M"] <= 64:
            return 1.0 if tile == (64, 128) else 2.0 + 0.01 * c["SPLIT_K"]
        return 1.0 if tile == (128, 128) else 3.0 + (0.0 if tile == (64, 128) else 1.0)

    timer = FakeTimer(score)
    insp = STOICC.Inspector(timer=timer, verbose=False)
    base = STOICC.create_configs(schedule=["split_k", "sequential"])
    insp.set_configs(base)
    tuned = tune_weight(W, insp, decode_tokens=16, prefill_tokens=256)
    assert (tuned.cfg_decoding["BLOCK_N"], tuned.cfg_decoding["BLOCK_K"]) == (64, 128)
    assert (tuned.cfg_prefill["BLOCK_N"], tuned.cfg_prefill["BLOCK_K"]) == (64, 128)
    assert (tuned.compressed.block_n, tuned.compressed.block_k) == (64, 128)
    assert all(c["schedule"] in ("split_k", "sequential") for c in timer.calls)
    assert insp.config_space == base
    assert tuned.info["decode"]["source"] == "tuned" and tuned.info["decode"]["ms"] == 1.0
    assert tuned.info["prefill"]["ms"] == 3.0
    n = len(timer.calls)
    tune_weight(W.clone(), insp, decode_tokens=16, prefill_tokens=256)     # same tile map: cached, no timing
    assert len(timer.calls) == n
    mm = MixedModule(tuned.compressed, tuned.exec_prefill, tuned.exec_decoding, tuned.cfg_prefill, tuned.cfg_decoding,
                     256, 384)
    for M in (16, 100):
        x = x_of(M, 384)
        assert_matches(mm(x), reference(x, W), torch.float16)


# --------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------

def test_torch_compile_fullgraph_cpu():
    torch._dynamo.reset()
    W = weight()
    lin = linear_of(W, bias=True)
    mm = MixedModule.from_linear(lin, decode_tokens=16, prefill_tokens=64)
    cm = torch.compile(mm, fullgraph=True)
    for shape in ((16, 384), (2, 1, 384), (3, 40, 384)):
        x = x_of(*shape)
        y = cm(x)
        assert y.shape == (*shape[:-1], 256)
        assert torch.equal(y, mm(x)), shape
    torch._dynamo.reset()


def test_torch_compile_fullgraph_in_a_model():
    torch._dynamo.reset()
    model = patch_model(n_layers=1)
    x = hidden(8)
    ref = model(x)
    STOICC.sparsify_(model, verbose=False)
    cm = torch.compile(model, fullgraph=True)
    out = cm(x)
    eager = model(x)
    for a, b, r in zip(out, eager, ref):
        assert torch.allclose(a.float(), b.float(), atol=2e-2, rtol=0)
        assert torch.allclose(a.float(), r.float(), atol=5e-2, rtol=0)
    torch._dynamo.reset()


# --------------------------------------------------------------------------------------
# GPU: CUDA graphs, the recipe end to end
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("M", [16, 200])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_mixed_module_in_cuda_graph(M):
    W = weight(512, 1024, device="cuda")
    lin = linear_of(W, bias=True)
    insp = STOICC.Inspector(repeats=3, verbose=False)
    mm = MixedModule.from_linear(lin, inspector=insp, decode_tokens=16, prefill_tokens=256)
    x = x_of(M, 1024, device="cuda")
    eager = mm(x)
    static_x = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        mm(static_x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.cuda.graph(g):
            static_y = mm(static_x)
    assert not [w for w in caught if "stoicc" in str(w.message)]      # no tuning during capture
    g.replay()
    torch.cuda.synchronize()
    assert torch.allclose(static_y.float(), eager.float(), atol=1e-3, rtol=1e-3)
    assert_matches(static_y, reference(x, W, lin.bias), torch.float16)
    x2 = x_of(M, 1024, device="cuda", seed=9)
    static_x.copy_(x2)
    g.replay()
    torch.cuda.synchronize()
    assert_matches(static_y, reference(x2, W, lin.bias), torch.float16)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_recipe_end_to_end_tiny_model():
    """The decode/prefill recipe through sparsify_ on a tiny model on the GPU (real timing), then the whole
    model eagerly, in a CUDA graph and under torch.compile, against the dense model."""
    model = patch_model(n_layers=1, device="cuda")
    x = hidden(16, device="cuda", batch=1)
    xp = hidden(96, device="cuda", seed=2)
    ref, refp = model(x), model(xp)
    insp = STOICC.Inspector(use_default_configs=False, verbose=False, repeats=3, warmup=1,
                            schedules={"split_k": STOICC.Schedule(), "sequential": STOICC.Schedule()})
    report = STOICC.sparsify_(model, inspector=insp, decode_tokens=16, prefill_tokens=96, verbose=False)
    assert len(report.converted) == 7
    assert all(r.source_decoding in ("tuned", "memory cache", "disk cache") and r.ms_decoding for r in report.converted)
    out, outp = model(x), model(xp)
    for a, r in zip(out + outp, ref + refp):
        assert torch.allclose(a.float(), r.float(), atol=5e-2, rtol=0)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        model(x)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        gout = model(x)
    g.replay()
    torch.cuda.synchronize()
    for a, b in zip(gout, out):
        assert torch.allclose(a.float(), b.float(), atol=1e-3, rtol=1e-3)
    torch._dynamo.reset()
    cout = torch.compile(model, fullgraph=True)(x)
    for a, b in zip(cout, out):
        assert torch.allclose(a.float(), b.float(), atol=2e-2, rtol=0)
    torch._dynamo.reset()
