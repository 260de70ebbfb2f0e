"""Runs one spmm configuration a few times without a graph, for ncu / compute-sanitizer.

  ncu --clock-control none -k regex:spmm python bench/profile_case.py --n 11008 --k 4096 --m 16 --frac 1.0 \
      --block 128x64 --instance spmm_m16_n128_k64_w4x1_s4_splitk --split 2
"""
import argparse
import os
import sys

import torch

if __package__ in (None, ""):   # run as a script: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import stoicc_ext  # noqa: E402
from bench.bench_kernels import patch_weight  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=11008)
ap.add_argument("--k", type=int, default=4096)
ap.add_argument("--m", type=int, default=16)
ap.add_argument("--frac", type=float, default=1.0)
ap.add_argument("--block", default="128x128")
ap.add_argument("--instance", default=None, help="instance name (default: heuristic)")
ap.add_argument("--split", type=int, default=0)
ap.add_argument("--iters", type=int, default=3)
ap.add_argument("--check", action="store_true", help="compare with a float reference")
args = ap.parse_args()
bn, bk = (int(v) for v in args.block.split("x"))
W = patch_weight(args.n, args.k, args.frac, torch.float16, seed=1)
Wc = stoicc_ext.compress(W, bn, bk)
x = torch.randn(args.m, args.k, device="cuda", dtype=torch.float16)
idx = -1
if args.instance:
    idx = next(e["index"] for e in stoicc_ext.list_instances() if e["name"] == args.instance)
for _ in range(args.iters):
    y = torch.ops.stoicc.spmm(x, *Wc, None, args.n, args.k, bn, bk, idx, args.split)
torch.cuda.synchronize()
if args.check:
    ref = x.float() @ W.float().T
    err = (y.float() - ref).abs().max().item() / ref.abs().max().item()
    print(f"relative max error {err:.2e}")
    sys.exit(0 if err < 4e-3 else 1)
print("done")
