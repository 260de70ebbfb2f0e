"""The demo (``python examples/demo.py``): the CPU path end to end, and the GPU path's per-layer
work (the Inspector's recipe, checks through the tuned executors, timing calls) on the CPU with a
fake timer and a fake ``time_graph``, since the real ones need CUDA events."""
import functools
import importlib.util
import json
import os

import pytest
import torch

import stoicc_ext
from stoicc_ext.tuning import timing
from stoicc_ext.testing import random_patch_weight

from conftest import needs_ext

pytestmark = needs_ext

_DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "demo.py")


def _load_demo():
    """examples/demo.py as a module (examples/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("stoicc_example_demo", _DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


demo = _load_demo()


@pytest.fixture(autouse=True)
def fresh_cache(fresh_tuning_cache):
    """Every test here starts from an empty tuning cache (conftest.fresh_tuning_cache)."""
    yield


def test_cpu_path_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "demo.json"
    rc, summary = demo.run(demo.parse_args(["--device", "cpu", "--json", str(out)]))
    assert rc == 0 and summary["failed"] == 0 and summary["layers"] == 7
    res = json.loads(out.read_text())
    assert res["timing"] is None and res["kernels"] is None
    for row in res["layers"]:
        assert row["ok"] and row["tile"] == "128x128" and row["kernels"] == [] and row["timings"] == []
    assert "PASS" in capsys.readouterr().out


def _score(cfg):
    """Fake timings: decode (BLOCK_M 16) is fastest on 128x64 tiles, prefill (BLOCK_M 128) on
    64x128, so an unpinned prefill tuning would pick another tile shape than decode."""
    best = (128, 64) if cfg["BLOCK_M"] <= 64 else (64, 128)
    return 1.0 + (0 if (cfg["BLOCK_N"], cfg["BLOCK_K"]) == best else 1) + 0.01 * cfg.get("SPLIT_K", 0)


def test_gpu_path_tunes_pins_tile_checks_and_times(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(stoicc_ext, "Inspector",
                        functools.partial(stoicc_ext.Inspector, timer=lambda fn, args_list, cfg: _score(cfg)))

    def fake_time_graph(fn, args_list, warmup=3, repeats=20, use_graph=True):
        y = fn(*args_list[0])                 # runs the executor / F.linear as the real one would
        calls.append((tuple(y.shape), len(args_list), repeats))
        return 2.0 if len(calls) % 2 else 3.0  # stoicc, then dense
    monkeypatch.setattr(timing, "time_graph", fake_time_graph)
    monkeypatch.setattr(timing, "copies_for", lambda nbytes, **kw: 3)

    g = torch.Generator().manual_seed(0)
    W, _ = random_patch_weight(256, 512, 0.7, dtype=torch.float16, generator=g)
    xs = {M: torch.randn(M, 512, generator=g).to(torch.float16) for M in (16, 256)}
    tol = demo.TOLERANCE[torch.float16]
    row = demo.measure_layer("q_proj", W, xs, [16, 256], tol, True, 5, g)

    assert row["ok"] and row["tile"] == "128x64"
    k = {e["M"]: e for e in row["kernels"]}
    assert k[16]["config"]["BLOCK_M"] == 16 and k[256]["config"]["BLOCK_M"] == 128
    for M in (16, 256):
        c = k[M]["config"]
        assert (c["BLOCK_N"], c["BLOCK_K"]) == (128, 64), "prefill must keep the decode tile shape"
        assert k[M]["source"] == "tuned"
    assert [t["instance"] for t in row["timings"]] == [k[16]["config"]["instance"], k[256]["config"]["instance"]]
    assert all(t["speedup"] == 1.5 for t in row["timings"])
    assert calls == [((16, 256), 3, 5), ((16, 256), 3, 5), ((256, 256), 3, 5), ((256, 256), 3, 5)]
    json.dumps(row)                            # --json writes it

    demo.print_layer(row)
    out = capsys.readouterr().out
    assert "tiles 128x64" in out and k[16]["config"]["instance"] in out and "(tuned," in out

    row2 = demo.measure_layer("q_proj", W, xs, [16, 256], tol, True, 5, g)
    assert [e["source"] for e in row2["kernels"]] == ["memory cache", "memory cache"]
    assert [e["config"] for e in row2["kernels"]] == [k[16]["config"], k[256]["config"]]
