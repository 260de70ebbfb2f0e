// The mma.sync kernel: SpmmKernel::run() and the __global__ entry the launchers (mma/launch.cuh)
// start. What it computes and how the schedules share the work: spmm_kernel.cuh.
//
// Each phase, and each architecture's path of a phase, has its own file; run() puts them
// together around the pipeline loop, which stays here. The architecture is picked here, by
// `#ifdef STOICC_BULK_COPY` (ptx.cuh: the sm_90 device pass) at the using-declaration or include.
// The code must compile to the SASS it had as one function (scripts/sass_diff.sh, all instances
// identical): NVVM's SROA promotion and phi order follow the code's structure, and moving a phase
// that uses run()'s loop state into a function or an object changed the SASS (the phase objects
// of experiments/mma-split-by-phase; here, load_item's copies as __forceinline__ functions: 40 of
// 40 instance x arch differed). So a phase is a real function where sass_diff showed that to be
// identical, and otherwise a fragment of run()'s body (*.inc) included at its original place:
//   config.cuh     SpmmConfig: warp tiling, tile and stage bytes, X's swizzled layout (a base)
//   plan.cuh       SpmmPlan (the direct base): Segment, item_at_cost, sm_90 prefetch_share
//   plan.inc       fragment: row ranges, the stream-K split, plan() (fills segs[])
//   load_sm80.cuh  SpmmLoadSm80::init_x_offsets: each thread's X chunk offsets (cp.async path)
//   load_sm80.inc  fragment, in load_item: one item's copies by cp.async
//   load_sm90.cuh  SpmmLoadSm90::init_barriers: the slots' mbarriers (bulk / TMA path)
//   load_sm90.inc  fragment, in load_item: one item's bulk and TMA copies on its mbarrier
//   compute.cuh    SpmmCompute: zero_acc, load_b, compute_sparse (mma.sp), compute_dense (mma)
//   reduce_workspace.inc  fragment: store_slot (Y + bias), flush() (direct, or the workspace)
//   reduce_sm90.cuh       SpmmClusterReduce::reduce: sm_90 split-K through distributed smem
#pragma once
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "../../common.h"
#include "../ptx.cuh"
#include "config.cuh"
#include "plan.cuh"
#include "compute.cuh"
#include "load_sm80.cuh"
#include "load_sm90.cuh"
#include "reduce_sm90.cuh"

namespace stoicc {

// Schedules (template parameter SCHED): ScheduleId in common.h.

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmKernel : SpmmPlan<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED> {
  using Plan = SpmmPlan<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;
  using Plan::kThreads;
  using Plan::kWarpRows;
  using Plan::kMT;
  using Plan::kWarpCols;
  using Plan::kNT;
  using Plan::kWBytes;
  using Plan::kSparseValBytes;
  using Plan::kSparseMetaBytes;
  using Plan::kXPanelBytes;
  using Plan::kXBytes;
  using Plan::kStageBytes;
  using Plan::kSmemBytes;
  using Plan::x_chunk_offset;
  using Plan::kMaxSeg;
  using Plan::item_at_cost;
#ifdef STOICC_BULK_COPY
  using Plan::prefetch_share;
#endif
  using Segment = typename Plan::Segment;
  using Compute = SpmmCompute<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;
#ifdef STOICC_BULK_COPY
  using Load = SpmmLoadSm90<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;  // bulk / TMA copies on mbarriers
  using ClusterReduce = SpmmClusterReduce<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;
#else
  using Load = SpmmLoadSm80<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;  // cp.async
#endif

  __device__ static void run(const SpmmArgs& a) {
    extern __shared__ __align__(128) uint8_t smem_raw[];
    uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int warp_n = warp % WARPS_N;
    const int warp_m = warp / WARPS_N;
    const int m_tile = blockIdx.y;
    const int m0 = m_tile * BM;
    const int num_ktiles = a.K / BK;
    const int TR = a.N / BN;
    const int rows_valid = min(BM, a.M - m0);

#ifndef STOICC_BULK_COPY
    const T* __restrict__ x = static_cast<const T*>(a.x);  // sm_90 copies X by TMA instead
#endif
    const uint8_t* __restrict__ s_vals = static_cast<const uint8_t*>(a.s_vals);
    const uint8_t* __restrict__ s_meta = reinterpret_cast<const uint8_t*>(a.s_meta);
    const uint8_t* __restrict__ d_vals = static_cast<const uint8_t*>(a.d_vals);
    const uint64_t policy = evict_first_policy();  // weights: read once per call
#ifdef STOICC_BULK_COPY
    // PDL (the launcher sets the attribute on sm_90): the next kernel may start its CTAs as soon
    // as all of ours run; ours warm L2 with their first weight tiles while the previous kernel
    // drains, then wait for it before reading anything (X, the CSR, the workspace counters).
    griddep_launch_dependents();
    if (SCHED != kStreamK && tid == 0) prefetch_share(a);
    griddep_wait();
#endif

    __shared__ Segment segs[kMaxSeg];
    __shared__ int n_segs;
    __shared__ int is_last;

#include "plan.inc"

#ifdef STOICC_BULK_COPY
    __shared__ __align__(8) uint64_t full_bar[STAGES];
    __shared__ __align__(8) uint64_t red_bar;  // split-K: the cluster peers' partials landed
    Load::init_barriers(full_bar, red_bar, tid);
    uint32_t phase_bits = 0;
#else
    // This thread's 16-byte chunks of every X slice (load_sm80.cuh).
    constexpr int kXChunks = Load::kXChunks;
    constexpr int kXPerThread = Load::kXPerThread;
    int64_t x_goff[kXPerThread];
    uint32_t x_soff[kXPerThread];
    Load::init_x_offsets(a, x_goff, x_soff, tid, rows_valid);
#endif

    // Start the copies of item j of segment g (one weight tile + the matching X slice) into
    // pipeline slot `slot`.
    auto load_item = [&](const Segment& g, int j, int slot) {
      uint8_t* sw = smem + slot * kStageBytes;
      uint8_t* sx = sw + kWBytes;
      const bool sparse = j < g.nS;
      const int t = sparse ? g.s_beg + j : g.d_beg + (j - g.nS);
      const int kt = min(max(sparse ? __ldg(a.s_cols + t) : __ldg(a.d_cols + t), 0), num_ktiles - 1);
      const uint8_t* gv = sparse ? s_vals + (size_t)t * kSparseValBytes : d_vals + (size_t)t * kWBytes;
#ifdef STOICC_BULK_COPY
#include "load_sm90.inc"
#else
#include "load_sm80.inc"
#endif
    };

    float acc[kMT][kNT][4];
    Compute::zero_acc(acc);

#include "reduce_workspace.inc"

    // ---- The pipeline, over the items of all segments of a batch ------------------------------
    int slot = 0;
    while (plan()) {
      const int nseg = n_segs;
      // Issue cursor (segment, item) and consume cursor walk the same list.
      int is = 0, ij = segs[0].j0;
      auto advance = [&](int& s, int& j) {
        ++j;
        while (s < nseg && j >= segs[s].j1) {
          ++s;
          if (s < nseg) j = segs[s].j0;
        }
      };
#ifdef STOICC_BULK_COPY
      // The copies below overwrite shared memory that plan() and the previous batch used through
      // ordinary loads and stores (the stream-K cost table, the epilogue).
      if (tid == 0) fence_proxy_async_smem();
#endif
      // Skip leading empty segments in the issue cursor.
      while (is < nseg && ij >= segs[is].j1) { ++is; if (is < nseg) ij = segs[is].j0; }
#pragma unroll 1
      for (int s = 0; s < STAGES - 1; ++s) {
        if (is < nseg) {
          int ls = slot + s; if (ls >= STAGES) ls -= STAGES;
          load_item(segs[is], ij, ls);
          advance(is, ij);
        }
        cp_async_commit();
      }
      for (int cs = 0; cs < nseg; ++cs) {
        const Segment& g = segs[cs];
        for (int j = g.j0; j < g.j1; ++j) {
          cp_async_wait<STAGES - 2>();  // this thread's X copies of this item landed
          __syncthreads();              // every warp is done with the previous item's slot
          if (is < nseg) {
            int ls = slot + STAGES - 1; if (ls >= STAGES) ls -= STAGES;
            load_item(segs[is], ij, ls);
            advance(is, ij);
          }
          cp_async_commit();
#ifdef STOICC_BULK_COPY
          mbar_wait(&full_bar[slot], (phase_bits >> slot) & 1u);  // the weight tile landed
          phase_bits ^= 1u << slot;
#endif
          const uint8_t* sw = smem + slot * kStageBytes;
          if (j < g.nS) Compute::compute_sparse(acc, sw, sw + kWBytes, warp_n, warp_m, lane);
          else Compute::compute_dense(acc, sw, sw + kWBytes, warp_n, warp_m, lane);
          if (++slot == STAGES) slot = 0;
        }
#ifdef STOICC_BULK_COPY
        if (SCHED == kSplitK && g.contributors > 1) continue;  // reduced in the cluster below
#endif
        flush(g);
      }
      cp_async_wait<0>();
      __syncthreads();  // segs[] and the pipeline buffers are reused by the next batch
      costs_in_smem = false;
    }

#ifdef STOICC_BULK_COPY
    ClusterReduce::reduce(a, smem, &red_bar, tid, store_slot, my_slot, acc4);
#endif
  }
};

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
__global__ void __launch_bounds__(WN * WM * 32) spmm_kernel(const __grid_constant__ SpmmArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  SpmmKernel<T, BM, BN, BK, WN, WM, ST, SCHED>::run(a);
#endif
}

}  // namespace stoicc
