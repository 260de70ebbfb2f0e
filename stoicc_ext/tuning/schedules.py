"""Schedules and executors: the ``Schedule`` class (built-in and user schedules), the compiled
instances a built-in config names, and the executors ``inspect`` returns (``executor_for`` for a
built-in config, a thin wrapper around the launcher for a user schedule)."""
import functools
import itertools

import torch

from .configs import CONFIG_KEYS, ConfigSpace, RESERVED_KEYS, canonical, canonical_key, with_aliases
from ..format.compressed import compress as _compress
from ..ops import list_instances
from .cache import _jsonable

__all__ = ["Schedule", "executor_for", "BUILTIN_SCHEDULES"]

BUILTIN_SCHEDULES = ("sequential", "split_k", "stream_k")


def _qualname(fn):
    if fn is None:
        return None
    f = fn.func if isinstance(fn, functools.partial) else fn
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__qualname__)}"


class Schedule:
    """One family of candidate kernels.

    User schedule: ``Schedule(launcher, compressor, configs)``:

    * ``launcher(x, *Wc, **config) -> Y`` runs one candidate (``Y = x @ W.T``, shape ``[M, N]``).
      It also receives whatever extra keyword arguments the caller of the executor passes (the
      spec's forward passes ``M=, N=, K=``), so give it ``**kwargs``.
    * ``compressor(W, config) -> Wc`` (a tuple of tensors) builds the weight it reads; default
      ``stoicc_ext.compress(W, config)``. It is called once per distinct value of
      ``compress_keys`` (default the tile shape ``BLOCK_N``, ``BLOCK_K``) among the configs;
      pass ``compress_keys=None`` to compress for every config. (The default compressor reads
      only the tile shape, so without a compressor of your own the weight is compressed once
      per tile shape whatever ``compress_keys`` says.)
    * ``configs``: a dict of lists, expanded as their product (or a list of dicts). Keys are the
      user's; ``BLOCK_SIZE_*`` are understood as ``BLOCK_*`` for filtering. ``M``, ``N``, ``K``,
      ``bias`` and ``schedule`` are reserved.

    Library schedule (``densify``): a user-style schedule that also passes
    ``executor_factory(full_config) -> executor``, which fixes the config in the executor (as
    ``executor_for`` does), so ``inspect`` and loading a saved model return the same executor.

    Built-in schedule: ``Schedule()`` (no launcher) under one of the names ``"sequential"``,
    ``"split_k"``, ``"stream_k"`` in ``Inspector(schedules=...)`` means the compiled instances of
    that schedule; its ``configs``, if given, restrict them (keys the built-in candidates do not
    have, like ``GROUP_SIZE_M``, are ignored).
    """

    def __init__(self, launcher=None, compressor=None, configs=None, *, compress_keys=("BLOCK_N", "BLOCK_K"),
                 name=None, executor_factory=None):
        if launcher is not None and not callable(launcher):
            raise TypeError(f"Schedule: launcher must be callable, got {type(launcher).__name__}")
        if compressor is not None and not callable(compressor):
            raise TypeError(f"Schedule: compressor must be callable, got {type(compressor).__name__}")
        self.launcher = launcher
        self.executor_factory = executor_factory
        self.compressor = compressor
        self.compress_keys = None if compress_keys is None else tuple(canonical_key(k) for k in compress_keys)
        self.name = name
        self.configs = configs
        self._expanded = self._expand(configs)

    @property
    def builtin(self):
        return self.launcher is None

    @staticmethod
    def _expand(configs):
        if configs is None:
            return [{}]
        if isinstance(configs, dict):
            keys = list(configs)
            lists = []
            for k in keys:
                v = configs[k]
                v = [v] if isinstance(v, (str, int, float)) or v is None else list(v)
                if not v:
                    raise ValueError(f"Schedule: configs[{k!r}] is empty")
                lists.append(v)
            out = [dict(zip(keys, combo)) for combo in itertools.product(*lists)]
        else:
            out = [dict(c) for c in configs]
            if not out:
                raise ValueError("Schedule: configs is an empty list")
        for c in out:
            bad = [k for k in c if k in RESERVED_KEYS or k == "schedule"]
            if bad:
                raise ValueError(f"Schedule: config keys {bad} are reserved (problem sizes and the schedule name)")
            canonical(c)  # raises on a key and its alias disagreeing
        return out

    def expand(self):
        """The list of config dicts (user spelling) this schedule offers."""
        return [dict(c) for c in self._expanded]

    def _named(self, name):
        s = Schedule.__new__(Schedule)
        s.__dict__.update(self.__dict__)
        s.name = name
        return s

    def signature(self):
        """JSON-able description, part of the tuning-cache key (a launcher is named by its
        qualified name: change the name, or STOICC_FORCE_RETUNE=1, after editing its code)."""
        if self.builtin:
            filt = ConfigSpace(self._filter_constraints()) if self.configs is not None else None
            return dict(name=self.name, builtin=True, filter=None if filt is None else filt.signature())
        return dict(name=self.name, builtin=False, launcher=_qualname(self.launcher),
                    compressor=_qualname(self.compressor), compress_keys=self.compress_keys,
                    configs=_jsonable(self._expanded))

    def _filter_constraints(self):
        """For a built-in schedule given configs: {canonical key: allowed values} (known keys only)."""
        if self.configs is None:
            return {}
        known = set(CONFIG_KEYS)
        allowed = {}
        for c in self._expanded:
            for k, v in canonical(c).items():
                if k in known:
                    allowed.setdefault(k, [])
                    if v not in allowed[k]:
                        allowed[k].append(v)
        return allowed

    def __repr__(self):
        if self.builtin:
            return f"Schedule(builtin {self.name!r})"
        return (f"Schedule({self.name!r}, launcher={_qualname(self.launcher)}, "
                f"{len(self._expanded)} configs)")


# --------------------------------------------------------------------------------------
# Compiled instances and built-in executors
# --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _instances():
    """Compiled instances of this build (list_instances(), read once)."""
    return tuple(list_instances())


def _instance_by_name(name):
    for e in _instances():
        if e["name"] == name:
            return e
    return None


def _builtin_config(e, split):
    return with_aliases(dict(BLOCK_M=e["BLOCK_M"], BLOCK_N=e["BLOCK_N"], BLOCK_K=e["BLOCK_K"],
                             num_warps=e["num_warps"], num_stages=e["num_stages"], schedule=e["schedule"],
                             SPLIT_K=int(split), instance=e["name"]))


def executor_for(config, N, K):
    """The executor of a built-in config (as ``inspect`` returns): a closure that makes one
    ``torch.ops.stoicc.spmm`` call with the instance and split fixed.

    ``executor(x, *Wc, bias=None, **ignored)``: ``x`` is ``[M, K]``; ``N=`` and ``K=`` keyword
    arguments, if given, override the baked-in sizes (the spec's forward passes them); every
    other keyword (``M=``, the config's own keys) is ignored. ``executor.bound_shape`` = (N, K)
    tells ``MixedModule`` that the config is fixed inside, so it can call ``executor(x, *Wc,
    bias=b)`` without re-passing the config on every call.
    """
    e = _instance_by_name(config.get("instance"))
    if e is None:
        raise ValueError(f"config names instance {config.get('instance')!r}, which this build does not have "
                         f"(see stoicc_ext.list_instances())")
    op = torch.ops.stoicc.spmm.default
    idx, split = int(e["index"]), int(config.get("SPLIT_K", 0))
    bn, bk = int(e["BLOCK_N"]), int(e["BLOCK_K"])
    N0, K0 = int(N), int(K)

    def executor(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                 dense_values, bias=None, N=N0, K=K0, **_ignored):
        return op(x, sparse_row_ptr, sparse_cols, sparse_values, sparse_meta, dense_row_ptr, dense_cols,
                  dense_values, bias, N, K, bn, bk, idx, split)

    executor.__name__ = executor.__qualname__ = f"stoicc_{e['name']}_split{split}"
    executor.__doc__ = (f"torch.ops.stoicc.spmm with instance {e['name']} (index {idx}), SPLIT_K={split}, "
                        f"{bn}x{bk} tiles; call as executor(x, *Wc, bias=None, **config).")
    executor.config = dict(config)
    executor.instance_index = idx
    executor.bound_shape = (N0, K0)
    return executor


# --------------------------------------------------------------------------------------
# User schedules: configs, compression, executors
# --------------------------------------------------------------------------------------

def _user_full_config(name, ucfg):
    """A user config as ``inspect`` reports it: canonical keys and aliases added, the user's own
    spelling kept, ``schedule`` set."""
    cfg = with_aliases(canonical(ucfg))
    cfg.update(ucfg)
    cfg["schedule"] = name
    return cfg


def _user_config_of(sch, full_cfg):
    """The user config of ``sch`` whose full config is ``full_cfg``, or None."""
    want = _jsonable(full_cfg)
    for ucfg in sch.expand():
        if _jsonable(_user_full_config(sch.name, ucfg)) == want:
            return ucfg
    return None


def _user_compress(sch, W, ucfg):
    comp = sch.compressor or (lambda W_, c: _compress(W_, c))
    Wc = comp(W, ucfg)
    if not isinstance(Wc, (tuple, list)):
        raise TypeError(f"schedule {sch.name!r}: compressor must return a tuple of tensors (Wc, unpacked as "
                        f"*Wc by the executor), got {type(Wc).__name__}")
    return Wc


def _user_executor(schedule, added_keys):
    launcher = schedule.launcher
    drop = tuple(added_keys)

    def executor(x, *Wc, **kwargs):
        for k in drop:
            kwargs.pop(k, None)
        return launcher(x, *Wc, **kwargs)

    executor.__name__ = executor.__qualname__ = f"stoicc_user_{schedule.name}"
    executor.__doc__ = f"user schedule {schedule.name!r}: {_qualname(launcher)} (inspector-added keys dropped)"
    return executor


def _bind(schedules, choice, N, K):
    """(executor, best_config) for a stored choice, bound to the schedules given now; None if
    the choice does not fit them any more."""
    name, cfg = choice.get("schedule"), choice.get("config")
    sch = schedules.get(name)
    if sch is None or not isinstance(cfg, dict):
        return None
    if sch.builtin:
        e = _instance_by_name(cfg.get("instance"))
        if e is None or e["schedule"] != name:
            return None
        cfg = _builtin_config(e, int(cfg.get("SPLIT_K", 0)))
        return executor_for(cfg, N, K), cfg
    ucfg = _user_config_of(sch, cfg)
    if ucfg is None:
        return None
    full = _user_full_config(name, ucfg)
    if sch.executor_factory is not None:
        return sch.executor_factory(full), full
    ex = _user_executor(sch, [k for k in full if k not in ucfg])
    ex.config = dict(full)
    return ex, full
