"""Fused sibling projections (q/k/v, gate/up) on tiny Hugging Face models of every family
sparsify_ fuses: found by structure and a dry run, dense fusion exact, sparsify_ with one
MixedModule per group, torch.compile(fullgraph=True), checkpoints into unfused skeletons,
PATCH masks, copies and pickles."""
import copy
import io

import pytest
import torch
from torch import nn

import stoicc_ext as STOICC
from stoicc_ext.nn.fusion import FusedSlice, find_fusion_groups, fuse_linears_, fusion_groups
from stoicc_ext.nn.mixed_module import MixedModule

from conftest import needs_ext
from hf_models import FAMILIES, tiny_model, token_ids
from model_helpers import patch_model

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def convert(model, **kw):
    return STOICC.sparsify_(model, decode_tokens=2, prefill_tokens=32, **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_groups_found_and_dense_fusion_is_exact(family):
    model = tiny_model(family)
    ids = token_ids()
    ref = logits(model, ids)
    groups, note = find_fusion_groups(model)
    assert note is None and len(groups) == 4
    assert {(g.parent.split(".")[-1], g.members, g.name) for g in groups} == {
        ("self_attn", ("q_proj", "k_proj", "v_proj"), "qkv_proj"), ("mlp", ("gate_proj", "up_proj"), "gate_up_proj")}
    attn = next(g for g in groups if g.name == "qkv_proj")
    assert attn.sizes == (256, 128, 128) and attn.bias == (family == "qwen2") and attn.arg_name == "hidden_states"
    fuse_linears_(model, groups)
    a = model.model.layers[0].self_attn
    assert isinstance(a.q_proj, FusedSlice) and type(a.qkv_proj) is nn.Linear and a.qkv_proj.out_features == 512
    assert torch.allclose(logits(model, ids), ref, atol=1e-3, rtol=0)
    assert all(s.box == [None, None] for s in model.modules() if isinstance(s, FusedSlice))
    assert [g.to_dict() for g in fusion_groups(model)] == [g.to_dict() for g in groups]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_sparsify_fuses_and_matches_dense(family):
    model = tiny_model(family)
    STOICC.prune_patch_oneshot_(model, 0.35)
    ids = token_ids()
    ref = logits(model, ids)
    rep = convert(model)
    assert len(rep.fused) == 4 and rep["model.layers.0.self_attn.k_proj"].name == "model.layers.0.self_attn.qkv_proj"
    row = rep["model.layers.1.mlp.gate_up_proj"]
    assert row.converted and row.fused_from == ["model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"]
    assert (row.N, row.K) == (768, 256)
    a = model.model.layers[0].self_attn
    assert isinstance(a.qkv_proj, MixedModule) and isinstance(a.v_proj, FusedSlice)
    assert (a.qkv_proj.bias is not None) == (family == "qwen2")
    out = logits(model, ids)
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max()
    assert "4 fused groups" in rep.summary()


def test_fuse_false_keeps_projections_apart():
    model = tiny_model("llama")
    STOICC.prune_patch_oneshot_(model, 0.35)
    rep = convert(model, fuse=False)
    assert not rep.fused and "fuse=False" in rep.summary()
    assert isinstance(model.model.layers[0].self_attn.q_proj, MixedModule)
    assert not any(isinstance(m, FusedSlice) for m in model.modules())


def test_unpruned_groups_are_fused_dense():
    """At 0 % every group is kept dense and fused all the same: the same-structure dense model."""
    model = tiny_model("mistral")
    base = copy.deepcopy(model)
    fuse_linears_(base)
    rep = convert(model, filter_fn=lambda m, n: ".layers." in n)
    assert not rep.converted and len(rep.fused) == 4
    assert all(r.status == "dense" and "no 2:4 tile" in r.reason for r in rep.rows if ".layers." in r.name)
    assert type(model.model.layers[0].mlp.gate_up_proj) is nn.Linear
    ids = token_ids()
    assert torch.equal(logits(model, ids), logits(base, ids))


def test_members_not_called_by_their_parent_are_not_fused():
    """model_helpers.TinyLM calls q/k/v from the top-level forward, not from their parent's."""
    model = patch_model()
    groups, note = find_fusion_groups(model, (torch.randn(3, 256, dtype=torch.float16),))
    assert groups == [] and note is None
    assert find_fusion_groups(model)[1].startswith("no example_inputs")
    rep = STOICC.sparsify_(model, decode_tokens=16, prefill_tokens=64)
    assert not rep.fused and "no fusion: no example_inputs" in rep.summary()


def test_a_slice_refuses_another_input():
    model = tiny_model("llama", layers=1)
    fuse_linears_(model)
    q = model.model.layers[0].self_attn.q_proj
    with pytest.raises(RuntimeError, match="fused into its parent's qkv_proj"):
        q(torch.randn(1, 256, dtype=torch.float16))


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_fused_model_under_torch_compile_fullgraph(backend):
    model = tiny_model("qwen3")
    STOICC.prune_patch_oneshot_(model, 0.35)
    convert(model)
    ids = token_ids()
    ref = logits(model, ids)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    assert torch.equal(logits(compiled, ids), ref)
    assert torch.equal(logits(compiled, token_ids(seed=5)), logits(model, token_ids(seed=5)))
    assert all(s.box == [None, None] for s in model.modules() if isinstance(s, FusedSlice))   # nothing kept alive


def test_deepcopy_and_pickle_of_a_fused_model():
    model = tiny_model("gemma", layers=1)
    STOICC.prune_patch_oneshot_(model, 0.35)
    convert(model)
    ids = token_ids()
    ref = logits(model, ids)
    assert torch.equal(logits(copy.deepcopy(model), ids), ref)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    assert torch.equal(logits(torch.load(buf, weights_only=False), ids), ref)


@pytest.mark.parametrize("prune", [True, False], ids=["compressed", "dense-fused"])
def test_checkpoint_of_a_fused_model_loads_into_an_unfused_skeleton(tmp_path, prune):
    model = tiny_model("llama")
    if prune:
        STOICC.prune_patch_oneshot_(model, 0.35)
    convert(model)
    ids = token_ids()
    ref = logits(model, ids)
    path = tmp_path / "m.safetensors"
    meta = STOICC.save_compressed(model, path)
    assert [g["members"] for g in meta["fused"]] == [["q_proj", "k_proj", "v_proj"], ["gate_proj", "up_proj"]] * 2
    assert ("model.layers.0.self_attn.qkv_proj" in meta["layers"]) == prune
    loaded = STOICC.load_compressed(lambda: tiny_model("llama", seed=7), path)    # unfused, other weights
    assert isinstance(loaded.model.layers[1].mlp.up_proj, FusedSlice)
    assert torch.equal(logits(loaded, ids), ref)


def test_patch_masks_name_the_members_of_a_dense_fused_model(tmp_path):
    """Masks written from a pruned model apply to its fused copy (and come back out of it) under
    the members' names; sparsify_ of the fused copy matches sparsify_ of the masked original."""
    pruned = tiny_model("llama")
    STOICC.prune_patch_oneshot_(pruned, 0.35)
    path = tmp_path / "mask.npz"
    STOICC.write_patch_mask(path, STOICC.masks_from_model(pruned))
    fused = tiny_model("llama")
    fuse_linears_(fused)
    STOICC.apply_patch_mask_(fused, path)
    assert "model.layers.0.self_attn.qkv_proj.weight" not in STOICC.masks_from_model(fused)
    again = STOICC.masks_from_model(fused)
    for name, m in STOICC.masks_from_model(pruned).items():
        assert torch.equal(again[name], m), name
    ids = token_ids()
    assert torch.allclose(logits(fused, ids), logits(pruned, ids), atol=1e-3, rtol=0)


def test_a_group_whose_tuning_fails_is_not_reported_fused(monkeypatch):
    """Non-strict sparsify_ keeps a group whose tuning raised unfused: the report must not count it."""
    model = tiny_model("llama", layers=1)
    STOICC.prune_patch_oneshot_(model, 0.35)
    real = MixedModule.from_linear.__func__

    def from_linear(cls, linear, **kw):
        if linear.out_features in (512, 2 * model.config.intermediate_size):   # the fused q/k/v and gate/up
            raise RuntimeError("tuning failed")
        return real(cls, linear, **kw)

    monkeypatch.setattr(MixedModule, "from_linear", classmethod(from_linear))
    with pytest.warns(RuntimeWarning, match="tuning failed"):
        rep = convert(model)
    assert rep.fused == [] and not any(isinstance(m, FusedSlice) for m in model.modules())
