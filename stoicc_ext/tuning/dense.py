"""The ``dense`` schedule: cuBLAS (``F.linear``) on the uncompressed weight, timed beside the
stoicc kernels so that a layer is kept dense where dense wins.

Why: a weight with few 2:4 tiles saves few bytes, and the tile-sparse kernels pay for their index
reads and their smaller tiles; at decode sizes a mostly dense weight can be faster in cuBLAS
than in any stoicc kernel. ``Inspector.inspect`` times this candidate with the others and, when
it is the fastest, returns its executor; a weight with no 2:4 tile at all gets it without
timing (nothing to gain). Its weight is the dense W kept as it is: ``Inspector.compress``
returns a ``DenseWeight`` (a one-tensor tuple, so ``executor(X, *Wc)`` reads like the other
schedules'), never a compressed tuple whose tiles are all dense.

The config is ``{"schedule": "dense"}``: no tile shape, so a config space that restricts the
tile shape (the decode/prefill recipe's pin) leaves it out.
"""
import torch
import torch.nn.functional as F

from .schedules import Candidate, TunedSchedule

__all__ = ["DENSE", "DENSE_CONFIG", "DenseWeight", "DenseSchedule", "dense_executor", "is_dense_config"]

DENSE = "dense"
DENSE_CONFIG = {"schedule": DENSE}


def is_dense_config(config):
    return isinstance(config, dict) and config.get("schedule") == DENSE


class DenseWeight(tuple):
    """The weight of the ``dense`` schedule: ``(W,)``, W the uncompressed ``[N, K]`` tensor as it
    is (not a copy)."""

    def __new__(cls, weight):
        ts = (weight,) if isinstance(weight, torch.Tensor) else tuple(weight)   # rotated_copies passes a list
        if len(ts) != 1 or not isinstance(ts[0], torch.Tensor) or ts[0].dim() != 2:
            raise ValueError("DenseWeight holds one 2-D weight tensor [N, K]")
        return super().__new__(cls, ts)

    @property
    def weight(self):
        return self[0]

    @property
    def N(self):
        return self[0].shape[0]

    @property
    def K(self):
        return self[0].shape[1]

    def __repr__(self):
        return f"DenseWeight({self.N}x{self.K}, {str(self[0].dtype).replace('torch.', '')}, kept dense)"


def dense_executor():
    """``executor(x, W, bias=None, **ignored) = F.linear(x, W, bias)``: cuBLAS on the dense weight."""
    def executor(x, weight, bias=None, **_ignored):
        return F.linear(x, weight, bias)

    executor.__name__ = executor.__qualname__ = "stoicc_dense_linear"
    executor.config = dict(DENSE_CONFIG)
    executor.bound_shape = None     # nothing to pass: N and K follow from the weight
    return executor


class DenseSchedule(TunedSchedule):
    """One candidate, ``F.linear`` on W itself (``Inspector(use_default_configs=True)`` includes it)."""

    name = DENSE

    def signature(self):
        return dict(name=self.name, builtin=True, kind="F.linear on the uncompressed weight")

    def candidates(self, space):
        cfg = dict(DENSE_CONFIG)
        return [Candidate(self, cfg)] if space is None or space.allows(cfg) else []

    def compress_key(self, cand):
        return (DENSE,)

    def compress(self, W, cand):
        return DenseWeight(W)

    def compress_config(self, W, config):
        return DenseWeight(W)

    def launch_fn(self, cand, X, N, K):
        return lambda w: F.linear(X, w)

    def bind(self, config, N, K):
        return (dense_executor(), dict(DENSE_CONFIG)) if is_dense_config(config) else None
