#!/usr/bin/env bash
# wgmma.sp for decode (M = 16/32/64): measured, not shipped
# Run on a GPU machine from the repository root, in an environment set up by scripts/setup_env.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."
# The experiment's code is commit 559700b: a worktree there, its own venv and build.
WT="${WT:-$(mktemp -d)/stoicc-wgmma-decode}"
git worktree add --detach "$WT" 559700b
(cd "$WT" && STOICC_VENV="$WT/.venv" STOICC_FORCE_BUILD=1 bash scripts/setup_env.sh)
cd "$WT"
source .venv/bin/activate
PYTHONPATH=$PWD python bench/bench_kernels.py --verbose --no-bf16-subset --no-cusparselt --shapes 11008x4096,4096x11008,28672x8192 --m 16,32,64 --frac 0.7,1.0 \
    --tag wgmma-decode | tee "$HERE/wgmma_deep_$(date +%Y%m%d).log"
