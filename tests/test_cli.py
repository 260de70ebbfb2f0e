"""The `stoicc` command line (stoicc_ext.cli, python -m stoicc_ext)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import stoicc_ext as STOICC
from stoicc_ext import cli

from conftest import needs_ext
from model_helpers import patch_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_help_is_light():
    """--help answers without importing transformers or touching CUDA (python -m stoicc_ext)."""
    code = ("import sys, runpy; sys.argv = ['stoicc', '--help']\n"
            "try:\n    runpy.run_module('stoicc_ext', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "import torch\n"
            "assert 'transformers' not in sys.modules, 'transformers imported'\n"
            "assert not torch.cuda.is_initialized(), 'CUDA initialized'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for word in ("convert", "info", "cache", "bench", "version"):
        assert word in out.stdout


def test_subcommand_help_and_errors(capsys):
    for cmd in (["convert", "--help"], ["info", "--help"], ["cache", "--help"], ["bench", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as e:
            cli.main(cmd)
        assert e.value.code == 0
    assert "stoicc convert" in capsys.readouterr().out
    assert cli.main([]) == 2
    with pytest.raises(SystemExit):
        cli.main(["convert", "m", "o", "--prune", "70%"])
    assert "outside [0, 0.5]" in capsys.readouterr().err
    assert cli._sparsity("35%") == cli._sparsity("35") == cli._sparsity("0.35") == 0.35


@needs_ext
@pytest.mark.usefixtures("fresh_tuning_cache")
def test_info_of_a_directory_and_a_file(tmp_path, capsys):
    model = patch_model(n_layers=1)
    STOICC.sparsify_(model, decode_tokens=8, prefill_tokens=64)
    STOICC.save_pretrained(model, tmp_path / "d", max_shard_size="100KB")
    STOICC.save_compressed(model, tmp_path / "m.safetensors")
    for path in (tmp_path / "d", tmp_path / "m.safetensors"):
        rc, out, _ = run(capsys, "info", str(path), "--layers")
        assert rc == 0
        assert "7 stoicc layers" in out and "model.layers.0.mlp.down_proj" in out and "2:4" in out
        rc, out, _ = run(capsys, "info", str(path), "--json")
        info = json.loads(out)
        assert len(info["layers"]) == 7 and info["layer_bytes"] < info["layer_dense_bytes"]
    rc, _, err = run(capsys, "info", str(tmp_path / "nothing"))
    assert rc == 1 and "no checkpoint" in err


def test_cache_list_and_clear(tmp_path, monkeypatch, capsys):
    d = tmp_path / "cache"
    d.mkdir()
    monkeypatch.setenv("STOICC_CACHE_DIR", str(d))
    key = "ab" * 32
    rec = dict(format=1, key=key, material=dict(gpu="NVIDIA H200", dtype="float16", M=16, N=4096, K=4096),
               choice=dict(schedule="split_k", config=dict(instance="spmm_m16_n128_k128_w4x1_s3_splitk", SPLIT_K=2)),
               candidates=[], created=1.7e9)
    (d / f"{key}.json").write_text(json.dumps(rec))
    (d / f"{'cd' * 32}.json").write_text("{not json")
    (d / "keep.txt").write_text("not the cache's")
    (d / "torch-headers").mkdir()
    rc, out, _ = run(capsys, "cache", "list")
    assert rc == 0 and "2 record(s)" in out and "M=16 N=4096 K=4096" in out and "m16_n128_k128_w4x1_s3_splitk/2" in out
    assert "unreadable" in out
    rc, out, _ = run(capsys, "cache", "list", "--json")
    assert len(json.loads(out)["entries"]) == 2
    rc, out, _ = run(capsys, "cache", "path")
    assert out.strip() == str(d)
    rc, out, _ = run(capsys, "cache", "clear", "--dry-run")
    assert "would remove 2" in out and len(os.listdir(d)) == 4
    rc, out, _ = run(capsys, "cache", "clear", "--yes")
    assert rc == 0 and "removed 2" in out
    assert sorted(os.listdir(d)) == ["keep.txt", "torch-headers"]
    rc, out, _ = run(capsys, "cache", "clear", "--yes")
    assert "nothing to clear" in out


def test_bench_delegates_from_a_checkout(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, cwd: calls.append((cmd, cwd)) or 0)
    # the tests' checkout, also where the package under test is an installed wheel (CI's wheel run)
    monkeypatch.setattr(cli, "checkout_root", lambda: ROOT)
    assert cli.main(["bench", "kernels", "--quick", "--m", "16"]) == 0
    assert calls == [([sys.executable, "-m", "bench.bench_kernels", "--quick", "--m", "16"], ROOT)]
    assert cli.main(["bench", "e2e", "--help"]) == 0 and calls[-1][0][2:] == ["bench.e2e", "--help"]
    monkeypatch.setattr(cli, "checkout_root", lambda: None)
    rc, _, err = run(capsys, "bench", "e2e")
    assert rc == 2 and "source checkout" in err and not calls[2:]


@needs_ext
@pytest.mark.usefixtures("fresh_tuning_cache")
def test_convert_a_hugging_face_directory(tmp_path, capsys):
    tf = pytest.importorskip("transformers", minversion="5")
    cfg = tf.LlamaConfig(hidden_size=256, intermediate_size=384, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    dense = tf.LlamaForCausalLM._from_config(cfg, dtype=torch.float16).eval()
    src = tmp_path / "dense"
    dense.save_pretrained(src)
    (src / "tokenizer_config.json").write_text("{}")
    ids = torch.randint(0, 128, (1, 7))

    # --prune into a directory: from_pretrained gives back what convert built
    out = tmp_path / "pruned"
    rc, stdout, _ = run(capsys, "convert", str(src), str(out), "--prune", "35%", "--device", "cpu",
                        "--decode-tokens", "4", "--prefill-tokens", "32", "--no-progress",
                        "--report", str(tmp_path / "r.json"))
    assert rc == 0 and "converted" in stdout
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()
    assert json.loads((tmp_path / "r.json").read_text())["converted"] > 0
    loaded = tf.AutoModelForCausalLM.from_pretrained(out)
    assert any(isinstance(m, STOICC.MixedModule) for m in loaded.modules())
    rc, _, err = run(capsys, "convert", str(src), str(out), "--prune", "35%")
    assert rc == 2 and "exists" in err

    # --mask (PATCH's format) into one file: the same weights as pruning in place
    ref = tf.LlamaForCausalLM.from_pretrained(src, dtype=torch.float16)
    STOICC.prune_patch_oneshot_(ref, 0.35)
    STOICC.write_patch_mask(tmp_path / "mask.npz", STOICC.masks_from_model(ref), {"method": "test"})
    STOICC.sparsify_(ref, decode_tokens=4, prefill_tokens=32)
    single = tmp_path / "m.safetensors"
    rc, _, _ = run(capsys, "convert", str(src), str(single), "--mask", str(tmp_path / "mask.npz"), "--device", "cpu",
                   "--decode-tokens", "4", "--prefill-tokens", "32", "--no-progress")
    assert rc == 0
    got = STOICC.load_compressed(lambda: tf.LlamaForCausalLM._from_config(cfg, dtype=torch.float16), single)
    with torch.no_grad():
        assert torch.equal(got(ids).logits, ref(ids).logits)
        assert torch.equal(loaded(ids).logits, ref(ids).logits)     # one-shot pruning is deterministic


def test_run_sh_help_answers_before_setup(tmp_path):
    """scripts/run.sh --help prints its usage without running scripts/setup_env.sh."""
    env = dict(os.environ, STOICC_VENV=str(tmp_path / "no-venv"))     # no venv: no e2e options either
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run.sh"), "--help"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "Usage: bash scripts/run.sh" in out.stdout and "[stoicc]" not in out.stdout + out.stderr


def test_console_script_entry_point():
    """pyproject's [project.scripts] stoicc names a function that exists (what pip installs)."""
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        target = tomllib.load(f)["project"]["scripts"]["stoicc"]
    module, _, func = target.partition(":")
    import importlib
    assert getattr(importlib.import_module(module), func) is cli.main
