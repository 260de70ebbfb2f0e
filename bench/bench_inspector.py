"""Inspector benchmark: how long `inspect` takes (cold, cached in-process, cached in a new process)
for the Llama-2-7B layer shapes, and how far its choice is from an exhaustive sweep.

For each shape N x K in {4096x4096, 11008x4096, 4096x11008, 12288x4096, 22016x4096} and each
M in {16, 2048}, on a synthetic PATCH weight with 70 % of its 128x128 tiles 2:4
(bench_kernels.patch_weight, same seeds as the kernel benchmark):

  cold       Inspector().inspect(X, W) with an empty cache directory (a fresh temporary
             STOICC_CACHE_DIR): classify, compress per tile shape, time every candidate
  cached     a new Inspector, same process, same W: the in-memory cache (median of 5)
  cached W'  a new Inspector, same process, a copy of W (new tensor: the tile-map fingerprint
             is recomputed on the GPU)
  new proc   a new Python process (python bench_inspector.py --child), same cache directory:
             the disk cache; time of the inspect call itself (the process start-up, torch import
             and CUDA initialization are reported once, separately)
  sweep      bench_kernels.bench_stoicc: every instance x split x tile shape of the kernel
             benchmark; then the inspector's choice and the sweep's best are timed again side by
             side (3 alternating rounds each, the benchmark protocol), giving `chosen / best`.

Writes bench/results/inspector_<gpu>.md and .json (gpu, date, commit, records).

  python bench/bench_inspector.py                     # all 10 cases (about a minute on an H100)
  python bench/bench_inspector.py --shapes 4096x4096 --m 16
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

if __package__ in (None, ""):   # run as a script: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import stoicc_ext as STOICC  # noqa: E402
from stoicc_ext.tuning import cache as tuning_cache  # noqa: E402
from bench import bench_kernels, run_info  # noqa: E402
from bench.bench_kernels import patch_weight  # noqa: E402
from stoicc_ext.tuning.densify import densify_executor  # noqa: E402
from bench.timing import rotated_copies, time_graph  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096), (22016, 4096)]
MS = [16, 2048]
FRAC = 0.7
DTYPE = torch.float16


def _name(cfg):
    """A config's instance name; the densify schedule (expand + cuBLAS) has none: "densify"."""
    return cfg.get("instance", cfg["schedule"])


def seed_of(N, K, frac):
    return N * 7 + K + int(frac * 100)   # bench_kernels' seed for the same case


def time_config(W, x, cfg, rounds_out, repeats=15):
    """Time one config of the library's schedules with the benchmark protocol (ms)."""
    N, K = W.shape
    Wc = STOICC.compress(W, cfg)
    Wcs = rotated_copies(Wc)
    ex = densify_executor(cfg) if cfg["schedule"] == "densify" else STOICC.executor_for(cfg, N, K)
    ms = time_graph(lambda *w: ex(x, *w), [tuple(w) for w in Wcs], repeats=repeats)
    rounds_out.append(ms)
    del Wcs
    return ms


def sweep_config(best):
    """bench_stoicc's best (ms, instance name, split, block, nbytes) as a config dict."""
    _, name, split, block, _ = best[:5]
    if name == "densify":
        return {"BLOCK_N": block[0], "BLOCK_K": block[1], "schedule": "densify"}
    e = next(e for e in STOICC.list_instances() if e["name"] == name)
    return {"BLOCK_M": e["BLOCK_M"], "BLOCK_N": e["BLOCK_N"], "BLOCK_K": e["BLOCK_K"], "schedule": e["schedule"],
            "SPLIT_K": split, "instance": name}


def child(cases):
    """In a new process: inspect each case once against the disk cache; print JSON lines."""
    t0 = time.perf_counter()
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    init_s = time.perf_counter() - t0
    out = []
    for N, K, M in cases:
        W = patch_weight(N, K, FRAC, DTYPE, seed=seed_of(N, K, FRAC))
        X = torch.randn(M, K, device="cuda", dtype=DTYPE)
        torch.cuda.synchronize()
        insp = STOICC.Inspector(verbose=False)
        t = time.perf_counter()
        _, cfg = insp.inspect(X, W, sparse_arg=1)
        dt = time.perf_counter() - t
        out.append(dict(N=N, K=K, M=M, seconds=dt, source=insp.last_report.source, instance=_name(cfg),
                        split=cfg.get("SPLIT_K", 0)))
        del W, X
        torch.cuda.empty_cache()
    print(json.dumps(dict(cuda_init_s=init_s, cases=out)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=None, help="comma list NxK")
    ap.add_argument("--m", default=None, help="comma list of M")
    ap.add_argument("--no-sweep", action="store_true", help="skip the exhaustive sweep")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_inspector.py needs a CUDA GPU")
    if args.child:
        child(json.loads(args.child))
        return

    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    ms_list = MS if not args.m else [int(v) for v in args.m.split(",")]
    cache_dir = tempfile.mkdtemp(prefix="stoicc_bench_cache_")
    os.environ["STOICC_CACHE_DIR"] = cache_dir
    os.environ.pop("STOICC_DISABLE_CACHE", None)
    os.environ.pop("STOICC_FORCE_RETUNE", None)
    gpu = torch.cuda.get_device_name()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    commit = run_info.commit()
    print(f"{gpu}, {sms} SMs, commit {commit}; cache dir {cache_dir}", flush=True)
    t_all = time.perf_counter()
    records = []
    hdr = (f"{'N':>6} {'K':>6} {'M':>5} {'cands':>5} {'cold_s':>7} {'cached_ms':>9} {'newW_ms':>8} "
           f"{'chosen_us':>9} {'sweep_us':>9} {'ratio':>6} same  chosen")
    print(hdr, flush=True)
    for N, K in shapes:
        W = patch_weight(N, K, FRAC, DTYPE, seed=seed_of(N, K, FRAC))
        for M in ms_list:
            X = torch.randn(M, K, device="cuda", dtype=DTYPE)
            tuning_cache.clear_memory()
            torch.cuda.synchronize()
            insp = STOICC.Inspector(verbose=False)
            t = time.perf_counter()
            _, cfg = insp.inspect(X, W, sparse_arg=1)
            cold_s = time.perf_counter() - t
            rep = insp.last_report
            assert rep.source == "tuned", rep.source
            n_cands = len(rep.candidates)
            n_failed = sum(1 for c in rep.candidates if c.get("error"))
            tuned_ms = rep.ranked()[0]["ms"]
            cached = []
            for _ in range(5):
                i2 = STOICC.Inspector(verbose=False)
                t = time.perf_counter()
                _, cfg2 = i2.inspect(X, W, sparse_arg=1)
                cached.append(time.perf_counter() - t)
                assert i2.last_report.source == "memory cache" and cfg2 == cfg
            W2 = W.clone()
            torch.cuda.synchronize()
            i3 = STOICC.Inspector(verbose=False)
            t = time.perf_counter()
            i3.inspect(X, W2, sparse_arg=1)
            newW_s = time.perf_counter() - t
            del W2
            rec = dict(n=N, k=K, m=M, frac=FRAC, dtype="float16", candidates=n_cands, failed=n_failed,
                       cold_s=cold_s, cached_ms=statistics.median(cached) * 1e3, cached_new_tensor_ms=newW_s * 1e3,
                       chosen=dict(instance=_name(cfg), split_k=cfg.get("SPLIT_K", 0), schedule=cfg["schedule"],
                                   block=[cfg["BLOCK_N"], cfg["BLOCK_K"]]),
                       chosen_tuning_ms=tuned_ms, top5=[dict(instance=_name(c["config"]),
                                                            split_k=c["config"].get("SPLIT_K", 0), ms=c["ms"])
                                                       for c in rep.ranked()[:5]])
            if not args.no_sweep:
                best = bench_kernels.bench_stoicc(W, X)
                scfg = sweep_config(best)
                a, b = [], []
                for _ in range(3):
                    time_config(W, X, cfg, a)
                    time_config(W, X, scfg, b)
                same = _name(scfg) == _name(cfg) and scfg.get("SPLIT_K", 0) == cfg.get("SPLIT_K", 0) and \
                    (scfg["BLOCK_N"], scfg["BLOCK_K"]) == (cfg["BLOCK_N"], cfg["BLOCK_K"])
                rec.update(sweep=dict(instance=best[1], split_k=best[2], block=list(best[3]), sweep_ms=best[0]),
                           chosen_ms=statistics.median(a), sweep_best_ms=statistics.median(b),
                           ratio=statistics.median(a) / statistics.median(b), same_config=same)
            records.append(rec)
            r = rec
            print(f"{N:>6} {K:>6} {M:>5} {n_cands:>5} {cold_s:>7.2f} {r['cached_ms']:>9.3f} "
                  f"{r['cached_new_tensor_ms']:>8.2f} "
                  f"{r.get('chosen_ms', tuned_ms) * 1e3:>9.1f} {r.get('sweep_best_ms', float('nan')) * 1e3:>9.1f} "
                  f"{r.get('ratio', float('nan')):>6.3f} {str(r.get('same_config', '-')):<5} "
                  f"{_name(cfg)}/{cfg.get('SPLIT_K', 0)}", flush=True)
            del X
        del W
        torch.cuda.empty_cache()

    # the disk cache from a new process
    cases = [[r["n"], r["k"], r["m"]] for r in records]
    env = dict(os.environ, STOICC_CACHE_DIR=cache_dir)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(cases)],
                         capture_output=True, text=True, env=env, timeout=600)
    proc_s = time.perf_counter() - t
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        sys.exit("child process failed")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for r, c in zip(records, res["cases"]):
        r["new_process_ms"] = c["seconds"] * 1e3
        r["new_process_source"] = c["source"]
        r["new_process_same_choice"] = (c["instance"], c["split"]) == (r["chosen"]["instance"], r["chosen"]["split_k"])
    meta = dict(child_process_wall_s=proc_s, child_cuda_init_s=res["cuda_init_s"],
                total_wall_s=time.perf_counter() - t_all)
    for r in records:
        print(f"  new process: {r['n']}x{r['k']} M={r['m']}: {r['new_process_ms']:.2f} ms ({r['new_process_source']}, "
              f"same choice: {r['new_process_same_choice']})")
    print(f"child process: {proc_s:.1f} s wall, CUDA init {res['cuda_init_s']:.2f} s; total {meta['total_wall_s']:.1f} s")
    write_results(records, meta, gpu, sms, commit, args)


def write_results(records, meta, gpu, sms, commit, args):
    os.makedirs(args.out, exist_ok=True)
    tag = run_info.gpu_tag(gpu, args.tag)
    date = run_info.today()
    with open(os.path.join(args.out, f"inspector_{tag}.json"), "w") as f:
        json.dump(dict(gpu=gpu, sms=sms, date=date, commit=commit, frac=FRAC, dtype="float16", **meta,
                       protocol="stoicc_ext.timing.time_graph (CUDA graph, weights rotated past L2, median of 15); "
                                "cold = empty cache directory; sweep = bench_kernels.bench_stoicc",
                       records=records), f, indent=1)
    lines = [f"# Inspector benchmark on {gpu}", "",
             f"Date {date}, commit `{commit}`, {sms} SMs. Synthetic PATCH weights, 70 % of the 128x128 tiles 2:4, "
             "float16. `cold`: `Inspector().inspect` with an empty cache directory; `cached`: a second inspect in "
             "the same process (memory, median of 5); `cached W'`: same process, a copy of W (tile-map fingerprint "
             "recomputed); `new proc`: the inspect call in a new process (disk cache). `chosen` and `sweep best` are "
             "re-timed side by side (median of 3 alternating rounds, time per call in us); `sweep best` is the "
             "fastest of `bench_kernels.bench_stoicc`'s exhaustive sweep of instance x split x tile shape.", "",
             f"New process: {meta['child_process_wall_s']:.1f} s wall in all (Python start, torch import, "
             f"CUDA init {meta['child_cuda_init_s']:.2f} s, weight generation); whole run {meta['total_wall_s']:.0f} s.",
             "", "| N x K | M | candidates | cold s | cached ms | cached W' ms | new proc ms | chosen | chosen us "
             "| sweep best | sweep best us | chosen / best | same config |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        ch = f"{r['chosen']['instance']} / {r['chosen']['split_k']}"
        sw = f"{r['sweep']['instance']} / {r['sweep']['split_k']}" if "sweep" in r else ""
        lines.append(f"| {r['n']}x{r['k']} | {r['m']} | {r['candidates']} | {r['cold_s']:.2f} | {r['cached_ms']:.3f} | "
                     f"{r['cached_new_tensor_ms']:.2f} | {r.get('new_process_ms', float('nan')):.2f} | {ch} | "
                     f"{r.get('chosen_ms', r['chosen_tuning_ms']) * 1e3:.1f} | {sw} | "
                     f"{r.get('sweep_best_ms', float('nan')) * 1e3:.1f} | {r.get('ratio', float('nan')):.3f} | {r.get('same_config', '')} |")
    with open(os.path.join(args.out, f"inspector_{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/inspector_{tag}.md and .json")


if __name__ == "__main__":
    main()
