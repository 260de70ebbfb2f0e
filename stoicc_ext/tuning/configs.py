"""Config dicts and config spaces of the Inspector.

A *config* is a plain dict describing one candidate kernel. Those of the built-in schedules
(what ``Inspector.inspect`` returns as ``best_config``) have the keys

    BLOCK_M, BLOCK_N, BLOCK_K     token block and weight tile shape
    num_warps, num_stages         the instance's warps per CTA and pipeline depth
    schedule                      "sequential", "split_k" or "stream_k"
    SPLIT_K                       CTAs per tile row (split_k), CTAs in all (stream_k; 0 = one per
                                  resident slot, chosen by the op), 1 (sequential)
    instance                      the manifest name of the compiled instance

plus the spellings ``BLOCK_SIZE_M``, ``BLOCK_SIZE_N``, ``BLOCK_SIZE_K`` with the same values. A
config never holds ``M``, ``N``, ``K`` or ``bias``, so that the full executor call
``executor(x, *Wc, M=..., N=..., K=..., **cfg)`` never passes a key twice.

A *config space* (``create_configs``) restricts the search: for each key it names, the
candidate's value must be one of the listed values. ``BLOCK_SIZE_*`` are accepted everywhere as
aliases of ``BLOCK_*``.
"""
import json
from typing import Any, Sequence

__all__ = ["ALIASES", "CONFIG_KEYS", "canonical", "canonical_key", "with_aliases", "ConfigSpace",
           "create_configs"]

# BLOCK_SIZE_* spelling -> canonical key.
ALIASES = {"BLOCK_SIZE_M": "BLOCK_M", "BLOCK_SIZE_N": "BLOCK_N", "BLOCK_SIZE_K": "BLOCK_K"}
_SPELLED = {v: k for k, v in ALIASES.items()}
CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages", "schedule", "SPLIT_K", "instance")
# Keys a config may not hold: MixedModule's forward passes them beside **cfg.
RESERVED_KEYS = ("M", "N", "K", "bias")


def canonical_key(key):
    return ALIASES.get(key, key)


def canonical(config):
    """The config with ``BLOCK_SIZE_*`` folded into ``BLOCK_*`` (a new dict).

    Raises ValueError if a key and its alias disagree.
    """
    out = {}
    for k, v in dict(config).items():
        ck = canonical_key(k)
        if ck in out and out[ck] != v:
            raise ValueError(f"config has both {ck}={out[ck]!r} and its alias {k}={v!r}")
        out[ck] = v
    return out


def with_aliases(config):
    """The config plus the ``BLOCK_SIZE_*`` spellings of every ``BLOCK_*`` key."""
    out = dict(config)
    for ck, spelled in _SPELLED.items():
        if ck in out:
            out[spelled] = out[ck]
        elif spelled in out:
            out[ck] = out[spelled]
    return out


def _as_list(key, values):
    if isinstance(values, (str, int, float)) or values is None:
        return [values]
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"create_configs: {key} must be a list of values (or one value), "
                        f"got {type(values).__name__}") from None
    if not values:
        raise ValueError(f"create_configs: {key}=[] allows nothing")
    return values


class ConfigSpace:
    """A filter over configs: ``{key: allowed values}``; keys not named are unconstrained.

    A candidate that lacks a constrained key (a user schedule without ``SPLIT_K``, say) does not
    match. Build it with ``create_configs``; pass it to ``Inspector.set_configs``.
    """

    def __init__(self, constraints: dict[str, Any] | None = None) -> None:
        self.constraints = {}
        for k, v in (constraints or {}).items():
            ck = canonical_key(k)
            vals = _as_list(k, v)
            if ck in self.constraints:
                vals = [x for x in self.constraints[ck] if x in vals]
                if not vals:
                    raise ValueError(f"create_configs: {k} and its alias allow no common value")
            self.constraints[ck] = vals

    def allows(self, config):
        c = canonical(config)
        for k, vals in self.constraints.items():
            if k not in c or c[k] not in vals:
                return False
        return True

    __contains__ = allows

    def filter(self, configs):
        return [c for c in configs if self.allows(c)]

    def __and__(self, other):
        if other is None:
            return self
        merged = ConfigSpace(self.constraints)
        for k, vals in other.constraints.items():
            if k in merged.constraints:
                common = [x for x in merged.constraints[k] if x in vals]
                if not common:
                    raise ValueError(f"config spaces allow no common {k}")
                merged.constraints[k] = common
            else:
                merged.constraints[k] = list(vals)
        return merged

    def __bool__(self):
        return bool(self.constraints)

    def signature(self):
        """A stable JSON string (part of the tuning-cache key)."""
        return json.dumps({k: sorted(v, key=repr) for k, v in sorted(self.constraints.items())},
                          sort_keys=True, default=repr)

    def __eq__(self, other):
        return isinstance(other, ConfigSpace) and self.signature() == other.signature()

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self.constraints.items())
        return f"create_configs({inner})"


def create_configs(BLOCK_N: int | Sequence[int] | None = None, BLOCK_K: int | Sequence[int] | None = None,
                   BLOCK_M: int | Sequence[int] | None = None, num_warps: int | Sequence[int] | None = None,
                   num_stages: int | Sequence[int] | None = None, schedule: str | Sequence[str] | None = None,
                   SPLIT_K: int | Sequence[int] | None = None, **more: Any) -> ConfigSpace:
    """A config space for ``Inspector.set_configs``: each argument is a list of allowed values
    (a single value is taken as a one-element list); ``None`` leaves the key free.

    ``BLOCK_SIZE_M/N/K`` are accepted as aliases; other keyword arguments (``instance``, or keys
    of user schedules such as ``GROUP_SIZE_M``) constrain those keys the same way.

        inspector.set_configs(STOICC.create_configs(BLOCK_N=[128], BLOCK_K=[64]))
    """
    given = dict(BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, BLOCK_M=BLOCK_M, num_warps=num_warps,
                 num_stages=num_stages, schedule=schedule, SPLIT_K=SPLIT_K)
    constraints = {k: v for k, v in given.items() if v is not None}
    for k, v in more.items():
        if k in RESERVED_KEYS:
            raise ValueError(f"create_configs: {k} is a problem size, not a config key")
        if v is None:
            continue
        ck = canonical_key(k)
        if ck in constraints:
            a, b = _as_list(ck, constraints[ck]), _as_list(k, v)
            common = [x for x in a if x in b]
            if not common:
                raise ValueError(f"create_configs: {ck} and its alias {k} allow no common value")
            constraints[ck] = common
        else:
            constraints[ck] = v
    return ConfigSpace(constraints)
