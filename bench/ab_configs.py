"""A/B timing of fixed (instance, split) configurations, for kernel experiments: run it once per
build (STOICC_LIBRARY=path/to/_C.so) and compare the printed times. Same protocol as
bench_kernels.py (CUDA graph, weights rotated past the L2, median)."""
import argparse
import os
import sys

import torch

if __package__ in (None, ""):   # run as a script: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import stoicc_ext  # noqa: E402
from bench.bench_kernels import patch_weight  # noqa: E402
from bench.timing import rotated_copies, time_graph  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--shape", default="11008x4096")
ap.add_argument("--m", type=int, default=16)
ap.add_argument("--fracs", default="0.0,0.5,1.0")
ap.add_argument("--configs", default="spmm_m16_n128_k128_w4x1_s4_seq:1,spmm_m16_n128_k128_w4x1_s3_splitk:2,"
                "spmm_m16_n64_k128_w4x1_s4_splitk:1,spmm_m16_n128_k128_w4x1_s3_streamk:132")
args = ap.parse_args()
N, K = (int(v) for v in args.shape.split("x"))
by_name = {e["name"]: e for e in stoicc_ext.list_instances()}
tag = os.path.basename(os.environ.get("STOICC_LIBRARY", "default"))
for frac in (float(f) for f in args.fracs.split(",")):
    W = patch_weight(N, K, frac, torch.float16, seed=7)
    x = torch.randn(args.m, K, device="cuda", dtype=torch.float16)
    for cfg in args.configs.split(","):
        name, split = cfg.split(":")
        e = by_name.get(name)
        if e is None:
            continue
        bn, bk = e["BLOCK_N"], e["BLOCK_K"]
        Wc = stoicc_ext.compress(W, bn, bk)
        Wcs = rotated_copies(Wc)
        ms = time_graph(lambda w: torch.ops.stoicc.spmm(x, *w, None, N, K, bn, bk, e["index"], int(split)),
                        [(w,) for w in Wcs])
        print(f"{tag:>12} f={frac} {name}:{split} {ms * 1e3:7.1f} us {Wc.nbytes / ms / 1e9:5.2f} TB/s", flush=True)
