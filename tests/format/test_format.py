"""Tests of the compressed format (docs/format.md): classification, compress/decompress,
validate, and an independent slow reference of the value/metadata layout that the CUDA
kernel relies on. Every test that takes ``device`` also runs on CUDA when it is there."""
import json
import pickle

import pytest
import torch

from stoicc_ext.format import (
    ALLOWED_BLOCKS, FORMAT_VERSION, CompressedWeight, compress, compressed_nbytes,
    decompress, tile_map_of, validate,
)
from stoicc_ext.testing import prune_to_24, random_patch_weight
from stoicc_ext.format.tile_map import TileType, check_tile_map, classify_tiles

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA"))]
DTYPES = [torch.float16, torch.bfloat16]
BLOCKS = [(64, 64), (64, 128), (128, 64), (128, 128)]
S, D, E = int(TileType.SPARSE_24), int(TileType.DENSE), int(TileType.EMPTY)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def expand(tm, bn, bk, tile=128):
    """A tile map on the ``tile`` grid seen at block ``bn x bk`` (each tile splits)."""
    return tm.repeat_interleave(tile // bn, 0).repeat_interleave(tile // bk, 1)


def bits(x):
    """Bit patterns (int16) of an fp16/bf16 tensor, to compare -0.0 and NaN exactly."""
    return x.contiguous().view(torch.int16)


def build(tm, dtype=torch.float16, tile=64, seed=0):
    """A weight with exactly the tile map ``tm`` (list of lists) on a ``tile`` grid."""
    tm = torch.tensor(tm, dtype=torch.int8)
    g = gen(seed)
    N, K = tm.shape[0] * tile, tm.shape[1] * tile
    W = ((torch.rand(N, K, generator=g) * 0.9 + 0.1)
         * (torch.randint(0, 2, (N, K), generator=g) * 2 - 1)).to(dtype)
    m = tm.repeat_interleave(tile, 0).repeat_interleave(tile, 1)
    W = torch.where(m == S, prune_to_24(W), W)
    return torch.where(m == E, torch.zeros((), dtype=dtype), W)


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("sparse_frac", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("row_pattern", [None, "both"])
def test_round_trip(device, dtype, block, sparse_frac, row_pattern):
    bn, bk = block
    empty_frac = min(0.15, 1.0 - sparse_frac)
    W, tm128 = random_patch_weight(512, 768, sparse_frac, empty_frac, dtype=dtype, device=device,
                                   generator=gen(int(sparse_frac * 10)), row_pattern=row_pattern)
    if row_pattern == "both":     # rows with only dense and only 2:4 tiles are present
        assert bool((tm128[0] == D).all()) and bool((tm128[-1] == S).all())
    tm = expand(tm128, bn, bk)
    # A weight pruned on the 128 grid classifies the same at every sub-tile shape.
    assert torch.equal(classify_tiles(W, bn, bk), tm)

    Wc = compress(W, bn, bk)
    assert isinstance(Wc, CompressedWeight) and len(Wc) == 7
    assert all(t.device == W.device for t in Wc)
    assert (Wc.N, Wc.K, Wc.block_n, Wc.block_k, Wc.dtype) == (512, 768, bn, bk, dtype)
    assert Wc.num_sparse_tiles == int((tm == S).sum())
    assert Wc.num_dense_tiles == int((tm == D).sum())
    assert Wc.num_empty_tiles == int((tm == E).sum())
    assert torch.equal(tile_map_of(Wc), tm)
    assert Wc.nbytes == compressed_nbytes(tm, bn, bk, W.element_size())
    out = decompress(Wc)
    assert out.dtype == dtype and out.device == W.device
    assert torch.equal(out, W)
    # With the map given instead of classified, the result is the same.
    Wc2 = compress(W, bn, bk, tile_map=tm)
    assert all(torch.equal(a, b) for a, b in zip(Wc, Wc2))


@pytest.mark.parametrize("device", DEVICES)
def test_all_empty_and_all_sparse(device):
    Z = torch.zeros(256, 128, dtype=torch.float16, device=device)
    Wc = compress(Z)
    assert Wc.num_sparse_tiles == Wc.num_dense_tiles == 0 and Wc.num_empty_tiles == 2
    assert torch.equal(decompress(Wc), Z)
    W, _ = random_patch_weight(256, 256, 1.0, device=device, generator=gen(3))
    Wc = compress(W, 64, 64)
    assert Wc.num_sparse_tiles == 16 and Wc.dense_values.numel() == 0
    assert torch.equal(decompress(Wc), W)


@pytest.mark.parametrize("device", DEVICES)
def test_user_tile_map_may_declare_more(device):
    """DENSE on a 2:4 tile and SPARSE_24 or DENSE on an empty tile are allowed."""
    W = build([[S, E, E]]).to(device)
    tm = torch.tensor([[D, S, D]], dtype=torch.int8)
    Wc = compress(W, 64, 64, tile_map=tm)
    assert torch.equal(tile_map_of(Wc).cpu(), tm)
    assert torch.equal(decompress(Wc), W)
    # An all-zero tile stored as 2:4 keeps (2, 3) everywhere: code 0xE in every nibble.
    assert bool((Wc.sparse_meta == torch.tensor(0xEEEEEEEE - 2**32, dtype=torch.int32)).all())


# --------------------------------------------------------------------------------------
# Independent reference of sections 3-5 (slow, explicit loops straight from the doc)
# --------------------------------------------------------------------------------------

def _ref_kept(nonzero):
    """Section 3: the kept pair of a group from its four non-zero flags."""
    P = [i for i in range(4) if nonzero[i]]
    assert len(P) <= 2
    zeros_high_first = [i for i in (3, 2, 1, 0) if i not in P]
    while len(P) < 2:
        P.append(zeros_high_first.pop(0))
    return sorted(P)


def reference_compress(W, bn, bk):
    """docs/format.md sections 1-5 with Python loops over int bit patterns.

    "Zero" is tested on the bits (sign bit cleared == 0), independently of ``W != 0``.
    Returns the seven tensors as Python lists (values as int16 bit patterns, metadata as
    signed int32 words).
    """
    N, K = W.shape
    TR, TC = N // bn, K // bk
    w = bits(W).tolist()
    nz = [[(v & 0x7FFF) != 0 for v in row] for row in w]

    def kind(r, c):
        rows = range(r * bn, (r + 1) * bn)
        counts = [sum(nz[n][k:k + 4]) for n in rows for k in range(c * bk, (c + 1) * bk, 4)]
        return E if max(counts) == 0 else S if max(counts) <= 2 else D

    out = {k: [] for k in CompressedWeight.names}
    out["sparse_row_ptr"].append(0)
    out["dense_row_ptr"].append(0)
    for r in range(TR):
        for c in range(TC):
            t = kind(r, c)
            if t == S:
                out["sparse_cols"].append(c)
                kept = {}
                for row in range(bn):
                    for grp in range(bk // 4):
                        n, k = r * bn + row, c * bk + 4 * grp
                        kept[row, grp] = _ref_kept(nz[n][k:k + 4])
                for mb in range(bn // 16):
                    for ks in range(bk // 32):
                        for lane in range(32):
                            for j in range(8):
                                g, q = lane // 4, lane % 4
                                row = mb * 16 + g + 8 * ((j // 2) % 2)
                                ccol = 2 * q + (j % 2) + 8 * (j // 4)
                                group = ks * 8 + ccol // 2
                                slot = ccol % 2
                                i = kept[row, group][slot]
                                out["sparse_values"].append(
                                    w[r * bn + row][c * bk + 4 * group + i])
                code = {key: p[0] | (p[1] << 2) for key, p in kept.items()}
                for mb in range(bn // 16):
                    for kp in range(bk // 64):
                        for lane in range(32):
                            g, q = lane // 4, lane % 4
                            ks, h = 2 * kp + q // 2, q % 2
                            word = 0
                            for i in range(4):
                                word |= code[mb * 16 + g, ks * 8 + 4 * h + i] << (4 * i)
                                word |= code[mb * 16 + g + 8, ks * 8 + 4 * h + i] << (16 + 4 * i)
                            out["sparse_meta"].append(word - 2**32 if word >= 2**31 else word)
            elif t == D:
                out["dense_cols"].append(c)
                for mb in range(bn // 16):
                    for ks16 in range(bk // 16):
                        for lane in range(32):
                            for j in range(8):
                                g, q = lane // 4, lane % 4
                                row = mb * 16 + g + 8 * ((j // 2) % 2)
                                col = ks16 * 16 + 2 * q + (j % 2) + 8 * (j // 4)
                                out["dense_values"].append(w[r * bn + row][c * bk + col])
        out["sparse_row_ptr"].append(len(out["sparse_cols"]))
        out["dense_row_ptr"].append(len(out["dense_cols"]))
    return out


def _awkward_24(W, seed):
    """Thin the 2:4 groups of W further (groups with 0 or 1 non-zero exercise the
    completion rule) and turn some zeros into -0.0 (they must count as zero)."""
    g = gen(seed)
    drop = torch.rand(W.shape, generator=g) < 0.3
    W = torch.where(drop, torch.zeros((), dtype=W.dtype), W)
    neg = (torch.rand(W.shape, generator=g) < 0.5) & (W == 0)
    return torch.where(neg, torch.full((), -0.0, dtype=W.dtype), W)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", BLOCKS)
def test_layout_matches_reference(device, dtype, block):
    bn, bk = block
    # Tile rows on the 128 grid: all dense / one 2:4 + one empty / all 2:4.
    W, _ = random_patch_weight(384, 256, 0.5, 0.5, dtype=dtype, generator=gen(7),
                               row_pattern="both")
    W = _awkward_24(W, seed=8)
    ref = reference_compress(W, bn, bk)
    Wc = compress(W.to(device), bn, bk)
    for name, t in zip(Wc.names, Wc):
        got = bits(t) if name.endswith("_values") else t
        assert got.cpu().tolist() == ref[name], name
    assert torch.equal(decompress(Wc).cpu(), W)


def test_layout_spot_checks():
    """A few positions of one 64 x 64 2:4 tile worked out by hand from the doc."""
    W = torch.zeros(64, 64, dtype=torch.float16)
    # Row 0: group 0 keeps {1, 2}; group 1 keeps {0} -> (0, 3); group 4 keeps {3} -> (2, 3).
    W[0, 1], W[0, 2], W[0, 4], W[0, 19] = 1.0, 2.0, 3.0, 4.0
    # Row 8: group 0 keeps {0, 3}.  Row 1: group 8 (ks = 1) keeps {0, 1}.
    W[8, 0], W[8, 3], W[1, 32], W[1, 33] = 5.0, 6.0, 7.0, 8.0
    Wc = compress(W, 64, 64)
    assert Wc.num_sparse_tiles == 1
    v, m = Wc.sparse_values.tolist(), Wc.sparse_meta.tolist()
    # lane 0: j=0,1 -> row 0 group 0 slots 0,1; j=2,3 -> row 8 group 0; j=4,5 -> row 0 group 4
    # (keeps (2, 3): W[0, 18], W[0, 19]).
    assert v[0:6] == [1.0, 2.0, 5.0, 6.0, 0.0, 4.0]
    # lane 1 (q = 1): j=0,1 -> row 0 group 1 -> W[0, 4], W[0, 7].
    assert v[8:10] == [3.0, 0.0]
    # ks = 1 starts at index 256; lane 4 is g = 1 (row 1), j=0,1 -> group 8 -> W[1, 32:34].
    assert v[256 + 4 * 8: 256 + 4 * 8 + 2] == [7.0, 8.0]
    u = [x & 0xFFFFFFFF for x in m]
    # Word 0 (lane 0): row 0 groups 0..3 = 0x9, 0xC, 0xE, 0xE; row 8 groups 0..3 = 0xC, E, E, E.
    assert u[0] == 0xEEEC_EEC9
    # Word 1 (lane 1, h = 1): row 0 groups 4..7 = 0xE, 0xE, 0xE, 0xE (group 4 keeps (2,3)).
    assert u[1] == 0xEEEE_EEEE
    # Word 6 (lane 6 = g 1, q 2 -> ks 1, h 0): row 1 groups 8..11, group 8 = {0,1} = 0x4.
    assert u[6] == 0xEEEE_EEE4


# --------------------------------------------------------------------------------------
# Zeros, -0.0 and NaN
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_zero(device, dtype):
    W = build([[S, D], [E, S]], dtype=dtype)
    W = torch.where(W == 0, torch.full((), -0.0, dtype=dtype), W).to(device)
    assert bool((bits(W) == -32768).any())          # there are -0.0s
    assert classify_tiles(W, 64, 64).tolist() == [[S, D], [E, S]]
    Wc = compress(W, 64, 64)
    assert Wc.num_sparse_tiles == 2 and Wc.num_empty_tiles == 1
    assert torch.equal(decompress(Wc), W)
    # Bit level: a kept -0.0 stays -0.0, a dropped one comes back +0.0.
    X = torch.zeros(64, 64, dtype=dtype)
    X[0, 0:4] = torch.tensor([1.0, -0.0, -0.0, -0.0], dtype=dtype)   # keeps (0, 3)
    out = bits(decompress(compress(X.to(device), 64, 64))).cpu()
    assert out[0, :4].tolist() == [bits(X)[0, 0].item(), 0, 0, -32768]


@pytest.mark.parametrize("device", DEVICES)
def test_nan_is_nonzero(device):
    X = torch.zeros(64, 64, dtype=torch.float16)
    X[0, 0:4] = torch.tensor([float("nan"), 1.0, 0.0, 0.0])
    X[5, 8:12] = torch.tensor([0.0, float("inf"), 0.0, 0.0])
    X = X.to(device)
    assert classify_tiles(X, 64, 64).item() == S
    assert torch.equal(bits(decompress(compress(X, 64, 64))), bits(X))
    X[0, 2] = 1.0                              # three non-zeros (one NaN): DENSE
    assert classify_tiles(X, 64, 64).item() == D
    assert torch.equal(bits(decompress(compress(X, 64, 64))), bits(X))


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_classify_hand_built(device):
    X = torch.zeros(64, 5 * 64, dtype=torch.float32)
    # tile 0: all zero -> EMPTY
    X[3, 64 + 7] = 1.0                         # tile 1: a single non-zero -> SPARSE_24
    X[:, 128:192:4] = 1.0                      # tile 2: two per group everywhere -> SPARSE_24
    X[:, 130:192:4] = -2.0
    X[:, 192:256] = 1.0                        # tile 3: fully dense -> DENSE
    X[:, 256:320:4] = 1.0                      # tile 4: 2:4 except one group of three -> DENSE
    X[:, 257:320:4] = 1.0
    X[63, 318] = 1.0
    X = X.to(device)
    assert classify_tiles(X, 64, 64).tolist() == [[E, S, S, D, D]]
    tm = classify_tiles(X, 16, 32)
    assert tm.dtype == torch.int8 and tm.shape == (4, 10) and tm.device == X.device
    assert tm[3, 9].item() == D and tm[0, 9].item() == S and tm[0, 0].item() == E


def _ref_classify(W, bn, bk):
    nz = (W != 0).cpu()
    TR, TC = W.shape[0] // bn, W.shape[1] // bk
    out = torch.empty(TR, TC, dtype=torch.int8)
    for r in range(TR):
        for c in range(TC):
            t = nz[r * bn:(r + 1) * bn, c * bk:(c + 1) * bk]
            cnt = t.reshape(bn, bk // 4, 4).sum(-1)
            out[r, c] = E if not t.any() else S if bool((cnt <= 2).all()) else D
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bn", [16, 32, 64, 128])
@pytest.mark.parametrize("bk", [16, 32, 64, 128])
def test_classify_matches_loop_reference(device, bn, bk):
    g = gen(bn * 1000 + bk)
    W = prune_to_24(torch.randn(256, 256, generator=g))
    # Sprinkle a few extra non-zeros (breaking some 2:4 groups) and zero some regions.
    extra = torch.rand(256, 256, generator=g) < 0.0004
    W = torch.where(extra, torch.ones(()), W)
    W[:, :64] = 0
    W[200:, 100:170] = 0
    W = W.to(device)
    assert torch.equal(classify_tiles(W, bn, bk).cpu(), _ref_classify(W, bn, bk))


# --------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------

def test_bad_weights():
    with pytest.raises(TypeError, match="float16 or bfloat16.*float32"):
        compress(torch.zeros(128, 128))
    with pytest.raises(TypeError, match="float16 or bfloat16.*int32"):
        compress(torch.zeros(128, 128, dtype=torch.int32))
    with pytest.raises(TypeError, match="floating point"):
        classify_tiles(torch.zeros(128, 128, dtype=torch.int32))
    with pytest.raises(ValueError, match="2-D"):
        compress(torch.zeros(128, dtype=torch.float16))
    with pytest.raises(ValueError, match="2-D"):
        classify_tiles(torch.zeros(2, 128, 128))
    with pytest.raises(ValueError, match=r"N=192 .*block_n=128.*does not pad"):
        compress(torch.zeros(192, 128, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"K=100 .*block_k=64.*does not pad"):
        compress(torch.zeros(128, 100, dtype=torch.float16), 64, 64)
    with pytest.raises(ValueError, match=r"N=100 .*block_n=16"):
        classify_tiles(torch.zeros(100, 128), 16, 16)


@pytest.mark.parametrize("block", [(32, 64), (64, 32), (256, 128), (128, 48), (64.0, 64)])
def test_block_not_allowed_for_compress(block):
    with pytest.raises(ValueError, match="not allowed"):
        compress(torch.zeros(256, 256, dtype=torch.float16), *block)


@pytest.mark.parametrize("block", [(8, 64), (64, 8), (256, 128), (48, 64)])
def test_block_not_allowed_for_classify(block):
    with pytest.raises(ValueError, match="not allowed"):
        classify_tiles(torch.zeros(256, 256), *block)


def test_bad_user_tile_maps():
    W = build([[S, D], [E, S]])
    with pytest.raises(ValueError, match=r"tile \(0, 1\) is declared SPARSE_24 but is not 2:4: "
                                         r"row 0 .*group 0"):
        compress(W, 64, 64, tile_map=torch.tensor([[S, S], [E, S]]))
    with pytest.raises(ValueError, match=r"tile \(1, 1\) is declared EMPTY"):
        compress(W, 64, 64, tile_map=torch.tensor([[S, D], [E, E]]))
    with pytest.raises(ValueError, match=r"tile_map has shape \(2, 3\)"):
        check_tile_map(W, torch.zeros(2, 3, dtype=torch.int8), 64, 64)
    with pytest.raises(TypeError, match="integer dtype"):
        check_tile_map(W, torch.zeros(2, 2), 64, 64)
    with pytest.raises(ValueError, match="0..2"):
        check_tile_map(W, torch.tensor([[S, 3], [E, S]]), 64, 64)
    # The offending row/group is located inside the tile.
    W2 = W.clone()
    W2[70, 0:4] = 1.0                          # tile (1, 0), row 70, group 0
    with pytest.raises(ValueError, match=r"tile \(1, 0\) is declared EMPTY.*W\[70, 0\]"):
        check_tile_map(W2, torch.tensor([[S, D], [E, S]]), 64, 64)
    W2[70, 64:68] = 1.0                        # tile (1, 1), row 70 (tile row 6), group 0
    with pytest.raises(ValueError, match=r"tile \(1, 1\).*row 70 \(tile row 6\), group 0"):
        check_tile_map(W2, torch.tensor([[S, D], [D, S]]), 64, 64)


# --------------------------------------------------------------------------------------
# validate on corrupted tuples
# --------------------------------------------------------------------------------------

@pytest.fixture
def wc():
    # Tile map [[S, D, S], [E, E, E], [D, S, D]] at 64 x 64: every list has entries.
    return compress(build([[S, D, S], [E, E, E], [D, S, D]]), 64, 64)


def corrupt(Wc, i, t):
    parts = list(Wc)
    parts[i] = t
    return CompressedWeight(parts, **Wc._kwargs())


@pytest.mark.parametrize("i", [0, 2, 3, 4, 6])
@pytest.mark.parametrize("delta", [-1, 1])
def test_validate_wrong_length(wc, i, delta):
    t = wc[i]
    bad = t[:-1] if delta < 0 else torch.cat([t, t[-1:]])
    with pytest.raises(ValueError, match=f"{wc.names[i]} has length"):
        validate(corrupt(wc, i, bad))


@pytest.mark.parametrize("i", [1, 5])
def test_validate_cols_length_mismatch(wc, i):
    bad = torch.cat([wc[i], wc[i][-1:]])
    with pytest.raises(ValueError, match="_values has length|_row_ptr"):
        validate(corrupt(wc, i, bad))


def test_validate_row_ptr_contents(wc):
    rp = wc.sparse_row_ptr.clone()              # [0, 2, 2, 3]
    assert rp.tolist() == [0, 2, 2, 3]
    with pytest.raises(ValueError, match=r"sparse_row_ptr is not monotone.*\[1\]=3 > \[2\]=2"):
        validate(corrupt(wc, 0, torch.tensor([0, 3, 2, 3], dtype=torch.int32)))
    with pytest.raises(ValueError, match=r"sparse_row_ptr\[0\] must be 0"):
        validate(corrupt(wc, 0, torch.tensor([1, 2, 2, 3], dtype=torch.int32)))
    with pytest.raises(ValueError, match=r"dense_row_ptr\[-1\] must equal len\(dense_cols\)"):
        validate(corrupt(wc, 4, torch.tensor([0, 1, 1, 2], dtype=torch.int32)))


def test_validate_cols_contents(wc):
    assert wc.sparse_cols.tolist() == [0, 2, 1] and wc.dense_cols.tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match=r"sparse_cols\[2\] = 3 is out of range \[0, 3\)"):
        validate(corrupt(wc, 1, torch.tensor([0, 2, 3], dtype=torch.int32)))
    with pytest.raises(ValueError, match=r"dense_cols\[0\] = -1 is out of range"):
        validate(corrupt(wc, 5, torch.tensor([-1, 0, 2], dtype=torch.int32)))
    with pytest.raises(ValueError, match=r"sparse_cols is not strictly ascending within tile "
                                         r"row 0"):
        validate(corrupt(wc, 1, torch.tensor([2, 0, 1], dtype=torch.int32)))
    with pytest.raises(ValueError, match="not strictly ascending"):
        validate(corrupt(wc, 1, torch.tensor([0, 0, 1], dtype=torch.int32)))
    # Descending across a row boundary is fine: row 2's dense tiles [0, 2] follow row 0's [1].
    validate(wc)
    with pytest.raises(ValueError, match=r"tile \(0, 2\) is in both sparse_cols and dense_cols"):
        validate(corrupt(wc, 5, torch.tensor([2, 0, 2], dtype=torch.int32)))


def test_validate_meta_nibbles(wc):
    meta = wc.sparse_meta.clone()
    meta[100] = 0x4444_4440                      # nibble 0 = 0x0: i0 == i1
    with pytest.raises(ValueError, match=r"sparse_meta word 100 \(sparse tile 0\)"):
        validate(corrupt(wc, 3, meta))
    meta = wc.sparse_meta.clone()
    meta[-1] = 0x7EEE_EEEE                      # nibble 7 = 0x7: i0 = 3 > i1 = 1
    with pytest.raises(ValueError, match="sparse_meta word"):
        validate(corrupt(wc, 3, meta))


def test_validate_dtypes_and_types(wc):
    with pytest.raises(TypeError, match="sparse_cols must have dtype torch.int32"):
        validate(corrupt(wc, 1, wc.sparse_cols.long()))
    with pytest.raises(TypeError, match="dense_values must have dtype torch.float16"):
        validate(corrupt(wc, 6, wc.dense_values.float()))
    with pytest.raises(TypeError, match="sparse_values must have dtype torch.float16"):
        validate(corrupt(wc, 2, wc.sparse_values.bfloat16()))
    with pytest.raises(TypeError, match="dense_row_ptr must be a torch.Tensor"):
        validate(corrupt(wc, 4, [0, 1, 1, 2]))
    with pytest.raises(ValueError, match="must be 1-D"):
        validate(corrupt(wc, 3, wc.sparse_meta.view(-1, 2)))
    with pytest.raises(ValueError, match="exactly 7 tensors"):
        validate(tuple(wc)[:6])
    with pytest.raises(ValueError, match="exactly 7 tensors"):
        CompressedWeight(tuple(wc) + (wc[0],), **wc._kwargs())
    with pytest.raises(TypeError, match="CompressedWeight"):
        validate("not a tuple")
    with pytest.raises(TypeError, match="N is unknown"):
        validate(tuple(wc))
    validate(tuple(wc), N=192, K=192, block_n=64, block_k=64)    # a plain tuple with keywords


@pytest.mark.skipif(not CUDA, reason="no CUDA")
def test_validate_mixed_devices(wc):
    with pytest.raises(ValueError, match="one device"):
        validate(corrupt(wc, 6, wc.dense_values.cuda()))


@pytest.mark.parametrize("device", DEVICES)
def test_decompress_refuses_corrupted(device, wc):
    bad = corrupt(wc.to(device), 5, torch.tensor([1, 0, 7], dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="dense_cols"):
        decompress(bad)


# --------------------------------------------------------------------------------------
# The CompressedWeight object
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_compressed_weight_api(device, wc):
    Wc = wc.to(device)
    assert Wc.device.type == device and all(t.device.type == device for t in Wc)
    assert Wc.names == ("sparse_row_ptr", "sparse_cols", "sparse_values", "sparse_meta",
                        "dense_row_ptr", "dense_cols", "dense_values")
    for i, name in enumerate(Wc.names):
        assert getattr(Wc, name) is Wc[i]
    a, b, c, d, e, f, g = Wc                  # *Wc is the seven tensors and nothing else
    assert [x is y for x, y in zip((a, b, c, d, e, f, g), Wc)] == [True] * 7
    assert (Wc.num_sparse_tiles, Wc.num_dense_tiles, Wc.num_empty_tiles) == (3, 3, 3)
    assert Wc.dense_nbytes == 192 * 192 * 2
    assert Wc.nbytes == sum(t.numel() * t.element_size() for t in Wc)
    assert Wc.nbytes == compressed_nbytes(tile_map_of(Wc), 64, 64)
    # A 2:4 tile costs 0.5625 of a dense one (section 2).
    assert (Wc.sparse_values.nbytes + Wc.sparse_meta.nbytes) / Wc.dense_values.nbytes == 0.5625
    md = Wc.metadata()
    assert md == dict(N=192, K=192, block_n=64, block_k=64, dtype="float16",
                      format_version=FORMAT_VERSION)
    # JSON round trip, and safetensors-style string metadata.
    md2 = {k: str(v) for k, v in json.loads(json.dumps(md)).items()}
    for tensors in (tuple(Wc), dict(zip(Wc.names, Wc))):
        Wc2 = CompressedWeight.from_tensors(tensors, md2)
        assert Wc2.metadata() == md and torch.equal(decompress(Wc2), decompress(Wc))
    with pytest.raises(ValueError, match="format_version 2"):
        CompressedWeight.from_tensors(tuple(Wc), dict(md, format_version=2))
    Wc3 = pickle.loads(pickle.dumps(Wc))
    assert type(Wc3) is CompressedWeight and Wc3.metadata() == md
    assert all(torch.equal(x, y) for x, y in zip(Wc, Wc3))
    r = repr(Wc)
    assert "N=192" in r and "64x64" in r and "sparse_24=3" in r and "float16" in r
    assert ALLOWED_BLOCKS == (64, 128)


def test_compress_with_config_dict():
    """compress(W, config) reads the tile shape from a config dict, in both spellings."""
    W, _ = random_patch_weight(256, 256, 0.5, generator=torch.Generator().manual_seed(4))
    for cfg, want in [({"BLOCK_N": 64, "BLOCK_K": 128}, (64, 128)),
                      ({"BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "num_warps": 4}, (128, 64))]:
        Wc = compress(W, cfg)
        assert (Wc.block_n, Wc.block_k) == want
        assert torch.equal(decompress(Wc), W)
    with pytest.raises(ValueError, match="config needs BLOCK_N and BLOCK_K"):
        compress(W, {"BLOCK_M": 16})


def test_integer_arguments():
    """Sizes must be integers: np.int64 (and other integer scalars) are taken, a float is
    refused wherever int() used to truncate it (128.7 read as 128)."""
    import numpy as np

    W, _ = random_patch_weight(256, 256, 0.5, generator=torch.Generator().manual_seed(4))
    Wc = compress(W, np.int64(128), np.int64(64))
    assert (Wc.block_n, Wc.block_k) == (128, 64) and type(Wc.block_n) is int
    assert (compress(W, {"BLOCK_N": np.int64(64), "BLOCK_K": 128}).block_n) == 64
    with pytest.raises(TypeError, match=r"BLOCK_N must be an integer, got 128.7"):
        compress(W, {"BLOCK_N": 128.7, "BLOCK_K": 128})
    with pytest.raises(TypeError, match=r"block_n must be an integer, got 128.7"):
        validate(tuple(Wc), N=256, K=256, block_n=128.7, block_k=64)
    validate(tuple(Wc), N=np.int64(256), K=256, block_n=128, block_k=np.int32(64))
    with pytest.raises(TypeError, match=r"N must be an integer, got 256.5"):
        CompressedWeight(tuple(Wc), N=256.5, K=256, block_n=128, block_k=64, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"K must be an integer, got '256x'"):
        CompressedWeight.from_tensors(tuple(Wc), dict(Wc.metadata(), K="256x"))


def test_validate_on_meta_says_why(wc):
    """The meta device holds no values to check: a clear error, after the shape checks."""
    meta = wc.to("meta")
    with pytest.raises(ValueError, match="meta device, which holds no values"):
        validate(meta)
    with pytest.raises(ValueError, match="sparse_values has length"):
        validate(corrupt(meta, 2, meta.sparse_values[:-1]))
