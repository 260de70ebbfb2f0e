"""The timing protocol shared by the benchmarks and the inspector.

Weights rotate past the L2: `fn` is called on `len(args_list)` argument sets (copies of the
weight whose total size exceeds the L2 several times), all captured in one CUDA graph, so each
call finds its weight in HBM, as in a real model where the other layers evict it. The graph
removes launch overhead (serving replays graphs too). The result is the median over `repeats`
replays of the per-call time, after `warmup` replays.
"""
import statistics

import torch

__all__ = ["copies_for", "time_graph"]


def copies_for(nbytes_one, l2_bytes=None, min_total=4, max_copies=64):
    """How many weight copies to rotate so that they span >= 2x the L2 (at least `min_total`)."""
    if l2_bytes is None:
        l2_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    need = (2 * l2_bytes) // max(1, nbytes_one) + 1
    return int(max(min_total, min(max_copies, need)))


def time_graph(fn, args_list, warmup=3, repeats=20, use_graph=True):
    """Median milliseconds per call of fn(*args) over the rotated argument sets."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for a in args_list:  # eager warm-up (allocator, lazy init) off the capture
            fn(*a)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    if use_graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for a in args_list:
                fn(*a)
        run = g.replay
    else:
        def run():
            for a in args_list:
                fn(*a)
    for _ in range(warmup):
        run()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(repeats):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(args_list))
    return statistics.median(times)
