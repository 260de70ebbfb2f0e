"""Tensor-parallel plans, in transformers' spelling, and ``shard_model_``.

A plan maps module names, with ``*`` for layer numbers, to a style:

    {"layers.*.self_attn.q_proj": "colwise", ..., "layers.*.mlp.down_proj": "rowwise"}

This is ``config.base_model_tp_plan`` of Llama, Mistral and Qwen2/3 in transformers, and a key
also matches below a prefix (``model.layers.0.self_attn.q_proj``), as transformers expands it under
the base model. The styles of linear layers are understood (``STYLES``); a module whose style is
another one (``embedding_rowwise``, ...) is left whole on every rank, which is correct, not sharded.
A fused group (``qkv_proj`` of q/k/v members, ``stoicc_ext.nn.fusion``) is split member by member.
"""
import re
from dataclasses import replace

from torch import nn

from ..nn.fusion import FusedSlice, fusion_groups, install_slices
from ..nn.mixed_module import MixedModule
from .comm import resolve_group
from .convert import parallel_from_module
from .module import COLWISE, ROWWISE, TensorParallelLinear

__all__ = ["LLAMA_TP_PLAN", "STYLES", "style_of", "fused_style", "install_split_fusion", "shard_model_"]

LLAMA_TP_PLAN = {
    "layers.*.self_attn.q_proj": "colwise",
    "layers.*.self_attn.k_proj": "colwise",
    "layers.*.self_attn.v_proj": "colwise",
    "layers.*.self_attn.o_proj": "rowwise",
    "layers.*.mlp.gate_proj": "colwise",
    "layers.*.mlp.up_proj": "colwise",
    "layers.*.mlp.down_proj": "rowwise",
    "lm_head": "colwise_gather_output",
}

# transformers' style name -> (style, gather_output, split_input)
STYLES = {
    "colwise": (COLWISE, False, False),
    "colwise_gather_output": (COLWISE, True, False),
    "colwise_rep": (COLWISE, True, False),
    "rowwise": (ROWWISE, False, False),
    "rowwise_split_input": (ROWWISE, False, True),
    "rowwise_rep": (ROWWISE, False, True),
}


def _wildcard(name):
    """transformers' ``replace_layer_number_by_wildcard``: ``layers.3.mlp`` -> ``layers.*.mlp``."""
    return re.sub(r"\.\d+(\.|$)", lambda m: ".*" + m.group(1), name)


def style_of(name, plan):
    """The plan's style name for module ``name`` (exact key, or a key below a prefix), or None."""
    generic = _wildcard(name)
    for key, style in plan.items():
        if generic == key or generic.endswith("." + key):
            return style
    return None


def default_plan(model):
    """The model's own plan (transformers' ``model.tp_plan``, else ``config.base_model_tp_plan``),
    else ``LLAMA_TP_PLAN``."""
    plan = getattr(model, "tp_plan", None) or getattr(getattr(model, "config", None), "base_model_tp_plan", None)
    return dict(plan) if plan else dict(LLAMA_TP_PLAN)


def fused_style(g, plan):
    """The style of a fused group (``stoicc_ext.nn.fusion``): its members' common style, which must be
    plain colwise (each member is split, the fused output stays split); None if none is planned."""
    styles = sorted({style_of(g.path(m), plan) for m in g.members}, key=str)
    if styles == [None]:
        return None
    if len(styles) != 1 or styles[0] not in STYLES or STYLES[styles[0]] != (COLWISE, False, False):
        raise ValueError(f"{g.fused_path}: its members {list(g.members)} have the styles {styles}; a fused group "
                         "is split only when they are all 'colwise'")
    return styles[0]


def install_split_fusion(model, g, tp):
    """Put ``tp`` (the fused module split colwise) in place of ``g``'s fused module, and point each
    member's slice at its rows of the rank's output."""
    parent = model.get_submodule(g.parent)
    parent._modules[g.name] = tp
    install_slices(parent, g.name, g.members, replace(g, sizes=tuple(n // tp.world for n in g.sizes)).bounds,
                   g.in_features)


def shard_model_(model, mesh_or_group=None, plan=None, *, inspector=None):
    """Split, in place, every ``MixedModule`` and ``nn.Linear`` of ``model`` that ``plan`` names
    into a ``TensorParallelLinear`` over the tensor-parallel group (a ``DeviceMesh``, a
    ``ProcessGroup``, or None for the default group). Run it on every rank, on the same model.

    A ``MixedModule`` is sharded compressed and its shard tuned by ``inspector`` at the shard's
    shape; an ``nn.Linear`` is sliced and stays dense (``sparsify_(model)`` afterwards converts the
    slices, tuned at their shape). Returns ``{module name: style}`` of what was split."""
    group = resolve_group(mesh_or_group)
    plan = default_plan(model) if plan is None else dict(plan)
    done, split = {}, []
    for g in fusion_groups(model):       # fused q/k/v, gate/up: every member split, not the concatenation
        fused = model.get_submodule(g.fused_path)
        style = fused_style(g, plan)
        if style is None or isinstance(fused, TensorParallelLinear):
            continue
        install_split_fusion(model, g, parallel_from_module(fused, COLWISE, group, inspector=inspector,
                                                            row_groups=g.sizes))
        done[g.fused_path] = style
    for name, mod in list(model.named_modules()):     # parents come before their children
        if isinstance(mod, TensorParallelLinear):
            split.append(name + ".")                   # already split: its local part stays as it is
            continue
        if any(name.startswith(p) for p in split):
            continue
        style = style_of(name, plan)
        if style not in STYLES:
            continue
        if isinstance(mod, FusedSlice):      # its fused module was split above
            continue
        if not isinstance(mod, (MixedModule, nn.Linear)):
            raise TypeError(f"{name} is a {type(mod).__name__}; the plan's style {style!r} splits MixedModule and "
                            "nn.Linear layers only")
        kind, gather_output, split_input = STYLES[style]
        model.set_submodule(name, parallel_from_module(mod, kind, group, gather_output=gather_output,
                                                       split_input=split_input, inspector=inspector))
        done[name] = style
    return done
