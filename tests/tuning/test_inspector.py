"""The Inspector: its four-call API, config spaces, the tuning cache, user schedules, bad
input, capture/compile behaviour. CPU tests use an injected fake timer (the real one needs CUDA
events); the GPU tests run the decode/prefill recipe end to end with the real timing protocol."""
import dataclasses
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import stoicc_ext
import stoicc_ext as STOICC
from stoicc_ext.format import tile_map as tile_map_mod
from stoicc_ext.format.tile_map import TileMap
from stoicc_ext.tuning import inspector as insp_mod
from stoicc_ext.tuning.device import NOMINAL
from stoicc_ext.tuning.dense import DenseWeight
from stoicc_ext.tuning.candidates import kernel_candidates
from stoicc_ext.tuning.kernels import KernelSchedule
from stoicc_ext.tuning import cache as tuning_cache
from stoicc_ext.testing import random_patch_weight

from conftest import HAS_CUDA, FakeTimer, assert_matches, needs_ext, reference

pytestmark = needs_ext
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")]


@pytest.fixture(autouse=True)
def fresh_cache(fresh_tuning_cache, tmp_path):
    """Every test: its own cache directory, empty memory cache, no cache env, warnings re-armed
    (conftest's fresh_tuning_cache); the directory."""
    return tmp_path / "cache"


def weight(N=256, K=512, frac=0.7, dtype=torch.float16, device="cpu", seed=0, tile=128):
    g = torch.Generator().manual_seed(seed)
    W, _ = random_patch_weight(N, K, frac, dtype=dtype, device=device, generator=g, tile=tile)
    return W


def xs(M, K, dtype=torch.float16, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, K, generator=g).to(dtype).to(device)


def cache_files(d):
    return sorted(p for p in os.listdir(d)) if os.path.isdir(d) else []


# --------------------------------------------------------------------------------------
# API shape (CPU: no timing, heuristic)
# --------------------------------------------------------------------------------------

def test_inspect_cpu_returns_heuristic_and_runs(fresh_cache):
    W, X = weight(), xs(16, 512)
    inspector = STOICC.Inspector(use_default_configs=True)
    executor, cfg = inspector.inspect(X, W, sparse_arg=1)
    for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages", "schedule", "SPLIT_K", "instance",
              "BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K"):
        assert k in cfg, k
    assert not {"M", "N", "K", "bias"} & set(cfg)
    assert cfg["BLOCK_SIZE_N"] == cfg["BLOCK_N"] and cfg["schedule"] in ("sequential", "split_k", "stream_k")
    assert cfg["instance"] in [e["name"] for e in stoicc_ext.list_instances()]
    rep = inspector.last_report
    assert rep.source == "heuristic" and "no timing possible" in rep.why
    assert "no timing possible" in inspector.summary()
    assert cache_files(fresh_cache) == []            # nothing timed, nothing cached
    Wc = inspector.compress(W, cfg)
    assert isinstance(Wc, stoicc_ext.CompressedWeight) and (Wc.block_n, Wc.block_k) == (cfg["BLOCK_N"], cfg["BLOCK_K"])
    ref = reference(X, W)
    assert_matches(executor(X, *Wc, **cfg), ref, torch.float16)
    assert_matches(executor(X, *Wc, M=16, N=256, K=512, **cfg), ref, torch.float16)
    assert_matches(executor(X, *Wc, bias=None, **cfg), ref, torch.float16)
    bias = xs(1, 256, seed=5)[0]
    assert_matches(executor(X, *Wc, bias=bias, **cfg), reference(X, W, bias), torch.float16)


def test_executor_is_one_op_call(monkeypatch):
    W, X = weight(), xs(4, 512)
    ex, cfg = STOICC.Inspector().inspect(X, W)
    Wc = stoicc_ext.compress(W, cfg)
    assert ex.instance_index == stoicc_ext.list_instances()[ex.instance_index]["index"]
    seen = []

    class Op:
        def __call__(self, *a):
            seen.append(a)
            return torch.zeros(4, 256, dtype=torch.float16)
    # the closure captured the op at inspect time; rebuild one with a spy to check the arguments
    monkeypatch.setattr(torch.ops.stoicc.spmm, "default", Op(), raising=False)
    ex2 = STOICC.executor_for(cfg, 256, 512)
    ex2(X, *Wc, M=4, N=256, K=512, **cfg)
    assert len(seen) == 1
    args = seen[0]
    assert args[8] is None and args[9:] == (256, 512, cfg["BLOCK_N"], cfg["BLOCK_K"], ex.instance_index, cfg["SPLIT_K"])


# --------------------------------------------------------------------------------------
# Config spaces
# --------------------------------------------------------------------------------------

def test_create_configs_and_aliases():
    s = STOICC.create_configs(BLOCK_N=[128], BLOCK_K=64)
    assert s.allows(dict(BLOCK_N=128, BLOCK_K=64, BLOCK_M=16))
    assert s.allows(dict(BLOCK_SIZE_N=128, BLOCK_SIZE_K=64))          # BLOCK_SIZE_* spelling in the config
    assert not s.allows(dict(BLOCK_N=64, BLOCK_K=64))
    assert not s.allows(dict(BLOCK_N=128))                            # constrained key missing
    a = STOICC.create_configs(BLOCK_SIZE_N=[128], BLOCK_SIZE_K=[64])  # BLOCK_SIZE_* spelling in the space
    assert a == s and "BLOCK_N=[128]" in repr(a)
    assert STOICC.create_configs(BLOCK_N=[64, 128], BLOCK_SIZE_N=[128]).constraints["BLOCK_N"] == [128]
    assert STOICC.create_configs(GROUP_SIZE_M=[4]).allows(dict(GROUP_SIZE_M=4))
    assert STOICC.create_configs(schedule="split_k", SPLIT_K=[1, 2]).allows(dict(schedule="split_k", SPLIT_K=2))
    with pytest.raises(ValueError, match="problem size"):
        STOICC.create_configs(N=[4096])
    with pytest.raises(ValueError, match="allows nothing"):
        STOICC.create_configs(BLOCK_N=[])
    with pytest.raises(ValueError, match="no common value"):
        STOICC.create_configs(BLOCK_N=[64], BLOCK_SIZE_N=[128])
    assert not STOICC.create_configs()                                 # empty space = no restriction


def test_set_configs_restricts_the_search():
    W, X = weight(), xs(16, 512)
    # 64x64 is the fastest tile unless restricted
    timer = FakeTimer(lambda c: 1.0 if (c["BLOCK_N"], c["BLOCK_K"]) == (64, 64) else 2.0 + 0.01 * c["SPLIT_K"])
    inspector = STOICC.Inspector(timer=timer, verbose=False)
    _, cfg = inspector.inspect(X, W, sparse_arg=1)
    assert (cfg["BLOCK_N"], cfg["BLOCK_K"]) == (64, 64)
    assert {(c.get("BLOCK_N"), c.get("BLOCK_K")) for c in timer.calls} == {(128, 128), (128, 64), (64, 128), (64, 64),
                                                                         (None, None)}      # and dense cuBLAS
    timer.calls.clear()
    inspector.set_configs(STOICC.create_configs(BLOCK_N=[128], BLOCK_K=[128]))
    _, cfg = inspector.inspect(X, W, sparse_arg=1)
    assert (cfg["BLOCK_N"], cfg["BLOCK_K"]) == (128, 128)
    assert timer.calls and {(c["BLOCK_N"], c["BLOCK_K"]) for c in timer.calls} == {(128, 128)}
    timer.calls.clear()
    inspector.set_configs(STOICC.create_configs(BLOCK_SIZE_N=[64], BLOCK_SIZE_K=[128], schedule=["sequential"]))
    _, cfg = inspector.inspect(X, W)
    assert (cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["schedule"]) == (64, 128, "sequential")
    assert all(c["schedule"] == "sequential" for c in timer.calls)
    inspector.set_configs(SPLIT_K=[2])          # keyword form
    _, cfg = inspector.inspect(X, W)
    assert cfg["SPLIT_K"] == 2
    inspector.set_configs(None)
    _, cfg = inspector.inspect(X, W)
    assert (cfg["BLOCK_N"], cfg["BLOCK_K"]) == (64, 64)
    inspector.set_configs(STOICC.create_configs(BLOCK_M=[16], schedule=["sequential"], num_stages=[99]))
    with pytest.raises(ValueError, match="no candidate kernel"):
        inspector.inspect(X, W)
    with pytest.raises(TypeError, match="create_configs"):
        inspector.set_configs([128])


def spec_recipe(inspector, W, BS, SEQ_LEN, device):
    """The tuning recipe, call by call: decode, pin its tile shape, prefill, compress once.
    Returns ((X_decoding, exec, config), (X_prefill, exec, config), Wc)."""
    X_decoding = torch.randn(BS, W.shape[1], dtype=W.dtype, device=device)
    best_exec_dec, best_config_dec = inspector.inspect(
        X_decoding,
        W,
        sparse_arg=1,
    )
    inspector.set_configs(
        STOICC.create_configs(
            BLOCK_N=[best_config_dec["BLOCK_N"]],
            BLOCK_K=[best_config_dec["BLOCK_K"]]))
    X_prefill = torch.randn(BS * SEQ_LEN, W.shape[1], dtype=W.dtype, device=device)
    best_exec_pre, best_config_pre = inspector.inspect(
        X_prefill,
        W,
        sparse_arg=1,
    )
    Wc = inspector.compress(W, best_config_dec)
    return (X_decoding, best_exec_dec, best_config_dec), (X_prefill, best_exec_pre, best_config_pre), Wc


def test_spec_recipe_decode_then_prefill_cpu():
    """The tuning recipe, call by call, with a fake timer (favouring 128x64 tiles)."""
    W = weight(256, 512)
    timer = FakeTimer(lambda c: (1.0 if (c["BLOCK_N"], c["BLOCK_K"]) == (128, 64) else 2.0) + 0.01 * c["SPLIT_K"])
    inspector = STOICC.Inspector(use_default_configs=True, timer=timer, verbose=False)
    dec, pre, Wc = spec_recipe(inspector, W, BS=4, SEQ_LEN=16, device="cpu")
    best_config_dec, best_config_pre = dec[2], pre[2]
    assert (best_config_dec["BLOCK_N"], best_config_dec["BLOCK_K"]) == (128, 64)
    assert (best_config_pre["BLOCK_N"], best_config_pre["BLOCK_K"]) == (128, 64)
    assert best_config_dec["BLOCK_M"] == 16 and best_config_pre["BLOCK_M"] == 64
    for x, ex, cfg in (dec, pre):
        y = ex(x, *Wc, M=x.shape[0], N=W.shape[0], K=W.shape[1], **cfg)
        assert_matches(y, reference(x, W), torch.float16)


@pytest.mark.parametrize("M,blocks", [(16, set()), (100, {128}), (200, {128}), (300, {128, 256})])
def test_wgmma_candidates_only_at_prefill_sizes(M, blocks):
    """On an sm_90 GPU the prefill instances (exact_sm) are timed from M = 128 on, every token
    block up to M; at decode sizes they are not candidates (a 128-token block at M = 16 only
    computes padding)."""
    h200 = dataclasses.replace(NOMINAL, name="NVIDIA H200", arch_specific=True)
    cands = kernel_candidates(M, 256, 512, h200, lambda bn, bk: None)
    assert {c.instance["BLOCK_M"] for c in cands if c.instance["family"] == "wgmma"} == blocks
    # the two-tile-row family participates the same way; it is generated for 64-row tiles only,
    # with 256 tokens
    assert {c.instance["BLOCK_M"] for c in cands if c.instance["family"] == "wgmma2"} == blocks & {256}


def test_no_arch_specific_choice_without_a_gpu():
    """A weight tuned off the GPU (nominal H100 properties) gets no sm_90a-only instance: the model
    may be loaded on an A100 or an L4, where such a choice could not run."""
    W, X = weight(256, 512), xs(300, 512)
    timer = FakeTimer()
    _, cfg = STOICC.Inspector(timer=timer, verbose=False).inspect(X, W)
    assert not any(c.get("instance", "").startswith("wgmma") for c in timer.calls)  # wgmma_ and wgmma2r_
    assert not cfg.get("instance", "").startswith("wgmma")


def test_prefill_candidates_use_the_prefill_instances():
    W, X = weight(256, 512), xs(300, 512)
    timer = FakeTimer()
    _, cfg = STOICC.Inspector(timer=timer, verbose=False).inspect(X, W)
    assert {c["BLOCK_M"] for c in timer.calls if "instance" in c} == {128}
    # the densify schedule is timed too, once per tile shape that divides W
    assert sorted((c["BLOCK_N"], c["BLOCK_K"]) for c in timer.calls if c["schedule"] == "densify") == [
        (64, 64), (64, 128), (128, 64), (128, 128)]
    assert cfg["BLOCK_M"] == 128 and cfg["schedule"] == "sequential"


# --------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------

def test_cache_memory_then_disk_hit(fresh_cache):
    W, X = weight(), xs(16, 512)
    timer = FakeTimer()
    ex1, cfg1 = STOICC.Inspector(timer=timer, verbose=False).inspect(X, W)
    n = len(timer.calls)
    assert n > 8
    files = cache_files(fresh_cache)
    assert len(files) == 1 and files[0].endswith(".json")
    rec = json.load(open(fresh_cache / files[0]))
    assert len(rec["candidates"]) == n and all("ms" in c for c in rec["candidates"])  # every timing kept
    assert rec["material"]["M"] == 16 and rec["material"]["gpu"] == "cpu" and rec["material"]["dtype"] == "float16"
    assert rec["choice"]["config"] == cfg1
    # same process, new Inspector: memory
    insp = STOICC.Inspector(timer=timer, verbose=False)
    ex2, cfg2 = insp.inspect(X, W)
    assert len(timer.calls) == n and cfg2 == cfg1 and insp.last_report.source == "memory cache"
    assert insp.last_report.elapsed_s < 0.5
    # memory gone (as in a new process): disk
    tuning_cache.clear_memory()
    ex3, cfg3 = insp.inspect(X, W)
    assert len(timer.calls) == n and cfg3 == cfg1 and insp.last_report.source == "disk cache"
    assert "rank" in insp.summary() and len(insp.last_report.ranked()) == n
    # a different weight object with the same tile map is the same case
    W2 = W.clone()
    W2[W2 != 0] *= 2
    insp.inspect(X, W2)
    assert insp.last_report.source == "memory cache"
    assert not [f for f in os.listdir(fresh_cache) if f.endswith(".tmp")]


def test_cache_misses(fresh_cache, monkeypatch):
    W, X = weight(), xs(16, 512)
    timer = FakeTimer()
    insp = STOICC.Inspector(timer=timer, verbose=False)
    insp.inspect(X, W)
    n = len(timer.calls)
    insp.inspect(xs(8, 512), W)                      # another M
    assert len(timer.calls) > n
    k = len(timer.calls)
    insp.inspect(X, weight(seed=7))                  # another tile map
    assert len(timer.calls) > k
    k = len(timer.calls)
    insp.inspect(X.bfloat16(), W.bfloat16())         # another dtype
    assert len(timer.calls) > k
    k = len(timer.calls)
    monkeypatch.setattr(tuning_cache, "device_identity", lambda device: ("NVIDIA Imaginary GPU", 10))
    insp.inspect(X, W)                               # another GPU name
    assert len(timer.calls) > k and insp.last_report.source == "tuned"
    assert insp.last_report.problem["device"] == "NVIDIA Imaginary GPU"
    assert len(cache_files(fresh_cache)) == 5
    k = len(timer.calls)
    insp.inspect(X, W)
    assert len(timer.calls) == k and insp.last_report.source == "memory cache"


def test_cache_corrupt_file_is_ignored_and_replaced(fresh_cache):
    W, X = weight(), xs(16, 512)
    timer = FakeTimer()
    insp = STOICC.Inspector(timer=timer, verbose=False)
    _, cfg = insp.inspect(X, W)
    (path,) = [fresh_cache / f for f in cache_files(fresh_cache)]
    n = len(timer.calls)
    for garbage in ("{not json", json.dumps({"format": 1, "key": "x"}), "", "\x00\xff"):
        tuning_cache.clear_memory()
        path.write_text(garbage)
        with pytest.warns(RuntimeWarning, match="tuning-cache file"):
            _, cfg2 = insp.inspect(X, W)
        assert cfg2 == cfg and insp.last_report.source == "tuned" and len(timer.calls) > n
        n = len(timer.calls)
        assert json.load(open(path))["choice"]["config"] == cfg     # rewritten, valid again
    # an edited record (material no longer matches) is not trusted either
    rec = json.load(open(path))
    rec["material"]["M"] = 999
    path.write_text(json.dumps(rec))
    tuning_cache.clear_memory()
    with pytest.warns(RuntimeWarning, match="material differs"):
        insp.inspect(X, W)


def test_cache_env_switches(fresh_cache, monkeypatch):
    W, X = weight(), xs(16, 512)
    timer = FakeTimer()
    insp = STOICC.Inspector(timer=timer, verbose=False)
    monkeypatch.setenv("STOICC_DISABLE_CACHE", "1")
    insp.inspect(X, W)
    n = len(timer.calls)
    insp.inspect(X, W)
    assert len(timer.calls) == 2 * n and cache_files(fresh_cache) == []
    monkeypatch.delenv("STOICC_DISABLE_CACHE")
    insp.inspect(X, W)
    assert len(cache_files(fresh_cache)) == 1
    monkeypatch.setenv("STOICC_FORCE_RETUNE", "1")
    insp.inspect(X, W)
    assert len(timer.calls) == 4 * n and insp.last_report.source == "tuned"
    monkeypatch.delenv("STOICC_FORCE_RETUNE")
    insp.inspect(X, W)
    assert len(timer.calls) == 4 * n
    # cache=False: nothing; cache="memory": no disk
    other = tuning_cache.cache_dir() + "_other"
    monkeypatch.setenv("STOICC_CACHE_DIR", other)
    STOICC.Inspector(timer=timer, cache="memory", verbose=False).inspect(xs(3, 512), W)
    assert cache_files(other) == []
    nocache = STOICC.Inspector(timer=timer, cache=False, verbose=False)
    k = len(timer.calls)
    nocache.inspect(X, W)
    nocache.inspect(X, W)
    assert len(timer.calls) == k + 2 * n


def test_cache_hit_in_a_new_process(fresh_cache):
    W, X = weight(seed=3), xs(16, 512)
    _, cfg = STOICC.Inspector(timer=FakeTimer(), verbose=False).inspect(X, W)
    script = f"""
import json, sys, time, torch
sys.path[:0] = [{os.path.join(REPO, 'tests')!r}, {os.path.join(REPO, 'tests', 'tuning')!r}]
import stoicc_ext as STOICC
from test_inspector import FakeTimer, weight, xs
W, X = weight(seed=3), xs(16, 512)
insp = STOICC.Inspector(timer=FakeTimer(fail=True), verbose=False)
t = time.perf_counter()
ex, cfg = insp.inspect(X, W)
dt = time.perf_counter() - t
print(json.dumps(dict(source=insp.last_report.source, cfg=cfg, dt=dt)))
"""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["source"] == "disk cache" and res["cfg"] == cfg, out.stdout
    assert res["dt"] < 1.0


# --------------------------------------------------------------------------------------
# User schedules
# --------------------------------------------------------------------------------------

def make_dense_schedule(log, configs=None):
    """A user schedule in plain PyTorch: the 'compressed' weight is the dense weight itself."""
    def launcher(x, Wd, **config):
        log.append(dict(config))
        return x @ Wd.T

    def compressor(W, config):
        log.append(("compress", config.get("BLOCK_SIZE_N"), config.get("BLOCK_SIZE_K")))
        return (W.clone(),)

    return STOICC.Schedule(launcher=launcher, compressor=compressor, configs=configs or {
        "BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [64, 128], "BLOCK_SIZE_K": [64, 128],
        "GROUP_SIZE_M": [4, 8], "num_stages": [3], "num_warps": [4, 8]})


def test_user_schedule_chosen_when_fastest(fresh_cache):
    W, X = weight(), xs(16, 512)
    log = []
    schedules = {"dense_torch": make_dense_schedule(log)}
    timer = FakeTimer(lambda c: 0.5 if c["schedule"] == "dense_torch" and c["GROUP_SIZE_M"] == 8
                      and c["num_warps"] == 4 and c["BLOCK_N"] == 64 and c["BLOCK_K"] == 128 else 1.0)
    inspector = STOICC.Inspector(schedules=schedules, timer=timer, verbose=False)
    executor, cfg = inspector.inspect(X, W, sparse_arg=1)
    assert cfg["schedule"] == "dense_torch" and cfg["GROUP_SIZE_M"] == 8 and cfg["num_warps"] == 4
    assert cfg["BLOCK_N"] == cfg["BLOCK_SIZE_N"] == 64 and cfg["BLOCK_K"] == 128   # canonical keys added
    user_timed = [c for c in timer.calls if c["schedule"] == "dense_torch"]
    builtin_timed = [c for c in timer.calls if c["schedule"] != "dense_torch"]
    assert len(user_timed) == 16 and builtin_timed                                  # side by side
    compresses = [e for e in log if isinstance(e, tuple)]
    assert len(compresses) == 4                                                     # once per tile shape
    assert "dense_torch" in inspector.summary() and "(user)" in inspector.summary()
    Wc = inspector.compress(W, cfg)
    log.clear()
    y = executor(X, *Wc, M=16, N=256, K=512, **cfg)
    assert_matches(y, reference(X, W), torch.float16)
    # the launcher gets its own keys (+ what the caller adds), not the inspector's
    assert log == [{"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 8,
                    "num_stages": 3, "num_warps": 4, "M": 16, "N": 256, "K": 512}]
    # restricted by set_configs like any other candidate
    inspector.set_configs(STOICC.create_configs(BLOCK_N=[128]))
    _, cfg = inspector.inspect(X, W)
    assert cfg["BLOCK_N"] == 128


def test_user_schedule_rebound_from_cache(fresh_cache):
    W, X = weight(), xs(16, 512)
    timer = FakeTimer(lambda c: 0.5 if c["schedule"] == "mine" else 1.0)
    log1, log2 = [], []
    STOICC.Inspector(schedules={"mine": make_dense_schedule(log1)}, timer=timer, verbose=False).inspect(X, W)
    tuning_cache.clear_memory()
    insp = STOICC.Inspector(schedules={"mine": make_dense_schedule(log2)}, timer=FakeTimer(fail=True),
                            verbose=False)
    # (the timer's identity is part of the key: the same FakeTimer class)
    ex, cfg = insp.inspect(X, W)
    assert insp.last_report.source == "disk cache" and cfg["schedule"] == "mine"
    Wc = insp.compress(W, cfg)
    log1.clear(), log2.clear()
    ex(X, *Wc, **cfg)
    assert log1 == [] and len(log2) == 1     # the schedule object given now runs


def test_user_schedule_slower_loses_and_failing_launcher_is_recorded(fresh_cache):
    W, X = weight(), xs(16, 512)

    def bad_launcher(x, *Wc, **cfg):
        raise RuntimeError("boom")
    schedules = {"slow": make_dense_schedule([], configs={"BLOCK_N": [128], "BLOCK_K": [128]}),
                 "broken": STOICC.Schedule(launcher=bad_launcher, configs={"BLOCK_N": [128], "BLOCK_K": [128]})}

    def timer(fn, args_list, config):
        if config["schedule"] == "broken":
            fn(*args_list[0])
        return 5.0 if config["schedule"] in ("slow", "densify", "dense") else 1.0 + 0.01 * config["SPLIT_K"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inspector = STOICC.Inspector(schedules=schedules, timer=timer, verbose=False)
        _, cfg = inspector.inspect(X, W)
    assert cfg["schedule"] in ("sequential", "split_k", "stream_k")
    failed = [c for c in inspector.last_report.candidates if c.get("error")]
    assert len(failed) == 1 and "boom" in failed[0]["error"]
    assert "failed" in inspector.summary()


def test_builtin_schedule_restricted_by_configs():
    W, X = weight(), xs(16, 512)
    timer = FakeTimer()
    schedules = {"split_k": STOICC.Schedule(configs={"SPLIT_K": [2], "BLOCK_SIZE_N": [128], "GROUP_SIZE_M": [8]})}
    _, cfg = STOICC.Inspector(use_default_configs=False, schedules=schedules, timer=timer,
                              verbose=False).inspect(X, W)
    assert {(c["schedule"], c["SPLIT_K"], c["BLOCK_N"]) for c in timer.calls} == {("split_k", 2, 128)}
    assert cfg["SPLIT_K"] == 2
    with pytest.raises(ValueError, match="only the built-in schedules"):
        STOICC.Inspector(schedules={"mine": STOICC.Schedule(configs={"BLOCK_N": [64]})})
    with pytest.raises(ValueError, match="no schedules"):
        STOICC.Inspector(use_default_configs=False)
    with pytest.raises(ValueError, match="reserved"):
        STOICC.Schedule(launcher=print, configs={"N": [1]})
    with pytest.raises(TypeError, match="Schedule"):
        STOICC.Inspector(schedules={"x": print})


# --------------------------------------------------------------------------------------
# Dense where dense wins
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("W", [torch.randn(256, 512).half(), torch.zeros(256, 512, dtype=torch.float16)],
                         ids=["dense", "empty"])
def test_weight_without_24_tile_gets_the_dense_executor(W, fresh_cache):
    """The four-line API on a weight with no 2:4 tile: W stays dense, F.linear runs it, untimed."""
    X = xs(16, 512)
    inspector = STOICC.Inspector(use_default_configs=True, timer=FakeTimer(fail=True))
    executor, cfg = inspector.inspect(X, W, sparse_arg=1)
    assert cfg == {"schedule": "dense"}
    Wc = inspector.compress(W, cfg)
    assert isinstance(Wc, DenseWeight) and len(Wc) == 1 and Wc.weight is W and "kept dense" in repr(Wc)
    assert torch.equal(executor(X, *Wc, **cfg), torch.nn.functional.linear(X, W))
    rep = inspector.last_report
    assert rep.source == "no 2:4 tile" and "no 2:4 tile" in rep.why and "no 2:4 tile" in inspector.summary()
    assert cache_files(fresh_cache) == []


def test_dense_cublas_is_a_candidate_and_wins_where_fastest(fresh_cache):
    W, X = weight(), xs(16, 512)
    timer = FakeTimer(dense_ms=0.5)
    insp = STOICC.Inspector(timer=timer, verbose=False)
    executor, cfg = insp.inspect(X, W)
    assert cfg == {"schedule": "dense"} and {"schedule": "dense"} in timer.calls
    assert "dense cuBLAS on W uncompressed (F.linear) is the fastest" in insp.last_report.why
    assert "F.linear on W uncompressed" in insp.summary()
    Wc = insp.compress(W, cfg)
    assert isinstance(Wc, DenseWeight) and torch.equal(executor(X, *Wc, **cfg), torch.nn.functional.linear(X, W))
    ex2, cfg2 = STOICC.Inspector(timer=FakeTimer(fail=True), verbose=False).inspect(X, W)   # from the disk cache
    assert cfg2 == cfg and ex2.__name__ == "stoicc_dense_linear"
    # slower: a kernel wins, and the why says by how much dense lost
    tuning_cache.clear_memory()
    _, cfg3 = STOICC.Inspector(timer=FakeTimer(), verbose=False, cache=False).inspect(X, W)
    assert cfg3["schedule"] != "dense"
    # a tile-shape restriction leaves the dense candidate out (it has no tile shape)
    timer4 = FakeTimer(dense_ms=0.5)
    STOICC.Inspector(timer=timer4, verbose=False, cache=False).set_configs(BLOCK_N=[128]).inspect(X, W)
    assert all(c["schedule"] != "dense" for c in timer4.calls)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------

def test_bad_inputs():
    W, X = weight(), xs(16, 512)
    insp = STOICC.Inspector(timer=FakeTimer(), verbose=False)
    for bad in (2, -1, True, "1", 1.0, None):
        with pytest.raises(ValueError, match="sparse_arg must be 0 or 1"):
            insp.inspect(X, W, sparse_arg=bad)
    with pytest.raises(NotImplementedError, match="sparse_arg=0.*not supported"):
        insp.inspect(X, W, sparse_arg=0)
    with pytest.raises(TypeError, match="same dtype"):
        insp.inspect(X.bfloat16(), W)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        insp.inspect(X.float(), W.float())
    with pytest.raises(TypeError, match="torch.Tensor"):
        insp.inspect(X.numpy(), W)
    with pytest.raises(ValueError, match="X has 256 columns but W has K=512"):
        insp.inspect(xs(16, 256), W)
    with pytest.raises(ValueError, match="X must be 2-D"):
        insp.inspect(X.view(2, 8, 512), W)
    with pytest.raises(ValueError, match="W must be 2-D"):
        insp.inspect(X, W.view(1, 256, 512))
    with pytest.raises(ValueError, match="M=0"):
        insp.inspect(X[:0], W)
    with pytest.raises(ValueError, match="not a multiple of 64"):
        insp.inspect(xs(16, 520), torch.cat([W, W[:, :8]], dim=1))


# --------------------------------------------------------------------------------------
# Capture / compile: never tune
# --------------------------------------------------------------------------------------

def test_no_tuning_under_compile_uses_cache_then_heuristic(monkeypatch):
    W, X = weight(), xs(16, 512)
    timer = FakeTimer()
    insp = STOICC.Inspector(timer=timer, verbose=False)
    _, tuned = insp.inspect(X, W)
    n = len(timer.calls)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.warns(RuntimeWarning, match="torch.compile tracing: not tuning; using the cached choice"):
        _, cfg = insp.inspect(X, W)
    assert cfg == tuned and len(timer.calls) == n
    W2 = weight(seed=11)                       # never seen: heuristic
    with pytest.warns(RuntimeWarning, match="built-in heuristic"):
        _, cfg2 = insp.inspect(X, W2)
    assert len(timer.calls) == n and insp.last_report.source == "heuristic"
    with warnings.catch_warnings():            # warned once: not again
        warnings.simplefilter("error")
        insp.inspect(X, W2)


def test_no_tuning_during_capture(monkeypatch):
    W, X = weight(), xs(16, 512)
    timer = FakeTimer()
    insp = STOICC.Inspector(timer=timer, verbose=False)
    monkeypatch.setattr(insp_mod, "_tuning_forbidden", lambda W=None: "CUDA-graph capture")
    monkeypatch.setattr(tile_map_mod, "classify_tiles", lambda *a, **k: pytest.fail("W read during capture"))
    with pytest.warns(RuntimeWarning, match="CUDA-graph capture"):
        ex, cfg = insp.inspect(X, W)
    assert timer.calls == [] and insp.last_report.source == "heuristic"
    assert cfg["BLOCK_N"] == 128 and cfg["BLOCK_K"] == 128 and cfg["BLOCK_M"] == 16


# --------------------------------------------------------------------------------------
# Internals worth pinning
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coarsened_tile_map_matches_classification(seed):
    W = weight(512, 1024, frac=0.5, seed=seed, tile=64)
    tiles = TileMap.of(W)
    assert torch.equal(tiles.fine, stoicc_ext.classify_tiles(W, 64, 64))
    for bn, bk in ((128, 128), (128, 64), (64, 128)):
        c = tiles.at(bn, bk)
        assert torch.equal(c, stoicc_ext.classify_tiles(W, bn, bk)), (bn, bk)


def test_progress_and_verbose(capsys):
    W, X = weight(), xs(16, 512)
    STOICC.Inspector(timer=FakeTimer(), verbose=False).inspect(X, W)
    assert capsys.readouterr().err == ""
    tuning_cache.clear_memory()
    STOICC.Inspector(timer=FakeTimer(), verbose=True, cache=False).inspect(X, W)
    err = capsys.readouterr().err
    assert "candidates" in err and "chosen:" in err and "why:" in err


def test_split_candidates_follow_bench_rules():
    props = NOMINAL
    e = next(x for x in stoicc_ext.list_instances() if x["schedule"] == "split_k" and x["BLOCK_M"] == 16
             and x["BLOCK_N"] == 128 and x["BLOCK_K"] == 128)
    split_k = KernelSchedule("split_k")
    assert split_k.splits(e, 16, 4096, 4096, props, None) == [1, 2, 3, 4, 6, 8]        # <= 8 on Hopper
    assert split_k.splits(e, 16, 4096, 512, props, None) == [1, 2, 3, 4]               # <= K tiles
    sk = next(x for x in stoicc_ext.list_instances() if x["schedule"] == "stream_k")
    stream_k = KernelSchedule("stream_k")
    assert stream_k.splits(sk, 16, 4096, 4096, props, (10, 2)) == [0]                   # G <= work
    assert stream_k.splits(sk, 16, 4096, 4096, props, (700, 300)) == [0, 132, 264]


# --------------------------------------------------------------------------------------
# GPU: the API end to end with the real timing protocol
# --------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_spec_recipe_end_to_end(dtype):
    W = weight(1024, 2048, 0.7, dtype=dtype, device="cuda", seed=4)
    inspector = STOICC.Inspector(use_default_configs=True)
    dec, pre, Wc = spec_recipe(inspector, W, BS=16, SEQ_LEN=128, device="cuda")
    (_, _, best_config_dec), (X_prefill, _, best_config_pre) = dec, pre
    # --- the MixedModule forward's calls ---
    for x, ex, cfg in (dec, pre):
        y = ex(x, *Wc, M=x.shape[0], N=W.shape[0], K=W.shape[1], **cfg)
        assert y.shape == (x.shape[0], W.shape[0]) and y.dtype == dtype and y.is_cuda
        assert_matches(y, reference(x, W), dtype, what=str(cfg))
        assert_matches(ex(x, *Wc, **cfg), reference(x, W), dtype)        # the four-line form
    assert (best_config_pre["BLOCK_N"], best_config_pre["BLOCK_K"]) == (best_config_dec["BLOCK_N"],
                                                                        best_config_dec["BLOCK_K"])
    rep = inspector.last_report
    assert rep.source == "tuned" and not [c for c in rep.candidates if c.get("error")], rep.summary()
    # a second inspect of the same case is a cache hit costing milliseconds
    inspector.inspect(X_prefill, W, sparse_arg=1)
    assert inspector.last_report.source == "memory cache" and inspector.last_report.elapsed_s < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_every_candidate_runs_and_user_schedule_side_by_side():
    W = weight(512, 1024, 0.7, device="cuda", seed=5)
    X = xs(16, 1024, device="cuda")

    def torch_launcher(x, Wd, **cfg):
        return torch.nn.functional.linear(x, Wd)
    schedules = {"cublas": STOICC.Schedule(launcher=torch_launcher, compressor=lambda W, c: (W.clone(),),
                                           configs={"BLOCK_N": [128], "BLOCK_K": [128]})}
    inspector = STOICC.Inspector(schedules=schedules, repeats=5, verbose=False)
    ex, cfg = inspector.inspect(X, W)
    rep = inspector.last_report
    assert not [c for c in rep.candidates if c.get("error")], rep.summary()
    assert any(c["schedule"] == "cublas" and c["ms"] > 0 for c in rep.candidates)
    assert {c["schedule"] for c in rep.candidates} >= {"split_k", "sequential", "stream_k", "cublas"}
    Wc = inspector.compress(W, cfg)
    assert_matches(ex(X, *Wc, **cfg), reference(X, W), torch.float16)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_inspect_inside_graph_capture():
    W = weight(512, 1024, 0.7, device="cuda", seed=6)
    W_new = weight(512, 1024, 0.5, device="cuda", seed=7)
    X = xs(16, 1024, device="cuda")
    inspector = STOICC.Inspector(repeats=5, verbose=False)
    _, tuned = inspector.inspect(X, W)
    Wc = inspector.compress(W, tuned)
    Wc_new = stoicc_ext.compress(W_new, 128, 128)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.cuda.graph(g):
            ex, cfg = inspector.inspect(X, W)                 # cached choice, no tuning, no sync
            y = ex(X, *Wc, **cfg)
            ex2, cfg2 = inspector.inspect(X, W_new)           # unseen: the heuristic
            y2 = ex2(X, *Wc_new, **cfg2)
    assert cfg == tuned
    assert any("CUDA-graph capture" in str(w.message) for w in caught)
    inst, split = torch.ops.stoicc.default_config(16, 512, 1024, 128, 128, 0, 32)
    assert cfg2["instance"] == torch.ops.stoicc.instance_name(inst)
    g.replay()
    torch.cuda.synchronize()
    assert_matches(y, reference(X, W), torch.float16)
    assert_matches(y2, reference(X, W_new), torch.float16)
