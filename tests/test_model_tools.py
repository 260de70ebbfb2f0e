"""Whole-model tools (issue 5): sparsify_ and its report, PATCH mask.npz files, the one-shot
pruner, saving and loading converted models, and a CPU dry run of bench/e2e.py."""
import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import stoicc_ext as STOICC
from stoicc_ext import TileType, classify_tiles
from stoicc_ext.mixed_module import MixedModule
from stoicc_ext.synthetic import prune_to_24

from conftest import load_bench, needs_ext
from model_helpers import TinyLM, hidden, patch_model

pytestmark = needs_ext
LAYER_LINEARS = 14          # 2 layers x (q, k, v, o, gate, up, down)


@pytest.fixture(autouse=True)
def fresh_cache(fresh_tuning_cache):
    """Every test here starts from an empty tuning cache (conftest.fresh_tuning_cache)."""
    yield


def close(a, b, atol=3e-2):
    return torch.allclose(a.float(), b.float(), atol=atol, rtol=0)


def outputs(model, *xs):
    return [o for x in xs for o in model(x)]


# --------------------------------------------------------------------------------------
# sparsify_
# --------------------------------------------------------------------------------------

def test_sparsify_converts_and_matches_dense(capsys):
    dense_name = "model.layers.1.mlp.up_proj"
    model = patch_model(dense_layer=dense_name)
    xs = (hidden(4), hidden(5, batch=3, seed=2), hidden(40, seed=3))        # decode, 3-D decode, prefill
    ref = outputs(model, *xs)
    before = {n: m.weight.clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    report = STOICC.sparsify_(model, decode_tokens=16, prefill_tokens=64)
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
    assert report[dense_name].status == "dense" and "every 128x128 tile is dense" in report[dense_name].reason
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
    rep = STOICC.sparsify_(only_attn, filter_fn=lambda n, m: "self_attn" in n, verbose=False)
    assert len(rep.converted) == 8 and rep["model.layers.0.mlp.up_proj"].status == "filtered"
    assert isinstance(only_attn.model.layers[0].mlp.up_proj, nn.Linear)
    with pytest.raises(TypeError, match="from_linear"):
        STOICC.sparsify_(nn.Linear(128, 128))


def test_sparsify_include_dense():
    dense_name = "model.layers.0.self_attn.k_proj"
    model = patch_model(dense_layer=dense_name)
    x = hidden(20)
    ref = outputs(model, x)
    rep = STOICC.sparsify_(model, include_dense=True, filter_fn=lambda n, m: ".layers." in n, verbose=False)
    assert len(rep.converted) == LAYER_LINEARS and rep[dense_name].proxy and rep[dense_name].frac_dense == 1.0
    for a, b in zip(outputs(model, x), ref):
        assert close(a, b)


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


# --------------------------------------------------------------------------------------
# PATCH masks
# --------------------------------------------------------------------------------------

def unpruned_copy(pruned, seed=5):
    """A dense model of which ``pruned`` is a pruned version: every zero filled with a random value
    (half of them negative, so a multiply-by-mask would leave -0.0)."""
    dense = copy.deepcopy(pruned)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in dense.named_parameters():
            if ".layers." in n and n.endswith(".weight"):
                fill = (torch.rand(p.shape, generator=g) * 0.2 - 0.1).to(p.dtype)
                fill[fill == 0] = -0.05
                p.copy_(torch.where(p == 0, fill, p))
    return dense


def test_mask_roundtrip_and_file_format(tmp_path):
    pruned = patch_model()
    masks = STOICC.masks_from_model(pruned)
    assert sorted(masks) == sorted(n for n, _ in pruned.named_parameters() if ".layers." in n and n.endswith("weight"))
    meta = dict(repo="test/tiny-PATCH-35Sparse", method="PATCH", sparsity=0.35, pattern="Dense/2:4 tiles",
                measured_sparsity=0.351)
    path = tmp_path / "mask.npz"
    assert STOICC.write_patch_mask(path, masks, meta) == str(path) and path.exists()

    with np.load(path, allow_pickle=False) as z:            # the format, read independently
        name = "model.layers.0.self_attn.q_proj.weight"
        assert z[name + ".__shape__"].dtype == np.int64 and tuple(z[name + ".__shape__"]) == (256, 256)
        m = masks[name].numpy()
        first = int("".join("1" if b else "0" for b in m.reshape(-1)[:8]), 2)    # big-endian: MSB first
        assert z[name][0] == first and z[name].size == 256 * 256 // 8
        assert json.loads(str(z["__meta__"])) == meta

    dense = unpruned_copy(pruned)
    assert any((p != q).any() for p, q in zip(dense.parameters(), pruned.parameters()))
    got = STOICC.apply_patch_mask_(dense, path)
    assert got == meta
    for (n, p), q in zip(dense.named_parameters(), pruned.parameters()):
        assert torch.equal(p, q), n
        if n in masks:
            zeros = p[p == 0]
            assert zeros.numel() and not torch.signbit(zeros).any(), f"{n}: -0.0 left by the mask"
    # the masked model converts exactly like the pruned one
    rep = STOICC.sparsify_(dense, verbose=False)
    assert len(rep.converted) == LAYER_LINEARS


def test_mask_written_by_hand_patch_release_layout(tmp_path):
    """A file laid out as PATCH's build_release writes it (np.savez_compressed to a path, keys in
    the model's order, __meta__ a JSON string), with a bf16 model as PATCH's loader defaults to."""
    pruned = patch_model(dtype=torch.bfloat16)
    arrays = {}
    for n, p in pruned.named_parameters():
        if ".layers." in n and n.endswith(".weight"):
            keep = (p != 0).numpy()
            arrays[n] = np.packbits(keep.reshape(-1))
            arrays[n + ".__shape__"] = np.array(keep.shape, dtype=np.int64)
    arrays["__meta__"] = np.array(json.dumps({"method": "PATCH", "measured_sparsity": 0.3}))
    np.savez_compressed(tmp_path / "mask.npz", **arrays)
    dense = unpruned_copy(pruned)
    with np.load(tmp_path / "mask.npz") as z:                  # an opened npz is accepted too
        assert STOICC.apply_patch_mask_(dense, z)["measured_sparsity"] == 0.3
    for p, q in zip(dense.parameters(), pruned.parameters()):
        assert torch.equal(p, q)


def test_mask_errors(tmp_path):
    model = patch_model()
    masks = STOICC.masks_from_model(model)
    path = tmp_path / "m.npz"

    extra = dict(masks)
    extra["model.layers.7.mlp.up_proj.weight"] = torch.ones(384, 256, dtype=torch.bool)
    STOICC.write_patch_mask(path, extra, {})
    target = unpruned_copy(model)
    snapshot = [p.clone() for p in target.parameters()]
    with pytest.raises(KeyError, match="model.layers.7.mlp.up_proj.weight"):
        STOICC.apply_patch_mask_(target, path)
    assert all(torch.equal(p, s) for p, s in zip(target.parameters(), snapshot))     # nothing written
    with pytest.warns(UserWarning, match="model.layers.7.mlp.up_proj.weight"):
        STOICC.apply_patch_mask_(target, path, strict=False)
    assert torch.equal(target.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)

    bad = dict(masks)
    bad["model.layers.0.mlp.up_proj.weight"] = torch.ones(256, 384, dtype=torch.bool)
    STOICC.write_patch_mask(path, bad, {})
    with pytest.raises(ValueError, match=r"\(256, 384\).*\(384, 256\)"):
        STOICC.apply_patch_mask_(unpruned_copy(model), path)

    partial = {k: v for k, v in masks.items() if "layers.1." not in k}
    STOICC.write_patch_mask(path, partial, {})
    with pytest.warns(UserWarning, match="have no mask in the file"):
        STOICC.apply_patch_mask_(unpruned_copy(model), path)

    arrays = dict(np.load(STOICC.write_patch_mask(path, partial, {})))
    arrays["notes"] = np.zeros(3)
    np.savez_compressed(tmp_path / "extra.npz", **arrays)
    with pytest.warns(UserWarning, match="not PATCH masks.*notes"):
        STOICC.read_patch_mask(tmp_path / "extra.npz")
    k = "model.layers.0.self_attn.q_proj.weight"
    arrays = dict(np.load(path))
    arrays[k] = arrays[k][:-1]
    np.savez_compressed(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match="packed bytes"):
        STOICC.read_patch_mask(tmp_path / "short.npz")
    with pytest.raises(FileNotFoundError):
        STOICC.apply_patch_mask_(model, tmp_path / "nope.npz")
    with pytest.raises(TypeError, match="boolean"):
        STOICC.write_patch_mask(path, {"w": torch.ones(2, 2)}, {})


# --------------------------------------------------------------------------------------
# one-shot pruner
# --------------------------------------------------------------------------------------

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
        STOICC.prune_patch_oneshot_(model, 0.3, filter_fn=lambda n, m: False)
    with pytest.warns(UserWarning, match="extra.*not a multiple"):
        r = STOICC.prune_patch_oneshot_(model, 0.3, filter_fn=lambda n, m: n == "extra" or "q_proj" in n)
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


# --------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# bench/e2e.py: the CPU dry run (needs transformers)
# --------------------------------------------------------------------------------------

def test_e2e_cpu_dry_run(tmp_path):
    pytest.importorskip("transformers", minversion="5")
    e2e = _load_e2e()
    # the README's main command without a GPU: the tiny preset by default
    res = e2e.main(["--device", "cpu", "--layers", "1", "--sparsities", "0,35", "--new-tokens", "4",
                    "--out-dir", str(tmp_path), "--tag", "cpu"])
    data = json.loads((tmp_path / "e2e_cpu.json").read_text())
    assert data["setup"]["preset"] == "tiny" and data["setup"]["arch"]["hidden_size"] == 256
    assert (tmp_path / "e2e_cpu.md").exists()
    assert {"gpu", "date", "commit", "setup", "records"} <= set(data)
    fields = {"sparsity", "speedup", "dense_ms", "stoicc_ms", "prefill_ms", "decode_step_ms", "weight_bytes_ratio",
              "peak_bytes_ratio", "agreement"}
    assert [r["sparsity"] for r in data["records"]] == [0, 35]
    for r in data["records"]:
        assert fields <= set(r) and 0 <= r["agreement"] <= 1 and r["speedup"] is None
    assert data["records"][0]["weight_bytes_ratio"] == pytest.approx(1.0, abs=0.01)
    assert data["records"][1]["weight_bytes_ratio"] < 0.95 and data["records"][1]["layers_converted"] == 7
    assert len(res["tile_choices"]["35"]) == 7


def _load_e2e():
    return load_bench("e2e")


def test_e2e_profile_accounting_counts_calls_and_clips_overlap():
    """The decode-step breakdown: a PDL kernel that starts under its predecessor is counted only
    from where the predecessor ended, and each kernel's calls are counted, so the per-call time
    can be set beside the kernel table's."""
    from types import SimpleNamespace
    from torch.autograd import DeviceType
    e2e = _load_e2e()

    def ev(name, start, end):  # profiler times are in microseconds
        return SimpleNamespace(name=name, device_type=DeviceType.CUDA, time_range=SimpleNamespace(start=start, end=end))

    k = "void stoicc::spmm_kernel<__half, 16, 128, 128, 4, 1, 3, 1>(stoicc::SpmmArgs)"
    events = [ev("rmsnorm", 0, 5), ev(k, 5, 15), ev(k, 12, 22),  # the 2nd call started 3 us early (PDL)
              ev("nvjet_sm90_hsh_128x16_64x11_4x1_v_bz_TNT", 22, 30),
              SimpleNamespace(name="cpu op", device_type=DeviceType.CPU, time_range=SimpleNamespace(start=0, end=99))]
    out = e2e._exclusive_kernel_ms(SimpleNamespace(events=lambda: events))
    assert out[k] == (pytest.approx(0.017), 2)  # 10 + 7 us
    assert out["rmsnorm"] == (pytest.approx(0.005), 1) and "cpu op" not in out
    assert e2e._exclusive_kernel_ms(SimpleNamespace(events=lambda: events[-1:])) is None
    top = [dict(kernel=k, ms=0.017, calls=2, us_per_call=8.5, category="stoicc"),
           dict(kernel="void at::native::reduce_kernel<512>(x)", ms=0.6, calls=65, us_per_call=9.2, category="other")]
    rows = e2e.decode_kernel_calls([dict(sparsity=45, breakdown=dict(stoicc=dict(decode_step=dict(top=top))))])
    assert rows == [(45, "stoicc", "stoicc::spmm_kernel<__half, 16, 128, 128, 4, 1, 3, 1>", 2, 0.017, 8.5)]


def test_e2e_compiled_forward_keeps_the_linears(tmp_path):
    """--compile: both models' forward goes through torch.compile(fullgraph=True) (here a backend
    that records each graph and runs it eagerly); the dense graphs hold the linears as aten mm,
    the converted ones as one stoicc.spmm per linear, one graph per phase and model, and the
    generation matches the dense model's."""
    pytest.importorskip("transformers", minversion="5")
    e2e = _load_e2e()
    graphs = []

    def recording(gm, example_inputs):
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return gm.forward
    torch._dynamo.reset()
    torch._dynamo.list_backends()   # the registry is filled lazily; register after it
    torch._dynamo.register_backend(recording, name="stoicc_test_recording")
    res = e2e.main(["--device", "cpu", "--layers", "1", "--sparsities", "35", "--new-tokens", "4", "--no-price",
                    "--compile", "stoicc_test_recording", "--out-dir", str(tmp_path), "--tag", "cpu"])
    assert len(graphs) == 4                      # prefill and decode step, dense then stoicc; no recompiles
    dense, sparse = graphs[:2], graphs[2:]
    def count(g, key):
        return sum(key in t for t in g)
    # 7 linears in the decoder layer and lm_head: all F.linear when dense; stoicc has 7 spmm
    # calls and lm_head (dense, outside .layers.) stays F.linear
    assert all(count(g, "linear") == 8 and count(g, "stoicc.spmm") == 0 for g in dense), dense
    assert all(count(g, "linear") == 1 and count(g, "stoicc.spmm") == 7 for g in sparse), sparse
    r = res["records"][0]
    assert r["dense_compile_s"] > 0 and r["stoicc_compile_s"] > 0 and r["agreement"] == 1.0
    assert res["setup"]["compile"] == "stoicc_test_recording"
    assert "compiled by `torch.compile(fullgraph=True)`" in (tmp_path / "e2e_cpu.md").read_text()
    torch._dynamo.reset()
