"""Tiny Hugging Face decoders of the families whose projections sparsify_ fuses (Llama, Mistral,
Qwen2, Qwen3, Gemma), built from configs with random weights (nothing downloaded): hidden 256,
4 query heads and 2 key/value heads of 64 (q 256, k and v 128 rows), intermediate 384, vocab 128."""
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
