"""The kernel and end-to-end targets, counted from a benchmark's JSON.

This reads what ``bench_kernels.py`` and ``e2e.py`` wrote and prints, for each target, how many
cases meet it and which do not, so that every session counts the same way.

    python -m bench.check_targets bench/results/kernels_H200.json
    python -m bench.check_targets bench/results/e2e_H200.json
    python -m bench.check_targets --markdown bench/results/kernels_*.json     # a table per file

Kernel targets (fp16 records; "table shapes": the ``llama`` group of bench/shapes.py):
- M = 16 on the table shapes: speedup over cuBLAS of at least 1.70 / 1.55 / 1.40 / 1.25 / 1.00x at
  f = 1.0 / 0.9 / 0.7 / 0.5 / 0.0, and a time of at most compressed bytes / (0.85 x read-only
  ceiling) + 1.5 us per record. The read-only ceiling is the file's ``read_tbps`` (an eager
  ``a.sum()`` over 2 GiB, measured by ``bench_kernels.py`` in the same process); a file without
  it (older tables) is held to the read-only figure known for its GPU (``KNOWN_READ_TBPS``), or
  to the H100's 2.99 TB/s device copy, and the target's name says so.
- M = 1 and 32 within 10 % of the M = 16 bandwidth on the same weight, M = 64 within 20 %.
- Small models (groups ``small``, ``small_kv``, ``gemma``) at M = 16: at least 1.0x at f >= 0.5
  and 1.3x at f = 1.0.
- Prefill, M = 2048 and 512 on the table shapes: at least 1.50 / 1.35 / 1.20 / 1.10 / 0.97x at
  f = 1.0 / 0.9 / 0.7 / 0.5 / 0.0, and at f = 1.0 faster than cuSPARSELt's kernel time.
- Eager host cost of one ``torch.ops.stoicc.spmm`` call at most 2 us above ``F.linear`` (the
  file's ``host`` rows).
"""
import argparse
import json
import os
import sys

if __package__ in (None, ""):   # run as a script: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import shapes as shape_table  # noqa: E402
from stoicc_ext.nn.agreement import LOGITS_RTOL  # noqa: E402

# M = 16 speedup over cuBLAS per 2:4-tile fraction ("never slower" at f = 0), table shapes.
M16_SPEEDUP = {1.0: 1.70, 0.9: 1.55, 0.7: 1.40, 0.5: 1.25, 0.0: 1.00}
# M = 16 bandwidth: time <= compressed bytes / (BW_FRACTION x read-only ceiling) + BW_FIXED_US.
BW_FRACTION = 0.85
BW_FIXED_US = 1.5
# Read-only ceilings measured outside a table, for files that do not record their own (TB/s).
KNOWN_READ_TBPS = (("H200", 4.24),)      # an eager fp16 a.sum() over 2 GiB, 2026-12-02
FALLBACK_READ_TBPS = 2.99                # the H100's device copy, for files from other GPUs
# M whose bandwidth must stay near M = 16's on the same weight (ratio of times, M16 / M).
M_NEAR_16 = {1: 0.90, 32: 0.90, 64: 0.80}
TABLE_GROUPS = ("llama",)
SMALL_GROUPS = ("small", "small_kv", "gemma")
SMALL_SPEEDUP = ((0.5, 1.00), (1.0, 1.30))   # (from this f on, at least this speedup)
PREFILL_MS = (2048, 512)
PREFILL_SPEEDUP = {1.0: 1.50, 0.9: 1.35, 0.7: 1.20, 0.5: 1.10, 0.0: 0.97}
HOST_EXTRA_US = 2.0
# End to end: speedup per sparsity (percent), and the format's weight-byte limit for
# Llama-2-7B (2-bit metadata per kept value; embeddings and lm_head dense), to within 1 %.
E2E_SPEEDUP = {25: 1.30, 35: 1.45, 45: 1.60, 0: 1.00}
E2E_WEIGHT_LIMIT = {25: 0.790, 35: 0.706, 45: 0.622}
E2E_WEIGHT_TOL = 0.01
# The in-model bandwidth of the stoicc linears of a decode step (compressed bytes over their
# profiled time) at these sparsities.
E2E_LINEAR_TBPS = 3.4
E2E_LINEAR_TBPS_AT = (25, 35, 45)
E2E_LONG_SPEEDUP = {0: 1.00, 45: 1.25}


def _case(r):
    return f"{r['n']}x{r['k']} M={r['m']} f={r['frac']}"


def _target(name, rows, ok, detail):
    """One target: ``rows`` the cases it covers, ``ok(row)`` whether a case meets it,
    ``detail(row)`` what to print for a case that does not."""
    failed = [r for r in rows if not ok(r)]
    return dict(target=name, met=len(rows) - len(failed), cases=len(rows),
                missed=[detail(r) for r in failed])


def _speedup(name, rows, want):
    """A speedup-over-cuBLAS target over kernel records."""
    return _target(f"{name}: speedup >= {want:.2f}x", rows, lambda r: r["speedup"] >= want,
                   lambda r: f"{_case(r)}: {r['speedup']:.3f}x")


def group_of(r):
    """A record's shape group: recorded, else looked up in bench/shapes.py by N x K."""
    return r.get("group") or shape_table.lookup(r["n"], r["k"]).group


def ceilings(data):
    """{read_tbps, how}: the read-only ceiling the bandwidth target is set against."""
    if data.get("read_tbps"):
        return dict(read_tbps=data["read_tbps"], how="this run's read-only reduction")
    gpu = data.get("gpu") or ""
    for key, tbps in KNOWN_READ_TBPS:
        if key in gpu:
            return dict(read_tbps=tbps, how=f"not recorded in the file: the {key}'s measured read-only figure")
    return dict(read_tbps=FALLBACK_READ_TBPS, how="not recorded in the file: the H100's 2.99 TB/s device copy")


def bandwidth_bound_ms(r, data):
    """The time the M = 16 bandwidth target allows for record ``r``: its compressed bytes at
    BW_FRACTION of the read-only ceiling, plus BW_FIXED_US."""
    tbps = ceilings(data)["read_tbps"]
    return r["compressed_bytes"] / (BW_FRACTION * tbps * 1e12) * 1e3 + BW_FIXED_US * 1e-3


def kernel_targets(data):
    """The kernel targets over the fp16 records (and host rows) of a ``kernels_<gpu>.json``."""
    recs = [r for r in data["records"] if r["dtype"] == "float16"]
    table = [r for r in recs if group_of(r) in TABLE_GROUPS]
    small = [r for r in recs if group_of(r) in SMALL_GROUPS]
    at = {(r["n"], r["k"], r["m"], r["frac"]): r for r in recs}
    out = []
    m16 = [r for r in table if r["m"] == 16]
    for f, want in M16_SPEEDUP.items():
        out.append(_speedup(f"M = 16, f = {f}", [r for r in m16 if r["frac"] == f], want))
    ceil = ceilings(data)
    rows = [r for r in m16 if "compressed_bytes" in r]
    out.append(_target(
        f"M = 16: time <= compressed bytes / ({BW_FRACTION} x {ceil['read_tbps']:.2f} TB/s) + {BW_FIXED_US} us "
        f"({ceil['how']})", rows, lambda r: r["stoicc_ms"] <= bandwidth_bound_ms(r, data),
        lambda r: f"{_case(r)}: {r['stoicc_ms'] * 1e3:.1f} us > {bandwidth_bound_ms(r, data) * 1e3:.1f} us"))
    for m, want in M_NEAR_16.items():
        # the same weight bytes at both M, so bandwidth against M = 16 is the M = 16 time over
        # this M's time (X and Y bytes, which differ, are left out on purpose)
        rows = [r for r in table if r["m"] == m and (r["n"], r["k"], 16, r["frac"]) in at]

        def ratio(r):
            return at[(r["n"], r["k"], 16, r["frac"])]["stoicc_ms"] / r["stoicc_ms"]
        out.append(_target(f"M = {m}: bandwidth >= {want:.2f} of M = 16's", rows,
                           lambda r, q=ratio, w=want: q(r) >= w,
                           lambda r, q=ratio: f"{_case(r)}: {q(r):.2f}"))
    s16 = [r for r in small if r["m"] == 16]
    for f_min, want in SMALL_SPEEDUP:
        out.append(_speedup(f"small models, M = 16, f {'>=' if f_min < 1 else '='} {f_min}",
                            [r for r in s16 if r["frac"] >= f_min], want))
    for m in PREFILL_MS:
        for f, want in PREFILL_SPEEDUP.items():
            out.append(_speedup(f"M = {m}, f = {f}", [r for r in table if r["m"] == m and r["frac"] == f], want))
        rows = [r for r in table if r["m"] == m and r.get("cusparselt_ms")]
        out.append(_target(f"M = {m}, f = 1.0: faster than cuSPARSELt", rows,
                           lambda r: r["stoicc_ms"] < r["cusparselt_ms"],
                           lambda r: f"{_case(r)}: {r['stoicc_ms'] * 1e3:.1f} us vs {r['cusparselt_ms'] * 1e3:.1f} us"))
    host = data.get("host") or []
    out.append(_target(f"eager host cost: stoicc.spmm <= F.linear + {HOST_EXTRA_US} us", host,
                       lambda h: h["extra_us"] <= HOST_EXTRA_US,
                       lambda h: f"{h['n']}x{h['k']} M={h['m']}: {h['extra_us']:+.1f} us"))
    return [t for t in out if t["cases"]]


def is_reference_setup(data):
    """Whether an e2e run is the reference set-up (the full 32-layer Llama-2-7B, batch 16, prompt
    128, 128 new tokens), the one the targets are stated for."""
    st = data.get("setup") or {}
    return (st.get("preset"), st.get("layers"), st.get("batch"), st.get("prompt"), st.get("new_tokens")) == \
        ("7b", 32, 16, 128, 128)


def e2e_targets(data):
    """The end-to-end targets over the records of an ``e2e_<gpu>.json``. The weight-byte
    limits are Llama-2-7B's, so they are counted only for the reference set-up; the speedups are
    counted for any run (the target names say when the run is not the reference set-up). Records of
    the long-prompt row (``row == "long"``) have their own speedup targets; the in-model
    bandwidth of the stoicc linears is read from each record's ``decode_split``."""
    main = [r for r in data["records"] if r.get("row", "main") == "main"]
    long = [r for r in data["records"] if r.get("row") == "long"]
    recs = [r for r in main if r.get("speedup") is not None]
    ref = is_reference_setup(data)
    note = "" if ref else " (not the reference set-up)"
    out = []
    for s, want in E2E_SPEEDUP.items():
        rows = [r for r in recs if r["sparsity"] == s]
        out.append(_target(f"{s} %: end-to-end speedup >= {want:.2f}x{note}", rows,
                           lambda r, w=want: r["speedup"] >= w,
                           lambda r: f"{r['sparsity']} %: {r['speedup']:.3f}x"))
    for s, limit in (E2E_WEIGHT_LIMIT if ref else {}).items():
        rows = [r for r in main if r["sparsity"] == s]
        out.append(_target(f"{s} %: weight bytes within 1 % of the format's {limit:.3f}", rows,
                           lambda r, lim=limit: abs(r["weight_bytes_ratio"] / lim - 1) <= E2E_WEIGHT_TOL,
                           lambda r: f"{r['sparsity']} %: {r['weight_bytes_ratio']:.3f}"))
    rows = [r for r in main if r["sparsity"] in E2E_LINEAR_TBPS_AT
            and (r.get("decode_split") or {}).get("stoicc_linear_tbps") is not None]
    out.append(_target(f"decode-step stoicc linears >= {E2E_LINEAR_TBPS} TB/s over their compressed bytes{note}",
                       rows, lambda r: r["decode_split"]["stoicc_linear_tbps"] >= E2E_LINEAR_TBPS,
                       lambda r: f"{r['sparsity']} %: {r['decode_split']['stoicc_linear_tbps']:.2f} TB/s"))
    for s, want in E2E_LONG_SPEEDUP.items():
        rows = [r for r in long if r["sparsity"] == s and r.get("speedup") is not None]
        out.append(_target(f"long prompt, {s} %: speedup >= {want:.2f}x", rows, lambda r, w=want: r["speedup"] >= w,
                           lambda r: f"{r['sparsity']} %: {r['speedup']:.3f}x"))
    rows = [r for r in main + long if r.get("agreement_ok") is not None]
    out.append(_target(f"agreement with dense: the first token of every sequence, logits within {LOGITS_RTOL:g} x "
                       "max |logits| (stoicc_ext.nn.agreement)", rows, lambda r: r["agreement_ok"],
                       lambda r: f"{r.get('row', 'main')} {r['sparsity']} %: first token {r['first_token_agreement']:.3f}, "
                                 f"logits {r['max_logits_rel_err']:.2g} of max"))
    return [t for t in out if t["cases"]]


def targets_of(data):
    """Which targets (kernel or end to end) a result file holds: kernel records carry ``n``/``k``, e2e ones
    ``sparsity``."""
    recs = data.get("records") or []
    if recs and "sparsity" in recs[0]:
        return "end to end", e2e_targets(data)
    if recs and "n" in recs[0]:
        return "kernels", kernel_targets(data)
    raise ValueError("not a bench_kernels.py or e2e.py result file (no records with 'n'/'k' or 'sparsity')")


def format_text(path, data, kind, targets):
    lines = [f"{path}: {kind}, {data.get('gpu')}, commit {data.get('commit')}, {data.get('date')}"]
    for t in targets:
        lines.append(f"  {t['met']:>3}/{t['cases']:<3} {t['target']}")
        for m in t["missed"]:
            lines.append(f"          missed: {m}")
    return "\n".join(lines)


def format_markdown(path, data, kind, targets):
    lines = [f"Targets ({kind}) in `{path}` ({data.get('gpu')}, commit `{data.get('commit')}`), "
             "counted by `bench/check_targets.py`:", "", "| target | met | missed |", "|---|---|---|"]
    for t in targets:
        lines.append(f"| {t['target']} | {t['met']}/{t['cases']} | {'; '.join(t['missed'])} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.check_targets", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="kernels_<gpu>.json or e2e_<gpu>.json files")
    ap.add_argument("--markdown", action="store_true", help="a markdown table per file")
    args = ap.parse_args(argv)
    fmt = format_markdown if args.markdown else format_text
    for path in args.files:
        with open(path) as f:
            data = json.load(f)
        try:
            kind, targets = targets_of(data)
        except ValueError as e:
            sys.exit(f"{path}: {e}")
        print(fmt(path, data, kind, targets))
        print()


if __name__ == "__main__":
    main()
