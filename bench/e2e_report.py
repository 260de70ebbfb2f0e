"""bench/e2e, report: the console summary, the result JSON and markdown, and the figures."""
import json
import os
import sys

if __package__ in (None, ""):   # loaded by path: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import check_targets, plots, run_info  # noqa: E402
from bench.e2e_profile import linear_kernel_calls, linear_split  # noqa: E402
from bench.e2e_tuning import choice_counts  # noqa: E402
from stoicc_ext.nn.agreement import LOGITS_RTOL  # noqa: E402

ROWS = ("main", "long")


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def _x(v, fmt=".3f"):
    return "-" if v is None else format(v, fmt) + "x"


def row_of(r):
    return r.get("row", "main")


def sort_records(records):
    """Main rows first, then the long-prompt rows, each by sparsity."""
    return sorted(records, key=lambda r: (ROWS.index(row_of(r)) if row_of(r) in ROWS else len(ROWS), r["sparsity"]))


def summary_lines(records):
    """The console table, one line per record."""
    out = [f"{'row':>4} {'sparsity':>8} {'speedup':>8} {'vs HF':>6} {'dense ms':>9} {'stoicc ms':>9} {'prefill ms':>10} "
           f"{'step ms':>8} {'weights':>8} {'peak':>7} {'agree':>6} {'logit err':>9} {'lin TB/s':>8} {'tune s':>7}"]
    for r in sort_records(records):
        tb = (r.get("decode_split") or {}).get("stoicc_linear_tbps")
        out.append(f"{row_of(r):>4} {r['sparsity']:>7}% {_f(r['speedup'], '.3f'):>8} {_f(r.get('speedup_vs_hf'), '.3f'):>6} "
                   f"{_f(r['dense_ms'], '.1f'):>9} {_f(r['stoicc_ms'], '.1f'):>9} {_f(r['prefill_ms'], '.2f'):>10} "
                   f"{_f(r['decode_step_ms'], '.3f'):>8} {r['weight_bytes_ratio']:>8.3f} "
                   f"{_f(r['peak_bytes_ratio'], '.3f'):>7} {r['agreement']:>6.3f} {r['max_logits_err']:>9.3g} "
                   f"{_f(tb, '.2f'):>8} {r['tuning_s']:>7.1f}")
    return out


def _run_table(records):
    L = ["| sparsity | speedup | vs HF as shipped | dense ms | stoicc ms | prefill ms (dense) | decode step ms (dense) | "
         "weight bytes | peak memory | agreement (first token) | max logits err | tuning s |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        L.append(f"| {r['sparsity']} % | {_x(r['speedup'])} | {_x(r.get('speedup_vs_hf'))} | "
                 f"{_f(r['dense_ms'], '.1f')} | {_f(r['stoicc_ms'], '.1f')} | "
                 f"{_f(r['prefill_ms'], '.2f')} ({_f(r['dense_prefill_ms'], '.2f')}) | "
                 f"{_f(r['decode_step_ms'], '.3f')} ({_f(r['dense_decode_step_ms'], '.3f')}) | "
                 f"{r['weight_bytes_ratio']:.3f}x | {_x(r['peak_bytes_ratio'])} | {r['agreement']:.3f} "
                 f"({_f(r.get('first_token_agreement'), '.3f')}) | {r['max_logits_err']:.3g} | {r['tuning_s']:.1f} |")
    return L


def _gb(b):
    return "-" if b is None else f"{b / 1e9:.2f}"


def _prefill_section(records):
    """Where the prefill's time goes, from the profiled prefill graphs (records with a
    breakdown): the linears against the rest for both models, then the linear kernels per call."""
    rows = [r for r in records if all((r.get("breakdown") or {}).get(w, {}).get("prefill") for w in ("dense", "stoicc"))]
    if not rows:
        return []
    L = ["", "## Where the time of a prefill goes", "",
         "GPU time per prefill graph replay by kernel (torch.profiler over 3 replays, counted as for the decode "
         "step). stoicc cuBLAS: the converted model's GEMMs (lm_head, layers left dense, and the cuBLAS half of "
         "the `densify` schedule, whose expansion kernel counts with the stoicc kernels).", "",
         "| sparsity | dense linears ms | stoicc kernels ms | stoicc cuBLAS ms | dense rest ms | stoicc rest ms | "
         "linears speedup | prefill speedup (profiled) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = linear_split(r["breakdown"]["dense"]["prefill"], r["breakdown"]["stoicc"]["prefill"])
        L.append(f"| {r['sparsity']} % | {b['dense_linear_ms']:.2f} | {b['stoicc_kernel_ms']:.2f} | "
                 f"{b['stoicc_cublas_ms']:.2f} | {b['dense_rest_ms']:.2f} | {b['stoicc_rest_ms']:.2f} | "
                 f"{_x(b['linear_speedup'], '.2f')} | {_x(b['step_speedup_profiled'])} |")
    per_call = linear_kernel_calls(rows, "prefill")
    if per_call:
        L += ["", "The linear kernels of a prefill, per call:", "",
              "| sparsity | model | kernel | calls | ms | us per call |", "|---|---|---|---|---|---|"]
        L += [f"| {sp} % | {who} | `{k}` | {c:.0f} | {ms:.3f} | {_f(us, '.1f')} |" for sp, who, k, c, ms, us in per_call]
    return L


def markdown(res, json_name):
    st = res["setup"]
    recs = sort_records(res["records"])
    main = [r for r in recs if row_of(r) == "main"]
    long = [r for r in recs if row_of(r) == "long"]
    L = [f"# End-to-end: PATCH-like Llama-2-7B on {res['gpu']}", "",
         f"Date {res['date']}, commit `{res['commit']}`, torch {st['torch']}, transformers {st['transformers']}. "
         f"`python -m bench.e2e {st['argv']}`" + (f" (rows of commits {', '.join(res['merged_commits'])} merged)"
                                                  if res.get("merged_commits") else "") + ".", "",
         f"Set-up: `LlamaForCausalLM` from a `LlamaConfig` (hidden {st['arch']['hidden_size']}, intermediate "
         f"{st['arch']['intermediate_size']}, {st['arch']['num_hidden_layers']} layers, {st['arch']['num_attention_heads']} "
         f"heads, vocab {st['arch']['vocab_size']}), random weights (seed {st['seed']}), "
         f"{st['dtype']}; the linear layers in `.layers.` pruned with `stoicc_ext.prune_patch_oneshot_` (one-shot "
         f"baseline: 128x128 tiles, the lowest 2:4-pruning loss first, global target; not PATCH's learned masks), "
         f"lm_head and embeddings dense; batch {st['batch']}, prompt {st['prompt']}, {st['new_tokens']} new tokens "
         f"(prefill + {st['new_tokens'] - 1} decode steps), transformers `StaticCache`, greedy; prefill and each decode "
         f"step are CUDA-graph replays (graphs: {st['graphs']}); "
         + (f"both models' forward compiled by `torch.compile(fullgraph=True)` with the `{st['compile']}` backend "
            "before the capture (the linears stay cuBLAS and stoicc; compile time not timed). "
            if st.get("compile") else "the forward runs eagerly inside the graphs (no `torch.compile`). ")
         + "Baseline (`speedup`): the same pruned model, dense (`nn.Linear`, cuBLAS), with the module structure of the "
         "converted one (`bench/e2e_model.py: same_structure_dense`: q/k/v and gate/up fused into one `nn.Linear` "
         "each, as `sparsify_` fuses them; `vs HF as shipped`: against the Hugging Face model as it ships), in the "
         "same process. "
         f"stoicc: `stoicc_ext.sparsify_` (the library's recipe per layer: decode tuned at M = batch, prefill at "
         f"M = batch x prompt with the decode tile shape pinned; tuning space `{st['tune_space']}`). Times: median of "
         f"{st['repeats']} generations. Agreement: fraction of the greedy tokens equal to the dense model's (in "
         "parentheses, of the first generated token: equal, or a near-tie of the dense logits within twice the "
         "tolerance); logits error: max |difference| of the prefill's last-position logits, held to "
         f"{LOGITS_RTOL:g} x max |logits| (`stoicc_ext.nn.agreement`: fp16 rounding of every linear's output, "
         "compounded over the layers; random weights make near-ties common, so a flipped later token is not an "
         "error).", ""]
    if main:
        L += _run_table(main)
    if long:
        lp = st.get("long_prompt") or {}
        L += ["", "## Long prompt", "",
              f"Batch {lp.get('batch')}, prompt {lp.get('prompt')}, {lp.get('new_tokens')} new tokens, otherwise as "
              "above (tuned at M = batch and M = batch x prompt; no profile).", ""] + _run_table(long)
    rows = [r for r in main if r.get("decode_split")]
    if rows:
        L += ["", "## Where the time of a decode step goes", "",
              "GPU time per decode-step graph replay by kernel (torch.profiler over 5 replays, each kernel "
              "counted for the time it alone ran, so that the early start of a PDL-launched kernel is not "
              "counted twice). Dense linears: every cuBLAS GEMM (lm_head included), TB/s over every `nn.Linear`'s "
              "bytes. stoicc kernels: the `stoicc` kernels, TB/s over the `MixedModule`s' compressed bytes (the "
              "in-model bandwidth of the decode kernels); stoicc cuBLAS: the converted model's remaining GEMMs "
              "(lm_head, layers left dense). `rest`: attention, norms, rotary, elementwise, KV-cache writes, argmax. "
              "The sums run a little below the replay times of the table (the gaps between kernels are not in "
              "them).", "",
              "| sparsity | dense linears ms | GB | TB/s | stoicc kernels ms | GB | TB/s | stoicc cuBLAS ms | "
              "dense rest ms | stoicc rest ms | linears speedup | step speedup (profiled) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            b = r["decode_split"]
            L.append(f"| {r['sparsity']} % | {b['dense_linear_ms']:.3f} | {_gb(b.get('dense_linear_bytes'))} | "
                     f"{_f(b.get('dense_linear_tbps'), '.2f')} | {_f(b.get('stoicc_kernel_ms'), '.3f')} | "
                     f"{_gb(b.get('stoicc_linear_bytes'))} | {_f(b.get('stoicc_linear_tbps'), '.2f')} | "
                     f"{_f(b.get('stoicc_cublas_ms'), '.3f')} | {b['dense_rest_ms']:.3f} | {b['stoicc_rest_ms']:.3f} | "
                     f"{_x(b['linear_speedup'], '.2f')} | {_x(b['step_speedup_profiled'])} |")
        per_call = linear_kernel_calls(rows, "decode_step")
        if per_call:
            L += ["", "The linear kernels of a decode step, per call (to set beside the kernel table's "
                  "per-call times; the name is cut to its template arguments):", "",
                  "| sparsity | model | kernel | calls per step | ms per step | us per call |", "|---|---|---|---|---|---|"]
            L += [f"| {sp} % | {who} | `{k}` | {c:.0f} | {ms:.3f} | {_f(us, '.1f')} |" for sp, who, k, c, ms, us in per_call]
    L += _prefill_section(main)
    L += ["", "## Tile shape choice", "",
          "Per sparsity and layer kind: how many layers got each tile shape and schedule (`split_k/<splits>`), "
          "for decode (which fixes the compressed tile shape) and for prefill (tuned at that tile shape). "
          "Per-layer choices are in the JSON (`tile_choices`).", ""]
    for s, choices in res["tile_choices"].items():
        for phase in ("decode", "prefill"):
            counts = choice_counts(choices, phase)
            cells = "; ".join(f"{kind}: " + ", ".join(f"{k} x{n}" for k, n in sorted(c.items(), key=lambda kv: -kv[1]))
                              for kind, c in counts.items())
            L.append(f"- {s} %, {phase}: {cells}")
    prices = [(s, p) for s, rows in res["prefill_price"].items() for p in rows]
    if prices:
        L += ["", "## The price of reusing the decode tile shape for prefill", "",
              "First layer, one linear of each distinct shape: prefill tuned at the decode tile shape (what the model "
              "runs) against prefill tuned over every tile shape (which would need a second compressed copy).", "",
              "| sparsity | layer | N x K | decode tile | prefill pinned | us | prefill free | us | price |",
              "|---|---|---|---|---|---|---|---|---|"]
        for s, p in prices:
            L.append(f"| {s} % | {p['layer']} | {p['N']}x{p['K']} | {p['decode']['tile']} | "
                     f"{p['prefill_pinned']['tile']} {p['prefill_pinned']['schedule']} | "
                     f"{_f(p['prefill_pinned_ms'] and p['prefill_pinned_ms'] * 1e3, '.1f')} | "
                     f"{p['prefill_free']['tile']} {p['prefill_free']['schedule']} | "
                     f"{_f(p['prefill_free_ms'] and p['prefill_free_ms'] * 1e3, '.1f')} | "
                     f"{_f(p['price'] and 100 * p['price'], '+.1f')} % |")
    targets = check_targets.e2e_targets(res)
    if targets:          # none without timings (a CPU dry run)
        L += ["", "## Targets", "", check_targets.format_markdown(json_name, res, "end-to-end", targets)]
    t = res["timing"]
    L += ["", f"Wall time {t['total_s']:.0f} s, of which tuning (sparsify_) {t['tuning_s']:.0f} s and the "
          f"prefill-price study {t['price_s']:.0f} s; tuning cache `{t['cache_dir']}`."]
    return "\n".join(L) + "\n"


def write_results(res, out_dir, tag, figures=True):
    """``e2e_<tag>.json`` and ``.md`` in ``out_dir`` (and ``e2e_<tag>_time.png`` with
    matplotlib); returns the paths written."""
    base = run_info.write_tables(out_dir, f"e2e_{tag}", res, markdown)
    paths = [base + ".md", base + ".json"]
    if figures:
        paths += plots.e2e_figures(res, base)
    return paths


def merge(res, path):
    """``res`` with the records of an earlier result file at ``path`` that this run did not
    redo (by row and sparsity), when both ran the same set-up; the merged file names the commits
    its rows came from. Returns ``res`` unchanged when there is no such file."""
    if not os.path.exists(path):
        return res
    with open(path) as f:
        old = json.load(f)
    keys = ("preset", "layers", "batch", "prompt", "new_tokens", "dtype", "compile", "seed")
    a, b = old.get("setup") or {}, res["setup"]
    if old.get("gpu") != res["gpu"] or any(a.get(k) != b.get(k) for k in keys):
        raise SystemExit(f"--merge: {path} ran another set-up or GPU ({old.get('gpu')}, "
                         f"{ {k: a.get(k) for k in keys} }); give another --tag")
    have = {(row_of(r), r["sparsity"]) for r in res["records"]}
    kept = [r for r in old["records"] if (row_of(r), r["sparsity"]) not in have]
    for r in kept:
        r.setdefault("commit", old.get("commit"))
    res["records"] = sort_records(res["records"] + kept)
    for key in ("tile_choices", "prefill_price"):
        res[key] = {**{k: v for k, v in old.get(key, {}).items() if k not in res[key]}, **res[key]}
    if kept:
        res["merged_commits"] = sorted({r["commit"] for r in res["records"] if r.get("commit")})
    if "long_prompt" in a and "long_prompt" not in b:
        b["long_prompt"] = a["long_prompt"]
    for k in ("total_s", "tuning_s", "price_s"):
        res["timing"][k] += (old.get("timing") or {}).get(k, 0.0) if kept else 0.0
    return res
