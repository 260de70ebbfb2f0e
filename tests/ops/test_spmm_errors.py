"""Bad input to torch.ops.stoicc.spmm: a clear exception naming the problem, never a crash."""
import pytest
import torch

import stoicc_ext
from stoicc_ext.testing import random_patch_weight

from conftest import DEVICES, needs_cuda, needs_ext

pytestmark = needs_ext
N, K = 256, 256


def case(device, dtype=torch.float16):
    g = torch.Generator().manual_seed(0)
    W, _ = random_patch_weight(N, K, 0.5, 0.1, dtype=dtype, device=device, generator=g)
    return stoicc_ext.compress(W, 128, 128), torch.randn(4, K, generator=g).to(dtype).to(device)


def call(x, Wc, bias=None, N_=N, K_=K, bn=128, bk=128, instance=-1, split_k=0, tensors=None):
    return torch.ops.stoicc.spmm(x, *(tensors if tensors is not None else Wc), bias, N_, K_, bn, bk, instance, split_k)


@pytest.mark.parametrize("device", DEVICES)
def test_wrong_dtype(device):
    Wc, x = case(device)
    with pytest.raises(RuntimeError, match="x must be float16 or bfloat16, got float32"):
        call(x.float(), Wc)
    with pytest.raises(RuntimeError, match="sparse_values must have dtype bfloat16"):
        call(x.bfloat16(), Wc)
    with pytest.raises(RuntimeError, match="bias must have x's dtype"):
        call(x, Wc, bias=torch.zeros(N, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_shape_mismatch(device):
    Wc, x = case(device)
    with pytest.raises(RuntimeError, match="x has 128 columns but the weight has K=256"):
        call(x[:, :128], Wc)
    with pytest.raises(RuntimeError, match="x must be 2-D"):
        call(x[0], Wc)
    with pytest.raises(RuntimeError, match=r"bias must have shape \(N,\)"):
        call(x, Wc, bias=torch.zeros(N + 1, dtype=x.dtype, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_not_divisible(device):
    Wc, x = case(device)
    with pytest.raises(RuntimeError, match="N=200 is not a multiple of block_n=128"):
        call(x, Wc, N_=200)
    with pytest.raises(RuntimeError, match="block_k must be 64 or 128, got 32"):
        call(x, Wc, bk=32)


@pytest.mark.parametrize("device", DEVICES)
def test_tuple_lengths(device):
    """Each tensor of the tuple truncated, or the tuple from another tile shape."""
    Wc, x = case(device)
    names = ["sparse_row_ptr", "sparse_values", "sparse_meta", "dense_row_ptr", "dense_values"]
    for i, name in [(0, names[0]), (2, names[1]), (3, names[2]), (4, names[3]), (6, names[4])]:
        t = list(Wc)
        t[i] = t[i][:-1].clone()
        with pytest.raises(RuntimeError, match=name):
            call(x, Wc, tensors=t)
    with pytest.raises(RuntimeError, match="sparse_row_ptr has 3 entries, expected 5"):
        call(x, Wc, bn=64)  # tuple compressed with 128-row tiles, called as 64-row tiles


def test_corrupted_indices_cpu():
    """The CPU kernel reads every index and reports corruption."""
    Wc, x = case("cpu")
    t = list(Wc)
    cols = t[5].clone()
    cols[0] = 99
    t[5] = cols
    with pytest.raises(RuntimeError, match="corrupted compressed weight.*outside"):
        call(x, Wc, tensors=t)
    t = list(Wc)
    ptr = t[4].clone()
    ptr[1], ptr[0] = ptr[0], 1
    t[4] = ptr
    with pytest.raises(RuntimeError, match="corrupted"):
        call(x, Wc, tensors=t)
    with pytest.raises(ValueError):
        stoicc_ext.validate(stoicc_ext.CompressedWeight(t, N=N, K=K, block_n=128, block_k=128, dtype=torch.float16))


@needs_cuda
@pytest.mark.gpu
def test_corrupted_indices_cuda_never_faults():
    """The CUDA kernel clamps indices: a corrupted tuple gives garbage, not a fault; validate()
    (which compress and load call) names the corruption."""
    Wc, x = case("cuda")
    t = list(Wc)
    t[5] = torch.full_like(t[5], 10 ** 6)
    t[0] = torch.full_like(t[0], 10 ** 6)
    y = call(x, Wc, tensors=t)
    torch.cuda.synchronize()
    assert y.shape == (4, N)
    with pytest.raises(ValueError):
        stoicc_ext.validate(stoicc_ext.CompressedWeight(t, N=N, K=K, block_n=128, block_k=128, dtype=torch.float16))


@needs_cuda
@pytest.mark.gpu
def test_mixed_devices():
    Wc, x = case("cuda")
    with pytest.raises(RuntimeError, match="another device"):
        call(x, Wc, tensors=[Wc[0].cpu(), *Wc[1:]])
    with pytest.raises(RuntimeError, match="bias is on another device"):
        call(x, Wc, bias=torch.zeros(N, dtype=x.dtype))


@needs_cuda
@pytest.mark.gpu
def test_bad_instance():
    Wc, x = case("cuda")
    with pytest.raises(RuntimeError, match="does not exist"):
        call(x, Wc, instance=10 ** 4)
    other = next(e for e in stoicc_ext.list_instances() if e["BLOCK_K"] == 64)
    with pytest.raises(RuntimeError, match="compressed with 128x128"):
        call(x, Wc, instance=other["index"])
    seq = next(e for e in stoicc_ext.list_instances() if e["schedule"] == "sequential" and e["BLOCK_N"] == 128
               and e["BLOCK_K"] == 128)
    with pytest.raises(RuntimeError, match="sequential schedule"):
        call(x, Wc, instance=seq["index"], split_k=4)
    sk = next(e for e in stoicc_ext.list_instances() if e["schedule"] == "stream_k" and e["BLOCK_N"] == 128
              and e["BLOCK_K"] == 128)
    with pytest.raises(RuntimeError, match="at least one dense tile of work per CTA"):
        call(x, Wc, instance=sk["index"], split_k=10 ** 4)


@pytest.mark.parametrize("device", DEVICES)
def test_misaligned_weight_views(device):
    """Value and metadata tensors that are views starting 2 (or 4) bytes into an allocation: the
    GPU kernels copy 16-byte blocks, so the op copies such tensors first; the answer is the same,
    and nothing faults."""
    Wc, x = case(device)

    def shifted(t):  # same values, data pointer off by one element
        buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        view = buf[1:]
        view.copy_(t)
        return view

    ts = list(Wc)
    for i in (2, 3, 6):  # sparse_values, sparse_meta, dense_values
        ts[i] = shifted(ts[i])
    assert ts[2].data_ptr() % 16 != 0 and ts[3].data_ptr() % 16 != 0 and ts[6].data_ptr() % 16 != 0
    y = call(x, Wc, tensors=ts)
    assert torch.equal(y, call(x, Wc))
    assert torch.equal(torch.ops.stoicc.densify(*ts, N, K, 128, 128), stoicc_ext.decompress(Wc))
    if device == "cuda":
        torch.cuda.synchronize()
