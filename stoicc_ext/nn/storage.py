"""Which tensors of a model share storage: the tied-weight check of ``sparsify_`` and the aliases
that ``save_compressed`` and ``save_pretrained`` record for tied tensors. A DTensor (a model split
by transformers' ``tp_plan``) is taken by its local shard, whose storage the rank holds."""
import sys


def local_tensor(t):
    """``t``'s local shard if it is a DTensor, else ``t``. A DTensor's own storage cannot be read
    (``untyped_storage()`` raises); its local tensor's storage is the one the rank holds, and the one
    a module built from ``to_local()`` (``stoicc_ext.parallel``'s local linears) shares. The DTensor
    class is looked up, not imported: importing torch.distributed.tensor takes about 0.4 s, and no
    parameter can be a DTensor before something else has imported it."""
    dtensor = sys.modules.get("torch.distributed.tensor")
    return t.to_local() if dtensor is not None and isinstance(t, dtensor.DTensor) else t


def storage_key(t):
    """The device and storage of ``t``'s local data: equal for two tensors that share memory."""
    t = local_tensor(t)
    return t.device, t.untyped_storage().data_ptr()


def tensor_ident(t):
    """What makes two state-dict tensors the same stored tensor (a tied weight): storage, offset,
    shape, strides and dtype; None for an empty tensor (no storage to share)."""
    t = local_tensor(t)
    if t.numel() == 0:
        return None
    return (*storage_key(t), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def tied_aliases(state):
    """``{key: the first key holding the same tensor}`` over a state dict, for every tensor that
    repeats an earlier one (a tied weight is stored once, under its first name)."""
    aliases, seen = {}, {}
    for key, t in state.items():
        ident = None if t is None else tensor_ident(t)
        if ident is None:
            continue
        if ident in seen:
            aliases[key] = seen[ident]
        else:
            seen[ident] = key
    return aliases
