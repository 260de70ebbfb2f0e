"""bench/e2e, profiling: where the GPU time of a prefill or decode-step graph replay goes, by
kernel category (torch.profiler), each kernel counted for the time it alone was making progress;
the decode step split into the linears and the rest, with the linears' bandwidth over the bytes
they read."""
import torch

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


def _tbps(nbytes, ms):
    return nbytes / ms / 1e9 if ms and nbytes else None


def linear_split(dense_step, stoicc_step, dense_bytes=None, stoicc_bytes=None):
    """A graph replay's profiled time (a decode step or a prefill) split into the linears and the
    rest, for both models, with the linears' speedup. Linears: for dense, every GEMM (cuBLAS; lm_head included); for stoicc,
    the stoicc kernels plus cuBLAS GEMMs (lm_head, and any layer left ``nn.Linear``).

    ``dense_bytes`` / ``stoicc_bytes`` (``e2e_model.linear_bytes`` of each model: ``{"dense":
    nn.Linear bytes, "stoicc": MixedModule bytes}``) add the bandwidths, each a step's weight bytes
    over the time of the kernels that read them: ``dense_linear_tbps`` (every nn.Linear over the
    dense model's GEMM time), ``stoicc_linear_tbps`` (the compressed weights over the stoicc
    kernels' time: the in-model figure of the decode kernels), ``stoicc_cublas_tbps`` (the
    converted model's remaining nn.Linear over its GEMM time) and ``stoicc_all_linear_tbps``."""
    d_lin = dense_step.get("cublas_gemm", 0.0)
    s_kern, s_cub = stoicc_step.get("stoicc", 0.0), stoicc_step.get("cublas_gemm", 0.0)
    s_lin = s_kern + s_cub
    d_rest, s_rest = dense_step["total"] - d_lin, stoicc_step["total"] - s_lin
    out = dict(dense_linear_ms=d_lin, dense_rest_ms=d_rest, stoicc_linear_ms=s_lin, stoicc_rest_ms=s_rest,
               stoicc_kernel_ms=s_kern, stoicc_cublas_ms=s_cub,
               linear_speedup=d_lin / s_lin if s_lin else None,
               step_speedup_profiled=dense_step["total"] / stoicc_step["total"] if stoicc_step["total"] else None)
    if dense_bytes is not None and stoicc_bytes is not None:
        db = dense_bytes["dense"] + dense_bytes["stoicc"]
        out.update(dense_linear_bytes=db, dense_linear_tbps=_tbps(db, d_lin),
                   stoicc_linear_bytes=stoicc_bytes["stoicc"], stoicc_linear_tbps=_tbps(stoicc_bytes["stoicc"], s_kern),
                   stoicc_cublas_bytes=stoicc_bytes["dense"], stoicc_cublas_tbps=_tbps(stoicc_bytes["dense"], s_cub),
                   stoicc_all_linear_tbps=_tbps(stoicc_bytes["stoicc"] + stoicc_bytes["dense"], s_lin))
    return out


def linear_kernel_calls(records, phase):
    """(sparsity, "dense"/"stoicc", kernel, calls, ms, us per call) of the linear kernels (cuBLAS
    or stoicc) among the top kernels of each record's profiled ``phase`` ("decode_step" or
    "prefill")."""
    out = []
    for r in records:
        for who, b in (r.get("breakdown") or {}).items():
            for t in (b.get(phase) or {}).get("top", []):
                if t["category"] in ("stoicc", "cublas_gemm") and t.get("calls"):
                    name = t["kernel"].replace("(anonymous namespace)::", "").split("(")[0].replace("void ", "")
                    out.append((r["sparsity"], who, name, t["calls"], t["ms"], t["us_per_call"]))
    return out

