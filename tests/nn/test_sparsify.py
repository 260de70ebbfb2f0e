"""sparsify_: which layers it converts, the report, tuning once per distinct case."""
import json

import pytest
import torch
from torch import nn

import stoicc_ext as STOICC
from stoicc_ext import TileType, classify_tiles
from stoicc_ext.nn.mixed_module import MixedModule

from conftest import needs_ext
from model_helpers import LAYER_LINEARS, close, hidden, outputs, patch_model

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def test_sparsify_converts_and_matches_dense(capsys):
    dense_name = "model.layers.1.mlp.up_proj"
    model = patch_model(dense_layer=dense_name)
    xs = (hidden(4), hidden(5, batch=3, seed=2), hidden(40, seed=3))        # decode, 3-D decode, prefill
    ref = outputs(model, *xs)
    before = {n: m.weight.clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    report = STOICC.sparsify_(model, decode_tokens=16, prefill_tokens=64, verbose=True)
    err = capsys.readouterr().err
    assert "[1/16] model.layers.0.self_attn.q_proj" in err and "kept dense" in err

    assert isinstance(report, STOICC.SparsifyReport) and len(report) == 16
    conv = {r.name for r in report.converted}
    assert len(conv) == LAYER_LINEARS - 1 and dense_name not in conv
    for r in report.rows:
        mod = model.get_submodule(r.name)
        assert isinstance(mod, MixedModule) == r.converted, r.name
        if r.converted:
            tm = classify_tiles(before[r.name], 128, 128)
            assert r.frac_24 == pytest.approx(float((tm == TileType.SPARSE_24).float().mean()))
            assert r.frac_empty == pytest.approx(float((tm == TileType.EMPTY).float().mean()))
            assert r.bytes_after < r.bytes_before and r.tile == "128x128"
            assert r.cfg_decoding["instance"] and r.cfg_prefill["instance"]
            assert r.source_decoding == "heuristic" and r.ms_decoding is None        # CPU: no timing
            assert torch.equal(STOICC.decompress(mod.compressed_weight), before[r.name])
    assert report[dense_name].status == "dense" and "no 2:4 tile" in report[dense_name].reason
    assert report["lm_head"].status == "dense"                                     # nn.Linear init: dense
    assert report["extra"].status == "unsupported" and "200x256 is not a multiple" in report["extra"].reason
    assert report.bytes_after < report.bytes_before
    for a, b in zip(outputs(model, *xs), ref):
        assert a.shape == b.shape and close(a, b)

    text = str(report)
    for needle in ("model.layers.0.self_attn.q_proj", "200x256 is not a multiple", "converted", "16 linear layers"):
        assert needle in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["converted"] == LAYER_LINEARS - 1 and len(d["layers"]) == 16 and d["ratio"] < 1
    # a second sparsify_ finds nothing new to convert
    again = STOICC.sparsify_(model, verbose=False)
    assert not again.converted and {r.name for r in again.rows} == {dense_name, "lm_head", "extra"}


def test_sparsify_keeps_what_it_cannot_take():
    m32 = patch_model(dtype=torch.float32)
    rep = STOICC.sparsify_(m32, verbose=False)
    assert not rep.converted and all(r.status == "unsupported" and "float32" in r.reason for r in rep.rows)
    tied = patch_model(tie=True)
    rep = STOICC.sparsify_(tied, verbose=False)
    assert rep["lm_head"].status == "shared" and "model.embed_tokens.weight" in rep["lm_head"].reason
    assert isinstance(tied.lm_head, nn.Linear)
    only_attn = patch_model()
    rep = STOICC.sparsify_(only_attn, filter_fn=lambda m, n: "self_attn" in n, verbose=False)
    assert len(rep.converted) == 8 and rep["model.layers.0.mlp.up_proj"].status == "filtered"
    assert isinstance(only_attn.model.layers[0].mlp.up_proj, nn.Linear)
    with pytest.raises(TypeError, match="from_linear"):
        STOICC.sparsify_(nn.Linear(128, 128))


def test_filter_fn_takes_module_then_fqn_like_torchao():
    model = patch_model(n_layers=1)
    seen = []

    def torchao_style(mod, fqn):
        seen.append((type(mod).__name__, fqn))
        return isinstance(mod, nn.Linear) and "self_attn" in fqn
    rep = STOICC.sparsify_(model, filter_fn=torchao_style, verbose=False)
    assert ("Linear", "model.layers.0.self_attn.q_proj") in seen
    assert {r.name for r in rep.converted} == {f"model.layers.0.self_attn.{p}_proj" for p in "qkvo"}
    # a filter in the other order fails loudly, naming the convention
    with pytest.raises(TypeError, match=r"filter_fn\(module, fqn\).*arguments swapped"):
        STOICC.sparsify_(patch_model(n_layers=1), filter_fn=lambda name, mod: name.startswith("model."),
                         verbose=False)
    # one that refuses everything converts nothing, and says why
    with pytest.warns(UserWarning, match=r"converted no layer \(9 filtered\).*filter_fn\(module, fqn\)"):
        rep = STOICC.sparsify_(patch_model(n_layers=1), filter_fn=lambda mod, fqn: isinstance(fqn, nn.Module),
                               verbose=False)
    assert not rep.converted and rep.by_status == {"filtered": 9} and "(9 filtered," in rep.summary()


def test_sparsify_at_0_percent_is_the_dense_model():
    """Unpruned weights (no 2:4 tile) stay nn.Linear, untouched: the converted model is the dense one."""
    model = patch_model(frac=0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.add_(0.01 * (m.weight == 0))                          # no empty tile either
    before = {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    with pytest.warns(UserWarning, match="converted no layer"):
        rep = STOICC.sparsify_(model, filter_fn=lambda m, n: ".layers." in n, verbose=False)
    assert not rep.converted and rep.bytes_after == rep.bytes_before
    for r in rep.rows:
        if ".layers." in r.name:
            assert r.status == "dense" and "no 2:4 tile" in r.reason and r.frac_dense == 1.0
        assert type(model.get_submodule(r.name)) is nn.Linear and model.get_submodule(r.name).weight is before[r.name]


def test_sparsify_keeps_dense_where_dense_cublas_is_timed_faster():
    model = patch_model(n_layers=1)

    def timer(fn, args_list, config):                 # dense cuBLAS fastest for q_proj's shape (256x256) only
        return 0.5 if config["schedule"] == "dense" and args_list[0][0].shape == (256, 256) else \
            1.0 + 0.001 * config.get("SPLIT_K", 1000)

    rep = STOICC.sparsify_(model, inspector=STOICC.Inspector(timer=timer, verbose=False), decode_tokens=16,
                           prefill_tokens=64, filter_fn=lambda m, n: ".layers." in n, verbose=False)
    q = rep["model.layers.0.self_attn.q_proj"]
    assert q.status == "dense" and "dense cuBLAS on W uncompressed (F.linear) is the fastest" in q.reason
    assert "the best stoicc candidate" in q.reason
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.Linear)
    assert rep["model.layers.0.mlp.up_proj"].converted                     # 384x256: the kernels win
    assert isinstance(model.model.layers[0].mlp.up_proj, MixedModule)


def test_sparsify_tunes_each_distinct_case_once():
    """Same (N, K, dtype, tile map) -> one tuning; the Inspector's cache answers the repeats."""
    model = patch_model(n_layers=1)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        for p in (attn.k_proj, attn.v_proj, attn.o_proj):
            p.weight.copy_(attn.q_proj.weight * 0.5)          # other values, the same tile map
    calls = []

    def timer(fn, args_list, config):
        calls.append(config)
        return 1.0 + 0.001 * config.get("SPLIT_K", 1000)   # densify (no SPLIT_K): slowest

    insp = STOICC.Inspector(timer=timer, verbose=False)
    rep = STOICC.sparsify_(model, inspector=insp, decode_tokens=16, prefill_tokens=64, verbose=False)
    rows = {r.name.rsplit(".", 1)[-1]: r for r in rep.converted}
    assert rows["q_proj"].source_decoding == "tuned" and rows["q_proj"].source_prefill == "tuned"
    for k in ("k_proj", "v_proj", "o_proj"):
        assert rows[k].source_decoding == "memory cache" and rows[k].source_prefill == "memory cache"
        assert rows[k].cfg_decoding == rows["q_proj"].cfg_decoding
    maps = {(r.N, r.K, bytes(classify_tiles(STOICC.decompress(model.get_submodule(r.name).compressed_weight),
                                            64, 64).numpy())) for r in rep.converted}
    assert len(maps) < len(rep.converted)
    assert sum(1 for r in rep.converted if r.source_decoding == "tuned") == len(maps)


def test_sparsify_reports_a_failing_layer(monkeypatch):
    model, model2 = patch_model(n_layers=1), patch_model(n_layers=1)
    bad = {id(m.model.layers[0].mlp.gate_proj) for m in (model, model2)}
    orig = MixedModule.from_linear.__func__

    def flaky(cls, linear, **kw):
        if id(linear) in bad:
            raise RuntimeError("boom")
        return orig(cls, linear, **kw)

    monkeypatch.setattr(MixedModule, "from_linear", classmethod(flaky))
    with pytest.warns(RuntimeWarning, match="gate_proj stays dense: RuntimeError: boom"):
        rep = STOICC.sparsify_(model, verbose=False)
    assert rep["model.layers.0.mlp.gate_proj"].status == "failed"
    assert isinstance(model.model.layers[0].mlp.gate_proj, nn.Linear) and len(rep.converted) == 6
    with pytest.raises(RuntimeError, match="boom"):
        STOICC.sparsify_(model2, strict=True, verbose=False)


def test_sparsify_classifies_each_weight_once(monkeypatch):
    """One TileMap per weight: the tile fractions, the cache key, the candidates' tile counts and
    the compression all read the map classified once."""
    from stoicc_ext.format import tile_map
    calls = []
    real = tile_map.classify_tiles
    monkeypatch.setattr(tile_map, "classify_tiles", lambda W, *a, **k: calls.append(tuple(W.shape)) or real(W, *a, **k))
    report = STOICC.sparsify_(patch_model(n_layers=1), decode_tokens=8, prefill_tokens=64, verbose=False)
    classified = [r for r in report.rows if r.frac_24 is not None]
    assert report.converted and len(calls) == len(classified)
