"""The one-shot PATCH-like pruner: global target, lowest-loss tiles first, arguments."""
import pytest
import torch
from torch import nn

import stoicc_ext as STOICC
from stoicc_ext import TileType, classify_tiles
from stoicc_ext.patch.prune import prune_to_24

from conftest import needs_ext
from model_helpers import LAYER_LINEARS, TinyLM, close, hidden, outputs

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def dense_model(seed=0, dtype=torch.float16):
    torch.manual_seed(seed)
    return TinyLM().to(dtype).requires_grad_(False)


@pytest.mark.parametrize("s", [0.25, 0.35, 0.45])
def test_oneshot_reaches_global_target(s):
    model = dense_model()
    before = {n: p.clone() for n, p in model.named_parameters()}
    r = STOICC.prune_patch_oneshot_(model, s)
    T = r["tiles"]
    assert T == 2 * (4 * 4 + 3 * 6) and r["tiles_24"] == round(2 * s * T)
    assert abs(r["sparsity"] - s) <= 1 / (2 * T)                    # within one tile of the target
    assert abs(r["zero_fraction"] - r["sparsity"]) < 1e-3
    n24 = 0
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        if ".layers." not in name:                                  # lm_head and extra untouched
            assert torch.equal(mod.weight, before[f"{name}.weight"])
            continue
        tm = classify_tiles(mod.weight, 128, 128)
        assert not (tm == TileType.EMPTY).any()
        n24 += int((tm == TileType.SPARSE_24).sum())
        assert r["layers"][name] == pytest.approx(float((tm == TileType.SPARSE_24).float().mean()))
        W0 = before[f"{name}.weight"]
        for i, j in torch.nonzero(tm == TileType.SPARSE_24).tolist():           # magnitude 2:4 inside
            blk = (slice(128 * i, 128 * i + 128), slice(128 * j, 128 * j + 128))
            assert torch.equal(mod.weight[blk], prune_to_24(W0[blk]))
        for i, j in torch.nonzero(tm == TileType.DENSE).tolist():
            blk = (slice(128 * i, 128 * i + 128), slice(128 * j, 128 * j + 128))
            assert torch.equal(mod.weight[blk], W0[blk])
        zeros = mod.weight[mod.weight == 0]
        assert not torch.signbit(zeros).any()
    assert n24 == r["tiles_24"]
    assert len(set(r["layers"].values())) > 1                       # a global target: layers differ


def test_oneshot_prunes_lowest_loss_tiles_first():
    model = dense_model()
    low = [("model.layers.1.mlp.down_proj", 0, 2), ("model.layers.0.self_attn.v_proj", 1, 0)]
    with torch.no_grad():
        for name, i, j in low:
            model.get_submodule(name).weight[128 * i:128 * i + 128, 128 * j:128 * j + 128] *= 0.01
    T = 68
    r = STOICC.prune_patch_oneshot_(model, 1 / T)                  # two tiles in all
    assert r["tiles_24"] == 2
    for name, i, j in low:
        assert classify_tiles(model.get_submodule(name).weight, 128, 128)[i, j] == TileType.SPARSE_24


def test_oneshot_arguments():
    model = dense_model()
    snap = [p.clone() for p in model.parameters()]
    r = STOICC.prune_patch_oneshot_(model, 0.0)
    assert r["tiles_24"] == 0 and all(torch.equal(p, s) for p, s in zip(model.parameters(), snap))
    with pytest.raises(ValueError, match="sparsity"):
        STOICC.prune_patch_oneshot_(model, 0.6)
    with pytest.raises(ValueError, match="no linear layer selected"):
        STOICC.prune_patch_oneshot_(model, 0.3, filter_fn=lambda m, n: False)
    with pytest.warns(UserWarning, match="extra.*not a multiple"):
        r = STOICC.prune_patch_oneshot_(model, 0.3, filter_fn=lambda m, n: n == "extra" or "q_proj" in n)
    assert set(r["layers"]) == {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}


def test_oneshot_then_sparsify_end_to_end():
    model = dense_model()
    STOICC.prune_patch_oneshot_(model, 0.35)
    x = hidden(24)
    ref = outputs(model, x)
    rep = STOICC.sparsify_(model, verbose=False)
    assert len(rep.converted) == LAYER_LINEARS
    for a, b in zip(outputs(model, x), ref):
        assert close(a, b)
