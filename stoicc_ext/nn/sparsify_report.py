"""What ``sparsify_`` tells the user: one row per ``nn.Linear`` of the model (converted or kept
dense, and why), a readable table (``str(report)``) and ``to_dict()`` for JSON."""
import dataclasses

from ..tuning.report import _short

__all__ = ["LayerRow", "SparsifyReport"]

CONVERTED = "converted"


@dataclasses.dataclass
class LayerRow:
    """One linear layer. ``status`` is ``"converted"`` or says why the layer stayed dense:
    ``"dense"`` (the Inspector keeps W dense: no 2:4 tile, or dense cuBLAS timed faster),
    ``"filtered"`` (``filter_fn`` said no),
    ``"unsupported"`` (shape, dtype or device the kernels cannot take), ``"shared"`` (weight tied
    to another module) or ``"failed"`` (tuning or compression raised; the layer is untouched);
    ``reason`` has the details."""
    name: str
    N: int
    K: int
    dtype: str
    status: str
    reason: str = ""
    frac_24: float = None          # fractions of the 128x128 tiles (None: not classified)
    frac_dense: float = None
    frac_empty: float = None
    tile: str = None               # the compressed tile shape (BLOCK_N x BLOCK_K)
    cfg_decoding: dict = None
    cfg_prefill: dict = None
    source_decoding: str = None    # tuned / memory cache / disk cache / heuristic
    source_prefill: str = None
    ms_decoding: float = None      # the chosen kernel's measured time (None when not timed)
    ms_prefill: float = None
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0           # tuning + compression of this layer
    fused_from: list = None        # a fused group: its members' names (the row is named after the fused module)

    @property
    def converted(self):
        return self.status == CONVERTED

    def to_dict(self):
        return dataclasses.asdict(self)


def _mib(n):
    return n / 2 ** 20


def _cfg_str(cfg):  # the table's compact form of inspect_report._short
    return _short(cfg).replace("spmm_", "").replace("/SPLIT_K=", "/")


class SparsifyReport:
    """The result of ``sparsify_``: ``rows`` (``LayerRow``), totals, a table (``str``) and
    ``to_dict()``."""

    def __init__(self, rows, *, elapsed_s=0.0, decode_tokens=None, prefill_tokens=None, device=None,
                 fusion_note=None):
        self.rows = list(rows)
        self.fusion_note = fusion_note      # why no group was fused, or None
        self.elapsed_s = float(elapsed_s)
        self.decode_tokens, self.prefill_tokens = decode_tokens, prefill_tokens
        self.device = device

    # ---- totals ---------------------------------------------------------------------------

    @property
    def converted(self):
        return [r for r in self.rows if r.converted]

    @property
    def kept_dense(self):
        return [r for r in self.rows if not r.converted]

    @property
    def bytes_before(self):
        return sum(r.bytes_before for r in self.rows)

    @property
    def bytes_after(self):
        return sum(r.bytes_after for r in self.rows)

    @property
    def tuning_s(self):
        return sum(r.seconds for r in self.converted)

    @property
    def by_status(self):
        """{status: number of rows}, by status name: what the summary line and sparsify_'s
        converted-nothing warning both print."""
        counts = {}
        for r in self.rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        return dict(sorted(counts.items()))

    def _kinds(self):
        """The counts as text: ``"7 converted, 2 dense"`` ('' for no rows)."""
        return ", ".join(f"{n} {s}" for s, n in self.by_status.items())

    @property
    def fused(self):
        """The rows of fused groups (converted, or fused and kept dense; a group whose tuning failed
        was not fused: its members stay apart)."""
        return [r for r in self.rows if r.fused_from and r.status in (CONVERTED, "dense")]

    def __getitem__(self, name):
        """The row of layer ``name``: a member of a fused group gets the group's row."""
        for r in self.rows:
            if r.name == name or name in (r.fused_from or ()):
                return r
        raise KeyError(name)

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def to_dict(self) -> dict:
        return dict(layers=[r.to_dict() for r in self.rows], converted=len(self.converted),
                    kept_dense=len(self.kept_dense), bytes_before=self.bytes_before, bytes_after=self.bytes_after,
                    ratio=self.bytes_after / self.bytes_before if self.bytes_before else None,
                    tuning_s=self.tuning_s, elapsed_s=self.elapsed_s, decode_tokens=self.decode_tokens,
                    prefill_tokens=self.prefill_tokens, device=self.device, fused=len(self.fused),
                    fusion_note=self.fusion_note)

    # ---- text -------------------------------------------------------------------------------

    def summary(self) -> str:
        kinds = self._kinds()
        ratio = self.bytes_after / self.bytes_before if self.bytes_before else float("nan")
        fused = (f", {len(self.fused)} fused groups" if self.fused else
                 f", no fusion: {self.fusion_note}" if self.fusion_note else "")
        return (f"sparsify_: {len(self.rows)} linear layers ({kinds}{fused}); linear weights "
                f"{_mib(self.bytes_before):.1f} MiB -> {_mib(self.bytes_after):.1f} MiB ({ratio:.3f}x); "
                f"tuning + compression {self.tuning_s:.2f} s of {self.elapsed_s:.2f} s")

    def table(self) -> str:
        head = (f"{'layer':<40} {'N x K':>11} {'2:4':>5} {'dense':>5} {'empty':>5} {'tile':>7} "
                f"{'decode kernel':<34} {'prefill kernel':<34} {'MiB before':>10} {'MiB after':>9}  status")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            def pct(v):
                return "-" if v is None else f"{100 * v:.0f}%"
            status = r.status if not r.reason else f"{r.status}: {r.reason}"
            name = r.name if len(r.name) <= 40 else "..." + r.name[-37:]
            lines.append(f"{name:<40} {f'{r.N}x{r.K}':>11} {pct(r.frac_24):>5} {pct(r.frac_dense):>5} "
                         f"{pct(r.frac_empty):>5} {r.tile or '-':>7} {_cfg_str(r.cfg_decoding):<34} "
                         f"{_cfg_str(r.cfg_prefill):<34} {_mib(r.bytes_before):>10.2f} {_mib(r.bytes_after):>9.2f}  "
                         f"{status}")
        lines.append("-" * len(head))
        lines.append(self.summary())
        return "\n".join(lines)

    __str__ = table

    def __repr__(self):
        return f"<SparsifyReport {len(self.converted)}/{len(self.rows)} converted>"
