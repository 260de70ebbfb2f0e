"""stoicc on one synthetic PATCH-pruned Llama-2-7B decoder block.

    python examples/demo.py [--sparsity {25,35,45}] [--full] [--device cpu|cuda] ...

The seven linear layers of one Llama-2-7B decoder block (q, k, v, o: 4096 x 4096; gate, up:
11008 x 4096; down: 4096 x 11008, in the nn.Linear [out, in] layout) are pruned PATCH-style
with ``stoicc_ext.testing.random_patch_weight``: every 128 x 128 tile is 2:4 or dense, with a
2:4-tile fraction f = 2 * sparsity (35 % sparsity: 70 % of the tiles are 2:4). The weights are
synthetic (random values, random tile placement), not those of a real PATCH checkpoint.

On a GPU each layer goes through the decode-then-prefill tuning recipe (``tune_layer``): an
``stoicc_ext.Inspector(use_default_configs=True)`` tunes the decode shape (the smallest M, 16 by
default), which picks the tile shape; every other M (prefill, 2048) is tuned with that tile shape
pinned (``set_configs(create_configs(BLOCK_N=[...], BLOCK_K=[...]))``), so one compressed weight
(``inspector.compress(W, config_decode)``) serves all of them. Choices go to the tuning cache
(``$STOICC_CACHE_DIR``, default ``~/.cache/stoicc``): a second run reads them back instead of
tuning. The demo reports the tile counts and bytes of that weight against the dense one, checks
each chosen executor against a float32 ``x @ W.T`` and times it against dense
``torch.nn.functional.linear`` (cuBLAS) with the protocol of ``stoicc_ext.tuning.timing`` (weights
rotated past the L2, CUDA graph, median); it prints the chosen kernel (instance, SPLIT_K) of
each layer and M.

Without a GPU it compresses with 128 x 128 tiles (``stoicc_ext.compress(W, 128, 128)``) and
checks ``stoicc_ext.spmm`` for correctness and memory only, on the same layers scaled down by 8
(512 x 512, 1408 x 512, 512 x 1408) unless ``--full`` is given. The exit status is 0 when every
check passes, 1 when one fails, 2 when the compiled extension is missing.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

import stoicc_ext
from stoicc_ext.tuning import cache as tuning_cache
from stoicc_ext.tuning.report import _short
from stoicc_ext.testing import random_patch_weight

# Llama-2-7B: hidden 4096, intermediate 11008; nn.Linear weights are [out_features, in_features].
LLAMA2_7B_BLOCK = (
    ("q_proj", 4096, 4096), ("k_proj", 4096, 4096), ("v_proj", 4096, 4096), ("o_proj", 4096, 4096),
    ("gate_proj", 11008, 4096), ("up_proj", 11008, 4096), ("down_proj", 4096, 11008),
)
# The same block scaled down by 8 for CPU runs (11008 / 8 = 1376 is not a multiple of 128,
# so the intermediate size becomes 1408 = 11 * 128).
SMALL_BLOCK = (
    ("q_proj", 512, 512), ("k_proj", 512, 512), ("v_proj", 512, 512), ("o_proj", 512, 512),
    ("gate_proj", 1408, 512), ("up_proj", 1408, 512), ("down_proj", 512, 1408),
)
SPARSITIES = (25, 35, 45)
DECODE_M, PREFILL_M = 16, 2048
CPU_M = 4
# Max |y - ref| / max |ref| allowed: the output rounding (2^-11 for fp16, 2^-8 for bf16,
# relative) plus fp32-accumulation noise, with room to spare; a wrong tile is far above it.
TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 1.6e-2}
DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python examples/demo.py",
        description="stoicc on the 7 linear layers of one synthetic PATCH-pruned Llama-2-7B decoder "
                    "block: compression, correctness against a float32 reference and, on a GPU, "
                    "speed against dense cuBLAS (torch.nn.functional.linear).")
    p.add_argument("--sparsity", type=int, choices=SPARSITIES, default=35,
                   help="PATCH sparsity target in percent; the 2:4-tile fraction is twice it "
                        "(default: 35, i.e. 70%% of the tiles are 2:4)")
    p.add_argument("--full", action="store_true",
                   help="full Llama-2-7B shapes on the CPU too (default on a GPU; on the CPU the "
                        "default is the block scaled down by 8)")
    p.add_argument("--device", default=None,
                   help="cpu or cuda[:i] (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES),
                   help="weight and activation dtype (default: float16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights and inputs (default: 0)")
    p.add_argument("--tokens", default=None,
                   help=f"comma list of M (tokens per call) to check and, on a GPU, time "
                        f"(default: {DECODE_M},{PREFILL_M} on a GPU, {CPU_M} on the CPU)")
    p.add_argument("--repeats", type=int, default=20, help="timed CUDA-graph replays per measurement (default: 20)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    args.dtype = DTYPES[args.dtype]
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    if dev.type not in ("cpu", "cuda"):
        p.error(f"--device {args.device}: only cpu and cuda are supported")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch sees no CUDA device")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    args.device = dev
    if args.tokens is None:
        args.tokens = [DECODE_M, PREFILL_M] if dev.type == "cuda" else [CPU_M]
    else:
        try:
            args.tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
        except ValueError:
            p.error(f"--tokens {args.tokens!r}: expected a comma list of integers")
        if not args.tokens or min(args.tokens) < 1:
            p.error("--tokens: need at least one M >= 1")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def _fmt_bytes(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _phase(M):
    return "decode" if M <= 64 else "prefill"


def check_layer(x, W, fn, tol):
    """Max |fn(x) - ref| / max |ref| with ref = float32 x @ W.T; NaN in the output fails."""
    y = fn(x)
    ref = x.float() @ W.float().T
    scale = ref.abs().max().item()
    err = (y.float() - ref).abs().max().item()
    rel = err / scale if scale > 0 else err
    ok = bool(torch.isfinite(y).all().item()) and rel <= tol
    return rel, ok


def tune_layer(W, xs):
    """The decode-then-prefill tuning recipe for one weight: returns ``(Wc, kernels, compress_s)``.

    ``xs``: {M: x [M, K]}. The smallest M (decode) is tuned first and picks the tile shape; every
    other M is tuned with that tile shape pinned, so the one ``Wc`` (compressed for the decode
    config) serves all of them. ``kernels``: {M: dict(executor, config, source, inspect_s)};
    ``compress_s``: the time of ``inspector.compress`` alone.
    """
    inspector = stoicc_ext.Inspector(use_default_configs=True, verbose=False)
    Ms = sorted(xs)
    kernels = {}

    def inspect(M):
        executor, config = inspector.inspect(xs[M], W)
        rep = inspector.last_report
        kernels[M] = dict(executor=executor, config=config, source=rep.source, inspect_s=rep.elapsed_s)
        return config

    cfg_dec = inspect(Ms[0])
    inspector.set_configs(stoicc_ext.create_configs(BLOCK_N=[cfg_dec["BLOCK_N"]], BLOCK_K=[cfg_dec["BLOCK_K"]]))
    for M in Ms[1:]:
        inspect(M)
    if W.is_cuda:
        torch.cuda.synchronize(W.device)
    t0 = time.perf_counter()
    Wc = inspector.compress(W, cfg_dec)
    if W.is_cuda:
        torch.cuda.synchronize(W.device)
    return Wc, kernels, time.perf_counter() - t0


def _tuning_str(tokens):
    cache = "disabled (STOICC_DISABLE_CACHE)" if tuning_cache.cache_disabled() else tuning_cache.cache_dir()
    return (f"chosen per layer by stoicc_ext.Inspector(use_default_configs=True): M={min(tokens)} picks the "
            f"tile shape, the other M are tuned at it; tuning cache: {cache}")


def _kernel_str(k):
    return f"{_short(k['config'])} ({k['source']}, {k['inspect_s']:.2f} s)"


def time_layer(W, Wc, executor, config, M, dtype, device, repeats, gen):
    """(stoicc_ms, dense_ms) per call of ``executor(x, *Wc, **config)`` and of F.linear, each
    over its own rotated weight copies (stoicc_ext.tuning.timing)."""
    from stoicc_ext.tuning.timing import rotated_copies, time_graph

    x = torch.randn(M, W.shape[1], generator=gen).to(dtype).to(device)
    Wcs, Ws = rotated_copies(Wc), rotated_copies(W)
    t_stoicc = time_graph(lambda w: executor(x, *w, **config), [(w,) for w in Wcs], repeats=repeats)
    t_dense = time_graph(lambda w: F.linear(x, w), [(w,) for w in Ws], repeats=repeats)
    del Wcs, Ws
    return t_stoicc, t_dense


def measure_layer(name, W, xs, tokens, tol, tuned, repeats, gen):
    """One layer's result row. ``xs``: {M: x}. ``tuned`` (the GPU path): the Inspector picks the
    kernels (``tune_layer``), each is checked through its executor and timed against F.linear;
    otherwise (CPU) 128 x 128 tiles and ``stoicc_ext.spmm`` are checked, nothing is timed."""
    N, K = W.shape
    kernels = {}
    if tuned:
        Wc, kernels, t_compress = tune_layer(W, xs)     # tunes (or reads the cache), then compresses
    else:
        t0 = time.perf_counter()
        Wc = stoicc_ext.compress(W, 128, 128)
        t_compress = time.perf_counter() - t0
    row = dict(layer=name, N=N, K=K, tile=f"{Wc.block_n}x{Wc.block_k}", tiles_sparse_24=Wc.num_sparse_tiles,
               tiles_dense=Wc.num_dense_tiles, tiles_empty=Wc.num_empty_tiles, bytes_dense=Wc.dense_nbytes,
               bytes_compressed=Wc.nbytes, ratio=Wc.nbytes / Wc.dense_nbytes, compress_s=t_compress,
               kernels=[dict(M=M, phase=_phase(M), config=k["config"], source=k["source"],
                             inspect_s=k["inspect_s"]) for M, k in kernels.items()],
               checks=[], timings=[])
    for M in tokens:
        if tuned:
            ex, cfg = kernels[M]["executor"], kernels[M]["config"]
            fn = lambda x, ex=ex, cfg=cfg: ex(x, *Wc, **cfg)  # noqa: E731
        else:
            fn = lambda x: stoicc_ext.spmm(x, Wc)  # noqa: E731
        rel, ok = check_layer(xs[M], W, fn, tol)
        row["checks"].append(dict(M=M, rel_err=rel, ok=ok))
    row["ok"] = all(c["ok"] for c in row["checks"])
    if tuned:
        for M in tokens:
            k = kernels[M]
            ts, td = time_layer(W, Wc, k["executor"], k["config"], M, W.dtype, W.device, repeats, gen)
            row["timings"].append(dict(M=M, phase=_phase(M), stoicc_ms=ts, dense_ms=td, speedup=td / ts,
                                       weight_TBps=Wc.nbytes / (ts * 1e-3) / 1e12,
                                       instance=k["config"].get("instance", k["config"].get("schedule")),
                                       SPLIT_K=k["config"].get("SPLIT_K")))
    return row


def print_layer(row):
    """The progress line of one layer, and on the GPU one line per M with the chosen kernel."""
    worst = max(c["rel_err"] for c in row["checks"])
    line = (f"{row['layer']:<9} {row['N']:>5}x{row['K']:<5} tiles {row['tile']} 2:4/dense/empty "
            f"{row['tiles_sparse_24']:>4}/{row['tiles_dense']:>4}/{row['tiles_empty']:<3} "
            f"{_fmt_bytes(row['bytes_dense']):>9} -> {_fmt_bytes(row['bytes_compressed']):>9} "
            f"({row['ratio']:.3f}x)  err {worst:.1e} {'PASS' if row['ok'] else 'FAIL'}")
    for t in row["timings"]:
        line += f"  M={t['M']}: {t['stoicc_ms'] * 1e3:.0f} vs {t['dense_ms'] * 1e3:.0f} us ({t['speedup']:.2f}x)"
    print(line, flush=True)
    for k in row["kernels"]:
        print(f"{'':<9}   M={k['M']:<5} {_kernel_str(k)}", flush=True)


def geomean(xs):
    xs = [v for v in xs if v and v > 0]
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else None


def run(args):
    dev, dtype = args.device, args.dtype
    on_gpu = dev.type == "cuda"
    frac = 2 * args.sparsity / 100
    shapes = LLAMA2_7B_BLOCK if (on_gpu or args.full) else SMALL_BLOCK
    tol = TOLERANCE[dtype]
    dname = str(dtype).replace("torch.", "")

    print(f"stoicc {stoicc_ext.__version__} demo: one synthetic PATCH-pruned Llama-2-7B decoder block "
          f"({'full shapes' if shapes is LLAMA2_7B_BLOCK else 'shapes scaled down by 8'}), "
          f"{args.sparsity}% sparsity = {frac:.0%} of the 128x128 tiles 2:4, the rest dense; {dname}, seed {args.seed}")
    gpu_name = None
    if on_gpu:
        props = torch.cuda.get_device_properties(dev)
        gpu_name = props.name
        print(f"device: {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}; "
              f"timing M = {', '.join(map(str, args.tokens))} against dense torch.nn.functional.linear (cuBLAS)")
        print(f"kernels: {_tuning_str(args.tokens)}")
    else:
        print(f"device: cpu, torch {torch.__version__}")
        print("no CUDA device: checking correctness and memory only; timings need a GPU")
    if not stoicc_ext.extension_loaded:
        print(f"error: the compiled extension is not available ({stoicc_ext.extension_error}); "
              f"build it with: bash scripts/setup_env.sh", file=sys.stderr)
        return 2, None
    print(f"check: max|spmm - ref| / max|ref| <= {tol:g}, ref = float32 x @ W.T, M = "
          f"{', '.join(map(str, args.tokens))}")
    print()

    if on_gpu:
        torch.cuda.set_device(dev)
    rows = []
    t_start = time.time()
    for i, (name, N, K) in enumerate(shapes):
        gen = torch.Generator().manual_seed(args.seed * 1000 + i)
        W, _ = random_patch_weight(N, K, frac, dtype=dtype, device=dev, generator=gen)
        xs = {M: torch.randn(M, K, generator=gen).to(dtype).to(dev) for M in args.tokens}
        row = measure_layer(name, W, xs, args.tokens, tol, on_gpu, args.repeats, gen)
        rows.append(row)
        print_layer(row)
        del W, xs
        if on_gpu:
            torch.cuda.empty_cache()
    elapsed = time.time() - t_start

    # ---- final table and summary
    print()
    hdr = (f"{'layer':<9} {'N x K':>11} {'tile':>7} {'2:4':>5} {'dense':>5} {'empty':>5} {'MiB dense':>9} "
           f"{'MiB stoicc':>10} {'ratio':>6} {'rel err':>8} {'check':>5}")
    for M in (args.tokens if on_gpu else []):
        hdr += f" {'x M=' + str(M):>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        line = (f"{r['layer']:<9} {str(r['N']) + 'x' + str(r['K']):>11} {r['tile']:>7} {r['tiles_sparse_24']:>5} "
                f"{r['tiles_dense']:>5} {r['tiles_empty']:>5} {r['bytes_dense'] / 2**20:>9.2f} {r['bytes_compressed'] / 2**20:>10.2f} "
                f"{r['ratio']:>6.3f} {max(c['rel_err'] for c in r['checks']):>8.1e} {'PASS' if r['ok'] else 'FAIL':>5}")
        for t in r["timings"]:
            line += f" {t['speedup']:>8.2f}x"
        print(line)
    total_dense = sum(r["bytes_dense"] for r in rows)
    total_c = sum(r["bytes_compressed"] for r in rows)
    n_fail = sum(not r["ok"] for r in rows)
    summary = dict(bytes_dense=total_dense, bytes_compressed=total_c, ratio=total_c / total_dense,
                   layers=len(rows), failed=n_fail, elapsed_s=elapsed)
    print("-" * len(hdr))
    line = (f"block: weights {_fmt_bytes(total_c)} vs {_fmt_bytes(total_dense)} dense ({total_c / total_dense:.3f}x); "
            f"correctness {len(rows) - n_fail}/{len(rows)} layers PASS")
    if on_gpu:
        for M in args.tokens:
            g = geomean([t["speedup"] for r in rows for t in r["timings"] if t["M"] == M])
            summary[f"speedup_geomean_M{M}"] = g
            line += f"; {_phase(M)} M={M} speedup vs cuBLAS (geomean) {g:.2f}x"
    else:
        line += "; speed: needs a GPU (run on a CUDA machine for decode/prefill timings)"
    print(line)

    if args.json:
        result = dict(
            tool="examples/demo.py", stoicc_version=stoicc_ext.__version__, torch_version=torch.__version__,
            python=platform.python_version(), device=str(dev), gpu=gpu_name, dtype=dname,
            sparsity_percent=args.sparsity, sparse_24_tile_fraction=frac,
            shapes="llama2-7b" if shapes is LLAMA2_7B_BLOCK else "llama2-7b/8", tokens=args.tokens,
            tolerance=tol, seed=args.seed, timing=("stoicc_ext.tuning.timing.time_graph (CUDA graph, rotated weights, "
                                                   f"median of {args.repeats})") if on_gpu else None,
            kernels=_tuning_str(args.tokens) if on_gpu else None,
            layers=rows, summary=summary)
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"results written to {args.json}")
    return (1 if n_fail else 0), summary


def main(argv=None):
    args = parse_args(argv)
    rc, _ = run(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
