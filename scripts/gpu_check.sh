#!/usr/bin/env bash
# On the GPU machine (device tool): install carried wheels, run the test suite (GPU tests
# included) and optional benchmarks; logs land in $OUT. The extension is carried prebuilt
# (stable ABI) as stoicc_ext/_C.abi3.so, or built here when STOICC_BUILD=1.
# Usage: bash scripts/gpu_check.sh [pytest args...]   (env BENCH="bench/x.py ..." to run benches)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; rm -rf /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1; fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv | tee "$OUT/gpu.txt"
echo "commit ${STOICC_COMMIT:-unknown (set STOICC_COMMIT)}" | tee -a "$OUT/gpu.txt"
if [ "${STOICC_BUILD:-0}" = 1 ]; then
  STOICC_CUDA_ARCHS=90a MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
fi
python3 -c "import stoicc_ext as S, torch; print('ext loaded:', S.extension_loaded, S.extension_error, torch.__version__)"
rc=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  python3 -m pytest tests -q -rs "$@" 2>&1 | tee "$OUT/pytest.log" | tail -40; rc=${PIPESTATUS[0]}
fi
for b in ${BENCH:-}; do
  (cd bench && python3 "$(basename "$b")" ${BENCH_ARGS:-}) 2>&1 | tee -a "$OUT/bench.log"
done
exit $rc
