"""Kernel benchmark: stoicc tile-sparse spmm against dense cuBLAS (F.linear) and cuSPARSELt.

For each weight shape (N x K, from bench/shapes.py), token count M and 2:4-tile fraction f, it
compresses a synthetic PATCH-like weight (128x128 tile grid, random placement) with each tile
shape, times every compiled instance that fits M over its split-K counts (the exhaustive sweep
the Inspector's choice is compared against) and, from M = --densify-min-m on, the densify
schedule, and reports the best beside cuBLAS measured in the same process. cuSPARSELt's 2:4
kernel (f = 1.0, where the whole weight is 2:4) is a baseline column. Timing protocol:
bench/timing.py (CUDA graph, weights rotated past the L2, median).

Also measured in the same process and recorded: the memory-bandwidth ceilings of this GPU as SM
kernels reach them (an eager device copy and a read-only reduction over 2 GiB; the decode
bandwidth target is set against the read-only one), and the host cost of one eager
``torch.ops.stoicc.spmm`` call against ``F.linear`` (bench/timing.py: host_us_per_call).

Writes bench/results/kernels_<gpu>[_<tag>].md and .json (gpu, date, commit, ceilings, datasheet
peaks, records, host) after every case (a cut-off run keeps its rows; --resume continues it),
the targets counted by bench/check_targets.py, and PNG figures when matplotlib is installed.

  python -m bench.bench_kernels                           # the canonical table: llama and small shapes
  python -m bench.bench_kernels --quick                   # a few shapes, for iterating on kernels
  python -m bench.bench_kernels --shapes small --m 16     # one group at one M (--tag it)
  python bench/bench_kernels.py ...                       # the same, as a script
"""
import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):   # run as a script: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import stoicc_ext  # noqa: E402
from stoicc_ext.tuning.candidates import kernel_candidates  # noqa: E402
from stoicc_ext.tuning.device import device_props  # noqa: E402
from stoicc_ext.tuning.densify import densify_linear  # noqa: E402
from stoicc_ext.testing import random_patch_weight  # noqa: E402

from bench import check_targets, plots, run_info  # noqa: E402
from bench import shapes as shape_table  # noqa: E402
from bench.timing import bandwidth_ceilings, host_us_per_call, rotated_copies, time_graph  # noqa: E402

DECODE_MS = [1, 16, 32, 64]
PREFILL_MS = [128, 256, 512, 2048]
# M values per shape group when --m is not given: the kernel table's shapes at decode and
# prefill sizes, the other groups at the M of their targets (M = 16) and the ends of decode.
GROUP_MS = {"llama": DECODE_MS + PREFILL_MS}
OTHER_MS = [1, 16, 64]
FRACS = [0.0, 0.5, 0.7, 0.9, 1.0]
BLOCKS = [(128, 128), (128, 64), (64, 128), (64, 64)]
QUICK = dict(shapes="4096x4096,11008x4096,4096x11008,896x4864", m=[1, 16, 2048], frac=[0.0, 0.5, 1.0])
HOST_M, HOST_FRAC = 16, 0.5


def patch_weight(N, K, frac, dtype, seed, device=None):
    """Synthetic PATCH weight (``stoicc_ext.testing.random_patch_weight``, the library's one
    generator, values drawn on ``device``: fast for 70B-class shapes on a GPU): a fraction
    ``frac`` of the 128x128 tiles, placed at random, pruned 2:4 by magnitude, the rest dense;
    values of magnitude 0.1-1 with random signs (never zeros)."""
    W, _ = random_patch_weight(N, K, frac, dtype=dtype, device=device or DEVICE,
                               generator=torch.Generator().manual_seed(seed), values_on_device=True)
    return W


def candidates(M, N, K, Wc):
    """(instance index, split_k) pairs to time for this problem with the tile shape of ``Wc``:
    exactly the kernel candidates the Inspector times (stoicc_ext.tuning.candidates.kernel_candidates:
    nearest BLOCK_M per tile shape, the split counts, the heuristic's choice), so the sweep and
    the tuner cannot drift apart."""
    have = {(Wc.block_n, Wc.block_k): (Wc.num_sparse_tiles, Wc.num_dense_tiles)}
    cands = kernel_candidates(M, N, K, device_props(Wc[0].device), lambda bn, bk: have.get((bn, bk)))
    return [(c.instance["index"], c.split) for c in cands if c.tile == (Wc.block_n, Wc.block_k)]


VERBOSE = False
DEVICE = "cuda"        # where main() builds the weights and inputs (a test runs it on the CPU with fake timers)


def compressed_copies(W, blocks=BLOCKS, cache=None):
    """{(block_n, block_k): rotated copies of W compressed at that tile shape} (the first copy
    is the compressed weight itself). ``cache``: a dict kept by the caller for one weight, so
    that the M values of a shape and fraction share one compression per tile shape."""
    cache = {} if cache is None else cache
    for bn, bk in blocks:
        if (bn, bk) not in cache:
            cache[(bn, bk)] = rotated_copies(stoicc_ext.compress(W, bn, bk))
    return {b: cache[b] for b in blocks}


def bench_stoicc(W, x, blocks=BLOCKS, repeats=15, densify=True, cache=None):
    """Best (ms, instance name, split, block, compressed bytes) over tile shapes x instances x
    splits, and, when ``densify``, the densify schedule (expand + cuBLAS) at each tile shape: its
    best time is also returned on its own (None when not timed). ``cache``: see
    ``compressed_copies``."""
    M, K = x.shape
    N = W.shape[0]
    best, best_densify = None, None
    for (bn, bk), Wcs in compressed_copies(W, blocks, cache).items():
        Wc = Wcs[0]
        for inst, split in candidates(M, N, K, Wc):
            ms = time_graph(lambda w, i=inst, s=split: torch.ops.stoicc.spmm(
                x, *w, None, N, K, bn, bk, i, s), [(w,) for w in Wcs], repeats=repeats)
            if best is None or ms < best[0]:
                best = (ms, torch.ops.stoicc.instance_name(inst), split, (bn, bk), Wc.nbytes)
            if VERBOSE:  # split 0 shown as -1: the op chose the CTA count itself
                print(f"    {bn}x{bk} {torch.ops.stoicc.instance_name(inst)} split {split or -1}: {ms * 1e3:.1f} us",
                      flush=True)
        if densify:
            ms = time_graph(lambda w, bn=bn, bk=bk: densify_linear(x, *w, BLOCK_N=bn, BLOCK_K=bk),
                            [(w,) for w in Wcs], repeats=repeats)
            best_densify = ms if best_densify is None else min(best_densify, ms)
            if best is None or ms < best[0]:
                best = (ms, "densify", 0, (bn, bk), Wc.nbytes)
            if VERBOSE:
                print(f"    {bn}x{bk} densify + cuBLAS: {ms * 1e3:.1f} us", flush=True)
    return best + (best_densify,)


def bench_cublas(W, x, repeats=15, Ws=None):
    """F.linear's median ms over rotated copies of W (``Ws``: copies made by the caller)."""
    Ws = rotated_copies(W) if Ws is None else Ws
    return time_graph(lambda w: F.linear(x, w), [(w,) for w in Ws], repeats=repeats)


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


def host_cost(W, M, record=None, calls=100, batches=30):
    """Host microseconds of one eager ``torch.ops.stoicc.spmm`` call and of one ``F.linear`` on
    the same problem (bench/timing.py: host_us_per_call). The stoicc call uses the kernel of
    ``record`` (the table's best at this shape, M and fraction) when it is a compiled instance,
    else the op's own choice (instance -1)."""
    N, K = W.shape
    x = torch.randn(M, K, device=W.device, dtype=W.dtype)
    inst, split, (bn, bk) = -1, 0, (128, 128)
    if record and record.get("instance") not in (None, "densify"):
        inst = next((e["index"] for e in stoicc_ext.list_instances() if e["name"] == record["instance"]), -1)
        split, (bn, bk) = record["split_k"], tuple(record["block"])
    Wc = stoicc_ext.compress(W, bn, bk)
    args = tuple(Wc)
    s_us = host_us_per_call(lambda: torch.ops.stoicc.spmm(x, *args, None, N, K, bn, bk, inst, split),
                            calls=calls, batches=batches)
    d_us = host_us_per_call(lambda: F.linear(x, W), calls=calls, batches=batches)
    return dict(stoicc_us=s_us, linear_us=d_us, extra_us=s_us - d_us, instance=inst, split_k=split, block=[bn, bk])


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------

def plan(shapes, fracs, ms=None, bf16_subset=True):
    """[(shape, frac, dtype, [M values])]: one entry per synthetic weight, the M values timed on
    it. ``ms`` None: the per-group defaults (GROUP_MS, OTHER_MS). The bf16 subset: the first two
    shapes at M = 16, every fraction."""
    out = [(s, f, torch.float16, list(ms or GROUP_MS.get(s.group, OTHER_MS))) for s in shapes for f in fracs]
    if bf16_subset:
        out += [(s, f, torch.bfloat16, [16]) for s in shapes[:2] for f in fracs]
    return out


def case_key(n, k, m, frac, dtype):
    return (int(n), int(k), int(m), float(frac), str(dtype).replace("torch.", ""))


def make_record(shape, M, frac, dtype, stoicc, c_ms, peaks, cslt=(None, None)):
    """One row of the table from the stoicc sweep's best (``bench_stoicc``'s tuple) and
    cuBLAS's time. TB/s: compressed weight plus X and Y bytes over the stoicc time
    (``weight_tbps``: the weight bytes alone); TFLOP/s: dense-equivalent (2 M N K over the time);
    ``peak_frac_24``: that over the GPU's datasheet 2:4 tensor-core peak."""
    s_ms, inst, split, block, nbytes, d_ms = stoicc
    N, K = shape.n, shape.k
    esize = torch.empty((), dtype=dtype).element_size()
    moved = nbytes + (M * K + M * N) * esize
    flops = 2 * M * N * K
    rec = dict(n=N, k=K, m=M, frac=frac, dtype=str(dtype).replace("torch.", ""), model=shape.model, proj=shape.proj,
               group=shape.group, stoicc_ms=s_ms, cublas_ms=c_ms, speedup=c_ms / s_ms, tbps=moved / s_ms / 1e9,
               weight_tbps=nbytes / s_ms / 1e9, tflops=flops / s_ms / 1e9, cublas_tflops=flops / c_ms / 1e9,
               peak_frac_24=(flops / s_ms / 1e9 / peaks[1]) if peaks[1] else None,
               instance=inst, split_k=split, block=list(block), compressed_bytes=nbytes, dense_bytes=N * K * esize,
               densify_ms=d_ms)
    if cslt[0] is not None:
        rec.update(cusparselt_ms=cslt[0], cusparselt_call_ms=cslt[1], cusparselt_speedup=c_ms / cslt[0])
    return rec


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.bench_kernels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"shapes {QUICK['shapes']}, M in {QUICK['m']}, f in {QUICK['frac']}; written with tag "
                         "'quick' unless --tag is given")
    ap.add_argument("--shapes", default=None,
                    help="comma list of shape groups of bench/shapes.py (llama, small, small_kv, gemma) and NxK "
                         f"entries (default: {','.join(shape_table.DEFAULT_GROUPS)})")
    ap.add_argument("--m", default=None,
                    help=f"comma list of M for every shape (default: {GROUP_MS['llama']} for llama, {OTHER_MS} for "
                         "the other groups)")
    ap.add_argument("--frac", default=None, help=f"comma list of 2:4-tile fractions (default {FRACS})")
    ap.add_argument("--no-bf16-subset", dest="bf16_subset", action="store_false",
                    help="skip the bf16 cases (by default bf16 runs too, for the first two shapes at M=16)")
    ap.add_argument("--no-cusparselt", action="store_true")
    ap.add_argument("--no-host", dest="host", action="store_false",
                    help="skip the eager host-cost timing (one stoicc.spmm call against one F.linear per shape)")
    ap.add_argument("--densify-min-m", type=int, default=128,
                    help="time the densify schedule (expand + cuBLAS) from this M on (default 128: at decode "
                         "sizes it moves more bytes than cuBLAS and cannot win)")
    ap.add_argument("--repeats", type=int, default=15, help="graph replays per timing (median; default 15)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of an existing result file of the same GPU and name, time only the rest")
    ap.add_argument("--out", default=os.path.join(run_info.REPO, "bench", "results"))
    ap.add_argument("--tag", default=None, help="suffix of the result file names (none: the canonical table)")
    ap.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG figures")
    ap.add_argument("--verbose", action="store_true", help="print every candidate's time")
    ap.add_argument("--list", action="store_true", help="print the cases this command would time and exit (no GPU)")
    args = ap.parse_args(argv)
    args.argv = " ".join(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.shapes = args.shapes or QUICK["shapes"]
        args.m = args.m or ",".join(map(str, QUICK["m"]))
        args.frac = args.frac or ",".join(map(str, QUICK["frac"]))
        args.tag = "quick" if args.tag is None else args.tag
    try:
        args.shape_list = shape_table.select(args.shapes)
        args.ms = [int(v) for v in args.m.split(",")] if args.m else None
        args.fracs = [float(v) for v in args.frac.split(",")] if args.frac else FRACS
    except ValueError as e:
        ap.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose
    if args.list:
        return list_plan(plan(args.shape_list, args.fracs, args.ms, args.bf16_subset))
    if not torch.cuda.is_available():
        sys.exit("bench_kernels needs a CUDA GPU")
    if not stoicc_ext.extension_loaded:
        sys.exit(f"the stoicc extension is not loaded ({stoicc_ext.extension_error})")
    gpu = torch.cuda.get_device_name()
    tag = run_info.gpu_tag(gpu, args.tag or "")
    path = os.path.join(args.out, f"kernels_{tag}.json")
    data = None
    if args.resume and os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        if data.get("gpu") != gpu:
            sys.exit(f"--resume: {path} was measured on {data.get('gpu')}, this is {gpu}")
    if data is None:
        dense_peak, sparse_peak = run_info.peak_tflops(gpu)
        data = dict(gpu=gpu, date=run_info.today(), commit=run_info.commit(),
                    sms=torch.cuda.get_device_properties(0).multi_processor_count,
                    peak_tflops=dict(dense=dense_peak, sparse_24=sparse_peak,
                                     source="datasheet (bench/run_info.py DATASHEET_PEAK_TFLOPS), not measured"),
                    protocol="bench/timing.py: CUDA graph, weights rotated past L2, median of --repeats replays; "
                             "stoicc = best instance x split x tile shape, and the densify schedule (expand + cuBLAS) "
                             "from M = --densify-min-m on (densify_ms: its best alone); ceilings: eager SM kernels "
                             "over 2 GiB (copy: read + write bytes; read: a.sum(), bytes read)",
                    argv=args.argv, records=[], host=[])
        data.update(bandwidth_ceilings())
    peaks = (data["peak_tflops"]["dense"], data["peak_tflops"]["sparse_24"])
    done = {case_key(r["n"], r["k"], r["m"], r["frac"], r["dtype"]) for r in data["records"]}
    work = plan(args.shape_list, args.fracs, args.ms, args.bf16_subset)
    n_cases = sum(len(ms) for *_, ms in work)
    print(f"{gpu}, {data['sms']} SMs, commit {data['commit']}; SM copy {data['copy_tbps']:.2f} TB/s (read + write), "
          f"read-only {data['read_tbps']:.2f} TB/s; datasheet fp16 peak {peaks[0]} / 2:4 {peaks[1]} TFLOP/s; "
          f"{n_cases} cases" + (f" ({len(done)} rows already in {path})" if done else ""), flush=True)
    print(f"{'N':>6} {'K':>6} {'M':>5} {'f':>4} {'dtype':>5} {'stoicc_us':>9} {'cublas_us':>9} {'speedup':>7} "
          f"{'TB/s':>5} {'TFLOP/s':>7} {'cslt_us':>8} {'instance':<40} {'elapsed':>7}", flush=True)
    t0 = time.perf_counter()
    for shape, frac, dtype, ms in work:
        todo = [M for M in ms if case_key(shape.n, shape.k, M, frac, dtype) not in done]
        if not todo:
            continue
        torch.cuda.empty_cache()
        W = patch_weight(shape.n, shape.k, frac, dtype, seed=shape.n * 7 + shape.k + int(frac * 100))
        cache, Ws = {}, rotated_copies(W)
        for M in todo:
            x = torch.randn(M, shape.k, device=DEVICE, dtype=dtype)
            best = bench_stoicc(W, x, densify=M >= args.densify_min_m, cache=cache, repeats=args.repeats)
            c_ms = bench_cublas(W, x, repeats=args.repeats, Ws=Ws)
            cslt = (None, None)
            if frac == 1.0 and dtype == torch.float16 and not args.no_cusparselt:
                cslt = bench_cusparselt(W, x, repeats=args.repeats)
            rec = make_record(shape, M, frac, dtype, best, c_ms, peaks, cslt)
            data["records"].append(rec)
            print(f"{shape.n:>6} {shape.k:>6} {M:>5} {frac:>4} {rec['dtype'][:5]:>5} {rec['stoicc_ms'] * 1e3:>9.1f} "
                  f"{c_ms * 1e3:>9.1f} {rec['speedup']:>7.2f} {rec['tbps']:>5.2f} {rec['tflops']:>7.1f} "
                  f"{'' if cslt[0] is None else f'{cslt[0] * 1e3:.1f}':>8} {rec['instance']}/s{rec['split_k']:<8} "
                  f"{time.perf_counter() - t0:>6.0f}s", flush=True)
            write_results(data, args.out, tag, figures=False)   # after every case: a cut-off run keeps its rows
        del W, Ws, cache
    if args.host:
        measure_host(data, args.shape_list, args.out, tag)
    print(f"timed in {time.perf_counter() - t0:.0f} s")
    write_results(data, args.out, tag, figures=args.plots, quiet=False)
    return data


def list_plan(work):
    """Print one line per synthetic weight of a plan (shape, model, projection, dtype, f, M
    values) and the totals; returns the number of cases."""
    for s, f, dtype, ms in work:
        print(f"{s.n:>6}x{s.k:<6} {s.group:<8} {(s.model + ' ' + s.proj):<44} {str(dtype)[6:]:<8} f={f:<4} "
              f"M={','.join(map(str, ms))}")
    n = sum(len(ms) for *_, ms in work)
    print(f"{len(work)} weights, {n} cases ({sum(len([m for m in ms if m <= 64]) for *_, ms in work)} at M <= 64)")
    return n


def measure_host(data, shapes, out, tag):
    """The eager host cost per shape at M = HOST_M, f = HOST_FRAC (fp16), into ``data["host"]``."""
    have = {(h["n"], h["k"]) for h in data.get("host", [])}
    at = {case_key(r["n"], r["k"], r["m"], r["frac"], r["dtype"]): r for r in data["records"]}
    print(f"eager host cost of one call at M = {HOST_M}, f = {HOST_FRAC} (median host us per call):", flush=True)
    for s in shapes:
        if (s.n, s.k) in have:
            continue
        W = patch_weight(s.n, s.k, HOST_FRAC, torch.float16, seed=s.n * 7 + s.k + 50)
        h = host_cost(W, HOST_M, at.get(case_key(s.n, s.k, HOST_M, HOST_FRAC, "float16")))
        h.update(n=s.n, k=s.k, m=HOST_M, frac=HOST_FRAC, model=s.model, proj=s.proj)
        data.setdefault("host", []).append(h)
        print(f"  {s.n}x{s.k}: stoicc.spmm {h['stoicc_us']:.1f} us, F.linear {h['linear_us']:.1f} us "
              f"({h['extra_us']:+.1f} us)", flush=True)
        del W
    write_results(data, out, tag, figures=False)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

def _f(v, fmt, scale=1.0):
    return "" if v is None else format(v * scale, fmt)


def format_markdown(data, name):
    """The result file's markdown: ceilings, the decode table (M <= 64), the prefill table
    (M >= 128), the eager host cost and the targets."""
    recs = data["records"]
    peaks = data.get("peak_tflops") or {}
    ceil = check_targets.ceilings(data)
    L = [f"# Kernel benchmark on {data['gpu']}", "",
         f"Date {data['date']}, commit `{data['commit']}`" + (f", `{data['argv']}`" if data.get("argv") else "") + ".",
         "", "Baseline: dense `F.linear` (cuBLAS) in the same process; cuSPARSELt (`torch._cslt_sparse_mm`, searched "
         "algorithm) at f = 1.0: `cslt` is its time inside a CUDA graph (kernel time). Time per call in "
         "microseconds, inside CUDA graphs with the weights rotated past the L2. stoicc is the best compiled "
         "instance or, where it wins (instance `densify`), the densify schedule: the compressed weight expanded "
         "into a dense scratch by `torch.ops.stoicc.densify`, then cuBLAS.", "",
         "Ceilings measured in the same process by SM kernels, eager, over 2 GiB: device copy "
         f"{_f(data.get('copy_tbps'), '.2f')} TB/s (read + write bytes), read-only reduction (`a.sum()`) "
         f"{_f(data.get('read_tbps'), '.2f')} TB/s (bytes read). The decode bound below is compressed bytes / "
         f"({check_targets.BW_FRACTION} x {ceil['read_tbps']:.2f} TB/s) + {check_targets.BW_FIXED_US} us "
         f"({ceil['how']}). Tensor-core peaks (datasheet, not measured): fp16 dense {_f(peaks.get('dense'), '.0f')}, "
         f"2:4 {_f(peaks.get('sparse_24'), '.0f')} TFLOP/s.", ""]
    dec = [r for r in recs if r["m"] <= 64]
    if dec:
        L += ["## Decode sizes (M <= 64)", "",
              "TB/s: compressed weight bytes plus X and Y over the stoicc time; bound: the time the M = 16 "
              "bandwidth target allows.", "",
              "| N x K | model, projection | M | f | dtype | stoicc us | cuBLAS us | speedup | TB/s | bound us | "
              "cslt us | cslt speedup | instance / split |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in dec:
            bound = check_targets.bandwidth_bound_ms(r, data) if r["m"] == 16 else None
            L.append(f"| {r['n']}x{r['k']} | {r.get('model', '')} {r.get('proj', '')} | {r['m']} | {r['frac']} | "
                     f"{r['dtype']} | {r['stoicc_ms'] * 1e3:.1f} | {r['cublas_ms'] * 1e3:.1f} | {r['speedup']:.2f} | "
                     f"{r['tbps']:.2f} | {_f(bound, '.1f', 1e3)} | {_f(r.get('cusparselt_ms'), '.1f', 1e3)} | "
                     f"{_f(r.get('cusparselt_speedup'), '.2f')} | {r['instance']} / {r['split_k']} |")
        L.append("")
    pre = [r for r in recs if r["m"] > 64]
    if pre:
        L += ["## Prefill sizes (M >= 128)", "",
              "TFLOP/s: dense-equivalent (2 M N K over the time, whatever the tiles skip); % of 2:4 peak: stoicc's "
              "TFLOP/s over the datasheet 2:4 peak.", "",
              "| N x K | model, projection | M | f | dtype | stoicc us | cuBLAS us | speedup | stoicc TFLOP/s | "
              "% of 2:4 peak | cuBLAS TFLOP/s | cslt us | cslt speedup | instance / split |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in pre:
            L.append(f"| {r['n']}x{r['k']} | {r.get('model', '')} {r.get('proj', '')} | {r['m']} | {r['frac']} | "
                     f"{r['dtype']} | {r['stoicc_ms'] * 1e3:.1f} | {r['cublas_ms'] * 1e3:.1f} | {r['speedup']:.2f} | "
                     f"{r['tflops']:.0f} | {_f(r.get('peak_frac_24'), '.1f', 100)} | "
                     f"{_f(r.get('cublas_tflops'), '.0f')} | {_f(r.get('cusparselt_ms'), '.1f', 1e3)} | "
                     f"{_f(r.get('cusparselt_speedup'), '.2f')} | {r['instance']} / {r['split_k']} |")
        L.append("")
    if data.get("host"):
        L += ["## Eager host cost", "",
              "Host (CPU) time of one eager call, median over 30 batches of 100 back-to-back calls timed with "
              "`time.perf_counter` (no synchronisation inside a batch, one between batches outside the timing, so "
              "the launch queue never fills), after two untimed batches: `torch.ops.stoicc.spmm` with the table's "
              "kernel for that shape against `F.linear` on the same X and weight.", "",
              "| N x K | model, projection | M | f | stoicc.spmm us | F.linear us | extra us |", "|---|---|---|---|---|---|---|"]
        for h in data["host"]:
            L.append(f"| {h['n']}x{h['k']} | {h.get('model', '')} {h.get('proj', '')} | {h['m']} | {h['frac']} | "
                     f"{h['stoicc_us']:.1f} | {h['linear_us']:.1f} | {h['extra_us']:+.1f} |")
        L.append("")
    L.append(check_targets.format_markdown(name, data, "kernels", check_targets.kernel_targets(data)))
    return "\n".join(L) + "\n"


def write_results(data, out, tag, figures=True, quiet=True):
    base = run_info.write_tables(out, f"kernels_{tag}", data, format_markdown)
    if not quiet:
        print(f"wrote {base}.md and .json")
    if figures:
        for p in plots.kernel_figures(data, base):
            print(f"wrote {p}")


if __name__ == "__main__":
    main()
