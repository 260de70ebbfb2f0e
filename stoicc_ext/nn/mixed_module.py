"""``MixedModule``: the module holding one compressed weight and two executors, one tuned for
decode and one for prefill, chosen per call by the number of tokens.

    mm = MixedModule(compressed_weight=Wc, exec_prefill=best_exec_pre, exec_decoding=best_exec_dec,
                     cfg_prefill=best_config_pre, cfg_decoding=best_config_dec, N=W.shape[0], K=W.shape[1])
    y = mm(x)                                   # x [..., K] -> y [..., N] = x @ W.T (+ bias)

    mm = MixedModule.from_linear(linear)        # stoicc_ext.nn.recipe in one call

Routing: a call is not sent to prefill on ``x.shape[-2] != 1``, which would run a decode step of a
batch given as a 2-D ``[16, K]`` input on the prefill kernel. A call is decode when its
number of tokens ``x.numel() // K`` (all leading dimensions together, which is the M the kernel
sees) is at most ``decode_max_tokens``, by default the M the decode kernel was tuned at (16), and
prefill otherwise. ``[16, K]``, ``[16, 1, K]`` and ``[1, 16, K]`` are all decode; ``[16, 128, K]``
is prefill.

The seven compressed tensors (and the bias) are registered buffers, so ``.to()``, ``.cuda()``,
``state_dict()`` and CUDA-graph capture see them; the executors and configs are plain attributes
(executors are closures over one ``torch.ops.stoicc.spmm`` call, device-independent). The weight's
dtype is read from its buffers whenever it is needed, so ``.half()`` / ``.to(dtype)`` on a
converted model leave nothing stale. Pickling (``torch.save(model)``, ``copy.deepcopy``) stores the
configs, not the executors, and rebuilds the library's executors from them on load. Forward is
one reshape, one executor call and one view: it works eagerly, inside CUDA graphs and under
``torch.compile(fullgraph=True)``.
"""
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn

from ..format.compressed import _DTYPE_NAMES, VALUE_DTYPES, CompressedWeight
from ..tuning.library import is_library_config, library_executor
from ..tuning.report import _short
from .recipe import DECODE_TOKENS, PREFILL_TOKENS, tune_weight

if TYPE_CHECKING:
    from ..tuning.inspector import Inspector

__all__ = ["MixedModule"]


def _executor_property(phase):
    """``exec_<phase>``: the executor, stored with whether it is bound (see MixedModule._bound)."""
    def get(self):
        return getattr(self, f"_exec_{phase}")

    def set(self, ex):
        setattr(self, f"_exec_{phase}", ex)
        setattr(self, f"_bound_{phase}", self._bound(ex))
    return property(get, set, doc=f"the {phase} executor")


class MixedModule(nn.Module):
    """One PATCH-pruned linear layer on stoicc kernels: ``y = x @ W.T (+ bias)``.

    Arguments: ``compressed_weight`` (a ``CompressedWeight``, or any tuple
    of tensors that the executors read), ``exec_prefill`` / ``exec_decoding`` (executors from
    ``Inspector.inspect`` or ``executor_for``), ``cfg_prefill`` / ``cfg_decoding`` (their
    configs), ``N``, ``K`` (out and in features). Added: ``bias`` ([N], x's dtype) and
    ``decode_max_tokens`` (calls with at most this many tokens use the decode executor; default
    16, the decode batch the recipe tunes at).
    """

    def __init__(self, compressed_weight: Sequence[torch.Tensor], exec_prefill: Callable[..., torch.Tensor],
                 exec_decoding: Callable[..., torch.Tensor], cfg_prefill: dict[str, Any], cfg_decoding: dict[str, Any],
                 N: int, K: int, bias: torch.Tensor | None = None, *, decode_max_tokens: int = DECODE_TOKENS) -> None:
        super().__init__()
        if not isinstance(compressed_weight, (tuple, list)) or not all(
                isinstance(t, torch.Tensor) for t in compressed_weight):
            raise TypeError("compressed_weight must be a CompressedWeight (a tuple of tensors), "
                            f"got {type(compressed_weight).__name__}")
        for name, ex in (("exec_prefill", exec_prefill), ("exec_decoding", exec_decoding)):
            if not callable(ex):
                raise TypeError(f"{name} must be callable (an executor from Inspector.inspect), got {type(ex).__name__}")
        for name, cfg in (("cfg_prefill", cfg_prefill), ("cfg_decoding", cfg_decoding)):
            if not isinstance(cfg, dict):
                raise TypeError(f"{name} must be a config dict, got {type(cfg).__name__}")
            bad = {"M", "N", "K", "bias"} & set(cfg)
            if bad:
                raise ValueError(f"{name} must not hold {sorted(bad)}: forward passes them itself")
        self.N, self.K = int(N), int(K)
        if isinstance(compressed_weight, CompressedWeight):
            if (compressed_weight.N, compressed_weight.K) != (self.N, self.K):
                raise ValueError(f"compressed_weight is {compressed_weight.N}x{compressed_weight.K} but N={self.N}, "
                                 f"K={self.K} were given")
            self._wc_names = tuple(CompressedWeight.names)
            # shape only: the dtype is the buffers' (a cast changes it), see weight_metadata
            self._wc_meta = {k: v for k, v in compressed_weight.metadata().items() if k != "dtype"}
        else:
            self._wc_names = tuple(f"weight_{i}" for i in range(len(compressed_weight)))
            self._wc_meta = None
        for name, t in zip(self._wc_names, compressed_weight):
            self.register_buffer(name, t)
        if bias is not None:
            if not isinstance(bias, torch.Tensor) or bias.dim() != 1 or bias.shape[0] != self.N:
                raise ValueError(f"bias must be a 1-D tensor of N={self.N} values, got "
                                 f"{tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__}")
            bias = bias.detach()
        self.register_buffer("bias", bias)
        self.cfg_prefill, self.cfg_decoding = dict(cfg_prefill), dict(cfg_decoding)
        self.exec_prefill, self.exec_decoding = exec_prefill, exec_decoding
        if int(decode_max_tokens) < 1:
            raise ValueError(f"decode_max_tokens must be >= 1, got {decode_max_tokens}")
        self.decode_max_tokens = int(decode_max_tokens)
        self.tuning_info = None     # set by from_linear: where each choice came from, what it measured

    # ---- executors -------------------------------------------------------------------------
    # An executor whose config is fixed inside (the library's: ``executor_for``, the densify
    # schedule's; they carry ``bound_shape``) is called as ``executor(x, *Wc, bias=b)``: the full
    # call also passes ``M=, N=, K=`` and the whole config, which they would only discard, and
    # building those keyword arguments is most of a call's Python cost. Any other executor gets
    # the full call. Decided once, when the executor is set.

    def _bound(self, ex):
        shape = getattr(ex, "bound_shape", False)
        return shape is None or shape == (self.N, self.K)

    exec_decoding = _executor_property("decoding")
    exec_prefill = _executor_property("prefill")

    # ---- pickling (torch.save(model), copy.deepcopy) ------------------------------------------
    # The library's executors are closures, which pickle refuses. Each is rebuilt from its config,
    # as load_compressed does; any other executor (a user schedule's) is stored as it is, so it
    # pickles if it is a picklable callable and deep-copies regardless.

    def _rebuilt_phases(self):
        return [p for p in ("decoding", "prefill")
                if is_library_config(getattr(self, f"cfg_{p}"))
                and getattr(getattr(self, f"_exec_{p}"), "config", None) == getattr(self, f"cfg_{p}")]

    def __getstate__(self):
        state = dict(super().__getstate__())
        rebuilt = self._rebuilt_phases()
        for p in rebuilt:
            del state[f"_exec_{p}"]
        state["_rebuilt_executors"] = rebuilt
        return state

    def __setstate__(self, state):
        state = dict(state)
        rebuilt = state.pop("_rebuilt_executors", [])
        super().__setstate__(state)
        for p in rebuilt:
            setattr(self, f"exec_{p}", library_executor(getattr(self, f"cfg_{p}"), self.N, self.K))

    # ---- forward -------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])     # the kernel takes 2-D input; it checks K itself
        b = self._buffers  # direct dict reads: nn.Module.__getattr__ per buffer costs on every call
        w = [b[n] for n in self._wc_names]
        if x2.shape[0] <= self.decode_max_tokens:
            executor, cfg, bound = self._exec_decoding, self.cfg_decoding, self._bound_decoding
        else:
            executor, cfg, bound = self._exec_prefill, self.cfg_prefill, self._bound_prefill
        if bound:
            y = executor(x2, *w, bias=b["bias"])
        else:
            y = executor(x2, *w, bias=b["bias"], M=x2.shape[0], N=self.N, K=self.K, **cfg)
        return y.view(*lead, self.N)

    # ---- accessors --------------------------------------------------------------------------

    def compressed_tensors(self) -> tuple[torch.Tensor, ...]:
        """The compressed tensors, in the order the executors take them (``*Wc``)."""
        return tuple(getattr(self, n) for n in self._wc_names)

    def weight_metadata(self):
        """``CompressedWeight.metadata()`` of the buffers as they are now (None for a non-stoicc
        tuple): the dtype is the values', so a model cast with ``.half()`` / ``.to(dtype)`` describes
        itself as it is. A cast the kernels cannot run (``.float()``) raises TypeError here."""
        if self._wc_meta is None:
            return None
        dtype = self._buffers["sparse_values"].dtype
        if dtype not in VALUE_DTYPES:
            raise TypeError(f"this MixedModule's compressed values are {dtype} (was the model cast with .float() or "
                            f".double()?): the kernels take float16 or bfloat16; cast it with .half() or "
                            f".to(torch.bfloat16)")
        return dict(self._wc_meta, dtype=_DTYPE_NAMES[dtype])

    @property
    def compressed_weight(self):
        """The buffers as a ``CompressedWeight`` (for a non-stoicc tuple: a plain tuple)."""
        ts = self.compressed_tensors()
        if self._wc_meta is None:
            return ts
        return CompressedWeight.from_tensors(ts, self.weight_metadata(), check=False)

    @property
    def in_features(self):
        return self.K

    @property
    def out_features(self):
        return self.N

    @property
    def weight_nbytes(self):
        """Bytes of the compressed weight (bias not included)."""
        return sum(t.numel() * t.element_size() for t in self.compressed_tensors())

    def extra_repr(self):
        tile = f"{self._wc_meta['block_n']}x{self._wc_meta['block_k']}" if self._wc_meta else "?"
        dense = self.N * self.K * self.compressed_tensors()[-1].element_size()
        return (f"N={self.N}, K={self.K}, tile={tile}, bias={self.bias is not None}, "
                f"{self.weight_nbytes / dense:.3f} of dense bytes, decode (<= {self.decode_max_tokens} tokens): "
                f"{_short(self.cfg_decoding)}, prefill: {_short(self.cfg_prefill)}")

    # ---- construction from a dense linear ---------------------------------------------------

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, inspector: "Inspector | None" = None, decode_tokens: int = DECODE_TOKENS,
                    prefill_tokens: int = PREFILL_TOKENS, decode_max_tokens: int | None = None) -> "MixedModule":
        """The decode/prefill recipe on ``linear.weight`` (``stoicc_ext.nn.recipe.tune_weight``): tune decode at
        ``decode_tokens``, pin its tile shape, tune prefill at ``prefill_tokens``, compress once
        with the decode config. On a GPU the kernels are timed (and cached); on the CPU the
        Inspector's heuristic decides. The weight must be fp16/bf16, N and K multiples of 64.
        ``decode_max_tokens`` defaults to ``decode_tokens``.

        Where the Inspector keeps W dense (dense cuBLAS wins, or W has no 2:4 tile), the module
        holds a ``DenseWeight`` and runs ``F.linear`` in both phases (``tuning_info["dense_reason"]``
        says why); ``sparsify_`` keeps such layers as they are instead.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects a torch.nn.Linear, got {type(linear).__name__}")
        W = linear.weight
        if W.device.type == "meta":
            raise ValueError("the linear's weight is on the meta device: materialize it first")
        tuned = tune_weight(W, inspector, decode_tokens=decode_tokens, prefill_tokens=prefill_tokens)
        bias = linear.bias.detach() if linear.bias is not None else None
        mm = cls(tuned.compressed, tuned.exec_prefill, tuned.exec_decoding, tuned.cfg_prefill, tuned.cfg_decoding,
                 W.shape[0], W.shape[1], bias=bias,
                 decode_max_tokens=decode_tokens if decode_max_tokens is None else decode_max_tokens)
        mm.tuning_info = tuned.info
        return mm
