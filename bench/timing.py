"""Timing for the benchmarks.

The protocol itself is the library's (``stoicc_ext.tuning.timing``, shared with the Inspector's tuner):
CUDA events, eager warm-up on a side stream, one CUDA graph over weight copies rotated past the
L2, median of the replays. It is re-exported here, not copied. What only the benchmarks need is
added: the memory-bandwidth ceilings measured by SM kernels, and the host (CPU) cost of an eager
call.
"""
import statistics
import time

import torch

from stoicc_ext.tuning.timing import copies_for, rotated_copies, side_stream, time_graph  # noqa: F401

__all__ = ["copies_for", "rotated_copies", "side_stream", "time_graph", "bandwidth_ceilings",
           "host_us_per_call", "CEILING_BYTES"]

CEILING_BYTES = 2 << 30   # 2 GiB: 30x the H200's L2, so neither figure sees a cache hit


def bandwidth_ceilings(nbytes=CEILING_BYTES, repeats=15, device="cuda"):
    """The GPU's memory bandwidth as SM kernels reach it, eager, in this process:
    ``copy_tbps``: ``b.copy_(a)`` over ``nbytes`` of fp16, counting bytes read plus bytes written;
    ``read_tbps``: ``a.sum()`` over the same ``nbytes`` (a read-only reduction), counting bytes
    read. A weight-streaming kernel reads far more than it writes, so the read-only figure is its
    ceiling. Both eager on purpose: captured in a CUDA graph a device copy becomes a memcpy node
    served by the copy engines (2.77 TB/s on an H200 against 4.28 TB/s for the SM copy kernel),
    which is not what a kernel competes with. Median of ``repeats`` calls after a warm-up;
    random data (never zeros)."""
    a = torch.empty(nbytes // 2, dtype=torch.float16, device=device).uniform_(-1, 1)
    b = torch.empty_like(a)
    copy_ms = time_graph(lambda: b.copy_(a), [()], repeats=repeats, use_graph=False)
    read_ms = time_graph(lambda: a.sum(), [()], repeats=repeats, use_graph=False)
    del a, b
    torch.cuda.empty_cache()
    return dict(copy_tbps=2 * nbytes / copy_ms / 1e9, read_tbps=nbytes / read_ms / 1e9, ceiling_bytes=nbytes,
                copy_ms=copy_ms, read_ms=read_ms)


def host_us_per_call(fn, calls=100, batches=30, warmup_batches=2):
    """Median host (CPU) microseconds of one eager call of ``fn()``: what a call costs the
    Python thread that issues it (argument checks, dispatch, allocation of the output, the
    launch), which bounds an eager model's speed when its kernels are short.

    Method: ``warmup_batches`` untimed batches first (lazy initialisation, allocator, caches);
    then ``batches`` batches of ``calls`` back-to-back calls, each batch timed with
    ``time.perf_counter`` and divided by ``calls``; the result is the median over batches. No
    synchronisation inside a batch (the host does not wait for the GPU, as in a model), and one
    between batches, outside the timed region, so that the GPU's launch queue (about a thousand
    entries) never fills and blocks a launch: the timing stays host-bound even when the kernels
    take longer than their launches."""
    cuda = torch.cuda.is_available()

    def sync():
        if cuda:
            torch.cuda.synchronize()
    for _ in range(warmup_batches):
        for _ in range(calls):
            fn()
        sync()
    times = []
    for _ in range(batches):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    sync()
    return statistics.median(times)
