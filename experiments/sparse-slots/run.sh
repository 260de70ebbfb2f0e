#!/usr/bin/env bash
# Pipeline slots sized for a 2:4 tile: measured, not shipped
# Run on a GPU machine from the repository root, in an environment set up by scripts/setup_env.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."
# The experiment's build: a worktree at bad4f30 with the change applied, its own venv and build.
WT="${WT:-$(mktemp -d)/stoicc-sparse-slots}"
git worktree add --detach "$WT" bad4f30
git -C "$WT" apply "$HERE/sparse_slots_experiment.diff"
(cd "$WT" && python csrc/generate_instances.py && STOICC_VENV="$WT/.venv" STOICC_FORCE_BUILD=1 bash scripts/setup_env.sh)
cd "$WT"
source .venv/bin/activate
PYTHONPATH=$PWD python bench/bench_kernels.py --verbose --no-bf16-subset --no-cusparselt --shapes 4096x4096,11008x4096,4096x11008,12288x4096,8192x8192,28672x8192 --m 16,32,64 --frac 1.0 \
    --tag sparse-slots | tee "$HERE/sparse_slots_$(date +%Y%m%d).log"
