"""Candidate enumeration: which kernels ``inspect`` times for one problem, and which one the
built-in heuristic picks without timing.

The kernel schedules are enumerated together: per tile shape, only the token block (BLOCK_M)
nearest M is kept across all of them, unless the config space or the schedule fixes BLOCK_M. The
heuristic is the C++ one that spmm runs without a forced instance
(``torch.ops.stoicc.choose_config``), given the device's properties, so it answers the same on the
CPU as on the GPU it describes. Launcher schedules (densify, the user's) follow with their own
configs.
"""
from ..ops import choose_config
from .kernels import KernelSchedule, compiled_instances
from .library import default_schedules

__all__ = ["CANDIDATE_VERSION", "TILE_PREFERENCE", "candidates", "kernel_candidates", "heuristic_config"]

# Part of the cache key: bump when the enumeration changes. 2: candidates typed per schedule,
# tile maps from stoicc_ext.format.TileMap, the heuristic from choose_config on every device.
# 3: dense cuBLAS on the uncompressed weight is a candidate (a cached choice may be "dense").
CANDIDATE_VERSION = 3
# Tile shapes in the order the heuristic prefers them (largest first: fewest index entries).
TILE_PREFERENCE = ((128, 128), (128, 64), (64, 128), (64, 64))


def _m_bucket(M):
    """The token block the kernels are built for that fits M (the heuristic's choice)."""
    return 16 if M <= 16 else 32 if M <= 32 else 64 if M <= 64 else 128 if M < 1024 else 256


def _keeps_every_block(e, M):
    """At prefill sizes (M >= 128) the wgmma and wgmma2 instances (exact_sm) are few: every token
    block up to M is timed, since which one wins depends on M and the shape (128 at M = 512, 256 at M = 2048 on
    the H200). Below, they compete on the nearest token block like every instance."""
    return bool(e.get("exact_sm")) and 128 <= e["BLOCK_M"] <= M


def kernel_candidates(M, N, K, props, counts, schedules=None, space=None):
    """The candidates of the kernel schedules (default: all three, unrestricted): the nearest
    BLOCK_M per tile shape, each instance at its splits, and the heuristic's choice flagged.
    ``props``: a ``DeviceProps``; ``counts(bn, bk)``: W's (2:4, dense) tile counts or None."""
    if schedules is None:
        schedules = [s for s in default_schedules().values() if isinstance(s, KernelSchedule)]
    space_bm = space is not None and "BLOCK_M" in space.constraints
    want = _m_bucket(M)
    by_tile = {}
    for sch in schedules:
        bm_fixed = space_bm or "BLOCK_M" in sch.constraints
        for c in sch.instance_candidates(M, N, K, props, counts, space):
            by_tile.setdefault(c.tile, []).append((c, bm_fixed or _keeps_every_block(c.instance, M)))
    out = []
    for pairs in by_tile.values():
        free = [c for c, fixed in pairs if not fixed]
        best_d = min((abs(c.instance["BLOCK_M"] - want) for c in free), default=None)
        out.extend(c for c, fixed in pairs if fixed or abs(c.instance["BLOCK_M"] - want) == best_d)
    # the heuristic's choice is always a candidate: tuning never does worse
    heur = _heuristic(M, N, K, props, counts, out, {s.name: s for s in schedules}, space)
    if heur is not None:
        if not any(c is heur for c in out):
            out.append(heur)
        heur.heuristic = True
    return out


def _heuristic(M, N, K, props, counts, cands, schedules, space):
    """The C++ heuristic's choice among the kernel candidates of the preferred tile shape that
    has any: the enumerated candidate with its split, else a new one when its config is allowed,
    else the enumerated one of its instance with the nearest split. None without candidates."""
    by_tile = {}
    for c in cands:
        by_tile.setdefault(c.tile, []).append(c)
    for bn, bk in TILE_PREFERENCE:
        cs = by_tile.get((bn, bk))
        if not cs:
            continue
        nS, nD = counts(bn, bk) or (0, (N // bn) * (K // bk))
        indices = sorted({c.instance["index"] for c in cs})
        inst, split = choose_config(M, N, K, bn, bk, nS, nD, props, instances=indices)
        if inst < 0:
            continue
        same = [c for c in cs if c.instance["index"] == inst]
        exact = next((c for c in same if c.split == split), None)
        if exact is not None:
            return exact
        sch = schedules[same[0].instance["schedule"]]
        c = sch.candidate(same[0].instance, split)
        return c if sch.allows(c.config, space) else min(same, key=lambda c: abs(c.split - split))
    return None


def candidates(schedules, space, M, N, K, props, counts):
    """Every candidate of the Inspector's ``schedules`` (a dict of typed schedules), kernel
    schedules first, then the launcher schedules in their order."""
    kernels = [s for s in schedules.values() if isinstance(s, KernelSchedule)]
    out = kernel_candidates(M, N, K, props, counts, kernels, space) if kernels else []
    for sch in schedules.values():
        if not isinstance(sch, KernelSchedule):
            out.extend(sch.candidates(space))
    return out


def heuristic_config(cands):
    """The built-in heuristic's pick among the candidates (no timing); with launcher schedules
    only, the first candidate."""
    pick = next((c for c in cands if c.heuristic), cands[0] if cands else None)
    return None if pick is None else pick.config


def no_candidate_message(schedules, space, M, N, K):
    tiles = [f"{bn}x{bk}" for bn, bk in TILE_PREFERENCE if not (N % bn or K % bk)]
    return (f"no candidate kernel for M={M} N={N} K={K}: schedules {sorted(schedules)}, "
            f"config space {space!r}, tile shapes that divide W: {tiles}, "
            f"compiled instances: {len(compiled_instances())}"
            + ("" if compiled_instances() else " (is the compiled extension loaded? stoicc_ext.extension_error)"))
