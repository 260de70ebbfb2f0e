#!/usr/bin/env bash
# The torch-free C++ benchmark builds, passes its ctest tests and installs: CMake configure +
# build in a temp dir, `ctest` (the --selftest and --list tests run anywhere; the GPU --check
# test is reported as skipped without a GPU), `cmake --install` into a temp prefix, and the
# installed binary's --selftest.
#
# Usage: bash scripts/check_cpp_bench.sh
# For speed the check compiles one arch and one instance: STOICC_CUDA_ARCHS (default 90a) and
# STOICC_INSTANCES (default: the first csrc/instances/spmm_*.cu) can be set, e.g. the shipped
# "80;86;89;90a" and "" (all) on a GPU machine. Needs cmake >= 3.24 and nvcc ($CUDA_HOME).
# Exit status non-zero on any failure.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { echo "[cpp-bench] $*"; }
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
first="$(ls csrc/instances/spmm_*.cu | head -1)"
ARCHS="${STOICC_CUDA_ARCHS:-90a}"
INST="${STOICC_INSTANCES-$(basename "$first" .cu)}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stoicc-cppbench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log "configure + build (archs $ARCHS, instances ${INST:-all})"
cmake -S "$REPO" -B "$WORK/build" -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" \
  "-DSTOICC_CUDA_ARCHS=$ARCHS" "-DSTOICC_INSTANCES=$INST" > "$WORK/configure.log" 2>&1 \
  || { cat "$WORK/configure.log"; exit 1; }
cmake --build "$WORK/build" -j "${MAX_JOBS:-$(nproc)}" > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
log "ctest"
ctest --test-dir "$WORK/build" --output-on-failure
cmake --install "$WORK/build" --prefix "$WORK/prefix" > /dev/null
"$WORK/prefix/bin/stoicc_spmm_bench" --selftest --n 1024 --k 1024
log "OK: built, tested, installed ($WORK/prefix/bin/stoicc_spmm_bench ran)"
