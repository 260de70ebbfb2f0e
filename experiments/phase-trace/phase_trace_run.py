# EXPERIMENT (not committed): per-CTA phase trace of the decode kernel (trace build writes into X)
import statistics as st, sys, torch, stoicc_ext
sys.path.insert(0, "bench")
from bench_kernels import patch_weight
names = {e["name"]: e["index"] for e in stoicc_ext.list_instances()}
PH = ["entry->prefetch issued", "prefetch->griddep_wait done", "wait->plan done", "plan->first item landed",
      "first item->last item done", "last item->reduction start", "part stored+cluster_sync 1",
      "DSMEM sum + Y stores", "cluster_sync 2"]
def analyse(xb, ncta, label):
    t = xb.view(torch.int64).flatten()[: ncta * 14].view(ncta, 14).cpu().tolist()
    t = [r for r in t if r[10] == 0xC0FFEE]
    ns_per_cyc = st.median([(r[8] - r[7]) / max(r[6] - r[0], 1) for r in t])
    g0 = min(r[7] for r in t)
    print(f"  {label}: {len(t)} CTAs traced, ns/cycle {ns_per_cyc:.3f}, span {(max(r[8] for r in t) - g0) / 1e3:.2f} us; "
          f"start spread median {st.median(r[7] - g0 for r in t) / 1e3:.2f} max {max(r[7] - g0 for r in t) / 1e3:.2f} us; "
          f"CTA time median {st.median(r[8] - r[7] for r in t) / 1e3:.2f} max {max(r[8] - r[7] for r in t) / 1e3:.2f} us")
    seq = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 9), (9, 11), (11, 12), (12, 6)]
    for (i, j), name in zip(seq, PH):
        d = [(r[j] - r[i]) * ns_per_cyc / 1e3 for r in t]
        print(f"    {name:32s} median {st.median(d):6.2f} us  p90 {sorted(d)[int(0.9 * len(d))]:6.2f}  max {max(d):6.2f}")
for (N, K, inst, bn, bk, split) in [(4096, 4096, "spmm_m16_n128_k128_w4x1_s3_splitk", 128, 128, 6),
                                    (11008, 4096, "spmm_m16_n128_k64_w4x1_s4_splitk", 128, 64, 4)]:
    W = patch_weight(N, K, 1.0, torch.float16, seed=1)
    Wc = stoicc_ext.compress(W, bn, bk)
    x = torch.randn(16, K, device="cuda", dtype=torch.float16)
    xb = x.clone()
    idx = names[inst]
    ncta = (N // bn) * split
    f = lambda: torch.ops.stoicc.spmm(xb, *Wc, None, N, K, bn, bk, idx, split)
    print(f"{N}x{K} f=1 M=16 {inst} split {split}: {ncta} CTAs")
    for _ in range(30):
        xb.copy_(x); f()
    torch.cuda.synchronize()
    analyse(xb, ncta, "eager, after a copy kernel (as in the model)")
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(20):
            f()
    for _ in range(5):
        g.replay()
    torch.cuda.synchronize()
    analyse(xb, ncta, "graph of 20 back-to-back calls, last call")
