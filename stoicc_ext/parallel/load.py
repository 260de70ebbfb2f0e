"""Loading one checkpoint (``stoicc_ext.save_compressed``, saved once from one process) onto any
number of ranks, each rank reading its shard.

    model = load_compressed_tp(skeleton_factory, "model.stoicc.safetensors", mesh, device=f"cuda:{rank}")

Layer by layer, so that a rank never holds more than one full layer besides its shards: a colwise
layer reads only its tile rows from the file (row pointers whole, then one contiguous slice of
columns, values and metadata: ``shard_rows`` applied to the file's lazy slices); a rowwise layer
reads the layer's tensors and keeps its tile columns.
Both kinds of checkpoint are read: one ``save_compressed`` file, or a ``save_pretrained`` directory
of safetensors shards. A fused group (q/k/v, gate/up: ``stoicc_ext.nn.fusion``) is split member by
member, so each rank's fused module holds its heads of q, k and v, and the members' views follow. Each shard is validated and tuned at its
shape (``tune_shard``). Converted layers the plan does not name are loaded whole, as
``load_compressed`` does; the rest of the file is loaded with ``load_state_dict(assign=True)``;
finally the dense linears that the plan names are split (``shard_model_``).
"""
import contextlib

import torch
from torch import nn

from ..format.compressed import CompressedWeight
from ..nn.checkpoint import _layer_entry, read_metadata
from ..nn.fusion import FusionGroup, install_fusions
from ..nn.mixed_module import MixedModule
from ..nn.pretrained import checkpoint_files
from ..tuning.library import library_executor
from .comm import resolve_group
from .convert import parallel_from_compressed, row_group_slice, tune_shard
from .module import COLWISE, TensorParallelLinear
from .plan import STYLES, default_plan, fused_style, install_split_fusion, shard_model_, style_of
from .shard import shard_row_groups

__all__ = ["load_compressed_tp"]


class _Files:
    """The tensors of a checkpoint's safetensors files (one file, or a save_pretrained directory's
    shards), opened lazily: ``get(key)`` reads one tensor, ``lazy(key)`` gives a slice handle."""

    def __init__(self, stack, path):
        from safetensors import safe_open

        self.where = {}
        for file in checkpoint_files(path):
            f = stack.enter_context(safe_open(file, framework="pt", device="cpu"))
            self.where.update(dict.fromkeys(f.keys(), f))

    def get(self, key):
        return self.where[key].get_tensor(key)

    def lazy(self, key):
        return self.where[key].get_slice(key)


def _read_layer(files, name, lm, kind, world, rank, row_groups):
    """The layer's compressed weight: the whole layer, or for colwise this rank's tile rows (of each
    member, for a fused layer) read straight from the file (the row sharding only slices tensors,
    and safetensors' lazy slices support slicing, so it reads just those bytes). Returns
    ``(weight, is_this_ranks_shard)``."""
    keys = [f"{name}.{t}" for t in CompressedWeight.names]
    missing = [k for k in keys if k not in files.where]
    if missing:
        raise ValueError(f"checkpoint layer {name!r}: tensors {missing} are missing from the file")
    try:
        if kind == COLWISE:
            lazy = [files.get(k) if k.endswith("row_ptr") else files.lazy(k) for k in keys]
            Wc = shard_row_groups(CompressedWeight(lazy, **lm["weight"]), row_groups, world, rank)
            return CompressedWeight.from_tensors(tuple(Wc), Wc.metadata(), check=True), True
        return CompressedWeight.from_tensors([files.get(k) for k in keys], lm["weight"], check=True), False
    except (TypeError, ValueError) as e:
        raise type(e)(f"checkpoint layer {name!r}: {e}") from None


def _layer_module(files, name, lm, style, group, device, inspector, row_groups):
    N, K = lm["N"], lm["K"]
    bias = files.get(f"{name}.bias") if lm.get("bias") else None
    row_groups = row_groups or (N,)
    if style is None:             # not in the plan: whole on every rank, with its saved kernels
        Wc, _ = _read_layer(files, name, lm, None, 1, 0, row_groups)
        cfg_d, cfg_p = lm["cfg_decoding"], lm["cfg_prefill"]
        return MixedModule(Wc.to(device), library_executor(cfg_p, N, K), library_executor(cfg_d, N, K), cfg_p, cfg_d,
                           N, K, bias=None if bias is None else bias.to(device),
                           decode_max_tokens=lm["decode_max_tokens"])
    kind, gather_output, split_input = STYLES[style]
    world, rank = torch.distributed.get_world_size(group), torch.distributed.get_rank(group)
    Wc, is_shard = _read_layer(files, name, lm, kind, world, rank, row_groups)
    tuning = dict(decode_max_tokens=lm["decode_max_tokens"])
    if not is_shard:
        return parallel_from_compressed(Wc, bias, kind, group, gather_output=gather_output, split_input=split_input,
                                        device=device, inspector=inspector, **tuning)
    if bias is not None:
        bias = row_group_slice(bias, row_groups, world, rank).to(device)
    return TensorParallelLinear(tune_shard(Wc.to(device), bias, inspector, **tuning), kind, group, in_features=K,
                                out_features=N, gather_output=gather_output)


def load_compressed_tp(model_or_factory, path, mesh_or_group=None, *, plan=None, device="cpu", inspector=None,
                       strict=True):
    """Rebuild the model saved at ``path`` (a ``save_compressed`` file or a ``save_pretrained``
    directory) on this rank, split by ``plan`` (default: the model's own, else ``LLAMA_TP_PLAN``)
    over the tensor-parallel group. Call it on every rank. The skeleton is what ``load_compressed``
    takes (an ``nn.Module`` or a function returning one, meta parameters fine). ``inspector`` tunes
    the shards (default: a fresh ``Inspector``). Returns the model."""
    group = resolve_group(mesh_or_group)
    model = model_or_factory() if callable(model_or_factory) and not isinstance(model_or_factory, nn.Module) \
        else model_or_factory
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module or a function returning one, got {type(model).__name__}")
    plan = default_plan(model) if plan is None else dict(plan)
    meta = read_metadata(path)
    layers = {name: _layer_entry(path, name, lm) for name, lm in meta["layers"].items()}
    fused = {g.fused_path: g for g in map(FusionGroup.from_dict, meta.get("fused", ()))}
    install_fusions(model, list(fused.values()))     # an unfused skeleton gets the saved structure
    with contextlib.ExitStack() as stack:
        files = _Files(stack, path)
        for name, lm in layers.items():
            try:
                mod = model.get_submodule(name)
            except AttributeError:
                raise KeyError(f"checkpoint layer {name!r} is not a module of the model") from None
            if (getattr(mod, "out_features", None), getattr(mod, "in_features", None)) != (lm["N"], lm["K"]):
                raise ValueError(f"checkpoint layer {name!r} is {lm['N']}x{lm['K']}, the model's {name} is a "
                                 f"{type(mod).__name__} of {getattr(mod, 'out_features', '?')}x"
                                 f"{getattr(mod, 'in_features', '?')}")
            g = fused.get(name)
            style = fused_style(g, plan) if g is not None else style_of(name, plan)
            mod = _layer_module(files, name, lm, style if style in STYLES else None, group, device, inspector,
                                None if g is None else g.sizes)
            if g is not None and isinstance(mod, TensorParallelLinear):
                install_split_fusion(model, g, mod)      # the members' slices follow the rank's rows
            else:
                model.set_submodule(name, mod)
        done = {f"{n}.{t}" for n in layers for t in (*CompressedWeight.names, "bias")}
        rest = {k: files.get(k) for k in files.where if k not in done}
    for key, target in meta.get("aliases", {}).items():   # tied tensors: the file holds one name of the pair
        if key in rest or target in rest:
            rest[key] = rest[target] = rest.get(target, rest.get(key))
    result = model.load_state_dict(rest, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not any(k.startswith(n + ".") for n in layers)]
    if strict and (missing or result.unexpected_keys):
        raise ValueError(f"checkpoint and model do not match: missing from the file {missing[:5]}, "
                         f"not in the model {result.unexpected_keys[:5]}")
    model.to(device)
    shard_model_(model, group, plan, inspector=inspector)
    return model
