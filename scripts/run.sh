#!/usr/bin/env bash
# The main job: set up the environment (scripts/setup_env.sh), then run the demo on its embedded
# default, one synthetic PATCH-pruned Llama-2-7B decoder block at 35 % sparsity: compression,
# correctness against a float32 reference and, on a GPU, speed against dense cuBLAS.
#
# Usage: bash scripts/run.sh [demo args...]   (see: bash scripts/run.sh --help)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash "$REPO/scripts/setup_env.sh" >&2
VENV="${STOICC_VENV:-$REPO/.venv}"
exec "$VENV/bin/python" -m stoicc_ext.demo "$@"
