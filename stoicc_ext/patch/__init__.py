"""PATCH's pruning on the model side: its released masks (``mask.npz``) and a one-shot
PATCH-like pruner."""
from .masks import apply_patch_mask_, masks_from_model, read_patch_mask, write_patch_mask
from .prune import prune_patch_oneshot_

__all__ = ["apply_patch_mask_", "masks_from_model", "read_patch_mask", "write_patch_mask", "prune_patch_oneshot_"]
