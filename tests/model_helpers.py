"""A tiny decoder-shaped model built from nn.Linear layers with Hugging Face Llama names
(``model.layers.<i>.self_attn.q_proj`` ...), for the MixedModule / sparsify_ / mask / checkpoint
tests. Its forward is not attention, only a fixed composition of every linear."""
import torch
from torch import nn

from stoicc_ext.testing import random_patch_weight


class Attn(nn.Module):
    def __init__(self, h, bias_v=True):
        super().__init__()
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = nn.Linear(h, h, bias=False)
        self.v_proj = nn.Linear(h, h, bias=bias_v)
        self.o_proj = nn.Linear(h, h, bias=False)


class MLP(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)


class Layer(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.self_attn = Attn(h)
        self.mlp = MLP(h, i)


class Inner(nn.Module):
    def __init__(self, h, i, n_layers, vocab):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, h)
        self.layers = nn.ModuleList([Layer(h, i) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(h)


class TinyLM(nn.Module):
    """hidden 256, intermediate 384 (shapes 256x256, 384x256, 256x384), ``lm_head`` 128 x 256
    (vocab 128) and an ``extra`` 200 x 256 linear the kernels cannot take."""

    def __init__(self, h=256, i=384, n_layers=2, vocab=128, tie=False):
        super().__init__()
        self.model = Inner(h, i, n_layers, vocab)
        self.lm_head = nn.Linear(h, vocab, bias=False)
        self.extra = nn.Linear(h, 200, bias=True)
        if tie:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, x):
        """x: [..., h] hidden states (no embedding lookup, so tests feed any token count)."""
        for layer in self.model.layers:
            a, m = layer.self_attn, layer.mlp
            x = x + a.o_proj(torch.tanh(a.q_proj(x) + a.k_proj(x) + a.v_proj(x)))
            x = x + m.down_proj(torch.tanh(m.gate_proj(x)) * m.up_proj(x))
        x = self.model.norm(x)
        return self.lm_head(x), self.extra(x)


def patch_model(seed=0, dtype=torch.float16, device="cpu", frac=0.6, dense_layer=None, **kw):
    """TinyLM with every linear in ``.layers.`` a synthetic PATCH weight (fraction ``frac`` of the
    128x128 tiles 2:4, one tile in ten empty) scaled to keep activations O(1); ``dense_layer``
    (a module name) gets a fully dense weight instead."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = TinyLM(**kw)
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, nn.Linear) and ".layers." in name:
                N, K = mod.weight.shape
                f = 0.0 if name == dense_layer else frac
                e = 0.0 if name == dense_layer else 0.1
                W, _ = random_patch_weight(N, K, f, e, dtype=torch.float32, generator=g)
                mod.weight.copy_(W / K ** 0.5)
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                mod.bias.uniform_(-0.1, 0.1)
    return m.to(dtype=dtype, device=device).eval().requires_grad_(False)


def hidden(n_tokens, h=256, dtype=torch.float16, device="cpu", seed=1, batch=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n_tokens, h) if batch is None else (batch, n_tokens, h)
    return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)


LAYER_LINEARS = 14          # TinyLM(): 2 layers x (q, k, v, o, gate, up, down)


def close(a, b, atol=3e-2):
    return torch.allclose(a.float(), b.float(), atol=atol, rtol=0)


def outputs(model, *xs):
    return [o for x in xs for o in model(x)]
