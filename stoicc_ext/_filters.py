"""``filter_fn(module, fqn)``: how ``sparsify_`` and ``prune_patch_oneshot_`` ask the user which
layers to take, in torchao's order (``quantize_`` / ``sparsify_`` call ``filter_fn(module, fqn)``),
so one filter serves both libraries."""

__all__ = ["selects"]


def selects(filter_fn, module, fqn):
    """``filter_fn(module, fqn)``; the TypeError or AttributeError of a filter written for the other
    order (``lambda name, mod: ".layers." in name`` tests a string op on the module) is raised
    again as a TypeError that spells the convention out."""
    try:
        return bool(filter_fn(module, fqn))
    except (TypeError, AttributeError) as e:
        raise TypeError(f"filter_fn({type(module).__name__}, {fqn!r}) raised {type(e).__name__}: {e}. stoicc calls "
                        "filter_fn(module, fqn), module first and its fully qualified name second, as torchao "
                        "does; a filter written as (name, module) needs its arguments swapped") from e
