"""stoicc: tile-sparse (dense / 2:4 / empty tiles) GEMM for PATCH-pruned LLM weights.

Use it as ``import stoicc_ext as STOICC``.
"""
from ._library import extension_loaded, extension_error
from ._version import __version__
from .format import FORMAT_VERSION, CompressedWeight, TileType, classify_tiles, compress, decompress, validate
from .nn import MixedModule, SparsifyReport, load_compressed, save_compressed, save_pretrained, sparsify_
from .ops import list_instances, manifest, spmm
from .parallel import TensorParallelLinear, load_compressed_tp, shard_model_, sparsify_tp_
from .patch import apply_patch_mask_, masks_from_model, prune_patch_oneshot_, read_patch_mask, write_patch_mask
from .tuning import ConfigSpace, InspectReport, Inspector, Schedule, create_configs, executor_for

__all__ = [
    "__version__", "extension_loaded", "extension_error",
    "TileType", "classify_tiles",
    "FORMAT_VERSION", "CompressedWeight", "compress", "decompress", "validate",
    "spmm", "list_instances", "manifest",
    "Inspector", "Schedule", "create_configs", "ConfigSpace", "InspectReport", "executor_for",
    "MixedModule", "sparsify_", "SparsifyReport",
    "apply_patch_mask_", "read_patch_mask", "write_patch_mask", "masks_from_model", "prune_patch_oneshot_",
    "save_compressed", "load_compressed", "save_pretrained",
    "TensorParallelLinear", "shard_model_", "load_compressed_tp", "sparsify_tp_",
]

from .hf import install_import_hook as _install_hf_hook  # noqa: E402

_install_hf_hook()   # AutoModel*.from_pretrained reads "quant_method": "stoicc" (stoicc_ext.hf)
