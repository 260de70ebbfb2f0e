"""Running a function on N gloo ranks (torch.multiprocessing spawn) and the per-rank bodies of the
tensor-parallel tests. The bodies live here, in an importable module, because spawned processes
import the function they run by its module's name."""
import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import stoicc_ext as STOICC
from stoicc_ext.parallel import TensorParallelLinear, load_compressed_tp, shard_model_, sparsify_tp_

GLOO = dist.is_available() and dist.is_gloo_available()
H, I, VOCAB = 512, 1024, 128      # every split side is 4 or 8 tiles of 128: worlds 1, 2 and 4 divide it


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, target, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)            # the ranks share the machine's cores
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        target(rank, world, *args)
        # Both ranks reach the teardown together. Once in CI (2 loaded cores) a rank aborted in
        # gloo ("terminate called without an active exception") after its peer had finished;
        # destroying a group while the peer may still use it is what a barrier here rules out.
        # A rank that raised skips it, and spawn then stops the others.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(world, target, *args):
    """``target(rank, world, *args)`` on ``world`` gloo ranks; a rank's exception fails the call."""
    mp.spawn(_entry, args=(world, _free_port(), target, args), nprocs=world, join=True)


def _save(out_dir, rank, what, tensors):
    torch.save([t.detach() for t in tensors], os.path.join(out_dir, f"{what}.rank{rank}.pt"))


def tiny_lm_ranks(rank, world, ckpt, xs, out_dir, paths):
    """One converted TinyLM, by the ``paths`` asked for: ``load_tp``, the checkpoint loaded split
    (``load_compressed_tp``: each rank reads its shards); ``shard_model``, the checkpoint loaded
    whole then split (``shard_model_`` on MixedModules); ``dense_then_sparsify``, the dense pruned
    model split then converted (``shard_model_`` then ``sparsify_``, the slices tuned at their shape);
    ``compile``, the loaded split model under ``torch.compile(fullgraph=True)``; ``deepcopy``, a
    copy of it; ``errors``, what ``shard_model_`` refuses."""
    from model_helpers import TinyLM, outputs, patch_model

    def skeleton():
        with torch.device("meta"):
            return TinyLM(h=H, i=I, vocab=VOCAB).to(torch.float16)

    if {"load_tp", "compile", "deepcopy"} & set(paths):
        loaded = load_compressed_tp(skeleton, ckpt)
        assert sum(isinstance(m, TensorParallelLinear) for m in loaded.modules()) == 15   # 2 x 7 linears, lm_head
        q, down = loaded.model.layers[0].self_attn.q_proj, loaded.model.layers[0].mlp.down_proj
        assert (q.local.N, q.local.K, q.out_features) == (H // world, H, H)              # the rank's shape
        assert (down.local.N, down.local.K, down.in_features) == (H, I // world, I)
        if "load_tp" in paths:
            _save(out_dir, rank, "load_tp", outputs(loaded, *xs))
            # a split model holds shards: saving it as a checkpoint of whole layers is refused, and
            # an existing file is left as it was
            target = os.path.join(out_dir, f"split_{rank}.safetensors")
            with open(target, "wb") as f:
                f.write(b"old")
            with pytest.raises(ValueError, match=r"save_compressed: model.layers.0.self_attn.q_proj is split over ranks"):
                STOICC.save_compressed(loaded, target)
            with open(target, "rb") as f:
                assert f.read() == b"old"
            from stoicc_ext.nn.pretrained import model_metadata
            with pytest.raises(ValueError, match=r"save_pretrained: .* is split over ranks"):
                model_metadata(loaded)
    if "deepcopy" in paths:     # a split model copies (the group is held by name)
        _save(out_dir, rank, "deepcopy", outputs(copy.deepcopy(loaded), *xs))
    if "compile" in paths:      # the functional collectives trace into one graph with the stoicc op
        compiled = torch.compile(loaded, backend="eager", fullgraph=True)
        _save(out_dir, rank, "compile", outputs(compiled, *xs))
    if "shard_model" in paths:
        whole = STOICC.load_compressed(skeleton, ckpt)
        assert len(shard_model_(whole)) == 15
        _save(out_dir, rank, "shard_model", outputs(whole, *xs))
    if "errors" in paths:       # a planned module that is neither a MixedModule nor an nn.Linear
        odd = TinyLM(h=H, i=I, vocab=VOCAB)
        odd.model.layers[1].self_attn.k_proj = torch.nn.Identity()
        with pytest.raises(TypeError, match=r"layers.1.self_attn.k_proj is a Identity; .* nn.Linear layers only"):
            shard_model_(odd)
    if "dense_then_sparsify" in paths:
        dense = patch_model(h=H, i=I, vocab=VOCAB)
        shard_model_(dense)
        report = STOICC.sparsify_(dense, decode_tokens=8, prefill_tokens=64, verbose=False)
        assert len(report.converted) == 14, report
        _save(out_dir, rank, "dense_then_sparsify", outputs(dense, *xs))


def save_tiny_hf_lm(family, path):
    """A 1-layer Hugging Face causal LM of ``family`` ("Llama", "Qwen2": hidden H, 8 heads of 64,
    intermediate I, vocab 512) whose layer linears are synthetic PATCH weights (biases, where the
    architecture has them, standard normal: large enough that a misplaced slice shows in the
    logits), saved with save_pretrained in float16 at ``path``. Returns token ids for it."""
    import transformers
    from stoicc_ext.testing import random_patch_weight

    torch.manual_seed(0)
    cfg = getattr(transformers, f"{family}Config")(
        hidden_size=H, intermediate_size=I, num_hidden_layers=1, num_attention_heads=8, num_key_value_heads=8,
        vocab_size=512, tie_word_embeddings=False, max_position_embeddings=128)
    model = getattr(transformers, f"{family}ForCausalLM")(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".layers." in name:
                N, K = mod.weight.shape
                W, _ = random_patch_weight(N, K, 0.6, 0.1, dtype=torch.float32, generator=g)
                mod.weight.copy_(W / K ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(N, generator=g))
    model.half().save_pretrained(path)
    return torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(5))


def hf_llama_ranks(rank, world, model_dir, ids, out_dir):
    """transformers' own tensor parallelism: ``from_pretrained(tp_plan="auto")`` then stoicc."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, tp_plan="auto", dtype=torch.float16,
                                                 attn_implementation="eager")
    report = sparsify_tp_(model, decode_tokens=8, prefill_tokens=64, verbose=False)
    assert len(report.converted) == 7, report                # q, k, v, o, gate, up, down
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q, TensorParallelLinear) and isinstance(q.local, STOICC.MixedModule)
    assert q.local.N == q.out_features // world
    with torch.no_grad():
        _save(out_dir, rank, "hf", [model(ids).logits])


def hf_fused_ranks(rank, world, model_dir, ckpt, ids, out_dir):
    """A model converted with fused projections (qkv_proj, gate_up_proj), split member by member:
    its checkpoint loaded split, and the model loaded whole then ``shard_model_``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)

    def skeleton():
        return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").half().eval()

    loaded = load_compressed_tp(skeleton, ckpt)
    attn = loaded.model.layers[0].self_attn
    assert isinstance(attn.qkv_proj, TensorParallelLinear) and attn.qkv_proj.local.N == 3 * H // world
    assert (attn.k_proj.start, attn.k_proj.stop) == (H // world, 2 * H // world)    # the rank's k heads
    whole = STOICC.load_compressed(skeleton(), ckpt)
    assert set(shard_model_(whole)) >= {"model.layers.0.self_attn.qkv_proj", "model.layers.0.mlp.gate_up_proj"}
    with torch.no_grad():
        _save(out_dir, rank, "fused_load", [loaded(ids).logits])
        _save(out_dir, rank, "fused_shard", [whole(ids).logits])


def tied_lm_head_ranks(rank, world):
    """A TinyLM whose lm_head is tied to its embedding (a PATCH weight, vocab 256: a 128-row shard
    on each of 2 ranks), split as ``from_pretrained(tp_plan="auto")`` leaves a tied Llama: every
    planned weight a sharded DTensor, the embedding's (``embedding_rowwise``, Shard(0)) the very
    parameter of the lm_head. ``sparsify_tp_`` keeps the lm_head dense, as ``sparsify_`` does on one
    process (status ``shared``), and converts the layer linears."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    from model_helpers import LAYER_LINEARS, patch_model
    from stoicc_ext.nn.sparsify import _owners
    from stoicc_ext.parallel.plan import LLAMA_TP_PLAN, style_of
    from stoicc_ext.testing import random_patch_weight

    model = patch_model(h=H, i=I, vocab=2 * VOCAB, tie=True)
    W, _ = random_patch_weight(2 * VOCAB, H, 0.6, 0.1, dtype=torch.float16, generator=torch.Generator().manual_seed(7))
    mesh = init_device_mesh("cpu", (world,))
    plan = {**LLAMA_TP_PLAN, "model.embed_tokens": "embedding_rowwise"}
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(W)
        for name, mod in list(model.named_modules()):
            style = style_of(name, plan)
            if style is not None and name != "lm_head":       # the lm_head's weight is the embedding's
                dim = 1 if style.startswith("rowwise") else 0
                mod.weight = torch.nn.Parameter(distribute_tensor(mod.weight, mesh, [Shard(dim)]), requires_grad=False)
                if getattr(mod, "bias", None) is not None and dim == 0:     # v_proj's: split with its rows
                    mod.bias = torch.nn.Parameter(distribute_tensor(mod.bias, mesh, [Shard(0)]), requires_grad=False)
    model.lm_head.weight = model.model.embed_tokens.weight
    assert isinstance(model.lm_head.weight, DTensor)
    tied = [names for names in _owners(model).values() if "lm_head.weight" in names]
    assert tied == [["model.embed_tokens.weight", "lm_head.weight"]], tied
    report = sparsify_tp_(model, plan, decode_tokens=8, prefill_tokens=64, verbose=False)
    row = report["lm_head.local"]
    assert row.status == "shared" and "model.embed_tokens.weight" in row.reason, report
    assert type(model.lm_head.local) is torch.nn.Linear
    assert model.lm_head.local.weight.data_ptr() == model.model.embed_tokens.weight.to_local().data_ptr()
    assert len(report.converted) == LAYER_LINEARS, report


def dtensor_metadata_ranks(rank, world):
    """``model_metadata`` (what ``save_pretrained`` writes, and what transformers' ``save_pretrained``
    of a model split by ``tp_plan`` asks the quantizer for before it gathers the shards) of a
    converted TinyLM whose embedding and lm_head weights are DTensors, as ``tp_plan`` leaves them:
    a tied pair is one alias, two untied DTensors of one shape are not aliases of each other."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from model_helpers import LAYER_LINEARS, patch_model
    from stoicc_ext.nn.pretrained import model_metadata

    mesh = init_device_mesh("cpu", (world,))
    for tie in (True, False):
        model = patch_model(h=H, i=I, vocab=2 * VOCAB, tie=tie)
        STOICC.sparsify_(model, decode_tokens=8, prefill_tokens=64, verbose=False)
        for mod in (model.model.embed_tokens, model.lm_head):
            mod.weight = torch.nn.Parameter(distribute_tensor(mod.weight.detach(), mesh, [Shard(0)]),
                                            requires_grad=False)
        if tie:
            model.lm_head.weight = model.model.embed_tokens.weight
        meta = model_metadata(model)
        assert len(meta["layers"]) == LAYER_LINEARS, sorted(meta["layers"])
        assert meta["aliases"] == ({"lm_head.weight": "model.embed_tokens.weight"} if tie else {}), meta["aliases"]


def tiny_skeleton(kind=None):
    """The TinyLM skeleton of ``tiny_lm_ranks`` on the meta device, or one that a checkpoint of it
    does not fit (``kind``): ``narrow`` (intermediate 512), ``identity`` (a layer that is not a
    linear), ``meta_buffer`` (a non-persistent buffer left on meta), ``bigger`` (a module the file
    lacks)."""
    from model_helpers import TinyLM

    with torch.device("meta"):
        model = TinyLM(h=H, i=512 if kind == "narrow" else I, vocab=VOCAB).to(torch.float16)
        if kind == "bigger":
            model.more = torch.nn.Linear(4, 4)
    if kind == "identity":
        model.model.layers[1].mlp.up_proj = torch.nn.Identity()
    if kind == "meta_buffer":
        model.register_buffer("rope", torch.ones(2, device="meta"), persistent=False)
    return model


def llama_skeleton(model_dir):
    """The unfused skeleton of the tiny Llama saved in ``model_dir`` (real weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir),
                                            attn_implementation="eager").half().eval()


def refusal_ranks(rank, world, cases):
    """Each ``(what, skeleton factory, damaged checkpoint)`` of ``cases`` is refused by
    ``load_compressed_tp`` on every rank with the error ``load_compressed`` gives: same type, same
    message, which names the file. Every case is run, and the failure lists all that differ."""
    wrong = []
    for what, skeleton, path in cases:
        whole, split = _error_of(STOICC.load_compressed, skeleton, path), _error_of(load_compressed_tp, skeleton, path)
        if split != whole or path not in whole:
            wrong.append(f"{what}: load_compressed: {whole}\n    load_compressed_tp: {split}")
    assert not wrong, f"rank {rank}:\n" + "\n".join(wrong)


def _error_of(load, skeleton, path):
    """``"<type>: <message>"`` of what ``load(skeleton, path)`` raises, ``"loaded"`` if it does not."""
    try:
        load(skeleton, path)
    except Exception as e:  # noqa: BLE001 - the kind of error is part of what is compared
        return f"{type(e).__name__}: {e}"
    return "loaded"
