"""The process group of a tensor-parallel layer and its two collectives.

The collectives are torch's functional ones (``torch.distributed._functional_collectives``): they
return new tensors instead of writing in place, so ``torch.compile(fullgraph=True)`` traces them
(an in-place ``dist.all_reduce`` breaks the graph) and CUDA graphs capture them on NCCL like any
other kernel. They run on any backend, gloo included (the CPU tests).
"""
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch.distributed.device_mesh import DeviceMesh

__all__ = ["resolve_group", "all_reduce", "all_gather_last"]


def resolve_group(mesh_or_group=None):
    """The ``ProcessGroup`` of the tensor-parallel dimension: the default group for ``None``, a 1-D
    ``DeviceMesh``'s group, the ``"tp"`` dimension of a larger mesh, or a ``ProcessGroup`` as is."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("tensor parallelism needs torch.distributed initialized first "
                           "(torch.distributed.init_process_group, or torchrun and init_device_mesh)")
    if mesh_or_group is None:
        return dist.group.WORLD
    if isinstance(mesh_or_group, DeviceMesh):
        if mesh_or_group.ndim == 1:
            return mesh_or_group.get_group()
        if "tp" not in (mesh_or_group.mesh_dim_names or ()):
            raise ValueError(f"a {mesh_or_group.ndim}-D DeviceMesh needs a dimension named 'tp' "
                             f"(got {mesh_or_group.mesh_dim_names}); pass mesh['tp']")
        return mesh_or_group.get_group("tp")
    if isinstance(mesh_or_group, dist.ProcessGroup):
        return mesh_or_group
    raise TypeError(f"expected a DeviceMesh, a ProcessGroup or None, got {type(mesh_or_group).__name__}")


def all_reduce(y, group):
    """The sum of every rank's ``y`` (the partial outputs of a row-parallel layer); ``group``: a
    ``ProcessGroup`` or its name."""
    return funcol.all_reduce(y, "sum", group)


def all_gather_last(y, group, world):
    """Every rank's ``y`` concatenated along the last dimension, in rank order (the output
    features of a column-parallel layer). The functional all-gather stacks along dim 0 only, so
    the ranks' blocks are moved to the last dimension afterwards."""
    lead, n = y.shape[:-1], y.shape[-1]
    g = funcol.all_gather_single(y.reshape(-1, n).contiguous(), 0, group)      # [world * M, n]
    return g.view(world, -1, n).permute(1, 0, 2).reshape(*lead, world * n)
