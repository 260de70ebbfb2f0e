#!/usr/bin/env bash
# X by TMA on sm_90: shipped
# Run on a GPU machine from the repository root, in an environment set up by scripts/setup_env.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."
source "${STOICC_VENV:-.venv}/bin/activate"
PYTHONPATH=$PWD python bench/bench_kernels.py --verbose --no-bf16-subset --no-cusparselt --shapes 4096x4096,11008x4096,4096x11008,28672x8192 --m 16,32,64 --frac 0.5,0.7,1.0 \
    --tag tma-x | tee "$HERE/tma_x_$(date +%Y%m%d).log"
