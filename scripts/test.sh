#!/usr/bin/env bash
# The test command: set up the environment (scripts/setup_env.sh: venv, requirements, the CUDA
# extension for every shipped arch), then run the test suite in it. Without a GPU the CPU tests
# run and the GPU tests skip (the -rs summary says why). Extra arguments go to pytest.
#
# Usage: bash scripts/test.sh [pytest args...]      e.g. bash scripts/test.sh -k format
# Exit status: setup_env.sh's if it fails, else pytest's.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash "$REPO/scripts/setup_env.sh"
VENV="${STOICC_VENV:-$REPO/.venv}"
echo "[stoicc] running the tests: python -m pytest tests -q -rs $*"
rc=0
"$VENV/bin/python" -m pytest tests -q -rs "$@" || rc=$?
echo "[stoicc] pytest exit status $rc"
exit $rc
