"""The Inspector: the spec's autotuning API over the compiled kernel instances and user schedules.

    import stoicc_ext as STOICC
    inspector = STOICC.Inspector(use_default_configs=True)
    executor, best_config = inspector.inspect(X, W, sparse_arg=1)
    Wc = inspector.compress(W, best_config)
    Y = executor(X, *Wc, **best_config)          # one torch.ops.stoicc.spmm call

``inspect`` classifies W, compresses it once per candidate tile shape, times every candidate
with ``stoicc_ext.timing.time_graph`` (CUDA graph, weight copies rotated past the L2, median of
repeats: the protocol of the benchmarks) and returns the fastest. Results are cached in memory
and on disk (``stoicc_ext.tuning_cache``). See docs/inspector.md.
"""
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import sys
import time
import warnings

import torch
from torch.utils.weak import WeakIdKeyDictionary

try:
    from torch._subclasses.fake_tensor import FakeTensor as _FakeTensor
except Exception:  # noqa: BLE001 - private module; only used to recognise tracing
    _FakeTensor = ()

from . import tuning_cache
from ._version import __version__
from .configs import (ConfigSpace, RESERVED_KEYS, canonical, canonical_key, create_configs,
                      with_aliases)
from .format import CompressedWeight, compress as _compress
from .instances import list_instances, manifest
from .tile_map import TileType, classify_tiles
from .timing import copies_for, time_graph

__all__ = ["Schedule", "Inspector", "InspectReport", "executor_for", "BUILTIN_SCHEDULES"]

logger = logging.getLogger("stoicc_ext.inspector")

BUILTIN_SCHEDULES = ("sequential", "split_k", "stream_k")
# split_k values tried (filtered per problem as bench/bench_kernels.py's candidates() does).
SPLITS = (1, 2, 3, 4, 6, 8, 12, 16)
# Bump when the candidate enumeration changes: it is part of the cache key.
CANDIDATE_VERSION = 1
# Tile shapes in the order the heuristic prefers them (largest first: fewest index entries).
TILE_PREFERENCE = ((128, 128), (128, 64), (64, 128), (64, 64))
FINGERPRINT_BLOCK = 64      # the finest kernel tile side: every coarser tile map derives from it
PROGRESS_MIN = 8            # show progress when more candidates than this are timed
_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
# Nominal device (an H100 SXM) used to enumerate candidates when W is not on a GPU.
_NOMINAL = dict(name="cpu", sms=132, cc=90, smem_optin=232448, smem_per_sm=233472, l2=50 * 2 ** 20)
_WARNED = set()


def _warn_once(tag, msg):
    if tag not in _WARNED:
        _WARNED.add(tag)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _qualname(fn):
    if fn is None:
        return None
    f = fn.func if isinstance(fn, functools.partial) else fn
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__qualname__)}"


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=repr))


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------

class Schedule:
    """One family of candidate kernels.

    User schedule: ``Schedule(launcher, compressor, configs)``:

    * ``launcher(x, *Wc, **config) -> Y`` runs one candidate (``Y = x @ W.T``, shape ``[M, N]``).
      It also receives whatever extra keyword arguments the caller of the executor passes (the
      spec's forward passes ``M=, N=, K=``), so give it ``**kwargs``.
    * ``compressor(W, config) -> Wc`` (a tuple of tensors) builds the weight it reads; default
      ``stoicc_ext.compress(W, config)``. It is called once per distinct value of
      ``compress_keys`` (default the tile shape ``BLOCK_N``, ``BLOCK_K``) among the configs;
      pass ``compress_keys=None`` to compress for every config.
    * ``configs``: a dict of lists, expanded as their product (or a list of dicts). Keys are the
      user's; ``BLOCK_SIZE_*`` are understood as ``BLOCK_*`` for filtering. ``M``, ``N``, ``K``,
      ``bias`` and ``schedule`` are reserved.

    Built-in schedule: ``Schedule()`` (no launcher) under one of the names ``"sequential"``,
    ``"split_k"``, ``"stream_k"`` in ``Inspector(schedules=...)`` means the compiled instances of
    that schedule; its ``configs``, if given, restrict them (keys the built-in candidates do not
    have, like ``GROUP_SIZE_M``, are ignored).
    """

    def __init__(self, launcher=None, compressor=None, configs=None, *, compress_keys=("BLOCK_N", "BLOCK_K"),
                 name=None):
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
        known = set(BUILTIN_KEYS)
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


BUILTIN_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages", "schedule", "SPLIT_K", "instance")


# --------------------------------------------------------------------------------------
# Executors
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
    other keyword (``M=``, the config's own keys) is ignored.
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
    executor.split_k = split
    return executor


def _user_executor(schedule, added_keys):
    launcher = schedule.launcher
    drop = tuple(added_keys)

    def executor(x, *Wc, **kwargs):
        for k in drop:
            kwargs.pop(k, None)
        return launcher(x, *Wc, **kwargs)

    executor.__name__ = executor.__qualname__ = f"stoicc_user_{schedule.name}"
    executor.__doc__ = f"user schedule {schedule.name!r}: {_qualname(launcher)} (inspector-added keys dropped)"
    executor.schedule = schedule
    return executor


# --------------------------------------------------------------------------------------
# Tile maps
# --------------------------------------------------------------------------------------

_TILE_MEMO = WeakIdKeyDictionary()


def _coarsen(tm, fn, fk):
    """The tile map at ``fn x fk`` times coarser tiles: EMPTY iff all sub-tiles are, DENSE iff any
    sub-tile is (a 2:4 group never straddles a tile), else SPARSE_24."""
    TR, TC = tm.shape[0] // fn, tm.shape[1] // fk
    t = tm.reshape(TR, fn, TC, fk)
    dense = (t == int(TileType.DENSE)).any(dim=3).any(dim=1)
    nonempty = (t != int(TileType.EMPTY)).any(dim=3).any(dim=1)
    out = torch.full((TR, TC), int(TileType.EMPTY), dtype=torch.int8)
    out[nonempty] = int(TileType.SPARSE_24)
    out[dense] = int(TileType.DENSE)
    return out


def _tile_info(W, allow_compute=True):
    """Fingerprint and per-tile-shape tile counts of W, memoized per tensor (and its version).

    ``{"fingerprint": hex, "counts": {(bn, bk): (n_sparse, n_dense)}, "any_24": bool}``, or None
    if not memoized and ``allow_compute`` is False (graph capture: no reading of W).
    """
    try:
        memo = _TILE_MEMO.get(W)
        stamp = (W._version, W.data_ptr(), tuple(W.shape), W.dtype)
    except Exception:  # noqa: BLE001 - fake/meta tensors have no storage to stamp
        if not allow_compute:
            return None
        memo, stamp = None, None
    if memo is not None and memo[0] == stamp:
        return memo[1]
    if not allow_compute:
        return None
    b = FINGERPRINT_BLOCK
    tm = classify_tiles(W, b, b).cpu()
    h = hashlib.sha256()
    h.update(f"stoicc-tilemap-v1:{b}x{b}:{tuple(W.shape)}:".encode())
    h.update(tm.numpy().tobytes())
    N, K = W.shape
    counts = {}
    for bn, bk in TILE_PREFERENCE:
        if N % bn or K % bk:
            continue
        c = _coarsen(tm, bn // b, bk // b)
        counts[(bn, bk)] = (int((c == int(TileType.SPARSE_24)).sum()), int((c == int(TileType.DENSE)).sum()))
    info = dict(fingerprint=h.hexdigest(), counts=counts,
                any_24=bool((tm == int(TileType.SPARSE_24)).any()))
    if stamp is not None:
        _TILE_MEMO[W] = (stamp, info)
    return info


# --------------------------------------------------------------------------------------
# Device, timing, progress
# --------------------------------------------------------------------------------------

def _device_props(device):
    """What candidate enumeration needs of the device (nominal H100 values off the GPU)."""
    if device.type != "cuda":
        return dict(_NOMINAL, device_type=device.type)
    idx = device.index if device.index is not None else torch.cuda.current_device()
    p = torch.cuda.get_device_properties(idx)
    return dict(name=p.name, sms=int(p.multi_processor_count), cc=p.major * 10 + p.minor,
                smem_optin=p.shared_memory_per_block_optin, smem_per_sm=p.shared_memory_per_multiprocessor,
                l2=p.L2_cache_size, device_type="cuda", index=idx)


def _tuning_forbidden(W=None):
    """Why tuning is not allowed right now (a string), or None."""
    try:
        if torch.compiler.is_compiling():
            return "torch.compile tracing"
    except Exception:  # noqa: BLE001 - older/odd builds: treat as not compiling
        pass
    if W is not None:
        if W.device.type == "meta" or isinstance(W, _FakeTensor):
            return "tracing with fake/meta tensors"
    if torch.cuda.is_available():
        try:
            if torch.cuda.is_current_stream_capturing():
                return "CUDA-graph capture"
        except Exception:  # noqa: BLE001
            pass
    return None


def default_timer(fn, args_list, config=None, *, warmup=3, repeats=15):
    """Milliseconds per call of ``fn(*args)`` over the rotated argument sets (time_graph). A
    launcher that cannot be captured in a CUDA graph is timed eagerly instead (logged)."""
    try:
        return time_graph(fn, args_list, warmup=warmup, repeats=repeats)
    except Exception as e:  # noqa: BLE001
        if config is not None and config.get("schedule") in BUILTIN_SCHEDULES and "instance" in config:
            raise
        torch.cuda.synchronize()
        logger.warning("stoicc: %s could not be captured in a CUDA graph (%s: %s); timing it eagerly",
                       config, type(e).__name__, e)
        return time_graph(fn, args_list, warmup=warmup, repeats=repeats, use_graph=False)


class _Progress:
    def __init__(self, total, label, enabled):
        self.total, self.label = total, label
        self.enabled = enabled and total > PROGRESS_MIN
        self.tty = self.enabled and getattr(sys.stderr, "isatty", lambda: False)()
        self.next_mark = 0.25
        self.t0 = time.perf_counter()
        if self.enabled:
            print(f"stoicc: tuning {label}: {total} candidates", file=sys.stderr, flush=True)

    def update(self, done):
        if not self.enabled:
            return
        frac = done / self.total
        if self.tty:
            bar = "#" * int(30 * frac)
            print(f"\r  [{bar:<30}] {done}/{self.total} {time.perf_counter() - self.t0:5.1f}s",
                  end="", file=sys.stderr, flush=True)
        elif frac >= self.next_mark or done == self.total:
            print(f"  {done}/{self.total} candidates timed ({time.perf_counter() - self.t0:.1f} s)",
                  file=sys.stderr, flush=True)
            while self.next_mark <= frac:
                self.next_mark += 0.25

    def close(self, line):
        if self.enabled:
            if self.tty:
                print(file=sys.stderr)
            print(f"stoicc: {line}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def _describe(cfg):
    c = canonical(cfg)
    if "instance" in c and c.get("schedule") in BUILTIN_SCHEDULES:
        split = c.get("SPLIT_K")
        split_s = "auto" if split == 0 else split
        return f"{c['schedule']:<10} {c['instance']} SPLIT_K={split_s}"
    user = {k: v for k, v in cfg.items() if k != "schedule" and k not in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    return f"{c.get('schedule', '?'):<10} (user) {json.dumps(user, sort_keys=True, default=repr)}"


def _short(cfg):
    c = canonical(cfg)
    if "instance" in c and c.get("schedule") in BUILTIN_SCHEDULES:
        return f"{c['instance']}/SPLIT_K={'auto' if c.get('SPLIT_K') == 0 else c.get('SPLIT_K')}"
    return _describe(cfg).replace("  ", "").strip()


class InspectReport:
    """What one ``inspect`` call did: problem, source of the choice, all candidate timings.

    ``source`` is "tuned", "memory cache", "disk cache" or "heuristic"; ``str(report)`` (and
    ``Inspector.summary()``) is a readable summary.
    """

    def __init__(self, problem, source, chosen, candidates, elapsed_s, why, tuning_s=None, heuristic=None,
                 cache_path=None):
        self.problem = problem
        self.source = source
        self.chosen = chosen
        self.candidates = candidates        # [{"schedule", "config", "ms"} or {..., "error"}]
        self.elapsed_s = elapsed_s
        self.why = why
        self.tuning_s = tuning_s
        self.heuristic = heuristic
        self.cache_path = cache_path

    def ranked(self):
        timed = [c for c in self.candidates if c.get("ms") is not None]
        return sorted(timed, key=lambda c: c["ms"])

    def summary(self, top=5):
        p = self.problem
        lines = [f"stoicc inspect: M={p['M']} N={p['N']} K={p['K']} {p['dtype']} on {p['device']}"
                 + (f" ({p['sms']} SMs)" if p.get("sms") else "")]
        src = self.source
        if self.source == "tuned":
            src += f" ({len(self.ranked())} of {len(self.candidates)} candidates timed, {self.elapsed_s:.2f} s)"
        else:
            src += f" ({self.elapsed_s * 1e3:.1f} ms)"
            if self.tuning_s is not None:
                src += f"; tuned earlier in {self.tuning_s:.2f} s"
        lines.append(f"source: {src}")
        ranked = self.ranked()
        if ranked:
            best = ranked[0]["ms"]
            lines.append(f"  {'rank':>4} {'us':>9} {'vs best':>8}  {'tile':<7}  schedule / config")
            for i, c in enumerate(ranked[:top]):
                cc = canonical(c["config"])
                tile = f"{cc.get('BLOCK_N', '?')}x{cc.get('BLOCK_K', '?')}"
                lines.append(f"  {i + 1:>4} {c['ms'] * 1e3:>9.2f} {c['ms'] / best:>8.3f}  {tile:<7}  "
                             f"{_describe(c['config'])}")
        failed = [c for c in self.candidates if c.get("error")]
        if failed:
            lines.append(f"  {len(failed)} candidate(s) failed, e.g. {_describe(failed[0]['config'])}: "
                         f"{failed[0]['error']}")
        cc = canonical(self.chosen)
        lines.append(f"chosen: {_describe(self.chosen)}, BLOCK_M={cc.get('BLOCK_M')} "
                     f"tile {cc.get('BLOCK_N')}x{cc.get('BLOCK_K')}")
        lines.append(f"why: {self.why}")
        if self.cache_path:
            lines.append(f"cache: {self.cache_path}")
        return "\n".join(lines)

    __str__ = summary

    def __repr__(self):
        return f"<InspectReport {self.source}: {_describe(self.chosen)}>"


# --------------------------------------------------------------------------------------
# The Inspector
# --------------------------------------------------------------------------------------

class Inspector:
    """Autotunes ``Y = X @ W.T`` for one weight over kernel instances and schedules.

    Arguments:
      use_default_configs: include the built-in schedules ("sequential", "split_k", "stream_k")
        with every compiled instance of this build.
      schedules: dict name -> ``Schedule``; user schedules are timed side by side with the
        built-in ones; a built-in name with ``Schedule()`` (no launcher) restricts that
        built-in schedule by its ``configs``; a user schedule under a built-in name replaces it.
      cache: None (default: memory + disk unless STOICC_DISABLE_CACHE=1), True (same), "memory"
        (no disk), False (no cache).
      timer: ``timer(fn, args_list, config) -> ms`` (default: ``default_timer``, the benchmark
        protocol). Injectable for tests or other protocols; a custom timer is part of the cache key.
      repeats, warmup: for the default timer. verbose: progress and the summary on stderr.
      cache_dir: overrides STOICC_CACHE_DIR.
    """

    def __init__(self, use_default_configs=True, schedules=None, cache=None, *, timer=None, repeats=15, warmup=3,
                 verbose=True, cache_dir=None):
        self.schedules = {}
        if use_default_configs:
            for name in BUILTIN_SCHEDULES:
                self.schedules[name] = Schedule(name=name)
        if schedules is not None:
            if not isinstance(schedules, dict):
                raise TypeError(f"schedules must be a dict of name -> Schedule, got {type(schedules).__name__}")
            for name, sch in schedules.items():
                if not isinstance(sch, Schedule):
                    raise TypeError(f"schedules[{name!r}] must be a stoicc_ext.Schedule, got {type(sch).__name__}")
                if sch.builtin and name not in BUILTIN_SCHEDULES:
                    raise ValueError(f"schedules[{name!r}] has no launcher; only the built-in schedules "
                                     f"{BUILTIN_SCHEDULES} may be given without one")
                self.schedules[str(name)] = sch._named(str(name))
        if not self.schedules:
            raise ValueError("Inspector has no schedules: pass use_default_configs=True or schedules={...}")
        if cache not in (None, True, False, "memory"):
            raise ValueError(f"cache must be None, True, False or 'memory', got {cache!r}")
        self.cache = cache
        self.cache_dir = cache_dir
        self.timer = timer
        self.repeats, self.warmup = int(repeats), int(warmup)
        self.verbose = verbose
        self.config_space = None
        self.last_report = None

    # ---- configuration -------------------------------------------------------------

    def set_configs(self, space=None, **constraints):
        """Restrict the search to a config space (``create_configs(...)``), a dict of lists, or
        keyword lists; ``set_configs()`` / ``set_configs(None)`` removes the restriction.
        The restriction replaces any earlier one and applies to every later ``inspect``."""
        if space is not None and constraints:
            raise TypeError("set_configs takes a config space or keyword lists, not both")
        if constraints:
            space = create_configs(**constraints)
        elif isinstance(space, dict):
            space = create_configs(**space)
        elif space is not None and not isinstance(space, ConfigSpace):
            raise TypeError(f"set_configs expects the result of create_configs(...), got {type(space).__name__}")
        self.config_space = space if space else None
        return self

    def summary(self):
        """The readable summary of the last ``inspect``."""
        return "no inspect yet" if self.last_report is None else self.last_report.summary()

    def compress(self, W, best_config):
        """The compressed weight that ``best_config``'s executor reads (a CompressedWeight for the
        built-in schedules; the user compressor's tuple for a user schedule)."""
        sch = self.schedules.get(best_config.get("schedule")) if isinstance(best_config, dict) else None
        if sch is not None and not sch.builtin:
            ucfg = self._user_config_of(sch, best_config)
            if ucfg is None:
                raise ValueError(f"best_config {best_config} is not one of schedule {sch.name!r}'s configs")
            return self._user_compress(sch, W, ucfg)
        if not isinstance(best_config, dict):
            raise TypeError(f"best_config must be a config dict, got {type(best_config).__name__}")
        return _compress(W, best_config)

    # ---- inspect ---------------------------------------------------------------------

    def inspect(self, X, W, sparse_arg=1):
        """Tune ``Y = X @ W.T`` for this X shape and this W; returns ``(executor, best_config)``.

        X: ``[M, K]``, W: ``[N, K]`` (the ``nn.Linear`` layout), same fp16/bf16 dtype and device.
        ``sparse_arg=1``: W (the second operand) is the PATCH-pruned one. ``sparse_arg=0`` (X
        sparse) is not supported: NotImplementedError (docs/inspector.md says why).
        """
        t0 = time.perf_counter()
        _check_sparse_arg(sparse_arg)
        _check_inputs(X, W)
        M, K = X.shape
        N = W.shape[0]
        device = W.device
        forbidden = _tuning_forbidden(W)
        info = _tile_info(W, allow_compute=forbidden is None)
        if forbidden is None and not info["any_24"]:
            raise ValueError(
                f"W ({N}x{K}) has no 2:4 tile (every {FINGERPRINT_BLOCK}x{FINGERPRINT_BLOCK} tile is dense or empty): "
                "stoicc only pays off on PATCH-pruned weights with 2:4 tiles; use a dense torch matmul "
                "(torch.nn.functional.linear) for this layer instead")
        props = _device_props(device)        # host queries only: fine during capture
        identity = tuning_cache.device_identity(device)
        problem = dict(M=M, N=N, K=K, dtype=_DTYPE_NAMES[W.dtype], device=identity[0], sms=identity[1] or None)
        counts = info["counts"] if info is not None else None
        cands = self._candidates(M, N, K, props, counts)
        if not cands:
            raise ValueError(self._no_candidate_message(M, N, K))

        use_mem, use_disk = self._cache_modes()
        material = key = None
        if info is not None and (use_mem or use_disk):
            material = self._key_material(M, N, K, W.dtype, identity, info["fingerprint"])
            key = tuning_cache.make_key(material)
        retune = tuning_cache.force_retune() and forbidden is None
        if key is not None and not retune:
            rec, src = tuning_cache.lookup(key, material, memory=use_mem, disk=use_disk, directory=self.cache_dir)
            if rec is not None:
                bound = self._rebind(rec["choice"], N, K)
                if bound is not None:
                    ex, cfg = bound
                    self.last_report = InspectReport(
                        problem, f"{src} cache", cfg, rec["candidates"], time.perf_counter() - t0,
                        rec.get("why", "cached choice"), tuning_s=rec.get("tuning_s"),
                        cache_path=tuning_cache.path_for(key, self.cache_dir) if use_disk else None)
                    if forbidden is not None:
                        _warn_once((forbidden, "cached"), f"stoicc: Inspector.inspect called during {forbidden}: not tuning; "
                                              "using the cached choice (tune before capturing/compiling)")
                    logger.info("stoicc: %s: cached choice %s (%s)", _problem_str(problem), _describe(cfg), src)
                    return ex, cfg
                logger.info("stoicc: cache record %s no longer matches the schedules given; tuning again", key[:12])

        if forbidden is not None:
            _warn_once((forbidden, "heuristic"), f"stoicc: Inspector.inspect called during {forbidden}: not tuning; using the "
                                  "built-in heuristic (torch.ops.stoicc.default_config). Call inspect before "
                                  "capturing/compiling to get a tuned choice.")
            return self._heuristic_result(problem, cands, M, N, K, counts, props, device, t0,
                                          f"{forbidden}: no timing allowed, no cached choice; built-in heuristic")
        if device.type != "cuda" and self.timer is None:
            return self._heuristic_result(problem, cands, M, N, K, counts, props, device, t0,
                                          f"W is on {device.type}: no timing possible (CUDA events); built-in "
                                          "heuristic's choice, not cached. The CPU runs the reference op.")

        records, tuning_s = self._tune(X, W, cands, props, problem)
        ok = [r for r in records if r.get("ms") is not None]
        if not ok:
            errs = "; ".join(f"{_describe(r['config'])}: {r['error']}" for r in records[:5])
            raise RuntimeError(f"stoicc: every candidate failed to run ({len(records)}): {errs}")
        best = min(ok, key=lambda r: r["ms"])
        heur = self._heuristic_config(cands, M, N, K, counts, props, device)
        why = self._why(best, ok, heur)
        choice = dict(schedule=best["schedule"], config=best["config"])
        path = None
        if key is not None:
            path = tuning_cache.store(key, material, dict(choice=choice, candidates=records, why=why,
                                                          tuning_s=tuning_s, created=time.time(),
                                                          library=__version__),
                                      memory=use_mem, disk=use_disk, directory=self.cache_dir)
        ex, cfg = self._rebind(choice, N, K)
        self.last_report = InspectReport(problem, "tuned", cfg, records, time.perf_counter() - t0, why,
                                         tuning_s=tuning_s, heuristic=heur, cache_path=path)
        logger.info("stoicc: %s: tuned %d candidates in %.2f s; chose %s (%.2f us)", _problem_str(problem),
                    len(records), tuning_s, _describe(cfg), best["ms"] * 1e3)
        if self.verbose and len(cands) > PROGRESS_MIN:
            print(self.last_report.summary(), file=sys.stderr, flush=True)
        return ex, cfg

    # ---- internals -------------------------------------------------------------------

    def _cache_modes(self):
        if self.cache is False or tuning_cache.cache_disabled():
            return False, False
        return True, self.cache != "memory"

    def _key_material(self, M, N, K, dtype, identity, fingerprint):
        man = manifest()
        return dict(library=__version__, manifest=man["manifest_hash"], candidates=CANDIDATE_VERSION,
                    gpu=identity[0], sms=identity[1], dtype=_DTYPE_NAMES[dtype], M=M, N=N, K=K,
                    tiles=fingerprint,
                    schedules=[self.schedules[n].signature() for n in sorted(self.schedules)],
                    space=None if self.config_space is None else self.config_space.signature(),
                    timer=None if self.timer is None else _qualname(self.timer))

    def _allowed(self, cfg, sch_filter):
        if self.config_space is not None and not self.config_space.allows(cfg):
            return False
        return sch_filter is None or sch_filter.allows(cfg)

    def _candidates(self, M, N, K, props, counts):
        """Candidate dicts: {schedule, config, [instance entry, split | user config]}."""
        out = []
        space_bm = self.config_space is not None and "BLOCK_M" in self.config_space.constraints
        builtin = []
        for name, sch in self.schedules.items():
            if not sch.builtin:
                continue
            filt_c = sch._filter_constraints()
            filt = ConfigSpace(filt_c) if filt_c else None
            bm_fixed = space_bm or "BLOCK_M" in filt_c
            for e in _instances():
                if e["schedule"] != name:
                    continue
                bn, bk = e["BLOCK_N"], e["BLOCK_K"]
                if N % bn or K % bk or e["smem_bytes"] > props["smem_optin"] or props["cc"] < e["min_sm"]:
                    continue
                nsd = counts.get((bn, bk)) if counts is not None else None
                for split in _splits(e, M, N, K, props, nsd):
                    cfg = _builtin_config(e, split)
                    if self._allowed(cfg, filt):
                        builtin.append(dict(schedule=name, config=cfg, entry=e, split=split, bm_fixed=bm_fixed))
        want = _m_bucket(M)
        by_tile = {}
        for c in builtin:
            by_tile.setdefault((c["entry"]["BLOCK_N"], c["entry"]["BLOCK_K"]), []).append(c)
        for tile, cs in by_tile.items():
            free = [c for c in cs if not c["bm_fixed"]]
            if free:
                best_d = min(abs(c["entry"]["BLOCK_M"] - want) for c in free)
                cs = [c for c in cs if c["bm_fixed"] or abs(c["entry"]["BLOCK_M"] - want) == best_d]
            out.extend(cs)
        # the heuristic's choice is always a candidate (when allowed): tuning never does worse
        heur = self._op_heuristic(M, N, K, counts, props, out)
        if heur is not None:
            same = next((c for c in out if c["config"] == heur["config"]), None)
            if same is None:
                out.append(heur)
            else:
                same["heuristic"] = True
        for name, sch in self.schedules.items():
            if sch.builtin:
                continue
            for ucfg in sch.expand():
                cfg = self._user_full_config(name, ucfg)
                if self._allowed(cfg, None):
                    out.append(dict(schedule=name, config=cfg, user_config=ucfg))
        return out

    def _op_heuristic(self, M, N, K, counts, props, builtin_cands):
        """torch.ops.stoicc.default_config's choice as a candidate, on a CUDA device outside
        compilation, for the preferred allowed tile shape; else None."""
        if not builtin_cands or props["device_type"] != "cuda":
            return None
        try:
            if torch.compiler.is_compiling():
                return None
        except Exception:  # noqa: BLE001
            pass
        tiles = {(c["entry"]["BLOCK_N"], c["entry"]["BLOCK_K"]) for c in builtin_cands}
        for bn, bk in TILE_PREFERENCE:
            if (bn, bk) not in tiles:
                continue
            nS, nD = counts.get((bn, bk), (0, (N // bn) * (K // bk))) if counts else (0, (N // bn) * (K // bk))
            with torch.cuda.device(props["index"]):
                inst, split = torch.ops.stoicc.default_config(M, N, K, bn, bk, nS, nD)
            if inst < 0:
                continue
            e = next((x for x in _instances() if x["index"] == inst), None)
            if e is None:
                continue
            cfg = _builtin_config(e, split)
            sch = self.schedules.get(e["schedule"])
            if sch is None or not sch.builtin:
                continue
            filt_c = sch._filter_constraints()
            if not self._allowed(cfg, ConfigSpace(filt_c) if filt_c else None):
                continue
            return dict(schedule=e["schedule"], config=cfg, entry=e, split=split, bm_fixed=False, heuristic=True)
        return None

    def _heuristic_config(self, cands, M, N, K, counts, props, device):
        """The built-in heuristic's pick among the candidates (no timing): the op's
        default_config when it is a candidate, else the same scoring in Python."""
        for c in cands:
            if c.get("heuristic"):
                return c["config"]
        builtin = [c for c in cands if "entry" in c]
        if not builtin:
            return cands[0]["config"] if cands else None
        want = _m_bucket(M)
        tile_rank = {t: i for i, t in enumerate(TILE_PREFERENCE)}

        def score(c):
            e = c["entry"]
            s = abs(e["BLOCK_M"] - want) * 8
            if want <= 64:
                s += {"split_k": 0, "sequential": 1}.get(e["schedule"], 2)
                s += 1 if e["smem_bytes"] > props["smem_per_sm"] // 2 else 0
            else:
                s += 0 if e["schedule"] == "sequential" else 2
            nsd = counts.get((e["BLOCK_N"], e["BLOCK_K"])) if counts else None
            auto = _auto_split(e, M, N, K, props, nsd)
            return (tile_rank.get((e["BLOCK_N"], e["BLOCK_K"]), 9), s, abs(c["split"] - auto), e["index"])

        return min(builtin, key=score)["config"]

    def _heuristic_result(self, problem, cands, M, N, K, counts, props, device, t0, why):
        cfg = self._heuristic_config(cands, M, N, K, counts, props, device)
        cand = next(c for c in cands if c["config"] == cfg)
        ex, cfg = self._rebind(dict(schedule=cand["schedule"], config=cfg), N, K)
        self.last_report = InspectReport(problem, "heuristic", cfg,
                                         [dict(schedule=c["schedule"], config=c["config"], ms=None) for c in cands],
                                         time.perf_counter() - t0, why, heuristic=cfg)
        logger.info("stoicc: %s: %s -> %s", _problem_str(problem), why, _describe(cfg))
        return ex, cfg

    def _why(self, best, ok, heur):
        parts = [f"fastest of {len(ok)} timed candidates ({best['ms'] * 1e3:.2f} us)"]
        rest = sorted((r for r in ok if r is not best), key=lambda r: r["ms"])
        if rest:
            parts.append(f"runner-up {_short(rest[0]['config'])} "
                         f"{(rest[0]['ms'] / best['ms'] - 1) * 100:+.1f}%")
        if heur is not None:
            h = next((r for r in ok if r["config"] == heur), None)
            if h is not None and h is not best:
                parts.append(f"the built-in heuristic's pick ({_short(heur)}) measured {h['ms'] * 1e3:.2f} us "
                             f"({(h['ms'] / best['ms'] - 1) * 100:+.1f}%)")
            elif h is best:
                parts.append("it is also the built-in heuristic's pick")
        return "; ".join(parts)

    def _user_full_config(self, name, ucfg):
        cfg = with_aliases(canonical(ucfg))
        cfg.update(ucfg)
        cfg["schedule"] = name
        return cfg

    def _user_config_of(self, sch, full_cfg):
        want = _jsonable(full_cfg)
        for ucfg in sch.expand():
            if _jsonable(self._user_full_config(sch.name, ucfg)) == want:
                return ucfg
        return None

    def _user_compress(self, sch, W, ucfg):
        comp = sch.compressor or (lambda W_, c: _compress(W_, c))
        Wc = comp(W, ucfg)
        if not isinstance(Wc, (tuple, list)):
            raise TypeError(f"schedule {sch.name!r}: compressor must return a tuple of tensors (Wc, unpacked as "
                            f"*Wc by the executor), got {type(Wc).__name__}")
        return Wc

    def _rebind(self, choice, N, K):
        """(executor, best_config) for a stored choice, bound to the schedules given now; None if
        the choice does not fit them any more."""
        name, cfg = choice.get("schedule"), choice.get("config")
        sch = self.schedules.get(name)
        if sch is None or not isinstance(cfg, dict):
            return None
        if sch.builtin:
            e = _instance_by_name(cfg.get("instance"))
            if e is None or e["schedule"] != name:
                return None
            cfg = _builtin_config(e, int(cfg.get("SPLIT_K", 0)))
            return executor_for(cfg, N, K), cfg
        ucfg = self._user_config_of(sch, cfg)
        if ucfg is None:
            return None
        full = self._user_full_config(name, ucfg)
        added = [k for k in full if k not in ucfg]
        ex = _user_executor(sch, added)
        ex.config = dict(full)
        return ex, full

    def _tune(self, X, W, cands, props, problem):
        """Time every candidate; returns (records, seconds)."""
        t0 = time.perf_counter()
        M, K = X.shape
        N = W.shape[0]
        timer = self.timer or functools.partial(default_timer, warmup=self.warmup, repeats=self.repeats)
        groups = {}
        for c in cands:
            if "entry" in c:
                gk = ("builtin", c["entry"]["BLOCK_N"], c["entry"]["BLOCK_K"])
            else:
                sch = self.schedules[c["schedule"]]
                ccfg = canonical(c["user_config"])
                gk = (("user", sch.name) + tuple(repr(ccfg.get(k)) for k in sch.compress_keys)
                      if sch.compress_keys is not None else ("user", sch.name, json.dumps(_jsonable(ccfg))))
            groups.setdefault(gk, []).append(c)
        n_tiles = len({(c["config"].get("BLOCK_N"), c["config"].get("BLOCK_K")) for c in cands})
        progress = _Progress(len(cands), f"{_problem_str(problem)} ({n_tiles} tile shapes)", self.verbose)
        records = []
        done = 0
        ctx = torch.cuda.device(W.device) if W.device.type == "cuda" else contextlib.nullcontext()
        with ctx:
            for gk, cs in groups.items():
                try:
                    if gk[0] == "builtin":
                        Wc = _compress(W, gk[1], gk[2])
                    else:
                        Wc = self._user_compress(self.schedules[cs[0]["schedule"]], W, cs[0]["user_config"])
                except Exception as e:  # noqa: BLE001 - a failing compressor fails its candidates only
                    for c in cs:
                        records.append(dict(schedule=c["schedule"], config=c["config"], ms=None,
                                            error=f"compress: {type(e).__name__}: {e}"))
                        done += 1
                    progress.update(done)
                    continue
                copies = _rotated(Wc, props) if W.device.type == "cuda" else [Wc]
                args_list = [tuple(w) for w in copies]
                for c in cs:
                    fn = self._launch_fn(c, X, N, K)
                    try:
                        ms = float(timer(fn, args_list, c["config"]))
                        rec = dict(schedule=c["schedule"], config=c["config"], ms=ms)
                        logger.debug("stoicc:   %s: %.2f us", _describe(c["config"]), ms * 1e3)
                    except Exception as e:  # noqa: BLE001 - record and go on
                        rec = dict(schedule=c["schedule"], config=c["config"], ms=None,
                                   error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                        logger.warning("stoicc: candidate %s failed: %s", _describe(c["config"]), rec["error"])
                    records.append(rec)
                    done += 1
                    progress.update(done)
                del copies, args_list, Wc
        tuning_s = time.perf_counter() - t0
        ok = [r for r in records if r.get("ms") is not None]
        if ok:
            b = min(ok, key=lambda r: r["ms"])
            progress.close(f"chose {_describe(b['config'])} ({b['ms'] * 1e3:.2f} us) in {tuning_s:.2f} s")
        return records, tuning_s

    def _launch_fn(self, c, X, N, K):
        if "entry" in c:
            op = torch.ops.stoicc.spmm.default
            e = c["entry"]
            idx, split, bn, bk = e["index"], c["split"], e["BLOCK_N"], e["BLOCK_K"]
            return lambda *w: op(X, *w, None, N, K, bn, bk, idx, split)
        launcher, ucfg = self.schedules[c["schedule"]].launcher, c["user_config"]
        return lambda *w: launcher(X, *w, **ucfg)

    def _no_candidate_message(self, M, N, K):
        tiles = [f"{bn}x{bk}" for bn, bk in TILE_PREFERENCE if not (N % bn or K % bk)]
        return (f"no candidate kernel for M={M} N={N} K={K}: schedules {sorted(self.schedules)}, "
                f"config space {self.config_space!r}, tile shapes that divide W: {tiles}, "
                f"compiled instances: {len(_instances())}"
                + ("" if _instances() else " (is the compiled extension loaded? stoicc_ext.extension_error)"))

    def __repr__(self):
        return (f"Inspector(schedules={list(self.schedules)}, config_space={self.config_space!r}, "
                f"cache={self.cache!r})")


def _rotated(Wc, props):
    """[Wc] plus clones, so that the copies span at least twice the L2 (timing.copies_for)."""
    tensors = [t for t in Wc if isinstance(t, torch.Tensor)]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    R = copies_for(nbytes, l2_bytes=props["l2"])
    out = [Wc]
    for _ in range(R - 1):
        cl = [t.clone() if isinstance(t, torch.Tensor) else t for t in Wc]
        if isinstance(Wc, CompressedWeight):
            out.append(CompressedWeight(cl, **Wc._kwargs()))
        else:
            out.append(type(Wc)(cl) if isinstance(Wc, (tuple, list)) else cl)
    return out


def _m_bucket(M):
    return 16 if M <= 16 else 32 if M <= 32 else 64 if M <= 64 else 128


def _stream_k_max_ctas(nS, nD):
    return max(1, min(65535, (9 * nS + 16 * nD) // 16))


def _splits(e, M, N, K, props, nsd):
    """The split values timed for one instance (bench/bench_kernels.py candidates())."""
    bn, bk = e["BLOCK_N"], e["BLOCK_K"]
    sms = props["sms"]
    if e["schedule"] == "sequential":
        return [1]
    if e["schedule"] == "stream_k":
        gs = [0, sms, 2 * sms]
        if nsd is not None:
            cap = _stream_k_max_ctas(*nsd)
            gs = [g for g in gs if g == 0 or g <= cap]
        return gs
    tiles = math.ceil(M / e["BLOCK_M"]) * (N // bn)
    hopper = props["cc"] >= 90
    return [s for s in SPLITS
            if s == 1 or not (tiles * s > 8 * sms or s > K // bk or (s > 8 and hopper))]


def _auto_split(e, M, N, K, props, nsd):
    """Python mirror of csrc/dispatch.cpp auto_split (used where the op cannot be asked)."""
    if e["schedule"] == "sequential":
        return 1
    if e["schedule"] == "stream_k":
        return 0
    ctas = math.ceil(M / e["BLOCK_M"]) * (N // e["BLOCK_N"])
    want = (3 * props["sms"] + 2 * ctas - 1) // (2 * ctas)
    max_split = max(1, (K // e["BLOCK_K"]) // 4)
    cap = 8 if props["cc"] >= 90 else 32
    return max(1, min(want, max_split, cap))


def _problem_str(p):
    return f"M={p['M']} N={p['N']} K={p['K']} {p['dtype']}"


def _check_sparse_arg(sparse_arg):
    if isinstance(sparse_arg, bool) or not isinstance(sparse_arg, int) or sparse_arg not in (0, 1):
        raise ValueError(f"sparse_arg must be 0 or 1 (the index of the sparse operand of X @ W.T), "
                         f"got {sparse_arg!r}")
    if sparse_arg == 0:
        raise NotImplementedError(
            "sparse_arg=0 (X, the activation, as the sparse operand) is not supported: stoicc's kernels "
            "put the PATCH-pruned weight in the sparse tensor-core operand, and activations are not "
            "PATCH-pruned. Pass the pruned weight as W with sparse_arg=1 (Y = X @ W.T); for a sparse "
            "first operand A of A @ B, call inspect(B.T, A) and transpose the result. See docs/inspector.md.")


def _check_inputs(X, W):
    for name, t in (("X", X), ("W", W)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D [N, K] (the nn.Linear weight layout), got shape {tuple(W.shape)}")
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D [M, K], got shape {tuple(X.shape)}; flatten leading dimensions "
                         "first (X.reshape(-1, K))")
    if W.dtype not in _DTYPE_NAMES:
        raise TypeError(f"W must be float16 or bfloat16, got dtype {W.dtype}")
    if X.dtype != W.dtype:
        raise TypeError(f"X and W must have the same dtype: X is {X.dtype}, W is {W.dtype}")
    if X.device != W.device:
        raise ValueError(f"X and W must be on the same device: X is on {X.device}, W on {W.device}")
    if X.shape[1] != W.shape[1]:
        raise ValueError(f"X has {X.shape[1]} columns but W has K={W.shape[1]} (W is [N, K], Y = X @ W.T)")
    if X.shape[0] < 1:
        raise ValueError("X has no rows (M=0): nothing to tune")
    N, K = W.shape
    for side, size in (("N", N), ("K", K)):
        if size % FINGERPRINT_BLOCK:
            raise ValueError(f"W side {side}={size} is not a multiple of {FINGERPRINT_BLOCK}: the kernels' tiles "
                             "are 64 or 128 wide and stoicc does not pad")
