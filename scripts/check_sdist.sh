#!/usr/bin/env bash
# The sdist is complete and builds: build it, check that it holds every tracked source the
# build and the C++ benchmark need, compile a wheel FROM it in a temp dir, load the result.
#
# Usage: bash scripts/check_sdist.sh
# To keep it short (well under a minute of compiling on 2 cores), the wheel is built for one
# arch and one kernel instance: STOICC_CUDA_ARCHS (default 90a) and STOICC_INSTANCES (default:
# the first csrc/instances/spmm_*.cu) can be set; every other source (op layer, dispatch,
# registry, CPU reference, densify) is always compiled. Uses the build venv (STOICC_VENV,
# default .venv; scripts/setup_env.sh makes it) and scripts/build_wheel.sh --compile.
# Exit status non-zero on any failure.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { echo "[sdist] $*"; }
die() { echo "[sdist] ERROR: $*" >&2; exit 1; }
first="$(ls csrc/instances/spmm_*.cu | head -1)"
export STOICC_CUDA_ARCHS="${STOICC_CUDA_ARCHS:-90a}"
export STOICC_INSTANCES="${STOICC_INSTANCES:-$(basename "$first" .cu)}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stoicc-sdist.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log "sdist -> wheel (archs $STOICC_CUDA_ARCHS, instances $STOICC_INSTANCES)"
WHL="$(bash scripts/build_wheel.sh --compile --allow-partial --out "$WORK/dist" | tail -1)"
SDIST="$(ls "$WORK"/dist/stoicc-*.tar.gz)"

# Every tracked file the build or the C++ benchmark reads must be in the sdist.
tar -tzf "$SDIST" | sed 's|^[^/]*/||' | sort > "$WORK/in_sdist"
git ls-files csrc stoicc_ext bench/cpp setup.py pyproject.toml MANIFEST.in CMakeLists.txt LICENSE README.md \
  | sort > "$WORK/tracked"
missing="$(comm -23 "$WORK/tracked" "$WORK/in_sdist")"
[ -z "$missing" ] || die "tracked sources missing from $(basename "$SDIST"): $missing"
log "$(basename "$SDIST"): $(wc -l < "$WORK/in_sdist") entries, every tracked source of csrc/, stoicc_ext/, bench/cpp/ included"

# The wheel built from it loads its extension.
PY="${STOICC_VENV:-$REPO/.venv}/bin/python"
"$PY" -m pip install -q --no-deps --target "$WORK/site" "$WHL"
(cd "$WORK" && PYTHONPATH="$WORK/site" "$PY" - "$WORK/site" <<'PYEOF') || die "the wheel built from the sdist does not load"
import os, sys
import stoicc_ext
assert os.path.realpath(stoicc_ext.__file__).startswith(os.path.realpath(sys.argv[1])), stoicc_ext.__file__
assert stoicc_ext.extension_loaded, stoicc_ext.extension_error
print(f"[sdist] the wheel built from the sdist loads: {len(stoicc_ext.list_instances())} compiled instance(s)")
PYEOF
log "OK: $(basename "$WHL")"
