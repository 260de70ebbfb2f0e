"""Sharding a ``CompressedWeight`` for tensor parallelism, without densifying, and the inverse.

    shard_rows(Wc, world, rank)   # tile rows  [rank*TR/world, (rank+1)*TR/world): N/world outputs
    shard_cols(Wc, world, rank)   # tile cols  [rank*TC/world, (rank+1)*TC/world): K/world inputs
    concat_rows(shards), concat_cols(shards)

A shard is a valid ``CompressedWeight`` of its own (docs/format.md): its row pointers start at 0 and
its column indices count from its own first tile column. It needs no re-encoding because every tile
is one contiguous block of values and metadata in a tile-local order (format sections 3-5): a shard
is a selection of whole tiles, so ``decompress(shard)`` is the matching slice of ``decompress(Wc)``
bit for bit. A row shard is a contiguous range of every tensor (plain slices); a column shard is a
gather of the tiles whose column falls in the range.
"""
import torch

from ..format.compressed import CompressedWeight

__all__ = ["shard_rows", "shard_row_groups", "shard_cols", "shard_weight", "concat_rows", "concat_cols", "tile_range"]


def tile_range(tiles, world, rank, side):
    """``(first, end)`` tile indices of ``rank``'s equal share of ``tiles`` tiles along ``side``."""
    world, rank = int(world), int(rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    if tiles % world:
        raise ValueError(f"cannot shard {side}: its {tiles} tiles do not split into {world} equal parts (stoicc "
                         f"shards whole tiles; use a world size that divides {tiles}, or a smaller tile)")
    per = tiles // world
    return rank * per, (rank + 1) * per


def _like(Wc, tensors, N, K):
    return CompressedWeight(tensors, N=N, K=K, block_n=Wc.block_n, block_k=Wc.block_k, dtype=Wc.dtype,
                            format_version=Wc.format_version)


def _tile_len(Wc):
    """Values and metadata words of one 2:4 tile, values of one dense tile."""
    tile = Wc.block_n * Wc.block_k
    return tile // 2, tile // 32, tile


def shard_rows(Wc, world, rank):
    """Rank ``rank``'s tile rows of ``Wc`` (column parallelism: ``N / world`` output features).

    Slices are cloned so that the shard owns its memory (the full weight can be freed)."""
    r0, r1 = tile_range(Wc.tile_rows, world, rank, f"N={Wc.N} (block_n={Wc.block_n})")
    return _tile_rows(Wc, r0, r1)


def shard_row_groups(Wc, sizes, world, rank):
    """Rank ``rank``'s share of each row block of ``Wc`` (``sizes``: the blocks' output features, in
    order, summing to N), concatenated: the colwise shard of a fused weight (q/k/v, gate/up), whose
    every member is split, not the concatenation as a whole."""
    if sum(sizes) != Wc.N:
        raise ValueError(f"row blocks {list(sizes)} do not add up to N={Wc.N}")
    parts, r = [], 0
    for n in sizes:
        if n % Wc.block_n:
            raise ValueError(f"a row block of {n} is not a whole number of {Wc.block_n}-row tiles")
        t0, t1 = tile_range(n // Wc.block_n, world, rank, f"a block of {n} rows (block_n={Wc.block_n})")
        parts.append(_tile_rows(Wc, r + t0, r + t1))
        r += n // Wc.block_n
    return concat_rows(parts)


def _tile_rows(Wc, r0, r1):
    """The weight of tile rows [r0, r1) of ``Wc`` (own memory)."""
    sv, sm, dv = _tile_len(Wc)
    out = []
    for ptr, cols, vals in ((Wc.sparse_row_ptr, Wc.sparse_cols, ((Wc.sparse_values, sv), (Wc.sparse_meta, sm))),
                            (Wc.dense_row_ptr, Wc.dense_cols, ((Wc.dense_values, dv),))):
        e0, e1 = int(ptr[r0]), int(ptr[r1])
        part = [(ptr[r0:r1 + 1] - e0).clone(), cols[e0:e1].clone()]
        part += [t[e0 * n:e1 * n].clone() for t, n in vals]
        out.append(part)
    (s_ptr, s_cols, s_vals, s_meta), (d_ptr, d_cols, d_vals) = out
    return _like(Wc, (s_ptr, s_cols, s_vals, s_meta, d_ptr, d_cols, d_vals), (r1 - r0) * Wc.block_n, Wc.K)


def _select_cols(ptr, cols, c0, c1):
    """Row pointers, rebased columns and entry indices of the CSR entries with column in [c0, c1)."""
    keep = (cols >= c0) & (cols < c1)
    kept_before = torch.cat([keep.new_zeros(1, dtype=torch.int32), keep.cumsum(0, dtype=torch.int32)])
    new_ptr = kept_before[ptr.long()]                 # entries kept before each row's first entry
    idx = torch.nonzero(keep).flatten()
    return new_ptr, (cols[idx] - c0).to(torch.int32), idx


def shard_cols(Wc, world, rank):
    """Rank ``rank``'s tile columns of ``Wc`` (row parallelism: ``K / world`` input features)."""
    c0, c1 = tile_range(Wc.tile_cols, world, rank, f"K={Wc.K} (block_k={Wc.block_k})")
    sv, sm, dv = _tile_len(Wc)
    s_ptr, s_cols, s_idx = _select_cols(Wc.sparse_row_ptr, Wc.sparse_cols, c0, c1)
    d_ptr, d_cols, d_idx = _select_cols(Wc.dense_row_ptr, Wc.dense_cols, c0, c1)
    s_vals = Wc.sparse_values.view(-1, sv)[s_idx].reshape(-1)
    s_meta = Wc.sparse_meta.view(-1, sm)[s_idx].reshape(-1)
    d_vals = Wc.dense_values.view(-1, dv)[d_idx].reshape(-1)
    return _like(Wc, (s_ptr, s_cols, s_vals, s_meta, d_ptr, d_cols, d_vals), Wc.N, Wc.K // int(world))


def shard_weight(Wc, dim, world, rank):
    """``shard_rows`` for ``dim=0`` (along N), ``shard_cols`` for ``dim=1`` (along K)."""
    if dim not in (0, 1, -1):
        raise ValueError(f"dim must be 0 (N, tile rows) or 1 (K, tile columns), got {dim}")
    return shard_rows(Wc, world, rank) if dim == 0 else shard_cols(Wc, world, rank)


def _check_parts(shards):
    if not shards:
        raise ValueError("nothing to concatenate")
    first = shards[0]
    for s in shards[1:]:
        if (s.block_n, s.block_k, s.dtype) != (first.block_n, first.block_k, first.dtype):
            raise ValueError("shards have different tile shapes or dtypes")
    return first


def concat_rows(shards):
    """The weight whose tile rows are the shards' in order (inverse of ``shard_rows``)."""
    first = _check_parts(shards)
    if any(s.K != first.K for s in shards):
        raise ValueError("row shards must have the same K")
    parts = []
    for ptr_i, end in ((0, 4), (4, 7)):            # (row pointers, the rest of that CSR list)
        offsets = [0]
        for s in shards:
            offsets.append(offsets[-1] + s[ptr_i + 1].numel())
        parts.append(torch.cat([s[ptr_i][:-1] + o for s, o in zip(shards, offsets)]
                               + [shards[0][ptr_i].new_tensor([offsets[-1]])]))
        parts += [torch.cat([s[i] for s in shards]) for i in range(ptr_i + 1, end)]
    return _like(first, parts, sum(s.N for s in shards), first.K)


def concat_cols(shards):
    """The weight whose tile columns are the shards' in order (inverse of ``shard_cols``): each
    row's entries are merged, shard by shard, which keeps the columns ascending."""
    first = _check_parts(shards)
    if any(s.N != first.N for s in shards):
        raise ValueError("column shards must have the same N")
    sv, sm, dv = _tile_len(first)
    TR, TC = first.tile_rows, sum(s.tile_cols for s in shards)
    col0 = [0]
    for s in shards:
        col0.append(col0[-1] + s.tile_cols)
    out = []
    for ptr_i, vals in ((0, ((2, sv), (3, sm))), (4, ((6, dv),))):
        rows = torch.cat([torch.repeat_interleave(torch.arange(TR, device=s.device),
                                                  (s[ptr_i][1:] - s[ptr_i][:-1]).long()) for s in shards])
        cols = torch.cat([s[ptr_i + 1].long() + c for s, c in zip(shards, col0)])
        order = torch.argsort(rows * TC + cols)       # row-major, columns ascending
        counts = torch.bincount(rows, minlength=TR).to(torch.int32)
        out += [torch.cat([counts.new_zeros(1), counts.cumsum(0, dtype=torch.int32)]), cols[order].to(torch.int32)]
        out += [torch.cat([s[i].view(-1, n) for s in shards])[order].reshape(-1) for i, n in vals]
    return _like(first, out, first.N, sum(s.K for s in shards))
