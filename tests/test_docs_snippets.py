"""The Python snippets of the README and of docs/api.md's section on the STOICC paper's API run
as written: every ```python block, in order, the blocks of one document sharing one namespace
(a block may use what an earlier block of the same document defined). They pick the GPU when
there is one and the CPU reference ops otherwise.

A block that cannot run without a GPU says so in a comment line ``# needs: cuda``; only such
blocks are skipped, with a reason, and only where CUDA is absent. Any other ``# needs:`` value
fails, so that a typo cannot skip a block."""
import os
import re

import pytest
import torch

from conftest import needs_ext

pytestmark = needs_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_SECTION = "## Which calls follow the STOICC paper's API"
# document -> the heading of the section whose blocks run (None: the whole document)
DOCUMENTS = {"README.md": None, "docs/api.md": API_SECTION, "docs/huggingface.md": None}
# fewest blocks each document must yield, so that a renamed heading or a changed fence cannot
# make the extraction find nothing and the tests pass on an empty list
MIN_BLOCKS = {"README.md": 2, "docs/api.md": 3, "docs/huggingface.md": 3}
KNOWN_NEEDS = {"cuda"}

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NEEDS = re.compile(r"^[ \t]*#[ \t]*needs:[ \t]*(\S+)", re.M)


def extract(doc, section):
    """[(line number, code, needs)] of the ```python blocks of `doc` (within `section`)."""
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    offset = 0
    if section is not None:
        start = text.find("\n" + section + "\n")
        assert start >= 0, f"{doc}: no section {section!r}"
        end = text.find("\n## ", start + 1)
        offset, text = start, text[start:end if end >= 0 else len(text)]
    full = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    blocks = []
    for m in FENCE.finditer(text):
        line = full.count("\n", 0, offset + m.start()) + 1
        blocks.append((line, m.group(1), set(NEEDS.findall(m.group(1)))))
    return blocks


BLOCKS = {doc: extract(doc, section) for doc, section in DOCUMENTS.items()}
CASES = [(doc, i) for doc, blocks in BLOCKS.items() for i in range(len(blocks))]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One directory for the files the snippets write (checkpoints, the tuning cache)."""
    return tmp_path_factory.mktemp("snippets")


_STATE = {}  # doc -> (namespace, number of blocks run so far)


def _run(doc, i, workdir):
    """Run blocks 0..i of `doc` that have not run yet, in one namespace."""
    ns, done = _STATE.get(doc, ({"__name__": "__snippet__"}, 0))
    for j in range(done, i + 1):
        line, code, needs = BLOCKS[doc][j]
        if "cuda" in needs and not torch.cuda.is_available():
            _STATE[doc] = (ns, j + 1)
            if j == i:
                pytest.skip(f"{doc}:{line} is marked '# needs: cuda' and CUDA is not available")
            continue
        exec(compile(code, f"{doc}:{line}", "exec"), ns)
        _STATE[doc] = (ns, j + 1)


def test_documents_have_snippets():
    for doc, blocks in BLOCKS.items():
        assert len(blocks) >= MIN_BLOCKS[doc], f"{doc}: found {len(blocks)} python blocks"
        for line, _, needs in blocks:
            assert needs <= KNOWN_NEEDS, f"{doc}:{line}: unknown '# needs:' {needs - KNOWN_NEEDS}"


@pytest.mark.parametrize("doc,i", CASES, ids=[f"{doc}:{BLOCKS[doc][i][0]}" for doc, i in CASES])
def test_snippet_runs(doc, i, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("STOICC_CACHE_DIR", str(workdir / "cache"))
    _run(doc, i, workdir)


def _close(y, x, w):
    ref = x.double() @ w.double().T
    err = (y.double() - ref).abs().max().item()
    return err <= 4e-3 * ref.abs().max().item() + 1e-3


@pytest.mark.parametrize("doc,names", [("README.md", ("Y",)), ("docs/api.md", ("output", "y_prefill", "y_decode"))])
def test_snippet_results_are_x_times_w_transposed(doc, names, workdir, monkeypatch):
    """The snippets' outputs are X @ W.T, not just anything of the right shape."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("STOICC_CACHE_DIR", str(workdir / "cache"))
    _run(doc, len(BLOCKS[doc]) - 1, workdir)
    ns = _STATE[doc][0]
    W = ns["W"]
    inputs = {"Y": ns.get("X"), "output": ns.get("X"), "y_prefill": ns.get("X_prefill"), "y_decode": ns.get("X_decoding")}
    for name in names:
        y, x = ns[name], inputs[name]
        assert _close(y.reshape(-1, W.shape[0]), x.reshape(-1, W.shape[1]), W), f"{doc}: {name} != X @ W.T"


def test_quickstart_example_runs(workdir, monkeypatch):
    """examples/quickstart.py (the README's quick start as a script) on a small weight."""
    import importlib.util
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("STOICC_CACHE_DIR", str(workdir / "cache"))
    spec = importlib.util.spec_from_file_location("stoicc_example_quickstart", os.path.join(ROOT, "examples", "quickstart.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--n", "512", "--k", "512", "--m", "16"]) == 0
