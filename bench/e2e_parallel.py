"""bench/e2e, tensor parallelism (``--tp N`` under ``torchrun --nproc-per-node N``): the process
group, and the model split right after pruning, so that the dense baseline and stoicc run with the
same parallelism and every byte count is per GPU.

Every rank builds the same seeded model and prunes it the same way (the pruner is deterministic),
then ``stoicc_ext.parallel.shard_model_`` splits q/k/v/gate/up (colwise), o/down (rowwise) and
lm_head (colwise, gathered) as dense slices; ``sparsify_`` later converts each rank's slices,
tuned at their shape. Each rank builds the whole model first, so the model must fit one GPU dense
(the 7B does; a 70 B-class model needs the slices materialized per rank, which this does not do).
"""
import os

import torch
import torch.distributed as dist

from stoicc_ext.parallel import shard_model_


def start(args):
    """Join the process group that torchrun set up (NCCL on GPUs, gloo on the CPU) and pin this
    rank's GPU; returns the rank. ``args.device`` becomes the rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != args.tp:
        raise SystemExit(f"--tp {args.tp} needs {args.tp} processes: torchrun --nproc-per-node {args.tp} "
                         f"bench/e2e.py --tp {args.tp} ... (WORLD_SIZE is {world})")
    cuda = args.device.type == "cuda"
    if cuda:
        args.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(args.device)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=args.device if cuda else None)
    return dist.get_rank()


def split(model, tp):
    """Split the model over the ranks; the config then describes one rank's attention (its heads),
    which is what the static KV cache is allocated from."""
    shard_model_(model)
    cfg = model.config
    cfg.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for k in ("num_attention_heads", "num_key_value_heads"):
        if getattr(cfg, k) % tp:
            raise SystemExit(f"--tp {tp}: {k} = {getattr(cfg, k)} does not split over {tp} ranks")
        setattr(cfg, k, getattr(cfg, k) // tp)
