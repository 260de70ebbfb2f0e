"""Converted models as a directory: sharded safetensors with an index, loadable by
``transformers`` in one call (``AutoModelForCausalLM.from_pretrained``) or by
``stoicc_ext.load_compressed``.

    stoicc_ext.save_pretrained(model, "llama-7b-stoicc")           # after sparsify_
    model = AutoModelForCausalLM.from_pretrained("llama-7b-stoicc")  # after `import stoicc_ext`
    model = stoicc_ext.load_compressed(skeleton, "llama-7b-stoicc")  # any nn.Module

Layout (the Hugging Face one):

* ``model.safetensors``, or ``model-00001-of-0000N.safetensors`` ... plus
  ``model.safetensors.index.json`` (``{"metadata": {"total_size"}, "weight_map": {tensor: file}}``)
  when the tensors exceed ``max_shard_size``;
* every shard's safetensors metadata holds the ``"stoicc"`` JSON object of the single-file
  format (``stoicc_ext.nn.checkpoint``), each layer also listing its tensors' dtypes and shapes
  (``"tensors"``), so a skeleton can be built without reading the tensors;
* for a ``transformers`` model: ``config.json`` with ``quantization_config =
  {"quant_method": "stoicc", "layers": ..., ...}`` (``stoicc_ext.hf``), ``generation_config.json``,
  written by the model's own ``save_pretrained``. Tied weights are stored once.

The single-file format (``save_compressed``) is still written and read as before.
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
from typing import Any

from torch import nn

from ..format.compressed import CompressedWeight
from .checkpoint import _META_KEY, CHECKPOINT_FORMAT, _header, _layer_meta, _safetensors, parse_metadata, refuse_split_layers
from .mixed_module import MixedModule
from .storage import tied_aliases

__all__ = ["save_pretrained", "model_metadata", "checkpoint_files", "read_header", "read_directory",
           "describe_checkpoint", "INDEX_NAME", "WEIGHTS_NAME"]

logger = logging.getLogger("stoicc.checkpoint")

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
          "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}
# safetensors dtype names -> bytes per element
_ST_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def parse_size(size: int | str) -> int:
    """Bytes of ``size``: an int, or a string such as ``"5GB"``, ``"500MB"``, ``"2GiB"``."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?I?B?)\s*", str(size).upper())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"cannot read the size {size!r}: expected bytes or e.g. '5GB', '500MB', '2GiB'")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _is_transformers_model(model):
    import sys
    tf = sys.modules.get("transformers")
    if tf is None:
        return False
    try:
        return isinstance(model, tf.PreTrainedModel)
    except Exception:  # noqa: BLE001 - a broken transformers install: treat as a plain module
        return False


def model_metadata(model: nn.Module, *, extra_metadata: dict | None = None) -> dict[str, Any]:
    """The ``"stoicc"`` metadata of ``model`` (format, version, library, layers with their
    tensors' dtypes and shapes, aliases of tied tensors)."""
    refuse_split_layers(model, "save_pretrained")
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, MixedModule):
            lm = _layer_meta(name, m)
            lm["tensors"] = {n: [str(t.dtype).replace("torch.", ""), list(t.shape)]
                             for n, t in zip(CompressedWeight.names, m.compressed_tensors())}
            if m.bias is not None:
                lm["bias_dtype"] = str(m.bias.dtype).replace("torch.", "")
            layers[name] = lm
    return _header(model, layers, tied_aliases(model.state_dict(keep_vars=False)), extra_metadata)


def _shard(tensors, max_bytes):
    """[[keys of shard 1], ...]: tensors in order, a new shard when the next would pass ``max_bytes``
    (a tensor larger than ``max_bytes`` gets a shard of its own)."""
    shards, cur, size = [], [], 0
    for k, t in tensors.items():
        n = t.numel() * t.element_size()
        if cur and size + n > max_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(k)
        size += n
    if cur or not shards:
        shards.append(cur)
    return shards


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, *, max_shard_size: int | str = "5GB",
                    extra_metadata: dict | None = None) -> dict[str, Any]:
    """Write a converted ``model`` (holding ``MixedModule``s) to the directory ``save_directory``:
    safetensors shards of at most ``max_shard_size`` (``"5GB"``, ``"500MB"``, or bytes) with an index
    when there is more than one.

    A ``transformers`` model is written by its own ``save_pretrained`` with the stoicc quantization
    config attached (``config.json`` then says ``"quant_method": "stoicc"``), so that
    ``AutoModelForCausalLM.from_pretrained(save_directory)`` rebuilds it after ``import stoicc_ext``;
    the model keeps the config and quantizer (as a loaded model has them). Any other module:
    the shards and the index only (load it with ``load_compressed(skeleton, save_directory)``).
    Returns the metadata written.
    """
    max_bytes = parse_size(max_shard_size)
    directory = os.fspath(save_directory)
    if os.path.isfile(directory):
        raise ValueError(f"{directory} is a file; save_pretrained writes a directory (save_compressed writes "
                         "one file)")
    meta = model_metadata(model, extra_metadata=extra_metadata)
    if not meta["layers"]:
        raise ValueError("the model holds no MixedModule: convert it first (stoicc_ext.sparsify_)")
    os.makedirs(directory, exist_ok=True)
    if _is_transformers_model(model):
        from ..hf import attach_quantizer
        attach_quantizer(model, meta)
        model.save_pretrained(directory, max_shard_size=max_bytes)
        logger.info("stoicc: wrote %s (transformers layout, %d stoicc layers)", directory, len(meta["layers"]))
        return meta

    st = _safetensors()
    tensors = {}
    for key, t in model.state_dict(keep_vars=False).items():
        if t is None or key in meta["aliases"]:
            continue
        if t.device.type == "meta":
            raise ValueError(f"{key} is on the meta device: nothing to save")
        tensors[key] = t.detach().to("cpu").contiguous()
    shards = _shard(tensors, max_bytes)
    header = {_META_KEY: json.dumps(meta), "format": "pt"}
    names = ([WEIGHTS_NAME] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    stale = [f for f in os.listdir(directory)
             if (re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f) or f in (WEIGHTS_NAME, INDEX_NAME))
             and f not in names]
    weight_map = {}
    for fname, keys in zip(names, shards):
        path = os.path.join(directory, fname)
        tmp = path + ".tmp"
        st.save_file({k: tensors[k].clone() if _shares(tensors[k]) else tensors[k] for k in keys}, tmp,
                     metadata=header)
        os.replace(tmp, path)
        weight_map.update({k: fname for k in keys})
    if len(shards) > 1:
        index = dict(metadata=dict(total_size=sum(t.numel() * t.element_size() for t in tensors.values()),
                                   format=CHECKPOINT_FORMAT),
                     weight_map=weight_map)
        tmp = os.path.join(directory, INDEX_NAME + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(directory, INDEX_NAME))
    for f in stale:                      # a previous save's files that this one did not rewrite
        os.remove(os.path.join(directory, f))
    logger.info("stoicc: wrote %s (%d shard(s), %d stoicc layers)", directory, len(shards), len(meta["layers"]))
    return meta


def _shares(t):
    """Whether ``t`` is a view of a larger storage (safetensors refuses those)."""
    return t.untyped_storage().nbytes() != t.numel() * t.element_size()


# ---- reading --------------------------------------------------------------------------------

def checkpoint_files(path: str | os.PathLike) -> list[str]:
    """The safetensors files of a checkpoint: ``[path]`` for a file; for a directory the shards its
    index names (in order), or its ``model.safetensors``."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint at {path}")
        return [path]
    index = os.path.join(path, INDEX_NAME)
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.exists(os.path.join(path, f))]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are not in {path}: {missing[:3]}")
        return [os.path.join(path, f) for f in files]
    single = os.path.join(path, WEIGHTS_NAME)
    if os.path.exists(single):
        return [single]
    raise FileNotFoundError(f"{path} holds neither {WEIGHTS_NAME} nor {INDEX_NAME}: not a saved model directory")


def read_header(file: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str]]:
    """``(tensors, metadata)`` of one safetensors file from its header alone (no tensor is read,
    no torch needed): ``tensors[name] = {"dtype": "F16", "shape": [...], "data_offsets": [a, b]}``."""
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{os.fspath(file)} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2 ** 20:
            raise ValueError(f"{os.fspath(file)} is not a safetensors file (header of {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{os.fspath(file)} is not a safetensors file ({e})") from None
    meta = header.pop("__metadata__", None) or {}
    return header, meta


def directory_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``"stoicc"`` metadata of a saved directory (from its first shard, or else its
    ``config.json``'s ``quantization_config``)."""
    files = checkpoint_files(path)
    _, md = read_header(files[0])
    raw = md.get(_META_KEY)
    if raw is None:
        cfg_path = os.path.join(os.fspath(path), "config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                qc = json.load(f).get("quantization_config") or {}
            if qc.get("quant_method") == "stoicc":
                raw = json.dumps({k: v for k, v in qc.items() if k != "quant_method"})
    return parse_metadata(raw, os.fspath(path))


def read_directory(path: str | os.PathLike, device: Any = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metadata, state)`` of a saved directory: every shard's tensors in one dict, tied
    tensors (``aliases``) present under both names."""
    st = _safetensors()
    meta = directory_metadata(path)
    state = {}
    for f in checkpoint_files(path):
        state.update(st.load_file(f, device=str(device)))
    for key, target in meta.get("aliases", {}).items():
        if target not in state and key in state:       # the writer kept the other name of the pair
            state[target] = state[key]
    return meta, state


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint (file or directory) holds, from the headers only: per stoicc layer its
    shape, tile shape, tile counts (2:4 / dense / empty), bytes and configs; the bytes of the
    other tensors; totals. The ``stoicc info`` command prints it."""
    files = checkpoint_files(path)
    headers = {}
    raw = None
    for f in files:
        h, md = read_header(f)
        headers.update(h)
        raw = raw or md.get(_META_KEY)
    meta = directory_metadata(path) if os.path.isdir(os.fspath(path)) else parse_metadata(raw, os.fspath(path))

    def nbytes(name):
        h = headers.get(name)
        if h is None:
            return 0
        a, b = h["data_offsets"]
        return b - a

    layers, in_layers = [], set()
    for name, lm in meta["layers"].items():
        w = lm["weight"]
        keys = [f"{name}.{t}" for t in CompressedWeight.names]
        in_layers.update(keys)
        n_s, n_d = (int(headers[f"{name}.{t}"]["shape"][0]) if f"{name}.{t}" in headers
                    else int(lm.get("tensors", {}).get(t, [None, [0]])[1][0]) for t in ("sparse_cols", "dense_cols"))
        TR, TC = int(w["N"]) // int(w["block_n"]), int(w["K"]) // int(w["block_k"])
        elem = 2 if w.get("dtype") in ("float16", "bfloat16") else 4
        b = sum(nbytes(k) for k in keys)
        if lm.get("bias"):
            in_layers.add(f"{name}.bias")
        layers.append(dict(name=name, N=int(lm["N"]), K=int(lm["K"]), dtype=w.get("dtype"),
                           tile=f"{w['block_n']}x{w['block_k']}", tiles=TR * TC, tiles_24=n_s, tiles_dense=n_d,
                           tiles_empty=TR * TC - n_s - n_d, bytes=b, dense_bytes=int(lm["N"]) * int(lm["K"]) * elem,
                           cfg_decoding=lm.get("cfg_decoding"), cfg_prefill=lm.get("cfg_prefill"),
                           decode_max_tokens=lm.get("decode_max_tokens"), bias=bool(lm.get("bias"))))
    other = sum(nbytes(k) for k in headers if k not in in_layers)
    total_files = sum(os.path.getsize(f) for f in files)
    return dict(path=os.fspath(path), files=[os.path.basename(f) for f in files], library=meta.get("library"),
                version=meta.get("version"), layers=layers, aliases=meta.get("aliases", {}),
                layer_bytes=sum(r["bytes"] for r in layers), layer_dense_bytes=sum(r["dense_bytes"] for r in layers),
                other_bytes=other, file_bytes=total_files, extra=meta.get("extra"))
