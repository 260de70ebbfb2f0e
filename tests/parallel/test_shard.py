"""Sharding a compressed weight along tile rows and tile columns: every shard valid, equal to the
slice of the dense weight bit for bit, and concatenation the inverse (pure Python); a shard's
kernels tuned at its own shape (needs the extension)."""
import pytest
import torch

import stoicc_ext as STOICC
from stoicc_ext.parallel.shard import concat_cols, concat_rows, shard_cols, shard_rows, shard_weight
from stoicc_ext.testing import random_patch_weight

from conftest import needs_ext


def weight(N=512, K=1024, block=(128, 128), seed=0, dtype=torch.float16, row_pattern="both"):
    g = torch.Generator().manual_seed(seed)
    W, _ = random_patch_weight(N, K, 0.5, 0.2, dtype=dtype, generator=g, tile=64, row_pattern=row_pattern)
    W[0, :4] = torch.tensor([-0.0, 0.0, 1.0, 0.0])   # a -0.0 kept in a group travels bit for bit
    return W, STOICC.compress(W, *block)


def bits(t):
    return t.view(torch.int16)


CASES = [((128, 128), 2, torch.float16), ((128, 128), 4, torch.float16), ((64, 128), 4, torch.float16),
         ((128, 64), 4, torch.float16), ((64, 64), 8, torch.float16), ((64, 64), 1, torch.bfloat16),
         ((128, 128), 4, torch.bfloat16)]


@pytest.mark.parametrize("block,world,dtype", CASES)
def test_shards_are_slices_and_concat_inverts(block, world, dtype):
    W, Wc = weight(block=block, dtype=dtype)
    full = STOICC.decompress(Wc)
    n, k = Wc.N // world, Wc.K // world
    rows = [shard_rows(Wc, world, r) for r in range(world)]
    cols = [shard_cols(Wc, world, r) for r in range(world)]
    for r in range(world):
        for s, (N, K), ref in ((rows[r], (n, Wc.K), full[r * n:(r + 1) * n]),
                               (cols[r], (Wc.N, k), full[:, r * k:(r + 1) * k])):
            STOICC.validate(s)
            assert (s.N, s.K, s.block_n, s.block_k, s.dtype) == (N, K, *block, dtype)
            assert torch.equal(bits(STOICC.decompress(s)), bits(ref))
    for back in (concat_rows(rows), concat_cols(cols)):
        assert (back.N, back.K) == (Wc.N, Wc.K)
        for a, b in zip(back, Wc):
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_shard_owns_its_memory_and_counts_add_up():
    _, Wc = weight()
    parts = [shard_rows(Wc, 4, r) for r in range(4)] + [shard_cols(Wc, 4, r) for r in range(4)]
    full = {t.untyped_storage().data_ptr() for t in Wc}
    for s in parts:
        assert not {t.untyped_storage().data_ptr() for t in s} & full
    assert sum(s.nbytes for s in parts[:4]) == Wc.nbytes + 3 * 2 * 4     # three more row pointers per CSR list
    assert sum(s.num_sparse_tiles for s in parts[4:]) == Wc.num_sparse_tiles
    assert sum(s.num_dense_tiles for s in parts[4:]) == Wc.num_dense_tiles


def test_shard_weight_and_errors():
    _, Wc = weight(N=384, K=640, block=(128, 128), row_pattern=None)   # 3 tile rows, 5 tile columns
    assert shard_weight(Wc, 0, 3, 1).N == 128 and shard_weight(Wc, 1, 5, 4).K == 128
    with pytest.raises(ValueError, match=r"cannot shard N=384 .*3 tiles do not split into 2 equal parts"):
        shard_rows(Wc, 2, 0)
    with pytest.raises(ValueError, match=r"cannot shard K=640 .*5 tiles do not split into 2"):
        shard_cols(Wc, 2, 0)
    with pytest.raises(ValueError, match="rank 3 is not in a world of 3"):
        shard_rows(Wc, 3, 3)
    with pytest.raises(ValueError, match="dim must be 0"):
        shard_weight(Wc, 2, 1, 0)
    _, other = weight(block=(64, 64))
    with pytest.raises(ValueError, match="different tile shapes"):
        concat_rows([shard_rows(Wc, 3, 0), shard_rows(other, 4, 0)])


class RecordingInspector(STOICC.Inspector):
    """An Inspector that records the (X, W) shapes of every inspect."""

    def __init__(self):
        super().__init__(use_default_configs=True, verbose=False, cache=False)
        self.seen = []

    def inspect(self, X, W, sparse_arg=1):
        self.seen.append((tuple(X.shape), tuple(W.shape)))
        return super().inspect(X, W, sparse_arg)


@needs_ext
@pytest.mark.parametrize("shard", [shard_rows, shard_cols])
def test_tune_shard_tunes_the_rank_shape(shard):
    from stoicc_ext.parallel import tune_shard

    _, Wc = weight(block=(64, 128))
    part = shard(Wc, 4, 1)
    insp = RecordingInspector()
    mm = tune_shard(part, inspector=insp, decode_tokens=8, prefill_tokens=64)
    assert insp.seen == [((8, part.K), (part.N, part.K)), ((64, part.K), (part.N, part.K))]
    assert isinstance(mm, STOICC.MixedModule) and (mm.N, mm.K) == (part.N, part.K)
    if (mm.cfg_decoding["BLOCK_N"], mm.cfg_decoding["BLOCK_K"]) == (part.block_n, part.block_k):
        assert all(torch.equal(a, b) for a, b in zip(mm.compressed_tensors(), part))   # the shard as it was
    x = torch.randn(5, part.K).half()
    assert torch.equal(mm(x), STOICC.spmm(x, part))


@needs_ext
def test_tune_shard_keeps_a_shard_without_24_tiles_dense():
    from stoicc_ext.parallel import tune_shard

    W, Wc = weight(block=(64, 128), row_pattern="dense_only_rows")      # tile row 0: dense tiles only
    lin = tune_shard(shard_rows(Wc, 8, 0), decode_tokens=8, prefill_tokens=64)
    assert isinstance(lin, torch.nn.Linear) and torch.equal(lin.weight, W[:64])


def test_shard_row_groups_splits_each_member():
    from stoicc_ext.parallel import shard_row_groups

    _, Wc = weight(N=1024, block=(64, 128))                   # members of 512, 256 and 256 rows (q, k, v)
    full = STOICC.decompress(Wc)
    for r in range(2):
        s = shard_row_groups(Wc, (512, 256, 256), 2, r)
        STOICC.validate(s)
        want = torch.cat([full[r * 256:(r + 1) * 256], full[512 + r * 128:512 + (r + 1) * 128],
                          full[768 + r * 128:768 + (r + 1) * 128]])
        assert s.N == 512 and torch.equal(bits(STOICC.decompress(s)), bits(want))
    with pytest.raises(ValueError, match="do not add up to N=1024"):
        shard_row_groups(Wc, (512, 256), 2, 0)
    with pytest.raises(ValueError, match="block of 192 rows .*3 tiles do not split into 2"):
        shard_row_groups(Wc, (512, 256, 192, 64), 2, 0)
