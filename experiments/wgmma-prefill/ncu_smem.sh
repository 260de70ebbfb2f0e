#!/usr/bin/env bash
# Tests the shared-memory-bandwidth hypothesis of two-rows/README.md on the GPU machine: profiles
# the shipped prefill kernel at f = 1 and f = 0 (4096x4096, M = 2048) with the shared-memory
# tables and bank metrics, and lists the L1TEX/shared metric names this ncu knows (to refine).
# Run from the repository root with the extension built: bash experiments/wgmma-prefill/ncu_smem.sh
# Prediction if the hypothesis holds: at f = 1 the shared-memory data-bank throughput is near its
# peak (>= 85 %) while the tensor pipe is ~55 %; at f = 0 the bank throughput is lower and the
# tensor pipe ~80 %.
set -uo pipefail
OUT=${OUT:-/tmp/ncu_smem}; mkdir -p "$OUT"
export PYTHONPATH=$PWD
ncu --query-metrics 2>/dev/null | grep -iE "l1tex__data_bank|shared|lsu_wavefronts|tensor_op" > "$OUT/metric_names.txt"
for f in 1.0 0.0; do
  timeout 120 ncu --clock-control none -k regex:spmm_wgmma --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis \
    --metrics l1tex__data_bank_reads.avg.pct_of_peak_sustained_elapsed,l1tex__data_bank_writes.avg.pct_of_peak_sustained_elapsed,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__throughput.avg.pct_of_peak_sustained_elapsed \
    python3 bench/profile_case.py --n 4096 --k 4096 --m 2048 --frac $f --block 128x64 \
      --instance wgmma_m256_n128_k64_w12x1_s4_seq --split 1 --iters 2 > "$OUT/ncu_smem_f$f.txt" 2>&1
  echo "f=$f rc=$? -> $OUT/ncu_smem_f$f.txt"
done
