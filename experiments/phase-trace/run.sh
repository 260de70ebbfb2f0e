#!/usr/bin/env bash
# Per-CTA phase trace of the decode kernel (instrumentation, not shipped)
# Run on a GPU machine from the repository root, in an environment set up by scripts/setup_env.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/../.."
# The experiment's build: a worktree at 96eb7ba with the change applied, its own venv and build.
WT="${WT:-$(mktemp -d)/stoicc-phase-trace}"
git worktree add --detach "$WT" 96eb7ba
git -C "$WT" apply "$HERE/phase_trace_experiment.diff"
(cd "$WT" && python csrc/generate_instances.py && STOICC_VENV="$WT/.venv" STOICC_FORCE_BUILD=1 bash scripts/setup_env.sh)
cd "$WT"
source .venv/bin/activate
PYTHONPATH=$PWD python "$HERE/phase_trace_run.py" | tee "$HERE/phase_trace_$(date +%Y%m%d).txt"
