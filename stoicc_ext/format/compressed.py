"""The compressed mixed-tile weight: ``compress``, ``decompress``, ``validate``.

This is the Python reference of docs/format.md (read it first: it is the contract the
CUDA kernel is written against). Everything is vectorized torch and runs on W's device:

* tiles are gathered with one advanced-indexing copy,
* each 2:4 group's kept pair comes from a 16-entry lookup table indexed by the group's
  non-zero bit pattern (section 3's rule, tabulated once),
* values and metadata are put in the ``mma`` fragment orders of sections 3-5 with index
  tensors built once per (block_n, block_k) and device and cached.
"""
import functools
from typing import Any, Sequence

import torch

from .tile_map import TileMap, TileType, _check_weight, as_int, check_tile_map

__all__ = [
    "FORMAT_VERSION", "ALLOWED_BLOCKS", "VALUE_DTYPES", "CompressedWeight",
    "compress", "decompress", "validate", "tile_map_of", "compressed_nbytes",
]

FORMAT_VERSION = 1
ALLOWED_BLOCKS = (64, 128)   # both sides; the kernels are built for these
VALUE_DTYPES = (torch.float16, torch.bfloat16)
_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_NAMES = ("sparse_row_ptr", "sparse_cols", "sparse_values", "sparse_meta",
          "dense_row_ptr", "dense_cols", "dense_values")


# --------------------------------------------------------------------------------------
# Section 3: which two positions of a group of four are kept, as lookup tables.
# --------------------------------------------------------------------------------------

def _kept_pair(pattern):
    """(i0, i1) for a group whose non-zero positions are the set bits of ``pattern``.

    Fewer than two non-zeros are completed with the highest-index zero positions, so an
    all-zero group keeps (2, 3), which is also the code the hardware sees for padding.
    Patterns with more than two non-zeros are not 2:4; they map to (2, 3) but never occur
    because the tile map is checked first.
    """
    P = [i for i in range(4) if pattern >> i & 1]
    if len(P) > 2:
        return (2, 3)
    zeros = [i for i in range(3, -1, -1) if i not in P]
    return tuple(sorted(P + zeros[:2 - len(P)]))


_PAIR_LUT = [_kept_pair(p) for p in range(16)]
_CODE_LUT = [i0 | (i1 << 2) for i0, i1 in _PAIR_LUT]
# A nibble is a valid code iff i0 < i1: {0x4, 0x8, 0xC, 0x9, 0xD, 0xE}.
_VALID_CODES = [(c & 3) < (c >> 2) for c in range(16)]


# --------------------------------------------------------------------------------------
# Sections 3-5: the fragment orders, as cached index tensors.
# --------------------------------------------------------------------------------------

def _fragment_src(rows, cols):
    """For an A operand ``[rows, cols]`` stored in ``m16n8k16`` A-fragment order, the flat
    source index ``row * cols + col`` of every output position.

    Section 5 is this with ``cols = BLOCK_K``. Section 3 is the same with the *compressed*
    tile ``[BLOCK_N, BLOCK_K/2]`` whose column ``2*group + slot`` holds the group's kept
    value ``slot``: with ``ccol`` in 0..15 of step ``ks``, ``group = ks*8 + ccol//2`` and
    ``slot = ccol % 2`` give compressed column ``ks*16 + ccol``, i.e. a 16-wide K step.
    """
    idx = torch.arange(rows * cols)
    j, lane, t = idx % 8, (idx // 8) % 32, idx // 256
    ks, mb = t % (cols // 16), t // (cols // 16)
    g, q = lane // 4, lane % 4
    row = mb * 16 + g + 8 * ((j // 2) % 2)
    col = ks * 16 + 2 * q + (j % 2) + 8 * (j // 4)
    return row * cols + col


def _meta_src(block_n, block_k):
    """``[BLOCK_N*BLOCK_K/32, 8]``: for each metadata word and nibble ``t`` (bits 4t..4t+3)
    the flat index ``row * (BLOCK_K/4) + group`` of the group whose code goes there.

    Section 4 has ``group = ks*8 + 4*h + i`` with ``ks = 2*kp + q//2`` and ``h = q % 2``;
    since ``8*(q//2) + 4*(q%2) = 4*q`` this is simply ``16*kp + 4*q + i``. Nibbles 0..3
    are row ``mb*16 + g`` and nibbles 4..7 row ``mb*16 + g + 8``.
    """
    gpr = block_k // 4                       # groups per tile row
    w = torch.arange(block_n * block_k // 32)
    lane, t = w % 32, w // 32
    kp, mb = t % (block_k // 64), t // (block_k // 64)
    g, q = lane // 4, lane % 4
    group = (16 * kp + 4 * q)[:, None] + torch.arange(4)[None, :]       # [words, 4]
    row = (mb * 16 + g)[:, None]
    return torch.cat([row * gpr + group, (row + 8) * gpr + group], dim=1)


@functools.lru_cache(maxsize=None)
def _layout(block_n, block_k, device):
    """Index tensors for one tile shape on one device, built once (they are small: at most
    64 Ki int64 entries) so compress/decompress do no per-call index construction."""
    dense = _fragment_src(block_n, block_k)
    sparse = _fragment_src(block_n, block_k // 2)
    meta = _meta_src(block_n, block_k)
    tensors = dict(
        dense=dense, dense_inv=torch.argsort(dense),
        sparse=sparse, sparse_inv=torch.argsort(sparse),
        meta=meta, meta_inv=torch.argsort(meta.reshape(-1)),
        shifts=4 * torch.arange(8),
        pair_lut=torch.tensor(_PAIR_LUT), code_lut=torch.tensor(_CODE_LUT),
        valid_codes=torch.tensor(_VALID_CODES),
        bit_weights=torch.tensor([1, 2, 4, 8], dtype=torch.uint8),
    )
    return {k: v.to(device) for k, v in tensors.items()}


def _to_int32_bits(x):
    """int64 holding a uint32 bit pattern -> int32 with the same bits (no overflow UB)."""
    return torch.where(x >= 2 ** 31, x - 2 ** 32, x).to(torch.int32)


# --------------------------------------------------------------------------------------
# The tuple.
# --------------------------------------------------------------------------------------

def _dtype_of(d):
    if isinstance(d, torch.dtype):
        return d
    name = str(d).replace("torch.", "")
    for dt, n in _DTYPE_NAMES.items():
        if n == name:
            return dt
    raise ValueError(f"unsupported dtype {d!r}: expected one of {list(_DTYPE_NAMES.values())}")


def _rebuild(tensors, metadata):
    return CompressedWeight.from_tensors(tensors, metadata, check=False)


def _field(i, name):
    return property(lambda self: self[i], doc=f"tensor #{i} of docs/format.md section 2")


class CompressedWeight(tuple):
    """The seven tensors of docs/format.md section 2, in order, plus the shape attributes.

    A tuple (not a dataclass) so that ``torch.ops.stoicc.spmm(X, *Wc, ...)`` and
    ``torch.compile`` see plain tensors; ``*Wc`` unpacks to the seven tensors only. The
    constructor does not validate (tests build corrupted tuples on purpose); ``compress``
    and ``from_tensors`` do.
    """

    names = _NAMES

    def __new__(cls, tensors: Sequence[torch.Tensor], *, N: int, K: int, block_n: int, block_k: int,
                dtype: torch.dtype | str, format_version: int = FORMAT_VERSION) -> "CompressedWeight":
        self = super().__new__(cls, tuple(tensors))
        if len(self) != len(_NAMES):
            raise ValueError(f"CompressedWeight needs exactly {len(_NAMES)} tensors "
                             f"{_NAMES}, got {len(self)}")
        self.N, self.K = as_int("N", N), as_int("K", K)
        self.block_n, self.block_k = as_int("block_n", block_n), as_int("block_k", block_k)
        self.dtype = _dtype_of(dtype)
        self.format_version = as_int("format_version", format_version)
        return self

    sparse_row_ptr = _field(0, "sparse_row_ptr")
    sparse_cols = _field(1, "sparse_cols")
    sparse_values = _field(2, "sparse_values")
    sparse_meta = _field(3, "sparse_meta")
    dense_row_ptr = _field(4, "dense_row_ptr")
    dense_cols = _field(5, "dense_cols")
    dense_values = _field(6, "dense_values")

    @property
    def tile_rows(self):
        return self.N // self.block_n

    @property
    def tile_cols(self):
        return self.K // self.block_k

    @property
    def num_sparse_tiles(self):
        return self[1].numel()

    @property
    def num_dense_tiles(self):
        return self[5].numel()

    @property
    def num_empty_tiles(self):
        return self.tile_rows * self.tile_cols - self.num_sparse_tiles - self.num_dense_tiles

    @property
    def nbytes(self):
        """Bytes of all seven tensors (what the weight costs in memory)."""
        return sum(t.numel() * t.element_size() for t in self)

    @property
    def dense_nbytes(self):
        """Bytes of the uncompressed weight, for compression ratios."""
        return self.N * self.K * torch.empty((), dtype=self.dtype).element_size()

    @property
    def device(self):
        return self[0].device

    def metadata(self) -> dict[str, Any]:
        """JSON-able shape attributes, written beside the tensors when serializing."""
        return dict(N=self.N, K=self.K, block_n=self.block_n, block_k=self.block_k,
                    dtype=_DTYPE_NAMES.get(self.dtype, str(self.dtype)),
                    format_version=self.format_version)

    @classmethod
    def from_tensors(cls, tensors: Sequence[torch.Tensor] | dict[str, torch.Tensor], metadata: dict[str, Any],
                     check: bool = True) -> "CompressedWeight":
        """Rebuild from tensors (a sequence in order, or a dict by name) and ``metadata()``.

        Metadata values may be strings (safetensors stores ``str -> str``). A different
        ``format_version`` is refused rather than misread.
        """
        if isinstance(tensors, dict):
            missing = [n for n in _NAMES if n not in tensors]
            if missing:
                raise ValueError(f"missing tensors {missing}")
            tensors = [tensors[n] for n in _NAMES]
        md = dict(metadata)
        version = as_int("format_version", md.get("format_version", FORMAT_VERSION))
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version {version} is not supported (this is "
                             f"stoicc format {FORMAT_VERSION})")
        try:
            Wc = cls(tensors, N=md["N"], K=md["K"], block_n=md["block_n"],
                     block_k=md["block_k"], dtype=md["dtype"], format_version=version)
        except KeyError as e:
            raise ValueError(f"metadata is missing {e.args[0]!r}") from None
        if check:
            validate(Wc)
        return Wc

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "CompressedWeight":
        """A new CompressedWeight with every tensor on ``device``."""
        return CompressedWeight([t.to(device, non_blocking=non_blocking) for t in self],
                                **self._kwargs())

    def tile_map(self) -> torch.Tensor:
        return tile_map_of(self)

    def _kwargs(self):
        return dict(N=self.N, K=self.K, block_n=self.block_n, block_k=self.block_k,
                    dtype=self.dtype, format_version=self.format_version)

    def __reduce__(self):
        return (_rebuild, (tuple(self), self.metadata()))

    def __repr__(self):
        return (f"CompressedWeight(N={self.N}, K={self.K}, block={self.block_n}x{self.block_k}, "
                f"dtype={_DTYPE_NAMES.get(self.dtype, self.dtype)}, "
                f"tiles(sparse_24={self.num_sparse_tiles}, dense={self.num_dense_tiles}, "
                f"empty={self.num_empty_tiles}), nbytes={self.nbytes} "
                f"({self.nbytes / max(self.dense_nbytes, 1):.3f} of dense), "
                f"device={self.device}, format_version={self.format_version})")


# --------------------------------------------------------------------------------------
# compress / decompress
# --------------------------------------------------------------------------------------

def _csr(sel):
    """Row pointers (int32 ``[TR+1]``) and the (row, col) of the selected tiles, rows in
    order and columns ascending (``nonzero`` is row-major)."""
    counts = sel.sum(dim=1, dtype=torch.int32)
    row_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0, dtype=torch.int32)])
    rc = torch.nonzero(sel)          # the one host sync: it sizes the outputs
    return row_ptr, rc[:, 0], rc[:, 1]


def compress(W: torch.Tensor, block_n: int | dict[str, Any] = 128, block_k: int = 128,
             tile_map: torch.Tensor | None = None) -> CompressedWeight:
    """Compress ``W`` (fp16/bf16 ``[N, K]``) into the format of docs/format.md.

    The tile map is W's ``TileMap`` (classified from the values once per tensor) unless given;
    a given map is checked (``check_tile_map``). The result is validated before it is returned. ``compress(W, config)``
    takes the tile shape from a config dict (``BLOCK_N``/``BLOCK_K`` or ``BLOCK_SIZE_N``/``BLOCK_SIZE_K``).
    """
    if isinstance(block_n, dict):  # compress(W, config): the tile shape of a config dict
        block_n, block_k = _config_tile(block_n)
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W must be a torch.Tensor, got {type(W).__name__}")
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D [N, K], got shape {tuple(W.shape)}")
    if W.dtype not in VALUE_DTYPES:
        raise TypeError(f"W must be float16 or bfloat16, got dtype {W.dtype}")
    TR, TC = _check_weight(W, block_n, block_k, ALLOWED_BLOCKS)
    block_n, block_k = int(block_n), int(block_k)     # np.int64 and the like, checked above
    if tile_map is None:
        tm = TileMap.of(W).at(block_n, block_k).to(W.device)
    else:
        tm = check_tile_map(W, tile_map, block_n, block_k)
    W = W.contiguous()
    L = _layout(block_n, block_k, W.device)
    N, K = W.shape
    tile = block_n * block_k
    # [TR, TC, bn, bk] view (no copy); indexing it with (rows, cols) copies just those tiles.
    tiles_of = W.view(TR, block_n, TC, block_k).permute(0, 2, 1, 3)

    s_ptr, s_r, s_c = _csr(tm == TileType.SPARSE_24)
    d_ptr, d_r, d_c = _csr(tm == TileType.DENSE)
    nS = s_r.numel()

    # --- 2:4 tiles: kept values (section 3) and metadata (section 4).
    g4 = tiles_of[s_r, s_c].view(nS, block_n, block_k // 4, 4)
    pattern = ((g4 != 0).to(torch.uint8) * L["bit_weights"]).sum(-1, dtype=torch.uint8).long()
    kept = torch.gather(g4, 3, L["pair_lut"][pattern])        # [nS, bn, bk/4, 2], bit-exact
    # Compressed tile [bn, bk/2] with column 2*group + slot, then fragment order.
    s_vals = kept.reshape(nS, tile // 2)[:, L["sparse"]].reshape(-1)
    codes = L["code_lut"][pattern].reshape(nS, tile // 4)     # [nS, bn*bk/4], int64
    nibbles = codes[:, L["meta"]]                              # [nS, words, 8]
    words = (nibbles << L["shifts"]).sum(-1)                   # < 2**32, fits int64
    s_meta = _to_int32_bits(words).reshape(-1)

    # --- dense tiles (section 5).
    nD = d_r.numel()
    d_vals = tiles_of[d_r, d_c].reshape(nD, tile)[:, L["dense"]].reshape(-1)

    Wc = CompressedWeight(
        (s_ptr, s_c.int(), s_vals, s_meta, d_ptr, d_c.int(), d_vals),
        N=N, K=K, block_n=block_n, block_k=block_k, dtype=W.dtype)
    validate(Wc)
    return Wc


def _rows_of(row_ptr, nnz):
    """Tile row of each CSR entry."""
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    rows = torch.arange(counts.numel(), device=row_ptr.device)
    return torch.repeat_interleave(rows, counts, output_size=nnz)


def decompress(Wc: CompressedWeight) -> torch.Tensor:
    """The dense ``[N, K]`` weight of ``Wc`` (exact inverse of ``compress``).

    Dropped positions of 2:4 groups and EMPTY tiles come back as +0.0. ``Wc`` is validated
    first, so a corrupted tuple raises instead of scattering garbage.
    """
    validate(Wc)
    bn, bk, N, K = Wc.block_n, Wc.block_k, Wc.N, Wc.K
    TR, TC = N // bn, K // bk
    dev = Wc.device
    L = _layout(bn, bk, dev)
    out = torch.zeros(N, K, dtype=Wc.dtype, device=dev)
    tiles_of = out.view(TR, bn, TC, bk).permute(0, 2, 1, 3)   # writes land in `out`

    nS = Wc.num_sparse_tiles
    if nS:
        kept = Wc.sparse_values.view(nS, -1)[:, L["sparse_inv"]].view(nS, bn, bk // 4, 2)
        words = Wc.sparse_meta.view(nS, -1).long() & 0xFFFFFFFF
        nibbles = (words[..., None] >> L["shifts"]) & 0xF      # [nS, words, 8]
        codes = nibbles.reshape(nS, -1)[:, L["meta_inv"]].view(nS, bn, bk // 4)
        pos = torch.stack([codes & 3, codes >> 2], dim=-1)     # (i0, i1), i0 < i1 (validated)
        g4 = torch.zeros(nS, bn, bk // 4, 4, dtype=Wc.dtype, device=dev)
        g4.scatter_(3, pos, kept)
        tiles_of[_rows_of(Wc.sparse_row_ptr, nS), Wc.sparse_cols.long()] = g4.view(nS, bn, bk)

    nD = Wc.num_dense_tiles
    if nD:
        d = Wc.dense_values.view(nD, -1)[:, L["dense_inv"]].view(nD, bn, bk)
        tiles_of[_rows_of(Wc.dense_row_ptr, nD), Wc.dense_cols.long()] = d
    return out


def tile_map_of(Wc):
    """The int8 ``[TR, TC]`` tile map that ``Wc`` stores (EMPTY where no tile is stored)."""
    TR, TC = Wc.N // Wc.block_n, Wc.K // Wc.block_k
    tm = torch.zeros(TR, TC, dtype=torch.int8, device=Wc.device)
    for ptr, cols, t in ((Wc.sparse_row_ptr, Wc.sparse_cols, TileType.SPARSE_24),
                         (Wc.dense_row_ptr, Wc.dense_cols, TileType.DENSE)):
        tm[_rows_of(ptr, cols.numel()), cols.long()] = int(t)
    return tm


def _config_tile(config):
    """(BLOCK_N, BLOCK_K) of a config dict, spelled BLOCK_N or BLOCK_SIZE_N."""
    try:
        bn = config["BLOCK_N"] if "BLOCK_N" in config else config["BLOCK_SIZE_N"]
        bk = config["BLOCK_K"] if "BLOCK_K" in config else config["BLOCK_SIZE_K"]
    except KeyError:
        raise ValueError(f"config needs BLOCK_N and BLOCK_K (or BLOCK_SIZE_N and BLOCK_SIZE_K), "
                         f"got keys {sorted(config)}") from None
    return as_int("BLOCK_N", bn), as_int("BLOCK_K", bk)


def compressed_nbytes(tile_map, block_n, block_k, elem_size=2):
    """Bytes ``compress`` would use for this tile map (no weight needed): index arrays,
    ``BLOCK_N*BLOCK_K/2`` values + ``/8`` bytes of metadata per 2:4 tile, full dense tiles."""
    TR = tile_map.shape[0]
    nS = int((tile_map == TileType.SPARSE_24).sum())
    nD = int((tile_map == TileType.DENSE).sum())
    tile = block_n * block_k
    return (2 * (TR + 1) * 4 + (nS + nD) * 4
            + nS * (tile // 2 * elem_size + tile // 8) + nD * tile * elem_size)


# --------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------

def _check_csr(name, row_ptr, cols, TR, TC):
    """Monotone row pointers from 0 to len(cols); columns in [0, TC), strictly ascending
    within each row. Returns the flat tile ids (row * TC + col) of the entries."""
    nnz = cols.numel()
    ptr_name, cols_name = f"{name}_row_ptr", f"{name}_cols"
    rp = row_ptr.long()
    first, last = rp[0].item(), rp[-1].item()
    if first != 0:
        raise ValueError(f"{ptr_name}[0] must be 0, got {first}")
    steps = rp[1:] - rp[:-1]
    if bool((steps < 0).any()):
        r = int(torch.nonzero(steps < 0)[0])
        raise ValueError(f"{ptr_name} is not monotone non-decreasing: "
                         f"[{r}]={rp[r].item()} > [{r + 1}]={rp[r + 1].item()}")
    if last != nnz:
        raise ValueError(f"{ptr_name}[-1] must equal len({cols_name}) = {nnz}, got {last}")
    if nnz == 0:
        return cols.long()
    c = cols.long()
    out = (c < 0) | (c >= TC)
    if bool(out.any()):
        e = int(torch.nonzero(out)[0])
        raise ValueError(f"{cols_name}[{e}] = {c[e].item()} is out of range [0, {TC})")
    rows = _rows_of(row_ptr, nnz)
    # Entry e (> 0) continues e-1's row unless e is where some row starts.
    is_start = torch.zeros(nnz + 1, dtype=torch.bool, device=c.device)
    is_start[rp[:-1]] = True
    bad = (c[1:] <= c[:-1]) & ~is_start[1:nnz]
    if bool(bad.any()):
        e = int(torch.nonzero(bad)[0]) + 1
        raise ValueError(f"{cols_name} is not strictly ascending within tile row "
                         f"{rows[e].item()}: [{e - 1}]={c[e - 1].item()}, [{e}]={c[e].item()}")
    return rows * TC + c


def validate(Wc: Sequence[torch.Tensor], *, N: int | None = None, K: int | None = None, block_n: int | None = None,
             block_k: int | None = None, dtype: torch.dtype | str | None = None) -> None:
    """Check that ``Wc`` is a well-formed format-1 tuple; raise ValueError/TypeError naming
    the tensor and the problem.

    Shape attributes come from ``Wc`` when it is a ``CompressedWeight``; a plain tuple
    needs them as keywords. This is what keeps a corrupted tuple away from the kernels'
    index arithmetic (the CUDA kernel only clamps).
    """
    if not isinstance(Wc, (tuple, list)):
        raise TypeError(f"expected a CompressedWeight (tuple of 7 tensors), got {type(Wc).__name__}")
    if len(Wc) != len(_NAMES):
        raise ValueError(f"a compressed weight has exactly {len(_NAMES)} tensors {_NAMES}, "
                         f"got {len(Wc)}")
    given = dict(N=N, K=K, block_n=block_n, block_k=block_k, dtype=dtype)
    for k, v in given.items():
        if v is None:
            if k == "dtype" and not hasattr(Wc, k) and isinstance(Wc[2], torch.Tensor):
                given[k] = Wc[2].dtype        # a plain tuple: trust sparse_values' dtype
            elif not hasattr(Wc, k):
                raise TypeError(f"validate: {k} is unknown: pass a CompressedWeight or {k}=...")
            else:
                given[k] = getattr(Wc, k)
    N, K, bn, bk = (as_int(k, given[k]) for k in ("N", "K", "block_n", "block_k"))
    dtype = _dtype_of(given["dtype"])
    if getattr(Wc, "format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"format_version {Wc.format_version} is not supported")
    if dtype not in VALUE_DTYPES:
        raise TypeError(f"dtype must be float16 or bfloat16, got {dtype}")
    for side, b in (("block_n", bn), ("block_k", bk)):
        if b not in ALLOWED_BLOCKS:
            raise ValueError(f"{side}={b} is not allowed: it must be one of {ALLOWED_BLOCKS}")
    if N <= 0 or K <= 0 or N % bn or K % bk:
        raise ValueError(f"N={N}, K={K} must be positive multiples of block {bn}x{bk}")
    TR, TC = N // bn, K // bk

    t = dict(zip(_NAMES, Wc))
    for name, x in t.items():
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        want = dtype if name.endswith("_values") else torch.int32
        if x.dtype != want:
            raise TypeError(f"{name} must have dtype {want}, got {x.dtype}")
        if x.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
        if not x.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    devices = {name: x.device for name, x in t.items()}
    if len(set(devices.values())) != 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")

    nS, nD, tile = t["sparse_cols"].numel(), t["dense_cols"].numel(), bn * bk
    expect = dict(sparse_row_ptr=TR + 1, dense_row_ptr=TR + 1, sparse_values=nS * tile // 2,
                  sparse_meta=nS * tile // 32, dense_values=nD * tile)
    why = dict(sparse_row_ptr="N/block_n + 1", dense_row_ptr="N/block_n + 1",
               sparse_values="len(sparse_cols)*block_n*block_k/2",
               sparse_meta="len(sparse_cols)*block_n*block_k/32",
               dense_values="len(dense_cols)*block_n*block_k")
    for name, n in expect.items():
        if t[name].numel() != n:
            raise ValueError(f"{name} has length {t[name].numel()}, expected {why[name]} = {n} "
                             f"(N={N}, K={K}, block {bn}x{bk})")
    if t["sparse_row_ptr"].device.type == "meta":
        raise ValueError("the tensors are on the meta device, which holds no values: validate checks the row "
                         "pointers, columns and metadata words, so call it before moving the weight to meta")

    s_ids = _check_csr("sparse", t["sparse_row_ptr"], t["sparse_cols"], TR, TC)
    d_ids = _check_csr("dense", t["dense_row_ptr"], t["dense_cols"], TR, TC)
    if nS and nD:
        seen = torch.zeros(TR * TC, dtype=torch.bool, device=s_ids.device)
        seen[s_ids] = True
        both = seen[d_ids]
        if bool(both.any()):
            tid = d_ids[torch.nonzero(both)[0]].item()
            raise ValueError(f"tile ({tid // TC}, {tid % TC}) is in both sparse_cols and "
                             f"dense_cols")

    if nS:
        L = _layout(bn, bk, t["sparse_meta"].device)
        words = t["sparse_meta"].long() & 0xFFFFFFFF
        nib = (words[:, None] >> L["shifts"]) & 0xF
        bad = ~L["valid_codes"][nib].all(dim=1)
        if bool(bad.any()):
            w = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"sparse_meta word {w} (sparse tile {w // (tile // 32)}) = 0x{words[w].item():08x} "
                f"holds a nibble with i0 >= i1; valid codes are 0x4 0x8 0xC 0x9 0xD 0xE")
