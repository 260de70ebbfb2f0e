"""Prefill probe for the wgmma kernels: each compiled wgmma instance of the weight's tile shape
against dense cuBLAS (F.linear) and cuSPARSELt (f = 1) at prefill M, in one process.

Timing: each candidate's calls captured in one CUDA graph that cycles through weight copies
whose total exceeds the L2 (weights rotated past the 60 MB L2), X fixed; replays timed with CUDA
events after a warm-up; median of 7 replays, divided by the calls per replay.

python experiments/wgmma-prefill/probe.py [--quick] [--shapes 22016x4096,4096x4096]
    [--block 128,128 --block 128,64]

The two-tile-row kernels (family "wgmma2", instances wgmma2r_*) are timed beside the wgmma ones.
--block may be given several times (the weight is compressed once per tile shape); the table has
one row per tile shape, with the best instance of each family AT THAT TILE and their ratio (a
model tuned for decode on 64x64 tiles runs its prefill on 64x64 tiles too). cuBLAS and cuSPARSELt
are timed once per (shape, f, M) and repeated on each tile's row.
STOICC_PROBE_INSTANCES=name,name restricts the instances.
"""
import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F

import stoicc_ext
from stoicc_ext.testing import random_patch_weight

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096), (22016, 4096), (8192, 8192),
          (28672, 8192), (8192, 28672)]


def graph_time_ms(fns, reps=7):
    """fns: list of zero-arg callables (one per weight copy). Median ms per call."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    for _ in range(2):
        g.replay()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / len(fns))
    return statistics.median(times)


def copies_for(nbytes):
    return max(2, min(12, int(200e6 // max(nbytes, 1)) + 1))


def family_of(e):
    return e.get("family", "mma")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--m", default="2048,512")
    ap.add_argument("--fracs", default="0,0.5,0.7,0.9,1.0")
    ap.add_argument("--block", action="append", help="tile shape BN,BK (repeatable; default 128,128)")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--shapes", help="NxK,NxK (default: all, or the first 3 with --quick)")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    blocks = [tuple(int(v) for v in b.split(",")) for b in (args.block or ["128,128"])]
    shapes = SHAPES[:3] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in sh.split("x")) for sh in args.shapes.split(",")]
    ms = [int(v) for v in args.m.split(",")]
    fracs = [float(v) for v in args.fracs.split(",")]
    only = os.environ.get("STOICC_PROBE_INSTANCES")
    insts = [e for e in stoicc_ext.list_instances() if (e["BLOCK_N"], e["BLOCK_K"]) in blocks
             and (e["name"].startswith("wgmma") or e["BLOCK_M"] >= 128)
             and (not only or e["name"] in only.split(","))]
    print(f"# {torch.cuda.get_device_name()} dtype={args.dtype} tiles {' '.join(f'{bn}x{bk}' for bn, bk in blocks)}; "
          "instances: " + ", ".join(e["name"] for e in insts), flush=True)
    print("| N x K | M | f | tile | cuBLAS us | best stoicc us | speedup | dense-eq TFLOP/s | best instance | cslt us "
          "| best wgmma us | best wgmma2 us | wgmma2/wgmma | all (us) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for (N, K) in shapes:
        for f in fracs:
            W, _ = random_patch_weight(N, K, f, 0.0, dtype=dtype, device="cuda", generator=g)
            ncp = copies_for(N * K * 2)
            dense = [W.clone() for _ in range(ncp)]
            comp = {b: [stoicc_ext.compress(W, *b) for _ in range(ncp)]
                    for b in blocks if any((e["BLOCK_N"], e["BLOCK_K"]) == b for e in insts)}
            cslt = None
            if f == 1.0 and hasattr(torch, "_cslt_compress"):
                try:
                    wcs = [torch._cslt_compress(W) for _ in range(ncp)]
                    alg = torch._cslt_sparse_mm_search(wcs[0], torch.randn(K, ms[0], dtype=dtype, device="cuda"))
                    cslt = (wcs, alg)
                except Exception as exc:  # cuSPARSELt missing or refusing the shape
                    print(f"# cslt unavailable: {exc}", file=sys.stderr)
            for M in ms:
                x = torch.randn(M, K, dtype=dtype, device="cuda")
                t_cublas = graph_time_ms([lambda w=w: F.linear(x, w) for w in dense])
                res = {}
                for e in insts:
                    cs = comp[(e["BLOCK_N"], e["BLOCK_K"])]
                    try:
                        res[e["name"]] = graph_time_ms(
                            [lambda c=c: stoicc_ext.spmm(x, c, instance=e["index"], split_k=1) for c in cs])
                    except Exception as exc:
                        print(f"# {e['name']}: {exc}", file=sys.stderr)
                t_cslt = None
                if cslt is not None:
                    xt = x.t().contiguous()
                    try:
                        t_cslt = graph_time_ms([lambda w=w: torch._cslt_sparse_mm(w, xt, alg_id=cslt[1]) for w in cslt[0]])
                    except Exception as exc:
                        print(f"# cslt: {exc}", file=sys.stderr)
                fam = {e["name"]: family_of(e) for e in insts}
                tile_of = {e["name"]: (e["BLOCK_N"], e["BLOCK_K"]) for e in insts}
                for blk in blocks:
                    rb = {k: v for k, v in res.items() if tile_of[k] == blk}
                    best = min(rb, key=rb.get) if rb else None
                    tb = rb[best] if best else float("nan")
                    tflops = 2.0 * M * N * K / (tb * 1e-3) / 1e12
                    bw = min((v for k, v in rb.items() if fam[k] == "wgmma"), default=None)
                    bw2 = min((v for k, v in rb.items() if fam[k] == "wgmma2"), default=None)
                    ratio = f"{bw2 / bw:.3f}" if bw and bw2 else ""
                    allc = " ".join(f"{k.replace('wgmma2r_', 'w2r').replace('wgmma_', 'w').replace('spmm_', 's')}={v * 1e3:.1f}"
                                    for k, v in sorted(rb.items()))
                    print(f"| {N}x{K} | {M} | {f} | {blk[0]}x{blk[1]} | {t_cublas * 1e3:.1f} | {tb * 1e3:.1f} | "
                          f"{t_cublas / tb:.2f} | {tflops:.0f} | {best} | {'' if t_cslt is None else f'{t_cslt * 1e3:.1f}'} | "
                          f"{'' if bw is None else f'{bw * 1e3:.1f}'} | {'' if bw2 is None else f'{bw2 * 1e3:.1f}'} | {ratio} | "
                          f"{allc} |", flush=True)
            del dense, comp, cslt
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
