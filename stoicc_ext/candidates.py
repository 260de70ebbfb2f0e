"""Candidate enumeration: which kernels ``inspect`` times for one problem, and which one the
built-in heuristic would pick without timing.

A candidate is a dict ``{schedule, config, ...}``: a built-in one also carries its instance
``entry`` (from ``list_instances()``) and ``split``; a user one its ``user_config``. The split
values here are also the ones bench/bench_kernels.py sweeps; the heuristic is the op's
``torch.ops.stoicc.default_config`` on a GPU, else its Python mirror.
"""
import math

import torch

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


def _stream_k_max_ctas(nS, nD):
    return max(1, min(65535, (9 * nS + 16 * nD) // 16))


def _splits(e, M, N, K, props, nsd):
    """The split values timed for one instance (and swept by bench/bench_kernels.py)."""
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
    # the heuristic's choice is always a candidate (when allowed): tuning never does worse
    heur = _op_heuristic(schedules, space, M, N, K, counts, props, out)
    if heur is not None:
        same = next((c for c in out if c["config"] == heur["config"]), None)
        if same is None:
            out.append(heur)
        else:
            same["heuristic"] = True
    for name, sch in schedules.items():
        if sch.builtin:
            continue
        for ucfg in sch.expand():
            cfg = _user_full_config(name, ucfg)
            if _allowed(cfg, space, None):
                out.append(dict(schedule=name, config=cfg, user_config=ucfg))
    return out


def _op_heuristic(schedules, space, M, N, K, counts, props, builtin_cands):
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
        sch = schedules.get(e["schedule"])
        if sch is None or not sch.builtin:
            continue
        filt_c = sch._filter_constraints()
        if not _allowed(cfg, space, ConfigSpace(filt_c) if filt_c else None):
            continue
        return dict(schedule=e["schedule"], config=cfg, entry=e, split=split, bm_fixed=False, heuristic=True)
    return None


def _heuristic_config(cands, M, N, K, counts, props):
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


def _no_candidate_message(schedules, space, M, N, K):
    tiles = [f"{bn}x{bk}" for bn, bk in TILE_PREFERENCE if not (N % bn or K % bk)]
    return (f"no candidate kernel for M={M} N={N} K={K}: schedules {sorted(schedules)}, "
            f"config space {space!r}, tile shapes that divide W: {tiles}, "
            f"compiled instances: {len(_instances())}"
            + ("" if _instances() else " (is the compiled extension loaded? stoicc_ext.extension_error)"))
