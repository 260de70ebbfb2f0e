"""bench/e2e, tuning: the Inspector the benchmark converts with, the price of reusing the decode
tile shape for prefill, and the per-layer kernel choices of a conversion."""
import os
import sys

if __package__ in (None, ""):   # loaded by path: the bench package lives one directory up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

import stoicc_ext as STOICC  # noqa: E402
from stoicc_ext.tuning.dense import DENSE, DenseSchedule  # noqa: E402
from stoicc_ext.tuning.densify import densify_schedule  # noqa: E402
from stoicc_ext.nn.recipe import tune_weight  # noqa: E402

from bench.e2e_model import LAYER_FILTER  # noqa: E402


def make_inspector(space, repeats):
    """``fast``: the split_k and sequential schedules (stream_k never won the H100 sweep), the
    densify schedule (expand + cuBLAS, for prefill) and the dense one (cuBLAS on W uncompressed:
    where it wins, ``sparsify_`` keeps the layer dense, as with the default Inspector a user gets),
    fewer timing repeats; ``full``: the Inspector's defaults (every built-in schedule, densify and
    dense, its default repeats)."""
    if space == "full":
        return STOICC.Inspector(use_default_configs=True, verbose=False)
    return STOICC.Inspector(use_default_configs=False, verbose=False, repeats=repeats, warmup=2,
                            schedules={"split_k": STOICC.Schedule(), "sequential": STOICC.Schedule(),
                                       "densify": densify_schedule(), DENSE: DenseSchedule()})


def _kernel(cfg):
    if not cfg:
        return None
    return dict(tile=f"{cfg.get('BLOCK_N')}x{cfg.get('BLOCK_K')}", schedule=cfg.get("schedule"),
                instance=cfg.get("instance"), split_k=cfg.get("SPLIT_K"), block_m=cfg.get("BLOCK_M"))


def prefill_price(model, inspector, decode_tokens, prefill_tokens):
    """For the first layer's linears of each distinct shape: prefill tuned at the decode tile shape
    (the decode-then-prefill recipe) against prefill tuned over every tile shape. Run before ``sparsify_``: the
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
        tuned = tune_weight(W, inspector, decode_tokens=decode_tokens, prefill_tokens=prefill_tokens)
        if tuned.info["dense_reason"] is not None:      # kept dense: no tile shape, nothing pinned
            continue
        x = torch.randn(prefill_tokens, W.shape[1], dtype=W.dtype, device=W.device)
        _, cfg_free = inspector.inspect(x, W)
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


