// Work assignment of the mma.sync kernel, the declarations: the Segment a CTA walks, the
// item <-> byte-cost mapping every schedule splits by, and (sm_90) the L2 prefetch of a CTA's
// first weight tiles that runs before griddep_wait. The planning code of run() itself (row_info,
// the stream-K split, plan()) is mma/plan.inc, included in run()'s body.
#pragma once
#include <cstdint>

#include "../../common.h"
#include "../ptx.cuh"
#include "config.cuh"

namespace stoicc {

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmPlan : SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED> {
  using Config = SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;
  using Config::kWBytes;
  using Config::kSparseValBytes;
  using Config::kSparseMetaBytes;

  static constexpr int kMaxSeg = 16;  // tile-row segments one CTA walks per pass (stream-K)

  // Items of a tile row are its 2:4 tiles then its dense tiles; a 2:4 tile costs 9, a dense one
  // 16 (bytes / BN*BK/8). First item whose start cost is >= `target` (cost from the row start).
  __device__ static int item_at_cost(int64_t target, int nS, int nD) {
    if (target <= 0) return 0;
    if (target <= 9 * (int64_t)nS) return (int)((target + 8) / 9);
    return min(nS + nD, nS + (int)((target - 9 * (int64_t)nS + 15) / 16));
  }

#ifdef STOICC_BULK_COPY
  // sm_90, before griddep_wait: prefetch into L2 the first STAGES weight tiles of this CTA's share
  // (sequential / split_k), so that the pipeline's first bulk copies hit L2 once the previous
  // kernel is done. The CSR reads here may see values a previous kernel is still writing; they
  // are clamped (every address stays inside the tensors) and only steer the hint: the real
  // plan is made after the wait.
  __device__ static void prefetch_share(const SpmmArgs& a) {
    const int split = SCHED == kSplitK ? max(a.split_k, 1) : 1;
    const int r = blockIdx.x / split, s = blockIdx.x % split;
    const int s_beg = min(max(a.s_ptr[r], 0), a.n_sparse);
    const int nS = min(max(a.s_ptr[r + 1], s_beg), a.n_sparse) - s_beg;
    const int d_beg = min(max(a.d_ptr[r], 0), a.n_dense);
    const int nD = min(max(a.d_ptr[r + 1], d_beg), a.n_dense) - d_beg;
    const int64_t cost = 9 * (int64_t)nS + 16 * (int64_t)nD;
    const int j0 = item_at_cost(cost * s / split, nS, nD);
    const int j1 = min(item_at_cost(cost * (s + 1) / split, nS, nD), j0 + STAGES);
    const int se = min(j1, nS);
    if (se > j0) {
      prefetch_l2(static_cast<const uint8_t*>(a.s_vals) + (size_t)(s_beg + j0) * kSparseValBytes,
                  (uint32_t)(se - j0) * kSparseValBytes);
      prefetch_l2(reinterpret_cast<const uint8_t*>(a.s_meta) + (size_t)(s_beg + j0) * kSparseMetaBytes,
                  (uint32_t)(se - j0) * kSparseMetaBytes);
      prefetch_cols(a.s_cols + s_beg + j0, se - j0);
    }
    const int db = max(j0, nS);
    if (j1 > db) {
      prefetch_l2(static_cast<const uint8_t*>(a.d_vals) + (size_t)(d_beg + db - nS) * kWBytes,
                  (uint32_t)(j1 - db) * kWBytes);
      prefetch_cols(a.d_cols + d_beg + db - nS, j1 - db);
    }
  }
  // The column indices [c, c + n) into L2: the X copy of each item waits on its index. The range
  // is widened to whole 16-byte blocks (the prefetch's granularity); a 16-byte block never
  // crosses a page, so the widened bytes lie in pages the tensor already occupies.
  __device__ static void prefetch_cols(const int* c, int n) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(c) & ~uintptr_t(15);
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(c + n) + 15) & ~uintptr_t(15);
    prefetch_l2(reinterpret_cast<const void*>(lo), (uint32_t)(hi - lo));
  }
#endif

  // A run of items of one tile row that this CTA processes, and how its sum leaves the CTA.
  struct Segment {
    int row, s_beg, nS, d_beg, nD;  // the row and its CSR ranges (clamped)
    int j0, j1;                     // items [j0, j1) of the row
    int contributors;               // CTAs sharing the row (1: write Y directly)
    int rank;                       // this CTA's place among them (fixed reduction order)
  };
};

}  // namespace stoicc
