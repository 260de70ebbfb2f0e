"""The weight shapes the benchmarks time, in one table: each row names the model and the
projection it comes from, so that a result row can be traced to a layer of a real model.

``N`` is the output features and ``K`` the input features of ``F.linear(x, W)`` with ``W`` of
shape ``[N, K]``; both must be multiples of 128 (the PATCH tile). Groups:

- ``llama``: the kernel table's eight shapes, Llama-2-7B's projections (q/k/v/o, gate/up, down,
  and the fused qkv and gate+up widths) and Llama-2-70B's largest ones.
- ``small``: projections of public 0.5-3 B models (hidden sizes 896 to 2048), read from their
  published ``config.json`` (hidden_size, intermediate_size, num_attention_heads,
  num_key_value_heads, head_dim); every one is a multiple of 128 (896 = 7 x 128, 4864 = 38 x 128,
  8960 = 70 x 128, 11008 = 86 x 128). Not every small model fits the tile: SmolLM2-360M (hidden
  960 = 7.5 x 128) and SmolLM2-135M (hidden 576 = 4.5 x 128) do not, so they are not here. The
  k/v projections of these GQA models (128 to 512 output features) are left out of the default
  group: at 0.1-2 MB they are launch-bound for any kernel; ``small_kv`` has them.
- ``gemma``: Gemma-2-2B (hidden 2304 = 18 x 128, past the 2048 of the small-model range).

Select with ``--shapes`` in the benchmarks: group names and explicit ``NxK`` entries, comma
separated (``--shapes llama,small``, ``--shapes small,4096x4096``).
"""
from collections import namedtuple

Shape = namedtuple("Shape", "n k model proj group")

TILE = 128

_TABLE = [
    # group llama: Llama-2-7B (hidden 4096, intermediate 11008, 32 heads x 128) and Llama-2-70B
    # (hidden 8192, intermediate 28672)
    ("llama", "Llama-2-7B", "q/k/v/o", 4096, 4096),
    ("llama", "Llama-2-7B", "gate/up", 11008, 4096),
    ("llama", "Llama-2-7B", "down", 4096, 11008),
    ("llama", "Llama-2-7B", "qkv fused", 12288, 4096),
    ("llama", "Llama-2-7B", "gate+up fused", 22016, 4096),
    ("llama", "Llama-2-70B", "q/o", 8192, 8192),
    ("llama", "Llama-2-70B", "gate/up", 28672, 8192),
    ("llama", "Llama-2-70B", "down", 8192, 28672),
    # group small. Qwen2.5-0.5B: hidden 896, intermediate 4864, 14 heads / 2 kv heads x 64
    ("small", "Qwen2.5-0.5B", "q/o", 896, 896),
    ("small", "Qwen2.5-0.5B", "gate/up", 4864, 896),
    ("small", "Qwen2.5-0.5B", "down", 896, 4864),
    # Qwen2.5-1.5B: hidden 1536, intermediate 8960, 12 heads / 2 kv heads x 128
    ("small", "Qwen2.5-1.5B", "q/o", 1536, 1536),
    ("small", "Qwen2.5-1.5B", "gate/up", 8960, 1536),
    ("small", "Qwen2.5-1.5B", "down", 1536, 8960),
    # Llama-3.2-1B: hidden 2048, intermediate 8192, 32 heads / 8 kv heads x 64; SmolLM2-1.7B has
    # the same hidden and intermediate sizes (32 heads / 32 kv heads x 64), so the same shapes
    ("small", "Llama-3.2-1B, SmolLM2-1.7B, Qwen2.5-3B", "q/o", 2048, 2048),
    ("small", "Llama-3.2-1B, SmolLM2-1.7B", "gate/up", 8192, 2048),
    ("small", "Llama-3.2-1B, SmolLM2-1.7B", "down", 2048, 8192),
    # Qwen2.5-3B: hidden 2048, intermediate 11008, 16 heads / 2 kv heads x 128
    ("small", "Qwen2.5-3B", "gate/up", 11008, 2048),
    ("small", "Qwen2.5-3B", "down", 2048, 11008),
    # group small_kv: the GQA k/v projections (2 or 8 kv heads)
    ("small_kv", "Qwen2.5-0.5B", "k/v", 128, 896),
    ("small_kv", "Qwen2.5-1.5B", "k/v", 256, 1536),
    ("small_kv", "Llama-3.2-1B", "k/v", 512, 2048),
    ("small_kv", "Qwen2.5-3B", "k/v", 256, 2048),
    # group gemma. Gemma-2-2B: hidden 2304, intermediate 9216, 8 heads / 4 kv heads x 256
    ("gemma", "Gemma-2-2B", "q", 2048, 2304),
    ("gemma", "Gemma-2-2B", "o", 2304, 2048),
    ("gemma", "Gemma-2-2B", "gate/up", 9216, 2304),
    ("gemma", "Gemma-2-2B", "down", 2304, 9216),
]

SHAPES = [Shape(n, k, model, proj, group) for group, model, proj, n, k in _TABLE]
GROUPS = {}
for _s in SHAPES:
    GROUPS.setdefault(_s.group, []).append(_s)
DEFAULT_GROUPS = ("llama", "small")


def check_tiles(shapes=SHAPES, tile=TILE):
    """The shapes whose N or K is not a multiple of ``tile``, as ``"model proj NxK"`` strings
    (empty for the table above: a test holds it to that)."""
    return [f"{s.model} {s.proj} {s.n}x{s.k}" for s in shapes if s.n % tile or s.k % tile]


def lookup(n, k):
    """The first table row of shape ``n x k``, or an unnamed ``Shape`` (group ``custom``)."""
    for s in SHAPES:
        if (s.n, s.k) == (n, k):
            return s
    return Shape(n, k, "", "", "custom")


def select(spec=None):
    """Shapes named by ``spec``: a comma list of group names and ``NxK`` entries (None or empty:
    the default groups), in the order given, duplicates dropped. Raises ``ValueError`` on an
    unknown group, a malformed entry or a shape that is not a multiple of the tile."""
    items = [v.strip() for v in (spec or ",".join(DEFAULT_GROUPS)).split(",") if v.strip()]
    out, seen = [], set()
    for item in items:
        if item in GROUPS:
            rows = GROUPS[item]
        elif "x" in item:
            try:
                n, k = (int(v) for v in item.lower().split("x"))
            except ValueError:
                raise ValueError(f"shape {item!r}: expected NxK, e.g. 4096x4096") from None
            rows = [lookup(n, k)]
        else:
            raise ValueError(f"unknown shape group {item!r} (groups: {', '.join(GROUPS)}; or NxK)")
        for s in rows:
            if (s.n, s.k) not in seen:
                seen.add((s.n, s.k))
                out.append(s)
    bad = check_tiles(out)
    if bad:
        raise ValueError(f"not multiples of {TILE}: {', '.join(bad)}")
    return out
