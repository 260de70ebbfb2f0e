"""bench/e2e's parts on the CPU: the command line's defaults (compile on a GPU, the long-prompt
row with --full), the long-prompt row and the same-structure baseline hook in a dry run, the
decode-step bandwidths, merging a split run, and the end-to-end figure."""
import copy
import json

import pytest

from conftest import load_bench, needs_ext

e2e = load_bench("e2e")
report = load_bench("e2e_report")
profile = load_bench("e2e_profile")
plots = load_bench("plots")


def test_parse_args_compile_and_rows_defaults():
    a = e2e.parse_args(["--device", "cpu"])
    assert a.compile is None and a.rows == ["main"] and a.preset == "tiny"      # a CPU dry run stays eager
    assert e2e.parse_args(["--device", "cpu", "--compile"]).compile == "inductor"
    assert e2e.parse_args(["--device", "cpu", "--compile", "eager"]).compile == "eager"
    assert e2e.parse_args(["--device", "cpu", "--compile", "--no-compile"]).compile is None
    a = e2e.parse_args(["--device", "cpu", "--full"])
    assert a.rows == ["main", "long"] and a.long == dict(batch=4, prompt=2048, new_tokens=64, sparsities=[0, 45])
    assert [r["name"] for r in e2e.rows_of(a)] == ["main", "long"]
    assert e2e.parse_args(["--device", "cpu", "--full", "--rows", "long"]).rows == ["long"]
    with pytest.raises(SystemExit):
        e2e.parse_args(["--device", "cpu", "--rows", "short"])


def test_fast_tuning_space_keeps_the_dense_candidate():
    """The main job measures what users run: the default Inspector times dense cuBLAS on the
    uncompressed weight and keeps a layer dense where it wins, so the benchmark's fast space must
    time it too (it had only split_k, sequential and densify)."""
    from bench.e2e_tuning import make_inspector
    fast = make_inspector("fast", 7)
    assert {"split_k", "sequential", "densify", "dense"} <= set(fast.schedules)
    assert "dense" in make_inspector("full", 7).schedules


def test_linear_split_bandwidths():
    dense = dict(cublas_gemm=4.0, other=1.0, total=5.0)
    sparse = dict(stoicc=3.0, cublas_gemm=0.5, other=1.0, total=4.5)
    sp = profile.linear_split(dense, sparse, dict(dense=12e9, stoicc=0), dict(dense=1e9, stoicc=9e9))
    assert sp["dense_linear_tbps"] == pytest.approx(3.0)          # 12 GB in 4 ms
    assert sp["stoicc_linear_tbps"] == pytest.approx(3.0)         # 9 GB compressed in the 3 ms of stoicc kernels
    assert sp["stoicc_cublas_tbps"] == pytest.approx(2.0)         # lm_head: 1 GB in 0.5 ms
    assert sp["stoicc_all_linear_tbps"] == pytest.approx(10 / 3.5)
    assert sp["linear_speedup"] == pytest.approx(4 / 3.5) and sp["stoicc_rest_ms"] == pytest.approx(1.0)
    assert "stoicc_linear_tbps" not in profile.linear_split(dense, sparse)   # without byte counts: times only


@needs_ext
@pytest.mark.usefixtures("fresh_tuning_cache")
def test_dry_run_with_the_long_prompt_row_and_a_fused_baseline(tmp_path, monkeypatch, capsys):
    """--rows main,long on the tiny model, with the fusion hook returning a separate dense model
    (as a fused baseline would): it is generated as a second dense model, the records carry their
    row, and the markdown has the long-prompt table; linear_bytes counts both kinds of layer."""
    pytest.importorskip("transformers", minversion="5")
    calls = []

    def fused(model):
        calls.append(model)
        return copy.deepcopy(model)
    monkeypatch.setattr(e2e, "same_structure_dense", fused)
    res = e2e.main(["--device", "cpu", "--layers", "1", "--sparsities", "35", "--new-tokens", "3", "--no-price",
                    "--rows", "main,long", "--out-dir", str(tmp_path), "--tag", "cpu"])
    out = capsys.readouterr().out
    assert [(r["row"], r["sparsity"]) for r in res["records"]] == [("main", 35), ("long", 0), ("long", 45)]
    assert len(calls) == 3 and "in-model bandwidth" not in out       # no profile without a GPU
    long = res["records"][1]
    assert (long["batch"], long["prompt"], long["new_tokens"]) == (1, 48, 4)
    assert res["setup"]["compile"] is None and res["setup"]["long_prompt"]["prompt"] == 48
    assert set(res["tile_choices"]) == {"35", "long 0", "long 45"}
    md = (tmp_path / "e2e_cpu.md").read_text()
    assert "## Long prompt" in md and "vs HF as shipped" in md
    data = json.loads((tmp_path / "e2e_cpu.json").read_text())
    assert data["records"][0]["row"] == "main" and data["records"][0]["commit"] == res["commit"]


@needs_ext
def test_linear_bytes_counts_dense_and_converted_layers():
    pytest.importorskip("transformers", minversion="5")
    import torch
    import stoicc_ext as STOICC
    model_mod = load_bench("e2e_model")
    tf = model_mod.require_transformers()
    m = model_mod.build_model(tf, model_mod.TINY, 1, torch.float16, "cpu", 0)
    before = model_mod.linear_bytes(m)
    assert before["stoicc"] == 0 and before["dense"] == sum(
        mod.weight.numel() * 2 for mod in m.modules() if isinstance(mod, torch.nn.Linear))
    STOICC.prune_patch_oneshot_(m, 0.35, filter_fn=lambda mod, n: ".layers." in n)
    base = model_mod.same_structure_dense(m)               # a fused dense copy; m as it was
    assert isinstance(base.model.layers[0].self_attn.qkv_proj, torch.nn.Linear)
    assert type(m.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert model_mod.linear_bytes(base) == before
    STOICC.sparsify_(m, filter_fn=lambda mod, n: ".layers." in n, decode_tokens=2, prefill_tokens=32,
                     inspector=STOICC.Inspector(verbose=False))
    after = model_mod.linear_bytes(m)
    lm_head = m.lm_head.weight.numel() * 2
    assert after["dense"] >= lm_head and 0 < after["stoicc"] < before["dense"] - lm_head
    assert model_mod.linear_bytes(m, ".layers.")["dense"] == after["dense"] - lm_head
    assert isinstance(m.model.layers[0].self_attn.qkv_proj, STOICC.MixedModule)            # fused the same way


def _rec(row, s, speedup=1.1, commit="new"):
    return dict(row=row, sparsity=s, speedup=speedup, commit=commit, dense_ms=100.0, stoicc_ms=100.0 / speedup,
                prefill_ms=20.0, dense_prefill_ms=21.0, weight_bytes_ratio=0.8, tuning_s=1.0, prefill_price_s=0.0)


def _res(records, commit="new"):
    return dict(gpu="NVIDIA H200", commit=commit, setup=dict(preset="7b", layers=32, batch=16, prompt=128,
                                                            new_tokens=128, dtype="float16", compile="inductor", seed=0),
                records=records, tile_choices={str(r["sparsity"]): [] for r in records}, prefill_price={},
                timing=dict(total_s=10.0, tuning_s=1.0, price_s=0.0))


def test_merge_keeps_the_rows_not_rerun(tmp_path):
    old = _res([_rec("main", 0, commit="old"), _rec("main", 25, commit="old"), _rec("long", 45, commit="old")], "old")
    old["setup"]["long_prompt"] = dict(batch=4, prompt=2048, new_tokens=64, sparsities=[0, 45])
    path = tmp_path / "e2e_H200.json"
    path.write_text(json.dumps(old))
    new = report.merge(_res([_rec("main", 25), _rec("main", 45)]), str(path))
    assert [(r["row"], r["sparsity"], r["commit"]) for r in new["records"]] == [
        ("main", 0, "old"), ("main", 25, "new"), ("main", 45, "new"), ("long", 45, "old")]
    assert new["merged_commits"] == ["new", "old"] and new["setup"]["long_prompt"]["prompt"] == 2048
    assert new["timing"]["total_s"] == 20.0
    other = _res([_rec("main", 25)])
    other["setup"]["compile"] = None
    with pytest.raises(SystemExit, match="another set-up"):
        report.merge(other, str(path))
    assert report.merge(_res([]), str(tmp_path / "none.json"))["records"] == []


def test_e2e_figure(tmp_path):
    pytest.importorskip("matplotlib")
    res = _res([_rec("main", 0, 0.98), _rec("main", 45, 1.2), _rec("long", 0, 1.0), _rec("long", 45, 1.1)])
    paths = plots.e2e_figures(res, str(tmp_path / "e2e_H200"))
    assert paths == [str(tmp_path / "e2e_H200_time.png")]
    assert open(paths[0], "rb").read(4) == b"\x89PNG"
    assert plots.e2e_figures(_res([dict(_rec("main", 0), stoicc_ms=None)]), str(tmp_path / "x")) == []


@needs_ext
@pytest.mark.usefixtures("fresh_tuning_cache")
def test_timed_path_with_a_fake_generation(tmp_path, monkeypatch, capsys):
    """What a GPU run adds, with run_generation faked on the CPU: speedups against the dense
    baseline and the model as it ships, the decode-step split with the linears' TB/s over their
    bytes (dense and the stoicc kernels'), the in-model bandwidth target, the figure."""
    pytest.importorskip("transformers", minversion="5")
    import torch

    def fake_generation(tf, model, prompt_ids, new_tokens, *, graphs, repeats, profile=False, compile_backend=None):
        sparse = any(type(m).__name__ == "MixedModule" for m in model.modules())
        step = 0.8 if sparse else 1.0
        lin = dict(stoicc=0.4, cublas_gemm=0.1) if sparse else dict(cublas_gemm=0.6)
        top = [dict(kernel="void stoicc::spmm_kernel<__half, 16>(x)" if sparse else "nvjet_x", ms=0.4, calls=7,
                    us_per_call=57.0, category="stoicc" if sparse else "cublas_gemm")]
        dec = dict(lin, other=0.3, total=sum(lin.values()) + 0.3, top=top)
        B = prompt_ids.shape[0]
        return dict(tokens=torch.zeros(B, new_tokens, dtype=torch.long), logits=torch.ones(B, 8), compile_s=None,
                    prefill_ms=5.0, decode_ms=step * (new_tokens - 1), total_ms=5.0 + step * (new_tokens - 1),
                    decode_step_ms=step, peak_bytes=1000 if sparse else 1200, allocated_before=0,
                    breakdown=dict(prefill=dict(total=5.0, top=[]), decode_step=dec) if profile else None)
    monkeypatch.setattr(e2e, "run_generation", fake_generation)
    res = e2e.main(["--device", "cpu", "--layers", "1", "--sparsities", "25,45", "--new-tokens", "3", "--no-price",
                    "--out-dir", str(tmp_path), "--tag", "fake"])
    out = capsys.readouterr().out
    r = res["records"][1]
    assert r["speedup"] == pytest.approx(7.0 / 6.6) and r["speedup_vs_hf"] == r["speedup"]
    sp = r["decode_split"]
    assert sp["stoicc_linear_tbps"] == pytest.approx(sp["stoicc_linear_bytes"] / 0.4 / 1e9)
    assert sp["dense_linear_tbps"] == pytest.approx(sp["dense_linear_bytes"] / 0.6 / 1e9)
    assert 0 < sp["stoicc_linear_bytes"] < sp["dense_linear_bytes"] and sp["stoicc_cublas_bytes"] > 0   # lm_head
    assert "in-model bandwidth of the stoicc linears" in out and "against the Hugging Face model as it ships" in out
    md = (tmp_path / "e2e_fake.md").read_text()
    assert "## Where the time of a decode step goes" in md and "stoicc kernels ms | GB | TB/s" in md
    assert "## Where the time of a prefill goes" in md and "prefill by kernel: dense linears" in out
    assert "decode-step stoicc linears >= 3.4 TB/s" in md
    if (tmp_path / "e2e_fake_time.png").exists() is False:
        pytest.importorskip("matplotlib")
        raise AssertionError("no figure written")


def test_runs_as_a_script_from_anywhere(tmp_path):
    """scripts/run.sh runs ``python bench/e2e.py``: the script finds the bench package itself."""
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(repo, "bench", "e2e.py"), "--help"], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "--no-compile" in out.stdout and "--rows" in out.stdout
