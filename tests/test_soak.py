"""bench/soak.py's dry run on the CPU: the same flow as on a GPU (a converted model generating,
Inspector workers in threads on shared weights, every output checked against float64), eager and
for a few seconds; and a wrong output is caught."""
import json

from conftest import load_bench, needs_ext

pytestmark = needs_ext


def test_soak_dry_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("STOICC_CACHE_DIR", raising=False)      # main() sets its own (a temporary dir)
    soak = load_bench("soak")
    out = tmp_path / "soak.json"
    assert soak.main(["--cpu", "--seconds", "2", "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    c = s["counts"]
    assert s["n_failures"] == 0 and s["seconds"] >= 2 and s["model"]["converted_linears"] == 7
    assert c["generations"] >= 1 and c["prefill logits"] == c["generations"]
    assert c["decode-step logits"] == c["generations"] * (s["model"]["new_tokens"] - 1)
    assert c["recipes"] >= 2 and c["executor output"] == 2 * c["recipes"]
    assert c.get("inspect (memory cache)", 0) + c.get("inspect (disk cache)", 0) == 2 * c["recipes"]
    assert all(v <= 1 for v in s["worst_error_over_bound"].values())
    text = capsys.readouterr().out
    assert "stoicc soak:" in text and "result: OK" in text


def test_soak_reports_a_wrong_output(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("STOICC_CACHE_DIR", raising=False)
    soak = load_bench("soak")
    recipe = soak.recipe

    def one_percent_off(inspector, W, decode_M, prefill_M, gen):
        calls, Wc, src = recipe(inspector, W, decode_M, prefill_M, gen)
        x, ex, cfg = calls[0]
        return [(x, lambda *a, **kw: ex(*a, **kw) * 1.01, cfg)] + calls[1:], Wc, src

    monkeypatch.setattr(soak, "recipe", one_percent_off)
    assert soak.main(["--cpu", "--seconds", "1", "--cache-dir", str(tmp_path / "cache")]) == 1
    text = capsys.readouterr().out
    assert "result: FAILED" in text and "executor output:" in text


def test_soak_converts_every_layer_where_dense_cublas_would_win(tmp_path, monkeypatch):
    """On the H200 dense cuBLAS won most of the soak model's small layers, the Inspector kept them
    dense and the soak stopped at its all-converted check: it times no dense candidate."""
    monkeypatch.delenv("STOICC_CACHE_DIR", raising=False)
    soak = load_bench("soak")
    cpu_timer = soak.cpu_timer

    def dense_wins(fn, args_list, config):
        return 0.01 if config.get("schedule") == "dense" else cpu_timer(fn, args_list, config)

    monkeypatch.setattr(soak, "cpu_timer", dense_wins)
    assert "dense" not in soak.soak_inspector(dense_wins).schedules
    out = tmp_path / "soak.json"
    assert soak.main(["--cpu", "--seconds", "1", "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["model"]["converted_linears"] == 7


def test_soak_workers_run_the_library_recipe(tmp_path, monkeypatch):
    """The workers tune through stoicc_ext.nn.recipe.tune_weight (what sparsify_ runs), with the
    soak's Inspector (no dense candidate), not a copy of the recipe."""
    monkeypatch.delenv("STOICC_CACHE_DIR", raising=False)
    soak = load_bench("soak")
    tune_weight, seen = soak.tune_weight, []

    def counted(W, inspector=None, **kw):
        seen.append(("dense" not in inspector.schedules, kw))
        return tune_weight(W, inspector, **kw)

    monkeypatch.setattr(soak, "tune_weight", counted)
    assert soak.main(["--cpu", "--seconds", "1", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert len(seen) >= 2 and all(no_dense for no_dense, _ in seen)
    assert seen[0][1] == dict(decode_tokens=soak.CPU["batch"], prefill_tokens=soak.CPU["batch"] * soak.CPU["prompt"])
