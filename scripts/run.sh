#!/usr/bin/env bash
# The main job: set up the environment (scripts/setup_env.sh), then the end-to-end benchmark
# bench/e2e.py on its embedded default: a Hugging Face Llama with the Llama-2-7B architecture and
# random weights, pruned PATCH-like at 0/25/35/45 %, converted with stoicc_ext.sparsify_ and timed
# (greedy generation, static KV cache, CUDA graphs) against the same model on dense cuBLAS.
#   On a GPU: 4 decoder layers (fits any GPU; --full for the 32-layer Llama-2-7B).
#   Without a GPU: a tiny Llama through the same pipeline, checking agreement and memory only.
#
# Usage: bash scripts/run.sh [e2e args...]   (see: bash scripts/run.sh --help)
# The one-block kernel demo is `python examples/demo.py` in the same environment.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${STOICC_VENV:-$REPO/.venv}"
for arg in "$@"; do   # --help answers at once: this header, then bench/e2e.py's options if the venv exists
  if [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
    if [ -x "$VENV/bin/python" ]; then
      echo
      "$VENV/bin/python" "$REPO/bench/e2e.py" --help || echo "(bench/e2e.py --help failed: bash scripts/setup_env.sh repairs the environment)"
    else
      echo "(bench/e2e.py's options are listed once the environment exists: bash scripts/setup_env.sh)"
    fi
    exit 0
  fi
done
bash "$REPO/scripts/setup_env.sh" >&2
exec "$VENV/bin/python" "$REPO/bench/e2e.py" "$@"
