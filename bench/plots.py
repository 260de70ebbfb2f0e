"""PNG figures of the benchmarks' result JSON, with matplotlib as an optional dependency: without
it each function prints why it drew nothing and returns an empty list.

- ``kernel_figures``: speedup over cuBLAS against the 2:4-tile fraction, one panel per M, one
  line per weight shape (fp16 records of a ``kernels_<gpu>.json``).
- ``e2e_figures``: a generation's time split into prefill and decode, dense beside stoicc, per
  sparsity (the records of an ``e2e_<gpu>.json``).

    python -m bench.plots bench/results/kernels_H200.json bench/results/e2e_H200.json
"""
import argparse
import json
import math
import os
import sys

if __package__ in (None, ""):   # run as a script: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or None with a message."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no figures (pip install matplotlib)", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def kernel_figures(data, base):
    """``<base>_speedup.png`` (the ``llama`` shapes, or all shapes when the file has no group)
    and ``<base>_speedup_<group>.png`` for each other shape group: speedup against f per M (a
    panel each) and shape (a line each). Returns the paths written."""
    recs = [r for r in data.get("records", []) if r.get("dtype", "float16") == "float16"]
    if not recs:
        return []
    plt = _pyplot()
    if plt is None:
        return []
    groups = {}
    for r in recs:
        groups.setdefault(r.get("group", "llama"), []).append(r)
    paths = []
    for group, rr in sorted(groups.items(), key=lambda kv: kv[0] != "llama"):
        path = base + ("_speedup.png" if group == "llama" or len(groups) == 1 else f"_speedup_{group}.png")
        _speedup_figure(plt, data, rr, group, path)
        paths.append(path)
    return paths


def _speedup_figure(plt, data, recs, group, path):
    ms = sorted({r["m"] for r in recs})
    cols = min(3, len(ms))
    rows = math.ceil(len(ms) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False, sharey=True)
    shapes = sorted({(r["n"], r["k"], r.get("model", ""), r.get("proj", "")) for r in recs}, key=lambda s: s[0] * s[1])
    for ax, m in zip(axes.flat, ms):
        for n, k, model, proj in shapes:
            pts = sorted((r["frac"], r["speedup"]) for r in recs if r["m"] == m and (r["n"], r["k"]) == (n, k))
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, linewidth=1,
                        label=f"{n}x{k} {model.split(',')[0]} {proj}".strip())
        ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
        ax.set_title(f"M = {m}")
        ax.set_xlabel("2:4-tile fraction f")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("speedup over cuBLAS")
    for ax in list(axes.flat)[len(ms):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    ncol = min(4, max(1, len(labels)))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.suptitle(f"stoicc spmm against cuBLAS, {group} shapes, {data.get('gpu', '')} (commit {data.get('commit', '')})")
    fig.tight_layout(rect=(0, 0.03 + 0.035 * math.ceil(len(labels) / ncol) / rows, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def e2e_figures(res, base):
    """``<base>_time.png``: per sparsity (and row: the main set-up, the long prompt), the
    generation time of the dense and the stoicc model, each a bar split into prefill and decode.
    Returns the paths written (none without timings, as in a CPU dry run)."""
    recs = [r for r in res.get("records", []) if r.get("stoicc_ms") and r.get("dense_ms")]
    if not recs:
        return []
    plt = _pyplot()
    if plt is None:
        return []
    groups = [r.get("row", "main") for r in recs]
    panels = [g for g in ("main", "long") if g in groups] + sorted({g for g in groups} - {"main", "long"})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, row in zip(axes[0], panels):
        rr = [r for r in recs if r.get("row", "main") == row]
        xs = range(len(rr))
        w = 0.38
        for off, who, color in ((-w / 2, "dense", "tab:gray"), (w / 2, "stoicc", "tab:blue")):
            pre = [r["dense_prefill_ms" if who == "dense" else "prefill_ms"] or 0 for r in rr]
            tot = [r["dense_ms" if who == "dense" else "stoicc_ms"] for r in rr]
            dec = [t - p for t, p in zip(tot, pre)]
            ax.bar([x + off for x in xs], pre, w, color=color, alpha=0.5, label=f"{who} prefill")
            ax.bar([x + off for x in xs], dec, w, bottom=pre, color=color, label=f"{who} decode")
        for x, r in zip(xs, rr):
            if r.get("speedup"):
                ax.text(x, max(r["dense_ms"], r["stoicc_ms"]) * 1.02, f"{r['speedup']:.2f}x", ha="center", fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{r['sparsity']} %" for r in rr])
        ax.set_xlabel("sparsity")
        ax.set_ylabel("generation time, ms")
        ax.set_title("long prompt" if row == "long" else "main set-up" if row == "main" else row)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(f"End to end, {res.get('gpu', '')} (commit {res.get('commit', '')})")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = base + "_time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="kernels_<gpu>.json or e2e_<gpu>.json files; figures go beside them")
    args = ap.parse_args(argv)
    for path in args.files:
        with open(path) as f:
            data = json.load(f)
        recs = data.get("records") or []
        draw = e2e_figures if recs and "sparsity" in recs[0] else kernel_figures
        for p in draw(data, os.path.splitext(path)[0]):
            print(f"wrote {p}")


if __name__ == "__main__":
    main()
