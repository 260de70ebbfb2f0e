#!/usr/bin/env bash
# On the GPU machine: the whole verification pass of a commit. Full pytest suite (GPU tests
# included), compute-sanitizer memcheck + racecheck on one instance of each schedule, the C++
# benchmark binary built with CMake and checked against the CPU reference. $OUT gets summary.txt
# and one archive of the logs (the device tool brings back only a few files per run).
set -uo pipefail
FINAL_OUT=${OUT:-/tmp/out}; mkdir -p "$FINAL_OUT"
OUT=$(mktemp -d)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
echo "commit ${STOICC_COMMIT:-unknown}" | tee "$OUT/summary.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
python3 -m pytest tests -q -rs > "$OUT/pytest_full.log" 2>&1; echo "pytest rc=$? $(tail -1 "$OUT/pytest_full.log")" | tee -a "$OUT/summary.txt"
for cfg in "spmm_m16_n128_k128_w4x1_s4_seq 1 128x128 16" "spmm_m16_n128_k128_w4x1_s3_splitk 4 128x128 16" \
           "spmm_m16_n128_k128_w4x1_s3_streamk 16 128x128 16" "spmm_m128_n128_k64_w2x4_s3_seq 1 128x64 16" \
           "spmm_m64_n128_k64_w2x2_s3_splitk 3 128x64 50"; do
  set -- $cfg
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 3 python3 bench/profile_case.py --n 1024 --k 1024 --m $4 \
      --frac 0.5 --block $3 --instance $1 --split $2 --iters 1 --check > "$OUT/sanitizer_${tool}_$1.log" 2>&1
    echo "$tool $1 split $2: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_${tool}_$1.log" | tail -1)" | tee -a "$OUT/summary.txt"
  done
done
# densify (the prefill schedule's expansion kernel): exact against the weight, under both tools
for tool in memcheck racecheck; do
  compute-sanitizer --tool $tool --error-exitcode 3 python3 -c "
import torch, stoicc_ext as S
from stoicc_ext.testing import random_patch_weight
W, _ = random_patch_weight(512, 1024, 0.5, 0.25, device='cuda', tile=64)
for bn, bk in ((128, 128), (64, 64)):
    assert torch.equal(S._ops.densify(S.compress(W, bn, bk)), W)
print('densify exact')" > "$OUT/sanitizer_${tool}_densify.log" 2>&1
  echo "$tool densify: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_${tool}_densify.log" | tail -1)" | tee -a "$OUT/summary.txt"
done
(cmake -S . -B build-cmake -DSTOICC_CUDA_ARCHS=90a > "$OUT/cmake.log" 2>&1 && cmake --build build-cmake -j16 >> "$OUT/cmake.log" 2>&1) \
  || { echo "cmake build failed" | tee -a "$OUT/summary.txt"; tail -30 "$OUT/cmake.log"; }
for args in "--dtype f16" "--dtype bf16" "--dtype f16 --m 64 --block-k 64 --frac 0.7" "--dtype f16 --frac 1.0 --n 11008"; do
  ./build-cmake/stoicc_spmm_bench $args --check --iters 50 >> "$OUT/cpp_bench.log" 2>&1
  echo "cpp bench $args: rc=$? $(tail -1 "$OUT/cpp_bench.log")" | tee -a "$OUT/summary.txt"
done
cp "$OUT/summary.txt" "$FINAL_OUT/summary.txt"
tar czf "$FINAL_OUT/gpu_final_logs.tgz" -C "$OUT" .
