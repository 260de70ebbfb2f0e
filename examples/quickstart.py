"""The four-line Inspector API on one PATCH-pruned weight, then the same weight in a MixedModule.

    python examples/quickstart.py [--n 4096] [--k 4096] [--m 16]

On a GPU the Inspector times the compiled kernels on this weight and shape and caches the
winner (``$STOICC_CACHE_DIR``, default ``~/.cache/stoicc``); without one it returns the built-in
heuristic's choice and the ops run on their CPU reference implementation.
"""
import argparse

import torch

import stoicc_ext as STOICC


def patch_like_weight(n, k, device, dtype=torch.float16, seed=0):
    """A weight pruned on PATCH's 128 x 128 grid: every other tile column 2:4 (two zeros in each
    group of four along K), the rest dense."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, k, generator=g).to(dtype)
    for c in range(0, k, 256):
        W[:, c:c + 128].view(n, 32, 4)[..., 2:] = 0
    return W.to(device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096, help="output features (multiple of 128)")
    p.add_argument("--k", type=int, default=4096, help="input features (multiple of 256)")
    p.add_argument("--m", type=int, default=16, help="tokens")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    W = patch_like_weight(args.n, args.k, device)
    X = torch.randn(args.m, args.k, dtype=W.dtype, device=device)

    inspector = STOICC.Inspector(use_default_configs=True)
    executor, best_config = inspector.inspect(X, W, sparse_arg=1)
    Wc = inspector.compress(W, best_config)
    Y = executor(X, *Wc, **best_config)

    print(inspector.summary())
    print(Wc)
    ref = X.float() @ W.float().T
    err = (Y.float() - ref).abs().max().item() / ref.abs().max().item()
    print(f"max |Y - X @ W.T| / max |X @ W.T| = {err:.2e}")

    linear = torch.nn.Linear(args.k, args.n, bias=False).to(device, W.dtype)
    with torch.no_grad():
        linear.weight.copy_(W)
    mm = STOICC.MixedModule.from_linear(linear)       # decode and prefill tuned, one compressed weight
    print(mm)
    y = mm(X.view(args.m, 1, args.k))                  # [m, 1, n]: a decode step of m sequences
    assert torch.allclose(y.view(args.m, -1).float(), Y.float(), atol=1e-2, rtol=1e-2)
    return 0 if err < 4e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
