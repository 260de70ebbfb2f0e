"""Saving and loading converted models: no dense weights, tied weights, errors."""
import json
import re

import pytest
import torch
from torch import nn

import stoicc_ext as STOICC
from stoicc_ext.nn.mixed_module import MixedModule

from conftest import needs_ext
from model_helpers import LAYER_LINEARS, TinyLM, hidden, outputs, patch_model

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def converted(seed=0, **kw):
    model = patch_model(seed=seed, **kw)
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.5, 1.5)               # non-default values that must travel too
    STOICC.sparsify_(model, decode_tokens=8, prefill_tokens=64, verbose=False)
    return model


def test_save_load_roundtrip_without_dense_weights(tmp_path):
    model = converted()
    xs = (hidden(3), hidden(50, seed=4))
    ref = outputs(model, *xs)
    path = tmp_path / "model.safetensors"
    meta = STOICC.save_compressed(model, path, extra_metadata={"note": "tiny"})
    assert meta["version"] == 1 and len(meta["layers"]) == LAYER_LINEARS and meta["extra"] == {"note": "tiny"}

    def skeleton():
        with torch.device("meta"):                                # no dense weights exist at all
            return TinyLM().to(torch.float16)

    loaded = STOICC.load_compressed(skeleton, path)
    for name, mod in model.named_modules():
        if isinstance(mod, MixedModule):
            got = loaded.get_submodule(name)
            assert isinstance(got, MixedModule) and got.cfg_decoding == mod.cfg_decoding
            assert got.cfg_prefill == mod.cfg_prefill and got.decode_max_tokens == 8
            for a, b in zip(got.compressed_tensors(), mod.compressed_tensors()):
                assert torch.equal(a, b)
    for a, b in zip(outputs(loaded, *xs), ref):
        assert torch.equal(a, b)
    # into a real (randomly initialised) skeleton too
    loaded2 = STOICC.load_compressed(TinyLM().half(), path)
    for a, b in zip(outputs(loaded2, *xs), ref):
        assert torch.equal(a, b)


def test_save_load_tied_weights(tmp_path):
    model = converted(tie=True)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    path = tmp_path / "tied.safetensors"
    meta = STOICC.save_compressed(model, path)
    assert meta["aliases"] == {"lm_head.weight": "model.embed_tokens.weight"}
    loaded = STOICC.load_compressed(lambda: TinyLM(tie=True).half(), path)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    x = hidden(5)
    for a, b in zip(outputs(loaded, x), outputs(model, x)):
        assert torch.equal(a, b)


def test_load_errors(tmp_path):
    import safetensors.torch as st
    from safetensors import safe_open

    model = converted()
    path = tmp_path / "m.safetensors"
    STOICC.save_compressed(model, path)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["stoicc"])
    tensors = st.load_file(str(path))

    meta2 = dict(meta, version=2)
    st.save_file(tensors, str(tmp_path / "v2.safetensors"), metadata={"stoicc": json.dumps(meta2)})
    with pytest.raises(ValueError, match="checkpoint format version 2 .* not supported"):
        STOICC.load_compressed(TinyLM().half(), tmp_path / "v2.safetensors")

    bad_layer = json.loads(json.dumps(meta))
    bad_layer["layers"]["model.layers.0.self_attn.q_proj"]["weight"]["format_version"] = 7
    st.save_file(tensors, str(tmp_path / "f7.safetensors"), metadata={"stoicc": json.dumps(bad_layer)})
    with pytest.raises(ValueError, match="format_version 7"):
        STOICC.load_compressed(TinyLM().half(), tmp_path / "f7.safetensors")

    st.save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a stoicc checkpoint"):
        STOICC.load_compressed(TinyLM().half(), tmp_path / "plain.safetensors")

    with pytest.raises(KeyError, match="model.layers.1.self_attn.q_proj"):
        STOICC.load_compressed(TinyLM(n_layers=1).half(), path)
    with pytest.raises(ValueError, match=r"\(384, 256\) but the model's layer has \(512, 256\)"):
        STOICC.load_compressed(TinyLM(i=512).half(), path)

    class Bigger(TinyLM):
        def __init__(self):
            super().__init__()
            self.more = nn.Linear(4, 4)

    with pytest.raises(ValueError, match="missing from the file.*more.weight"):
        STOICC.load_compressed(lambda: Bigger().half(), path)


def test_save_refuses_user_schedule(tmp_path):
    model = converted(n_layers=1)
    mm = model.model.layers[0].self_attn.q_proj
    mm.cfg_decoding = dict(mm.cfg_decoding, schedule="mine")
    with pytest.raises(ValueError, match="library.s schedules"):
        STOICC.save_compressed(model, tmp_path / "x.safetensors")


# ---- casts, failed saves, damaged headers ---------------------------------------------------

def test_cast_model_saves_and_loads(tmp_path):
    """sparsify_ on bf16, then .half() / .to(dtype): the compressed values are cast with the
    model, and what save_compressed records follows them, so load_compressed takes the file."""
    model = converted(dtype=torch.bfloat16)
    path = tmp_path / "cast.safetensors"
    for cast, dtype in ((lambda m: m.half(), torch.float16), (lambda m: m.to(torch.bfloat16), torch.bfloat16)):
        cast(model)
        meta = STOICC.save_compressed(model, path)
        assert {lm["weight"]["dtype"] for lm in meta["layers"].values()} == {str(dtype).split(".")[1]}
        mm = model.model.layers[0].self_attn.q_proj
        assert mm.compressed_weight.dtype == dtype
        loaded = STOICC.load_compressed(lambda: TinyLM().to(dtype), path)
        x = hidden(5, dtype=dtype)
        for a, b in zip(outputs(loaded, x), outputs(model, x)):
            assert torch.equal(a, b)
    good = path.read_bytes()
    model.float()                                  # the kernels take fp16/bf16 only: refused, file kept
    with pytest.raises(TypeError, match=r"layer 'model.layers.0.self_attn.q_proj'.*torch.float32.*\.half\(\)"):
        STOICC.save_compressed(model, path)
    assert path.read_bytes() == good


def test_failed_save_keeps_the_existing_file(tmp_path, monkeypatch):
    """A save that fails (a layer that would not load, a write error half way) leaves the file
    that was there untouched, and no temporary file behind."""
    import safetensors.torch as st

    model = converted(n_layers=1)
    path = tmp_path / "m.safetensors"
    STOICC.save_compressed(model, path)
    good = path.read_bytes()
    mm = model.model.layers[0].mlp.up_proj
    cols = mm.sparse_cols.clone()
    mm.sparse_cols[0] = 99                         # out of range: load_compressed would refuse the file
    with pytest.raises(ValueError, match=r"layer 'model.layers.0.mlp.up_proj': sparse_cols\[0\] = 99"):
        STOICC.save_compressed(model, path)
    assert path.read_bytes() == good
    mm.sparse_cols.copy_(cols)

    def torn_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)
        raise OSError("No space left on device")

    monkeypatch.setattr(st, "save_file", torn_write)
    with pytest.raises(OSError, match="No space left"):
        STOICC.save_compressed(model, path)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_damaged_headers_name_the_file_and_layer(tmp_path):
    """Metadata that parses but lacks a key, or does not parse, or holds a size that is not a
    number: a ValueError naming the file (and the layer), not a bare KeyError or int() error."""
    import safetensors.torch as st
    from safetensors import safe_open

    model = converted(n_layers=1)
    path = tmp_path / "m.safetensors"
    STOICC.save_compressed(model, path)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["stoicc"])
    tensors = st.load_file(str(path))

    def rewrite(name, header):
        p = tmp_path / name
        st.save_file(tensors, str(p), metadata={"stoicc": header})
        return p

    no_layers = {k: v for k, v in meta.items() if k != "layers"}
    p = rewrite("nolayers.safetensors", json.dumps(no_layers))
    with pytest.raises(ValueError, match=r"nolayers.safetensors.*no 'layers' object"):
        STOICC.load_compressed(TinyLM(n_layers=1).half(), p)
    p = rewrite("notjson.safetensors", json.dumps(meta)[:-7])
    with pytest.raises(ValueError, match=r"notjson.safetensors.*not valid JSON"):
        STOICC.load_compressed(TinyLM(n_layers=1).half(), p)
    bad = json.loads(json.dumps(meta))
    bad["layers"]["model.layers.0.mlp.up_proj"]["N"] = "384x"
    p = rewrite("badint.safetensors", json.dumps(bad))
    with pytest.raises(ValueError, match=r"badint.safetensors: layer 'model.layers.0.mlp.up_proj': N must be an "
                                         r"integer, got '384x'"):
        STOICC.load_compressed(TinyLM(n_layers=1).half(), p)
    del bad["layers"]["model.layers.0.mlp.up_proj"]["cfg_prefill"]
    p = rewrite("nocfg.safetensors", json.dumps(bad))
    with pytest.raises(ValueError, match=r"layer 'model.layers.0.mlp.up_proj': its metadata lacks \['cfg_prefill'\]"):
        STOICC.load_compressed(TinyLM(n_layers=1).half(), p)


# ---- fused entries -----------------------------------------------------------------------------

def _fused_checkpoint(tmp_path):
    """A 1-layer tiny Llama converted with q/k/v and gate/up fused (compressed), saved; its header
    and tensors, to write damaged copies of."""
    import safetensors.torch as st
    from hf_models import QKV, tiny_model

    model = tiny_model("llama", layers=1)
    STOICC.prune_patch_oneshot_(model, 0.35)
    STOICC.sparsify_(model, decode_tokens=2, prefill_tokens=32, verbose=False)
    path = tmp_path / "fused.safetensors"
    meta = STOICC.save_compressed(model, path)
    assert meta["fused"][0]["parent"] == "model.layers.0.self_attn" and QKV in meta["layers"]
    return path, meta, st.load_file(str(path))


def test_fused_entries_are_validated(tmp_path):
    """A fused entry that does not match the model or the file, or is damaged in itself, is refused
    with a ValueError naming the file and the fused layer (not a bare KeyError, or an error about
    another module further on); the undamaged file loads."""
    import safetensors.torch as st
    from hf_models import FUSED_DAMAGE, damage_fused, tiny_model

    path, meta, tensors = _fused_checkpoint(tmp_path)
    STOICC.load_compressed(lambda: tiny_model("llama", layers=1), path)
    wrong = {}                         # every damage checked, so a failure lists all that are not caught
    for how, message in FUSED_DAMAGE.items():
        bad = tmp_path / f"{how}.safetensors"
        st.save_file(tensors, str(bad), metadata={"stoicc": json.dumps(damage_fused(meta, how))})
        try:
            STOICC.load_compressed(lambda: tiny_model("llama", layers=1), bad)
            wrong[how] = "loaded"
        except Exception as e:  # noqa: BLE001 - the kind of error is part of what is checked
            if type(e) is not ValueError or not re.match(re.escape(str(bad)) + ": " + message, str(e)):
                wrong[how] = f"{type(e).__name__}: {e}"
    assert not wrong, "\n".join(f"{how}: {got}" for how, got in wrong.items())


def test_layer_errors_name_the_file(tmp_path):
    """Errors about one layer name the file too, as the header's errors do; so do the strict and
    meta-device errors of the whole load."""
    model = converted(n_layers=1)
    path = tmp_path / "m.safetensors"
    STOICC.save_compressed(model, path)
    file = re.escape(str(path))
    with pytest.raises(ValueError, match=file + r": layer 'model.layers.0.self_attn.q_proj' has weight shape "
                                         r"\(256, 256\) but the model's layer has \(512, 512\)"):
        STOICC.load_compressed(TinyLM(h=512, n_layers=1).half(), path)
    odd = TinyLM(n_layers=1).half()
    odd.model.layers[0].mlp.up_proj = nn.Identity()
    with pytest.raises(TypeError, match=file + r": layer 'model.layers.0.mlp.up_proj' is a Identity in the model"):
        STOICC.load_compressed(odd, path)
    with pytest.raises(ValueError, match=file + r": checkpoint and model do not match: missing from the file"):
        STOICC.load_compressed(TinyLM(n_layers=2).half(), path)
    with torch.device("meta"):
        skeleton = TinyLM(n_layers=1).half()
    skeleton.register_buffer("rope", torch.ones(2, device="meta"), persistent=False)   # not in any file
    with pytest.raises(ValueError, match=rf"after loading {file}, 1 tensor\(s\) are still on the meta device, "
                                         r"e.g. \['rope'\]"):
        STOICC.load_compressed(skeleton, path)
