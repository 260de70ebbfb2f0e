"""stoicc_ext.testing: the synthetic PATCH-like weights of the tests and benchmarks."""
import pytest
import torch

from stoicc_ext import TileType, classify_tiles
from stoicc_ext.testing import UNIT_ROUNDOFF, prune_to_24, random_patch_weight

from conftest import DEVICES


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_synthetic_is_deterministic_and_exact():
    a, ta = random_patch_weight(512, 1024, 0.5, 0.25, generator=gen(5))
    b, tb = random_patch_weight(512, 1024, 0.5, 0.25, generator=gen(5))
    assert torch.equal(a, b) and torch.equal(ta, tb)
    assert int((ta == TileType.SPARSE_24).sum()) == 16 and int((ta == TileType.EMPTY).sum()) == 8
    assert torch.equal(classify_tiles(a), ta)
    W = torch.tensor([[0.5, -3.0, 2.0, 0.1, -1.0, 1.0, 0.0, 0.0]])
    assert prune_to_24(W).tolist() == [[0.0, -3.0, 2.0, 0.0, -1.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize("device", DEVICES)
def test_values_drawn_on_the_device(device):
    """values_on_device (what the kernel benchmark uses for large shapes): same tile map as the CPU
    draw, values drawn where the weight lives, still exact and repeatable."""
    a, ta = random_patch_weight(256, 512, 0.5, 0.25, dtype=torch.bfloat16, device=device, generator=gen(7),
                                values_on_device=True)
    b, tb = random_patch_weight(256, 512, 0.5, 0.25, dtype=torch.bfloat16, device=device, generator=gen(7),
                                values_on_device=True)
    _, t_cpu = random_patch_weight(256, 512, 0.5, 0.25, generator=gen(7))
    assert a.device.type == device and a.dtype == torch.bfloat16 and torch.equal(a, b)
    assert torch.equal(ta.cpu(), t_cpu) and torch.equal(classify_tiles(a).cpu(), t_cpu)


def test_unit_roundoff_is_half_an_ulp_of_one():
    """The error bounds' unit: one rounding's worst relative error, finfo's eps / 2."""
    for dtype, u in UNIT_ROUNDOFF.items():
        assert u == torch.finfo(dtype).eps / 2
        assert torch.tensor(1 + u, dtype=torch.float64).to(dtype).item() == 1.0      # a tie rounds to even: 1
