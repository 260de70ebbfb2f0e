"""Fused sibling projections: linears that read the same input (attention q/k/v, MLP gate/up) run
as one weight and one call, whose output is split into views.

    groups = find_fusion_groups(model)             # structure + a dry run: who reads what
    fuse_linears_(model, groups)                   # dense: one nn.Linear per group (a baseline)
    sparsify_(model)                               # the same groups, one MixedModule per group

Which linears: the sibling ``nn.Linear`` children of one module whose names one of
``KNOWN_GROUPS`` lists (the Hugging Face Llama, Mistral, Qwen2/Qwen3 and Gemma families), with the
same ``in_features``, dtype, device and bias-ness, and every ``out_features`` a multiple of the
128 PATCH tile (so no compressed tile straddles two members). That is only where fusion may
apply; a dry run decides: a forward of the model (``example_inputs``, or the Hugging Face
``dummy_inputs``) with hooks that record, per call of the parent, which tensor each member got.
A group is fused only if, in every call, each member ran once on one tensor that the parent
received as an argument; the argument's position and name are recorded. A module whose members
are called from elsewhere (not from its own forward) is left alone.

How it runs, and why this way: the fused module is installed on the parent as ``qkv_proj`` /
``gate_up_proj`` and the members become ``FusedSlice`` modules without weights. A forward
pre-hook on the parent computes the fused output from the recorded argument and hands each slice
its view (``y[..., a:b]``) and the input it was computed from; a forward hook (``always_call``)
clears them. So the parent's own forward runs unchanged, and the hand-over lives exactly one
parent call: no cache outlives it or is looked up by tensor identity across calls. Under
``torch.compile(fullgraph=True)`` the hooks and the attribute writes trace into the graph (the
tests compile a converted, fused Qwen3 with the 'eager' and 'aot_eager' backends, and the e2e
benchmark's dry run a fused Llama through a recording backend); a CUDA graph captures the fused
call as one kernel like any other, and the attributes are None again after every call. A slice called on any tensor other than the one its
view was computed from raises, rather than return another input's projection.

The hooks are module-level functions and the per-parent plan is a plain attribute
(``_stoicc_fusions``), so ``copy.deepcopy`` and pickling keep a fused model working.
"""
import dataclasses
import inspect

import torch
from torch import nn

__all__ = ["KNOWN_GROUPS", "FusionGroup", "FusedSlice", "find_fusion_groups", "fused_linear", "install_fusion",
           "install_slices",
           "fuse_linears_", "fusion_groups", "install_fusions", "member_weights", "dry_run_inputs"]

# member names, in output order -> the fused module's name
KNOWN_GROUPS = {("q_proj", "k_proj", "v_proj"): "qkv_proj", ("gate_proj", "up_proj"): "gate_up_proj"}
FUSION_TILE = 128


@dataclasses.dataclass(frozen=True)
class FusionGroup:
    """One group: ``parent`` (module path, "" for the root), ``members`` (child names in output
    order), ``sizes`` (their out_features), ``in_features``, ``bias``, and where the parent's
    forward receives the members' input: ``arg_index`` (positional, or None) and ``arg_name``."""
    parent: str
    members: tuple
    sizes: tuple
    in_features: int
    bias: bool
    arg_index: object
    arg_name: str

    @property
    def name(self):
        return KNOWN_GROUPS[tuple(self.members)]

    def path(self, child):
        return f"{self.parent}.{child}" if self.parent else child

    @property
    def fused_path(self):
        return self.path(self.name)

    @property
    def bounds(self):
        """[(start, stop)] of each member's rows in the fused weight."""
        out, a = [], 0
        for n in self.sizes:
            out.append((a, a + n))
            a += n
        return out

    def to_dict(self):
        return dict(parent=self.parent, members=list(self.members), sizes=list(self.sizes),
                    in_features=self.in_features, bias=self.bias, arg_index=self.arg_index, arg_name=self.arg_name)

    @classmethod
    def from_dict(cls, d):
        return cls(d["parent"], tuple(d["members"]), tuple(int(n) for n in d["sizes"]), int(d["in_features"]),
                   bool(d["bias"]), None if d["arg_index"] is None else int(d["arg_index"]), d["arg_name"])


class FusedSlice(nn.Module):
    """What a fused member becomes: returns its view of the parent's fused output for the one
    input it was computed from (handed over by the parent's pre-hook, for one parent call)."""

    def __init__(self, fused_name, start, stop, in_features, box):
        super().__init__()
        self.fused_name, self.start, self.stop = fused_name, int(start), int(stop)
        self.in_features, self.out_features = int(in_features), int(stop - start)
        # [input, fused output] of the parent call in progress, one list shared by the group's
        # slices: the hooks fill and clear it once per group (item writes, not one
        # nn.Module.__setattr__ per member and call, about 1 us each)
        self.box = box

    def forward(self, x):
        if x is not self.box[0]:
            raise RuntimeError(f"this projection is fused into its parent's {self.fused_name}: it runs inside the "
                               f"parent's forward, on the parent's input (outside it, call the parent's "
                               f"{self.fused_name} and take [..., {self.start}:{self.stop}])")
        return self.box[1][..., self.start:self.stop]

    def extra_repr(self):
        return f"{self.fused_name}[..., {self.start}:{self.stop}], in_features={self.in_features}"


def install_slices(parent, fused_name, members, bounds, in_features):
    """Turn ``members`` of ``parent`` into ``FusedSlice``s of ``fused_name``'s output rows
    ``bounds`` (one shared box per group)."""
    box = [None, None]
    for m, (a, b) in zip(members, bounds):
        parent._modules[m] = FusedSlice(fused_name, a, b, in_features, box)


def _fused_pre_hook(parent, args, kwargs):
    for fused, members, arg_index, arg_name in parent._stoicc_fusions:
        x = args[arg_index] if arg_index is not None and arg_index < len(args) else kwargs[arg_name]
        box = parent._modules[members[0]].box
        box[0], box[1] = x, parent._modules[fused](x)


def _fused_post_hook(parent, args, kwargs, output):
    for _, members, _, _ in parent._stoicc_fusions:
        box = parent._modules[members[0]].box
        box[0] = box[1] = None


def fused_linear(linears):
    """One ``nn.Linear`` whose weight (and bias) are the members' concatenated along N (a copy)."""
    W = torch.cat([lin.weight.detach() for lin in linears])
    has_bias = linears[0].bias is not None
    out = nn.Linear(W.shape[1], W.shape[0], bias=has_bias, device="meta", dtype=W.dtype)
    grad = linears[0].weight.requires_grad
    out.weight = nn.Parameter(W, requires_grad=grad)
    if has_bias:
        out.bias = nn.Parameter(torch.cat([lin.bias.detach() for lin in linears]), requires_grad=grad)
    return out


def install_fusion(model, group, fused):
    """Install ``fused`` (an ``nn.Linear`` or ``MixedModule`` of the group's concatenated shape) on the
    parent as ``group.name`` and turn the members into ``FusedSlice``s (their weights are dropped)."""
    parent = model.get_submodule(group.parent)
    if (fused.out_features, fused.in_features) != (sum(group.sizes), group.in_features):
        raise ValueError(f"{group.fused_path}: the fused module is {fused.out_features}x{fused.in_features}, the "
                         f"group is {sum(group.sizes)}x{group.in_features}")
    parent.add_module(group.name, fused)
    install_slices(parent, group.name, group.members, group.bounds, group.in_features)
    if not hasattr(parent, "_stoicc_fusions"):
        parent._stoicc_fusions = []
        parent.register_forward_pre_hook(_fused_pre_hook, with_kwargs=True)
        parent.register_forward_hook(_fused_post_hook, with_kwargs=True, always_call=True)
    parent._stoicc_fusions.append((group.name, tuple(group.members), group.arg_index, group.arg_name))


def fusion_groups(model):
    """The fused groups installed in ``model`` (``FusionGroup``s, from its fused modules)."""
    out = []
    for pname, parent in model.named_modules():
        for fused, members, arg_index, arg_name in getattr(parent, "_stoicc_fusions", ()):
            slices = [parent._modules[m] for m in members]
            out.append(FusionGroup(pname, tuple(members), tuple(s.out_features for s in slices),
                                   slices[0].in_features, parent._modules[fused].bias is not None, arg_index,
                                   arg_name))
    return out


def member_weights(model):
    """``dict(model.named_parameters())`` with each dense fused weight (``<parent>.qkv_proj.weight``)
    replaced by its members' row blocks under the members' names (``<parent>.q_proj.weight`` ...,
    views that share its storage): the names PATCH's masks use. A compressed group has no dense
    weight to show."""
    params = dict(model.named_parameters())
    for g in fusion_groups(model):
        w = params.pop(f"{g.fused_path}.weight", None)
        if w is None:
            continue
        for m, (a, b) in zip(g.members, g.bounds):
            params[f"{g.path(m)}.weight"] = w.detach()[a:b]
    return params


def install_fusions(model, groups):
    """Give a skeleton (unfused, e.g. on the meta device) the fused structure of ``groups`` (dicts
    or ``FusionGroup``s, as a checkpoint records them): each group's members must be ``nn.Linear``s
    of the recorded shapes; the fused module is a meta-device ``nn.Linear`` placeholder that the
    checkpoint's tensors then replace. Groups already installed are skipped."""
    have = {(g.parent, g.members) for g in fusion_groups(model)}
    for g in groups:
        g = g if isinstance(g, FusionGroup) else FusionGroup.from_dict(g)
        if (g.parent, g.members) in have:
            continue
        parent = model.get_submodule(g.parent)
        lins = [getattr(parent, m, None) for m in g.members]
        for m, lin, n in zip(g.members, lins, g.sizes):
            if not isinstance(lin, nn.Linear) or (lin.out_features, lin.in_features) != (n, g.in_features):
                raise ValueError(f"fused layer {g.fused_path}: the model's {g.path(m)} is "
                                 f"{type(lin).__name__ if lin is None or not isinstance(lin, nn.Linear) else f'{lin.out_features}x{lin.in_features}'}"
                                 f", the checkpoint fused a {n}x{g.in_features} nn.Linear")
        dtype = lins[0].weight.dtype
        install_fusion(model, g, nn.Linear(g.in_features, sum(g.sizes), bias=g.bias, device="meta", dtype=dtype))


# --------------------------------------------------------------------------------------
# Finding the groups
# --------------------------------------------------------------------------------------

def _candidates(model):
    """[(parent name, members)] whose structure allows fusion (module docstring)."""
    out = []
    for pname, parent in model.named_modules():
        if hasattr(parent, "_stoicc_fusions"):
            continue
        for members in KNOWN_GROUPS:
            lins = [parent._modules.get(m) for m in members]
            if not all(type(lin) is nn.Linear for lin in lins):
                continue
            W0 = lins[0].weight
            if W0.device.type == "meta" or any(
                    lin.in_features != lins[0].in_features or lin.weight.dtype != W0.dtype
                    or lin.weight.device != W0.device or (lin.bias is None) != (lins[0].bias is None)
                    or lin.out_features % FUSION_TILE for lin in lins):
                continue
            out.append((pname, members))
    return out


def dry_run_inputs(model):
    """The Hugging Face ``dummy_inputs`` of ``model`` on its device, or None (not a transformers model)."""
    dummy = getattr(model, "dummy_inputs", None)
    if not isinstance(dummy, dict) or not dummy:
        return None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in dummy.items()}


def _where(parent, args, kwargs, x):
    """(index, name) of ``x`` among the parent call's arguments, or None."""
    try:
        params = [p.name for p in inspect.signature(parent.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    for i, a in enumerate(args):
        if a is x:
            return i, params[i] if i < len(params) else None
    for k, v in kwargs.items():
        if v is x:      # its position too, so that a caller passing it positionally is served
            return (params.index(k) if k in params else None), k
    return None


@torch.no_grad()
def find_fusion_groups(model, example_inputs=None):
    """The groups of ``model`` that can be fused (module docstring): structure first, then a dry
    run on ``example_inputs`` (a dict of keyword arguments, or a tuple of positional ones;
    default: the Hugging Face ``dummy_inputs``). Returns ``(groups, note)``: ``note`` says why nothing was checked (no candidates, no
    inputs for the dry run, the dry run failed), else None."""
    cands = _candidates(model)
    if not cands:
        return [], "no sibling linears of a known group with fusable shapes"
    inputs = example_inputs if example_inputs is not None else dry_run_inputs(model)
    if inputs is None:
        return [], "no example_inputs for the dry run (and the model has no Hugging Face dummy_inputs)"
    calls = {c: [] for c in cands}         # per candidate: one record per parent call
    handles = []

    def parent_pre(cand):
        def hook(mod, args, kwargs):
            calls[cand].append(dict(args=args, kwargs=kwargs, seen={}))
        return hook

    def member_hook(cand, member):
        def hook(mod, args):
            rec = calls[cand][-1] if calls[cand] else None
            if rec is None or rec.get("done") or rec.get("outside"):    # not inside a call of the parent
                calls[cand].append(dict(outside=True))
                return
            rec["seen"].setdefault(member, []).append(args[0] if args else None)
        return hook

    def parent_post(cand):
        def hook(mod, args, kwargs, out):
            calls[cand][-1]["done"] = True
        return hook

    try:
        for cand in cands:
            pname, members = cand
            parent = model.get_submodule(pname)
            handles.append(parent.register_forward_pre_hook(parent_pre(cand), with_kwargs=True))
            handles.append(parent.register_forward_hook(parent_post(cand), with_kwargs=True, always_call=True))
            for m in members:
                handles.append(parent._modules[m].register_forward_pre_hook(member_hook(cand, m)))
        was_training = model.training
        model.eval()
        try:
            model(**inputs) if isinstance(inputs, dict) else model(*inputs)
        except Exception as e:  # noqa: BLE001 - no fusion rather than no conversion
            return [], f"the dry run failed ({type(e).__name__}: {e})"
        finally:
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()

    groups = []
    for cand in cands:
        pname, members = cand
        parent = model.get_submodule(pname)
        where = set()
        ok = bool(calls[cand])
        for rec in calls[cand]:
            seen = rec.get("seen")
            if rec.get("outside") or not all(len(seen.get(m, ())) == 1 for m in members):
                ok = False
                break
            x = seen[members[0]][0]
            loc = _where(parent, rec["args"], rec["kwargs"], x) if isinstance(x, torch.Tensor) else None
            if loc is None or any(seen[m][0] is not x for m in members) or loc[1] is None:
                ok = False
                break
            where.add(loc)
        if not ok or len(where) != 1:
            continue
        (arg_index, arg_name), = where
        lins = [parent._modules[m] for m in members]
        groups.append(FusionGroup(pname, tuple(members), tuple(lin.out_features for lin in lins),
                                  lins[0].in_features, lins[0].bias is not None, arg_index, arg_name))
    return groups, None


def fuse_linears_(model, groups=None, example_inputs=None):
    """Fuse ``model``'s groups (default: ``find_fusion_groups(model, example_inputs)``) in place,
    dense: one ``nn.Linear`` per group, one ``F.linear`` call, the members' outputs its views.
    The same structure ``sparsify_`` gives a model, without compression (a dense baseline).
    Returns the groups fused."""
    if groups is None:
        groups, _ = find_fusion_groups(model, example_inputs)
    for g in groups:
        parent = model.get_submodule(g.parent)
        install_fusion(model, g, fused_linear([parent._modules[m] for m in g.members]))
    return groups
