// sm_90 split-K reduction of the mma.sync kernel through the thread-block cluster's distributed
// shared memory. Compiled only where ptx.cuh defines STOICC_BULK_COPY (the sm_90 device pass);
// before sm_90 split-K rows go through the fp32 workspace (flush() in reduce_workspace.inc).
#pragma once
#include <cstdint>

#include "../../common.h"
#include "../ptx.cuh"
#include "config.cuh"

#ifdef STOICC_BULK_COPY
namespace stoicc {

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmClusterReduce : SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED> {
  using Config = SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;
  using Config::kThreads;
  using Config::kMT;
  using Config::kNT;
  using Config::kStageBytes;

  // Called at the end of run(), after the pipeline loop; store_slot, my_slot and acc4 are run()'s
  // lambdas (reduce_workspace.inc).
  template <class StoreSlot, class MySlot, class Acc4>
  __device__ __forceinline__ static void reduce(const SpmmArgs& a, uint8_t* smem, uint64_t* red_bar, int tid,
                                                StoreSlot& store_slot, MySlot& my_slot, Acc4& acc4) {
    if constexpr (SCHED == kSplitK) {
      // Hopper split-K: the split CTAs of a tile row form one thread-block cluster and reduce
      // through distributed shared memory: no workspace, no counters, no extra graph node.
      // Cluster rank r owns the float4 slots f of the tile with (f / kThreads) % split == r
      // and writes that share of Y. Once every CTA is past its main loop (one cluster barrier:
      // the pipeline buffers become receive areas), each CTA pushes each owner its partial of
      // the owner's slots with st.async, counted on the owner's red_bar; an owner waits for its
      // peers' bytes, sums the partials in rank order (deterministic) and stores. No second
      // cluster barrier: nobody reads another CTA's shared memory, so a CTA may exit as soon as
      // its own share is written (docs/log/kernels-steps.md, step 18).
      const int split = a.split_k;
      if (split > 1) {
        constexpr int kTileF = BN * BM / 4;  // float4 slots of the tile's partial
        static_assert((kTileF + 8 * kThreads) * 16 <= STAGES * kStageBytes,
                      "the split-K receive area must fit in the pipeline buffers");
        const int row = blockIdx.x / split, rank = blockIdx.x % split;
        const int stride = split * kThreads;
        const int per_owner = (kTileF + stride - 1) / stride * kThreads;  // receive row length
        float4* recv = reinterpret_cast<float4*>(smem);                  // [split][per_owner]
        int owned = 0;
        for (int f = rank * kThreads; f < kTileF; f += stride) owned += min(kThreads, kTileF - f);
        cluster_sync();  // all peers are done with their pipeline buffers; red_bar is initialized
        if (tid == 0) mbar_expect_tx(red_bar, (uint32_t)((split - 1) * owned * 16));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            const int f = my_slot(mt, nt);
            const int owner = (f / kThreads) % split;
            float4* dst = recv + rank * per_owner + (f / stride) * kThreads + f % kThreads;
            if (owner == rank) *dst = acc4(mt, nt);
            else st_async_peer_f4(dst, owner, acc4(mt, nt), red_bar);
          }
        __syncthreads();               // this CTA's own partial is in place
        mbar_wait_cluster(red_bar, 0);  // and the peers' partials have landed
        for (int f = rank * kThreads + tid; f < kTileF; f += stride) {
          const int g = (f / stride) * kThreads + f % kThreads;
          float4 sum = recv[g];
          for (int r = 1; r < split; ++r) {
            const float4 p = recv[r * per_owner + g];
            sum.x += p.x; sum.y += p.y; sum.z += p.z; sum.w += p.w;
          }
          store_slot(row, f, sum);
        }
      }
    }
  }
};

}  // namespace stoicc
#endif  // STOICC_BULK_COPY
