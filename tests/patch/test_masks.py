"""PATCH mask.npz files: round trip, the release layout, errors."""
import copy
import json

import numpy as np
import pytest
import torch

import stoicc_ext as STOICC

from conftest import needs_ext
from model_helpers import LAYER_LINEARS, patch_model

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


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


def test_not_a_mask_file(tmp_path):
    """A text file or a single .npy given as mask.npz: a ValueError saying what the file is not,
    not numpy's advice to allow pickles."""
    text = tmp_path / "mask.npz"
    text.write_text("model.layers.0.self_attn.q_proj.weight 1 0 1 1\n")
    with pytest.raises(ValueError, match=r"mask.npz' is not a numpy .npz archive") as info:
        STOICC.read_patch_mask(text)
    assert "pickle" not in str(info.value)
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="single .npy array"):
        STOICC.read_patch_mask(npy)


def test_float_shapes_and_bad_meta_are_refused(tmp_path):
    """A shape stored as floats is refused (int() would truncate 256.7 to 256 and read another
    shape); a __meta__ that is not JSON names the file."""
    bits = np.packbits(np.ones(256 * 256, dtype=bool))
    for shape in ([256.0, 256.0], [256.7, 256]):
        path = tmp_path / "f.npz"
        np.savez(path, **{"w": bits, "w.__shape__": np.asarray(shape)})
        with pytest.raises(ValueError, match=r"mask 'w': w.__shape__ must hold non-negative integers"):
            STOICC.read_patch_mask(path)
    path = tmp_path / "m.npz"
    np.savez(path, **{"w": bits, "w.__shape__": np.asarray([256, 256]), "__meta__": np.asarray("{oops")})
    with pytest.raises(ValueError, match=r"m.npz: __meta__ is not valid JSON"):
        STOICC.read_patch_mask(path)
