"""Hugging Face ``transformers`` integration: a stoicc checkpoint directory loads in one call.

    import stoicc_ext                                        # registers "stoicc" with transformers
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("llama-7b-stoicc")   # MixedModules, no dense weights

A directory written by ``stoicc_ext.save_pretrained(model, path)`` (or ``stoicc convert``) has a
``config.json`` whose ``quantization_config`` is ``{"quant_method": "stoicc", "layers": {...}}``.
``transformers`` looks the method up in its quantizer registry; stoicc registers
``StoiccConfig`` and ``StoiccHfQuantizer`` there (``transformers.quantizers.auto.
register_quantization_config`` / ``register_quantizer``). The quantizer replaces each listed
``nn.Linear`` of the model skeleton (on the meta device) by a ``MixedModule`` whose buffers have
the stored shapes, so ``transformers`` loads the compressed tensors straight into them: no dense
weight is ever built, no tuning runs (the saved configs are rebuilt with ``library_executor``).

Registration is lazy so that ``import stoicc_ext`` does not import ``transformers``: if
``transformers.quantizers.auto`` is already imported it happens at once, otherwise an import hook
runs it when ``transformers`` imports that module. ``register()`` does it by hand.
"""
from __future__ import annotations

import importlib.abc
import logging
import sys
import threading
import warnings
from typing import Any

__all__ = ["QUANT_METHOD", "register", "is_registered", "attach_quantizer", "install_import_hook"]

QUANT_METHOD = "stoicc"
_TARGET = "transformers.quantizers.auto"
logger = logging.getLogger("stoicc.hf")
_LOCK = threading.Lock()
_registered = False


def register() -> bool:
    """Register stoicc's quantization config and quantizer with ``transformers`` (idempotent).
    Returns False when ``transformers`` (>= 5) is not installed."""
    global _registered
    with _LOCK:
        if _registered:
            return True
        try:
            import importlib
            auto = importlib.import_module(_TARGET)     # also while its package is still being imported
        except ImportError:
            return False
        from .quantizer import StoiccConfig, StoiccHfQuantizer
        if auto.AUTO_QUANTIZATION_CONFIG_MAPPING.get(QUANT_METHOD) is not StoiccConfig:
            auto.AUTO_QUANTIZATION_CONFIG_MAPPING.pop(QUANT_METHOD, None)   # an older copy (module reloaded)
            auto.register_quantization_config(QUANT_METHOD)(StoiccConfig)
        if auto.AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is not StoiccHfQuantizer:
            auto.AUTO_QUANTIZER_MAPPING.pop(QUANT_METHOD, None)
            auto.register_quantizer(QUANT_METHOD)(StoiccHfQuantizer)
        _registered = True
        logger.debug("stoicc: registered quant_method %r with transformers", QUANT_METHOD)
        return True


def is_registered() -> bool:
    return _registered


def attach_quantizer(model: Any, meta: dict[str, Any]) -> None:
    """Give a converted ``transformers`` model the stoicc quantization config (from ``meta``,
    ``stoicc_ext.nn.pretrained.model_metadata``) and quantizer, as ``from_pretrained`` would, so
    that its ``save_pretrained`` writes a checkpoint ``from_pretrained`` reads back."""
    if not register():
        raise ImportError("saving a transformers model for from_pretrained needs transformers >= 5")
    from .quantizer import StoiccConfig, StoiccHfQuantizer
    config = StoiccConfig.from_metadata(meta)
    model.config.quantization_config = config
    model.hf_quantizer = StoiccHfQuantizer(config, pre_quantized=True)
    model.is_quantized = True
    model.quantization_method = QUANT_METHOD
    for m in model.modules():            # what transformers' own loading sets (_assign_is_quantized)
        if hasattr(m, "config") and hasattr(m, "base_model_prefix"):
            m.config._is_quantized = True


# ---- lazy registration ------------------------------------------------------------------------

class _RegisteringLoader(importlib.abc.Loader):
    """Wraps the loader of ``transformers.quantizers.auto``: runs it, then registers stoicc."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            register()
        except Exception as e:  # noqa: BLE001 - never break the user's transformers import
            warnings.warn(f"stoicc: could not register with transformers ({type(e).__name__}: {e}); "
                          "call stoicc_ext.hf.register() to see the error", RuntimeWarning, stacklevel=2)

    def __getattr__(self, name):        # get_resource_reader, is_package, get_source ...
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = None
        for finder in list(sys.meta_path):       # whoever would find it without this hook
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return None
        _uninstall()
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


_FINDER = _Finder()


def _uninstall():
    try:
        sys.meta_path.remove(_FINDER)
    except ValueError:
        pass


def install_import_hook() -> None:
    """Register now if ``transformers.quantizers.auto`` is imported, else when it is."""
    if _TARGET in sys.modules:
        try:
            register()
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"stoicc: could not register with transformers ({type(e).__name__}: {e})",
                          RuntimeWarning, stacklevel=2)
        return
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
