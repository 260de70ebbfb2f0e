"""``StoiccConfig`` and ``StoiccHfQuantizer``: the ``transformers`` side of a stoicc checkpoint
(imports ``transformers``; ``stoicc_ext.hf.register`` imports this module when needed)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import torch
from torch import nn
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from .._version import __version__
from ..format.compressed import CompressedWeight
from ..nn.checkpoint import (_META_KEY, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, _check_header, _check_target,
                              _checked_weight, _layer_entry, _layer_module, _Tensors)
from . import QUANT_METHOD

__all__ = ["StoiccConfig", "StoiccHfQuantizer", "build_skeleton_layers"]

logger = logging.getLogger("stoicc.hf")
_FLOAT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype(name):
    d = getattr(torch, str(name).replace("torch.", ""), None)
    if not isinstance(d, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} in the stoicc quantization config")
    return d


class StoiccConfig(QuantizationConfigMixin):
    """``config.json``'s ``quantization_config`` of a stoicc checkpoint: ``quant_method``
    ``"stoicc"``, the checkpoint format and version, the stoicc version that wrote it, and per
    converted layer its shape, weight metadata, decode and prefill configs and tensors (dtype,
    shape): what the skeleton needs before the tensors are read. Written by
    ``stoicc_ext.save_pretrained``; not meant to be filled by hand."""

    def __init__(self, layers: dict[str, dict] | None = None, aliases: dict[str, str] | None = None,
                 format: str = CHECKPOINT_FORMAT, version: int = CHECKPOINT_VERSION, library: str | None = None,
                 extra: Any = None, **kwargs):
        self.quant_method = QUANT_METHOD
        self.format = format
        self.version = version
        self.library = library or __version__
        self.layers = dict(layers or {})
        self.aliases = dict(aliases or {})
        if extra is not None:
            self.extra = extra
        kwargs.pop("quant_method", None)
        for k, v in kwargs.items():      # keys a newer writer added: kept, so they are written back
            setattr(self, k, v)
        self.post_init()

    def post_init(self):
        if self.format != CHECKPOINT_FORMAT:
            raise ValueError(f"stoicc quantization_config: format {self.format!r} is not {CHECKPOINT_FORMAT!r}")
        if self.version != CHECKPOINT_VERSION:
            raise ValueError(f"stoicc quantization_config: checkpoint format version {self.version!r} (written by "
                             f"stoicc {self.library}) is not supported; this stoicc ({__version__}) reads version "
                             f"{CHECKPOINT_VERSION}")
        for name, lm in self.layers.items():
            if not isinstance(lm, dict) or "tensors" not in lm:
                raise ValueError(f"stoicc quantization_config: layer {name!r} lists no tensors (dtype and shape); "
                                 "the directory was not written by stoicc_ext.save_pretrained")

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "StoiccConfig":
        """From ``stoicc_ext.nn.pretrained.model_metadata(model)``."""
        return cls(**{k: v for k, v in meta.items()})

    def metadata(self) -> dict[str, Any]:
        """The ``"stoicc"`` metadata this config describes (the safetensors header's object)."""
        out = {k: v for k, v in self.to_dict().items() if k != "quant_method"}
        return out

    def weight_dtype(self) -> torch.dtype | None:
        names = {lm["weight"].get("dtype") for lm in self.layers.values()}
        return _FLOAT_DTYPES.get(names.pop()) if len(names) == 1 else None


def _meta_tensor(spec):
    dtype, shape = spec
    return torch.empty(tuple(int(s) for s in shape), dtype=_dtype(dtype), device="meta")


def build_skeleton_layers(model: nn.Module, layers: dict[str, dict], *, path: str = "stoicc checkpoint") -> int:
    """Replace each listed layer of ``model`` by a ``MixedModule`` whose compressed tensors (and
    bias) are meta tensors of the stored dtypes and shapes, with the executors of the stored
    configs. Returns the number of layers replaced. ``path``: the checkpoint, as errors name it.

    Each entry and the module it replaces are checked as ``load_compressed`` checks them (the
    functions of ``stoicc_ext.nn.checkpoint``), so the errors are the same."""
    for name, lm in layers.items():
        where = f"{path}: layer {name!r}"
        lm = _layer_entry(path, name, lm)
        _check_target(where, model, name, lm)
        w = lm["weight"]
        tensors = [_meta_tensor(lm["tensors"][t]) for t in CompressedWeight.names]
        Wc = CompressedWeight(tensors, N=w["N"], K=w["K"], block_n=w["block_n"], block_k=w["block_k"],
                              dtype=w["dtype"], format_version=w.get("format_version", 1))
        bias = None
        if lm.get("bias"):
            bias = torch.empty(lm["N"], dtype=_dtype(lm.get("bias_dtype", w["dtype"])), device="meta")
        model.set_submodule(name, _layer_module(where, lm, Wc, bias))
    return len(layers)


def _checkpoint_name(model, checkpoint_files):
    """What errors call the checkpoint: what ``from_pretrained`` was given (a directory, or a hub
    id), as ``load_compressed(skeleton, directory)`` names the directory."""
    name = getattr(getattr(model, "config", None), "name_or_path", None)
    if name:
        return str(name)
    return os.path.dirname(checkpoint_files[0]) if checkpoint_files else "stoicc checkpoint"


class StoiccHfQuantizer(HfQuantizer):
    """Loads stoicc checkpoints in ``from_pretrained``: before the weights are read, the header
    (``quantization_config``: layers, fused groups) is checked against the skeleton and the shards
    as ``load_compressed`` checks it, the fused structure installed, and the listed linears of the
    meta skeleton become ``MixedModule``s (``build_skeleton_layers``); transformers then loads the
    compressed tensors into their buffers; afterwards every layer is validated as
    ``load_compressed`` validates one. A damaged directory is refused with ``load_compressed``'s
    errors, naming what ``from_pretrained`` was given. It does not convert a dense model on the
    fly (use ``stoicc convert`` or ``sparsify_``)."""

    requires_calibration = True          # pre-converted checkpoints only
    quantization_config: StoiccConfig

    def __init__(self, quantization_config, **kwargs):
        super().__init__(quantization_config, **kwargs)

    def validate_environment(self, *args, **kwargs):
        import stoicc_ext
        if not stoicc_ext.extension_loaded:
            raise ImportError(f"loading a stoicc checkpoint needs the compiled extension: "
                              f"{stoicc_ext.extension_error}")
        device_map = kwargs.get("device_map")
        if isinstance(device_map, dict) and "disk" in device_map.values():
            raise ValueError("stoicc checkpoints cannot be offloaded to disk (device_map has 'disk')")

    def update_dtype(self, dtype):
        want = self.quantization_config.weight_dtype()
        if want is not None and dtype != want:
            if dtype is not None:
                logger.info("stoicc: the checkpoint's layers are %s; loading the model in %s (not %s): the kernels "
                            "take activations of the weight's dtype", want, want, dtype)
            return want
        return dtype

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        # The header (config.json's quantization_config) is checked by the reader load_compressed
        # uses (stoicc_ext.nn.checkpoint._check_header): layers, fused groups against the skeleton
        # and the shards' tensor headers (nothing read), then the fused structure is installed.
        self._where = _checkpoint_name(model, checkpoint_files)
        meta = self.quantization_config.metadata()
        files = [f for f in checkpoint_files or () if str(f).endswith(".safetensors")]
        with contextlib.ExitStack() as stack:
            tensors = _Tensors(stack, self._where, meta.get("aliases", {}), files=files) if files else None
            self._layers, _ = _check_header(self._where, meta, tensors, model)
        n = build_skeleton_layers(model, self._layers, path=self._where)
        logger.info("stoicc: %d linear layers are MixedModules in the skeleton", n)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        where = getattr(self, "_where", "stoicc checkpoint")
        layers = getattr(self, "_layers", None) or {
            name: _layer_entry(where, name, lm) for name, lm in self.quantization_config.layers.items()}
        for name, lm in layers.items():
            ts = model.get_submodule(name).compressed_tensors()
            if any(t.device.type == "meta" for t in ts):
                raise ValueError(f"{where}: layer {name!r}: its compressed tensors are not in the checkpoint")
            _checked_weight(f"{where}: layer {name!r}", ts, lm)      # as load_compressed checks a layer
        return model

    def get_state_dict_and_metadata(self, model):
        from ..nn.pretrained import model_metadata
        meta = model_metadata(model, extra_metadata=getattr(self.quantization_config, "extra", None))
        fresh = StoiccConfig.from_metadata(meta)      # the model as it is now, not as it was loaded
        self.quantization_config.__dict__.update(fresh.__dict__)
        return None, {_META_KEY: json.dumps(meta)}

    def is_serializable(self):
        return True

    @property
    def is_trainable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        return True
