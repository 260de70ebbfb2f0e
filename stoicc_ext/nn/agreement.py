"""How close a converted model's outputs are to the dense model's on the same weights, and the
fp16 tolerance they are held to.

    check = compare_logits(dense_logits, stoicc_logits)      # [batch, vocab] each, the first token's
    check["ok"], check["rel_err"], check["first_token_agreement"]

The tolerance: ``max |stoicc - dense| <= LOGITS_RTOL * max |dense|`` over the logits that choose
the first generated token, with ``LOGITS_RTOL = 1e-2``. Why that size: both models round every
linear's output to fp16 (half an ulp, 2^-12 relative), but their fp32 accumulations run in
different orders (tile-sparse kernels, split-K, another GEMM), so one output element may land one
ulp (2^-11, 4.9e-4) apart; those differences pass through every layer's norms and residuals and
compound. 1e-2 is about 20 ulps of the logit scale; the Llama-2-7B runs on the H200 (32 layers,
torch.compile) measured 3-4e-3, the tiny CPU models of the tests about 1e-3.

The first token: the greedy token of each sequence must be the dense model's, except where the
dense model itself cannot tell them apart within the tolerance. If stoicc's logits are within
``t = LOGITS_RTOL * max |dense|`` of the dense ones and stoicc picks token j where dense picks
i, then ``dense[i] - dense[j] <= 2 t``: a near-tie (random-weight models have many). So a
sequence agrees when the tokens are equal or the dense gap between them is at most ``2 t``;
``first_token_exact`` counts only equal tokens.
"""
import torch

__all__ = ["LOGITS_RTOL", "compare_logits"]

LOGITS_RTOL = 1e-2


def compare_logits(dense, sparse, rtol=LOGITS_RTOL):
    """Compare the first token's logits (``[batch, vocab]``, any float dtype) of the dense and the
    converted model. Returns a dict: ``max_err``, ``scale`` (max |dense|), ``rel_err``, ``rtol``,
    ``logits_ok``, ``first_token_exact`` and ``first_token_agreement`` (fractions of the
    sequences; the second allows the near-ties of the module docstring), ``ok`` (logits within
    the tolerance and every first token agreeing)."""
    d, s = dense.detach().float(), sparse.detach().float()
    if d.shape != s.shape or d.dim() != 2:
        raise ValueError(f"expected two [batch, vocab] logits of one shape, got {tuple(d.shape)} and {tuple(s.shape)}")
    scale = d.abs().max().item()
    err = (s - d).abs().max().item()
    tol = rtol * scale
    i, j = d.argmax(-1), s.argmax(-1)
    gap = d.gather(-1, i[:, None]) - d.gather(-1, j[:, None])          # >= 0: i is dense's best
    agree = (i == j) | (gap[:, 0] <= 2 * tol)
    logits_ok = err <= tol
    return dict(max_err=err, scale=scale, rel_err=err / scale if scale else 0.0, rtol=rtol, logits_ok=logits_ok,
                first_token_exact=(i == j).float().mean().item(), first_token_agreement=agree.float().mean().item(),
                ok=bool(logits_ok and agree.all().item()))
