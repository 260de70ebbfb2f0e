"""Shared fixtures: devices (CUDA skips cleanly without a GPU), output poisoning, references,
and loading a bench/ script as a module."""
import importlib.util
import os

import pytest
import torch

import stoicc_ext
from stoicc_ext.testing import UNIT_ROUNDOFF

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")])]

needs_ext = pytest.mark.skipif(not stoicc_ext.extension_loaded,
                               reason=f"compiled extension not loaded: {stoicc_ext.extension_error}")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")


def load_bench(name):
    """bench/<name>.py as a module (bench/ is scripts, not a package)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", name + ".py")
    spec = importlib.util.spec_from_file_location(f"stoicc_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def poison_allocator(device, nbytes):
    """Fill the caching allocator's next blocks with NaN so that an output the kernel forgets to
    write shows up as NaN instead of a lucky zero."""
    if device == "cpu":
        return
    junk = torch.full((nbytes // 2 + 1024,), float("nan"), dtype=torch.float16, device=device)
    del junk


def reference(x, W, bias=None):
    """float64 X @ W^T (+ bias) on the same (pruned) weight the kernel sees."""
    y = x.double() @ W.double().T
    if bias is not None:
        y = y + bias.double()
    return y


def assert_matches(y, ref, dtype, what=""):
    """Error bound: the output rounding (half an ulp of |y|, so eps * max|ref|) plus fp32
    accumulation noise; a wrong tile or a missed write is orders of magnitude above it."""
    assert not torch.isnan(y).any(), f"NaN in output {what} (unwritten output or bad metadata)"
    eps = UNIT_ROUNDOFF[dtype]
    scale = ref.abs().max().item() + 1e-6
    err = (y.double() - ref).abs().max().item()
    assert err <= 2 * eps * scale + 1e-4 * scale, f"max |err| {err:.4g} vs max |ref| {scale:.4g} {what}"


@pytest.fixture
def fresh_tuning_cache(tmp_path, monkeypatch):
    """An empty tuning cache (disk directory and memory) and no cache switches set, so that
    tuning tests neither read nor leave state behind."""
    from stoicc_ext.tuning import cache as tuning_cache, inspector
    monkeypatch.setenv("STOICC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STOICC_DISABLE_CACHE", raising=False)
    monkeypatch.delenv("STOICC_FORCE_RETUNE", raising=False)
    tuning_cache.clear_memory()
    inspector._WARNED.clear()
    yield
    tuning_cache.clear_memory()


class FakeTimer:
    """timer(fn, args_list, config) -> ms without running anything: `score(config)` decides.

    The library's densify and dense schedules (expand + cuBLAS; cuBLAS on W uncompressed) are
    candidates of every default Inspector; unless a test scores them itself (densify_ms=None,
    dense_ms=None), they are timed as `densify_ms` and `dense_ms` (slow), so the tests written for
    the compiled instances still see those win."""

    def __init__(self, score=None, fail=False, densify_ms=10.0, dense_ms=20.0):
        self.score = score or (lambda c: 1.0 + 0.01 * c.get("SPLIT_K", 0) + 0.001 * c.get("BLOCK_N", 0))
        self.fail = fail
        self.fixed = {"densify": densify_ms, "dense": dense_ms}
        self.calls = []

    def __call__(self, fn, args_list, config):
        if self.fail:
            raise AssertionError("the timer must not be called (cache hit expected)")
        self.calls.append(dict(config))
        ms = self.fixed.get(config.get("schedule"))
        return float(ms if ms is not None else self.score(config))
