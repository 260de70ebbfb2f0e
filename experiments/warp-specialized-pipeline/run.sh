#!/usr/bin/env bash
# Warp-specialized sm_90 pipeline (a producer warp): measured, not shipped
# Run on a GPU machine from the repository root, in an environment set up by scripts/setup_env.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."
# The experiment's build: a worktree at d0d0bdc with the change applied, its own venv and build.
WT="${WT:-$(mktemp -d)/stoicc-warp-specialized-pipeline}"
git worktree add --detach "$WT" d0d0bdc
git -C "$WT" apply "$HERE/warp-specialized-pipeline.patch"
(cd "$WT" && python csrc/generate_instances.py && STOICC_VENV="$WT/.venv" STOICC_FORCE_BUILD=1 bash scripts/setup_env.sh)
cd "$WT"
source .venv/bin/activate
PYTHONPATH=$PWD python bench/bench_kernels.py --verbose --no-bf16-subset --no-cusparselt --shapes 4096x4096,11008x4096,4096x11008,28672x8192 --m 16,32,64 --frac 0.5,0.7,1.0 \
    --tag warp-specialized-pipeline | tee "$HERE/ws_pipeline_$(date +%Y%m%d).log"
