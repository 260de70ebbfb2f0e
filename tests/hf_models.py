"""Tiny Hugging Face decoders of the families whose projections sparsify_ fuses (Llama, Mistral,
Qwen2, Qwen3, Gemma), built from configs with random weights (nothing downloaded): hidden 256,
4 query heads and 2 key/value heads of 64 (q 256, k and v 128 rows), intermediate 384, vocab 128;
and the damaged fused entries of a checkpoint of the 1-layer Llama that the loaders must refuse."""
import json

import pytest
import torch

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma")
SIZES = dict(hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64, vocab_size=128, max_position_embeddings=64)


def tiny_model(family="llama", seed=0, dtype=torch.float16, layers=2):
    """The family's ForCausalLM, eval mode, no grad, weights seeded."""
    tf = pytest.importorskip("transformers", minversion="5")
    cfg_cls, model_cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
                          "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
                          "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
                          "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
                          "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM)}[family]
    cfg = cfg_cls(**dict(SIZES, num_hidden_layers=layers), tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = model_cls(cfg).to(dtype).eval().requires_grad_(False)
    with torch.no_grad():        # random norms' weights (not all ones): a wrong view would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def token_ids(batch=2, length=7, seed=1):
    return torch.randint(0, SIZES["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))


# ---- damaged fused entries of a 1-layer tiny Llama converted by sparsify_ (fused q/k/v) -----

QKV = "model.layers.0.self_attn.qkv_proj"


def damage_fused(meta, how):
    """A copy of ``meta`` whose first fused entry (q/k/v of layer 0) is damaged ``how``."""
    meta = json.loads(json.dumps(meta))
    entry = meta["fused"][0]
    if how == "sizes":                 # v has 128 rows, not 64
        entry["sizes"] = [256, 128, 64]
    elif how == "in_features":
        entry["in_features"] = 512
    elif how == "bias":
        entry["bias"] = True
    elif how == "layer_N":             # the members are right, the fused layer is not their sum
        meta["layers"][QKV]["N"] = meta["layers"][QKV]["weight"]["N"] = 640
    elif how == "no_layer":            # neither a compressed layer nor a dense weight in the file
        del meta["layers"][QKV]
    elif how == "member_saved_too":
        meta["layers"]["model.layers.0.self_attn.k_proj"] = meta["layers"][QKV]
    elif how == "parent":
        entry["parent"] = "model.layers.5.self_attn"
    elif how == "members":
        entry["members"] = ["q_proj", "k_proj"]
    elif how == "lacks_sizes":
        del entry["sizes"]
    elif how == "size_not_int":
        entry["sizes"] = ["256x", 128, 128]
    elif how == "twice":
        meta["fused"].append(entry)
    elif how == "not_a_list":
        meta["fused"] = entry
    return meta


FUSED_DAMAGE = {
    "sizes": rf"fused layer '{QKV}': the model's model.layers.0.self_attn.v_proj is 128x256 \(bias=False\), the "
             r"checkpoint fused a 64x256 linear",
    "in_features": rf"fused layer '{QKV}': the model's model.layers.0.self_attn.q_proj is 256x256 .* fused a "
                   r"256x512 linear",
    "bias": rf"fused layer '{QKV}': the model's model.layers.0.self_attn.q_proj is 256x256 \(bias=False\), the "
            r"checkpoint fused a 256x256 linear \(bias=True\)",
    "layer_N": rf"fused layer '{QKV}': its members \['q_proj', 'k_proj', 'v_proj'\] of \[256, 128, 128\] outputs "
               r"and 256 inputs make 512x256, but the file's layer is 640x256",
    "no_layer": rf"fused layer '{QKV}': the file holds neither a compressed layer nor a weight of that name",
    "member_saved_too": rf"fused layer '{QKV}': its members \['model.layers.0.self_attn.k_proj'\] are saved as "
                        r"layers of their own too",
    "parent": r"fused layer 'model.layers.5.self_attn.qkv_proj': its parent 'model.layers.5.self_attn' is not a "
              r"module of the model",
    "members": r"fused entry 0: members \['q_proj', 'k_proj'\] of 'model.layers.0.self_attn' are not a group that "
               r"stoicc fuses",
    "lacks_sizes": r"fused entry 0 lacks \['sizes'\]",
    "size_not_int": rf"fused layer '{QKV}': sizes must be an integer, got '256x'",
    "twice": rf"fused layer '{QKV}' is listed twice",
    "not_a_list": r"'fused' is a dict, not a list of groups",
}
