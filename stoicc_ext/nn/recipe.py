"""The decode/prefill recipe for one weight: tune decode, pin its tile shape, tune prefill,
compress once.

    tuned = tune_weight(W, inspector, decode_tokens=16, prefill_tokens=2048)
    tuned.compressed, tuned.exec_decoding, tuned.cfg_decoding, tuned.exec_prefill, tuned.cfg_prefill

Three choices, each on purpose:

* The inspector's own config space (``set_configs``) is kept: the tile-shape pin is intersected
  with it, and the space is restored afterwards, so one Inspector can tune layer after layer (a
  pin left in place would restrict the next layer's decode tuning).
* The decode choice decides how the weight is stored, since both phases read one weight: where
  the Inspector keeps W dense at decode (dense cuBLAS wins, or W has no 2:4 tile), prefill runs
  dense cuBLAS too (on a dense weight nothing beats it) and ``compressed`` is a ``DenseWeight``.
* Otherwise the prefill tuning is pinned to the decode tile shape, which leaves the dense
  candidate out: its uncompressed weight is not kept.
"""
import time

import torch

from ..format.compressed import CompressedWeight
from ..format.tile_map import TileMap
from ..tuning.configs import create_configs
from ..tuning.dense import DenseWeight, is_dense_config
from ..tuning.inspector import Inspector
from ..tuning.report import _short

__all__ = ["TunedWeight", "tune_weight", "has_24_tile", "DECODE_TOKENS", "PREFILL_TOKENS"]

DECODE_TOKENS = 16       # a decode step of a batch of 16 sequences
PREFILL_TOKENS = 2048    # their 128-token prompts together


class TunedWeight:
    """What ``tune_weight`` returns: the compressed weight, both executors and configs, and for
    each phase where the choice came from and what it measured (``info``)."""

    def __init__(self, compressed, exec_decoding, cfg_decoding, exec_prefill, cfg_prefill, info):
        self.compressed = compressed        # a CompressedWeight, or a DenseWeight where W stays dense
        self.exec_decoding, self.cfg_decoding = exec_decoding, cfg_decoding
        self.exec_prefill, self.cfg_prefill = exec_prefill, cfg_prefill
        self.info = info

    def __repr__(self):
        return (f"TunedWeight({self.compressed!r}, decode={_short(self.cfg_decoding)}, "
                f"prefill={_short(self.cfg_prefill)})")


def has_24_tile(W):
    """Whether W has a 2:4 tile on the 64 x 64 grid (without one, ``Inspector.inspect`` keeps W
    dense). Reads W's ``TileMap``, which ``inspect`` and ``compress`` then reuse instead of
    scanning W again."""
    return TileMap.of(W).any_24


def _phase_info(inspector, t0):
    rep = inspector.last_report
    ranked = rep.ranked() if rep is not None else []
    return dict(source=rep.source if rep is not None else None,
                ms=ranked[0]["ms"] if ranked else None,
                candidates=len(rep.candidates) if rep is not None else None,
                seconds=time.perf_counter() - t0)


@torch.no_grad()     # W may be a Parameter, kept as it is so that its TileMap is found again
def tune_weight(W, inspector=None, *, decode_tokens=DECODE_TOKENS, prefill_tokens=PREFILL_TOKENS):
    """The decode/prefill recipe on one weight ``W`` ([N, K], fp16/bf16, on the device to tune for).

    1. ``inspect`` a decode input ``[decode_tokens, K]``: picks the tile shape and the decode kernel,
       or keeps W dense (then prefill is dense cuBLAS too, and steps 2-3 are skipped);
    2. pin ``BLOCK_N``/``BLOCK_K`` to that tile shape (within the inspector's own config space);
    3. ``inspect`` a prefill input ``[prefill_tokens, K]``: the prefill kernel at that tile shape;
    4. ``compress`` W once with the decode config (a ``DenseWeight`` where W stays dense).

    Off the GPU the Inspector returns its heuristic's choice (no timing), so this runs on CPU too.
    ``info["dense_reason"]``: why W stays dense (the Inspector's "why"), None when compressed.
    """
    if not isinstance(W, torch.Tensor) or W.dim() != 2:
        raise ValueError(f"W must be a 2-D tensor [N, K], got {type(W).__name__} "
                         f"{tuple(W.shape) if isinstance(W, torch.Tensor) else ''}")
    if decode_tokens < 1 or prefill_tokens < 1:
        raise ValueError(f"decode_tokens and prefill_tokens must be >= 1, got {decode_tokens}, {prefill_tokens}")
    inspector = inspector if inspector is not None else Inspector(use_default_configs=True, verbose=False)
    K = W.shape[1]

    def rand(M):  # drawn on W's device: its values only matter for timing
        return torch.randn(M, K, dtype=W.dtype, device=W.device)

    base_space = inspector.config_space
    t0 = time.perf_counter()
    exec_dec, cfg_dec = inspector.inspect(rand(decode_tokens), W, sparse_arg=1)
    info_dec = _phase_info(inspector, t0)
    dense_reason = inspector.last_report.why if is_dense_config(cfg_dec) else None
    if dense_reason is not None:
        exec_pre, cfg_pre, info_pre = exec_dec, dict(cfg_dec), dict(info_dec, seconds=0.0)
    else:
        pin = create_configs(BLOCK_N=[cfg_dec["BLOCK_N"]], BLOCK_K=[cfg_dec["BLOCK_K"]])
        try:
            inspector.set_configs(pin if base_space is None else base_space & pin)
            t0 = time.perf_counter()
            exec_pre, cfg_pre = inspector.inspect(rand(prefill_tokens), W, sparse_arg=1)
            info_pre = _phase_info(inspector, t0)
        finally:
            inspector.set_configs(base_space)
    t0 = time.perf_counter()
    Wc = inspector.compress(W, cfg_dec)
    compress_s = time.perf_counter() - t0
    if not isinstance(Wc, (CompressedWeight, DenseWeight)):
        raise TypeError(f"the decode config {cfg_dec.get('schedule')!r} is a user schedule whose compressor returns "
                        f"{type(Wc).__name__}; MixedModule needs a stoicc CompressedWeight (built-in schedules)")
    info = dict(decode=info_dec, prefill=info_pre, compress_s=compress_s, dense_reason=dense_reason,
                decode_tokens=int(decode_tokens), prefill_tokens=int(prefill_tokens))
    return TunedWeight(Wc, exec_dec, cfg_dec, exec_pre, cfg_pre, info)
