"""Synthetic PATCH-like weights for tests and benchmarks (the one generator both use), and the
rounding unit their error bounds are written in (``UNIT_ROUNDOFF``).

PATCH prunes each 128 x 128 tile of a weight to one of: kept dense, 2:4 (magnitude), or
removed. ``random_patch_weight`` imitates that with exact tile counts, so tests can mix
all three tile types and benchmarks can sweep the 2:4 fraction.

Kept values are ``sign * U(0.1, 1)``: bounded away from zero (a kept value that happened
to be 0 would turn a DENSE tile into a 2:4 one and make the returned tile map wrong) and
exactly representable as non-zero in fp16 and bf16.
"""
import torch

from .format.tile_map import TileType
from .patch.prune import prune_to_24

__all__ = ["random_patch_weight", "prune_to_24", "ROW_PATTERNS", "UNIT_ROUNDOFF"]

ROW_PATTERNS = (None, "dense_only_rows", "sparse_only_rows", "both")

# The largest relative error of one rounding to each kernel dtype: half an ulp of 1, i.e.
# torch.finfo(dtype).eps / 2 (float16: 10 stored mantissa bits, bfloat16: 7). The tests' and the
# soak's output bounds are multiples of it times max |reference|; kept here, the one module both import.
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def random_patch_weight(N, K, sparse_frac, empty_frac=0.0, *, dtype=torch.float16,
                        device="cpu", generator=None, tile=128, row_pattern=None, values_on_device=False):
    """A random ``[N, K]`` weight whose ``tile x tile`` tiles are 2:4, EMPTY or DENSE.

    Returns ``(W, tile_map)`` with ``tile_map`` int8 ``[N/tile, K/tile]`` (on ``device``)
    at the generation granularity; it equals ``classify_tiles(W, tile, tile)``.

    Counts are exact: of the tiles chosen at random, ``round(sparse_frac * F)`` are 2:4 and
    ``round(empty_frac * F)`` EMPTY, the rest DENSE, where ``F`` is the number of tiles not
    forced by ``row_pattern``:

    * ``"dense_only_rows"``: tile row 0 is all DENSE;
    * ``"sparse_only_rows"``: the last tile row is all 2:4;
    * ``"both"``: both of the above (needs at least two tile rows).

    Everything is drawn on the CPU from ``generator`` (a CPU ``torch.Generator``; ``None``
    uses the global one) and moved to ``device`` at the end, so the result is the same on
    every device for a given seed. ``values_on_device=True`` draws the values on ``device``
    instead (from a generator of that device seeded with ``generator``'s seed), which makes
    70B-class weights in well under a second on a GPU; the tile map is still drawn on the CPU,
    the values then differ between devices.
    """
    if row_pattern not in ROW_PATTERNS:
        raise ValueError(f"row_pattern must be one of {ROW_PATTERNS}, got {row_pattern!r}")
    if N % tile or K % tile:
        raise ValueError(f"N={N} and K={K} must be multiples of tile={tile}")
    if not (0 <= sparse_frac <= 1 and 0 <= empty_frac <= 1 and sparse_frac + empty_frac <= 1):
        raise ValueError(f"need 0 <= sparse_frac, empty_frac and sparse_frac + empty_frac <= 1, "
                         f"got {sparse_frac}, {empty_frac}")
    TR, TC = N // tile, K // tile
    if row_pattern == "both" and TR < 2:
        raise ValueError("row_pattern='both' needs at least two tile rows")

    tm = torch.full((TR, TC), -1, dtype=torch.int8)        # -1: not forced
    if row_pattern in ("dense_only_rows", "both"):
        tm[0] = TileType.DENSE
    if row_pattern in ("sparse_only_rows", "both"):
        tm[-1] = TileType.SPARSE_24
    free = torch.nonzero(tm.view(-1) < 0).view(-1)
    F = free.numel()
    nS, nE = round(sparse_frac * F), round(empty_frac * F)
    nE = min(nE, F - nS)                                    # rounding can overshoot by one
    order = free[torch.randperm(F, generator=generator)]
    flat = tm.view(-1)
    flat[order[:nS]] = TileType.SPARSE_24
    flat[order[nS:nS + nE]] = TileType.EMPTY
    flat[order[nS + nE:]] = TileType.DENSE

    where, gen = "cpu", generator
    if values_on_device:
        where = torch.device(device)
        gen = None if generator is None else torch.Generator(device=where).manual_seed(generator.initial_seed())
        tm = tm.to(where)
    mag = torch.rand(N, K, generator=gen, device=where) * 0.9 + 0.1
    sign = torch.randint(0, 2, (N, K), generator=gen, device=where) * 2 - 1
    W = (mag * sign).to(dtype)
    # Expand the tile map to elements to mask and prune in one pass.
    per_elem = tm.repeat_interleave(tile, 0).repeat_interleave(tile, 1)
    W = torch.where(per_elem == TileType.SPARSE_24, prune_to_24(W), W)
    W = torch.where(per_elem == TileType.EMPTY, torch.zeros((), dtype=dtype, device=W.device), W)
    return W.to(device), tm.to(device)
