"""bench/e2e, model building: the Llama architectures and run presets, the Hugging Face model
as it ships (random weights, no download), the dense baseline of the same structure as the
converted model, and byte counts of weights and linears."""
import copy
import sys

import torch

import stoicc_ext as STOICC
from stoicc_ext.nn.fusion import fuse_linears_
from stoicc_ext.nn.storage import tied_aliases

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
# Llama-2-70B's layer shapes (grouped-query attention: 8 KV heads); the preset runs 8 of its 80 layers,
# which fit one GPU dense, so that each rank can build the model before splitting it (--tp).
LLAMA2_70B = dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
TINY = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5)
# Run sizes: the reference set-up (7b), the same architecture with fewer layers (small: what the
# README's main command runs on any GPU), and a tiny model for a CPU dry run of the pipeline.
PRESETS = {
    "7b": dict(arch=LLAMA2_7B, layers=32, batch=16, prompt=128, new_tokens=128),
    "small": dict(arch=LLAMA2_7B, layers=4, batch=16, prompt=128, new_tokens=128),
    "70b": dict(arch=LLAMA2_70B, layers=8, batch=16, prompt=128, new_tokens=128),
    "tiny": dict(arch=TINY, layers=2, batch=2, prompt=16, new_tokens=8),
}
DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
LAYER_FILTER = ".layers."      # PATCH's release masks these; lm_head and embeddings stay dense


# --------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------

def require_transformers():
    """The transformers module (>= 5), or a clear error."""
    try:
        import transformers
    except ImportError:
        sys.exit("bench/e2e needs Hugging Face transformers >= 5 (pip install 'transformers>=5'); "
                 "it builds LlamaForCausalLM from a LlamaConfig (random weights, nothing is downloaded)")
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        sys.exit(f"bench/e2e needs transformers >= 5 (its StaticCache keeps the write position on the device, "
                 f"which the CUDA-graph loop relies on); found {transformers.__version__}")
    return transformers


def build_model(tf, arch, layers, dtype, device, seed):
    """LlamaForCausalLM with random weights (seeded: the same weights on every call), eval mode."""
    cfg = tf.LlamaConfig(**dict(arch, num_hidden_layers=layers), attn_implementation="sdpa",
                         tie_word_embeddings=False, use_cache=True)
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)       # parameters are created in `dtype` directly (no fp32 copy)
    try:
        with torch.device(device):
            model = tf.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.config._attn_implementation = "sdpa"
    return model.eval().requires_grad_(False)


def weight_bytes(model):
    """Bytes of the model's state (parameters and persistent buffers), shared storage counted once."""
    state = model.state_dict()
    aliases = tied_aliases(state)          # what a checkpoint stores once
    return sum(t.numel() * t.element_size() for k, t in state.items() if k not in aliases)


# --------------------------------------------------------------------------------------
# Greedy generation with a static cache, prefill and decode steps as CUDA graphs
# --------------------------------------------------------------------------------------


def same_structure_dense(model):
    """The dense baseline the converted model is held against: a copy of the dense model with the
    module structure ``stoicc_ext.sparsify_`` gives it, its sibling projections (q/k/v, gate/up)
    fused the same way (``stoicc_ext.nn.fusion.fuse_linears_``: one ``nn.Linear`` per group, one
    cuBLAS call, the members' outputs its views). ``e2e.run_sparsity`` times it as a second dense
    model and reports the speedup against it, with the speedup against the model as it ships
    beside it. The model given is left as it is."""
    base = copy.deepcopy(model)
    fuse_linears_(base)
    return base


def linear_bytes(model, layer_filter=None):
    """{"dense": bytes of the ``nn.Linear`` weights (and biases), "stoicc": bytes of the
    ``MixedModule``s (their compressed weights and biases)}, over the modules whose name contains
    ``layer_filter`` (None: all, lm_head included): what one decode step reads for its linears."""
    out = dict(dense=0, stoicc=0)
    for name, mod in model.named_modules():
        if layer_filter is not None and layer_filter not in name:
            continue
        if isinstance(mod, torch.nn.Linear):
            out["dense"] += weight_bytes(mod)
        elif isinstance(mod, STOICC.MixedModule):
            out["stoicc"] += weight_bytes(mod)
    return out
