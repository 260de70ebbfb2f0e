"""bench/e2e.py on the CPU: the dry run, the profile accounting, the compiled forward."""
import json

import pytest
import torch

from conftest import load_bench, needs_ext

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def test_e2e_cpu_dry_run(tmp_path):
    pytest.importorskip("transformers", minversion="5")
    e2e = _load_e2e()
    # the README's main command without a GPU: the tiny preset by default
    res = e2e.main(["--device", "cpu", "--layers", "1", "--sparsities", "0,35", "--new-tokens", "4",
                    "--out-dir", str(tmp_path), "--tag", "cpu"])
    data = json.loads((tmp_path / "e2e_cpu.json").read_text())
    assert data["setup"]["preset"] == "tiny" and data["setup"]["arch"]["hidden_size"] == 256
    assert (tmp_path / "e2e_cpu.md").exists()
    assert {"gpu", "date", "commit", "setup", "records"} <= set(data)
    fields = {"sparsity", "speedup", "dense_ms", "stoicc_ms", "prefill_ms", "decode_step_ms", "weight_bytes_ratio",
              "peak_bytes_ratio", "agreement"}
    assert [r["sparsity"] for r in data["records"]] == [0, 35]
    for r in data["records"]:
        assert fields <= set(r) and 0 <= r["agreement"] <= 1 and r["speedup"] is None
        # the first token of every sequence and the logits within stoicc_ext.nn.agreement's tolerance
        assert r["agreement_ok"] and r["first_token_agreement"] == 1.0 and r["logits_rtol"] == 1e-2
    assert data["records"][0]["weight_bytes_ratio"] == pytest.approx(1.0, abs=0.01)
    # q/k/v and gate/up fused: qkv_proj, o_proj, gate_up_proj, down_proj
    assert data["records"][1]["weight_bytes_ratio"] < 0.95 and data["records"][1]["layers_converted"] == 4
    assert len(res["tile_choices"]["35"]) == 4


def _load_e2e():
    return load_bench("e2e")


def test_e2e_profile_accounting_counts_calls_and_clips_overlap():
    """The decode-step breakdown: a PDL kernel that starts under its predecessor is counted only
    from where the predecessor ended, and each kernel's calls are counted, so the per-call time
    can be set beside the kernel table's."""
    from types import SimpleNamespace
    from torch.autograd import DeviceType
    e2e = _load_e2e()

    def ev(name, start, end):  # profiler times are in microseconds
        return SimpleNamespace(name=name, device_type=DeviceType.CUDA, time_range=SimpleNamespace(start=start, end=end))

    k = "void stoicc::spmm_kernel<__half, 16, 128, 128, 4, 1, 3, 1>(stoicc::SpmmArgs)"
    events = [ev("rmsnorm", 0, 5), ev(k, 5, 15), ev(k, 12, 22),  # the 2nd call started 3 us early (PDL)
              ev("nvjet_sm90_hsh_128x16_64x11_4x1_v_bz_TNT", 22, 30),
              SimpleNamespace(name="cpu op", device_type=DeviceType.CPU, time_range=SimpleNamespace(start=0, end=99))]
    out = e2e._exclusive_kernel_ms(SimpleNamespace(events=lambda: events))
    assert out[k] == (pytest.approx(0.017), 2)  # 10 + 7 us
    assert out["rmsnorm"] == (pytest.approx(0.005), 1) and "cpu op" not in out
    assert e2e._exclusive_kernel_ms(SimpleNamespace(events=lambda: events[-1:])) is None
    top = [dict(kernel=k, ms=0.017, calls=2, us_per_call=8.5, category="stoicc"),
           dict(kernel="void at::native::reduce_kernel<512>(x)", ms=0.6, calls=65, us_per_call=9.2, category="other")]
    rec = dict(sparsity=45, breakdown=dict(stoicc=dict(decode_step=dict(top=top), prefill=dict(top=top[:1]))))
    rows = e2e.linear_kernel_calls([rec], "decode_step")
    assert rows == [(45, "stoicc", "stoicc::spmm_kernel<__half, 16, 128, 128, 4, 1, 3, 1>", 2, 0.017, 8.5)]
    assert e2e.linear_kernel_calls([rec], "prefill") == rows
    assert e2e.linear_kernel_calls([dict(rec, breakdown=dict(stoicc=dict(decode_step=dict(top=top))))], "prefill") == []


def test_e2e_compiled_forward_keeps_the_linears(tmp_path):
    """--compile: both models' forward goes through torch.compile(fullgraph=True) (here a backend
    that records each graph and runs it eagerly); the dense graphs hold the linears as aten mm,
    the converted ones as one stoicc.spmm per linear or fused group, one graph per phase and model
    (as shipped, same-structure dense, stoicc), and the generation matches the dense model's."""
    pytest.importorskip("transformers", minversion="5")
    e2e = _load_e2e()
    graphs = []

    def recording(gm, example_inputs):
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return gm.forward
    torch._dynamo.reset()
    torch._dynamo.list_backends()   # the registry is filled lazily; register after it
    torch._dynamo.register_backend(recording, name="stoicc_test_recording")
    res = e2e.main(["--device", "cpu", "--layers", "1", "--sparsities", "35", "--new-tokens", "4", "--no-price",
                    "--compile", "stoicc_test_recording", "--out-dir", str(tmp_path), "--tag", "cpu"])
    # prefill and decode step of the model as it ships, the same-structure dense model and stoicc; no recompiles
    assert len(graphs) == 6
    hf, dense, sparse = graphs[:2], graphs[2:4], graphs[4:]
    def count(g, key):
        return sum(key in t for t in g)
    # 7 linears in the decoder layer and lm_head as shipped; fused (q/k/v and gate/up) 4 and lm_head,
    # F.linear when dense, 4 spmm calls for stoicc, whose lm_head (outside .layers.) stays F.linear
    assert all(count(g, "linear") == 8 and count(g, "stoicc.spmm") == 0 for g in hf), hf
    assert all(count(g, "linear") == 5 and count(g, "stoicc.spmm") == 0 for g in dense), dense
    assert all(count(g, "linear") == 1 and count(g, "stoicc.spmm") == 4 for g in sparse), sparse
    r = res["records"][0]
    assert r["dense_compile_s"] > 0 and r["stoicc_compile_s"] > 0 and r["agreement"] == 1.0
    assert res["setup"]["compile"] == "stoicc_test_recording"
    assert "compiled by `torch.compile(fullgraph=True)`" in (tmp_path / "e2e_cpu.md").read_text()
    torch._dynamo.reset()
