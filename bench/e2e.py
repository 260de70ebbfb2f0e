"""End-to-end benchmark: a PATCH-like pruned Llama-2-7B through Hugging Face transformers, dense
cuBLAS against stoicc, greedy generation with a static KV cache inside CUDA graphs.

The spec's set-up (../shared/spec/stoicc-patch-deployment.txt, "Model Speedup and Memory
Reduction"): Llama-2-7B architecture (hidden 4096, intermediate 11008, 32 layers, 32 heads, vocab
32000) built by ``transformers.LlamaForCausalLM`` from a ``LlamaConfig`` with random weights (no
download), float16; the linear layers inside ``.layers.`` pruned with
``stoicc_ext.prune_patch_oneshot_`` (a one-shot PATCH-like baseline, not PATCH's learned masks)
to 25 / 35 / 45 % global sparsity, ``lm_head`` and the embeddings dense; batch 16, prompt 128,
128 new tokens (one prefill forward and 127 decode steps), static KV cache
(``transformers.StaticCache``), greedy. Every forward is a CUDA-graph replay: one graph for the
prefill forward and one for a decode step, over static input buffers; the decode graph also does
the argmax, writes the token and advances the position, so 127 replays generate the answer.

Per sparsity, in one process: build the model (same seed: same weights), prune it, generate with
the dense model (cuBLAS: the baseline), convert it in place with ``stoicc_ext.sparsify_`` (the
spec's recipe per layer: decode tuned at M = batch, prefill at M = batch x prompt with the decode
tile shape pinned, one compressed weight; tuning time is measured and printed, not counted in any
speedup), generate again, compare. The 0 % row converts the unpruned (fully dense) layers too
(``include_dense=True``). Before converting, the price of reusing the decode tile shape for
prefill is measured on one layer of each distinct shape: prefill tuned free against prefill
tuned at the decode tile shape.

Written: ``bench/results/e2e_<gpu>.md`` and ``.json``: ``{gpu, date, commit, setup, records:
[{sparsity, speedup, dense_ms, stoicc_ms, prefill_ms, decode_step_ms, weight_bytes_ratio,
peak_bytes_ratio, agreement, ...}], tile_choices, prefill_price, timing}``.

    bash scripts/run.sh                                       # the README's main command: this, set up first
    PYTHONPATH=$PWD python bench/e2e.py                       # GPU: 7B architecture, 4 layers (--preset small)
    PYTHONPATH=$PWD python bench/e2e.py --full                # GPU: the spec's full 32-layer Llama-2-7B
    PYTHONPATH=$PWD python bench/e2e.py --full --compile      # the same, both models' forward torch.compile'd
    PYTHONPATH=$PWD python bench/e2e.py --device cpu          # CPU: a tiny Llama, dry run of the pipeline, no timing

Results go to ``bench/results/e2e_<gpu>.md`` for the full model, ``e2e_<gpu>_<preset>_<layers>l.md``
otherwise (nothing is written on the CPU unless ``--out-dir`` is given).

Needs ``transformers`` >= 5 (``StaticCache(config=, max_cache_len=)``, cache positions kept by
the cache itself).
"""
import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (REPO, os.path.join(REPO, "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)
import check_targets  # noqa: E402
import run_info  # noqa: E402
import stoicc_ext as STOICC  # noqa: E402
from stoicc_ext.tuning import cache as tuning_cache  # noqa: E402
from stoicc_ext.tuning.densify import densify_schedule  # noqa: E402
from stoicc_ext.tuning.timing import side_stream  # noqa: E402
from stoicc_ext.nn.recipe import tune_weight, tuning_proxy  # noqa: E402

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
TINY = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5)
# Run sizes: the spec's set-up (7b), the same architecture with fewer layers (small: what the
# README's main command runs on any GPU), and a tiny model for a CPU dry run of the pipeline.
PRESETS = {
    "7b": dict(arch=LLAMA2_7B, layers=32, batch=16, prompt=128, new_tokens=128),
    "small": dict(arch=LLAMA2_7B, layers=4, batch=16, prompt=128, new_tokens=128),
    "tiny": dict(arch=TINY, layers=2, batch=2, prompt=16, new_tokens=8),
}
DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
LAYER_FILTER = ".layers."      # PATCH's release masks these; lm_head and embeddings stay dense


# --------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------

def require_transformers():
    """The transformers module (>= 5), or a clear error."""
    try:
        import transformers
    except ImportError:
        sys.exit("bench/e2e.py needs Hugging Face transformers >= 5 (pip install 'transformers>=5'); "
                 "it builds LlamaForCausalLM from a LlamaConfig (random weights, nothing is downloaded)")
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        sys.exit(f"bench/e2e.py needs transformers >= 5 (its StaticCache keeps the write position on the device, "
                 f"which the CUDA-graph loop relies on); found {transformers.__version__}")
    return transformers


def build_model(tf, arch, layers, dtype, device, seed):
    """LlamaForCausalLM with random weights (seeded: the same weights on every call), eval mode."""
    cfg = tf.LlamaConfig(**dict(arch, num_hidden_layers=layers), attn_implementation="sdpa",
                         tie_word_embeddings=False, use_cache=True)
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)       # parameters are created in `dtype` directly (no fp32 copy)
    try:
        with torch.device(device):
            model = tf.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.config._attn_implementation = "sdpa"
    return model.eval().requires_grad_(False)


def weight_bytes(model):
    """Bytes of the model's state (parameters and persistent buffers), shared storage counted once."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------
# Greedy generation with a static cache, prefill and decode steps as CUDA graphs
# --------------------------------------------------------------------------------------

class Generator:
    """Greedy generation of ``new_tokens`` tokens after a ``[B, P]`` prompt.

    Static buffers: prompt ids, the prefill's causal mask ``[1, 1, P, L]`` (4-D masks are used as
    given by transformers, so the mask code does no host-side checks), the decode step's input
    token ``[B, 1]``, its position ``[1, 1]`` and the generated tokens ``[B, new]``. ``prefill()``
    and ``step()`` touch only these, so each is one CUDA graph; ``step`` computes its mask from the
    position buffer, takes the argmax, stores the token and advances the position on the device.

    ``compile_backend`` (e.g. ``"inductor"``): the model's forward runs through
    ``torch.compile(fullgraph=True, dynamic=False)``, one compiled graph for the prefill shape and
    one for the decode step's, fusing transformers' eager norms, rotary and elementwise ops; the
    linears stay what they are (cuBLAS for ``nn.Linear``, one ``torch.ops.stoicc.spmm`` per
    ``MixedModule``). Both are compiled in ``warm_up``; after it a recompilation is an error
    (it would compile inside a CUDA-graph capture, or time the compiler).
    """

    def __init__(self, tf, model, batch, prompt_len, new_tokens, compile_backend=None):
        cfg = model.config
        p = next(model.parameters())
        self.B, self.P, self.new = batch, prompt_len, new_tokens
        self.forward = model                     # or its compiled wrapper (below)
        self.compile_backend, self.compile_s = compile_backend, None
        if compile_backend:
            # Every model of the run executes the same forward code: drop the previous model's
            # compiled frames so that its guards neither pile up towards dynamo's recompile limit
            # (past which it would fall back to eager without a word) nor keep that model alive.
            torch._dynamo.reset()
            self.forward = torch.compile(model, backend=compile_backend, fullgraph=True, dynamic=False)
        self.L = prompt_len + new_tokens
        dev = p.device
        self.cache = tf.StaticCache(config=cfg, max_cache_len=self.L)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if hasattr(self.cache, "early_initialization"):   # allocate the KV tensors now, not during capture
            self.cache.early_initialization(batch, cfg.num_key_value_heads, head_dim, p.dtype, dev)
        kv = torch.arange(self.L, device=dev)
        self.kv_idx = kv.view(1, 1, 1, self.L)
        self.ids = torch.zeros(batch, prompt_len, dtype=torch.long, device=dev)
        self.pos_prompt = torch.arange(prompt_len, device=dev).view(1, prompt_len)
        self.mask_prefill = (kv.view(1, self.L) <= self.pos_prompt.view(prompt_len, 1)).view(1, 1, prompt_len, self.L)
        self.tok = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.step_idx = torch.zeros(1, dtype=torch.long, device=dev)
        self.out = torch.zeros(batch, new_tokens, dtype=torch.long, device=dev)
        self.logits_prefill = torch.zeros(batch, cfg.vocab_size, dtype=torch.float32, device=dev)
        self.graphs = None

    def reset(self, prompt_ids):
        self.cache.reset()                      # in place: the captured addresses stay valid
        self.ids.copy_(prompt_ids)

    def prefill(self):
        out = self.forward(input_ids=self.ids, position_ids=self.pos_prompt, attention_mask=self.mask_prefill,
                           past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :]
        self.logits_prefill.copy_(logits)
        nxt = logits.argmax(dim=-1)
        self.tok.copy_(nxt.view(self.B, 1))
        self.out[:, 0].copy_(nxt)
        self.pos.fill_(self.P)
        self.step_idx.fill_(1)

    def step(self):
        mask = self.kv_idx <= self.pos.view(1, 1, 1, 1)
        out = self.forward(input_ids=self.tok, position_ids=self.pos, attention_mask=mask,
                           past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1, :].argmax(dim=-1)
        self.out.index_copy_(1, self.step_idx, nxt.view(self.B, 1))
        self.tok.copy_(nxt.view(self.B, 1))
        self.pos.add_(1)
        self.step_idx.add_(1)

    def warm_up(self, prompt_ids):
        """One prefill and one decode step: lazy initialisation, cuBLAS workspaces and, with
        ``compile_backend``, the two compilations (timed into ``compile_s``)."""
        t0 = time.perf_counter()
        self.reset(prompt_ids)
        self.prefill()
        self.step()
        if self.compile_backend:
            if prompt_ids.is_cuda:
                torch.cuda.synchronize()
            self.compile_s = time.perf_counter() - t0

    def no_recompile(self):
        """A context in which a recompilation of the compiled forward raises (a no-op eagerly)."""
        if not self.compile_backend:
            return contextlib.nullcontext()
        return torch._dynamo.config.patch(error_on_recompile=True)

    def capture(self, prompt_ids):
        """Warm up on a side stream, then capture one graph for ``prefill`` and one for ``step``
        (sharing one memory pool)."""
        s = side_stream()   # the tuner's too: one cuBLAS workspace for all warm-ups, not one per run
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            self.warm_up(prompt_ids)
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        self.reset(prompt_ids)
        g_pre, g_step = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with self.no_recompile():
            with torch.cuda.graph(g_pre):
                self.prefill()
            with torch.cuda.graph(g_step, pool=g_pre.pool()):
                self.step()
        torch.cuda.synchronize()
        self.graphs = (g_pre, g_step)

    def generate(self, prompt_ids):
        """One generation; returns (prefill_ms, decode_ms_total) on CUDA (graphs), (None, None) eagerly."""
        self.reset(prompt_ids)
        if self.graphs is None:
            with torch.no_grad(), self.no_recompile():
                self.prefill()
                for _ in range(self.new - 1):
                    self.step()
            return None, None
        g_pre, g_step = self.graphs
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        torch.cuda.synchronize()
        ev[0].record()
        g_pre.replay()
        ev[1].record()
        for _ in range(self.new - 1):
            g_step.replay()
        ev[2].record()
        ev[2].synchronize()
        return ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2])


# Kernel categories of the time breakdown: (category, substrings of the lower-cased kernel name).
KERNEL_CATEGORIES = (("stoicc", ("stoicc",)),
                     ("attention", ("sdpa", "flash", "fmha", "attention")),   # before GEMM: cuDNN's SDPA names
                     ("cublas_gemm", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "sm90_", "sm80_")))


def kernel_category(name):
    low = name.lower()
    for cat, keys in KERNEL_CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def _exclusive_kernel_ms(prof):
    """{kernel name: (ms, calls)}: the GPU time in which each kernel was the one making progress
    (kernels sorted by start, each clipped to begin where the previous ones ended) and how many
    times it ran. A kernel launched early by programmatic dependent launch (stoicc's sm_90
    kernels) sits in griddepcontrol.wait while its predecessor finishes; plain kernel durations
    would count that overlap twice. Returns None when the profiler gave no device intervals."""
    from torch.autograd import DeviceType
    spans = []
    for e in prof.events():
        if getattr(e, "device_type", None) != DeviceType.CUDA:
            continue
        tr = getattr(e, "time_range", None)
        if tr is None or tr.end <= tr.start:
            continue
        spans.append((tr.start, tr.end, e.name))
    if not spans:
        return None
    spans.sort()
    out, done_until = {}, float("-inf")
    for start, end, name in spans:
        excl = max(0.0, end - max(start, done_until))
        done_until = max(done_until, end)
        ms, calls = out.get(name, (0.0, 0))
        out[name] = (ms + excl / 1e3, calls + 1)
    return out


def profile_graph(graph, prepare, replays=5):
    """GPU time of one replay of ``graph`` by kernel category (ms; mean over ``replays``), from
    torch.profiler (CUPTI sees the kernels a graph launches), each kernel counted for the time it
    alone was running (``_exclusive_kernel_ms``). ``prepare()`` runs before each replay, outside
    the profiler: it puts the static cache where the graph expects it. Where the time of a step
    goes: the linears (stoicc or cuBLAS) against everything else (attention, norms, rotary,
    elementwise, the KV-cache writes). None when the profiler gives no device intervals."""
    from torch.profiler import ProfilerActivity, profile
    out, top = {}, {}
    for _ in range(replays):
        prepare()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            graph.replay()
            torch.cuda.synchronize()
        per_kernel = _exclusive_kernel_ms(prof)
        if per_kernel is None:  # plain kernel durations would double-count PDL overlaps: no breakdown
            return None
        for name, (ms, calls) in per_kernel.items():
            cat = kernel_category(name)
            out[cat] = out.get(cat, 0.0) + ms / replays
            t_ms, t_calls = top.get(name, (0.0, 0.0))
            top[name] = (t_ms + ms / replays, t_calls + calls / replays)
    out["total"] = sum(out.values())
    # per kernel: ms per replay, calls per replay and us per call (the in-model time of one call,
    # to set beside the kernel table's: docs/model.md)
    out["top"] = [dict(kernel=k[:120], ms=ms, calls=calls, us_per_call=1e3 * ms / calls if calls else None,
                       category=kernel_category(k))
                  for k, (ms, calls) in sorted(top.items(), key=lambda kv: -kv[1][0])[:8]]
    return out


def run_generation(tf, model, prompt_ids, new_tokens, *, graphs, repeats, profile=False, compile_backend=None):
    """Generate ``repeats`` times (after one untimed run); medians of the times, the tokens, the
    prefill's last-position logits, the peak GPU memory (weights, KV cache, graphs, activations)
    and, with ``compile_backend``, the compile time."""
    cuda = prompt_ids.is_cuda
    before = None
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    B, P = prompt_ids.shape
    with torch.no_grad():
        gen = Generator(tf, model, B, P, new_tokens, compile_backend=compile_backend)
        if graphs:
            gen.capture(prompt_ids)
        elif compile_backend:
            gen.warm_up(prompt_ids)     # compile outside the untimed run, which must not recompile
        gen.generate(prompt_ids)
        pre, dec = [], []
        for _ in range(repeats if graphs else 0):
            a, b = gen.generate(prompt_ids)
            pre.append(a)
            dec.append(b)
        res = dict(tokens=gen.out.clone(), logits=gen.logits_prefill.clone(), compile_s=gen.compile_s)
        if graphs and profile:
            g_pre, g_step = gen.graphs

            def after_prefill():
                gen.reset(prompt_ids)
                g_pre.replay()
            breakdown = dict(prefill=profile_graph(g_pre, lambda: gen.reset(prompt_ids), 3),
                             decode_step=profile_graph(g_step, after_prefill, 5))
            if None not in breakdown.values():
                res["breakdown"] = breakdown
    if pre:
        res.update(prefill_ms=statistics.median(pre), decode_ms=statistics.median(dec),
                   total_ms=statistics.median(a + b for a, b in zip(pre, dec)),
                   decode_step_ms=statistics.median(dec) / max(1, new_tokens - 1))
    if cuda:
        torch.cuda.synchronize()
        res["peak_bytes"] = torch.cuda.max_memory_allocated()
        res["allocated_before"] = before   # what was allocated when the run started (the model, leftovers)
    gen = None   # drop the graphs and the static cache before the next model runs
    if compile_backend:
        torch._dynamo.reset()   # and the compiled frames, which may hold this model's (dense) tensors
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
    return res


# --------------------------------------------------------------------------------------
# Tuning set-up and the tile-shape study
# --------------------------------------------------------------------------------------

def make_inspector(space, repeats):
    """``fast``: the split_k and sequential schedules (stream_k never won the H100 sweep) and the
    densify schedule (expand + cuBLAS, for prefill), fewer timing repeats; ``full``: the
    Inspector's defaults (every built-in schedule and densify, its default repeats)."""
    if space == "full":
        return STOICC.Inspector(use_default_configs=True, verbose=False)
    return STOICC.Inspector(use_default_configs=False, verbose=False, repeats=repeats, warmup=2,
                            schedules={"split_k": STOICC.Schedule(), "sequential": STOICC.Schedule(),
                                       "densify": densify_schedule()})


def _kernel(cfg):
    if not cfg:
        return None
    return dict(tile=f"{cfg.get('BLOCK_N')}x{cfg.get('BLOCK_K')}", schedule=cfg.get("schedule"),
                instance=cfg.get("instance"), split_k=cfg.get("SPLIT_K"), block_m=cfg.get("BLOCK_M"))


def prefill_price(model, inspector, decode_tokens, prefill_tokens):
    """For the first layer's linears of each distinct shape: prefill tuned at the decode tile shape
    (the spec's recipe) against prefill tuned over every tile shape. Run before ``sparsify_``: the
    recipe's choices land in the tuning cache, which ``sparsify_`` then reads."""
    rows, seen = [], set()
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or LAYER_FILTER not in name:
            continue
        W = mod.weight.detach()
        key = tuple(W.shape)
        if key in seen:
            continue
        seen.add(key)
        tuned = tune_weight(W, inspector, decode_tokens=decode_tokens, prefill_tokens=prefill_tokens,
                            allow_dense=True)
        W_t = tuning_proxy(W) if tuned.info["proxy"] else W    # a dense weight: the proxy the recipe tuned on
        x = torch.randn(prefill_tokens, W.shape[1], dtype=W.dtype, device=W.device)
        _, cfg_free = inspector.inspect(x, W_t)
        ranked = inspector.last_report.ranked()
        free_ms = ranked[0]["ms"] if ranked else None
        pinned_ms = tuned.info["prefill"]["ms"]
        rows.append(dict(layer=name, N=W.shape[0], K=W.shape[1], decode=_kernel(tuned.cfg_decoding),
                         prefill_pinned=_kernel(tuned.cfg_prefill), prefill_pinned_ms=pinned_ms,
                         prefill_free=_kernel(cfg_free), prefill_free_ms=free_ms,
                         price=(pinned_ms / free_ms - 1) if pinned_ms and free_ms else None))
    return rows


def tile_choices(report):
    """Per converted layer: its 2:4 fraction and the kernels chosen for decode and prefill."""
    out = []
    for r in report.rows:
        if not r.converted:
            continue
        out.append(dict(layer=r.name, N=r.N, K=r.K, frac_24=r.frac_24, frac_empty=r.frac_empty,
                        decode=_kernel(r.cfg_decoding), prefill=_kernel(r.cfg_prefill),
                        decode_ms=r.ms_decoding, prefill_ms=r.ms_prefill, source=r.source_decoding))
    return out


def _kind(layer):
    return layer.rsplit(".", 1)[-1]


def choice_counts(choices, phase):
    """{layer kind: {"<tile> <schedule>": count}} for one phase."""
    out = {}
    for c in choices:
        k = c[phase]
        key = f"{k['tile']} {k['schedule']}" + (f"/{k['split_k']}" if k["schedule"] == "split_k" else "")
        out.setdefault(_kind(c["layer"]), {}).setdefault(key, 0)
        out[_kind(c["layer"])][key] += 1
    return out


# --------------------------------------------------------------------------------------
# One sparsity
# --------------------------------------------------------------------------------------

def decode_split(dense_step, stoicc_step):
    """A decode step's profiled time split into the linears (stoicc kernels plus cuBLAS GEMMs,
    i.e. lm_head; for dense all GEMMs) and the rest, for both models, with the linears' speedup."""
    d_lin = dense_step.get("cublas_gemm", 0.0)
    s_lin = stoicc_step.get("stoicc", 0.0) + stoicc_step.get("cublas_gemm", 0.0)
    d_rest, s_rest = dense_step["total"] - d_lin, stoicc_step["total"] - s_lin
    return dict(dense_linear_ms=d_lin, dense_rest_ms=d_rest, stoicc_linear_ms=s_lin, stoicc_rest_ms=s_rest,
                linear_speedup=d_lin / s_lin if s_lin else None,
                step_speedup_profiled=dense_step["total"] / stoicc_step["total"] if stoicc_step["total"] else None)


def run_sparsity(tf, args, s, prompt_ids, inspector, log):
    dev, dtype = args.device, args.dtype
    use_graphs = dev.type == "cuda" and not args.no_graphs
    t0 = time.perf_counter()
    model = build_model(tf, args.arch, args.layers, dtype, dev, args.seed)
    build_s = time.perf_counter() - t0
    prune = None
    if s > 0:
        prune = STOICC.prune_patch_oneshot_(model, s / 100, filter_fn=lambda n, m: LAYER_FILTER in n)
    dense_bytes = weight_bytes(model)
    log(f"[{s}%] model built in {build_s:.1f} s; pruned: "
        + (f"{prune['sparsity']:.4f} global sparsity ({prune['tiles_24']}/{prune['tiles']} tiles 2:4)" if prune
           else "no (0 %: every tile dense)"))

    dense = run_generation(tf, model, prompt_ids, args.new_tokens, graphs=use_graphs, repeats=args.repeats,
                           profile=args.profile, compile_backend=args.compile)
    if dense["compile_s"] is not None:
        log(f"[{s}%] dense model compiled ({args.compile}, prefill and decode step) in {dense['compile_s']:.1f} s")
    if "total_ms" in dense:
        log(f"[{s}%] dense (cuBLAS): {dense['total_ms']:.1f} ms = prefill {dense['prefill_ms']:.2f} ms + "
            f"{args.new_tokens - 1} x {dense['decode_step_ms']:.3f} ms; peak {dense['peak_bytes'] / 2**30:.2f} GiB")

    t0 = time.perf_counter()
    price = prefill_price(model, inspector, args.batch, args.batch * args.prompt) if args.price else []
    price_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = STOICC.sparsify_(model, filter_fn=lambda n, m: LAYER_FILTER in n, inspector=inspector,
                              decode_tokens=args.batch, prefill_tokens=args.batch * args.prompt,
                              include_dense=(s == 0), verbose=args.verbose)
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
    log(f"[{s}%] sparsify_: {len(report.converted)} layers in {tune_s:.1f} s (decode choices: {sources}); "
        f"prefill-price study {price_s:.1f} s; weights {sp_bytes / dense_bytes:.3f} of dense")

    sparse = run_generation(tf, model, prompt_ids, args.new_tokens, graphs=use_graphs, repeats=args.repeats,
                            profile=args.profile, compile_backend=args.compile)
    if sparse["compile_s"] is not None:
        log(f"[{s}%] stoicc model compiled ({args.compile}) in {sparse['compile_s']:.1f} s")
    agree = (sparse["tokens"] == dense["tokens"]).float().mean().item()
    first = (sparse["tokens"][:, 0] == dense["tokens"][:, 0]).float().mean().item()
    err = (sparse["logits"] - dense["logits"]).abs().max().item()
    scale = dense["logits"].abs().max().item()
    rec = dict(sparsity=s, achieved_sparsity=prune["sparsity"] if prune else 0.0,
               speedup=None, dense_ms=dense.get("total_ms"), stoicc_ms=sparse.get("total_ms"),
               prefill_ms=sparse.get("prefill_ms"), decode_step_ms=sparse.get("decode_step_ms"),
               dense_prefill_ms=dense.get("prefill_ms"), dense_decode_step_ms=dense.get("decode_step_ms"),
               prefill_speedup=None, decode_speedup=None,
               weight_bytes_ratio=sp_bytes / dense_bytes, dense_weight_bytes=dense_bytes, stoicc_weight_bytes=sp_bytes,
               peak_bytes_ratio=(sparse["peak_bytes"] / dense["peak_bytes"]) if "peak_bytes" in dense else None,
               dense_peak_bytes=dense.get("peak_bytes"), stoicc_peak_bytes=sparse.get("peak_bytes"),
               dense_allocated_before=dense.get("allocated_before"),
               stoicc_allocated_before=sparse.get("allocated_before"),
               agreement=agree, first_token_agreement=first, max_logits_err=err,
               max_logits_rel_err=err / scale if scale else None,
               layers_converted=len(report.converted), tuning_s=tune_s, prefill_price_s=price_s, build_s=build_s,
               dense_compile_s=dense["compile_s"], stoicc_compile_s=sparse["compile_s"])
    if "breakdown" in dense and "breakdown" in sparse:
        rec["breakdown"] = dict(dense=dense["breakdown"], stoicc=sparse["breakdown"])
        sp = rec["decode_split"] = decode_split(dense["breakdown"]["decode_step"], sparse["breakdown"]["decode_step"])
        log(f"[{s}%] decode step by kernel (ms): dense linears (with lm_head) {sp['dense_linear_ms']:.3f}, rest "
            f"{sp['dense_rest_ms']:.3f}; stoicc linears (with lm_head) {sp['stoicc_linear_ms']:.3f}, rest "
            f"{sp['stoicc_rest_ms']:.3f}")
    if rec["dense_ms"] and rec["stoicc_ms"]:
        rec["speedup"] = rec["dense_ms"] / rec["stoicc_ms"]
        rec["prefill_speedup"] = rec["dense_prefill_ms"] / rec["prefill_ms"]
        rec["decode_speedup"] = rec["dense_decode_step_ms"] / rec["decode_step_ms"]
        log(f"[{s}%] stoicc: {rec['stoicc_ms']:.1f} ms = prefill {rec['prefill_ms']:.2f} ms + {args.new_tokens - 1} x "
            f"{rec['decode_step_ms']:.3f} ms -> speedup {rec['speedup']:.3f}x (prefill {rec['prefill_speedup']:.2f}x, "
            f"decode {rec['decode_speedup']:.2f}x); peak memory {rec['peak_bytes_ratio']:.3f}x")
    log(f"[{s}%] agreement with dense on the same weights: {agree:.3f} of the tokens ({first:.3f} of the first), "
        f"max |logits error| {err:.3g} (max |logits| {scale:.3g})")
    choices = tile_choices(report)
    del model, report
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rec, choices, price


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

def decode_kernel_calls(records):
    """(sparsity, "dense"/"stoicc", kernel, calls, ms, us per call) of the linear kernels (cuBLAS
    or stoicc) among the top kernels of each record's profiled decode step."""
    out = []
    for r in records:
        for who, b in (r.get("breakdown") or {}).items():
            for t in (b.get("decode_step") or {}).get("top", []):
                if t["category"] in ("stoicc", "cublas_gemm") and t.get("calls"):
                    name = t["kernel"].split("(")[0].replace("void ", "")
                    out.append((r["sparsity"], who, name, t["calls"], t["ms"], t["us_per_call"]))
    return out


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def write_results(res, out_dir, tag):
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"e2e_{tag}")
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    st = res["setup"]
    L = [f"# End-to-end: PATCH-like Llama-2-7B on {res['gpu']}", "",
         f"Date {res['date']}, commit `{res['commit']}`, torch {st['torch']}, transformers {st['transformers']}. "
         f"`python bench/e2e.py {st['argv']}`.", "",
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
         + "Baseline: the same pruned model, dense "
         f"(`nn.Linear`, cuBLAS), in the same process. stoicc: `stoicc_ext.sparsify_` (the spec's recipe per layer: "
         f"decode tuned at M = {st['batch']}, prefill at M = {st['batch'] * st['prompt']} with the decode tile shape "
         f"pinned; tuning space `{st['tune_space']}`). Times: median of {st['repeats']} generations. Agreement: "
         "fraction of the greedy tokens equal to the dense model's; logits error: max |difference| of the prefill's "
         "last-position logits (random weights make near-ties common, so a flipped token is not an error).", "",
         "| sparsity | speedup | dense ms | stoicc ms | prefill ms (dense) | decode step ms (dense) | weight bytes | "
         "peak memory | agreement | max logits err | tuning s |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["records"]:
        L.append(f"| {r['sparsity']} % | {_f(r['speedup'], '.3f')}x | {_f(r['dense_ms'], '.1f')} | "
                 f"{_f(r['stoicc_ms'], '.1f')} | {_f(r['prefill_ms'], '.2f')} ({_f(r['dense_prefill_ms'], '.2f')}) | "
                 f"{_f(r['decode_step_ms'], '.3f')} ({_f(r['dense_decode_step_ms'], '.3f')}) | "
                 f"{r['weight_bytes_ratio']:.3f}x | {_f(r['peak_bytes_ratio'], '.3f')}x | {r['agreement']:.3f} | "
                 f"{r['max_logits_err']:.3g} | {r['tuning_s']:.1f} |")
    rows = [r for r in res["records"] if r.get("decode_split")]
    if rows:
        L += ["", "## Where the time of a decode step goes", "",
              "GPU time per decode-step graph replay by kernel (torch.profiler over 5 replays, each kernel "
              "counted for the time it alone ran, so that the early start of a PDL-launched kernel is not "
              "counted twice; `linears`: the stoicc kernels, or cuBLAS GEMMs for dense, lm_head's cuBLAS GEMM "
              "included in both; `rest`: attention, norms, rotary, elementwise, KV-cache writes, argmax). The "
              "sums run a little below the replay times of the table (the gaps between kernels are not in "
              "them).", "",
              "| sparsity | dense linears ms | dense rest ms | stoicc linears ms | stoicc rest ms | linears speedup | "
              "step speedup (profiled) |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            b = r["decode_split"]
            L.append(f"| {r['sparsity']} % | {b['dense_linear_ms']:.3f} | {b['dense_rest_ms']:.3f} | "
                     f"{b['stoicc_linear_ms']:.3f} | {b['stoicc_rest_ms']:.3f} | {_f(b['linear_speedup'], '.2f')}x | "
                     f"{_f(b['step_speedup_profiled'], '.3f')}x |")
        per_call = decode_kernel_calls(rows)
        if per_call:
            L += ["", "The linear kernels of a decode step, per call (to set beside the kernel table's "
                  "per-call times; the name is cut to its template arguments):", "",
                  "| sparsity | model | kernel | calls per step | ms per step | us per call |", "|---|---|---|---|---|---|"]
            L += [f"| {sp} % | {who} | `{k}` | {c:.0f} | {ms:.3f} | {_f(us, '.1f')} |" for sp, who, k, c, ms, us in per_call]
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
    L += ["", "## The price of reusing the decode tile shape for prefill", "",
          "First layer, one linear of each distinct shape: prefill tuned at the decode tile shape (what the model "
          "runs) against prefill tuned over every tile shape (which would need a second compressed copy).", "",
          "| sparsity | layer | N x K | decode tile | prefill pinned | us | prefill free | us | price |",
          "|---|---|---|---|---|---|---|---|---|"]
    for s, rows in res["prefill_price"].items():
        for p in rows:
            L.append(f"| {s} % | {p['layer']} | {p['N']}x{p['K']} | {p['decode']['tile']} | "
                     f"{p['prefill_pinned']['tile']} {p['prefill_pinned']['schedule']} | "
                     f"{_f(p['prefill_pinned_ms'] and p['prefill_pinned_ms'] * 1e3, '.1f')} | "
                     f"{p['prefill_free']['tile']} {p['prefill_free']['schedule']} | "
                     f"{_f(p['prefill_free_ms'] and p['prefill_free_ms'] * 1e3, '.1f')} | "
                     f"{_f(p['price'] and 100 * p['price'], '+.1f')} % |")
    targets = check_targets.e2e_targets(res)
    if targets:          # none without timings (a CPU dry run)
        L += ["", "## Targets", "", check_targets.format_markdown(os.path.basename(base) + ".json", res, "end-to-end",
                                                               targets)]
    t = res["timing"]
    L += ["", f"Wall time {t['total_s']:.0f} s, of which tuning (sparsify_) {t['tuning_s']:.0f} s and the "
          f"prefill-price study {t['price_s']:.0f} s; tuning cache `{t['cache_dir']}`."]
    with open(base + ".md", "w") as f:
        f.write("\n".join(L) + "\n")
    return base + ".md", base + ".json"


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="bench/e2e.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="the model and run sizes: small (the default on a GPU: the Llama-2-7B architecture with "
                         f"{PRESETS['small']['layers']} decoder layers, fits any GPU), 7b (the spec's full 32-layer "
                         "model, about 16 GB of GPU memory at its peak), tiny (the default on the CPU: hidden "
                         "256, 2 layers, a dry run of the pipeline)")
    ap.add_argument("--full", dest="preset", action="store_const", const="7b", help="same as --preset 7b")
    ap.add_argument("--tiny", dest="preset", action="store_const", const="tiny", help="same as --preset tiny")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: the preset's)")
    ap.add_argument("--sparsities", default="0,25,35,45", help="comma list in percent (default 0,25,35,45)")
    ap.add_argument("--batch", type=int, default=None, help="batch (default 16; tiny: 2)")
    ap.add_argument("--prompt", type=int, default=None, help="prompt length (default 128; tiny: 16)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens (default 128; tiny: 8)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed generations per model (median; default 3)")
    ap.add_argument("--tune-space", choices=("fast", "full"), default="fast",
                    help="fast: split_k, sequential and densify schedules, 7 timing repeats (default); full: every "
                         "schedule of the Inspector, its default repeats")
    ap.add_argument("--tune-repeats", type=int, default=7, help="timing repeats per candidate for --tune-space fast")
    ap.add_argument("--fresh-cache", action="store_true",
                    help="tune into an empty temporary cache directory (cold tuning times)")
    ap.add_argument("--no-price", dest="price", action="store_false",
                    help="skip the price-of-reusing-the-decode-tile study")
    ap.add_argument("--no-graphs", action="store_true", help="eager generation on the GPU (debugging)")
    ap.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                    help="run both models' forward through torch.compile(fullgraph=True) with BACKEND (default "
                         "inductor), before the CUDA-graph capture: transformers' eager norms, rotary and "
                         "elementwise ops are fused, the linears stay cuBLAS and stoicc (compile time is printed, "
                         "not timed)")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the per-kernel time breakdown of the prefill and decode graphs (torch.profiler)")
    ap.add_argument("--out-dir", default=None,
                    help="where e2e_<gpu>.md/.json go (default bench/results on a GPU; nothing written on the CPU "
                         "unless given)")
    ap.add_argument("--tag", default=None, help="file name tag (default: the GPU name, or 'cpu')")
    ap.add_argument("--verbose", action="store_true", help="one line per converted layer")
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
    args.dtype = DTYPES[args.dtype]
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: torch sees no GPU")
        if args.device.index is None:
            args.device = torch.device("cuda", torch.cuda.current_device())
    return args


def main(argv=None):
    args = parse_args(argv)
    tf = require_transformers()
    if not STOICC.extension_loaded:
        sys.exit(f"the stoicc extension is not loaded ({STOICC.extension_error}); build it: bash scripts/setup_env.sh")
    on_gpu = args.device.type == "cuda"

    def log(msg):
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
    commit = run_info.commit()
    log(f"stoicc {STOICC.__version__}, torch {torch.__version__}, transformers {tf.__version__}, {gpu}, commit {commit}; "
        f"{args.layers} layers, batch {args.batch}, prompt {args.prompt}, {args.new_tokens} new tokens, "
        f"sparsities {args.sparsities}; tuning space {args.tune_space}, cache {tuning_cache.cache_dir()}")

    g = torch.Generator().manual_seed(args.seed + 1)
    prompt_ids = torch.randint(0, args.arch["vocab_size"], (args.batch, args.prompt), generator=g).to(args.device)
    inspector = make_inspector(args.tune_space, args.tune_repeats)
    t_all = time.perf_counter()
    records, choices, prices = [], {}, {}
    for s in args.sparsities:
        rec, ch, pr = run_sparsity(tf, args, s, prompt_ids, inspector, log)
        records.append(rec)
        choices[str(s)] = ch
        prices[str(s)] = pr
    total_s = time.perf_counter() - t_all

    setup = dict(preset=args.preset, arch=dict(args.arch, num_hidden_layers=args.layers), layers=args.layers,
                 batch=args.batch,
                 prompt=args.prompt, new_tokens=args.new_tokens, dtype=str(args.dtype).replace("torch.", ""),
                 seed=args.seed, repeats=args.repeats, tune_space=args.tune_space, graphs=on_gpu and not args.no_graphs,
                 compile=args.compile,
                 pruner="stoicc_ext.prune_patch_oneshot_ (128x128 tiles, global target, 2:4-loss scores)",
                 pruned_layers="nn.Linear in .layers. (q,k,v,o,gate,up,down); lm_head and embeddings dense",
                 torch=torch.__version__, transformers=tf.__version__, python=platform.python_version(),
                 stoicc=STOICC.__version__, argv=args.argv, device=str(args.device))
    res = dict(gpu=gpu, date=run_info.today(), commit=commit, setup=setup, records=records,
               tile_choices=choices, prefill_price=prices,
               timing=dict(total_s=total_s, tuning_s=sum(r["tuning_s"] for r in records),
                           price_s=sum(r["prefill_price_s"] for r in records), cache_dir=tuning_cache.cache_dir()))

    log("")
    log(f"{'sparsity':>8} {'speedup':>8} {'dense ms':>9} {'stoicc ms':>9} {'prefill ms':>10} {'step ms':>8} "
        f"{'weights':>8} {'peak':>7} {'agree':>6} {'logit err':>9} {'tune s':>7}")
    for r in records:
        log(f"{r['sparsity']:>7}% {_f(r['speedup'], '.3f'):>8} {_f(r['dense_ms'], '.1f'):>9} {_f(r['stoicc_ms'], '.1f'):>9} "
            f"{_f(r['prefill_ms'], '.2f'):>10} {_f(r['decode_step_ms'], '.3f'):>8} {r['weight_bytes_ratio']:>8.3f} "
            f"{_f(r['peak_bytes_ratio'], '.3f'):>7} {r['agreement']:>6.3f} {r['max_logits_err']:>9.3g} "
            f"{r['tuning_s']:>7.1f}")
    log(f"total {total_s:.0f} s (tuning {res['timing']['tuning_s']:.0f} s, prefill-price study "
        f"{res['timing']['price_s']:.0f} s)")
    out_dir = args.out_dir or (os.path.join(REPO, "bench", "results") if on_gpu else None)
    if out_dir:
        tag = args.tag or run_info.gpu_tag(
            gpu, "" if (args.preset, args.layers) == ("7b", 32) else f"{args.preset}_{args.layers}l")
        md, js = write_results(res, out_dir, tag)
        log(f"wrote {md} and {js}")
    return res


if __name__ == "__main__":
    main()
