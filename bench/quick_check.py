"""A quick look at decode speed (M = 16) on a few shapes: stoicc heuristic vs dense cuBLAS."""
import torch
import torch.nn.functional as F

import stoicc_ext
from stoicc_ext.synthetic import random_patch_weight
from timing import copies_for, time_graph

torch.manual_seed(0)
print(f"{'N':>6} {'K':>6} {'M':>5} {'frac':>5} {'stoicc_ms':>10} {'cublas_ms':>10} {'speedup':>8} {'TB/s':>6}")
for (N, K) in [(4096, 4096), (11008, 4096), (4096, 11008)]:
    for M in (16, 2048):
        for frac in (0.0, 0.5, 1.0):
            W, _ = random_patch_weight(N, K, frac, dtype=torch.float16, device="cuda")
            Wc = stoicc_ext.compress(W, 128, 128)
            R = copies_for(Wc.nbytes)
            Wcs = [Wc] + [Wc.to("cuda") if False else type(Wc)([t.clone() for t in Wc], **Wc._kwargs()) for _ in range(R - 1)]
            Ws = [W] + [W.clone() for _ in range(R - 1)]
            x = torch.randn(M, K, device="cuda", dtype=torch.float16)
            ts = time_graph(lambda w: stoicc_ext.spmm(x, w), [(w,) for w in Wcs])
            tc = time_graph(lambda w: F.linear(x, w), [(w,) for w in Ws])
            print(f"{N:>6} {K:>6} {M:>5} {frac:>5} {ts:>10.4f} {tc:>10.4f} {tc / ts:>8.2f} {Wc.nbytes / ts / 1e9:>6.2f}", flush=True)
            del Wcs, Ws
