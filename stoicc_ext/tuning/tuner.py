"""Timing the candidates: ``default_timer`` (the benchmark protocol of ``stoicc_ext.tuning.timing``),
the weight copies rotated past the L2, and the loop that compresses W once per compress key of
the candidates and times every candidate on it."""
import contextlib
import logging
import time

import torch

from .kernels import is_kernel_config
from .report import _Progress, _describe, _problem_str
from .timing import rotated_copies, time_graph

__all__ = ["default_timer"]

logger = logging.getLogger("stoicc.inspector")


def default_timer(fn, args_list, config=None, *, warmup=3, repeats=15):
    """Milliseconds per call of ``fn(*args)`` over the rotated argument sets (time_graph). A
    launcher that cannot be captured in a CUDA graph is timed eagerly instead (logged); a compiled
    instance always can, so its failure is raised."""
    try:
        return time_graph(fn, args_list, warmup=warmup, repeats=repeats)
    except Exception as e:  # noqa: BLE001
        if config is not None and is_kernel_config(config):
            raise
        torch.cuda.synchronize()
        logger.warning("stoicc: %s could not be captured in a CUDA graph (%s: %s); timing it eagerly",
                       config, type(e).__name__, e)
        return time_graph(fn, args_list, warmup=warmup, repeats=repeats, use_graph=False)


def _failed(c, error):
    return dict(schedule=c.schedule.name, config=c.config, ms=None, error=error)


def tune(X, W, cands, props, problem, timer, verbose):
    """Time every candidate with ``timer(fn, args_list, config)``; returns (records, seconds)."""
    t0 = time.perf_counter()
    M, K = X.shape
    N = W.shape[0]
    groups = {}
    for c in cands:
        groups.setdefault(c.schedule.compress_key(c), []).append(c)
    n_tiles = len({c.tile for c in cands})
    progress = _Progress(len(cands), f"{_problem_str(problem)} ({n_tiles} tile shapes)", verbose)
    records = []
    ctx = torch.cuda.device(W.device) if W.device.type == "cuda" else contextlib.nullcontext()
    with ctx:
        for cs in groups.values():
            try:
                Wc = cs[0].schedule.compress(W, cs[0])
            except Exception as e:  # noqa: BLE001 - a failing compressor fails its candidates only
                records.extend(_failed(c, f"compress: {type(e).__name__}: {e}") for c in cs)
                progress.update(len(records))
                continue
            copies = rotated_copies(Wc, props.l2_bytes) if W.device.type == "cuda" else [Wc]
            args_list = [tuple(w) for w in copies]
            for c in cs:
                fn = c.schedule.launch_fn(c, X, N, K)
                try:
                    rec = dict(schedule=c.schedule.name, config=c.config, ms=float(timer(fn, args_list, c.config)))
                    logger.debug("stoicc:   %s: %.2f us", _describe(c.config), rec["ms"] * 1e3)
                except Exception as e:  # noqa: BLE001 - record and go on
                    rec = _failed(c, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                    logger.warning("stoicc: candidate %s failed: %s", _describe(c.config), rec["error"])
                records.append(rec)
                progress.update(len(records))
            del copies, args_list, Wc
    tuning_s = time.perf_counter() - t0
    ok = [r for r in records if r.get("ms") is not None]
    if ok:
        b = min(ok, key=lambda r: r["ms"])
        progress.close(f"chose {_describe(b['config'])} ({b['ms'] * 1e3:.2f} us) in {tuning_s:.2f} s")
    return records, tuning_s
