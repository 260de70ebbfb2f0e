"""Pickling a converted model: torch.save / torch.load of the whole model, copy.deepcopy, and
torch.load(weights_only=True) of its state_dict. The library's executors are closures; a
MixedModule stores its configs and rebuilds them on load."""
import copy
import pickle

import pytest
import torch

import stoicc_ext as STOICC
from stoicc_ext.nn.mixed_module import MixedModule

from conftest import needs_ext
from model_helpers import hidden, outputs, patch_model

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def converted(seed=0):
    model = patch_model(seed=seed, n_layers=1)
    STOICC.sparsify_(model, decode_tokens=8, prefill_tokens=64, verbose=False)
    return model


def mixed(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, MixedModule)}


def assert_same_outputs(a, b):
    xs = (hidden(3), hidden(50, seed=4))            # decode and prefill executors both run
    for ya, yb in zip(outputs(a, *xs), outputs(b, *xs)):
        assert torch.equal(ya, yb)


def test_torch_save_load_whole_model(tmp_path):
    model = converted()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert mixed(loaded).keys() == mixed(model).keys()
    for name, mm in mixed(loaded).items():
        orig = mixed(model)[name]
        assert mm.cfg_decoding == orig.cfg_decoding and mm.cfg_prefill == orig.cfg_prefill
        assert mm.exec_decoding.config == mm.cfg_decoding and mm.exec_prefill.config == mm.cfg_prefill
        assert mm._bound_decoding and mm._bound_prefill
    assert_same_outputs(loaded, model)


def test_deepcopy_is_independent():
    model = converted()
    twin = copy.deepcopy(model)
    assert_same_outputs(twin, model)
    a, b = mixed(model)["model.layers.0.mlp.up_proj"], mixed(twin)["model.layers.0.mlp.up_proj"]
    assert a.sparse_values.data_ptr() != b.sparse_values.data_ptr()
    with torch.no_grad():
        b.sparse_values.zero_()                     # the copy's buffers are its own
    assert a.sparse_values.abs().sum() > 0


def test_state_dict_loads_with_weights_only(tmp_path):
    model = converted()
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    target = converted(seed=3)                      # same shapes, other values
    target.load_state_dict(sd)
    assert_same_outputs(target, model)


def test_user_executor_is_kept():
    """An executor that is not the library's is stored as it is: a deep copy keeps it (pickle
    then needs it to be picklable itself)."""
    mm = mixed(converted())["model.layers.0.mlp.up_proj"]
    calls = []

    def mine(x, *w, **kw):
        calls.append(x.shape[0])
        return mm.exec_decoding(x, *w, **kw)

    user = MixedModule(mm.compressed_weight, mm.exec_prefill, mine, mm.cfg_prefill,
                       dict(mm.cfg_decoding, schedule="mine"), mm.N, mm.K)
    twin = copy.deepcopy(user)
    assert twin.exec_decoding is mine
    twin(hidden(2))
    assert calls == [2]
    with pytest.raises((pickle.PicklingError, AttributeError), match="mine"):
        pickle.dumps(user)
