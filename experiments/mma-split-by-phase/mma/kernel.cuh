// The mma.sync kernel's body: the phases of kernels/mma/ put together around the pipeline, and
// the __global__ entry the launchers (launch.cuh) start. What the kernel computes and how the
// schedules share the work: spmm_kernel.cuh.
//
// The phases were one function with lambdas; they are written so that the compiler still makes
// the same code of them (scripts/sass_diff.sh checks it), which takes four rules:
// - A phase object holds references to the kernel's state, as the lambdas' captures did; code
//   that ran in the function's body (a constructor, setup, before_reads) takes the arguments as
//   a reference parameter instead, which the compiler knows it may read ahead.
// - An array indexed in a loop (the accumulator, the X offsets) is an object of its own: LLVM
//   keeps it in memory until the loop is unrolled, and with it whatever shares its object.
// - NVVM honours __restrict__ on local variables (and references to them), not on members.
// - run() declares every __shared__ variable, in one order, which fixes their addresses.
#pragma once
#include <cstdint>

#include "../../common.h"
#include "../ptx.cuh"
#include "arch.cuh"
#include "compute.cuh"
#include "config.cuh"
#include "plan.cuh"
#include "reduce.cuh"

namespace stoicc {

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmKernel : MmaConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED> {
  using C = MmaConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;

  __device__ static void run(const SpmmArgs& a) {
    extern __shared__ __align__(128) uint8_t smem_raw[];
    uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    const CtaCoords<C> at(a);
    MmaLoads<C> loads(a, at, smem);
    loads.before_reads(a);  // sm_90: PDL; nothing the previous kernel writes is read before it

    __shared__ Segment segs[kMaxSeg];
    __shared__ int n_segs;
    __shared__ int is_last;
    // The mbarriers of the sm_90 loads (declared here with the others: one place and order for
    // the kernel's __shared__ variables, which fixes their addresses). Unused before sm_90.
    __shared__ __align__(8) uint64_t full_bar[STAGES];  // slot s: its copies landed
    __shared__ __align__(8) uint64_t red_bar;           // split-K: the cluster peers' partials landed
    Planner<C> plan(a, at, smem, segs, n_segs);  // stream-K: the cost table, in the pipeline buffer
    typename MmaLoads<C>::Registers load_regs;  // sm_80: this thread's X chunk offsets
    loads.setup(a, at.tid, at.rows_valid, full_bar, &red_bar, load_regs);
    uint32_t phase_bits = 0;  // sm_90: bit s, the mbarrier parity slot s waits for next
    Accumulator<C> acc;
    acc.zero();
    MmaSteps<C> mma{at, acc};
    // Restrict pointers as local variables: NVVM takes __restrict__ from a local (and from
    // references to it), not from a struct member; without it the stores to Y would make it
    // reload the arguments between them.
    const T* __restrict__ bias = static_cast<const T*>(a.bias);
    T* __restrict__ y = static_cast<T*>(a.y);
    Epilogue<C> out(a, at, is_last, bias, y);

    // ---- The pipeline, over the items of all segments of a batch ------------------------------
    int slot = 0;
    while (plan.next()) {
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
      loads.begin_batch();
      // Skip leading empty segments in the issue cursor.
      while (is < nseg && ij >= segs[is].j1) { ++is; if (is < nseg) ij = segs[is].j0; }
#pragma unroll 1
      for (int s = 0; s < STAGES - 1; ++s) {
        if (is < nseg) {
          int ls = slot + s; if (ls >= STAGES) ls -= STAGES;
          loads.load(segs[is], ij, ls);
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
            loads.load(segs[is], ij, ls);
            advance(is, ij);
          }
          cp_async_commit();
          phase_bits = loads.wait_stage(slot, phase_bits);  // sm_90: the slot's bulk copies landed
          const uint8_t* sw = smem + slot * C::kStageBytes;
          if (j < g.nS) mma.sparse_item(sw, sw + C::kWBytes);
          else mma.dense_item(sw, sw + C::kWBytes);
          if (++slot == STAGES) slot = 0;
        }
        if constexpr (SCHED == kSplitK && SplitKCluster<C>::kEnabled)
          if (g.contributors > 1) continue;  // reduced in the cluster below
        out.flush(g, acc);
      }
      cp_async_wait<0>();
      __syncthreads();  // segs[] and the pipeline buffers are reused by the next batch
      plan.end_batch();
    }

    if constexpr (SCHED == kSplitK && SplitKCluster<C>::kEnabled)
      SplitKCluster<C>::run(a, at, smem, loads.red_bar, acc, out);
  }
};

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
__global__ void __launch_bounds__(WN * WM * 32) spmm_kernel(const __grid_constant__ SpmmArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  SpmmKernel<T, BM, BN, BK, WN, WM, ST, SCHED>::run(a);
#endif
}

}  // namespace stoicc
