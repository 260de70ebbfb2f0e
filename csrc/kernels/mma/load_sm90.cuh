// The loads of the mma.sync kernel on sm_90: one thread issues every copy of an item (the weight
// tile by cp.async.bulk, the X slice by TMA tensor copies, one per 64-column panel), completing
// on the slot's mbarrier. Compiled only where ptx.cuh defines STOICC_BULK_COPY (the sm_90 device
// pass); load_sm80.cuh is the path elsewhere, kernel.cuh picks one.
#pragma once
#include <cstdint>

#include "../../common.h"
#include "../ptx.cuh"
#include "config.cuh"

#ifdef STOICC_BULK_COPY
namespace stoicc {

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmLoadSm90 : SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED> {
  using Config = SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;

  // The slots' mbarriers (full_bar) and the split-K cluster reduction's (red_bar), declared
  // __shared__ by run().
  __device__ __forceinline__ static void init_barriers(uint64_t (&full_bar)[STAGES], uint64_t& red_bar, int tid) {
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < STAGES; ++s) mbar_init(&full_bar[s], 1);
      mbar_init(&red_bar, 1);
      mbar_fence_init();
    }
    __syncthreads();
  }
};

}  // namespace stoicc
#endif  // STOICC_BULK_COPY
