"""Soak test: the Inspector's decode-then-prefill recipe and a converted model's generation, run
together for minutes, every output checked against a float64 reference.

    python -m bench.soak --minutes 10                  # on a GPU (CUDA graphs, several streams)
    python -m bench.soak --cpu --seconds 5             # dry run on the CPU (tests/test_soak.py)

What runs at once:

* the main thread: a small decoder (its ``layers.`` linears synthetic PATCH weights, then
  ``sparsify_``) generating greedily, over and over: the prefill of a ``[B, P]`` prompt and every
  decode step are CUDA graphs replayed on a stream of their own. Each step's logits are compared
  with the float64 forward of the same pruned dense model on the same input (teacher-forced on
  stoicc's tokens, so a near-tie in an argmax never derails the comparison).
* ``--threads`` workers, each on its own CUDA stream: the library's decode/prefill recipe
  (``stoicc_ext.nn.recipe.tune_weight``: inspect a decode X, pin its tile shape, inspect a prefill
  X, compress once) on random PATCH weights with its own Inspector (``soak_inspector``), so
  ``inspect`` runs concurrently on shared weights; one worker clears the memory cache now and
  then, so cache files are read concurrently too. Both executors run on the worker's stream and
  are checked against ``x.double() @ W.double().T``.

Everything is tuned before the workers start (the warm-up, timed apart): the timing protocol
captures CUDA graphs, and a capture forbids other threads' allocations (capture_error_mode
"global"), so concurrent *tuning* is outside what this exercises; concurrent lookups are in.

On the CPU (``--cpu``) the same flow runs eagerly, without graphs or streams, with a fake timer so
that tuning results are cached and read back. Prints what ran and for how long; exit status 1 on
any mismatch or error.
"""
import argparse
import contextlib
import copy
import json
import os
import random
import sys
import tempfile
import threading
import time
import traceback

if __package__ in (None, ""):   # loaded by path: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F
from torch import nn

import stoicc_ext as STOICC
from stoicc_ext.nn.recipe import tune_weight
from stoicc_ext.testing import UNIT_ROUNDOFF as EPS, random_patch_weight
from stoicc_ext.tuning import cache as tuning_cache
from stoicc_ext.tuning.dense import DENSE
from stoicc_ext.tuning.library import default_schedules

# A model's logits carry every layer's rounding: their bound is this many output ulps of max |ref|
# (the CPU dry run stays near 1.5); a wrong tile, a lost split or a race lands far above it.
MODEL_ULPS = 32

GPU = dict(hidden=2048, inter=5632, layers=2, vocab=4096, batch=16, prompt=128, new_tokens=64,
           shapes=((4096, 4096), (11008, 4096), (4096, 11008)), threads=4)
CPU = dict(hidden=256, inter=384, layers=1, vocab=256, batch=2, prompt=16, new_tokens=4,
           shapes=((256, 256), (384, 256)), threads=2)


# ---- the model --------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.q_proj, self.k_proj, self.o_proj = (nn.Linear(h, h, bias=False) for _ in range(3))
        self.v_proj = nn.Linear(h, h, bias=True)
        self.gate_proj, self.up_proj = nn.Linear(h, i, bias=False), nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)
        self.norm1, self.norm2 = nn.LayerNorm(h), nn.LayerNorm(h)

    def forward(self, x):
        n = self.norm1(x)
        x = x + self.o_proj(torch.tanh(self.q_proj(n) + self.k_proj(n) + self.v_proj(n)))
        n = self.norm2(x)
        return x + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class Decoder(nn.Module):
    """Token ids ``[B, T]`` -> logits ``[B, T, vocab]``; positions are independent (no attention),
    which is all the kernels need: prefill runs M = B * T, a decode step M = B."""

    def __init__(self, hidden, inter, layers, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(Block(hidden, inter) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.layers:
            x = block(x)
        return self.lm_head(self.norm(x))


def pruned_decoder(p, dtype, device, seed):
    """A Decoder whose ``layers.`` linears are synthetic PATCH weights (60 % of the 128 x 128 tiles
    2:4, 10 % empty), scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Decoder(p["hidden"], p["inter"], p["layers"], p["vocab"])
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear) and name.startswith("layers."):
                N, K = mod.weight.shape
                W, _ = random_patch_weight(N, K, 0.6, 0.1, dtype=torch.float32, generator=g)
                mod.weight.copy_(W / K ** 0.5)
                if mod.bias is not None:
                    mod.bias.uniform_(-0.1, 0.1)
    return model.to(dtype=dtype, device=device).eval().requires_grad_(False)


# ---- checks ------------------------------------------------------------------------------------

class Tally:
    """Counts, the worst error seen per kind (as a fraction of its bound) and the failures, shared
    by every thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts, self.worst, self.failures = {}, {}, []

    def add(self, kind, n=1):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def check(self, kind, y, ref, bound_ulps, dtype, what):
        """``y`` against the float64 ``ref``: max |y - ref| <= ulps * eps(dtype) * max |ref| (+ 1e-4 of
        it for accumulation order); NaN fails."""
        scale = ref.abs().max().item() + 1e-6
        err = (y.double() - ref).abs().max().item()
        frac = err / ((bound_ulps * EPS[dtype] + 1e-4) * scale)
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.worst[kind] = max(self.worst.get(kind, 0.0), frac)
            if not frac <= 1.0:       # NaN too
                self.failures.append(f"{kind}: {what}: max |err| {err:.4g} vs max |ref| {scale:.4g}")

    def fail(self, what):
        with self.lock:
            self.failures.append(what)


# ---- the workers: the Inspector recipe ---------------------------------------------------------

def recipe(inspector, W, decode_M, prefill_M, gen):
    """The library's decode/prefill recipe, ``tune_weight`` (inspect decode, pin its tile shape,
    inspect prefill, compress once; what ``sparsify_`` runs per layer), so the soak exercises that
    code and not a copy of it. Returns ``([(x, executor, config)] for decode and prefill, the
    compressed W, [the two choices' sources])``; the x to check each executor on are drawn from
    ``gen`` (tune_weight's own inputs only time the candidates)."""
    tuned = tune_weight(W, inspector, decode_tokens=decode_M, prefill_tokens=prefill_M)
    x_dec, x_pre = (torch.randn(M, W.shape[1], generator=gen).to(W.dtype).to(W.device) for M in (decode_M, prefill_M))
    calls = [(x_dec, tuned.exec_decoding, tuned.cfg_decoding), (x_pre, tuned.exec_prefill, tuned.cfg_prefill)]
    return calls, tuned.compressed, [tuned.info["decode"]["source"], tuned.info["prefill"]["source"]]


def worker(idx, args, weights, tally, stop, make_inspector, stream):
    gen = torch.Generator().manual_seed(1000 + idx)
    rnd = random.Random(idx)
    inspector = make_inspector()
    try:
        while not stop.is_set():
            W, ref_W = rnd.choice(weights)
            if idx == 0 and rnd.random() < 0.2:
                tuning_cache.clear_memory()          # the next lookups, in every thread, read the files
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                calls, Wc, sources = recipe(inspector, W, args.batch, args.batch * args.prompt, gen)
                for s in sources:
                    tally.add(f"inspect ({s})")
                outs = [(x, ex(x, *Wc, M=x.shape[0], N=W.shape[0], K=W.shape[1], **cfg), cfg) for x, ex, cfg in calls]
            if stream is not None:
                stream.synchronize()
            for x, y, cfg in outs:
                tally.check("executor output", y, x.double() @ ref_W.T, 2, W.dtype,
                            f"{tuple(W.shape)} M={x.shape[0]} {cfg.get('instance', cfg.get('schedule'))}")
            tally.add("recipes")
    except Exception:  # noqa: BLE001 - reported, and every thread stops
        tally.fail(f"worker {idx}: {traceback.format_exc()}")
        stop.set()


# ---- the main thread: generation ---------------------------------------------------------------

class Generation:
    """Greedy generation with static buffers: ``prefill()`` reads the prompt buffer and writes the
    first token, ``step()`` reads the token buffer and overwrites it with the next, each one CUDA
    graph on the GPU (eager on the CPU). The logits buffers stay readable for the checks."""

    def __init__(self, model, args, device, graphs):
        self.model = model
        self.prompt = torch.zeros(args.batch, args.prompt, dtype=torch.long, device=device)
        self.token = torch.zeros(args.batch, 1, dtype=torch.long, device=device)
        self.graphs = graphs
        self.stream = torch.cuda.Stream() if graphs else None
        if graphs:
            self._prefill_graph, self.prefill_logits = self._capture(self._prefill)
            self._step_graph, self.step_logits = self._capture(self._step)

    def _prefill(self):
        logits = self.model(self.prompt)
        self.token.copy_(logits[:, -1:].argmax(-1))
        return logits

    def _step(self):
        logits = self.model(self.token)
        self.token.copy_(logits[:, -1:].argmax(-1))
        return logits

    def _capture(self, fn):
        s = self.stream
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fn()                              # warm-up off the capture (allocator, cuBLAS)
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            out = fn()
        return g, out

    def prefill(self):
        if not self.graphs:
            self.prefill_logits = self._prefill()
            return self.prefill_logits
        self.stream.wait_stream(torch.cuda.current_stream())     # the prompt was written there
        with torch.cuda.stream(self.stream):
            self._prefill_graph.replay()
        self.stream.synchronize()
        return self.prefill_logits

    def step(self):
        if not self.graphs:
            self.step_logits = self._step()
            return self.step_logits
        self.stream.wait_stream(torch.cuda.current_stream())     # the caller's copy of the token, first
        with torch.cuda.stream(self.stream):
            self._step_graph.replay()
        self.stream.synchronize()
        return self.step_logits


def generate_once(gen, ref_model, args, tally, rnd):
    prompt = torch.randint(0, args.vocab, gen.prompt.shape, generator=rnd)
    gen.prompt.copy_(prompt)
    logits = gen.prefill()
    tally.check("prefill logits", logits, ref_model(gen.prompt), MODEL_ULPS, args.dtype, "prefill")
    for i in range(args.new_tokens - 1):
        token = gen.token.clone()                 # the input of this step, before the step overwrites it
        logits = gen.step()
        tally.check("decode-step logits", logits, ref_model(token), MODEL_ULPS, args.dtype, f"decode step {i}")
    tally.add("generations")


# ---- run ---------------------------------------------------------------------------------------

def soak_inspector(timer):
    """The Inspector of the soak: the default schedules without ``dense``. The soak exercises the
    stoicc kernels, and the dense candidate (cuBLAS on W uncompressed) wins on some of its small
    shapes on a GPU (10 of 14 layers on the H200), which would keep those layers dense."""
    return STOICC.Inspector(use_default_configs=False, timer=timer, verbose=False,
                            schedules={k: s for k, s in default_schedules().items() if k != DENSE})


def cpu_timer(fn, args_list, config):
    """The dry run's timer: no timing on the CPU, a fixed score per config, so choices are stored
    in the tuning cache and read back as on a GPU."""
    if config.get("schedule") in ("dense", "densify"):
        return 10.0               # the stoicc kernels win, as at decode sizes on a GPU
    return 1.0 + 0.01 * config.get("SPLIT_K", 0) + 0.001 * config.get("BLOCK_N", 0)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the soak runs, warm-up excluded")
    ap.add_argument("--seconds", type=float, default=None, help="the same in seconds (overrides --minutes)")
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU: eager, small, a fake timer")
    ap.add_argument("--threads", type=int, default=None, help="Inspector workers (default 4 on a GPU, 2 on the CPU)")
    ap.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    ap.add_argument("--cache-dir", default=None, help="the tuning cache (default: a fresh temporary directory)")
    ap.add_argument("--json", default=None, help="also write the summary to this file")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    p = CPU if args.cpu else GPU
    for k, v in p.items():
        if k == "threads" and args.threads is not None:
            continue
        setattr(args, k, v)
    args.dtype = getattr(torch, args.dtype)
    args.seconds = args.seconds if args.seconds is not None else 60.0 * args.minutes
    return args


def main(argv=None):
    args = parse(argv)
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.soak: no GPU; use --cpu for the dry run")
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="stoicc-soak-cache-")
    os.environ["STOICC_CACHE_DIR"] = cache_dir
    os.environ.pop("STOICC_DISABLE_CACHE", None)
    tuning_cache.clear_memory()
    timer = cpu_timer if args.cpu else None

    def make_inspector():
        return soak_inspector(timer)

    # warm-up: convert the model (tunes each linear) and tune every worker weight, single-threaded
    t0 = time.perf_counter()
    model = pruned_decoder(vars(args), args.dtype, device, args.seed)
    ref_model = copy.deepcopy(model).double()
    report = STOICC.sparsify_(model, inspector=make_inspector(), decode_tokens=args.batch,
                              prefill_tokens=args.batch * args.prompt, fuse=False,
                              filter_fn=lambda mod, fqn: fqn.startswith("layers."))
    converted = sum(r.status == "converted" for r in report.rows)
    if converted != 7 * args.layers:
        raise SystemExit(f"bench.soak: sparsify_ converted {converted} of {7 * args.layers} linears:\n{report}")
    g = torch.Generator().manual_seed(args.seed + 1)
    weights = []
    for N, K in args.shapes:
        W, _ = random_patch_weight(N, K, 0.6, 0.1, dtype=args.dtype, generator=g)
        W = W.to(device)
        weights.append((W, W.double()))
        recipe(make_inspector(), W, args.batch, args.batch * args.prompt, g)
    gen = Generation(model, args, device, graphs=not args.cpu)
    warm_s = time.perf_counter() - t0

    # the soak
    tally, stop = Tally(), threading.Event()
    streams = [None if args.cpu else torch.cuda.Stream() for _ in range(args.threads)]
    threads = [threading.Thread(target=worker, args=(i, args, weights, tally, stop, make_inspector, streams[i]),
                                daemon=True) for i in range(args.threads)]
    rnd = torch.Generator().manual_seed(args.seed + 2)
    t1 = time.perf_counter()
    for t in threads:
        t.start()
    try:
        while time.perf_counter() - t1 < args.seconds and not stop.is_set():
            generate_once(gen, ref_model, args, tally, rnd)
    except Exception:  # noqa: BLE001
        tally.fail(f"generation: {traceback.format_exc()}")
    stop.set()
    for t in threads:
        t.join()
    soak_s = time.perf_counter() - t1

    summary = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu", dtype=str(args.dtype),
                   seconds=round(soak_s, 1), warm_up_seconds=round(warm_s, 1), cuda_graphs=not args.cpu,
                   streams=0 if args.cpu else args.threads + 1, threads=args.threads,
                   model=dict(hidden=args.hidden, inter=args.inter, layers=args.layers, vocab=args.vocab,
                              batch=args.batch, prompt=args.prompt, new_tokens=args.new_tokens,
                              converted_linears=converted),
                   worker_shapes=[list(s) for s in args.shapes], counts=dict(sorted(tally.counts.items())),
                   worst_error_over_bound={k: round(v, 4) for k, v in sorted(tally.worst.items())},
                   failures=tally.failures[:20], n_failures=len(tally.failures), cache_dir=cache_dir,
                   library=STOICC.__version__)
    print(render(summary), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if not tally.failures else 1


def render(s):
    m = s["model"]
    lines = [f"stoicc soak: {s['seconds']:.1f} s on {s['device']} ({s['dtype']}, "
             f"{'CUDA graphs, ' + str(s['streams']) + ' streams' if s['cuda_graphs'] else 'eager dry run'}, "
             f"{s['threads']} Inspector threads), after a {s['warm_up_seconds']:.1f} s warm-up",
             f"  model: {m['layers']} layers, hidden {m['hidden']}, intermediate {m['inter']}, vocab {m['vocab']}, "
             f"{m['converted_linears']} linears converted; batch {m['batch']}, prompt {m['prompt']}, "
             f"{m['new_tokens']} new tokens per generation",
             f"  worker weights: {', '.join('x'.join(map(str, w)) for w in s['worker_shapes'])}"]
    for k, v in s["counts"].items():
        worst = s["worst_error_over_bound"].get(k)
        lines.append(f"  {k:<24} {v:>8}" + ("" if worst is None else f"   worst error {worst:.3f} of its bound"))
    lines.append(f"  result: {'OK' if not s['n_failures'] else 'FAILED'} ({s['n_failures']} failure(s))")
    lines += [f"    {f}" for f in s["failures"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
