"""stoicc linears in a model that transformers loaded with tensor parallelism.

    model = AutoModelForCausalLM.from_pretrained(path, tp_plan="auto", dtype=torch.float16)
    stoicc_ext.parallel.sparsify_tp_(model)        # on every rank

``from_pretrained(tp_plan=...)`` leaves each planned ``nn.Linear`` with a ``DTensor`` weight (this
rank's rows for colwise, columns for rowwise) and its forward wrapped by the style's hooks.
``localize_hf_tp_`` turns each of them into a ``TensorParallelLinear`` around a plain
``nn.Linear`` of the local shard, with the style the plan gives it, and drops transformers' hooks
with the old module (``TensorParallelLinear`` does the same collectives, as functional ones, and its
local part runs plain tensors, which stoicc's op needs). ``sparsify_tp_`` then runs ``sparsify_``,
which converts those local linears at the shard's shape. Modules of other styles (the embedding's
``embedding_rowwise``) keep transformers' hooks.
"""
from torch import nn

from ..nn.sparsify import _owners, sparsify_
from .convert import linear_of
from .module import COLWISE, TensorParallelLinear
from .plan import STYLES, style_of

__all__ = ["localize_hf_tp_", "sparsify_tp_"]


def localize_hf_tp_(model, plan=None):
    """Replace every ``nn.Linear`` with a sharded ``DTensor`` weight by a ``TensorParallelLinear``
    of its local shard. ``plan``: default ``model.tp_plan``. Returns ``{module name: style}``."""
    # DTensor is imported here, not at module level: torch.distributed.tensor takes about 0.4 s to
    # import, and `import stoicc_ext` (every CLI call) imports this module.
    from torch.distributed.tensor import DTensor, Shard

    plan = dict(model.tp_plan if plan is None else plan)
    done = {}
    for name, mod in list(model.named_modules()):
        w = getattr(mod, "weight", None)
        if not isinstance(mod, nn.Linear) or not isinstance(w, DTensor):
            continue
        style = style_of(name, plan)
        if style not in STYLES:
            raise ValueError(f"{name}: its weight is sharded but its style {style!r} is not one of {sorted(STYLES)}")
        kind, gather_output, split_input = STYLES[style]
        placement = w.placements[0] if w.device_mesh.ndim == 1 else None
        want = 0 if kind == COLWISE else 1
        if not (isinstance(placement, Shard) and placement.dim % 2 == want):
            raise ValueError(f"{name}: weight placements {w.placements} on a {w.device_mesh.ndim}-D mesh, expected "
                             f"Shard({want}) on the 1-D tensor-parallel mesh for {style!r}")
        if mod.weight.shape[want] % w.device_mesh.size():
            raise ValueError(f"{name}: {tuple(mod.weight.shape)} does not split evenly over "
                             f"{w.device_mesh.size()} ranks; stoicc needs equal shards")
        b = mod.bias
        b_local = b.to_local() if isinstance(b, DTensor) else b
        b_local = None if b_local is None else b_local.detach()
        local = linear_of(w.to_local().detach(), b_local if kind == COLWISE else None)
        model.set_submodule(name, TensorParallelLinear(
            local, kind, w.device_mesh.get_group(), in_features=mod.in_features, out_features=mod.out_features,
            bias=None if kind == COLWISE else b_local, gather_output=gather_output, split_input=split_input))
        done[name] = style
    return done


def _tied_partners(model, names):
    """Paths of the modules outside ``names`` that hold a parameter sharing storage with one of
    theirs: the embedding of a tied ``lm_head``, whose DTensor weight's local shard is the storage
    of the lm_head's local linear (``_owners`` files DTensors under their local shard)."""
    inside = tuple(f"{n}." for n in names)
    found = []
    for params in _owners(model).values():
        if len(params) < 2 or not any(p.startswith(inside) for p in params):
            continue
        for p in params:
            path = p.rpartition(".")[0]
            # A parameter of the root or of an ancestor of a split layer: placing that module in
            # the subtree would bring its unsplit linears into sparsify_'s reach, so it is left out
            # (no known model ties a linear's weight to such a parameter).
            if p.startswith(inside) or path in found or not path or any(n.startswith(f"{path}.") for n in names):
                continue
            found.append(path)
    return found


def _subtree(model, names):
    """A bare module holding ``model``'s modules ``names`` at the same paths, and nothing else."""
    root = nn.Module()
    for name in names:
        node = root
        *parents, leaf = name.split(".")
        for p in parents:
            if p not in node._modules:
                node.add_module(p, nn.Module())
            node = node._modules[p]
        node.add_module(leaf, model.get_submodule(name))
    return root


def sparsify_tp_(model, plan=None, **sparsify_kwargs):
    """``localize_hf_tp_`` then ``sparsify_(**sparsify_kwargs)`` on the split layers: their local
    shards, where pruned, become ``MixedModule``s tuned at the shard's shape. Returns sparsify_'s
    report (layer names end in ``.local``). A split layer whose weight is tied to another module's
    (a tied ``lm_head``) stays dense, status ``shared``, as ``sparsify_`` keeps it on one GPU."""
    done = localize_hf_tp_(model, plan)
    # sparsify_ runs on the split layers, plus the modules whose parameters are tied to theirs, so
    # that its tied-weight check sees both owners of a tied weight (the embedding keeps a DTensor,
    # which _owners files under its local shard); the model's other modules are left as they are.
    # The subtree shares the modules, so converting a local linear there converts it in the model.
    return sparsify_(_subtree(model, list(done) + _tied_partners(model, done)), **sparsify_kwargs)
