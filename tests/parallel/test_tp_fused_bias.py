"""Fused projections with a bias under tensor parallelism: Qwen2's q/k/v carry biases, so the
fused qkv_proj's bias must be split member by member like its rows (each rank keeps its heads'
slice of q's, k's and v's bias). A 1-layer Qwen2 converted by sparsify_ (q/k/v and gate/up
fused), loaded split from its checkpoint and sharded whole on 2 gloo ranks, against the
single-process converted model."""
import pytest
import torch

import stoicc_ext as STOICC
from stoicc_ext.nn.fusion import fusion_groups
from test_tp_gloo import ATOL, load_ranks, max_err
from tp_workers import hf_fused_ranks, save_tiny_hf_lm, spawn


def test_qwen2_fused_qkv_bias_split_member_by_member(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "qwen2"
    ids = save_tiny_hf_lm("Qwen2", path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float16, attn_implementation="eager")
    STOICC.sparsify_(ref, decode_tokens=8, prefill_tokens=64, verbose=False)
    qkv = [grp for grp in fusion_groups(ref) if grp.members == ("q_proj", "k_proj", "v_proj")]
    assert qkv and qkv[0].bias, fusion_groups(ref)       # the biased q/k/v were fused
    STOICC.save_compressed(ref, tmp_path / "fused.safetensors")
    with torch.no_grad():
        want = ref(ids).logits

    out = tmp_path / "ranks"
    out.mkdir()
    spawn(2, hf_fused_ranks, str(path), str(tmp_path / "fused.safetensors"), ids, str(out))
    for what in ("fused_load", "fused_shard"):
        ranks = load_ranks(out, what, 2)
        assert torch.equal(ranks[0][0], ranks[1][0])
        err = max_err(ranks[0], [want])
        assert err <= ATOL, f"{what}: max |err| {err} of logits (max |logit| {want.abs().max().item():.3g})"
