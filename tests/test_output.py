"""Library output: quiet by default, messages on logging.getLogger("stoicc"), a tqdm bar on request."""
import logging

import pytest

import stoicc_ext as STOICC
from stoicc_ext import _logging

from conftest import needs_ext
from model_helpers import patch_model

pytestmark = [needs_ext, pytest.mark.usefixtures("fresh_tuning_cache")]


def convert(**kw):
    return STOICC.sparsify_(patch_model(n_layers=1), decode_tokens=8, prefill_tokens=64, **kw)


def test_quiet_by_default_and_logged(capsys, caplog):
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("stoicc").handlers)
    caplog.set_level(logging.DEBUG, logger="stoicc")
    rep = convert()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""                  # no bar: stderr is not a terminal here
    msgs = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name == "stoicc.sparsify"]
    assert msgs[0][1] == logging.INFO and "9 linear layers" in msgs[0][2]
    assert any(lvl == logging.DEBUG and "[1/9] model.layers.0.self_attn.q_proj" in m for _, lvl, m in msgs)
    assert msgs[-1][1] == logging.INFO and msgs[-1][2] == rep.summary()
    assert any(r.name == "stoicc.inspector" for r in caplog.records)


def test_verbose_prints_when_logging_is_not_configured(capsys):
    convert(verbose=True)
    err = capsys.readouterr().err
    assert "[1/9] model.layers.0.self_attn.q_proj" in err and "linear layers" in err


def test_progress_bar(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    convert(progress=True)
    err = capsys.readouterr().err
    assert "stoicc sparsify_:" in err and "/9 [" in err and "layer/s" in err
    monkeypatch.setattr(_logging, "_tqdm", lambda: None)           # tqdm not installed: no bar, no error
    convert(progress=True)
    assert capsys.readouterr().err == ""
