"""Loading one checkpoint (``stoicc_ext.save_compressed``, saved once from one process) onto any
number of ranks, each rank keeping its shard.

    model = load_compressed_tp(skeleton_factory, "model.stoicc.safetensors", mesh, device=f"cuda:{rank}")

The file is read and validated by the reader ``load_compressed`` uses (``stoicc_ext.nn.checkpoint``),
so it is refused with the same errors whichever of them loads it. Both kinds of checkpoint are
read: one ``save_compressed`` file, or a ``save_pretrained`` directory of safetensors shards.

Layer by layer, so that a rank never holds more than one full layer besides its shards: each
layer is read whole on the CPU and checked in full on every rank (every rank then refuses a
damaged layer alike, rather than only the rank whose rows hold the damage), then split by
``parallel_from_compressed``: a colwise layer keeps its tile rows, a rowwise layer its tile
columns, and the shard is tuned at its shape (``tune_shard``) on ``device``. A fused group (q/k/v,
gate/up: ``stoicc_ext.nn.fusion``) is split member by member, so each rank's fused module holds
its heads of q, k and v, and the members' views follow. Converted layers the plan does not name
are loaded whole, as ``load_compressed`` does; the rest of the file is loaded with
``load_state_dict(assign=True)``; finally the dense linears that the plan names are split
(``shard_model_``).
"""
import contextlib

from ..nn.checkpoint import _Checkpoint, _model_of, _safetensors
from .comm import resolve_group
from .convert import parallel_from_compressed
from .module import TensorParallelLinear
from .plan import STYLES, default_plan, fused_style, install_split_fusion, shard_model_, style_of

__all__ = ["load_compressed_tp"]


def _layer_module(ckpt, name, style, group, device, inspector):
    """Layer ``name`` on this rank: split by the plan's ``style`` (a key of ``STYLES``), or whole
    with its saved kernels when the plan does not split it (``style`` None)."""
    Wc, bias = ckpt.layer(name)
    if style is None:
        return ckpt.whole_layer(name, Wc.to(device), None if bias is None else bias.to(device))
    kind, gather_output, split_input = STYLES[style]
    g = ckpt.fused.get(name)
    return parallel_from_compressed(Wc, bias, kind, group, gather_output=gather_output, split_input=split_input,
                                    device=device, inspector=inspector, row_groups=None if g is None else g.sizes,
                                    decode_max_tokens=ckpt.layers[name]["decode_max_tokens"])


def load_compressed_tp(model_or_factory, path, mesh_or_group=None, *, plan=None, device="cpu", inspector=None,
                       strict=True):
    """Rebuild the model saved at ``path`` (a ``save_compressed`` file or a ``save_pretrained``
    directory) on this rank, split by ``plan`` (default: the model's own, else ``LLAMA_TP_PLAN``)
    over the tensor-parallel group. Call it on every rank. The skeleton is what ``load_compressed``
    takes (an ``nn.Module`` or a function returning one, meta parameters fine). ``inspector`` tunes
    the shards (default: a fresh ``Inspector``). Returns the model."""
    _safetensors()
    group = resolve_group(mesh_or_group)
    model = _model_of(model_or_factory)
    plan = default_plan(model) if plan is None else dict(plan)
    with contextlib.ExitStack() as stack:
        ckpt = _Checkpoint(stack, path, model)     # on the CPU: only the rank's shards move to device
        for name in ckpt.layers:
            g = ckpt.fused.get(name)
            style = fused_style(g, plan) if g is not None else style_of(name, plan)
            mod = _layer_module(ckpt, name, style if style in STYLES else None, group, device, inspector)
            if g is not None and isinstance(mod, TensorParallelLinear):
                install_split_fusion(model, g, mod)      # the members' slices follow the rank's rows
            else:
                model.set_submodule(name, mod)
        ckpt.finish(model, strict)
    model.to(device)
    shard_model_(model, group, plan, inspector=inspector)
    return model
