"""The fp16 tolerance a converted model is held to (stoicc_ext.nn.agreement): the check itself,
and tiny pruned Hugging Face models converted on the CPU, against the same-structure dense model:
the first generated token of every sequence and the logits of the prompt and of a decode step."""
import copy

import pytest
import torch

import stoicc_ext as STOICC
from stoicc_ext.nn.agreement import LOGITS_RTOL, compare_logits
from stoicc_ext.nn.fusion import fuse_linears_

from conftest import needs_ext
from hf_models import tiny_model, token_ids


def test_compare_logits_tolerance_and_near_ties():
    d = torch.tensor([[4.0, 1.0, 0.0], [2.0, 1.99, -1.0]])
    assert compare_logits(d, d)["ok"] and compare_logits(d, d)["first_token_exact"] == 1.0
    tol = LOGITS_RTOL * 4.0
    s = d.clone()
    s[1, 1] += 0.02                    # a near-tie flips: gap 0.01 <= 2 tol, logits within tol
    c = compare_logits(d, s)
    assert c["ok"] and c["first_token_exact"] == 0.5 and c["first_token_agreement"] == 1.0
    assert c["max_err"] == pytest.approx(0.02) and c["rel_err"] == pytest.approx(0.005) and c["rtol"] == LOGITS_RTOL
    s = d.clone()
    s[0, 1] += 3.5                     # a real flip, and logits far outside
    c = compare_logits(d, s)
    assert not c["ok"] and not c["logits_ok"] and c["first_token_agreement"] == 0.5
    s = d + 2 * tol                    # every token kept, logits outside the tolerance
    assert not compare_logits(d, s)["ok"] and compare_logits(d, s)["first_token_exact"] == 1.0
    with pytest.raises(ValueError, match="batch, vocab"):
        compare_logits(d, d[0])


@needs_ext
@pytest.mark.usefixtures("fresh_tuning_cache")
@pytest.mark.parametrize("family,sparsity", [("llama", 0.45), ("qwen3", 0.25)])
def test_converted_model_agrees_with_dense_within_the_tolerance(family, sparsity):
    model = tiny_model(family)
    STOICC.prune_patch_oneshot_(model, sparsity)
    dense = copy.deepcopy(model)
    fuse_linears_(dense)                                      # the same-structure dense model
    STOICC.sparsify_(model, decode_tokens=8, prefill_tokens=64)
    ids = token_ids(batch=8, length=12)
    with torch.no_grad():
        out_d, out_s = dense(ids, use_cache=True), model(ids, use_cache=True)
        prompt = compare_logits(out_d.logits[:, -1], out_s.logits[:, -1])
        first = out_d.logits[:, -1].argmax(-1, keepdim=True)
        # one decode step (8 tokens: the decode kernels) on each model's own cache, fed the same token
        step_d = dense(first, past_key_values=out_d.past_key_values).logits[:, -1]
        step_s = model(first, past_key_values=out_s.past_key_values).logits[:, -1]
    step = compare_logits(step_d, step_s)
    assert prompt["ok"] and prompt["first_token_exact"] == 1.0, prompt      # every sequence's first token
    assert step["ok"], step
    assert prompt["rel_err"] < LOGITS_RTOL / 4 and step["rel_err"] < LOGITS_RTOL / 4     # margin on the CPU
    with torch.no_grad():      # transformers' greedy decoding: the first generated token of every sequence
        gen_d = dense.generate(ids, max_new_tokens=2, do_sample=False)
        gen_s = model.generate(ids, max_new_tokens=2, do_sample=False)
    assert torch.equal(gen_s[:, ids.shape[1]], gen_d[:, ids.shape[1]])
