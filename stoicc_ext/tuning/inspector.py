"""The Inspector: autotuning of ``Y = X @ W.T`` over the compiled kernel instances and user
schedules.

    import stoicc_ext as STOICC
    inspector = STOICC.Inspector(use_default_configs=True)
    executor, best_config = inspector.inspect(X, W, sparse_arg=1)
    Wc = inspector.compress(W, best_config)
    Y = executor(X, *Wc, **best_config)          # one torch.ops.stoicc.spmm call

``inspect`` reads top-down: the cache key (W's tile-map fingerprint, the problem, the GPU, the
schedules), the cache, the candidates (``tuning.candidates``), their timing (``tuning.tuner``,
with ``stoicc_ext.tuning.timing.time_graph``: CUDA graph, weight copies rotated past the L2,
median of repeats, the protocol of the benchmarks) and the executor of the fastest, which the
schedule that owns it builds (``tuning.schedules``, ``tuning.kernels``, ``tuning.densify``).
Results are cached in memory and on disk (``stoicc_ext.tuning.cache``). See docs/inspector.md.
"""
import functools
import json
import logging
import math
import sys
import time
import warnings
from typing import Any, Callable

import torch

try:
    from torch._subclasses.fake_tensor import FakeTensor as _FakeTensor
except Exception:  # noqa: BLE001 - private module; only used to recognise tracing
    _FakeTensor = ()

from .._version import __version__
from ..format.compressed import _DTYPE_NAMES, compress
from ..format.tile_map import FINE_TILE, TileMap
from ..ops import manifest
from . import cache as tuning_cache
from .candidates import CANDIDATE_VERSION, candidates, heuristic_config, no_candidate_message
from .configs import ConfigSpace, create_configs
from .dense import DENSE_CONFIG, DenseWeight, dense_executor, is_dense_config
from .device import device_props
from .library import default_schedules, tuned_schedule
from .report import PROGRESS_MIN, InspectReport, _describe, _problem_str, _why
from .schedules import _qualname
from .tuner import default_timer, tune

__all__ = ["Inspector"]

logger = logging.getLogger("stoicc.inspector")

_WARNED = set()


def _warn_once(tag, msg):
    if tag not in _WARNED:
        _WARNED.add(tag)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


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


# --------------------------------------------------------------------------------------
# The Inspector
# --------------------------------------------------------------------------------------

class Inspector:
    """Autotunes ``Y = X @ W.T`` for one weight over kernel instances and schedules.

    Arguments:
      use_default_configs: include the built-in schedules ("sequential", "split_k", "stream_k")
        with every compiled instance of this build, the library's "densify" schedule
        (stoicc_ext.tuning.densify: expand the weight, then cuBLAS; it wins at prefill sizes) and
        "dense" (stoicc_ext.tuning.dense: cuBLAS on W uncompressed; where it wins, W stays dense).
      schedules: dict name -> ``Schedule``; user schedules are timed side by side with the
        built-in ones; a built-in name with ``Schedule()`` (no launcher) restricts that
        built-in schedule by its ``configs``; a user schedule under a built-in name replaces it.
      cache: None (default: memory + disk unless STOICC_DISABLE_CACHE=1), True (same), "memory"
        (no disk), False (no cache).
      timer: ``timer(fn, args_list, config) -> ms`` (default: ``default_timer``, the benchmark
        protocol). Injectable for tests or other protocols; a custom timer is part of the cache key.
      repeats, warmup: for the default timer. verbose: progress and the summary on stderr (default off).
      cache_dir: overrides STOICC_CACHE_DIR.
    """

    def __init__(self, use_default_configs: bool = True, schedules: dict[str, Any] | None = None,
                 cache: bool | str | None = None, *, timer: Callable[..., float] | None = None, repeats: int = 15,
                 warmup: int = 3, verbose: bool = False, cache_dir: str | None = None) -> None:
        self.schedules = default_schedules() if use_default_configs else {}
        if schedules is not None:
            if not isinstance(schedules, dict):
                raise TypeError(f"schedules must be a dict of name -> Schedule, got {type(schedules).__name__}")
            for name, sch in schedules.items():
                self.schedules[str(name)] = tuned_schedule(str(name), sch)
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

    def set_configs(self, space: ConfigSpace | None = None, **constraints: Any) -> "Inspector":
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

    def summary(self) -> str:
        """The readable summary of the last ``inspect``."""
        return "no inspect yet" if self.last_report is None else self.last_report.summary()

    def compress(self, W: torch.Tensor, best_config: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """The compressed weight that ``best_config``'s executor reads (a CompressedWeight for the
        library's schedules; a ``DenseWeight``, W kept as it is, for the dense schedule; the user
        compressor's tuple for a user schedule)."""
        if not isinstance(best_config, dict):
            raise TypeError(f"best_config must be a config dict, got {type(best_config).__name__}")
        if is_dense_config(best_config):      # also without the dense schedule: inspect's no-2:4-tile answer
            return DenseWeight(W)
        sch = self.schedules.get(best_config.get("schedule"))
        return compress(W, best_config) if sch is None else sch.compress_config(W, best_config)

    # ---- inspect ---------------------------------------------------------------------

    def inspect(self, X: torch.Tensor, W: torch.Tensor,
                sparse_arg: int = 1) -> tuple[Callable[..., torch.Tensor], dict[str, Any]]:
        """Tune ``Y = X @ W.T`` for this X shape and this W; returns ``(executor, best_config)``.

        X: ``[M, K]``, W: ``[N, K]`` (the ``nn.Linear`` layout), same fp16/bf16 dtype and device.
        ``sparse_arg=1``: W (the second operand) is the PATCH-pruned one. ``sparse_arg=0`` (X
        sparse) is not supported: NotImplementedError (docs/inspector.md says why). A W with no
        2:4 tile gets the dense executor (``F.linear``, config ``{"schedule": "dense"}``) untimed.
        """
        t0 = time.perf_counter()
        _check_sparse_arg(sparse_arg)
        _check_inputs(X, W)
        M, K = X.shape
        N = W.shape[0]
        forbidden = _tuning_forbidden(W)
        tiles = TileMap.of(W, compute=forbidden is None)     # None during capture: W is not read
        identity = tuning_cache.device_identity(W.device)
        problem = dict(M=M, N=N, K=K, dtype=_DTYPE_NAMES[W.dtype], device=identity[0], sms=identity[1] or None)
        if tiles is not None and not tiles.any_24:
            return self._dense_result(problem, t0, f"W has no 2:4 tile (every {FINE_TILE}x{FINE_TILE} tile is "
                                      "dense or empty): the stoicc kernels would skip nothing, so W stays dense "
                                      "and runs on cuBLAS (F.linear)")

        # 1. the cache. The key fixes the candidates (schedules, config space, GPU, candidate
        # version); a record read from disk is untrusted input: its choice must be one of them.
        props = device_props(W.device)        # host queries only: fine during capture
        counts = tiles.counts if tiles is not None else (lambda bn, bk: None)
        enumerate_candidates = functools.partial(candidates, self.schedules, self.config_space, M, N, K, props,
                                                 counts)
        use_mem, use_disk = self._cache_modes()
        material = key = None
        if tiles is not None and (use_mem or use_disk):
            material = self._key_material(M, N, K, W.dtype, identity, tiles.fingerprint)
            key = tuning_cache.make_key(material)
        if key is not None and not (tuning_cache.force_retune() and forbidden is None):
            hit = self._cached(key, material, problem, N, K, use_mem, use_disk, forbidden, t0, enumerate_candidates)
            if hit is not None:
                return hit

        # 2. the candidates
        cands = enumerate_candidates()
        if not cands:
            raise ValueError(no_candidate_message(self.schedules, self.config_space, M, N, K))
        if forbidden is not None:
            _warn_once((forbidden, "heuristic"), f"stoicc: Inspector.inspect called during {forbidden}: not tuning; "
                       "using the built-in heuristic (torch.ops.stoicc.choose_config). Call inspect before "
                       "capturing/compiling to get a tuned choice.")
            return self._heuristic_result(problem, cands, N, K, t0,
                                          f"{forbidden}: no timing allowed, no cached choice; built-in heuristic")
        if W.device.type != "cuda" and self.timer is None:
            return self._heuristic_result(problem, cands, N, K, t0,
                                          f"W is on {W.device.type}: no timing possible (CUDA events); built-in "
                                          "heuristic's choice, not cached. The CPU runs the reference op.")

        # 3. their timing
        timer = self.timer or functools.partial(default_timer, warmup=self.warmup, repeats=self.repeats)
        records, tuning_s = tune(X, W, cands, props, problem, timer, self.verbose)
        ok = [r for r in records if r.get("ms") is not None]
        if not ok:
            errs = "; ".join(f"{_describe(r['config'])}: {r['error']}" for r in records[:5])
            raise RuntimeError(f"stoicc: every candidate failed to run ({len(records)}): {errs}")
        best = min(ok, key=lambda r: r["ms"])
        heur = heuristic_config(cands)
        why = _why(best, ok, heur)
        choice = dict(schedule=best["schedule"], config=best["config"])
        path = None
        if key is not None:
            path = tuning_cache.store(key, material, dict(choice=choice, candidates=records, why=why,
                                                          tuning_s=tuning_s, created=time.time(),
                                                          library=__version__),
                                      memory=use_mem, disk=use_disk, directory=self.cache_dir)

        # 4. the executor of the fastest
        ex, cfg = self.schedules[best["schedule"]].bind(best["config"], N, K)
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

    def _cached(self, key, material, problem, N, K, use_mem, use_disk, forbidden, t0, enumerate_candidates):
        """``(executor, config)`` of the cached choice, bound to the schedules given now; None on a
        miss, when the record no longer fits them, or when a disk record holds values no tuning
        could have written (warned; the caller tunes again and rewrites the file)."""
        rec, src = tuning_cache.lookup(key, material, memory=use_mem, disk=use_disk, directory=self.cache_dir)
        if rec is None:
            return None
        if src == "disk":
            bad = _bad_record(rec, enumerate_candidates())
            if bad:
                warnings.warn(f"stoicc: ignoring tuning-cache file {tuning_cache.path_for(key, self.cache_dir)} "
                              f"({bad}); tuning again", RuntimeWarning, stacklevel=3)
                return None
        choice = rec["choice"]
        sch = self.schedules.get(choice.get("schedule"))
        bound = sch.bind(choice["config"], N, K) if sch is not None and isinstance(choice.get("config"), dict) \
            else None
        if bound is None:
            logger.info("stoicc: cache record %s no longer matches the schedules given; tuning again", key[:12])
            return None
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

    def _dense_result(self, problem, t0, why):
        """The ``dense`` schedule's executor, without timing (W has no 2:4 tile)."""
        self.last_report = InspectReport(problem, "no 2:4 tile", dict(DENSE_CONFIG), [], time.perf_counter() - t0,
                                         why)
        logger.info("stoicc: %s: %s", _problem_str(problem), why)
        return dense_executor(), dict(DENSE_CONFIG)

    def _heuristic_result(self, problem, cands, N, K, t0, why):
        cand = next(c for c in cands if c.config == heuristic_config(cands))
        ex, cfg = cand.schedule.bind(cand.config, N, K)
        self.last_report = InspectReport(problem, "heuristic", cfg,
                                         [dict(schedule=c.schedule.name, config=c.config, ms=None) for c in cands],
                                         time.perf_counter() - t0, why, heuristic=cfg)
        logger.info("stoicc: %s: %s -> %s", _problem_str(problem), why, _describe(cfg))
        return ex, cfg

    def __repr__(self):
        return (f"Inspector(schedules={list(self.schedules)}, config_space={self.config_space!r}, "
                f"cache={self.cache!r})")


def _bad_record(rec, cands):
    """Why a cache record's values cannot be trusted (a string), or None. Its choice must be one of
    the candidates its key fixes, so a bad SPLIT_K, instance or schedule never reaches an op; its
    timings must be a list of records with a finite ``ms`` or none, so reports can rank them."""
    choice = rec["choice"]
    options = [(c.schedule.name, tuning_cache._jsonable(c.config)) for c in cands]
    if (choice.get("schedule"), choice.get("config")) not in options:
        return (f"its choice {_preview(choice)} is not one of the {len(options)} candidates of this "
                "problem (edited or written by another build)")
    for r in rec["candidates"]:
        if not isinstance(r, dict) or not isinstance(r.get("config"), dict) or not _valid_ms(r.get("ms")):
            return f"a timing record is malformed: {_preview(r)}"
    return None


def _valid_ms(ms):
    return ms is None or (type(ms) in (int, float) and math.isfinite(ms) and ms >= 0)   # type(): not a bool


def _preview(obj, limit=120):
    """``obj`` as JSON, cut to ``limit`` characters (a poisoned record may be large)."""
    text = json.dumps(obj, sort_keys=True, default=repr)
    return text if len(text) <= limit else text[:limit] + "..."


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
        if size % FINE_TILE:
            raise ValueError(f"W side {side}={size} is not a multiple of {FINE_TILE}: the kernels' tiles "
                             "are 64 or 128 wide and stoicc does not pad")
