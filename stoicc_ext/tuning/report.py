"""What ``inspect`` tells the user: ``InspectReport`` (the readable summary of one call), the
one-line descriptions of configs used in logs and summaries, the "why" of a choice, and the
progress lines printed on stderr while candidates are timed."""
import json
import sys
import time

from .._logging import _tqdm
from .configs import canonical
from .dense import DENSE
from .densify import DENSIFY
from .kernels import is_kernel_config

__all__ = ["InspectReport"]

PROGRESS_MIN = 8            # show progress when more candidates than this are timed


def _problem_str(p):
    return f"M={p['M']} N={p['N']} K={p['K']} {p['dtype']}"


def _kernel_name(c):
    """The kernel part of a canonical config: a compiled instance with its split, densify with its
    tile shape, or None for a user schedule."""
    if is_kernel_config(c):
        return f"{c['instance']} SPLIT_K={'auto' if c.get('SPLIT_K') == 0 else c.get('SPLIT_K')}"
    if c.get("schedule") == DENSIFY:
        return f"{c.get('BLOCK_N')}x{c.get('BLOCK_K')} tiles"
    if c.get("schedule") == DENSE:
        return "F.linear on W uncompressed"
    return None


def _describe(cfg):
    c = canonical(cfg)
    name = _kernel_name(c)
    if name is not None:
        return f"{c['schedule']:<10} {name}"
    user = {k: v for k, v in cfg.items() if k != "schedule" and k not in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    return f"{c.get('schedule', '?'):<10} (user) {json.dumps(user, sort_keys=True, default=repr)}"


def _short(cfg):
    """One config in a few words, for reprs, reports and logs ("-" for none)."""
    if not cfg:
        return "-"
    c = canonical(cfg)
    if is_kernel_config(c):
        return _kernel_name(c).replace(" SPLIT_K=", "/SPLIT_K=")
    return " ".join(_describe(cfg).split())


def _why(best, ok, heur):
    """Why ``best`` was chosen among the timed records ``ok`` (``heur``: the heuristic's config)."""
    parts = [f"fastest of {len(ok)} timed candidates ({best['ms'] * 1e3:.2f} us)"]
    rest = sorted((r for r in ok if r is not best), key=lambda r: r["ms"])
    if best["schedule"] == DENSE:
        parts[0] = (f"dense cuBLAS on W uncompressed (F.linear) is the fastest of {len(ok)} timed candidates "
                    f"({best['ms'] * 1e3:.2f} us): W stays dense")
        if rest:
            parts.append(f"the best stoicc candidate, {_short(rest[0]['config'])}, measured "
                         f"{rest[0]['ms'] * 1e3:.2f} us ({(rest[0]['ms'] / best['ms'] - 1) * 100:+.1f}%)")
        return "; ".join(parts)
    dense = next((r for r in ok if r["schedule"] == DENSE), None)
    if dense is not None:
        parts.append(f"dense cuBLAS on W uncompressed {(dense['ms'] / best['ms'] - 1) * 100:+.1f}%")
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


class _Progress:
    def __init__(self, total, label, enabled):
        self.total, self.label = total, label
        self.enabled = enabled and total > PROGRESS_MIN
        self.tty = self.enabled and getattr(sys.stderr, "isatty", lambda: False)()
        self.next_mark = 0.25
        self.t0 = time.perf_counter()
        self.bar = None
        if self.enabled:
            print(f"stoicc: tuning {label}: {total} candidates", file=sys.stderr, flush=True)
            tqdm = _tqdm() if self.tty else None
            if tqdm is not None:        # a tqdm bar on a terminal; the hand-drawn one without tqdm
                self.bar = tqdm(total=total, unit="cand", file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(self, done):
        if not self.enabled:
            return
        frac = done / self.total
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif self.tty:
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
            if self.bar is not None:
                self.bar.close()
            elif self.tty:
                print(file=sys.stderr)
            print(f"stoicc: {line}", file=sys.stderr, flush=True)


class InspectReport:
    """What one ``inspect`` call did: problem, source of the choice, all candidate timings.

    ``source`` is "tuned", "memory cache", "disk cache", "heuristic" or "no 2:4 tile" (the dense
    executor, untimed); ``str(report)`` (and
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

    def summary(self, top: int = 5) -> str:
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
                tile = f"{cc['BLOCK_N']}x{cc.get('BLOCK_K', '?')}" if "BLOCK_N" in cc else "-"
                lines.append(f"  {i + 1:>4} {c['ms'] * 1e3:>9.2f} {c['ms'] / best:>8.3f}  {tile:<7}  "
                             f"{_describe(c['config'])}")
        failed = [c for c in self.candidates if c.get("error")]
        if failed:
            lines.append(f"  {len(failed)} candidate(s) failed, e.g. {_describe(failed[0]['config'])}: "
                         f"{failed[0]['error']}")
        cc = canonical(self.chosen)
        lines.append(f"chosen: {_describe(self.chosen)}" + (f", BLOCK_M={cc.get('BLOCK_M')} tile {cc['BLOCK_N']}x"
                                                              f"{cc.get('BLOCK_K')}" if "BLOCK_N" in cc else ""))
        lines.append(f"why: {self.why}")
        if self.cache_path:
            lines.append(f"cache: {self.cache_path}")
        return "\n".join(lines)

    __str__ = summary

    def __repr__(self):
        return f"<InspectReport {self.source}: {_describe(self.chosen)}>"
