"""stoicc: tile-sparse (dense / 2:4 / empty tiles) GEMM for PATCH-pruned LLM weights.

Use it as ``import stoicc_ext as STOICC`` (the spec's prefix).
"""
from ._version import __version__
from ._library import extension_loaded, extension_error
from .tile_map import TileType, classify_tiles
from .format import FORMAT_VERSION, CompressedWeight, compress, decompress, validate
from ._ops import spmm
from .instances import list_instances, manifest
from .configs import ConfigSpace, create_configs
from .inspector import InspectReport, Inspector, Schedule, executor_for
from .mixed_module import MixedModule
from .convert import sparsify_
from .sparsify_report import SparsifyReport
from .patch_masks import apply_patch_mask_, read_patch_mask, write_patch_mask, masks_from_model
from .prune import prune_patch_oneshot_
from .checkpoint import save_compressed, load_compressed

__all__ = [
    "__version__", "extension_loaded", "extension_error",
    "TileType", "classify_tiles",
    "FORMAT_VERSION", "CompressedWeight", "compress", "decompress", "validate",
    "spmm", "list_instances", "manifest",
    "Inspector", "Schedule", "create_configs", "ConfigSpace", "InspectReport", "executor_for",
    "MixedModule", "sparsify_", "SparsifyReport",
    "apply_patch_mask_", "read_patch_mask", "write_patch_mask", "masks_from_model", "prune_patch_oneshot_",
    "save_compressed", "load_compressed",
]
