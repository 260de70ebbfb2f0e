"""Whole-model conversion: ``sparsify_(model)`` swaps, in place, every ``nn.Linear`` whose weight has
a non-dense 128 x 128 tile for a ``MixedModule`` tuned with the decode/prefill recipe.

    report = stoicc_ext.sparsify_(model)            # after applying a PATCH mask
    print(report)                                   # per layer: tiles, kernels, bytes, status

A layer is converted when all of these hold, and otherwise stays a dense ``nn.Linear`` with the
reason in its report row:

* ``filter_fn(module, fqn)`` is true (default: every linear; torchao's order: the module first,
  its fully qualified name second);
* its weight is float16/bfloat16, not on the meta device, and N and K are multiples of 128 (the
  PATCH tile the kernels are built around);
* the weight is not shared with another module (a tied ``lm_head``: converting it would keep
  the dense copy alive in the embedding and save nothing);
* the Inspector does not keep it dense: a weight with no 2:4 tile, or one on which dense
  cuBLAS (``F.linear`` on the uncompressed weight) is timed faster than every stoicc kernel at
  decode, stays an ``nn.Linear`` (status ``dense``, the Inspector's reason in the row). So a
  model converted at 0 % is the dense model, and runs at its speed.

Fusion (``fuse=True``, the default): linears that read the same input (attention q/k/v, MLP
gate/up of the Hugging Face Llama, Mistral, Qwen2/Qwen3 and Gemma families; found by structure
and a dry run, ``stoicc_ext.nn.fusion``) are converted as one: their weights concatenated along
N, one ``MixedModule`` (or, where the Inspector keeps the concatenation dense, one fused
``nn.Linear``) installed on the parent as ``qkv_proj`` / ``gate_up_proj``, one call whose output
the members return as views. A group is fused when every member passes the checks above; its
report row is named after the fused module and lists the members (``fused_from``).

Every converted layer is tuned through one ``Inspector``: decode at ``decode_tokens``, prefill at
``prefill_tokens`` with the decode tile shape pinned, compressed once (``stoicc_ext.nn.recipe``).
Layers with the same (N, K, dtype, tile map) are tuned once: the Inspector's cache (memory, and
disk across processes) answers the repeats. On the CPU the Inspector's heuristic decides.
"""
import functools
import logging
import time
import warnings
from typing import Any, Callable

import torch
from torch import nn

from .._filters import selects
from .._logging import emitter, get_logger
from .._logging import progress as _progress
from ..format.tile_map import TileMap, TileType
from ..tuning.inspector import Inspector
from ..tuning.report import _short
from .fusion import find_fusion_groups, fused_linear, install_fusion
from .mixed_module import MixedModule
from .recipe import DECODE_TOKENS, PREFILL_TOKENS
from .sparsify_report import CONVERTED, LayerRow, SparsifyReport
from .storage import storage_key

__all__ = ["sparsify_", "PATCH_TILE"]

PATCH_TILE = 128
_log = get_logger("sparsify")
_DTYPES = (torch.float16, torch.bfloat16)


def _nbytes(t):
    return 0 if t is None else t.numel() * t.element_size()


def _owners(model):
    """{storage key: [parameter names]} over the whole model, duplicates included. DTensor
    parameters are filed under their local shard, so a weight tied across a tensor-parallel split
    (the embedding's DTensor and the local linear made from its shard) is seen as shared."""
    owners = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.device.type == "meta":
            continue
        owners.setdefault(storage_key(p), []).append(name)
    return owners


def _check(name, mod, owners, filter_fn):
    """(status, reason) for a layer that is not converted, or None if it may be."""
    if filter_fn is not None and not selects(filter_fn, mod, name):
        return "filtered", "filter_fn returned False"
    W = mod.weight
    if W.device.type == "meta":
        return "unsupported", "weight on the meta device"
    if W.dtype not in _DTYPES:
        return "unsupported", (f"dtype {str(W.dtype).replace('torch.', '')}: the kernels take float16/bfloat16 "
                               "(convert the model with .half() or .to(torch.bfloat16) first)")
    N, K = W.shape
    if N % PATCH_TILE or K % PATCH_TILE:
        return "unsupported", f"{N}x{K} is not a multiple of the {PATCH_TILE}x{PATCH_TILE} tile"
    names = owners.get(storage_key(W), [])
    others = [n for n in names if n != f"{name}.weight"]
    if others:
        return "shared", f"weight storage shared with {others[0]} (tied); converting it would save nothing"
    return None


def _fusion_plan(model, names, owners, filter_fn, example_inputs):
    """({fused path: FusionGroup} of the groups whose members may all be converted, note), and
    ``names`` with each group's members replaced by its fused path (at the first member's place)."""
    groups, note = find_fusion_groups(model, example_inputs)
    plan = {g.fused_path: g for g in groups
            if all(_check(g.path(m), model.get_submodule(g.path(m)), owners, filter_fn) is None for m in g.members)}
    first = {g.path(g.members[0]): p for p, g in plan.items()}
    fused = {g.path(m) for g in plan.values() for m in g.members}
    units = [first.get(n, n) for n in names if n in first or n not in fused]
    return plan, units, note


def sparsify_(model: nn.Module, *, filter_fn: Callable[..., bool] | None = None, inspector: Inspector | None = None,
              decode_tokens: int = DECODE_TOKENS, prefill_tokens: int = PREFILL_TOKENS,
              fuse: bool = True, example_inputs: Any = None,
              strict: bool = False, verbose: bool = False, progress: bool | None = None) -> SparsifyReport:
    """Swap, in place, the PATCH-pruned ``nn.Linear`` layers of ``model`` for ``MixedModule``s.

    ``filter_fn(module, fqn) -> bool`` selects layers (default: all linears), called as torchao
    calls it: the module, then its fully qualified name. A call that converts no layer warns.
    ``inspector``: the ``Inspector`` that tunes every layer (default:
    ``Inspector(use_default_configs=True, verbose=False)``); pass one with ``set_configs`` or a
    schedule subset to narrow the search. ``decode_tokens`` / ``prefill_tokens``: the M each
    phase is tuned at (16 and 16 x 128 by default); calls with at most ``decode_tokens`` tokens run
    the decode kernel. ``fuse``: convert sibling projections that read the same input as one
    (module docstring); ``fuse=False`` keeps every linear apart. ``example_inputs``: the inputs of
    the dry run that confirms them (a dict of keyword arguments or a tuple; default: the Hugging
    Face ``dummy_inputs``). ``strict``: re-raise a
    layer's tuning or compression error instead of reporting it and keeping the layer dense.
    ``verbose``: one line per linear on stderr (otherwise they are logged to
    ``logging.getLogger("stoicc.sparsify")`` at DEBUG, the first line and the summary at INFO).
    ``progress``: a tqdm progress bar over the layers (``None``: when stderr is a terminal and
    ``verbose`` is off; ``False``: never; no bar without tqdm installed).

    Returns a ``SparsifyReport`` (``print(report)`` for the table, ``report.to_dict()`` for JSON).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"sparsify_ expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Linear):
        raise TypeError("sparsify_ swaps submodules in place and cannot replace the model itself; "
                        "use MixedModule.from_linear(linear) for a single layer")
    inspector = inspector if inspector is not None else Inspector(use_default_configs=True, verbose=False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not isinstance(m, MixedModule)]
    owners = _owners(model)
    plan, note = {}, None
    if fuse:
        plan, names, note = _fusion_plan(model, names, owners, filter_fn, example_inputs)
    rows = []
    t_start = time.perf_counter()
    device = None
    say = emitter(_log, verbose)
    log = functools.partial(say, level=logging.DEBUG)       # the per-layer lines
    say(f"stoicc sparsify_: {len(names)} linear layers; decode M={decode_tokens}, prefill M={prefill_tokens}")
    bar = (False if verbose else None) if progress is None else bool(progress)   # None: if stderr is a tty
    with torch.no_grad(), _progress(names, enabled=bar, desc="stoicc sparsify_", unit="layer") as layer_names:
        for i, name in enumerate(layer_names):
            group = plan.get(name)
            # looked up by name: no list keeps the dense layers alive; a group's weights concatenated
            mod = model.get_submodule(name) if group is None else \
                fused_linear([model.get_submodule(group.path(m)) for m in group.members])
            W = mod.weight
            device = device or str(W.device)
            N, K = W.shape
            before = _nbytes(W) + _nbytes(mod.bias)
            row = LayerRow(name=name, N=N, K=K, dtype=str(W.dtype).replace("torch.", ""), status="",
                           bytes_before=before, bytes_after=before)
            rows.append(row)
            if group is not None:
                row.fused_from = [group.path(m) for m in group.members]
            skip = _check(name, mod, owners, filter_fn) if group is None else None   # members checked
            if skip is None:
                tm = TileMap.of(W).at(PATCH_TILE, PATCH_TILE)     # the map tuning and compression reuse
                n = tm.numel()
                row.frac_24 = int((tm == int(TileType.SPARSE_24)).sum()) / n
                row.frac_empty = int((tm == int(TileType.EMPTY)).sum()) / n
                row.frac_dense = 1.0 - row.frac_24 - row.frac_empty
            if skip is not None:
                row.status, row.reason = skip
                log(f"  [{i + 1}/{len(names)}] {name} {N}x{K}: kept dense ({row.status}: {row.reason})")
                continue
            t0 = time.perf_counter()
            try:
                mm = MixedModule.from_linear(mod, inspector=inspector, decode_tokens=decode_tokens,
                                             prefill_tokens=prefill_tokens)
            except Exception as e:  # noqa: BLE001 - report it; the layer stays as it was
                if strict:
                    raise
                row.status, row.reason = "failed", f"{type(e).__name__}: {e}"
                warnings.warn(f"stoicc sparsify_: {name} stays dense: {row.reason}", RuntimeWarning, stacklevel=2)
                log(f"  [{i + 1}/{len(names)}] {name} {N}x{K}: FAILED, kept dense ({row.reason})")
                continue
            row.seconds = time.perf_counter() - t0
            info = mm.tuning_info
            if info["dense_reason"] is not None:     # the Inspector keeps W dense: the nn.Linear stays
                row.status, row.reason = "dense", info["dense_reason"]
                if group is not None:                # fused all the same: one F.linear for the group
                    install_fusion(model, group, mod)
                log(f"  [{i + 1}/{len(names)}] {name} {N}x{K}: kept dense ({row.reason})")
                continue
            if group is None:
                model.set_submodule(name, mm)
            else:
                install_fusion(model, group, mm)
            meta = mm._wc_meta
            row.status = CONVERTED
            row.tile = f"{meta['block_n']}x{meta['block_k']}"
            row.cfg_decoding, row.cfg_prefill = dict(mm.cfg_decoding), dict(mm.cfg_prefill)
            row.source_decoding, row.source_prefill = info["decode"]["source"], info["prefill"]["source"]
            row.ms_decoding, row.ms_prefill = info["decode"]["ms"], info["prefill"]["ms"]
            row.bytes_after = mm.weight_nbytes + _nbytes(mm.bias)
            del mod, W, mm
            log(f"  [{i + 1}/{len(names)}] {name} {N}x{K}: 2:4 {row.frac_24:.0%} dense {row.frac_dense:.0%} "
                f"empty {row.frac_empty:.0%} -> tile {row.tile}, decode {_short(row.cfg_decoding)} "
                f"({row.source_decoding}), prefill {_short(row.cfg_prefill)} ({row.source_prefill}), "
                f"{row.bytes_after / row.bytes_before:.3f}x bytes, {row.seconds:.2f} s")
    report = SparsifyReport(rows, elapsed_s=time.perf_counter() - t_start, decode_tokens=decode_tokens,
                            prefill_tokens=prefill_tokens, device=device, fusion_note=note if fuse else "fuse=False")
    say(report.summary())
    if not report.converted:
        _warn_nothing_converted(report, filter_fn)
    return report


def _warn_nothing_converted(report, filter_fn):
    """A call that converts nothing is most often a filter that said no to every layer (a filter
    written for another order, or for other names): say so, with what each layer became."""
    kinds = report._kinds() or "the model has no nn.Linear"      # the counts of the summary line
    hint = (" filter_fn returned False for every linear: it is called as filter_fn(module, fqn), torchao's order."
            if filter_fn is not None and report.by_status.get("filtered") == len(report.rows) else "")
    warnings.warn(f"stoicc sparsify_ converted no layer ({kinds}).{hint}", UserWarning, stacklevel=3)
