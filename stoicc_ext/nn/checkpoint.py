"""Save and load a converted model: plain tensors in one safetensors file plus JSON metadata.

    stoicc_ext.save_compressed(model, "model.stoicc.safetensors")
    model = stoicc_ext.load_compressed(lambda: build_skeleton(), "model.stoicc.safetensors", device="cuda")

The file holds the model's whole ``state_dict()``: for every ``MixedModule`` its seven compressed
tensors and bias (``<layer>.sparse_row_ptr`` ...), and every other tensor as it is (embeddings,
norms, layers kept dense). Tensors that share storage (tied weights) are stored once. The
safetensors metadata key ``"stoicc"`` holds a JSON object:

    {"format": "stoicc-compressed-model", "version": 1, "library": <stoicc version>,
     "layers": {<name>: {"N", "K", "weight": CompressedWeight.metadata(), "cfg_decoding",
                         "cfg_prefill", "decode_max_tokens", "bias": bool}},
     "aliases": {<state_dict key>: <key it shares storage with>},
     "fused": [FusionGroup.to_dict(), ...]}       # only when the model has fused projections

A fused group (``stoicc_ext.nn.fusion``) is saved as its fused module (``<parent>.qkv_proj``, a
``MixedModule`` or a dense ``nn.Linear``) plus its entry in ``"fused"``; loading gives an unfused
skeleton the fused structure first (members of the recorded shapes become views of a fused
module), so the skeleton is the model as transformers builds it.

Loading takes a skeleton model (or a function that builds one; on the meta device is fine for the
parameters, but non-persistent buffers such as rotary tables must be real), swaps each saved layer
(an ``nn.Linear`` or ``MixedModule`` of the right shape) for a ``MixedModule`` built from the
stored tensors and executors from ``library_executor(cfg, N, K)`` (``executor_for`` for a compiled
instance, ``densify_executor`` for the densify schedule): no re-compression, no tuning, no dense
weights. The rest is loaded with ``load_state_dict(assign=True)``.
"""
import json
import os
import uuid
from typing import Any, Callable

import torch
from torch import nn

from .._version import __version__
from ..format.compressed import CompressedWeight
from ..format.tile_map import as_int
from ..tuning.library import is_library_config, library_executor
from .fusion import fusion_groups, install_fusions
from .mixed_module import MixedModule

__all__ = ["save_compressed", "load_compressed", "read_metadata", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "stoicc-compressed-model"
CHECKPOINT_VERSION = 1
_META_KEY = "stoicc"


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise ImportError("saving and loading compressed models needs the safetensors package: "
                          "pip install safetensors") from None
    return st


def _layer_meta(name, mm):
    for phase, cfg in (("cfg_decoding", mm.cfg_decoding), ("cfg_prefill", mm.cfg_prefill)):
        if not is_library_config(cfg):
            raise ValueError(f"layer {name!r}: {phase} {cfg} is not a config of the library's schedules (built-in "
                             f"or 'densify'); only those can be rebuilt at load time")
    if mm._wc_meta is None:
        raise ValueError(f"layer {name!r} does not hold a stoicc CompressedWeight")
    try:    # what load_compressed will check, checked before anything is written
        weight = mm.weight_metadata()
        Wc = CompressedWeight.from_tensors(mm.compressed_tensors(), weight, check=True)
    except (TypeError, ValueError) as e:
        raise type(e)(f"layer {name!r}: {e}") from None
    if (Wc.N, Wc.K) != (mm.N, mm.K):
        raise ValueError(f"layer {name!r}: compressed weight is {Wc.N}x{Wc.K} but the module is {mm.N}x{mm.K}")
    return dict(N=mm.N, K=mm.K, weight=weight, cfg_decoding=dict(mm.cfg_decoding),
                cfg_prefill=dict(mm.cfg_prefill), decode_max_tokens=mm.decode_max_tokens, bias=mm.bias is not None)


def save_compressed(model: nn.Module, path: str | os.PathLike, *,
                    extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` (converted with ``sparsify_`` or holding ``MixedModule``s) to ``path``
    (safetensors). ``extra_metadata``: a JSON-able dict stored under ``"extra"``. Returns the
    metadata dict written.

    Every layer is validated as ``load_compressed`` will read it before anything is written, and
    the file is written next to ``path`` under a temporary name, then renamed over it: a save that
    fails leaves an existing ``path`` as it was."""
    st = _safetensors()
    layers = {n: _layer_meta(n, m) for n, m in model.named_modules() if isinstance(m, MixedModule)}
    tensors, aliases, seen = {}, {}, {}
    for key, t in model.state_dict(keep_vars=False).items():
        if t is None:
            continue
        if t.device.type == "meta":
            raise ValueError(f"{key} is on the meta device: nothing to save")
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
                 t.dtype)
        if ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = t.detach().to("cpu").contiguous().clone()   # own storage: partial views never collide
    meta = dict(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, library=__version__, layers=layers,
                aliases=aliases)
    fused = fusion_groups(model)
    if fused:
        meta["fused"] = [g.to_dict() for g in fused]
    if extra_metadata is not None:
        meta["extra"] = extra_metadata
    _write_atomic(st, tensors, os.fspath(path), {_META_KEY: json.dumps(meta)})
    return meta


def _write_atomic(st, tensors, path, metadata):
    """``st.save_file`` to a temporary file in ``path``'s directory (same file system), then
    ``os.replace`` (atomic): readers see the old file or the new one, never a partial one."""
    # a fresh name (not mkstemp, whose 0600 mode would stick to the checkpoint): the umask applies
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        st.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``"stoicc"`` metadata of a checkpoint (ValueError if it is not one this version reads).
    ``path``: one file, or a directory written by ``save_pretrained``."""
    if os.path.isdir(path):
        from .pretrained import directory_metadata
        return directory_metadata(path)
    _safetensors()
    from safetensors import safe_open
    with safe_open(os.fspath(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(_META_KEY)
    return parse_metadata(raw, os.fspath(path))


def parse_metadata(raw: str | None, where: str) -> dict[str, Any]:
    """The checked ``"stoicc"`` metadata from its raw JSON text (None: absent) of the file or
    shard ``where``: a ValueError naming ``where`` for anything this version does not read."""
    if raw is None:
        raise ValueError(f"{where} is not a stoicc checkpoint (no '{_META_KEY}' metadata); write one with "
                         "stoicc_ext.save_compressed or stoicc_ext.save_pretrained")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{where}: the '{_META_KEY}' metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: the '{_META_KEY}' metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{where}: format {meta.get('format')!r} is not {CHECKPOINT_FORMAT!r}")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{where}: checkpoint format version {meta.get('version')!r} (written by stoicc "
                         f"{meta.get('library')}) is not supported; this stoicc ({__version__}) reads version "
                         f"{CHECKPOINT_VERSION}")
    if not isinstance(meta.get("layers"), dict) or not isinstance(meta.get("aliases", {}), dict):
        raise ValueError(f"{where}: the '{_META_KEY}' metadata has no 'layers' object (or an 'aliases' "
                         f"that is not one; keys: {sorted(meta)}): the header is damaged")
    return meta


_LAYER_FIELDS = ("N", "K", "weight", "cfg_decoding", "cfg_prefill", "decode_max_tokens")


def _layer_entry(path, name, lm):
    """A layer's metadata with its sizes as ints; ValueError naming the file and the layer when a
    field is missing or of the wrong kind."""
    where = f"{os.fspath(path)}: layer {name!r}"
    if not isinstance(lm, dict):
        raise ValueError(f"{where}: its metadata is a {type(lm).__name__}, not an object")
    missing = [f for f in _LAYER_FIELDS if f not in lm]
    if missing:
        raise ValueError(f"{where}: its metadata lacks {missing}")
    for f in ("weight", "cfg_decoding", "cfg_prefill"):
        if not isinstance(lm[f], dict):
            raise ValueError(f"{where}: {f} is a {type(lm[f]).__name__}, not an object")
    try:
        return dict(lm, N=as_int("N", lm["N"]), K=as_int("K", lm["K"]),
                    decode_max_tokens=as_int("decode_max_tokens", lm["decode_max_tokens"]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def load_compressed(model_or_factory: nn.Module | Callable[[], nn.Module], path: str | os.PathLike, *,
                    device: str | torch.device = "cpu", strict: bool = True) -> nn.Module:
    """Rebuild a converted model from ``path`` into a skeleton (an ``nn.Module``, or a callable
    returning one). ``device``: where the tensors are loaded (and the model is moved at the end,
    non-persistent buffers included). ``strict``: a skeleton tensor that
    the file lacks, or a file tensor that the skeleton lacks, is an error. Returns the model."""
    st = _safetensors()
    model = model_or_factory() if callable(model_or_factory) and not isinstance(model_or_factory, nn.Module) \
        else model_or_factory
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module or a function returning one, got {type(model).__name__}")
    if os.path.isdir(path):         # a directory of (sharded) safetensors: save_pretrained
        from .pretrained import read_directory
        meta, state = read_directory(path, device=device)
    else:
        meta = read_metadata(path)
        state = st.load_file(os.fspath(path), device=str(device))
    for key, target in meta.get("aliases", {}).items():
        if target not in state:
            raise ValueError(f"checkpoint alias {key} -> {target}: {target} is not in the file")
        state[key] = state[target]

    install_fusions(model, meta.get("fused", ()))     # an unfused skeleton gets the saved structure
    converted_keys = set()
    for name, lm in meta["layers"].items():
        lm = _layer_entry(path, name, lm)
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            raise KeyError(f"checkpoint layer {name!r} is not a module of the model: is the skeleton the model "
                           f"the checkpoint was saved from?") from None
        N, K = lm["N"], lm["K"]
        if not isinstance(mod, (nn.Linear, MixedModule)):   # both have out_features / in_features
            raise TypeError(f"checkpoint layer {name!r} is a {type(mod).__name__} in the model; expected nn.Linear")
        if (mod.out_features, mod.in_features) != (N, K):
            raise ValueError(f"checkpoint layer {name!r} has weight shape ({N}, {K}) but the model's layer has "
                             f"({mod.out_features}, {mod.in_features})")
        keys = [f"{name}.{t}" for t in CompressedWeight.names]
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"checkpoint layer {name!r}: tensors {missing} are missing from the file")
        try:
            Wc = CompressedWeight.from_tensors([state[k] for k in keys], lm["weight"], check=True)
        except (TypeError, ValueError) as e:
            raise type(e)(f"checkpoint layer {name!r}: {e}") from None
        if (Wc.N, Wc.K) != (N, K):
            raise ValueError(f"checkpoint layer {name!r}: compressed weight is {Wc.N}x{Wc.K}, metadata says {N}x{K}")
        bias = None
        if lm.get("bias"):
            if f"{name}.bias" not in state:
                raise ValueError(f"checkpoint layer {name!r}: its bias is missing from the file")
            bias = state[f"{name}.bias"]
            converted_keys.add(f"{name}.bias")
        cfg_d, cfg_p = lm["cfg_decoding"], lm["cfg_prefill"]
        try:
            ex_p, ex_d = library_executor(cfg_p, N, K), library_executor(cfg_d, N, K)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint layer {name!r}: its configs cannot be rebuilt ({type(e).__name__}: {e})") \
                from None
        mm = MixedModule(Wc, ex_p, ex_d, cfg_p, cfg_d, N, K, bias=bias, decode_max_tokens=lm["decode_max_tokens"])
        model.set_submodule(name, mm)
        converted_keys.update(keys)

    rest = {k: v for k, v in state.items() if k not in converted_keys}
    result = model.load_state_dict(rest, strict=False, assign=True)
    missing = [k for k in result.missing_keys if k not in converted_keys]
    if strict and (missing or result.unexpected_keys):
        raise ValueError(f"checkpoint and model do not match: missing from the file {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, not in the model {result.unexpected_keys[:5]}"
                         f"{' ...' if len(result.unexpected_keys) > 5 else ''}")
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if left:
        raise ValueError(f"after loading, {len(left)} tensor(s) are still on the meta device, e.g. {left[:5]}: build "
                         "the skeleton so that non-persistent buffers are real (not on meta), or load them yourself")
    return model.to(device)      # what the file did not hold (non-persistent buffers) joins the rest
