"""End-to-end benchmark: a PATCH-like pruned Llama-2-7B through Hugging Face transformers, dense
cuBLAS against stoicc, greedy generation with a static KV cache inside CUDA graphs, both models'
forward through torch.compile (on a GPU, by default).

Set-up: Llama-2-7B architecture (hidden 4096, intermediate 11008, 32 layers, 32 heads, vocab
32000) built by ``transformers.LlamaForCausalLM`` from a ``LlamaConfig`` with random weights (no
download), float16; the linear layers inside ``.layers.`` pruned with
``stoicc_ext.prune_patch_oneshot_`` (a one-shot PATCH-like baseline, not PATCH's learned masks)
to 25 / 35 / 45 % global sparsity, ``lm_head`` and the embeddings dense; batch 16, prompt 128,
128 new tokens (one prefill forward and 127 decode steps), static KV cache
(``transformers.StaticCache``), greedy. Every forward is a CUDA-graph replay: one graph for the
prefill forward and one for a decode step, over static input buffers; the decode graph also does
the argmax, writes the token and advances the position, so 127 replays generate the answer. On a
GPU both models' forward goes through ``torch.compile(fullgraph=True)`` (inductor) before the
capture, as users run them (``--no-compile``: eager forward inside the graphs). The long-prompt
row (``--rows main,long``; ``--full`` includes it): batch 4, prompt 2048, 64 new tokens, at 0 and
45 %.

Per row and sparsity, in one process: build the model (same seed: same weights), prune it,
generate with the dense model (cuBLAS: the baseline, with the converted model's module structure:
``e2e_model.same_structure_dense``), convert it in place with ``stoicc_ext.sparsify_`` (decode
tuned at M = batch, prefill at M = batch x prompt with the decode tile shape pinned, one
compressed weight; tuning time is measured and printed, not counted in any speedup), generate
again, compare. At 0 % no weight has a 2:4 tile, so ``sparsify_`` keeps every layer dense (the
row checks that a converted model runs at the dense model's speed). The decode step is profiled by kernel: the linears' time and their
TB/s over the bytes they read, dense and stoicc (the stoicc figure is the in-model bandwidth of
the decode kernels). Before converting, the price of reusing the decode tile shape for prefill
is measured on one layer of each distinct shape.

The parts: ``e2e_model`` (architectures, presets, model building, byte counts), ``e2e_tuning``
(the Inspector, the prefill-price study, tile choices), ``e2e_generate`` (generation, CUDA
graphs, compile), ``e2e_profile`` (the kernel breakdown), ``e2e_report`` (console, JSON,
markdown, figures); this module is the command line.

Written: ``bench/results/e2e_<gpu>.md``, ``.json`` and ``_time.png``: ``{gpu, date, commit,
setup, records: [{row, sparsity, speedup, speedup_vs_hf, dense_ms, stoicc_ms, prefill_ms,
decode_step_ms, weight_bytes_ratio, peak_bytes_ratio, agreement, decode_split, ...}],
tile_choices, prefill_price, timing}``.

    bash scripts/run.sh                                   # the README's main command: this, set up first
    python -m bench.e2e                                   # GPU: 7B architecture, 4 layers (--preset small)
    python -m bench.e2e --full                            # GPU: the full 32-layer Llama-2-7B, and the long prompt
    python -m bench.e2e --full --no-compile               # the same, eager forward inside the graphs
    python -m bench.e2e --full --rows long --merge        # add or redo one row of an existing result
    python -m bench.e2e --device cpu                      # CPU: a tiny Llama, dry run of the pipeline, no timing
    python bench/e2e.py ...                               # the same, as a script

Results go to ``bench/results/e2e_<gpu>.md`` for the full model, ``e2e_<gpu>_<preset>_<layers>l.md``
otherwise (nothing is written on the CPU unless ``--out-dir`` is given).

Needs ``transformers`` >= 5 (``StaticCache(config=, max_cache_len=)``, cache positions kept by
the cache itself).
"""
import argparse
import gc
import os
import platform
import sys
import tempfile
import time

if __package__ in (None, ""):   # run as a script: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import stoicc_ext as STOICC  # noqa: E402
from stoicc_ext.nn.agreement import compare_logits  # noqa: E402
from stoicc_ext.tuning import cache as tuning_cache  # noqa: E402

from bench import e2e_parallel, run_info  # noqa: E402
from bench.e2e_generate import Generator, run_generation  # noqa: E402,F401
from bench.e2e_model import (DTYPES, LAYER_FILTER, PRESETS, build_model, linear_bytes,  # noqa: E402,F401
                             require_transformers, same_structure_dense, weight_bytes)
from bench.e2e_profile import _exclusive_kernel_ms, linear_kernel_calls, linear_split  # noqa: E402,F401
from bench.e2e_report import merge, summary_lines, write_results  # noqa: E402
from bench.e2e_tuning import make_inspector, prefill_price, tile_choices  # noqa: E402

# The long-prompt row per preset: (batch, prompt, new tokens, sparsities).
LONG_PROMPT = {"7b": dict(batch=4, prompt=2048, new_tokens=64, sparsities=[0, 45]),
               "small": dict(batch=4, prompt=2048, new_tokens=64, sparsities=[0, 45]),
               "70b": dict(batch=4, prompt=2048, new_tokens=64, sparsities=[0, 45]),
               "tiny": dict(batch=1, prompt=48, new_tokens=4, sparsities=[0, 45])}


def run_sparsity(tf, args, s, row, inspector, log):
    """One (row, sparsity): build, prune, time the dense model(s), convert, time stoicc, compare.
    ``row``: dict(name, batch, prompt, new_tokens, price, profile, prompt_ids)."""
    dev, dtype = args.device, args.dtype
    use_graphs = dev.type == "cuda" and not args.no_graphs
    B, P, new, prompt_ids = row["batch"], row["prompt"], row["new_tokens"], row["prompt_ids"]
    tag = f"[{s}%]" if row["name"] == "main" else f"[{row['name']} {s}%]"
    t0 = time.perf_counter()
    model = build_model(tf, args.arch, args.layers, dtype, dev, args.seed)
    build_s = time.perf_counter() - t0
    prune = None
    if s > 0:
        prune = STOICC.prune_patch_oneshot_(model, s / 100, filter_fn=lambda m, n: LAYER_FILTER in n)
    if args.tp > 1:      # dense slices: the baseline runs with the same parallelism, bytes are per GPU
        e2e_parallel.split(model, args.tp)
    dense_bytes = weight_bytes(model)
    log(f"{tag} model built in {build_s:.1f} s; pruned: "
        + (f"{prune['sparsity']:.4f} global sparsity ({prune['tiles_24']}/{prune['tiles']} tiles 2:4)" if prune
           else "no (0 %: every tile dense)"))

    def generate(m, who):
        res = run_generation(tf, m, prompt_ids, new, graphs=use_graphs, repeats=args.repeats,
                             profile=row["profile"], compile_backend=args.compile)
        if res["compile_s"] is not None:
            log(f"{tag} {who} compiled ({args.compile}, prefill and decode step) in {res['compile_s']:.1f} s")
        if "total_ms" in res:
            log(f"{tag} {who}: {res['total_ms']:.1f} ms = prefill {res['prefill_ms']:.2f} ms + {new - 1} x "
                f"{res['decode_step_ms']:.3f} ms; peak {res['peak_bytes'] / 2**30:.2f} GiB")
        return res

    hf = generate(model, "dense, Hugging Face model as it ships")
    base = same_structure_dense(model)       # a copy, its projections fused as sparsify_ fuses them
    dense, base_bytes = generate(base, "dense, same structure as stoicc"), linear_bytes(base)
    t0 = time.perf_counter()
    # on the fused copy: the shapes and tile maps that sparsify_ then tunes (and finds in the cache)
    price = prefill_price(base, inspector, B, B * P) if row["price"] else []
    price_s = time.perf_counter() - t0
    del base
    gc.collect()
    t0 = time.perf_counter()
    report = STOICC.sparsify_(model, filter_fn=lambda m, n: LAYER_FILTER in n, inspector=inspector,
                              decode_tokens=B, prefill_tokens=B * P, verbose=args.verbose)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    tune_s = time.perf_counter() - t0
    bad = [r for r in report.rows if LAYER_FILTER in r.name and r.status not in ("converted", "dense")]
    if bad:                          # a layer left fully dense by the pruner stays dense, anything else is a bug
        raise RuntimeError(f"{len(bad)} layer(s) were not converted, e.g. {bad[0].name}: {bad[0].status} {bad[0].reason}")
    sp_bytes = weight_bytes(model)
    sources = {}
    for r in report.converted:
        sources[r.source_decoding] = sources.get(r.source_decoding, 0) + 1
    log(f"{tag} sparsify_: {len(report.converted)} layers in {tune_s:.1f} s (decode choices: {sources}); "
        f"prefill-price study {price_s:.1f} s; weights {sp_bytes / dense_bytes:.3f} of dense")

    sparse = generate(model, "stoicc")
    agree = (sparse["tokens"] == dense["tokens"]).float().mean().item()
    check = compare_logits(dense["logits"], sparse["logits"])      # the first token's logits, LOGITS_RTOL
    err, scale = check["max_err"], check["scale"]
    rec = dict(row=row["name"], sparsity=s, batch=B, prompt=P, new_tokens=new, commit=args.commit,
               achieved_sparsity=prune["sparsity"] if prune else 0.0,
               speedup=None, speedup_vs_hf=None, dense_ms=dense.get("total_ms"), hf_ms=hf.get("total_ms"),
               stoicc_ms=sparse.get("total_ms"),
               prefill_ms=sparse.get("prefill_ms"), decode_step_ms=sparse.get("decode_step_ms"),
               dense_prefill_ms=dense.get("prefill_ms"), dense_decode_step_ms=dense.get("decode_step_ms"),
               prefill_speedup=None, decode_speedup=None,
               weight_bytes_ratio=sp_bytes / dense_bytes, dense_weight_bytes=dense_bytes, stoicc_weight_bytes=sp_bytes,
               peak_bytes_ratio=(sparse["peak_bytes"] / dense["peak_bytes"]) if "peak_bytes" in dense else None,
               dense_peak_bytes=dense.get("peak_bytes"), stoicc_peak_bytes=sparse.get("peak_bytes"),
               dense_allocated_before=dense.get("allocated_before"),
               stoicc_allocated_before=sparse.get("allocated_before"),
               agreement=agree, first_token_agreement=check["first_token_agreement"],
               first_token_exact=check["first_token_exact"], max_logits_err=err, max_logits_rel_err=check["rel_err"],
               logits_rtol=check["rtol"], agreement_ok=check["ok"],
               layers_converted=len(report.converted), tuning_s=tune_s, prefill_price_s=price_s, build_s=build_s,
               dense_compile_s=dense["compile_s"], stoicc_compile_s=sparse["compile_s"])
    if "breakdown" in dense and "breakdown" in sparse:
        rec["breakdown"] = dict(dense=dense["breakdown"], stoicc=sparse["breakdown"])
        sp = rec["decode_split"] = linear_split(dense["breakdown"]["decode_step"], sparse["breakdown"]["decode_step"],
                                                base_bytes, linear_bytes(model))
        log(f"{tag} decode step by kernel: dense linears (with lm_head) {sp['dense_linear_ms']:.3f} ms "
            f"({_tb(sp['dense_linear_tbps'])} over {sp['dense_linear_bytes'] / 1e9:.2f} GB), rest "
            f"{sp['dense_rest_ms']:.3f} ms; stoicc kernels {sp['stoicc_kernel_ms']:.3f} ms "
            f"({_tb(sp['stoicc_linear_tbps'])} over {sp['stoicc_linear_bytes'] / 1e9:.2f} GB compressed) + cuBLAS "
            f"{sp['stoicc_cublas_ms']:.3f} ms (lm_head, dense layers), rest {sp['stoicc_rest_ms']:.3f} ms")
        log(f"{tag} in-model bandwidth of the stoicc linears: {_tb(sp['stoicc_linear_tbps'])} over their compressed "
            f"bytes (dense cuBLAS linears: {_tb(sp['dense_linear_tbps'])})")
        pre = linear_split(dense["breakdown"]["prefill"], sparse["breakdown"]["prefill"])
        log(f"{tag} prefill by kernel: dense linears {pre['dense_linear_ms']:.2f} ms, rest {pre['dense_rest_ms']:.2f} ms; "
            f"stoicc kernels {pre['stoicc_kernel_ms']:.2f} ms + cuBLAS {pre['stoicc_cublas_ms']:.2f} ms (densify's "
            f"GEMMs, lm_head, dense layers), rest {pre['stoicc_rest_ms']:.2f} ms")
    if rec["dense_ms"] and rec["stoicc_ms"]:
        rec["speedup"] = rec["dense_ms"] / rec["stoicc_ms"]
        rec["speedup_vs_hf"] = rec["hf_ms"] / rec["stoicc_ms"]
        rec["prefill_speedup"] = rec["dense_prefill_ms"] / rec["prefill_ms"]
        rec["decode_speedup"] = rec["dense_decode_step_ms"] / rec["decode_step_ms"]
        log(f"{tag} stoicc: {rec['stoicc_ms']:.1f} ms = prefill {rec['prefill_ms']:.2f} ms + {new - 1} x "
            f"{rec['decode_step_ms']:.3f} ms -> speedup {rec['speedup']:.3f}x against the same-structure dense model, "
            f"{rec['speedup_vs_hf']:.3f}x against the Hugging Face model as it ships (prefill "
            f"{rec['prefill_speedup']:.2f}x, decode {rec['decode_speedup']:.2f}x); peak memory "
            f"{rec['peak_bytes_ratio']:.3f}x")
    log(f"{tag} agreement with dense on the same weights: {agree:.3f} of the tokens; first token "
        f"{check['first_token_agreement']:.3f} ({check['first_token_exact']:.3f} equal, the rest near-ties); "
        f"max |logits error| {err:.3g} = {check['rel_err']:.2g} of max |logits| {scale:.3g} (tolerance "
        f"{check['rtol']:g}): {'within' if check['ok'] else 'OUTSIDE'} the stated fp16 tolerance")
    choices = tile_choices(report)
    del model, report
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rec, choices, price


def _tb(v):
    return "-" if v is None else f"{v:.2f} TB/s"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="the model and run sizes: small (the default on a GPU: the Llama-2-7B architecture with "
                         f"{PRESETS['small']['layers']} decoder layers, fits any GPU), 7b (the full 32-layer "
                         "model, about 16 GB of GPU memory at its peak), tiny (the default on the CPU: hidden "
                         "256, 2 layers, a dry run of the pipeline), 70b (the Llama-2-70B layer shapes, 8 of its 80 "
                         "layers: with --tp, its per-GPU shapes)")
    ap.add_argument("--full", dest="preset", action="store_const", const="7b",
                    help="same as --preset 7b (whose rows are main,long by default)")
    ap.add_argument("--tiny", dest="preset", action="store_const", const="tiny", help="same as --preset tiny")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: the preset's)")
    ap.add_argument("--sparsities", default="0,25,35,45", help="comma list in percent for the main row (default "
                                                                 "0,25,35,45)")
    ap.add_argument("--rows", default=None,
                    help="comma list of rows: main (batch/prompt/new tokens below, --sparsities) and long (the long "
                         "prompt: batch 4, prompt 2048, 64 new tokens at 0 and 45 %%; tiny: batch 1, prompt 48). "
                         "Default: main,long with --full, main otherwise")
    ap.add_argument("--batch", type=int, default=None, help="batch (default 16; tiny: 2)")
    ap.add_argument("--prompt", type=int, default=None, help="prompt length (default 128; tiny: 16)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens (default 128; tiny: 8)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed generations per model (median; default 3)")
    ap.add_argument("--tune-space", choices=("fast", "full"), default="fast",
                    help="fast: split_k, sequential, densify and dense (cuBLAS on W uncompressed) schedules, 7 "
                         "timing repeats (default); full: every schedule of the Inspector, its default repeats")
    ap.add_argument("--tune-repeats", type=int, default=7, help="timing repeats per candidate for --tune-space fast")
    ap.add_argument("--fresh-cache", action="store_true",
                    help="tune into an empty temporary cache directory (cold tuning times)")
    ap.add_argument("--no-price", dest="price", action="store_false",
                    help="skip the price-of-reusing-the-decode-tile study")
    ap.add_argument("--no-graphs", action="store_true", help="eager generation on the GPU (debugging)")
    ap.add_argument("--compile", nargs="?", const="inductor", default="default", metavar="BACKEND",
                    help="run both models' forward through torch.compile(fullgraph=True) with BACKEND (default "
                         "inductor) before the CUDA-graph capture: transformers' eager norms, rotary and "
                         "elementwise ops are fused, the linears stay cuBLAS and stoicc (compile time is printed, "
                         "not timed). The default on a GPU; on the CPU only when given")
    ap.add_argument("--no-compile", dest="compile", action="store_const", const=None,
                    help="the forward runs eagerly inside the CUDA graphs")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the per-kernel time breakdown of the prefill and decode graphs (torch.profiler)")
    ap.add_argument("--out-dir", default=None,
                    help="where e2e_<gpu>.md/.json go (default bench/results on a GPU; nothing written on the CPU "
                         "unless given)")
    ap.add_argument("--tag", default=None, help="file name tag (default: the GPU name, or 'cpu')")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of an existing result file of the same set-up that this run does not redo "
                         "(by row and sparsity): a long run split over several calls")
    ap.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG figure")
    ap.add_argument("--verbose", action="store_true", help="one line per converted layer")
    ap.add_argument("--tp", type=int, default=1,
                    help="tensor parallelism over TP processes (torchrun --nproc-per-node TP bench/e2e.py --tp TP): "
                         "the linears split after pruning (stoicc_ext.parallel.shard_model_), dense and stoicc "
                         "alike; weight bytes per GPU; rank 0 reports (bench/e2e_parallel.py)")
    args = ap.parse_args(argv)
    args.argv = " ".join(argv if argv is not None else sys.argv[1:])
    gpu_here = torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
    if args.preset is None:
        args.preset = "small" if gpu_here else "tiny"
    preset = PRESETS[args.preset]
    args.arch = preset["arch"]
    for k in ("layers", "batch", "prompt", "new_tokens"):
        if getattr(args, k) is None:
            setattr(args, k, preset[k])
    if min(args.layers, args.batch, args.prompt) < 1 or args.new_tokens < 2:
        ap.error("--layers, --batch, --prompt must be >= 1 and --new-tokens >= 2")
    try:
        args.sparsities = [int(v) for v in args.sparsities.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--sparsities {args.sparsities!r}: expected a comma list of integers")
    if not args.sparsities or any(not 0 <= s <= 50 for s in args.sparsities):
        ap.error("--sparsities: values in 0..50")
    args.rows = [v.strip() for v in (args.rows or ("main,long" if args.preset == "7b" else "main")).split(",")
                 if v.strip()]
    if not args.rows or any(r not in ("main", "long") for r in args.rows):
        ap.error("--rows: a comma list of main, long")
    args.long = LONG_PROMPT[args.preset]
    if args.long["prompt"] + args.long["new_tokens"] > args.arch["max_position_embeddings"] and "long" in args.rows:
        ap.error("the long-prompt row does not fit the preset's max_position_embeddings")
    args.dtype = DTYPES[args.dtype]
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: torch sees no GPU")
        if args.device.index is None:
            args.device = torch.device("cuda", torch.cuda.current_device())
    if args.compile == "default":     # compiled on a GPU, as users run it; a CPU dry run stays eager
        args.compile = "inductor" if args.device.type == "cuda" else None
    return args


def rows_of(args):
    """The rows this run times: dict(name, batch, prompt, new_tokens, sparsities, price, profile)."""
    out = []
    for name in args.rows:
        if name == "main":
            out.append(dict(name="main", batch=args.batch, prompt=args.prompt, new_tokens=args.new_tokens,
                            sparsities=args.sparsities, price=args.price, profile=args.profile))
        else:
            out.append(dict(name="long", price=False, profile=False, **args.long))
    return out


def main(argv=None):
    args = parse_args(argv)
    tf = require_transformers()
    if not STOICC.extension_loaded:
        sys.exit(f"the stoicc extension is not loaded ({STOICC.extension_error}); build it: bash scripts/setup_env.sh")
    on_gpu = args.device.type == "cuda"
    rank = e2e_parallel.start(args) if args.tp > 1 else 0

    def log(msg):
        if rank == 0:
            print(msg, flush=True)

    if on_gpu:
        torch.cuda.set_device(args.device)
        gpu = torch.cuda.get_device_name(args.device)
    else:
        gpu = "cpu"
        log(f"no GPU: a dry run of the pipeline on the {args.preset} model (build, prune, convert, generate, compare "
            "with dense); no timing, no CUDA graphs. Speed needs a GPU: there, the same command times the 7B "
            "architecture (--full: all 32 layers) against cuBLAS.")
    if args.fresh_cache:
        os.environ["STOICC_CACHE_DIR"] = tempfile.mkdtemp(prefix="stoicc_e2e_cache_")
    args.commit = commit = run_info.commit()
    rows = rows_of(args)
    log(f"stoicc {STOICC.__version__}, torch {torch.__version__}, transformers {tf.__version__}, {gpu}, commit {commit}; "
        f"{args.layers} layers; " + "; ".join(f"{r['name']}: batch {r['batch']}, prompt {r['prompt']}, {r['new_tokens']} "
                                               f"new tokens, sparsities {r['sparsities']}" for r in rows)
        + f"; compile {args.compile or 'off'}; tuning space {args.tune_space}, cache {tuning_cache.cache_dir()}")

    inspector = make_inspector(args.tune_space, args.tune_repeats)
    t_all = time.perf_counter()
    records, choices, prices = [], {}, {}
    for row in rows:
        g = torch.Generator().manual_seed(args.seed + 1)
        row["prompt_ids"] = torch.randint(0, args.arch["vocab_size"], (row["batch"], row["prompt"]),
                                          generator=g).to(args.device)
        for s in row["sparsities"]:
            rec, ch, pr = run_sparsity(tf, args, s, row, inspector, log)
            records.append(rec)
            key = str(s) if row["name"] == "main" else f"{row['name']} {s}"
            choices[key] = ch
            if pr:
                prices[key] = pr
    total_s = time.perf_counter() - t_all

    setup = dict(preset=args.preset, arch=dict(args.arch, num_hidden_layers=args.layers), layers=args.layers,
                 batch=args.batch, prompt=args.prompt, new_tokens=args.new_tokens,
                 dtype=str(args.dtype).replace("torch.", ""),
                 seed=args.seed, repeats=args.repeats, tune_space=args.tune_space, graphs=on_gpu and not args.no_graphs,
                 compile=args.compile, rows=args.rows, baseline="same_structure_dense (q/k/v and gate/up fused as sparsify_ fuses them)",
                 pruner="stoicc_ext.prune_patch_oneshot_ (128x128 tiles, global target, 2:4-loss scores)",
                 pruned_layers="nn.Linear in .layers. (q,k,v,o,gate,up,down); lm_head and embeddings dense",
                 torch=torch.__version__, transformers=tf.__version__, python=platform.python_version(),
                 stoicc=STOICC.__version__, argv=args.argv, device=str(args.device), tp=args.tp)
    if "long" in args.rows:
        setup["long_prompt"] = {k: v for k, v in args.long.items()}
    res = dict(gpu=gpu, date=run_info.today(), commit=commit, setup=setup, records=records,
               tile_choices=choices, prefill_price=prices,
               timing=dict(total_s=total_s, tuning_s=sum(r["tuning_s"] for r in records),
                           price_s=sum(r["prefill_price_s"] for r in records), cache_dir=tuning_cache.cache_dir()))

    log("")
    for line in summary_lines(records):
        log(line)
    log(f"total {total_s:.0f} s (tuning {res['timing']['tuning_s']:.0f} s, prefill-price study "
        f"{res['timing']['price_s']:.0f} s)")
    out_dir = args.out_dir or (os.path.join(run_info.REPO, "bench", "results") if on_gpu else None)
    if out_dir and rank == 0:
        tag = args.tag or run_info.gpu_tag(
            gpu, "" if (args.preset, args.layers) == ("7b", 32) else f"{args.preset}_{args.layers}l") \
            + (f"_tp{args.tp}" if args.tp > 1 else "")
        if args.merge:
            res = merge(res, os.path.join(out_dir, f"e2e_{tag}.json"))
        for p in write_results(res, out_dir, tag, figures=args.plots):
            log(f"wrote {p}")
    return res


if __name__ == "__main__":
    main()
