#!/usr/bin/env bash
# On the GPU machine: ncu profiles of decode cases, text reports into $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
sec="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats"
run() {  # name, args...
  local name=$1; shift
  ncu --clock-control none -k regex:spmm --launch-skip 2 --launch-count 1 $sec python3 bench/profile_case.py "$@" > "$OUT/ncu_$name.txt" 2>&1
  grep -E "DRAM Throughput|Memory Throughput|Duration|Achieved Occupancy|Registers Per|Stall|Warp Cycles Per Issued|No Eligible|Active Warps Per|Theoretical Occ|Block Limit|One or More" "$OUT/ncu_$name.txt" | head -40
  echo "-----"
}
run f1_split2 --frac 1.0 --block 128x64 --instance spmm_m16_n128_k64_w4x1_s4_splitk --split 2
run f0_seq --frac 0.0 --block 128x64 --instance spmm_m16_n128_k64_w4x1_s4_splitk --split 1
