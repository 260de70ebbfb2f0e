#!/usr/bin/env bash
# On the GPU machine: the verification pass of a commit. Full pytest suite (GPU tests included),
# compute-sanitizer (memcheck, racecheck, synccheck) on one instance of each schedule and kernel
# family (sequential, split_k, stream_k on the mma path; the sm_90a wgmma prefill kernel on a
# Hopper GPU) and on densify, then (BENCH=1) the prefill rows of the kernel table. $OUT gets
# summary.txt and one archive of the logs (the device tool brings back only a few files per run).
# STOICC_COMMIT names the commit in the summary (the device copy has no .git).
set -uo pipefail
FINAL_OUT=${OUT:-/tmp/out}; mkdir -p "$FINAL_OUT"
OUT=$(mktemp -d)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
echo "commit ${STOICC_COMMIT:-unknown}" | tee "$OUT/summary.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
timeout "${PYTEST_TIMEOUT:-330}" python3 -m pytest tests -q -rs -p no:cacheprovider ${PYTEST_ARGS:-} > "$OUT/pytest_full.log" 2>&1
echo "pytest rc=$? $(tail -1 "$OUT/pytest_full.log")" | tee -a "$OUT/summary.txt"
grep -E "^(FAILED|ERROR)" "$OUT/pytest_full.log" | head -20 | tee -a "$OUT/summary.txt"
sanitize() {  # sanitize TOOL LABEL ARGS...: profile_case.py under compute-sanitizer, checked against a float reference
  local tool=$1 label=$2; shift 2
  compute-sanitizer --tool "$tool" --error-exitcode 3 python3 bench/profile_case.py "$@" --iters 1 --check \
    > "$OUT/sanitizer_${tool}_${label}.log" 2>&1
  echo "$tool $label: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_${tool}_${label}.log" | tail -1)" \
    | tee -a "$OUT/summary.txt"
}
HOPPER=$(python3 -c "import torch; print(int(torch.cuda.get_device_capability() == (9, 0)))")
for tool in ${SANITIZERS:-memcheck racecheck synccheck}; do
  # every tool on one instance of every schedule (sequential, split_k, stream_k) and kernel family
  # (the wgmma pipeline at both token blocks, the two-row wgmma2 one), and on densify
  sanitize "$tool" seq --n 1024 --k 1024 --m 16 --frac 0.5 --block 128x128 --instance spmm_m16_n128_k128_w4x1_s4_seq --split 1
  sanitize "$tool" streamk --n 1024 --k 1024 --m 16 --frac 0.5 --block 128x128 --instance spmm_m16_n128_k128_w4x1_s3_streamk --split 16
  [ "$HOPPER" = 1 ] && sanitize "$tool" wgmma128 --n 640 --k 1408 --m 200 --frac 0.5 --block 64x64 --instance wgmma_m128_n64_k64_w12x1_s8_seq --split 1
  sanitize "$tool" splitk --n 1024 --k 1024 --m 16 --frac 0.5 --block 128x128 --instance spmm_m16_n128_k128_w4x1_s3_splitk --split 4
  [ "$HOPPER" = 1 ] && sanitize "$tool" wgmma256 --n 640 --k 1408 --m 300 --frac 0.5 --block 128x128 --instance wgmma_m256_n128_k128_w12x1_s2_seq --split 1
  [ "$HOPPER" = 1 ] && sanitize "$tool" wgmma2 --n 640 --k 1408 --m 300 --frac 0.5 --block 64x64 --instance wgmma2r_m256_n64_k64_w12x1_s4_seq --split 1
  compute-sanitizer --tool "$tool" --error-exitcode 3 python3 -c "
import torch, stoicc_ext as S
from stoicc_ext.testing import random_patch_weight
W, _ = random_patch_weight(512, 1024, 0.5, 0.25, device='cuda', tile=64)
for bn, bk in ((128, 128), (64, 64)):
    assert torch.equal(S.ops.densify(S.compress(W, bn, bk)), W)
print('densify exact')" > "$OUT/sanitizer_${tool}_densify.log" 2>&1
  echo "$tool densify: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_${tool}_densify.log" | tail -1)" | tee -a "$OUT/summary.txt"
done
if [ "${BENCH:-0}" = 1 ]; then
  timeout "${BENCH_TIMEOUT:-300}" python3 -m bench.bench_kernels --m 512,2048 --shapes llama --no-bf16-subset --no-host --no-plots \
    --tag prefill --out "$FINAL_OUT" > "$OUT/bench_prefill.log" 2>&1
  echo "bench prefill rc=$?" | tee -a "$OUT/summary.txt"
  tail -5 "$OUT/bench_prefill.log"
fi
cp "$OUT/summary.txt" "$FINAL_OUT/summary.txt"
tar czf "$FINAL_OUT/gpu_final_logs.tgz" -C "$OUT" .
