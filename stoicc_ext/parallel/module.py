"""``TensorParallelLinear``: one linear layer split over the ranks of a process group.

    colwise (q/k/v, gate/up, lm_head): every rank holds N/world output features (whole tile rows)
        and computes y[..., N/world] from the full x; ``gather_output`` all-gathers the full y.
    rowwise (o, down): every rank holds K/world input features (whole tile columns) and computes a
        partial y[..., N] from its slice of x; the partials are all-reduced and the bias is added
        once, after the reduce. ``split_input``: x arrives whole and each rank takes its slice.

The rank's part is an ordinary module, ``local``: a ``MixedModule`` of the shard (stoicc kernels,
tuned by the Inspector at the shard's own N or K) or an ``nn.Linear`` of the dense slice (a layer
kept dense; ``sparsify_`` converts it in place later, at the shard's shape). Forward is the local
call plus at most one functional collective (``comm``), so CUDA graphs and ``torch.compile`` see
the same ops as on one GPU plus that collective.
"""
import torch.distributed as dist
from torch import nn

from .comm import all_gather_last, all_reduce

__all__ = ["TensorParallelLinear", "COLWISE", "ROWWISE"]

COLWISE, ROWWISE = "colwise", "rowwise"


class TensorParallelLinear(nn.Module):
    """``y = x @ W.T (+ bias)`` with W split over ``group``; ``local`` computes this rank's part.

    ``in_features`` / ``out_features`` are the whole layer's (what the model around it sees);
    ``local`` has ``N/world`` outputs (colwise, with its slice of the bias) or ``K/world`` inputs
    (rowwise, no bias: ``bias`` here is the whole bias, added after the all-reduce)."""

    def __init__(self, local, style, group, *, in_features, out_features, bias=None, gather_output=False,
                 split_input=False):
        super().__init__()
        if style not in (COLWISE, ROWWISE):
            raise ValueError(f"style must be {COLWISE!r} or {ROWWISE!r}, got {style!r}")
        if style == COLWISE and (bias is not None or split_input):
            raise ValueError("a colwise layer's bias belongs to its local shard, and its input is not split")
        if style == ROWWISE and gather_output:
            raise ValueError("a rowwise layer's output is whole after the all-reduce: nothing to gather")
        self.local = local
        # the group by name: the functional collectives take it, and the module stays a plain object
        # that copy.deepcopy and pickle handle (a ProcessGroup handle is neither copyable nor picklable)
        self.style, self.group_name = style, group.group_name
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.gather_output, self.split_input = bool(gather_output), bool(split_input)
        self.local_in = self.in_features // self.world if style == ROWWISE else self.in_features
        self.register_buffer("bias", None if bias is None else bias.detach())

    def forward(self, x):
        if self.split_input:
            x = x.narrow(-1, self.rank * self.local_in, self.local_in)
        y = self._modules["local"](x)  # direct dict reads: nn.Module.__getattr__ costs on every call
        if self.style == ROWWISE:
            if self.world > 1:
                y = all_reduce(y, self.group_name)
            bias = self._buffers["bias"]
            if bias is not None:
                y = y + bias
        elif self.gather_output and self.world > 1:
            y = all_gather_last(y, self.group_name, self.world)
        return y

    def extra_repr(self):
        how = "gather output" if self.gather_output else "split input" if self.split_input else ""
        return (f"{self.style}, in_features={self.in_features}, out_features={self.out_features}, "
                f"rank {self.rank} of {self.world}{', ' + how if how else ''}, bias={self.bias is not None}")
