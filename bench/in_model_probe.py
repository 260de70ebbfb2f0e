"""Does a kernel-table speedup survive inside a model? Decode-size linears timed two ways.

The kernel table (bench_kernels.py) times back-to-back calls of one kernel in a CUDA graph. With
programmatic dependent launch (PDL) each stoicc call starts its prologue and L2 weight prefetch
while the previous stoicc call is finishing. In a model the kernel before a linear is a norm, an
activation or an attention kernel, which never lets its successor start early. Here each call is
also timed behind such a producer: a torch copy that writes the linear's input (as the norm
does in the model), and the copy's own time is subtracted. cuBLAS (F.linear) is timed the same
two ways. Run it once with STOICC_DISABLE_PDL=1 to see PDL's share.

    PYTHONPATH=$PWD python bench/in_model_probe.py [--out DIR]
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

if __package__ in (None, ""):   # run as a script: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import run_info  # noqa: E402
from bench.bench_kernels import bench_stoicc, patch_weight  # noqa: E402

import stoicc_ext  # noqa: E402
from bench.timing import rotated_copies, time_graph  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]  # Llama-2-7B's decode linears


def probe(N, K, frac, M=16, repeats=30):
    W = patch_weight(N, K, frac, torch.float16, seed=N * 7 + K + int(frac * 100))
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    _, name, split, (bn, bk), _, _ = bench_stoicc(W, x, densify=False)
    inst = next(e["index"] for e in stoicc_ext.list_instances() if e["name"] == name)
    xb = torch.empty_like(x)  # the input buffer a producer kernel writes before each linear
    Wcs = [(w,) for w in rotated_copies(stoicc_ext.compress(W, bn, bk))]
    Ws = [(w,) for w in rotated_copies(W)]

    def sp(w, inp):
        return torch.ops.stoicc.spmm(inp, *w, None, N, K, bn, bk, inst, split)

    copy_ms = time_graph(lambda w: xb.copy_(x), Ws, repeats=repeats)
    row = dict(n=N, k=K, frac=frac, m=M, instance=f"{name}/{split}", block=f"{bn}x{bk}", copy_ms=copy_ms)
    row["stoicc_b2b_ms"] = time_graph(lambda w: sp(w, x), Wcs, repeats=repeats)
    row["stoicc_after_producer_ms"] = time_graph(lambda w: (xb.copy_(x), sp(w, xb)), Wcs, repeats=repeats) - copy_ms
    row["cublas_b2b_ms"] = time_graph(lambda w: F.linear(x, w), Ws, repeats=repeats)
    row["cublas_after_producer_ms"] = time_graph(lambda w: (xb.copy_(x), F.linear(xb, w)), Ws,
                                                 repeats=repeats) - copy_ms
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fracs", default="0,1")
    ap.add_argument("--out", default=None, help="directory for in_model_probe_<gpu>[_nopdl].md")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("in_model_probe.py needs a CUDA GPU")
    pdl = os.environ.get("STOICC_DISABLE_PDL") != "1"
    lines = [f"# In-model probe on {torch.cuda.get_device_name()}", "",
             f"Date {run_info.today()}, commit `{run_info.commit()}`, PDL {'on' if pdl else 'off (STOICC_DISABLE_PDL=1)'}. "
             "M = 16, fp16. `b2b`: back-to-back calls (the kernel table's protocol); `after producer`: each call "
             "behind a torch copy that writes its input, the copy's time subtracted. Microseconds per call.", "",
             "| N x K | f | stoicc instance | tile | stoicc b2b | stoicc after producer | cuBLAS b2b | "
             "cuBLAS after producer | speedup b2b | speedup after producer |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for N, K in SHAPES:
        for frac in (float(f) for f in args.fracs.split(",")):
            r = probe(N, K, frac)
            us = {k: v * 1e3 for k, v in r.items() if k.endswith("_ms")}
            lines.append(f"| {N}x{K} | {frac} | {r['instance']} | {r['block']} | {us['stoicc_b2b_ms']:.1f} | "
                         f"{us['stoicc_after_producer_ms']:.1f} | {us['cublas_b2b_ms']:.1f} | "
                         f"{us['cublas_after_producer_ms']:.1f} | "
                         f"{r['cublas_b2b_ms'] / r['stoicc_b2b_ms']:.2f} | "
                         f"{r['cublas_after_producer_ms'] / r['stoicc_after_producer_ms']:.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        tag = run_info.gpu_tag(torch.cuda.get_device_name(), "" if pdl else "nopdl")
        path = os.path.join(args.out, f"in_model_probe_{tag}.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
