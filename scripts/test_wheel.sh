#!/usr/bin/env bash
# Install a built wheel into a fresh virtual environment outside the checkout and run the test
# suite against the installed package (CPU tests run, GPU tests skip without a GPU).
#
# Usage: bash scripts/test_wheel.sh [WHEEL] [pytest args...]
#   WHEEL    default: the newest dist/stoicc-*manylinux*.whl (scripts/build_wheel.sh)
# Environment:
#   STOICC_PYTHON      interpreter for the venv (default python3; >= 3.10)
#   STOICC_TEST_TORCH  torch requirement to install with it (default "torch": whatever pip picks;
#                      e.g. "torch==2.10.*" to test the floor the wheel claims)
#   STOICC_KEEP=1      keep the temp dir (venv + test copy) and print where it is
#
# The checkout minus the package (tests/ and what they read: bench/, examples/, docs/, README.md,
# pyproject.toml's pytest settings) is copied into a temp dir with no stoicc_ext/ in it, so
# `import stoicc_ext` resolves to the installed wheel; the script checks that it does and that
# the compiled extension loaded. Exit status: pytest's, or 1 if the set-up fails.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "[wheel-test] $*"; }
die() { echo "[wheel-test] ERROR: $*" >&2; exit 1; }

WHL="${1:-}"
[ $# -gt 0 ] && shift
if [ -z "$WHL" ]; then
  WHL="$(ls -t "$REPO"/dist/stoicc-*manylinux*.whl 2>/dev/null | head -1 || true)"
  [ -n "$WHL" ] || die "no dist/stoicc-*manylinux*.whl: run scripts/build_wheel.sh first, or name a wheel"
fi
[ -f "$WHL" ] || die "no such wheel: $WHL"
WHL="$(cd "$(dirname "$WHL")" && pwd)/$(basename "$WHL")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stoicc-wheeltest.XXXXXX")"
case "$WORK/" in "$REPO"/*) die "the temp dir $WORK is inside the checkout (set TMPDIR)";; esac
if [ "${STOICC_KEEP:-0}" = 1 ]; then log "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"${STOICC_PYTHON:-python3}" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' || die "the wheel needs Python >= 3.10"
log "installing $(basename "$WHL")[test] and ${STOICC_TEST_TORCH:-torch} into a fresh venv ($WORK/venv)"
t0=$(date +%s)
"$PY" -m pip install -q "$WHL[test]" "${STOICC_TEST_TORCH:-torch}" || die "pip install failed"
log "installed in $(( $(date +%s) - t0 )) s: $("$PY" -m pip list 2>/dev/null | grep -E '^(stoicc|torch|transformers) ' | tr -s ' ' | paste -sd, -)"

# The tests and everything they read (bench/, examples/, README.md, docs/, ...): the checkout's
# files (tracked, and untracked ones git does not ignore) except the package's own sources.
mkdir -p "$WORK/src"
if git -C "$REPO" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
     | grep -zv -e '^stoicc_ext/' -e '^\.' \
     | xargs -0 -I{} sh -c '[ -f "$1" ] && exec cp --parents "$1" "$2"' _ {} "$WORK/src")
else
  for d in tests bench examples docs; do [ -d "$REPO/$d" ] && cp -r "$REPO/$d" "$WORK/src/"; done
  cp "$REPO/pyproject.toml" "$REPO/README.md" "$WORK/src/"
fi
[ ! -e "$WORK/src/stoicc_ext" ] || die "stoicc_ext/ was copied next to the tests"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
cd "$WORK/src"
"$PY" - "$WORK/venv" <<'PYEOF' || die "the installed package is not the one imported, or its extension did not load"
import os, sys
import torch, stoicc_ext
where = os.path.realpath(stoicc_ext.__file__)
assert where.startswith(os.path.realpath(sys.argv[1]) + os.sep), f"stoicc_ext imported from {where}"
assert stoicc_ext.extension_loaded, stoicc_ext.extension_error
print(f"[wheel-test] stoicc {stoicc_ext.__version__} from {os.path.dirname(where)}, torch {torch.__version__}, "
      f"{len(stoicc_ext.list_instances())} compiled instances, CUDA available: {torch.cuda.is_available()}")
PYEOF
# Tests of the checkout rather than of the package, left out here (scripts/test.sh runs them):
# test_generated.py regenerates csrc/instances/ and stoicc_ext/instances.json and compares them
# with the committed files.
SOURCE_TREE_TESTS=(--ignore=tests/ops/test_generated.py)
log "python -m pytest tests -q -rs -p no:cacheprovider ${SOURCE_TREE_TESTS[*]} $* (in $WORK/src)"
rc=0
"$PY" -m pytest tests -q -rs -p no:cacheprovider "${SOURCE_TREE_TESTS[@]}" "$@" || rc=$?
log "pytest exit status $rc"
exit $rc
