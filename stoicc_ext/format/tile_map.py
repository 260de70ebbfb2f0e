"""Tile classification: which tiles of a weight are EMPTY, 2:4-sparse or DENSE.

The rules are those of docs/format.md, section 1. Everything here is vectorized torch so
that it runs where the weight lives (a 4096 x 11008 weight classifies in a few
milliseconds on a GPU): the weight is viewed as ``[TR, BLOCK_N, TC, BLOCK_K]`` and reduced
over the two in-tile axes, with no Python loop over tiles.
"""
import enum
import hashlib
import operator

import torch
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["TileType", "TileMap", "classify_tiles", "check_tile_map", "CLASSIFY_BLOCKS", "FINE_TILE"]

# The finest kernel tile side: the tile map of every kernel tile shape derives from this one.
FINE_TILE = 64
# classify_tiles accepts any of these on each side (all divide 128 and are multiples of 4,
# so a 2:4 group never straddles a tile and any of them sub-tiles PATCH's 128 grid).
CLASSIFY_BLOCKS = (16, 32, 64, 128)


def as_int(name, v):
    """``v`` as an int: an int or integer scalar (``np.int64``, a 0-d integer tensor), or a decimal
    string (safetensors metadata is ``str -> str``). A float or a bool raises TypeError naming
    ``name``, where ``int()`` would have truncated 128.7 to 128 without a word."""
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {v!r}") from None
    if not isinstance(v, bool):
        try:
            return operator.index(v)
        except TypeError:
            pass
    raise TypeError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")


class TileType(enum.IntEnum):
    """The value a tile map holds for each tile (docs/format.md, section 1)."""
    EMPTY = 0
    SPARSE_24 = 1
    DENSE = 2


def _check_weight(W, block_n, block_k, allowed, what="W"):
    """Shared argument checks; returns ``(TR, TC)``.

    stoicc never pads: a side that is not a multiple of the tile is an error, and the
    message says which side so the user can tell N (out_features) from K (in_features).
    """
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(W).__name__}")
    if W.dim() != 2:
        raise ValueError(f"{what} must be 2-D [N, K], got shape {tuple(W.shape)}")
    if not W.is_floating_point():
        raise TypeError(f"{what} must be a floating point tensor, got dtype {W.dtype}")
    for name, b in (("block_n", block_n), ("block_k", block_k)):
        try:
            ok = as_int(name, b) in allowed
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name}={b!r} is not allowed: it must be one of {allowed}")
    block_n, block_k = int(block_n), int(block_k)
    N, K = W.shape
    for side, size, b, bname in (("N", N, block_n, "block_n"), ("K", K, block_k, "block_k")):
        if size % b != 0:
            raise ValueError(
                f"{what} side {side}={size} is not a multiple of {bname}={b}; "
                f"stoicc does not pad, so {side} must be divisible by the tile side")
    return N // block_n, K // block_k


def _tile_stats(W, block_n, block_k):
    """Per tile: ``(has_nonzero, is_24)`` as bool ``[TR, TC]``, plus the per-group
    non-zero counts ``[N, K/4]`` (uint8) for callers that want to locate a bad group.

    ``W != 0`` is the format's notion of non-zero: -0.0 compares equal to 0 and NaN
    compares unequal to everything, exactly as section 1 wants. One reduction does both
    tests: the largest group count of a tile is 0 iff EMPTY and <= 2 iff 2:4.
    """
    N, K = W.shape
    TR, TC = N // block_n, K // block_k
    # Non-zeros per aligned group of four along K; a uint8 accumulator keeps it small.
    counts = (W != 0).view(N, K // 4, 4).sum(dim=-1, dtype=torch.uint8)
    tile_max = counts.view(TR, block_n, TC, block_k // 4).amax(dim=(1, 3))
    return tile_max > 0, tile_max <= 2, counts


def classify_tiles(W: torch.Tensor, block_n: int = 128, block_k: int = 128) -> torch.Tensor:
    """Classify every ``block_n x block_k`` tile of ``W`` (int8 ``[TR, TC]`` on W's device).

    EMPTY if all zero, SPARSE_24 if not empty and every group of 4 along K has at most
    two non-zeros, DENSE otherwise.
    """
    _check_weight(W, block_n, block_k, CLASSIFY_BLOCKS)
    has_nz, is_24, _ = _tile_stats(W, block_n, block_k)
    tm = torch.full(has_nz.shape, int(TileType.DENSE), dtype=torch.int8, device=W.device)
    tm.masked_fill_(is_24, int(TileType.SPARSE_24))
    tm.masked_fill_(~has_nz, int(TileType.EMPTY))
    return tm


def check_tile_map(W, tile_map, block_n=128, block_k=128):
    """Validate a user-given tile map against ``W``; return it as int8 on W's device.

    A user may declare more than the values show (a DENSE tile with zeros, a SPARSE_24
    tile that is all zero) but never less: a SPARSE_24 tile that is not 2:4 or an EMPTY
    tile with a non-zero would lose values, so those raise ``ValueError`` naming the tile
    and the first offending element.
    """
    TR, TC = _check_weight(W, block_n, block_k, CLASSIFY_BLOCKS)
    if not isinstance(tile_map, torch.Tensor):
        raise TypeError(f"tile_map must be a torch.Tensor, got {type(tile_map).__name__}")
    if tile_map.is_floating_point() or tile_map.is_complex() or tile_map.dtype == torch.bool:
        raise TypeError(f"tile_map must have an integer dtype, got {tile_map.dtype}")
    if tuple(tile_map.shape) != (TR, TC):
        raise ValueError(
            f"tile_map has shape {tuple(tile_map.shape)}, expected [N/block_n, K/block_k] = "
            f"{(TR, TC)} for W of shape {tuple(W.shape)} and block {block_n}x{block_k}")
    tm = tile_map.to(device=W.device)
    if tm.numel() and (bool((tm < 0).any()) or bool((tm > 2).any())):
        bad = torch.nonzero((tm < 0) | (tm > 2))[0].tolist()
        raise ValueError(f"tile_map values must be in 0..2 (TileType); tile {tuple(bad)} holds "
                         f"{int(tm[bad[0], bad[1]])}")
    tm = tm.to(torch.int8)
    has_nz, is_24, counts = _tile_stats(W, block_n, block_k)

    bad = (tm == TileType.SPARSE_24) & ~is_24
    if bool(bad.any()):
        r, c = torch.nonzero(bad)[0].tolist()
        tile_counts = counts[r * block_n:(r + 1) * block_n,
                             c * (block_k // 4):(c + 1) * (block_k // 4)]
        row, grp = torch.nonzero(tile_counts > 2)[0].tolist()
        n, k = r * block_n + row, c * block_k + 4 * grp
        raise ValueError(
            f"tile ({r}, {c}) is declared SPARSE_24 but is not 2:4: row {n} (tile row {row}), "
            f"group {grp} (W[{n}, {k}:{k + 4}]) has {int(tile_counts[row, grp])} non-zeros")

    bad = (tm == TileType.EMPTY) & has_nz
    if bool(bad.any()):
        r, c = torch.nonzero(bad)[0].tolist()
        tile = W[r * block_n:(r + 1) * block_n, c * block_k:(c + 1) * block_k]
        row, col = torch.nonzero(tile != 0)[0].tolist()
        raise ValueError(
            f"tile ({r}, {c}) is declared EMPTY but is not all zero: "
            f"W[{r * block_n + row}, {c * block_k + col}] is non-zero")
    return tm


def _coarsen(tm, fn, fk):
    """The tile map at ``fn x fk`` times coarser tiles: EMPTY iff all sub-tiles are, DENSE iff any
    sub-tile is (a 2:4 group never straddles a tile), else SPARSE_24."""
    TR, TC = tm.shape[0] // fn, tm.shape[1] // fk
    t = tm.reshape(TR, fn, TC, fk)
    dense = (t == int(TileType.DENSE)).any(dim=3).any(dim=1)
    nonempty = (t != int(TileType.EMPTY)).any(dim=3).any(dim=1)
    out = torch.full((TR, TC), int(TileType.EMPTY), dtype=torch.int8)
    out[nonempty] = int(TileType.SPARSE_24)
    out[dense] = int(TileType.DENSE)
    return out


class TileMap:
    """The tile types of one weight, classified once at ``FINE_TILE x FINE_TILE`` (on the weight's
    device, kept on the CPU); the map of any coarser kernel tile shape, its stored tile counts and
    the weight's fingerprint all derive from it.

    ``TileMap.of(W)`` remembers the map per tensor (and its version), so that converting a layer
    (its tile fractions, the tuning cache key, the candidates' tile counts, the compression)
    reads W for classification once.
    """

    _memo = WeakIdKeyDictionary()

    def __init__(self, fine, shape):
        self.fine = fine                    # int8 [N / FINE_TILE, K / FINE_TILE], CPU
        self.shape = tuple(shape)           # (N, K)
        self._at = {(FINE_TILE, FINE_TILE): fine}

    @classmethod
    def of(cls, W, compute=True):
        """W's tile map: remembered, else classified (``compute=False``: None instead, for CUDA-graph
        capture, where W must not be read)."""
        try:
            memo = cls._memo.get(W)
            stamp = (W._version, W.data_ptr(), tuple(W.shape), W.dtype)
        except Exception:  # noqa: BLE001 - fake/meta tensors have no storage to stamp
            if not compute:
                return None
            memo, stamp = None, None
        if memo is not None and memo[0] == stamp:
            return memo[1]
        if not compute:
            return None
        tiles = cls(classify_tiles(W, FINE_TILE, FINE_TILE).cpu(), W.shape)
        if stamp is not None:
            cls._memo[W] = (stamp, tiles)
        return tiles

    def divides(self, block_n, block_k):
        return self.shape[0] % block_n == 0 and self.shape[1] % block_k == 0

    def at(self, block_n, block_k):
        """The int8 ``[N / block_n, K / block_k]`` map (CPU) for a kernel tile shape."""
        tm = self._at.get((block_n, block_k))
        if tm is None:
            tm = self._at[(block_n, block_k)] = _coarsen(self.fine, block_n // FINE_TILE, block_k // FINE_TILE)
        return tm

    def counts(self, block_n, block_k):
        """(2:4 tiles, dense tiles) stored at this tile shape; None when it does not divide W."""
        if not self.divides(block_n, block_k):
            return None
        tm = self.at(block_n, block_k)
        return int((tm == int(TileType.SPARSE_24)).sum()), int((tm == int(TileType.DENSE)).sum())

    @property
    def any_24(self):
        """Whether some fine tile is 2:4 (what the kernels need to pay off)."""
        return bool((self.fine == int(TileType.SPARSE_24)).any())

    @property
    def fingerprint(self):
        """A hash of the shape and the fine map: equal for weights that tune alike."""
        h = hashlib.sha256()
        h.update(f"stoicc-tilemap-v1:{FINE_TILE}x{FINE_TILE}:{self.shape}:".encode())
        h.update(self.fine.numpy().tobytes())
        return h.hexdigest()

