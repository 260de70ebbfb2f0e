"""bench/check_targets.py: the issues' targets counted from recorded benchmark JSON (CPU only)."""
import json
import os

import pytest

from conftest import load_bench

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results")
ct = load_bench("check_targets")


def test_kernel_targets_of_the_recorded_h100_table():
    """The a268fce H100 table: the counts the session notes gave by hand (7/8, 6/8, 5/8, 5/8,
    8/8 at M = 16; 20/35 at 2.6 TB/s; 40, 32 and 7 of 40 within 10 % of M = 16)."""
    with open(os.path.join(RESULTS, "kernels_H100_80GB_HBM3.json")) as f:
        data = json.load(f)
    kind, targets = ct.targets_of(data)
    assert kind == "kernels"
    got = [(t["met"], t["cases"]) for t in targets]
    assert got == [(7, 8), (6, 8), (5, 8), (5, 8), (8, 8), (20, 35), (40, 40), (32, 40), (7, 40), (0, 8), (7, 8)]
    assert "2.60 TB/s" in targets[5]["target"] and "H100 figure" in targets[5]["target"]
    # every miss names its case and its figure
    assert targets[0]["missed"] == ["4096x4096 M=16 f=1.0: 1.622x"]
    # the bf16 subset is not counted against the fp16 targets
    assert all(t["cases"] <= 40 for t in targets)


def _rec(n, k, m, frac, ms, speedup, tbps):
    return dict(n=n, k=k, m=m, frac=frac, dtype="float16", stoicc_ms=ms, speedup=speedup, tbps=tbps)


def test_bandwidth_target_follows_the_recorded_copy_bandwidth():
    recs = [_rec(11008, 4096, 16, 1.0, 0.030, 1.8, 3.0), _rec(11008, 4096, 16, 0.5, 0.040, 1.3, 3.9),
            _rec(4096, 4096, 16, 1.0, 0.010, 1.7, 2.0)]          # below 11008x4096: not a bandwidth case
    h100 = ct.kernel_targets(dict(records=recs))
    bw = [t for t in h100 if "TB/s" in t["target"]][0]
    assert (bw["met"], bw["cases"]) == (2, 2)                  # 2.6 TB/s without a copy figure
    h200 = ct.kernel_targets(dict(records=recs, copy_tbps=4.3))
    bw = [t for t in h200 if "TB/s" in t["target"]][0]
    assert "3.74 TB/s" in bw["target"] and (bw["met"], bw["cases"]) == (1, 2)
    assert bw["missed"] == ["11008x4096 M=16 f=1.0: 3.00 TB/s"]
    # targets without cases in the file are left out, not reported as 0/0
    assert not [t for t in h200 if t["cases"] == 0]


def test_near_16_compares_times_at_the_same_shape_and_fraction():
    recs = [_rec(4096, 4096, 16, 1.0, 0.010, 1.7, 2.0), _rec(4096, 4096, 32, 1.0, 0.0115, 1.5, 1.8),
            _rec(4096, 4096, 64, 1.0, 0.0105, 1.6, 1.9), _rec(8192, 8192, 64, 1.0, 0.05, 1.6, 1.9)]  # no M=16 twin
    t = {x["target"].split(":")[0]: x for x in ct.kernel_targets(dict(records=recs))}
    assert (t["M = 32"]["met"], t["M = 32"]["cases"]) == (0, 1)   # 0.010 / 0.0115 = 0.87
    assert (t["M = 64"]["met"], t["M = 64"]["cases"]) == (1, 1)   # 0.95; the 8192 case has no M = 16 row


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
