"""bench/e2e.py --tp 2 under torchrun on the CPU (gloo): the tiny Llama split over two processes,
dense and stoicc, generated and compared (a dry run of the pipeline that the H200 runs time)."""
import os
import subprocess
import sys

import pytest

from conftest import needs_ext
from tp_workers import GLOO

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [needs_ext, pytest.mark.skipif(not GLOO, reason="torch.distributed gloo backend not available")]


def test_e2e_tp2_dry_run_on_cpu(tmp_path):
    pytest.importorskip("transformers")
    env = dict(os.environ, STOICC_CACHE_DIR=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           os.path.join(REPO, "bench", "e2e.py"), "--device", "cpu", "--tiny", "--tp", "2", "--sparsities", "45",
           "--no-price", "--out-dir", str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "14 layers" in out.stdout and "agreement with dense on the same weights: 1.000" in out.stdout, out.stdout
    assert out.stdout.count("[45%] sparsify_") == 1                     # rank 0 reports, rank 1 is quiet
    written = sorted(os.listdir(tmp_path))
    assert any(f.startswith("e2e_cpu") and f.endswith("_tp2.json") for f in written), written
