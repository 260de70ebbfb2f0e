"""Candidate enumeration: which kernels ``inspect`` times for one problem, and which one the
built-in heuristic would pick without timing.

A candidate is a dict ``{schedule, config, ...}``: a built-in one also carries its instance
``entry`` (from ``list_instances()``) and ``split``; a user one its ``user_config``. The split
values here are also the ones bench/bench_kernels.py sweeps. The heuristic is the C++ one that
spmm runs without a forced instance (``torch.ops.stoicc.choose_config``), given the device's
properties, so it answers the same on the CPU as on the GPU it describes.
"""
import math

import torch

from ..ops import choose_config, stream_k_max_ctas
from .configs import ConfigSpace
from .schedules import _builtin_config, _instances, _user_full_config

# split_k values tried (filtered per problem by _splits; bench/bench_kernels.py uses the same).
SPLITS = (1, 2, 3, 4, 6, 8, 12, 16)
# Bump when the candidate enumeration changes: it is part of the cache key.
CANDIDATE_VERSION = 1
# Tile shapes in the order the heuristic prefers them (largest first: fewest index entries).
TILE_PREFERENCE = ((128, 128), (128, 64), (64, 128), (64, 64))
# Nominal device (an H100 SXM) used to enumerate candidates when W is not on a GPU.
_NOMINAL = dict(name="cpu", sms=132, cc=90, smem_optin=232448, smem_per_sm=233472, l2=50 * 2 ** 20)


def _device_props(device):
    """What candidate enumeration needs of the device (nominal H100 values off the GPU)."""
    if device.type != "cuda":
        return dict(_NOMINAL, device_type=device.type)
    idx = device.index if device.index is not None else torch.cuda.current_device()
    p = torch.cuda.get_device_properties(idx)
    return dict(name=p.name, sms=int(p.multi_processor_count), cc=p.major * 10 + p.minor,
                smem_optin=p.shared_memory_per_block_optin, smem_per_sm=p.shared_memory_per_multiprocessor,
                l2=p.L2_cache_size, device_type="cuda", index=idx)


def _m_bucket(M):
    return 16 if M <= 16 else 32 if M <= 32 else 64 if M <= 64 else 128


def _splits(e, M, N, K, props, nsd):
    """The split values timed for one instance (and swept by bench/bench_kernels.py)."""
    bn, bk = e["BLOCK_N"], e["BLOCK_K"]
    sms = props["sms"]
    if e["schedule"] == "sequential":
        return [1]
    if e["schedule"] == "stream_k":
        gs = [0, sms, 2 * sms]
        if nsd is not None:
            cap = stream_k_max_ctas(*nsd)
            gs = [g for g in gs if g == 0 or g <= cap]
        return gs
    tiles = math.ceil(M / e["BLOCK_M"]) * (N // bn)
    hopper = props["cc"] >= 90
    return [s for s in SPLITS
            if s == 1 or not (tiles * s > 8 * sms or s > K // bk or (s > 8 and hopper))]


def _allowed(cfg, space, sch_filter):
    """Whether ``cfg`` is in the config space (None: any) and the schedule's filter (None: any)."""
    if space is not None and not space.allows(cfg):
        return False
    return sch_filter is None or sch_filter.allows(cfg)


def _candidates(schedules, space, M, N, K, props, counts):
    """Candidate dicts: {schedule, config, [instance entry, split | user config]}."""
    out = []
    space_bm = space is not None and "BLOCK_M" in space.constraints
    builtin = []
    for name, sch in schedules.items():
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
                if _allowed(cfg, space, filt):
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
    # the heuristic's choice is always a candidate: tuning never does worse
    heur = _op_heuristic(schedules, space, M, N, K, counts, props, out)
    if heur is not None:
        if not any(c is heur for c in out):
            out.append(heur)
        heur["heuristic"] = True
    for name, sch in schedules.items():
        if sch.builtin:
            continue
        for ucfg in sch.expand():
            cfg = _user_full_config(name, ucfg)
            if _allowed(cfg, space, None):
                out.append(dict(schedule=name, config=cfg, user_config=ucfg))
    return out


def _op_heuristic(schedules, space, M, N, K, counts, props, builtin_cands):
    """The C++ heuristic's choice among the built-in candidates of the preferred tile shape that
    has any, as a candidate flagged ``heuristic``: the enumerated one with its split, else a new
    one when its config is allowed, else the enumerated one of its instance with the nearest
    split. None without built-in candidates."""
    by_tile = {}
    for c in builtin_cands:
        by_tile.setdefault((c["entry"]["BLOCK_N"], c["entry"]["BLOCK_K"]), []).append(c)
    for bn, bk in TILE_PREFERENCE:
        cs = by_tile.get((bn, bk))
        if not cs:
            continue
        nS, nD = counts.get((bn, bk), (0, (N // bn) * (K // bk))) if counts else (0, (N // bn) * (K // bk))
        inst, split = choose_config(M, N, K, bn, bk, nS, nD, sm_count=props["sms"], cc=props["cc"],
                                    max_smem_optin=props["smem_optin"], max_smem_per_sm=props["smem_per_sm"],
                                    instances=sorted({c["entry"]["index"] for c in cs}))
        if inst < 0:
            continue
        same = [c for c in cs if c["entry"]["index"] == inst]
        exact = next((c for c in same if c["split"] == split), None)
        if exact is not None:
            return exact
        e = same[0]["entry"]
        cfg = _builtin_config(e, split)
        sch = schedules[e["schedule"]]
        filt_c = sch._filter_constraints()
        if _allowed(cfg, space, ConfigSpace(filt_c) if filt_c else None):
            return dict(schedule=e["schedule"], config=cfg, entry=e, split=split, bm_fixed=False)
        return min(same, key=lambda c: abs(c["split"] - split))
    return None


def _heuristic_config(cands):
    """The built-in heuristic's pick among the candidates (no timing); with user schedules
    only, the first candidate."""
    for c in cands:
        if c.get("heuristic"):
            return c["config"]
    return cands[0]["config"] if cands else None


def _no_candidate_message(schedules, space, M, N, K):
    tiles = [f"{bn}x{bk}" for bn, bk in TILE_PREFERENCE if not (N % bn or K % bk)]
    return (f"no candidate kernel for M={M} N={N} K={K}: schedules {sorted(schedules)}, "
            f"config space {space!r}, tile shapes that divide W: {tiles}, "
            f"compiled instances: {len(_instances())}"
            + ("" if _instances() else " (is the compiled extension loaded? stoicc_ext.extension_error)"))
