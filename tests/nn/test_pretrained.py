"""Saved directories: sharded safetensors with an index (save_pretrained), read by load_compressed
and, for transformers models, by AutoModelForCausalLM.from_pretrained (stoicc_ext.hf)."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import stoicc_ext as STOICC
from stoicc_ext.nn.mixed_module import MixedModule
from stoicc_ext.nn.pretrained import INDEX_NAME, WEIGHTS_NAME, describe_checkpoint, parse_size, read_header

from conftest import needs_ext
from model_helpers import LAYER_LINEARS, TinyLM, hidden, outputs, patch_model

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def converted(**kw):
    model = patch_model(**kw)
    STOICC.sparsify_(model, decode_tokens=8, prefill_tokens=64, verbose=False)
    return model


def test_parse_size():
    assert parse_size(123) == 123 and parse_size("5GB") == 5 * 10 ** 9 and parse_size("2GiB") == 2 * 2 ** 30
    assert parse_size("300kb") == 300_000
    with pytest.raises(ValueError, match="cannot read the size"):
        parse_size("lots")


@pytest.mark.parametrize("tie", [False, True])
def test_sharded_directory_roundtrip(tmp_path, tie):
    model = converted(tie=tie)
    xs = (hidden(3), hidden(40, seed=3))
    ref = outputs(model, *xs)
    d = tmp_path / "ckpt"
    meta = STOICC.save_pretrained(model, d, max_shard_size="200KB")
    files = sorted(os.listdir(d))
    assert INDEX_NAME in files and WEIGHTS_NAME not in files
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 2 and all(f.endswith(f"-of-{len(shards):05d}.safetensors") for f in shards)
    index = json.loads((d / INDEX_NAME).read_text())
    assert set(index["weight_map"].values()) == set(shards)
    for f in shards:                                  # every shard carries the metadata
        _, md = read_header(d / f)
        assert json.loads(md["stoicc"])["layers"].keys() == meta["layers"].keys()
    assert len(meta["layers"]) == LAYER_LINEARS
    assert ("lm_head.weight" in meta["aliases"]) == tie
    assert ("lm_head.weight" in index["weight_map"]) == (not tie)      # tied tensors are stored once
    assert STOICC.nn.checkpoint.read_metadata(d)["layers"].keys() == meta["layers"].keys()

    loaded = STOICC.load_compressed(lambda: TinyLM(tie=tie).half(), d)
    for a, b in zip(outputs(loaded, *xs), ref):
        assert torch.equal(a, b)
    if tie:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()

    info = describe_checkpoint(d)
    assert [r["name"] for r in info["layers"]] == list(meta["layers"])
    for r in info["layers"]:
        mm = model.get_submodule(r["name"])
        Wc = mm.compressed_weight
        assert (r["tiles_24"], r["tiles_dense"], r["tiles_empty"]) == (
            Wc.num_sparse_tiles, Wc.num_dense_tiles, Wc.num_empty_tiles)
        assert r["bytes"] == mm.weight_nbytes and r["dense_bytes"] == mm.N * mm.K * 2

    # saved again with one shard: the old shards and the index go
    STOICC.save_pretrained(model, d)
    assert sorted(os.listdir(d)) == [WEIGHTS_NAME]
    assert describe_checkpoint(d)["files"] == [WEIGHTS_NAME]


def test_single_file_format_still_read(tmp_path):
    model = converted(n_layers=1)
    path = tmp_path / "m.safetensors"
    STOICC.save_compressed(model, path)
    info = describe_checkpoint(path)
    assert len(info["layers"]) == 7 and info["files"] == ["m.safetensors"]
    loaded = STOICC.load_compressed(lambda: TinyLM(n_layers=1).half(), path)
    x = hidden(4)
    for a, b in zip(outputs(loaded, x), outputs(model, x)):
        assert torch.equal(a, b)


def test_save_pretrained_errors(tmp_path):
    with pytest.raises(ValueError, match="no MixedModule"):
        STOICC.save_pretrained(TinyLM().half(), tmp_path / "d")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        STOICC.save_pretrained(converted(n_layers=1), tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="neither"):
        STOICC.load_compressed(TinyLM().half(), tmp_path)


# ---- transformers ---------------------------------------------------------------------------

def tiny_llama(tie=False, bias=False):
    tf = pytest.importorskip("transformers", minversion="5")
    cfg = tf.LlamaConfig(hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, max_position_embeddings=64,
                         tie_word_embeddings=tie, attention_bias=bias)
    torch.manual_seed(0)
    # _from_config(dtype=): the model as from_pretrained builds it (rotary tables stay float32)
    return tf, cfg, tf.LlamaForCausalLM._from_config(cfg, dtype=torch.float16).eval()


def hf_converted(tie=False, bias=False):
    tf, cfg, m = tiny_llama(tie, bias)
    STOICC.prune_patch_oneshot_(m, 0.35)
    STOICC.sparsify_(m, decode_tokens=4, prefill_tokens=32, verbose=False)
    return tf, cfg, m


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("tie,bias,shard", [(False, False, "5GB"), (True, True, "300KB")])
def test_from_pretrained_roundtrip(tmp_path, tie, bias, shard):
    tf, cfg, model = hf_converted(tie, bias)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(2))
    step = ids[:, :1]
    ref, ref_step = logits(model, ids), logits(model, step)
    d = tmp_path / "llama-stoicc"
    STOICC.save_pretrained(model, d, max_shard_size=shard)
    qc = json.loads((d / "config.json").read_text())["quantization_config"]
    n_mixed = sum(isinstance(m, MixedModule) for m in model.modules())
    assert qc["quant_method"] == "stoicc" and len(qc["layers"]) == n_mixed > 0
    assert (d / INDEX_NAME).exists() == (shard == "300KB")

    loaded = tf.AutoModelForCausalLM.from_pretrained(d)
    assert loaded.dtype == torch.float16 and loaded.is_quantized
    for name, mod in model.named_modules():
        if isinstance(mod, MixedModule):
            got = loaded.get_submodule(name)
            assert isinstance(got, MixedModule) and got.cfg_decoding == mod.cfg_decoding
            assert (got.bias is not None) == (mod.bias is not None)
            if mod.bias is not None:
                assert torch.equal(got.bias, mod.bias)
            for a, b in zip(got.compressed_tensors(), mod.compressed_tensors()):
                assert torch.equal(a, b)
    assert not any(isinstance(m, torch.nn.Linear) for n, m in loaded.named_modules() if ".layers." in n)
    assert any(m.bias is not None for m in loaded.modules() if isinstance(m, MixedModule)) == bias
    assert torch.equal(logits(loaded, ids), ref) and torch.equal(logits(loaded, step), ref_step)
    if tie:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()

    # a loaded model saves again through transformers' own save_pretrained
    d2 = tmp_path / "again"
    loaded.save_pretrained(d2)
    again = tf.AutoModelForCausalLM.from_pretrained(d2)
    assert torch.equal(logits(again, ids), ref)

    # and the directory is a load_compressed checkpoint too
    skel = STOICC.load_compressed(lambda: tf.LlamaForCausalLM._from_config(cfg, dtype=torch.float16), d)
    assert torch.equal(logits(skel, ids), ref)


def test_from_pretrained_dtype_follows_the_checkpoint(tmp_path):
    tf, _, model = hf_converted()
    d = tmp_path / "m"
    STOICC.save_pretrained(model, d)
    loaded = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    assert loaded.dtype == torch.float16          # the kernels take activations of the weight's dtype


def _error_of(load, *args):
    """``"<type>: <message>"`` of what ``load(*args)`` raises, ``"loaded"`` if it does not."""
    try:
        load(*args)
    except Exception as e:  # noqa: BLE001 - the kind of error is part of what is compared
        return f"{type(e).__name__}: {e}"
    return "loaded"


def test_from_pretrained_refuses_damaged_fused_entries(tmp_path):
    """A save_pretrained directory of a model with fused q/k/v and gate/up whose first fused entry
    is damaged (in config.json's quantization_config, which from_pretrained reads, and in the
    shard's header, which load_compressed reads) is refused by from_pretrained with the ValueError
    load_compressed gives, naming the directory and the fused layer; the undamaged one loads."""
    import shutil

    import safetensors.torch as st

    from hf_models import FUSED_DAMAGE, damage_fused, tiny_model

    tf = pytest.importorskip("transformers", minversion="5")
    model = tiny_model("llama", layers=1)
    STOICC.prune_patch_oneshot_(model, 0.35)
    STOICC.sparsify_(model, decode_tokens=2, prefill_tokens=32, verbose=False)
    src = tmp_path / "llama-stoicc"
    assert STOICC.save_pretrained(model, src)["fused"]
    tf.AutoModelForCausalLM.from_pretrained(src)
    config = json.loads((src / "config.json").read_text())
    shard = str(src / WEIGHTS_NAME)
    tensors, header = st.load_file(shard), read_header(shard)[1]
    wrong = {}                          # every damage checked, so a failure lists all that are not caught
    for how, message in FUSED_DAMAGE.items():
        d = tmp_path / how
        shutil.copytree(src, d)
        bad = dict(config, quantization_config=damage_fused(config["quantization_config"], how))
        (d / "config.json").write_text(json.dumps(bad))
        st.save_file(tensors, str(d / WEIGHTS_NAME),
                     metadata=dict(header, stoicc=json.dumps(damage_fused(json.loads(header["stoicc"]), how))))
        hf = _error_of(tf.AutoModelForCausalLM.from_pretrained, d)
        whole = _error_of(STOICC.load_compressed, lambda: tiny_model("llama", layers=1), d)
        if hf != whole or not re.match("ValueError: " + re.escape(str(d)) + ": " + message, hf):
            wrong[how] = f"from_pretrained: {hf}\n    load_compressed: {whole}"
    assert not wrong, "\n".join(f"{how}: {got}" for how, got in wrong.items())


def test_registration_is_lazy():
    """import stoicc_ext does not import transformers; importing transformers afterwards (or
    before) registers the quantizer."""
    pytest.importorskip("transformers", minversion="5")
    code = ("import sys, stoicc_ext; assert 'transformers' not in sys.modules; "
            "from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING as M, "
            "AUTO_QUANTIZATION_CONFIG_MAPPING as C; "
            "print(M['stoicc'].__name__, C['stoicc'].__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["StoiccHfQuantizer", "StoiccConfig"]
    # registering twice (or after a reload) is harmless
    import stoicc_ext.hf as hf
    assert hf.register() and hf.register()
