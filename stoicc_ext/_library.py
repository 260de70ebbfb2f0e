"""Loads the compiled extension (``_C``), which registers the ``torch.ops.stoicc`` ops.

A missing or broken build warns instead of crashing, so that the pure-Python parts (tile
maps, compression) stay usable; ops then raise when called.
"""
import glob
import os
import warnings

import torch

extension_error = None
extension_loaded = False

def _load():
    global extension_error, extension_loaded
    here = os.path.dirname(os.path.abspath(__file__))
    # STOICC_LIBRARY: load another build of the extension (kernel experiments, A/B timing).
    override = os.environ.get("STOICC_LIBRARY")
    candidates = [override] if override else sorted(glob.glob(os.path.join(here, "_C*.so")))
    if not candidates:
        extension_error = "stoicc_ext/_C*.so not found: the CUDA extension was not built (pip install .)"
        return
    try:
        torch.ops.load_library(candidates[0])
        extension_loaded = True
    except OSError as e:  # wrong torch / CUDA runtime: say so, do not crash the import
        extension_error = f"could not load {candidates[0]}: {e}"
        warnings.warn(f"stoicc_ext: {extension_error}", RuntimeWarning, stacklevel=3)

_load()
