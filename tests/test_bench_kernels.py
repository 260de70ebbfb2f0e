"""bench/ as a package: the shape table, bench_kernels' CPU-testable parts (weights, candidates,
records, markdown, host cost, argument parsing), the figures, and both ways of running a script."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import load_bench, needs_ext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
shapes = load_bench("shapes")
bk = load_bench("bench_kernels")
ct = load_bench("check_targets")
plots = load_bench("plots")


def test_shape_table_is_tile_aligned_and_has_the_small_models():
    assert shapes.check_tiles() == []
    assert shapes.check_tiles([shapes.Shape(900, 896, "m", "p", "g")]) == ["m p 900x896"]
    small = shapes.GROUPS["small"]
    assert len(small) >= 6
    # hidden sizes 896 to 2048: every small shape has the model's hidden size on one side
    assert all(min(s.n, s.k) in (896, 1536, 2048) for s in small)
    assert {s.model.split(",")[0] for s in small} >= {"Qwen2.5-0.5B", "Qwen2.5-1.5B", "Llama-3.2-1B", "Qwen2.5-3B"}
    assert [(s.n, s.k) for s in shapes.GROUPS["llama"]] == [
        (4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096), (22016, 4096), (8192, 8192), (28672, 8192),
        (8192, 28672)]


def test_shape_selection():
    sel = shapes.select("small,4096x4096,896x896")
    assert sel[0].model == "Qwen2.5-0.5B" and (sel[-1].n, sel[-1].k) == (4096, 4096)
    assert len(sel) == len(shapes.GROUPS["small"]) + 1            # 896x896 is in small: not twice
    assert [s.group for s in shapes.select(None)][:8] == ["llama"] * 8
    assert shapes.select("256x384")[0].group == "custom"
    with pytest.raises(ValueError, match="unknown shape group"):
        shapes.select("nope")
    with pytest.raises(ValueError, match="not multiples of 128"):
        shapes.select("4096x4000")


def test_parse_args_and_plan():
    a = bk.parse_args(["--quick"])
    assert a.tag == "quick" and a.ms == [1, 16, 2048] and a.fracs == [0.0, 0.5, 1.0]
    a = bk.parse_args(["--shapes", "llama,small", "--frac", "0,1"])
    assert a.tag is None and a.ms is None and len(a.shape_list) == 8 + len(shapes.GROUPS["small"])
    work = bk.plan(a.shape_list, a.fracs, a.ms, bf16_subset=True)
    ms = {(s.group, dt): m for s, f, dt, m in work}
    assert ms[("llama", torch.float16)] == [1, 16, 32, 64, 128, 256, 512, 2048]
    assert ms[("small", torch.float16)] == bk.OTHER_MS and 16 in bk.OTHER_MS
    assert ms[("llama", torch.bfloat16)] == [16]
    assert all(m == [128] for *_, m in bk.plan(a.shape_list, [0.5], [128], bf16_subset=False))
    with pytest.raises(SystemExit):
        bk.parse_args(["--shapes", "banana"])


@needs_ext
def test_patch_weight_and_candidates_on_cpu(monkeypatch):
    import stoicc_ext
    W = bk.patch_weight(256, 512, 0.5, torch.float16, seed=3, device="cpu")
    assert W.dtype == torch.float16 and (W != 0).float().mean() > 0.7     # never zeros outside 2:4 pruning
    Wc = stoicc_ext.compress(W, 128, 128)
    assert (Wc.num_sparse_tiles, Wc.num_dense_tiles) == (4, 4)
    cands = bk.candidates(16, 256, 512, Wc)
    assert cands and all(isinstance(i, int) and isinstance(s, int) for i, s in cands)
    monkeypatch.setattr(bk, "rotated_copies", lambda w: [w])    # the real one sizes copies by the GPU's L2
    cache = {}
    got = bk.compressed_copies(W, [(128, 128)], cache)
    assert list(got) == [(128, 128)] and bk.compressed_copies(W, [(128, 128)], cache)[(128, 128)] is got[(128, 128)]


@needs_ext
def test_host_cost_on_cpu():
    W = bk.patch_weight(128, 256, 1.0, torch.float16, seed=1, device="cpu")
    h = bk.host_cost(W, 4, calls=3, batches=3)
    assert h["stoicc_us"] > 0 and h["linear_us"] > 0 and h["extra_us"] == pytest.approx(h["stoicc_us"] - h["linear_us"])
    assert h["instance"] == -1       # no table record: the op's own choice


def _synthetic_table():
    """A small kernels JSON as bench_kernels writes it (made-up times)."""
    peaks = (989.4, 1978.9)
    recs = []
    for s in (shapes.lookup(4096, 4096), shapes.lookup(896, 4864)):
        for f in (0.0, 0.5, 1.0):
            for m in (1, 16, 64, 2048):
                dense_ms = 0.014 * s.n * s.k / 4096 ** 2 * (1 if m <= 64 else 7)
                nbytes = int(s.n * s.k * 2 * (1 - 0.44 * f))
                best = (dense_ms / (1 + 0.6 * f), "spmm_m16_n128_k128_w4x1_s3_splitk", 6, (128, 128), nbytes, None)
                recs.append(bk.make_record(s, m, f, torch.float16, best, dense_ms, peaks,
                                           (dense_ms / 1.4, dense_ms / 1.4 + 0.3) if f == 1.0 else (None, None)))
    return dict(gpu="NVIDIA H200", date="2026-12-02", commit="abc1234", sms=132, copy_tbps=4.28, read_tbps=4.24,
                ceiling_bytes=2 << 30, peak_tflops=dict(dense=peaks[0], sparse_24=peaks[1], source="datasheet"),
                argv="--quick", records=recs,
                host=[dict(n=4096, k=4096, m=16, frac=0.5, model="Llama-2-7B", proj="q/k/v/o", stoicc_us=7.5,
                           linear_us=5.0, extra_us=2.5)])


def test_records_markdown_and_targets(tmp_path):
    data = _synthetic_table()
    r = next(r for r in data["records"] if (r["n"], r["m"], r["frac"]) == (4096, 2048, 1.0))
    assert r["tflops"] == pytest.approx(2 * 2048 * 4096 * 4096 / r["stoicc_ms"] / 1e9)
    assert r["peak_frac_24"] == pytest.approx(r["tflops"] / 1978.9)
    assert r["model"] == "Llama-2-7B" and r["group"] == "llama" and "cusparselt_speedup" in r
    bk.write_results(data, str(tmp_path), "H200", figures=False)
    md = (tmp_path / "kernels_H200.md").read_text()
    assert "read-only reduction (`a.sum()`) 4.24 TB/s" in md and "device copy 4.28 TB/s" in md
    assert "## Decode sizes" in md and "## Prefill sizes" in md and "% of 2:4 peak" in md
    assert "## Eager host cost" in md and "| +2.5 |" in md
    assert "eager host cost: stoicc.spmm <= F.linear + 2.0 us | 0/1" in md
    assert "small models, M = 16, f >= 0.5" in md
    assert json.loads((tmp_path / "kernels_H200.json").read_text())["read_tbps"] == 4.24


def test_kernel_figure(tmp_path):
    pytest.importorskip("matplotlib")
    paths = plots.kernel_figures(_synthetic_table(), str(tmp_path / "kernels_H200"))
    assert paths == [str(tmp_path / "kernels_H200_speedup.png"), str(tmp_path / "kernels_H200_speedup_small.png")]
    assert open(paths[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_figures_skip_without_matplotlib(monkeypatch, capsys, tmp_path):
    import builtins
    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_mpl)
    assert plots.kernel_figures(_synthetic_table(), str(tmp_path / "k")) == []
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("how", ["module", "script"])
def test_runs_as_module_and_as_script(how, tmp_path):
    """``python -m bench.check_targets`` from the repository root, ``python bench/check_targets.py``
    from anywhere: the package imports work both ways."""
    p = tmp_path / "k.json"
    p.write_text(json.dumps(_synthetic_table()))
    cmd = [sys.executable, "-m", "bench.check_targets", str(p)] if how == "module" else \
        [sys.executable, os.path.join(REPO, "bench", "check_targets.py"), str(p)]
    out = subprocess.run(cmd, cwd=REPO if how == "module" else str(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "M = 16, f = 1.0: speedup >= 1.70x" in out.stdout


def test_list_prints_the_plan_without_a_gpu(capsys):
    assert bk.main(["--list", "--quick"]) == 4 * 3 * 3 + 2 * 3      # 4 shapes x 3 f x 3 M, bf16: 2 shapes x 3 f
    out = capsys.readouterr().out
    assert "896x4864" in out and "Qwen2.5-0.5B down" in out and "18 weights, 42 cases (30 at M <= 64)" in out


@needs_ext
def test_main_loop_with_fake_timers(tmp_path, monkeypatch, capsys):
    """The whole of main() on the CPU, the GPU's parts faked: the ceilings, the graph timer (a
    time from the candidate's bytes), the copies and the host timer. Checks the plan is walked
    once per weight, the records, --resume, and the files."""
    import types
    monkeypatch.setattr(bk, "DEVICE", "cpu")
    monkeypatch.setattr(bk.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bk.torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setattr(bk.torch.cuda, "get_device_properties", lambda *a: types.SimpleNamespace(multi_processor_count=132))
    monkeypatch.setattr(bk.torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(bk, "bandwidth_ceilings", lambda: dict(copy_tbps=4.28, read_tbps=4.24, ceiling_bytes=2 << 30))
    monkeypatch.setattr(bk, "rotated_copies", lambda w: [w])
    monkeypatch.setattr(bk, "host_us_per_call", lambda fn, **k: (fn(), 6.0)[1])
    calls = []

    def fake_time_graph(fn, args_list, repeats=15, use_graph=True, **k):
        calls.append(fn)
        w = args_list[0][0] if args_list and args_list[0] else None
        nbytes = w.nbytes if hasattr(w, "nbytes") and not isinstance(w, torch.Tensor) else \
            (w.numel() * w.element_size() if isinstance(w, torch.Tensor) else 0)
        return 1e-3 + nbytes / 3e9                     # ms: 3 TB/s plus 1 us
    monkeypatch.setattr(bk, "time_graph", fake_time_graph)
    argv = ["--shapes", "256x512", "--m", "16,256", "--frac", "0.5,1.0", "--no-bf16-subset", "--no-plots",
            "--out", str(tmp_path), "--tag", "fake"]
    data = bk.main(argv)
    assert [(r["m"], r["frac"]) for r in data["records"]] == [(16, 0.5), (256, 0.5), (16, 1.0), (256, 1.0)]
    r = data["records"][0]
    assert r["group"] == "custom" and r["speedup"] > 1 and r["compressed_bytes"] < r["dense_bytes"]
    assert data["records"][1]["densify_ms"] is not None and r["densify_ms"] is None   # densify from M = 128 on
    assert data["read_tbps"] == 4.24 and data["peak_tflops"]["sparse_24"] == pytest.approx(1978.9)
    assert data["host"][0]["extra_us"] == 0.0 and data["host"][0]["instance"] >= 0   # the table's kernel at M=16 f=0.5
    assert (tmp_path / "kernels_H200_fake.md").exists()
    n = len(calls)
    data = bk.main(argv + ["--resume"])                 # nothing left to time
    assert len(calls) == n and len(data["records"]) == 4
    assert "4 cases (4 rows already in" in capsys.readouterr().out
