"""Tensor parallelism on ``torch.distributed``: compressed weights sharded along tile rows
(colwise) or tile columns (rowwise) without densifying, ``TensorParallelLinear`` (the rank's
``MixedModule`` plus one functional collective), transformers' TP plans (``shard_model_``, and
``sparsify_tp_`` for ``from_pretrained(tp_plan="auto")``), and checkpoints loaded onto any number
of ranks (``load_compressed_tp``). See docs/parallel.md."""
from .convert import parallel_from_compressed, parallel_from_module, tune_shard
from .hf import localize_hf_tp_, sparsify_tp_
from .load import load_compressed_tp
from .module import COLWISE, ROWWISE, TensorParallelLinear
from .plan import LLAMA_TP_PLAN, STYLES, shard_model_, style_of
from .shard import concat_cols, concat_rows, shard_cols, shard_row_groups, shard_rows, shard_weight

__all__ = [
    "shard_rows", "shard_row_groups", "shard_cols", "shard_weight", "concat_rows", "concat_cols",
    "TensorParallelLinear", "COLWISE", "ROWWISE", "tune_shard", "parallel_from_compressed", "parallel_from_module",
    "LLAMA_TP_PLAN", "STYLES", "style_of", "shard_model_", "load_compressed_tp",
    "localize_hf_tp_", "sparsify_tp_",
]
