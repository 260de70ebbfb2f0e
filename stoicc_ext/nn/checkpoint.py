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
weights. The rest is loaded with ``load_state_dict(assign=True)``. The header is checked entry by
entry against the file and the skeleton (layers, fused groups, aliases) before any tensor is read,
and each layer in full as it is read (``_Checkpoint``); ``stoicc_ext.parallel.load_compressed_tp``
reads through the same checks, and ``from_pretrained`` (``stoicc_ext.hf.quantizer``) checks a
directory's header and layers with the same functions, so a checkpoint is refused alike, naming
the file (or directory) and the layer.
"""
import contextlib
import json
import os
import sys
import uuid
from typing import Any, Callable

import torch
from torch import nn

from .._version import __version__
from ..format.compressed import CompressedWeight
from ..format.tile_map import as_int
from ..tuning.library import is_library_config, library_executor
from .fusion import KNOWN_GROUPS, FusedSlice, FusionGroup, fusion_groups, install_fusions
from .mixed_module import MixedModule
from .storage import tied_aliases

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


def _header(model: nn.Module, layers: dict[str, dict], aliases: dict[str, str],
            extra_metadata: Any = None) -> dict[str, Any]:
    """The ``"stoicc"`` metadata object of a checkpoint of ``model`` from its layer entries and
    tied-tensor aliases, plus the model's fused groups. ``save_compressed`` and ``save_pretrained``
    both build it here, so that a file and a directory carry the same header."""
    meta = dict(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, library=__version__, layers=layers,
                aliases=aliases)
    fused = fusion_groups(model)
    if fused:           # loading gives an unfused skeleton this structure first
        meta["fused"] = [g.to_dict() for g in fused]
    if extra_metadata is not None:
        meta["extra"] = extra_metadata
    return meta


def save_compressed(model: nn.Module, path: str | os.PathLike, *,
                    extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` (converted with ``sparsify_`` or holding ``MixedModule``s) to ``path``
    (safetensors). ``extra_metadata``: a JSON-able dict stored under ``"extra"``. Returns the
    metadata dict written.

    Every layer is validated as ``load_compressed`` will read it before anything is written, and
    the file is written next to ``path`` under a temporary name, then renamed over it: a save that
    fails leaves an existing ``path`` as it was."""
    refuse_split_layers(model, "save_compressed")
    st = _safetensors()
    layers = {n: _layer_meta(n, m) for n, m in model.named_modules() if isinstance(m, MixedModule)}
    state = {k: t for k, t in model.state_dict(keep_vars=False).items() if t is not None}
    meta_keys = [k for k, t in state.items() if t.device.type == "meta"]
    if meta_keys:
        raise ValueError(f"{meta_keys[0]} is on the meta device: nothing to save")
    aliases = tied_aliases(state)      # a tied tensor is stored once, under its first name
    # own storage: partial views never collide
    tensors = {k: t.detach().to("cpu").contiguous().clone() for k, t in state.items() if k not in aliases}
    meta = _header(model, layers, aliases, extra_metadata)
    _write_atomic(st, tensors, os.fspath(path), {_META_KEY: json.dumps(meta)})
    return meta


def refuse_split_layers(model: nn.Module, what: str) -> None:
    """A stoicc checkpoint holds whole layers, written from one process. A layer split over ranks
    by ``stoicc_ext.parallel`` (a ``TensorParallelLinear``) holds this rank's shard only, which would
    be written as if it were the whole layer and load as a wrong model: refuse it by name."""
    parallel = sys.modules.get("stoicc_ext.parallel.module")
    if parallel is None:            # never imported: no layer can be split
        return
    for name, m in model.named_modules():
        if isinstance(m, parallel.TensorParallelLinear):
            raise ValueError(f"{what}: {name or 'the model'} is split over ranks (a TensorParallelLinear holding "
                             f"this rank's shard), and a stoicc checkpoint holds whole layers; save the model "
                             f"before it is split (load_compressed_tp and shard_model_ split it when loading)")


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


def _require_fields(what, d, fields):
    """ValueError naming ``what`` unless ``d`` is a JSON object with every one of ``fields``."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} is a {type(d).__name__}, not an object")
    missing = [f for f in fields if f not in d]
    if missing:
        raise ValueError(f"{what} lacks {missing}")


def _layer_entry(path, name, lm):
    """A layer's metadata with its sizes as ints; ValueError naming the file and the layer when a
    field is missing or of the wrong kind."""
    where = f"{os.fspath(path)}: layer {name!r}"
    _require_fields(f"{where}: its metadata", lm, _LAYER_FIELDS)
    for f in ("weight", "cfg_decoding", "cfg_prefill"):
        if not isinstance(lm[f], dict):
            raise ValueError(f"{where}: {f} is a {type(lm[f]).__name__}, not an object")
    try:
        return dict(lm, N=as_int("N", lm["N"]), K=as_int("K", lm["K"]),
                    decode_max_tokens=as_int("decode_max_tokens", lm["decode_max_tokens"]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


# ---- loading: one reader for load_compressed and load_compressed_tp -------------------------

def _model_of(model_or_factory):
    """The skeleton: ``model_or_factory`` itself, or what calling it returns."""
    model = model_or_factory() if callable(model_or_factory) and not isinstance(model_or_factory, nn.Module) \
        else model_or_factory
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module or a function returning one, got {type(model).__name__}")
    return model


class _Tensors:
    """The tensors of a checkpoint (one safetensors file, or a ``save_pretrained`` directory's
    shards) by name, each read onto ``device`` when asked for, so that a loader holds one layer at
    a time besides what it keeps. A tied tensor (``aliases``) answers to both of its names: the
    file holds one of them, whichever the writer kept. Open while ``stack`` is."""

    def __init__(self, stack, path, aliases, device="cpu", files=None):
        from safetensors import safe_open

        from .pretrained import checkpoint_files   # pretrained imports this module

        self._file = {}
        # ``files``: the shards when the caller has them already (transformers' from_pretrained
        # resolves them, from a hub cache too); ``path`` then only names the checkpoint in errors
        for file in checkpoint_files(path) if files is None else files:
            f = stack.enter_context(safe_open(file, framework="pt", device=str(device)))
            self._file.update(dict.fromkeys(f.keys(), f))
        self.aliases = {}                           # name -> the name it is stored under
        for key, target in aliases.items():
            if not isinstance(target, str):
                raise ValueError(f"{path}: checkpoint alias {key} -> {target!r} does not name a tensor")
            if target in self._file:
                self.aliases[key] = target
            elif key in self._file:
                self.aliases[target] = key
            else:
                raise ValueError(f"{path}: checkpoint alias {key} -> {target}: neither is in the file")

    def stored(self):
        """The names the tensors are stored under."""
        return self._file.keys()

    def _name(self, key):
        return self.aliases.get(key, key)

    def __contains__(self, key):
        return self._name(key) in self._file

    def __getitem__(self, key):
        key = self._name(key)
        return self._file[key].get_tensor(key)

    def shape(self, key):
        """The stored shape of ``key``, from the file's header (nothing read)."""
        key = self._name(key)
        return tuple(self._file[key].get_slice(key).get_shape())


_FUSED_FIELDS = ("parent", "members", "sizes", "in_features", "bias", "arg_index", "arg_name")


def _fusion_entry(path, i, d):
    """Entry ``i`` of the header's ``"fused"`` list as a ``FusionGroup``, each field checked:
    ``FusionGroup.from_dict`` would fail on a damaged one with a bare KeyError or TypeError, or
    truncate a size that is not an integer."""
    where = f"{path}: fused entry {i}"
    _require_fields(where, d, _FUSED_FIELDS)
    parent, members = d["parent"], d["members"]
    if not isinstance(parent, str) or not isinstance(members, list) or tuple(members) not in KNOWN_GROUPS:
        raise ValueError(f"{where}: members {members!r} of {parent!r} are not a group that stoicc fuses (one of "
                         f"{[list(m) for m in KNOWN_GROUPS]})")
    name = KNOWN_GROUPS[tuple(members)]
    where = f"{path}: fused layer {f'{parent}.{name}' if parent else name!r}"
    sizes = d["sizes"]
    if not isinstance(sizes, list) or len(sizes) != len(members):
        raise ValueError(f"{where}: sizes {sizes!r} do not give one output size per member of {members}")
    if not isinstance(d["bias"], bool) or not isinstance(d["arg_name"], str):
        raise ValueError(f"{where}: bias {d['bias']!r} is not a bool, or arg_name {d['arg_name']!r} not a string")
    try:
        sizes = tuple(as_int("sizes", n) for n in sizes)
        in_features = as_int("in_features", d["in_features"])
        arg_index = None if d["arg_index"] is None else as_int("arg_index", d["arg_index"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    if min(sizes) <= 0 or in_features <= 0:
        raise ValueError(f"{where}: sizes {list(sizes)} and in_features {in_features} must be positive")
    return FusionGroup(parent, tuple(members), sizes, in_features, d["bias"], arg_index, d["arg_name"])


def _check_member(where, name, mod, n, g):
    """A fused group's member in the skeleton: an ``nn.Linear`` (unfused skeleton) or a
    ``FusedSlice`` (fused already) of ``n`` outputs, the group's inputs and bias."""
    if isinstance(mod, nn.Linear):
        bias = mod.bias is not None
    elif isinstance(mod, FusedSlice):      # a slice holds no bias: the fused module does
        bias = g.bias
    else:
        raise ValueError(f"{where}: its member {name} is {'not a module' if mod is None else 'a ' + type(mod).__name__}"
                         f" of the model, not an nn.Linear")
    if (mod.out_features, mod.in_features, bias) != (n, g.in_features, g.bias):
        raise ValueError(f"{where}: the model's {name} is {mod.out_features}x{mod.in_features} (bias={bias}), "
                         f"the checkpoint fused a {n}x{g.in_features} linear (bias={g.bias})")


def _check_fusion(path, g, layers, tensors, model):
    """``g`` against the skeleton (its members) and the file (the fused layer, compressed or a
    dense weight: the members' sizes summed by ``in_features``, and the same bias), so that a
    damaged entry is named as such, not met later as a shape error of another module.
    ``tensors`` None: no file to look in (transformers given a ``state_dict``, no checkpoint
    files); a fused layer that is not a compressed one is then checked against the skeleton only."""
    where = f"{path}: fused layer {g.fused_path!r}"
    try:
        parent = model.get_submodule(g.parent)
    except AttributeError:
        raise ValueError(f"{where}: its parent {g.parent!r} is not a module of the model") from None
    for m, n in zip(g.members, g.sizes):
        _check_member(where, g.path(m), parent._modules.get(m), n, g)
    saved_too = [g.path(m) for m in g.members if g.path(m) in layers]
    if saved_too:
        raise ValueError(f"{where}: its members {saved_too} are saved as layers of their own too")
    lm, weight = layers.get(g.fused_path), f"{g.fused_path}.weight"
    if lm is not None:
        shape, bias = (lm["N"], lm["K"]), bool(lm.get("bias"))
    elif tensors is None:
        return
    elif weight in tensors:
        shape, bias = tensors.shape(weight), f"{g.fused_path}.bias" in tensors
    else:
        raise ValueError(f"{where}: the file holds neither a compressed layer nor a weight of that name")
    want = (sum(g.sizes), g.in_features)
    if shape != want:
        raise ValueError(f"{where}: its members {list(g.members)} of {list(g.sizes)} outputs and {g.in_features} "
                         f"inputs make {want[0]}x{want[1]}, but the file's layer is {'x'.join(map(str, shape))}")
    if bias != g.bias:
        raise ValueError(f"{where}: the entry says bias={g.bias}, the file's layer has {'a' if bias else 'no'} bias")


def _fusions(path, meta, layers, tensors, model):
    """{fused path: FusionGroup} of the header's ``"fused"`` list, each entry checked in itself,
    against the file and against the skeleton."""
    entries = meta.get("fused", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'fused' is a {type(entries).__name__}, not a list of groups")
    groups = {}
    for i, d in enumerate(entries):
        g = _fusion_entry(path, i, d)
        if g.fused_path in groups:
            raise ValueError(f"{path}: fused layer {g.fused_path!r} is listed twice")
        _check_fusion(path, g, layers, tensors, model)
        groups[g.fused_path] = g
    return groups


def _check_target(where, model, name, lm):
    """The skeleton's module ``name``, which the layer will replace: an ``nn.Linear`` (or
    ``MixedModule``) of the layer's shape."""
    try:
        mod = model.get_submodule(name)
    except AttributeError:
        raise KeyError(f"{where} is not a module of the model: is the skeleton the model the checkpoint was "
                       "saved from?") from None
    if not isinstance(mod, (nn.Linear, MixedModule)):   # both have out_features / in_features
        raise TypeError(f"{where} is a {type(mod).__name__} in the model; expected nn.Linear")
    if (mod.out_features, mod.in_features) != (lm["N"], lm["K"]):
        raise ValueError(f"{where} has weight shape ({lm['N']}, {lm['K']}) but the model's layer has "
                         f"({mod.out_features}, {mod.in_features})")


def _check_header(path, meta, tensors, model):
    """``(layers, fused)`` of the checked header ``meta`` (``parse_metadata``'s, or the
    ``quantization_config`` transformers read from ``config.json``) of the checkpoint ``path``:
    each layer's fields, the fused groups against the file and the skeleton (then installed on an
    unfused skeleton), and the module each layer replaces. ``_Checkpoint`` and the transformers
    quantizer (``stoicc_ext.hf.quantizer``) both check a header here, so that a damaged one is
    refused alike, with the same error naming ``path``, whichever loads it."""
    layers = {name: _layer_entry(path, name, lm) for name, lm in meta["layers"].items()}
    fused = _fusions(path, meta, layers, tensors, model)
    install_fusions(model, list(fused.values()))    # an unfused skeleton gets the saved structure
    for name, lm in layers.items():
        _check_target(f"{path}: layer {name!r}", model, name, lm)
    return layers, fused


def _checked_weight(where, tensors, lm):
    """The ``CompressedWeight`` of the layer entry ``lm`` (``_layer_entry``'s) from its seven
    ``tensors``, checked in full, of the entry's shape; errors start with ``where``."""
    try:
        Wc = CompressedWeight.from_tensors(tensors, lm["weight"], check=True)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    if (Wc.N, Wc.K) != (lm["N"], lm["K"]):
        raise ValueError(f"{where}: compressed weight is {Wc.N}x{Wc.K}, metadata says {lm['N']}x{lm['K']}")
    return Wc


def _layer_module(where, lm, Wc, bias):
    """The ``MixedModule`` of the layer entry ``lm`` as saved: ``Wc`` and ``bias`` with the
    executors of its stored configs (no tuning)."""
    N, K, cfg_d, cfg_p = lm["N"], lm["K"], lm["cfg_decoding"], lm["cfg_prefill"]
    try:
        ex_p, ex_d = library_executor(cfg_p, N, K), library_executor(cfg_d, N, K)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: its configs cannot be rebuilt ({type(e).__name__}: {e})") from None
    return MixedModule(Wc, ex_p, ex_d, cfg_p, cfg_d, N, K, bias=bias, decode_max_tokens=lm["decode_max_tokens"])


def _under(key, names):
    """Whether the state-dict ``key`` belongs to one of the modules ``names`` (or a submodule)."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts)))


class _Checkpoint:
    """A checkpoint opened to be loaded into ``model``. Opening it checks the header entry by
    entry, against the file and the skeleton, before any tensor is read: the layers (fields, and
    the module each replaces), the fused groups (which it then installs on an unfused skeleton),
    the tied-tensor aliases. ``layer`` reads and checks one layer, ``finish`` loads the rest.

    ``load_compressed`` and ``load_compressed_tp`` both read through it, so that a file is refused
    the same way, with the same ValueError naming the file and the layer, whichever loads it."""

    def __init__(self, stack, path, model, device="cpu"):
        self.path = os.fspath(path)
        meta = read_metadata(path)
        self.tensors = _Tensors(stack, path, meta.get("aliases", {}), device)
        self.layers, self.fused = _check_header(self.path, meta, self.tensors, model)

    def _where(self, name):
        return f"{self.path}: layer {name!r}"

    def layer(self, name):
        """``(CompressedWeight, bias or None)`` of layer ``name``, read and checked in full."""
        lm, where = self.layers[name], self._where(name)
        keys = [f"{name}.{t}" for t in CompressedWeight.names]
        missing = [k for k in keys if k not in self.tensors]
        if missing:
            raise ValueError(f"{where}: tensors {missing} are missing from the file")
        if lm.get("bias") and f"{name}.bias" not in self.tensors:
            raise ValueError(f"{where}: its bias is missing from the file")
        Wc = _checked_weight(where, [self.tensors[k] for k in keys], lm)
        return Wc, self.tensors[f"{name}.bias"] if lm.get("bias") else None

    def whole_layer(self, name, Wc, bias):
        """The ``MixedModule`` of layer ``name`` as saved: ``Wc`` and ``bias`` with the executors of
        its stored configs (no tuning)."""
        return _layer_module(self._where(name), self.layers[name], Wc, bias)

    def _rest(self):
        """The tensors that are not the layers', a tied pair as one tensor under both names (so
        that ``load_state_dict(assign=True)`` ties the parameters again)."""
        done = {f"{n}.{t}" for n in self.layers for t in CompressedWeight.names}
        done |= {f"{n}.bias" for n, lm in self.layers.items() if lm.get("bias")}
        rest = {k: self.tensors[k] for k in self.tensors.stored() if k not in done}
        for key, stored in self.tensors.aliases.items():
            if stored in rest:
                rest[key] = rest[stored]
        return rest

    def finish(self, model, strict):
        """Load the rest of the file into ``model`` (after the layers are in place), then refuse
        what ``strict`` refuses and any tensor left on the meta device."""
        result = model.load_state_dict(self._rest(), strict=False, assign=True)
        missing = [k for k in result.missing_keys if not _under(k, self.layers)]   # the layers' own
        unexpected = result.unexpected_keys
        if strict and (missing or unexpected):
            raise ValueError(f"{self.path}: checkpoint and model do not match: missing from the file {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}, not in the model {unexpected[:5]}"
                             f"{' ...' if len(unexpected) > 5 else ''}")
        left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
        if left:
            raise ValueError(f"after loading {self.path}, {len(left)} tensor(s) are still on the meta device, e.g. "
                             f"{left[:5]}: build the skeleton so that non-persistent buffers are real (not on meta), "
                             "or load them yourself")


def load_compressed(model_or_factory: nn.Module | Callable[[], nn.Module], path: str | os.PathLike, *,
                    device: str | torch.device = "cpu", strict: bool = True) -> nn.Module:
    """Rebuild a converted model from ``path`` into a skeleton (an ``nn.Module``, or a callable
    returning one). ``device``: where the tensors are loaded (and the model is moved at the end,
    non-persistent buffers included). ``strict``: a skeleton tensor that
    the file lacks, or a file tensor that the skeleton lacks, is an error. Returns the model."""
    _safetensors()
    model = _model_of(model_or_factory)
    with contextlib.ExitStack() as stack:
        ckpt = _Checkpoint(stack, path, model, device)
        for name in ckpt.layers:
            model.set_submodule(name, ckpt.whole_layer(name, *ckpt.layer(name)))
        ckpt.finish(model, strict)
    return model.to(device)      # what the file did not hold (non-persistent buffers) joins the rest
