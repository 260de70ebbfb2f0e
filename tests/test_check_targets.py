"""bench/check_targets.py: the targets counted from recorded benchmark JSON (CPU only)."""
import json
import os

import pytest

from conftest import load_bench

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results")
ct = load_bench("check_targets")


def test_kernel_targets_of_the_recorded_h100_table():
    """The a268fce H100 table (no read-only ceiling, no group, no host rows recorded): the speedup
    counts the session notes gave by hand (7/8, 6/8, 5/8, 5/8, 8/8 at M = 16), the bandwidth
    bound against the H100's 2.99 TB/s stand-in, M = 1 / 32 within 10 % and M = 64 within 20 %
    of M = 16, and the prefill targets."""
    with open(os.path.join(RESULTS, "kernels_H100_80GB_HBM3.json")) as f:
        data = json.load(f)
    kind, targets = ct.targets_of(data)
    assert kind == "kernels"
    got = [(t["met"], t["cases"]) for t in targets]
    # prefill (M = 2048, the mma.sync path and densify of that table): none of the Hopper-prefill
    # targets, and cuSPARSELt faster everywhere
    assert got == [(7, 8), (6, 8), (5, 8), (5, 8), (8, 8), (33, 40), (40, 40), (32, 40), (25, 40),
                   (0, 8), (0, 8), (0, 8), (0, 8), (0, 8), (0, 8)]
    assert [t["target"] for t in targets[9:]] == [
        "M = 2048, f = 1.0: speedup >= 1.50x", "M = 2048, f = 0.9: speedup >= 1.35x",
        "M = 2048, f = 0.7: speedup >= 1.20x", "M = 2048, f = 0.5: speedup >= 1.10x",
        "M = 2048, f = 0.0: speedup >= 0.97x", "M = 2048, f = 1.0: faster than cuSPARSELt"]
    assert "2.99 TB/s" in targets[5]["target"] and "not recorded" in targets[5]["target"]
    # every miss names its case and its figure
    assert targets[0]["missed"] == ["4096x4096 M=16 f=1.0: 1.622x"]
    assert targets[5]["missed"][0] == "4096x4096 M=16 f=0.0: 16.1 us > 14.7 us"
    # the bf16 subset is not counted against the fp16 targets
    assert all(t["cases"] <= 40 for t in targets)


def _rec(n, k, m, frac, ms, speedup, tbps=None, nbytes=None, group=None):
    r = dict(n=n, k=k, m=m, frac=frac, dtype="float16", stoicc_ms=ms, speedup=speedup, tbps=tbps,
             compressed_bytes=nbytes if nbytes is not None else n * k * 2)
    if group:
        r["group"] = group
    return r


def _by_name(targets):
    return {t["target"].split(":")[0]: t for t in targets}


def test_bandwidth_bound_follows_the_recorded_read_only_ceiling():
    # 11008x4096 fp16 at f = 0: 90.2 MB; at 0.85 x 4.0 TB/s that is 26.5 us, + 1.5 us = 28.0 us
    nb = 11008 * 4096 * 2
    recs = [_rec(11008, 4096, 16, 0.0, 0.0279, 1.05, nbytes=nb), _rec(11008, 4096, 16, 0.5, 0.0290, 1.3, nbytes=nb)]
    data = dict(records=recs, read_tbps=4.0, copy_tbps=4.3, gpu="NVIDIA H200")
    bound = ct.bandwidth_bound_ms(recs[0], data)
    assert bound == pytest.approx(nb / (0.85 * 4.0e12) * 1e3 + 1.5e-3)
    bw = [t for t in ct.kernel_targets(data) if "compressed bytes" in t["target"]][0]
    assert "0.85 x 4.00 TB/s" in bw["target"] and "this run's read-only" in bw["target"]
    assert (bw["met"], bw["cases"]) == (1, 2) and bw["missed"] == ["11008x4096 M=16 f=0.5: 29.0 us > 28.0 us"]
    # without a recorded read-only figure: the H200's known one, by GPU name (not the copy figure)
    del data["read_tbps"]
    bw = [t for t in ct.kernel_targets(data) if "compressed bytes" in t["target"]][0]
    assert "4.24 TB/s" in bw["target"] and "H200" in bw["target"]
    # targets without cases in the file are left out, not reported as 0/0
    assert not [t for t in ct.kernel_targets(data) if t["cases"] == 0]


def test_near_16_compares_times_at_the_same_shape_and_fraction():
    recs = [_rec(4096, 4096, 16, 1.0, 0.010, 1.7), _rec(4096, 4096, 32, 1.0, 0.0115, 1.5),
            _rec(4096, 4096, 64, 1.0, 0.0120, 1.6), _rec(4096, 4096, 1, 1.0, 0.0105, 1.6),
            _rec(8192, 8192, 64, 1.0, 0.05, 1.6)]  # no M = 16 twin
    t = _by_name(ct.kernel_targets(dict(records=recs)))
    assert (t["M = 32"]["met"], t["M = 32"]["cases"]) == (0, 1)   # 0.010 / 0.0115 = 0.87 < 0.90
    assert (t["M = 64"]["met"], t["M = 64"]["cases"]) == (1, 1)   # 0.83 >= 0.80; the 8192 case has no M = 16 row
    assert (t["M = 1"]["met"], t["M = 1"]["cases"]) == (1, 1)     # 0.95


def test_small_model_and_host_targets():
    recs = [_rec(896, 4864, 16, 0.5, 0.005, 1.02, group="small"), _rec(896, 4864, 16, 0.7, 0.005, 0.97, group="small"),
            _rec(896, 4864, 16, 1.0, 0.004, 1.25, group="small"),
            _rec(2048, 2048, 16, 0.0, 0.004, 0.9),        # group from bench/shapes.py (small); f = 0: no target
            _rec(4096, 4096, 16, 1.0, 0.010, 1.8)]        # a table shape: not a small-model case
    host = [dict(n=4096, k=4096, m=16, stoicc_us=7.0, linear_us=5.5, extra_us=1.5),
            dict(n=896, k=4864, m=16, stoicc_us=9.0, linear_us=5.0, extra_us=4.0)]
    t = _by_name(ct.kernel_targets(dict(records=recs, host=host)))
    ge = t["small models, M = 16, f >= 0.5"]
    assert (ge["met"], ge["cases"]) == (2, 3) and ge["missed"] == ["896x4864 M=16 f=0.7: 0.970x"]
    one = t["small models, M = 16, f = 1.0"]
    assert (one["met"], one["cases"]) == (0, 1) and "1.30x" in one["target"]
    h = t["eager host cost"]
    assert (h["met"], h["cases"]) == (1, 2) and h["missed"] == ["896x4864 M=16: +4.0 us"]
    assert (t["M = 16, f = 1.0"]["met"], t["M = 16, f = 1.0"]["cases"]) == (1, 1)


def test_e2e_in_model_bandwidth_and_long_prompt_targets():
    def r(s, speedup, tbps=None, row="main"):
        return dict(sparsity=s, speedup=speedup, row=row, weight_bytes_ratio=1.0,
                    decode_split=None if tbps is None else dict(stoicc_linear_tbps=tbps))
    data = dict(records=[r(0, 1.01), r(25, 1.2, 3.5), r(45, 1.5, 3.0), r(0, 0.99, row="long"), r(45, 1.3, row="long")])
    t = _by_name(ct.e2e_targets(data))
    bw = t["decode-step stoicc linears >= 3.4 TB/s over their compressed bytes (not the reference set-up)"]
    assert (bw["met"], bw["cases"]) == (1, 2) and bw["missed"] == ["45 %: 3.00 TB/s"]
    assert (t["long prompt, 0 %"]["met"], t["long prompt, 45 %"]["met"]) == (0, 1)
    # the long rows do not count against the main targets
    assert (t["0 %"]["met"], t["0 %"]["cases"]) == (1, 1)
    # agreement: every record that carries the check, both rows
    for rec, ok in zip(data["records"], (True, False, True, True, True)):
        rec.update(agreement_ok=ok, first_token_agreement=1.0 if ok else 0.9375, max_logits_rel_err=0.004)
    agree = _by_name(ct.e2e_targets(data))["agreement with dense"]
    assert (agree["met"], agree["cases"]) == (4, 5) and agree["missed"] == ["main 25 %: first token 0.938, logits 0.004 of max"]


def test_e2e_targets_of_the_recorded_h100_run(capsys):
    path = os.path.join(RESULTS, "e2e_H100_80GB_HBM3.json")
    ct.main([path])
    out = capsys.readouterr().out
    assert "end to end" in out and "0/1   45 %: end-to-end speedup >= 1.60x" in out
    assert "1/1   45 %: weight bytes within 1 % of the format's 0.622" in out
    ct.main(["--markdown", path])
    assert "| 25 %: end-to-end speedup >= 1.30x | 0/1 | 25 %: 1.074x |" in capsys.readouterr().out


def test_refuses_a_file_that_is_not_a_result(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps(dict(records=[dict(foo=1)])))
    with pytest.raises(SystemExit, match="not a bench_kernels.py or e2e.py result file"):
        ct.main([str(p)])
