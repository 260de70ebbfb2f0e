#!/usr/bin/env bash
# sm_90 prologue: weight copies before X copies: written, not run on a GPU
# Run on a GPU machine from the repository root, in an environment set up by scripts/setup_env.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."
# The experiment's build: a worktree at 58cae9c with the change applied, its own venv and build.
WT="${WT:-$(mktemp -d)/stoicc-weight-copies-first}"
git worktree add --detach "$WT" 58cae9c
git -C "$WT" apply "$HERE/weight-copies-first.patch"
(cd "$WT" && python csrc/generate_instances.py && STOICC_VENV="$WT/.venv" STOICC_FORCE_BUILD=1 bash scripts/setup_env.sh)
cd "$WT"
source .venv/bin/activate
PYTHONPATH=$PWD python bench/bench_kernels.py --verbose --no-bf16-subset --no-cusparselt --shapes 4096x4096,11008x4096,28672x8192 --m 16,32,64 --frac 0.5,0.7,1.0 \
    --tag weight-copies-first | tee "$HERE/weight_copies_first_$(date +%Y%m%d).log"
