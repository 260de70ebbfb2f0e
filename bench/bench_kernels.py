"""Kernel benchmark: stoicc tile-sparse spmm vs dense cuBLAS (F.linear) and cuSPARSELt.

For each weight shape (N x K), token count M and 2:4-tile fraction f, it compresses a synthetic
PATCH-like weight (128x128 tile grid, random placement) with each tile shape, times every
compiled instance that fits M over a set of split-K counts (this is the exhaustive sweep the
inspector's choice is compared against), and reports the best one beside cuBLAS measured in the
same process. Timing protocol: bench/timing.py (CUDA graph, weights rotated past the L2, median).

Writes bench/results/kernels_<gpu>.md and .json (gpu, date, commit, records).

  python bench/bench_kernels.py                 # the full table of the kernel issue
  python bench/bench_kernels.py --quick         # a few shapes, for iterating on kernels
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stoicc_ext  # noqa: E402
from stoicc_ext.candidates import _candidates, _device_props  # noqa: E402
from stoicc_ext.schedules import BUILTIN_SCHEDULES, Schedule  # noqa: E402
from stoicc_ext.densify import densify_linear  # noqa: E402
from stoicc_ext.synthetic import prune_to_24  # noqa: E402
import check_targets  # noqa: E402
import run_info  # noqa: E402
from timing import rotated_copies, time_graph  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096), (22016, 4096),
          (8192, 8192), (28672, 8192), (8192, 28672)]
MS = [1, 16, 32, 64, 2048]
FRACS = [0.0, 0.5, 0.7, 0.9, 1.0]
BLOCKS = [(128, 128), (128, 64), (64, 128), (64, 64)]


def patch_weight(N, K, frac, dtype, seed):
    """Synthetic PATCH weight generated on the GPU (fast for 70B-class shapes): a fraction
    `frac` of the 128x128 tiles, placed at random, pruned 2:4 by magnitude, the rest dense."""
    g = torch.Generator().manual_seed(seed)
    TR, TC = N // 128, K // 128
    n_sparse = round(frac * TR * TC)
    sparse = torch.zeros(TR * TC, dtype=torch.bool)
    sparse[torch.randperm(TR * TC, generator=g)[:n_sparse]] = True
    sparse = sparse.view(TR, TC).cuda()
    torch.cuda.manual_seed(seed)
    W = (torch.rand(N, K, device="cuda") * 0.9 + 0.1) * (torch.randint(0, 2, (N, K), device="cuda") * 2 - 1)
    W = W.to(dtype)
    mask = sparse.repeat_interleave(128, 0).repeat_interleave(128, 1)
    return torch.where(mask, prune_to_24(W), W)


def candidates(M, N, K, Wc):
    """(instance index, split_k) pairs to time for this problem with the tile shape of ``Wc``:
    exactly the built-in candidates the Inspector times (stoicc_ext.candidates._candidates:
    nearest BLOCK_M per tile shape, the split counts, the op heuristic's choice), so the sweep
    and the tuner cannot drift apart."""
    schedules = {name: Schedule() for name in BUILTIN_SCHEDULES}
    counts = {(Wc.block_n, Wc.block_k): (Wc[1].numel(), Wc[5].numel())}
    cands = _candidates(schedules, None, M, N, K, _device_props(torch.device("cuda")), counts)
    return [(c["entry"]["index"], c["split"]) for c in cands
            if (c["entry"]["BLOCK_N"], c["entry"]["BLOCK_K"]) == (Wc.block_n, Wc.block_k)]


VERBOSE = False


def bench_stoicc(W, x, blocks=BLOCKS, repeats=15, densify=True):
    """Best (ms, instance name, split, block, compressed bytes) over tile shapes x instances x splits,
    and, when ``densify``, the densify schedule (expand + cuBLAS) at each tile shape: its best
    time is also returned on its own (None when not timed)."""
    M, K = x.shape
    N = W.shape[0]
    best, best_densify = None, None
    for bn, bk in blocks:
        Wc = stoicc_ext.compress(W, bn, bk)
        Wcs = rotated_copies(Wc)
        for inst, split in candidates(M, N, K, Wc):
            ms = time_graph(lambda w, i=inst, s=split: torch.ops.stoicc.spmm(
                x, *w, None, N, K, bn, bk, i, s), [(w,) for w in Wcs], repeats=repeats)
            if best is None or ms < best[0]:
                best = (ms, torch.ops.stoicc.instance_name(inst), split, (bn, bk), Wc.nbytes)
            if split == 0:  # shown as -1: the op chose the CTA count itself
                split = -1
            if VERBOSE:
                print(f"    {bn}x{bk} {torch.ops.stoicc.instance_name(inst)} split {split}: {ms * 1e3:.1f} us",
                      flush=True)
        if densify:
            ms = time_graph(lambda w, bn=bn, bk=bk: densify_linear(x, *w, BLOCK_N=bn, BLOCK_K=bk),
                            [(w,) for w in Wcs], repeats=repeats)
            best_densify = ms if best_densify is None else min(best_densify, ms)
            if best is None or ms < best[0]:
                best = (ms, "densify", 0, (bn, bk), Wc.nbytes)
            if VERBOSE:
                print(f"    {bn}x{bk} densify + cuBLAS: {ms * 1e3:.1f} us", flush=True)
        del Wcs
    return best + (best_densify,)


def bench_cublas(W, x, repeats=15):
    Ws = rotated_copies(W)
    ms = time_graph(lambda w: F.linear(x, w), [(w,) for w in Ws], repeats=repeats)
    del Ws
    return ms


def copy_bandwidth_tbps(nbytes=1 << 30, repeats=15):
    """TB/s (bytes read plus bytes written) of a device-to-device copy of ``nbytes``, timed by the
    same protocol: the ceiling for a weight-streaming kernel on this GPU, against which
    check_targets.py sets the kernel issue's bandwidth target (87 % of it, as 2.6 of the H100's
    2.99 TB/s). One buffer of 1 GiB is far past any L2, so it needs no rotation."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 256)
    dst = torch.empty_like(src)
    ms = time_graph(lambda: dst.copy_(src), [()], repeats=repeats)
    return 2 * nbytes / ms / 1e9


def bench_cusparselt(W, x, repeats=15):
    """cuSPARSELt through torch (2:4 weight, searched algorithm): (graph ms ~ kernel time,
    eager per-call ms including torch's per-call descriptor/plan set-up)."""
    try:
        Wc = torch._cslt_compress(W)
        xt = x.t().contiguous()
        alg = torch._cslt_sparse_mm_search(Wc, xt)
        Wcs = rotated_copies(Wc)
        f = lambda w: torch._cslt_sparse_mm(w, xt, alg_id=alg)  # noqa: E731
        graph_ms = time_graph(f, [(w,) for w in Wcs], repeats=repeats)
        eager_ms = time_graph(f, [(w,) for w in Wcs], repeats=repeats, use_graph=False)
        return graph_ms, eager_ms
    except Exception as e:  # noqa: BLE001 - report, do not abort the table
        print(f"  cuSPARSELt unavailable: {type(e).__name__}: {e}", file=sys.stderr)
        return None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 shapes, M in {1,16,2048}, f in {0,0.5,1}")
    ap.add_argument("--shapes", default=None, help="comma list NxK, e.g. 4096x4096,11008x4096")
    ap.add_argument("--m", default=None, help="comma list of M")
    ap.add_argument("--frac", default=None, help="comma list of 2:4-tile fractions")
    ap.add_argument("--no-bf16-subset", dest="bf16_subset", action="store_false",
                    help="skip the bf16 cases (by default bf16 runs too, for the first two shapes at M=16)")
    ap.add_argument("--no-cusparselt", action="store_true")
    ap.add_argument("--densify-min-m", type=int, default=128,
                    help="time the densify schedule (expand + cuBLAS) from this M on (default 128: at decode "
                         "sizes it moves more bytes than cuBLAS and cannot win)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    ap.add_argument("--verbose", action="store_true", help="print every candidate's time")
    args = ap.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    if not torch.cuda.is_available():
        sys.exit("bench_kernels.py needs a CUDA GPU")

    shapes, ms_list, fracs = SHAPES, MS, FRACS
    if args.quick:
        shapes, ms_list, fracs = [(4096, 4096), (11008, 4096), (4096, 11008)], [1, 16, 2048], [0.0, 0.5, 1.0]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.m:
        ms_list = [int(v) for v in args.m.split(",")]
    if args.frac:
        fracs = [float(v) for v in args.frac.split(",")]
    gpu = torch.cuda.get_device_name()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    commit = run_info.commit()
    cases = [(n, k, m, f, torch.float16) for (n, k) in shapes for f in fracs for m in ms_list]
    if args.bf16_subset:
        cases += [(n, k, 16, f, torch.bfloat16) for (n, k) in shapes[:2] for f in fracs]
    records = []
    copy_tbps = copy_bandwidth_tbps()
    print(f"{gpu}, {sms} SMs, commit {commit}; device copy {copy_tbps:.2f} TB/s; {len(cases)} cases", flush=True)
    hdr = (f"{'N':>6} {'K':>6} {'M':>5} {'f':>4} {'dtype':>5} {'stoicc_ms':>9} {'cublas_ms':>9} {'speedup':>7} "
           f"{'TB/s':>5} {'TFLOP/s':>7} {'cslt_ms':>8} {'instance':<40}")
    print(hdr, flush=True)
    weights = {}
    for (N, K, M, frac, dtype) in cases:
        key = (N, K, frac, dtype)
        if key not in weights:
            weights.clear()
            torch.cuda.empty_cache()
            weights[key] = patch_weight(N, K, frac, dtype, seed=N * 7 + K + int(frac * 100))
        W = weights[key]
        x = torch.randn(M, K, device="cuda", dtype=dtype)
        s_ms, inst, split, block, nbytes, d_ms = bench_stoicc(W, x, densify=M >= args.densify_min_m)
        c_ms = bench_cublas(W, x)
        cs_ms = cs_call = None
        if frac == 1.0 and dtype == torch.float16 and not args.no_cusparselt:
            cs_ms, cs_call = bench_cusparselt(W, x)
        moved = nbytes + (M * K + M * N) * 2
        rec = dict(n=N, k=K, m=M, frac=frac, dtype=str(dtype).replace("torch.", ""), stoicc_ms=s_ms,
                   cublas_ms=c_ms, speedup=c_ms / s_ms, tbps=moved / s_ms / 1e9,
                   tflops=2 * M * N * K / s_ms / 1e9, instance=inst, split_k=split, block=list(block),
                   compressed_bytes=nbytes, dense_bytes=N * K * 2, densify_ms=d_ms)
        if cs_ms is not None:
            rec.update(cusparselt_ms=cs_ms, cusparselt_call_ms=cs_call, cusparselt_speedup=c_ms / cs_ms)
        records.append(rec)
        print(f"{N:>6} {K:>6} {M:>5} {frac:>4} {rec['dtype'][:5]:>5} {s_ms:>9.4f} {c_ms:>9.4f} {c_ms / s_ms:>7.2f} "
              f"{rec['tbps']:>5.2f} {rec['tflops']:>7.1f} {'' if cs_ms is None else f'{cs_ms:.4f}':>8} "
              f"{inst}/s{split}", flush=True)
        write_results(records, gpu, commit, copy_tbps, args, quiet=True)  # after every case: a cut-off run keeps its rows
    write_results(records, gpu, commit, copy_tbps, args)


def write_results(records, gpu, commit, copy_tbps, args, quiet=False):
    os.makedirs(args.out, exist_ok=True)
    tag = run_info.gpu_tag(gpu, args.tag)
    date = run_info.today()
    data = dict(gpu=gpu, date=date, commit=commit, copy_tbps=copy_tbps, protocol="bench/timing.py: CUDA graph, "
                "weights rotated past L2, median of 15 replays; stoicc = best instance x split x tile shape, and the "
                "densify schedule (expand + cuBLAS) from M = --densify-min-m on (densify_ms: its best alone)",
                records=records)
    with open(os.path.join(args.out, f"kernels_{tag}.json"), "w") as f:
        json.dump(data, f, indent=1)
    lines = [f"# Kernel benchmark on {gpu}", "", f"Date {date}, commit `{commit}`. Baseline: dense `F.linear` "
             "(cuBLAS) in the same process; cuSPARSELt (`torch._cslt_sparse_mm`, searched algorithm) at f = 1.0: "
             "`cslt` is its time inside a CUDA graph (kernel time), `cslt call` its eager per-call time. "
             "Time per call in microseconds; TB/s over the compressed weight bytes plus X and Y. stoicc is the best "
             "compiled instance or, where it wins (instance `densify`), the densify schedule: the compressed weight "
             "expanded into a dense scratch by `torch.ops.stoicc.densify`, then cuBLAS.", "",
             "| N x K | M | f | dtype | stoicc us | cuBLAS us | speedup | TB/s | TFLOP/s | cslt us | cslt call us "
             "| cslt speedup | instance / split |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        cs = (f"{r['cusparselt_ms'] * 1e3:.1f} | {r['cusparselt_call_ms'] * 1e3:.1f} | {r['cusparselt_speedup']:.2f}"
              if "cusparselt_ms" in r else " | | ")
        lines.append(f"| {r['n']}x{r['k']} | {r['m']} | {r['frac']} | {r['dtype']} | {r['stoicc_ms'] * 1e3:.1f} | "
                     f"{r['cublas_ms'] * 1e3:.1f} | {r['speedup']:.2f} | {r['tbps']:.2f} | {r['tflops']:.0f} | {cs} | "
                     f"{r['instance']} / {r['split_k']} |")
    lines += ["", f"Device-to-device copy in the same process: {copy_tbps:.2f} TB/s (read + write).", "",
              check_targets.format_markdown(f"kernels_{tag}.json", data, "kernels", check_targets.kernel_targets(data))]
    with open(os.path.join(args.out, f"kernels_{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if not quiet:
        print(f"wrote {args.out}/kernels_{tag}.md and .json")


if __name__ == "__main__":
    main()
