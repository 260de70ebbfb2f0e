"""bench/e2e, generation: greedy generation with a static KV cache, the prefill and each decode
step as one CUDA graph (optionally through torch.compile first), timed and profiled."""
import contextlib
import gc
import os
import sys

if __package__ in (None, ""):   # loaded by path: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import statistics
import time

import torch

from bench.e2e_profile import profile_graph  # noqa: E402
from bench.timing import side_stream  # noqa: E402


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
