"""A poisoned tuning cache: records that are valid JSON under the right key but hold values no
tuning wrote. Each is warned about, tuned again and rewritten, like an unreadable file."""
import json
import os

import pytest
import torch

import stoicc_ext as STOICC
from stoicc_ext.testing import random_patch_weight
from stoicc_ext.tuning import cache as tuning_cache

from conftest import FakeTimer, needs_ext
from model_helpers import patch_model

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def problem():
    W, _ = random_patch_weight(256, 512, 0.7, dtype=torch.float16, generator=torch.Generator().manual_seed(0))
    return torch.randn(16, 512, generator=torch.Generator().manual_seed(1)).half(), W


def poisons(cfg):
    """(what, edit of the record) pairs; the first four are the values a user reported."""
    return [
        ("SPLIT_K as a string", lambda r: r["choice"]["config"].update(SPLIT_K="2x")),
        ("a list as schedule", lambda r: r["choice"].update(schedule=["split_k"])),
        ("SPLIT_K of 10^9", lambda r: r["choice"]["config"].update(SPLIT_K=10 ** 9)),
        ("SPLIT_K of -3", lambda r: r["choice"]["config"].update(SPLIT_K=-3)),
        ("an unknown instance", lambda r: r["choice"]["config"].update(instance="nope")),
        ("a list as config", lambda r: r["choice"].update(config=[1, 2])),
        ("a string as timing", lambda r: r["candidates"][0].update(ms="fast")),
        ("a number as a record", lambda r: r["candidates"].append(3)),
    ]


@pytest.mark.parametrize("which", range(8))
def test_poisoned_record_is_retuned_and_rewritten(which):
    X, W = problem()
    timer = FakeTimer()
    insp = STOICC.Inspector(timer=timer, verbose=False)
    _, cfg = insp.inspect(X, W)
    (path,) = [os.path.join(tuning_cache.cache_dir(), f) for f in os.listdir(tuning_cache.cache_dir())]
    what, edit = poisons(cfg)[which]
    rec = json.load(open(path))
    edit(rec)
    with open(path, "w") as f:
        json.dump(rec, f)
    tuning_cache.clear_memory()
    n = len(timer.calls)
    with pytest.warns(RuntimeWarning, match=r"ignoring tuning-cache file .*(not one of the|malformed)"):
        ex, cfg2 = insp.inspect(X, W)
    assert cfg2 == cfg and insp.last_report.source == "tuned" and len(timer.calls) > n, what
    assert json.load(open(path))["choice"]["config"] == cfg                 # rewritten, valid again
    Wc = insp.compress(W, cfg2)
    ex(X, *Wc, **cfg2)
    tuning_cache.clear_memory()
    insp.inspect(X, W)
    assert insp.last_report.source == "disk cache"                         # and trusted again


def test_sparsify_converts_despite_a_poisoned_cache():
    """sparsify_ after every record was poisoned: each layer is tuned again, none stays dense."""
    kw = dict(decode_tokens=8, prefill_tokens=64, verbose=False, inspector=STOICC.Inspector(timer=FakeTimer(),
                                                                                          verbose=False))
    first = STOICC.sparsify_(patch_model(n_layers=1), **kw)
    d = tuning_cache.cache_dir()
    for f in os.listdir(d):
        rec = json.load(open(os.path.join(d, f)))
        rec["choice"]["config"]["SPLIT_K"] = "2x"
        json.dump(rec, open(os.path.join(d, f), "w"))
    tuning_cache.clear_memory()
    with pytest.warns(RuntimeWarning, match="ignoring tuning-cache file"):
        again = STOICC.sparsify_(patch_model(n_layers=1), **kw)
    assert [r.status for r in again.rows] == [r.status for r in first.rows]
    assert sum(r.status == "converted" for r in again.rows) == 7
