"""Schedules: the families of candidate kernels the Inspector times.

``Schedule`` is what a user writes: a launcher with its compressor and configs, or, without a
launcher, a restriction of one built-in kernel schedule. The Inspector turns each into a typed
schedule that owns its candidates, its compressor and its executor: ``KernelSchedule`` (the
compiled instances, ``tuning.kernels``), ``DensifySchedule`` (``tuning.densify``) or
``UserSchedule`` (here). They share the ``TunedSchedule`` interface, which is all that the
inspector, the candidate enumeration and the tuner use.
"""
import dataclasses
import functools
import itertools
import json
from typing import Any, Callable, Sequence

from ..format.compressed import compress as _compress
from .cache import _jsonable
from .configs import CONFIG_KEYS, RESERVED_KEYS, canonical, canonical_key, with_aliases

__all__ = ["Schedule", "Candidate", "TunedSchedule", "UserSchedule"]


def _qualname(fn):
    if fn is None:
        return None
    f = fn.func if isinstance(fn, functools.partial) else fn
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__qualname__)}"


class Schedule:
    """One family of candidate kernels.

    User schedule: ``Schedule(launcher, compressor, configs)``:

    * ``launcher(x, *Wc, **config) -> Y`` runs one candidate (``Y = x @ W.T``, shape ``[M, N]``).
      It also receives whatever extra keyword arguments the caller of the executor passes
      (``MixedModule``'s forward passes ``M=, N=, K=``), so give it ``**kwargs``.
    * ``compressor(W, config) -> Wc`` (a tuple of tensors) builds the weight it reads; default
      ``stoicc_ext.compress(W, config)``. It is called once per distinct value of
      ``compress_keys`` (default the tile shape ``BLOCK_N``, ``BLOCK_K``) among the configs;
      pass ``compress_keys=None`` to compress for every config. (The default compressor reads
      only the tile shape, so without a compressor of your own the weight is compressed once
      per tile shape whatever ``compress_keys`` says.)
    * ``configs``: a dict of lists, expanded as their product (or a list of dicts). Keys are the
      user's; ``BLOCK_SIZE_*`` are understood as ``BLOCK_*`` for filtering. ``M``, ``N``, ``K``,
      ``bias`` and ``schedule`` are reserved.

    Built-in schedule: ``Schedule()`` (no launcher) under one of the names ``"sequential"``,
    ``"split_k"``, ``"stream_k"`` in ``Inspector(schedules=...)`` means the compiled instances of
    that schedule; its ``configs``, if given, restrict them (keys the built-in candidates do not
    have, like ``GROUP_SIZE_M``, are ignored).
    """

    def __init__(self, launcher: Callable[..., Any] | None = None, compressor: Callable[..., Any] | None = None,
                 configs: Sequence[dict[str, Any]] | dict[str, Any] | None = None, *,
                 compress_keys: Sequence[str] = ("BLOCK_N", "BLOCK_K"), name: str | None = None) -> None:
        if launcher is not None and not callable(launcher):
            raise TypeError(f"Schedule: launcher must be callable, got {type(launcher).__name__}")
        if compressor is not None and not callable(compressor):
            raise TypeError(f"Schedule: compressor must be callable, got {type(compressor).__name__}")
        self.launcher = launcher
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

    def filter_constraints(self):
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


@dataclasses.dataclass(eq=False)
class Candidate:
    """One kernel that ``inspect`` may time: the schedule that owns it, and its config as
    ``inspect`` returns it."""
    schedule: "TunedSchedule"
    config: dict
    launch_config: dict = None      # launcher schedules: the config the launcher receives
    instance: dict = None           # kernel schedules: the compiled instance (a list_instances() entry)
    split: int = None               # kernel schedules: its SPLIT_K
    heuristic: bool = False         # the built-in heuristic's pick

    @property
    def tile(self):
        """(BLOCK_N, BLOCK_K) of the config, None where it has none."""
        c = canonical(self.config)
        return c.get("BLOCK_N"), c.get("BLOCK_K")


class TunedSchedule:
    """The interface of a schedule inside the Inspector. Subclasses set ``name`` and implement
    ``signature``, ``candidates``, ``launch_fn`` and ``bind``; the default compressor is
    ``stoicc_ext.compress`` at the candidate's tile shape."""

    name = None
    # Whether a candidate must run inside a CUDA graph to be timed (no eager fallback).
    must_capture = False

    def renamed(self, name):
        s = object.__new__(type(self))
        s.__dict__.update(self.__dict__)
        s.name = name
        return s

    def signature(self):
        """JSON-able description, part of the tuning-cache key."""
        raise NotImplementedError

    def candidates(self, space):
        """The candidates this schedule offers within the config space ``space`` (None: any).
        Kernel schedules are enumerated together instead (``tuning.candidates``)."""
        raise NotImplementedError

    def compress_key(self, cand):
        """Candidates with equal keys read the same compressed weight (compressed once)."""
        return ("stoicc",) + tuple(int(v) for v in cand.tile)

    def compress(self, W, cand):
        return _compress(W, *cand.tile)

    def compress_config(self, W, config):
        """The weight that ``config``'s executor reads (``Inspector.compress``)."""
        return _compress(W, config)

    def launch_fn(self, cand, X, N, K):
        """``fn(*Wc)`` running the candidate on ``X`` (timed by the tuner)."""
        raise NotImplementedError

    def bind(self, config, N, K):
        """``(executor, config)`` for a stored choice of this schedule, or None when the choice no
        longer fits it."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


# --------------------------------------------------------------------------------------
# Launcher schedules: a user's, and the library's densify (a subclass)
# --------------------------------------------------------------------------------------

def _full_config(name, ucfg):
    """A launcher's config as ``inspect`` reports it: canonical keys and aliases added, the
    user's own spelling kept, ``schedule`` set."""
    cfg = with_aliases(canonical(ucfg))
    cfg.update(ucfg)
    cfg["schedule"] = name
    return cfg


class UserSchedule(TunedSchedule):
    """A launcher with its configs and compressor (a user ``Schedule``)."""

    def __init__(self, name, spec):
        self.name = name
        self.spec = spec

    def signature(self):
        """A launcher is named by its qualified name: change the name, or STOICC_FORCE_RETUNE=1,
        after editing its code."""
        s = self.spec
        return dict(name=self.name, builtin=False, launcher=_qualname(s.launcher),
                    compressor=_qualname(s.compressor), compress_keys=s.compress_keys,
                    configs=_jsonable(s._expanded))

    def candidates(self, space):
        out = []
        for ucfg in self.spec.expand():
            cfg = _full_config(self.name, ucfg)
            if space is None or space.allows(cfg):
                out.append(Candidate(self, cfg, launch_config=ucfg))
        return out

    def compress_key(self, cand):
        ccfg = canonical(cand.launch_config)
        if self.spec.compressor is None:
            # stoicc's compress reads only the tile shape: the same weight the kernel candidates
            # of that shape read, compressed once whatever compress_keys says
            return ("stoicc", int(ccfg["BLOCK_N"]), int(ccfg["BLOCK_K"]))
        if self.spec.compress_keys is not None:
            return ("user", self.name) + tuple(repr(ccfg.get(k)) for k in self.spec.compress_keys)
        return ("user", self.name, json.dumps(_jsonable(ccfg)))

    def compress(self, W, cand):
        return self._compress_with(W, cand.launch_config)

    def compress_config(self, W, config):
        ucfg = self._launch_config_of(config)
        if ucfg is None:
            raise ValueError(f"best_config {config} is not one of schedule {self.name!r}'s configs")
        return self._compress_with(W, ucfg)

    def _compress_with(self, W, ucfg):
        comp = self.spec.compressor or (lambda W_, c: _compress(W_, c))
        Wc = comp(W, ucfg)
        if not isinstance(Wc, (tuple, list)):
            raise TypeError(f"schedule {self.name!r}: compressor must return a tuple of tensors (Wc, unpacked as "
                            f"*Wc by the executor), got {type(Wc).__name__}")
        return Wc

    def launch_fn(self, cand, X, N, K):
        launcher, ucfg = self.spec.launcher, cand.launch_config
        return lambda *w: launcher(X, *w, **ucfg)

    def _launch_config_of(self, config):
        """The launcher config whose full config is ``config``, or None."""
        want = _jsonable(config)
        for ucfg in self.spec.expand():
            if _jsonable(_full_config(self.name, ucfg)) == want:
                return ucfg
        return None

    def bind(self, config, N, K):
        ucfg = self._launch_config_of(config)
        if ucfg is None:
            return None
        full = _full_config(self.name, ucfg)
        return self.executor(full, [k for k in full if k not in ucfg]), full

    def executor(self, full, added_keys):
        """The executor of one config: the launcher, with the keys ``inspect`` added to the user's
        config (aliases, ``schedule``) dropped from its keyword arguments."""
        launcher = self.spec.launcher
        drop = tuple(added_keys)

        def executor(x, *Wc, **kwargs):
            for k in drop:
                kwargs.pop(k, None)
            return launcher(x, *Wc, **kwargs)

        executor.__name__ = executor.__qualname__ = f"stoicc_user_{self.name}"
        executor.__doc__ = f"user schedule {self.name!r}: {_qualname(launcher)} (inspector-added keys dropped)"
        executor.config = dict(full)
        return executor
