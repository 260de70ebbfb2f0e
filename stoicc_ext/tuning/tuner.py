"""Timing the candidates: ``default_timer`` (the benchmark protocol of ``stoicc_ext.tuning.timing``), the
weight copies rotated past the L2, and the loop that compresses W once per tile shape (or user
compress key) and times every candidate on it."""
import contextlib
import json
import logging
import time

import torch

from .configs import canonical
from ..format.compressed import compress as _compress
from .report import _Progress, _describe, _problem_str
from .schedules import BUILTIN_SCHEDULES, _jsonable, _user_compress
from .timing import rotated_copies, time_graph

__all__ = ["default_timer"]

logger = logging.getLogger("stoicc_ext.inspector")


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


def _launch_fn(schedules, c, X, N, K):
    if "entry" in c:
        op = torch.ops.stoicc.spmm.default
        e = c["entry"]
        idx, split, bn, bk = e["index"], c["split"], e["BLOCK_N"], e["BLOCK_K"]
        return lambda *w: op(X, *w, None, N, K, bn, bk, idx, split)
    launcher, ucfg = schedules[c["schedule"]].launcher, c["user_config"]
    return lambda *w: launcher(X, *w, **ucfg)


def _tune(X, W, cands, props, problem, schedules, timer, verbose):
    """Time every candidate with ``timer(fn, args_list, config)``; returns (records, seconds)."""
    t0 = time.perf_counter()
    M, K = X.shape
    N = W.shape[0]
    groups = {}
    for c in cands:
        if "entry" in c:
            gk = ("builtin", c["entry"]["BLOCK_N"], c["entry"]["BLOCK_K"])
        else:
            sch = schedules[c["schedule"]]
            ccfg = canonical(c["user_config"])
            if sch.compressor is None:
                # the default compressor is stoicc's compress, which reads only the config's tile
                # shape: the same weight the built-in candidates of that shape read, compressed
                # once whatever compress_keys says
                gk = ("builtin", int(ccfg["BLOCK_N"]), int(ccfg["BLOCK_K"]))
            elif sch.compress_keys is not None:
                gk = ("user", sch.name) + tuple(repr(ccfg.get(k)) for k in sch.compress_keys)
            else:
                gk = ("user", sch.name, json.dumps(_jsonable(ccfg)))
        groups.setdefault(gk, []).append(c)
    n_tiles = len({(c["config"].get("BLOCK_N"), c["config"].get("BLOCK_K")) for c in cands})
    progress = _Progress(len(cands), f"{_problem_str(problem)} ({n_tiles} tile shapes)", verbose)
    records = []
    done = 0
    ctx = torch.cuda.device(W.device) if W.device.type == "cuda" else contextlib.nullcontext()
    with ctx:
        for gk, cs in groups.items():
            try:
                if gk[0] == "builtin":
                    Wc = _compress(W, gk[1], gk[2])
                else:
                    Wc = _user_compress(schedules[cs[0]["schedule"]], W, cs[0]["user_config"])
            except Exception as e:  # noqa: BLE001 - a failing compressor fails its candidates only
                for c in cs:
                    records.append(dict(schedule=c["schedule"], config=c["config"], ms=None,
                                        error=f"compress: {type(e).__name__}: {e}"))
                    done += 1
                progress.update(done)
                continue
            copies = rotated_copies(Wc, props["l2"]) if W.device.type == "cuda" else [Wc]
            args_list = [tuple(w) for w in copies]
            for c in cs:
                fn = _launch_fn(schedules, c, X, N, K)
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
