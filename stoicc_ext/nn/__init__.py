"""Models on stoicc kernels: ``MixedModule`` (one compressed linear, a decode and a prefill
executor), ``sparsify_`` (swap a model's pruned linears in place) and checkpoints of converted
models."""
from .checkpoint import load_compressed, save_compressed
from .mixed_module import MixedModule
from .pretrained import save_pretrained
from .sparsify import sparsify_
from .sparsify_report import SparsifyReport

__all__ = ["MixedModule", "sparsify_", "SparsifyReport", "save_compressed", "load_compressed", "save_pretrained"]
