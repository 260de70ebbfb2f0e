"""spmm's kernel arguments (instance, split_k) are checked in one place (csrc/dispatch.cpp,
check_kernel_args) for the CPU and the GPU path: a call one refuses, the other refuses too,
including values past 2^31 that a cast to int would wrap onto a valid instance or split, and a
stream_k split the weight cannot feed."""
import pytest
import torch

import stoicc_ext
from stoicc_ext.testing import random_patch_weight

from conftest import DEVICES, needs_ext

pytestmark = needs_ext
N, K = 256, 256


def case(device):
    g = torch.Generator().manual_seed(0)
    W, _ = random_patch_weight(N, K, 0.5, 0.1, dtype=torch.float16, device=device, generator=g)
    return stoicc_ext.compress(W, 128, 128), torch.randn(4, K, generator=g).half().to(device)


def instance(schedule, tile=(128, 128)):
    return next(e for e in stoicc_ext.list_instances() if e["schedule"] == schedule
                and (e["BLOCK_N"], e["BLOCK_K"]) == tile and not e.get("exact_sm"))


@pytest.mark.parametrize("device", DEVICES)
def test_bad_kernel_arguments_are_refused(device):
    Wc, x = case(device)
    seq, sk, stk = instance("sequential"), instance("split_k"), instance("stream_k")
    other = next(e for e in stoicc_ext.list_instances() if (e["BLOCK_N"], e["BLOCK_K"]) != (128, 128))
    bad = [
        (dict(instance=10 ** 4), "instance 10000 does not exist"),
        (dict(instance=-5), "instance -5 does not exist"),
        (dict(instance=2 ** 32 + seq["index"]), "does not exist"),          # would wrap onto seq
        (dict(instance=other["index"]), "compressed with 128x128"),
        (dict(instance=seq["index"], split_k=4), "sequential schedule, which takes split_k = 1"),
        (dict(instance=sk["index"], split_k=100), r"split_k must be in \[1, 64\]"),
        (dict(split_k=10 ** 9), r"split_k must be 0 .* or in \[1, 65535\], got 1000000000"),
        (dict(split_k=-7), r"split_k must be 0 .* got -7"),
        (dict(instance=sk["index"], split_k=2 ** 32 + 2), "split_k must be 0"),  # would wrap onto 2
        (dict(instance=stk["index"], split_k=10 ** 4), "at least one dense tile of work per CTA"),
    ]
    for kw, msg in bad:
        with pytest.raises(RuntimeError, match=msg):
            stoicc_ext.spmm(x, Wc, **kw)


@pytest.mark.parametrize("device", DEVICES)
def test_good_kernel_arguments_run(device):
    Wc, x = case(device)
    ref = stoicc_ext.spmm(x, Wc)
    for kw in (dict(instance=instance("sequential")["index"], split_k=1),
               dict(instance=instance("split_k")["index"], split_k=2),
               dict(instance=instance("split_k")["index"]),                 # split 0: the heuristic's
               dict(instance=instance("stream_k")["index"], split_k=3)):
        assert torch.allclose(stoicc_ext.spmm(x, Wc, **kw).float(), ref.float(), atol=2e-2, rtol=0), kw
