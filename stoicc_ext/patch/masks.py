"""PATCH's released masks (``mask.npz``): read them onto a dense model, write them.

Format (PATCH's ``scripts/release/build_release.py``), written with ``np.savez_compressed``:

* ``<name>`` (a parameter name, e.g. ``model.layers.0.self_attn.q_proj.weight``):
  ``np.packbits`` of the flattened row-major keep-mask (True = keep), numpy's default big-endian
  bit order; unpack with ``count = prod(shape)``;
* ``<name>.__shape__``: int64 array, the weight's shape;
* ``__meta__``: one JSON string (repo, base_model, method, variant, sparsity, pattern, format,
  measured_sparsity, ...).

``apply_patch_mask_`` multiplies each weight in place by its mask the way PATCH's loader does,
except that pruned entries are written as +0.0 (``masked_fill_``), never -0.0.
"""
import json
import math
import os
import warnings
import zipfile
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..nn.fusion import member_weights

__all__ = ["apply_patch_mask_", "read_patch_mask", "write_patch_mask", "masks_from_model", "patch_maskable"]

SHAPE_SUFFIX = ".__shape__"
META_KEY = "__meta__"


def patch_maskable(name, param):
    """PATCH's release rule (``_is_maskable``): a 2-D ``.weight`` whose name contains ``.layers.``
    (so ``lm_head`` and the embeddings stay dense)."""
    return name.endswith(".weight") and ".layers." in name and param.dim() == 2


def _open(path_or_npz):
    """A mapping name -> numpy array (an opened npz, or a dict given as is)."""
    if isinstance(path_or_npz, (str, os.PathLike)):
        path = os.fspath(path_or_npz)
        if not os.path.exists(path):
            raise FileNotFoundError(f"mask file {path!r} does not exist")
        # numpy's own errors here mislead (a text file "contains pickled data ... allow_pickle"):
        # masks are never pickles, so say what the file is not
        try:
            npz = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"mask file {path!r} is not a numpy .npz archive (PATCH's mask.npz is written with "
                             f"np.savez_compressed): {type(e).__name__}") from None
        if not hasattr(npz, "files"):
            raise ValueError(f"mask file {path!r} is a single .npy array, not an .npz archive of masks")
        return npz
    if hasattr(path_or_npz, "files") or isinstance(path_or_npz, dict):
        return path_or_npz
    raise TypeError(f"expected a path to mask.npz, an opened np.load(...) or a dict, got {type(path_or_npz).__name__}")


def _keys(npz):
    return list(npz.files) if hasattr(npz, "files") else list(npz.keys())


def _meta(npz, keys, where):
    if META_KEY not in keys:
        return {}
    raw = np.asarray(npz[META_KEY])
    text = raw.item() if raw.shape == () else raw.reshape(-1)[0]
    if isinstance(text, bytes):
        text = text.decode()
    try:
        return json.loads(str(text))
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: {META_KEY} is not valid JSON: {e}") from None


def read_patch_mask(path_or_npz: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(masks, meta)``: ``masks`` maps each parameter name to its bool keep-mask (a CPU tensor of
    the stored shape); ``meta`` is the parsed ``__meta__`` ({} if absent). Entries that are neither
    masks, shapes nor ``__meta__`` are ignored with a warning."""
    npz = _open(path_or_npz)
    keys = _keys(npz)
    meta = _meta(npz, keys, os.fspath(path_or_npz) if isinstance(path_or_npz, (str, os.PathLike)) else "mask file")
    masks = {}
    names = [k for k in keys if k != META_KEY and not k.endswith(SHAPE_SUFFIX)]
    shapes = {k[:-len(SHAPE_SUFFIX)] for k in keys if k.endswith(SHAPE_SUFFIX)}
    extra = [k for k in names if k not in shapes]
    if extra:
        warnings.warn(f"mask file: {len(extra)} entr{'y' if len(extra) == 1 else 'ies'} without a "
                      f"'{SHAPE_SUFFIX}' partner ignored (not PATCH masks): {extra[:5]}", UserWarning, stacklevel=2)
    orphans = sorted(shapes - set(names))
    if orphans:
        raise ValueError(f"mask file: {orphans[0]}{SHAPE_SUFFIX} has no mask entry {orphans[0]!r}")
    for name in names:
        if name not in shapes:
            continue
        stored = np.asarray(npz[name + SHAPE_SUFFIX])
        if stored.dtype.kind not in "iu" or (stored < 0).any():
            raise ValueError(f"mask {name!r}: {name}{SHAPE_SUFFIX} must hold non-negative integers (np.int64), "
                             f"got {stored.dtype} {stored.tolist()}")
        shape = tuple(int(s) for s in stored.reshape(-1))
        packed = np.asarray(npz[name])
        if packed.dtype != np.uint8:
            raise ValueError(f"mask {name!r}: expected np.packbits output (uint8), got {packed.dtype}")
        count = math.prod(shape)
        if packed.size != (count + 7) // 8:
            raise ValueError(f"mask {name!r}: {packed.size} packed bytes do not hold {count} bits of shape {shape}")
        bits = np.unpackbits(packed.reshape(-1), count=count).astype(bool)   # big-endian, numpy's default
        masks[name] = torch.from_numpy(bits.reshape(shape))
    return masks, meta


def apply_patch_mask_(model: torch.nn.Module, path_or_npz: str | os.PathLike | Mapping[str, Any], *,
                      strict: bool = True) -> dict[str, Any]:
    """Apply PATCH's ``mask.npz`` onto ``model`` in place; returns the parsed ``__meta__``.

    Each mask's name is looked up in ``model.named_parameters()`` (the members of a dense fused
    projection, ``stoicc_ext.nn.fusion``, under their own names: their rows of the fused weight):

    * not there: ``KeyError`` naming it (``strict=False``: a warning, and it is skipped);
    * another shape: ``ValueError`` naming both shapes;
    * else the weight's pruned entries (mask False) become +0.0, in place.

    Parameters that PATCH masks (2-D ``.weight`` in ``.layers.``) but the file has no mask for are
    left as they are, with a warning. Nothing is changed unless every mask matches (all checks run
    before the first write).
    """
    masks, meta = read_patch_mask(path_or_npz)
    params = member_weights(model)      # a fused q/k/v weight as q_proj.weight ...: the names masks use
    todo = []
    for name, mask in masks.items():
        p = params.get(name)
        if p is None:
            close = [n for n in params if n.endswith(name.split(".", 1)[-1])][:3]
            msg = (f"mask {name!r} names no parameter of the model"
                   + (f" (similar: {close})" if close else "") + ": is the mask for another model, or are the "
                   "names prefixed differently (e.g. 'model.' missing)?")
            if strict:
                raise KeyError(msg)
            warnings.warn(msg + " Skipped.", UserWarning, stacklevel=2)
            continue
        if tuple(p.shape) != tuple(mask.shape):
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)} but the model's parameter has shape "
                             f"{tuple(p.shape)}")
        todo.append((p, mask))
    unmasked = [n for n, p in params.items() if patch_maskable(n, p) and n not in masks]
    if unmasked:
        warnings.warn(f"{len(unmasked)} parameter(s) that PATCH prunes have no mask in the file and stay as they "
                      f"are, e.g. {unmasked[:3]}", UserWarning, stacklevel=2)
    with torch.no_grad():
        for p, mask in todo:
            p.masked_fill_(~mask.to(p.device), 0)     # +0.0: a multiply would leave -0.0 on negative weights
    return meta


def write_patch_mask(path: str | os.PathLike, masks: Mapping[str, Any], meta: dict[str, Any] | None = None) -> str:
    """Write ``masks`` ({parameter name: bool keep-mask}, tensors or arrays) and ``meta`` (a dict,
    stored as the ``__meta__`` JSON string) in PATCH's ``mask.npz`` format, to exactly ``path``."""
    arrays = {}
    for name, m in masks.items():
        if name == META_KEY or name.endswith(SHAPE_SUFFIX):
            raise ValueError(f"{name!r} is a reserved key of the format")
        a = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        if a.dtype != bool:
            raise TypeError(f"mask {name!r} must be boolean (True = keep), got {a.dtype}")
        arrays[name] = np.packbits(a.reshape(-1))          # big-endian bit order, numpy's default
        arrays[name + SHAPE_SUFFIX] = np.asarray(a.shape, dtype=np.int64)
    arrays[META_KEY] = np.asarray(json.dumps(meta or {}))
    with open(path, "wb") as f:                            # a file object: numpy adds no '.npz'
        np.savez_compressed(f, **arrays)
    return os.fspath(path)


def masks_from_model(model: torch.nn.Module,
                     filter_fn: Callable[[str, torch.nn.Parameter], bool] | None = None) -> dict[str, torch.Tensor]:
    """{name: weight != 0} for the parameters PATCH masks (``patch_maskable``) or those
    ``filter_fn(name, param)`` selects: the keep-masks of an already pruned model, as PATCH's
    release builds them. A dense fused projection gives its members' masks, under their names."""
    sel = filter_fn or patch_maskable
    return {n: (p.detach() != 0).cpu() for n, p in member_weights(model).items() if sel(n, p)}
