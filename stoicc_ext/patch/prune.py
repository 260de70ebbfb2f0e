"""A one-shot PATCH-*like* pruner: a baseline for users without a learned PATCH mask, and the
pruner of the end-to-end benchmark. It is NOT PATCH: PATCH learns which tiles stay dense (and,
in PATCH_Joint, the 2:4 pattern) by training; this picks them in one shot from the weights.

``prune_patch_oneshot_(model, sparsity)``:

* layers: the ``nn.Linear`` modules whose weight PATCH's release masks (a 2-D ``.weight`` with
  ``.layers.`` in its name; ``lm_head`` and the embeddings stay dense), or those ``filter_fn``
  selects;
* score of each 128 x 128 tile: the energy that magnitude 2:4 pruning would remove from it, the
  sum of the squares of the two smallest-magnitude values of every group of four along K;
* global target, as in PATCH: over all selected layers together, the lowest-scoring tiles become
  2:4 (magnitude 2:4 inside, the two largest |w| of each group kept, dropped ones +0.0) until a
  fraction ``2 * sparsity`` of the tiles (so of the weights: all tiles have one size) is 2:4; the
  other tiles stay dense. Layers therefore end up with different 2:4 fractions.

The target is met to within one tile: the number of 2:4 tiles is ``round(2 * sparsity * T)`` of
the ``T`` tiles.
"""
import warnings
from typing import Any, Callable

import torch
from torch import nn

from .._filters import selects
from .masks import patch_maskable

__all__ = ["prune_patch_oneshot_", "prune_to_24", "tile_24_losses"]


def prune_to_24(W):
    """Magnitude 2:4 along K: keep the two largest ``|w|`` of each aligned group of four.

    Dropped positions become +0.0 (``torch.where``, not a multiply, which would give -0.0
    for negative weights). Ties are broken by ``topk``, so exactly two are kept.
    """
    if W.dim() != 2 or W.shape[1] % 4:
        raise ValueError(f"prune_to_24 needs a 2-D weight with K % 4 == 0, got {tuple(W.shape)}")
    N, K = W.shape
    g = W.reshape(N, K // 4, 4)
    top = g.abs().float().topk(2, dim=-1).indices
    keep = torch.zeros(g.shape, dtype=torch.bool, device=W.device).scatter_(-1, top, True)
    return torch.where(keep, g, torch.zeros((), dtype=W.dtype, device=W.device)).reshape(N, K)


def tile_24_losses(W, tile=128):
    """``[N/tile, K/tile]`` float64: per tile, the sum of squares magnitude 2:4 pruning drops."""
    N, K = W.shape
    sq = W.detach().float().pow(2).view(N, K // 4, 4)
    dropped = sq.topk(2, dim=-1, largest=False).values.sum(-1)          # [N, K/4]
    return dropped.view(N // tile, tile, K // tile, tile // 4).sum(dim=(1, 3)).double()


def _default_filter(module, name):
    return patch_maskable(f"{name}.weight", module.weight)


def prune_patch_oneshot_(model: nn.Module, sparsity: float, *, tile: int = 128,
                         filter_fn: Callable[..., bool] | None = None) -> dict[str, Any]:
    """Prune ``model``'s selected linears in place to a global ``sparsity`` (0 <= s <= 0.5) with
    128 x 128 tiles, each either dense or 2:4 (module docstring). Returns a dict: ``target``,
    ``sparsity`` (achieved by the 2:4 tiles: half their fraction), ``zero_fraction`` (measured
    zeros over the selected weights), ``tiles``, ``tiles_24`` and per-layer ``layers``
    ({name: fraction of 2:4 tiles}).

    ``filter_fn(module, fqn) -> bool`` (torchao's order, as ``sparsify_``) overrides the default
    selection. Selected layers whose
    shape is not a multiple of ``tile`` are skipped with a warning.
    """
    s = float(sparsity)
    if not 0.0 <= s <= 0.5:
        raise ValueError(f"sparsity must be in [0, 0.5] (2:4 tiles are half zeros; 0.5 = every tile 2:4), got {sparsity}")
    if tile % 4 or tile <= 0:
        raise ValueError(f"tile must be a positive multiple of 4, got {tile}")
    sel = filter_fn or _default_filter
    layers = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or not selects(sel, mod, name):
            continue
        N, K = mod.weight.shape
        if N % tile or K % tile:
            warnings.warn(f"prune_patch_oneshot_: {name} ({N}x{K}) is not a multiple of {tile}x{tile}; left dense",
                          UserWarning, stacklevel=2)
            continue
        layers.append((name, mod))
    if not layers:
        raise ValueError("prune_patch_oneshot_: no linear layer selected (the default takes 2-D weights whose "
                         "name contains '.layers.'; pass filter_fn to choose others)")

    with torch.no_grad():
        scores = [tile_24_losses(mod.weight, tile).cpu() for _, mod in layers]
        sizes = [sc.numel() for sc in scores]
        T = sum(sizes)
        n_24 = min(T, int(round(2 * s * T)))
        flat = torch.cat([sc.reshape(-1) for sc in scores])
        chosen = torch.zeros(T, dtype=torch.bool)
        if n_24:
            chosen[torch.argsort(flat, stable=True)[:n_24]] = True
        per_layer, zeros, total, start = {}, 0, 0, 0
        for (name, mod), sc, n in zip(layers, scores, sizes):
            pick = chosen[start:start + n].view(sc.shape)
            start += n
            W = mod.weight
            if bool(pick.any()):
                TR, TC = pick.shape
                elem = pick.to(W.device).view(TR, 1, TC, 1).expand(TR, tile, TC, tile).reshape(W.shape)
                W.copy_(torch.where(elem, prune_to_24(W.detach()), W.detach()))
            per_layer[name] = float(pick.float().mean())
            zeros += int((W == 0).sum())
            total += W.numel()
    return dict(target=s, sparsity=n_24 / (2 * T), zero_fraction=zeros / total, tiles=T, tiles_24=n_24,
                tile=tile, layers=per_layer)
