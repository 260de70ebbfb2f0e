"""One layer to ``TensorParallelLinear``: a ``MixedModule`` is sharded compressed (``shard_rows`` /
``shard_cols``) and the shard gets kernels tuned at its own shape; an ``nn.Linear`` is sliced.

The Inspector tunes on a dense weight (it reads the tile map and compresses each candidate tile
shape), so per-rank tuning expands the rank's shard, 1/world of the layer, for the time of the
decode/prefill recipe (``tune_weight``). What the rank then holds is what ``sparsify_`` would
make of that shard: the shard itself, bit for bit the stored tiles, when the Inspector keeps its
tile shape; the Inspector's compression of it at another tile shape when that is faster at the
rank's shape; a dense ``nn.Linear`` where dense cuBLAS wins (as ``sparsify_`` keeps such a layer).
"""
import torch
from torch import nn

from ..format.compressed import decompress
from ..nn.mixed_module import MixedModule
from ..nn.recipe import DECODE_TOKENS, PREFILL_TOKENS, tune_weight
from ..tuning.dense import DenseWeight
from .module import COLWISE, ROWWISE, TensorParallelLinear
from .shard import shard_cols, shard_row_groups

__all__ = ["tune_shard", "parallel_from_compressed", "parallel_from_module", "linear_of", "row_group_slice"]


def linear_of(weight, bias=None):
    """An inference ``nn.Linear`` around ``weight`` ([N, K]) and ``bias`` as they are (no copy)."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta", dtype=weight.dtype)
    lin.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias, requires_grad=False)
    return lin


def tune_shard(Wc, bias=None, inspector=None, *, decode_tokens=DECODE_TOKENS, prefill_tokens=PREFILL_TOKENS,
               decode_max_tokens=None):
    """This rank's module for the compressed shard ``Wc`` (and its ``bias``), tuned at the shard's
    shape: a ``MixedModule``, or an ``nn.Linear`` where the Inspector keeps the shard dense."""
    W = decompress(Wc)
    tuned = tune_weight(W, inspector, decode_tokens=decode_tokens, prefill_tokens=prefill_tokens)
    if isinstance(tuned.compressed, DenseWeight):
        return linear_of(W, bias)
    cfg = tuned.cfg_decoding
    same_tile = (cfg["BLOCK_N"], cfg["BLOCK_K"]) == (Wc.block_n, Wc.block_k)
    mm = MixedModule(Wc if same_tile else tuned.compressed, tuned.exec_prefill, tuned.exec_decoding,
                     tuned.cfg_prefill, cfg, Wc.N, Wc.K, bias=bias,
                     decode_max_tokens=decode_tokens if decode_max_tokens is None else decode_max_tokens)
    mm.tuning_info = tuned.info
    return mm


def row_group_slice(t, sizes, world, rank):
    """Rank ``rank``'s share of each block of ``sizes`` rows of ``t``, concatenated (a fused
    weight's or bias's colwise shard; one block: the plain colwise shard)."""
    parts, a = [], 0
    for n in sizes:
        if n % world:
            raise ValueError(f"cannot split a block of {n} rows into {world} equal parts")
        parts.append(t.narrow(0, a + rank * (n // world), n // world))
        a += n
    return torch.cat(parts)


def parallel_from_compressed(Wc, bias, style, group, *, gather_output=False, split_input=False, device=None,
                             inspector=None, row_groups=None, **tuning):
    """``TensorParallelLinear`` holding this rank's shard of the compressed weight ``Wc`` (full
    layer, on any device; only the shard is moved to ``device``). ``row_groups``: the members'
    output sizes of a fused weight (each member is split, colwise). ``tuning``: ``tune_shard``'s
    keywords."""
    world, rank = torch.distributed.get_world_size(group), torch.distributed.get_rank(group)
    device = Wc.device if device is None else torch.device(device)
    if style == COLWISE:
        groups = row_groups or (Wc.N,)
        shard = shard_row_groups(Wc, groups, world, rank).to(device)
        if bias is not None:
            bias = row_group_slice(bias, groups, world, rank)
        local = tune_shard(shard, None if bias is None else bias.to(device), inspector, **tuning)
        bias = None
    elif style == ROWWISE and row_groups is None:
        shard = shard_cols(Wc, world, rank).to(device)
        local = tune_shard(shard, None, inspector, **tuning)
        bias = None if bias is None else bias.to(device)
    else:
        raise ValueError(f"style must be {COLWISE!r}, or {ROWWISE!r} for an unfused weight, got {style!r}")
    return TensorParallelLinear(local, style, group, in_features=Wc.K, out_features=Wc.N, bias=bias,
                                gather_output=gather_output, split_input=split_input)


def _dense_slice(linear, style, world, rank, row_groups=None):
    """``nn.Linear`` of this rank's rows (colwise, with the bias slice; per member of a fused
    weight) or columns (rowwise, no bias), copied: the full weight can be freed."""
    W = linear.weight.detach()
    if style == COLWISE:
        groups = row_groups or (W.shape[0],)
        b = None if linear.bias is None else row_group_slice(linear.bias.detach(), groups, world, rank)
        return linear_of(row_group_slice(W, groups, world, rank), b)
    if W.shape[1] % world:
        raise ValueError(f"cannot shard K={W.shape[1]} of a dense linear into {world} equal parts")
    part = W.shape[1] // world
    return linear_of(W.narrow(1, rank * part, part).clone())


def parallel_from_module(mod, style, group, *, gather_output=False, split_input=False, inspector=None,
                         row_groups=None):
    """``TensorParallelLinear`` of a ``MixedModule`` (sharded compressed, tuned per rank) or an
    ``nn.Linear`` (sliced; a dense layer stays dense). ``row_groups``: see ``parallel_from_compressed``."""
    world, rank = torch.distributed.get_world_size(group), torch.distributed.get_rank(group)
    if isinstance(mod, MixedModule):
        info = mod.tuning_info or {}
        tuning = dict(decode_tokens=info.get("decode_tokens", DECODE_TOKENS),
                      prefill_tokens=info.get("prefill_tokens", PREFILL_TOKENS),
                      decode_max_tokens=mod.decode_max_tokens)
        return parallel_from_compressed(mod.compressed_weight, mod.bias, style, group, gather_output=gather_output,
                                        split_input=split_input, inspector=inspector, row_groups=row_groups, **tuning)
    if isinstance(mod, nn.Linear):
        local = _dense_slice(mod, style, world, rank, row_groups)
        bias = mod.bias.detach() if style == ROWWISE and mod.bias is not None else None
        return TensorParallelLinear(local, style, group, in_features=mod.in_features, out_features=mod.out_features,
                                    bias=bias, gather_output=gather_output, split_input=split_input)
    raise TypeError(f"only MixedModule and nn.Linear layers can be split, got {type(mod).__name__}")
