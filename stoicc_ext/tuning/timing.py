"""The timing protocol shared by the benchmarks and the inspector.

Weights rotate past the L2: `fn` is called on `len(args_list)` argument sets (copies of the
weight whose total size exceeds the L2 several times), all captured in one CUDA graph, so each
call finds its weight in HBM, as in a real model where the other layers evict it. The graph
removes launch overhead (serving replays graphs too). The result is the median over `repeats`
replays of the per-call time, after `warmup` replays.
"""
import statistics

import torch

__all__ = ["copies_for", "rotated_copies", "side_stream", "time_graph"]

_SIDE_STREAMS = {}


def copies_for(nbytes_one, l2_bytes=None, min_total=4, max_copies=64):
    """How many weight copies to rotate so that they span >= 2x the L2 (at least `min_total`)."""
    if l2_bytes is None:
        l2_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    need = (2 * l2_bytes) // max(1, nbytes_one) + 1
    return int(max(min_total, min(max_copies, need)))


def rotated_copies(weight, l2_bytes=None):
    """``[weight]`` plus clones, as many as ``copies_for`` asks for its size: the argument sets
    that ``time_graph`` rotates. ``weight``: a tensor, a ``CompressedWeight`` or any tuple/list
    of tensors (non-tensor entries are shared, not cloned)."""
    from ..format.compressed import CompressedWeight

    if isinstance(weight, torch.Tensor):
        return [weight] + [weight.clone() for _ in range(copies_for(weight.numel() * weight.element_size(),
                                                                    l2_bytes=l2_bytes) - 1)]
    nbytes = sum(t.numel() * t.element_size() for t in weight if isinstance(t, torch.Tensor))
    out = [weight]
    for _ in range(copies_for(nbytes, l2_bytes=l2_bytes) - 1):
        cl = [t.clone() if isinstance(t, torch.Tensor) else t for t in weight]
        out.append(CompressedWeight(cl, **weight._kwargs()) if isinstance(weight, CompressedWeight)
                   else type(weight)(cl))
    return out


def side_stream():
    """The one side stream of the current device on which warm-ups run before a capture. A new
    stream per call would cost more than its creation: cuBLAS keeps a workspace per (handle,
    stream) in torch's allocator, so tuning, which times hundreds of candidates, would pile up
    workspaces (up to one per pooled stream) that count in the model's peak memory."""
    dev = torch.cuda.current_device()
    s = _SIDE_STREAMS.get(dev)
    if s is None:
        s = _SIDE_STREAMS[dev] = torch.cuda.Stream(dev)
    return s


def time_graph(fn, args_list, warmup=3, repeats=20, use_graph=True):
    """Median milliseconds per call of fn(*args) over the rotated argument sets."""
    s = side_stream()
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
