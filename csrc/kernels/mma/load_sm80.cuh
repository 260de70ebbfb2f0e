// The loads of the mma.sync kernel before sm_90 (sm_80/86/89, and the host pass): every thread
// copies 16-byte chunks of the weight tile and of the X slice by cp.async; the pipeline waits on
// cp.async groups. The sm_90 counterpart is load_sm90.cuh; kernel.cuh picks one by
// STOICC_BULK_COPY (ptx.cuh).
#pragma once
#include <cstdint>

#include "../../common.h"
#include "../ptx.cuh"
#include "config.cuh"

namespace stoicc {

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmLoadSm80 : SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED> {
  using Config = SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;
  using Config::kThreads;
  using Config::x_chunk_offset;

  // cp.async path: this thread's 16-byte chunks of every X slice are the same (row, chunk)
  // pairs for every item, so their offsets are computed once here, not once per item. At
  // M = 32/64 a CTA is bound by the latency of its per-item instruction stream
  // (docs/log/kernels-steps.md, step 12); this took 15-20 % off those cases on the H100
  // (step 13, experiments/x-offsets-per-cta/xoffsets_H100.log). x_goff < 0: row past M,
  // zero-filled.
  static constexpr int kXChunks = BM * (BK / 8);
  static constexpr int kXPerThread = (kXChunks + kThreads - 1) / kThreads;
  __device__ __forceinline__ static void init_x_offsets(const SpmmArgs& a, int64_t (&x_goff)[kXPerThread],
                                                        uint32_t (&x_soff)[kXPerThread], int tid, int rows_valid) {
#pragma unroll
    for (int i = 0; i < kXPerThread; ++i) {
      const int c = tid + i * kThreads;
      const int r = c / (BK / 8), ch = c % (BK / 8);
      x_soff[i] = x_chunk_offset(r, ch);
      x_goff[i] = r < rows_valid ? (int64_t)r * a.ldx + ch * 8 : -1;
    }
  }
};

}  // namespace stoicc
