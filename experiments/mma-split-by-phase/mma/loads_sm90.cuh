// The loads of the mma.sync kernel on sm_90: one thread issues every copy of an item (the weight
// tile by cp.async.bulk, the X slice by TMA tensor copies) completing on the slot's mbarrier;
// before the first read of the inputs the CTA lets the next kernel launch (PDL) and prefetches
// its first weight tiles into L2. Compiled only where ptx.cuh defines STOICC_BULK_COPY (the
// sm_90 device pass); loads_sm80.cuh is the path elsewhere, arch.cuh picks.
#pragma once
#include <cstdint>

#include "../../common.h"
#include "../ptx.cuh"
#include "config.cuh"
#include "plan.cuh"

#ifdef STOICC_BULK_COPY
namespace stoicc {

// Before griddep_wait: prefetch into L2 the first STAGES weight tiles of this CTA's share
// (sequential / split_k), so that the pipeline's first bulk copies hit L2 once the previous
// kernel is done. The CSR reads here may see values a previous kernel is still writing; they
// are clamped (every address stays inside the tensors) and only steer the hint: the real
// plan is made after the wait.
template <class C>
__device__ void prefetch_share(const SpmmArgs& a) {
  const int split = C::SCHED == kSplitK ? max(a.split_k, 1) : 1;
  const int r = blockIdx.x / split, s = blockIdx.x % split;
  const int s_beg = min(max(a.s_ptr[r], 0), a.n_sparse);
  const int nS = min(max(a.s_ptr[r + 1], s_beg), a.n_sparse) - s_beg;
  const int d_beg = min(max(a.d_ptr[r], 0), a.n_dense);
  const int nD = min(max(a.d_ptr[r + 1], d_beg), a.n_dense) - d_beg;
  const int64_t cost = 9 * (int64_t)nS + 16 * (int64_t)nD;
  const int j0 = item_at_cost(cost * s / split, nS, nD);
  const int j1 = min(item_at_cost(cost * (s + 1) / split, nS, nD), j0 + C::STAGES);
  const int se = min(j1, nS);
  if (se > j0) {
    prefetch_l2(static_cast<const uint8_t*>(a.s_vals) + (size_t)(s_beg + j0) * C::kSparseValBytes,
                (uint32_t)(se - j0) * C::kSparseValBytes);
    prefetch_l2(reinterpret_cast<const uint8_t*>(a.s_meta) + (size_t)(s_beg + j0) * C::kSparseMetaBytes,
                (uint32_t)(se - j0) * C::kSparseMetaBytes);
  }
  const int db = max(j0, nS);
  if (j1 > db)
    prefetch_l2(static_cast<const uint8_t*>(a.d_vals) + (size_t)(d_beg + db - nS) * C::kWBytes,
                (uint32_t)(j1 - db) * C::kWBytes);
}

template <class C>
struct LoadsSm90 {
  struct Registers {};  // per-thread state the kernel keeps for the loads: none here

  const SpmmArgs& a;
  const CtaCoords<C>& at;
  uint8_t* smem;
  const uint8_t* s_vals;  // read only by the copy instructions (inline asm)
  const uint8_t* s_meta;
  const uint8_t* d_vals;
  uint64_t policy;          // weights: read once per call
  uint64_t* full_bar;  // __shared__ [STAGES]: the slot's copies landed
  uint64_t* red_bar;   // __shared__: split-K, the cluster peers' partials landed

  __device__ LoadsSm90(const SpmmArgs& a_, const CtaCoords<C>& at_, uint8_t* smem_)
      : a(a_), at(at_), smem(smem_), s_vals(static_cast<const uint8_t*>(a_.s_vals)),
        s_meta(reinterpret_cast<const uint8_t*>(a_.s_meta)), d_vals(static_cast<const uint8_t*>(a_.d_vals)),
        policy(evict_first_policy()) {}

  // PDL (the launcher sets the attribute on sm_90): the next kernel may start its CTAs as soon
  // as all of ours run; ours warm L2 with their first weight tiles while the previous kernel
  // drains, then wait for it before reading anything (X, the CSR, the workspace counters).
  __device__ void before_reads(const SpmmArgs& a_) {
    griddep_launch_dependents();
    if (C::SCHED != kStreamK && at.tid == 0) prefetch_share<C>(a_);
    griddep_wait();
  }

  // The slots' mbarriers and the split-K cluster reduction's, initialized together so that one
  // fence and one CTA barrier cover both.
  __device__ void setup(const SpmmArgs&, int tid, int, uint64_t* full_bar_, uint64_t* red_bar_, Registers&) {
    full_bar = full_bar_;
    red_bar = red_bar_;
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < C::STAGES; ++s) mbar_init(&full_bar[s], 1);
      mbar_init(red_bar, 1);
      mbar_fence_init();
    }
    __syncthreads();
  }

  // Start the copies of item j of segment g (one weight tile + the matching X slice) into
  // pipeline slot `slot`. One thread issues everything: the weight tile (one contiguous block)
  // by one or two bulk copies, the X slice by one TMA tensor copy per 64-column panel (rows past
  // M come back as zeros), all completing on the slot's mbarrier. The other threads issue
  // nothing, so their path from one item to the next is only the barrier, the wait and the MMAs.
  __device__ void load(const Segment& g, int j, int slot) {
    uint8_t* sw = smem + slot * C::kStageBytes;
    uint8_t* sx = sw + C::kWBytes;
    const bool sparse = j < g.nS;
    const int t = sparse ? g.s_beg + j : g.d_beg + (j - g.nS);
    const int kt = min(max(sparse ? __ldg(a.s_cols + t) : __ldg(a.d_cols + t), 0), at.num_ktiles - 1);
    const uint8_t* gv = sparse ? s_vals + (size_t)t * C::kSparseValBytes : d_vals + (size_t)t * C::kWBytes;
    if (at.tid == 0) {
      mbar_expect_tx(&full_bar[slot],
                     (sparse ? C::kSparseValBytes + C::kSparseMetaBytes : C::kWBytes) + C::kXBytes);
#pragma unroll
      for (int h = 0; h < C::BK / 64; ++h)
        tma_load_2d(sx + h * C::kXPanelBytes, a.x_tmap, kt * C::BK + h * 64, at.m0, &full_bar[slot]);
      if (sparse) {
        bulk_g2s(sw, gv, C::kSparseValBytes, &full_bar[slot], policy);
        bulk_g2s(sw + C::kSparseValBytes, s_meta + (size_t)t * C::kSparseMetaBytes, C::kSparseMetaBytes,
                 &full_bar[slot], policy);
      } else {
        bulk_g2s(sw, gv, C::kWBytes, &full_bar[slot], policy);
      }
    }
  }

  // A new batch: the copies overwrite shared memory that the planner and the previous batch
  // used through ordinary loads and stores (the stream-K cost table, the epilogue).
  __device__ void begin_batch() {
    if (at.tid == 0) fence_proxy_async_smem();
  }
  // Waits until the weight tile and X slice of `slot` landed. Bit s of `phase_bits` is the
  // parity slot s waits for next; returns them updated. (By value, not by reference: the
  // kernel's variable then never has its address taken, which keeps the code as it was.)
  __device__ uint32_t wait_stage(int slot, uint32_t phase_bits) {
    mbar_wait(&full_bar[slot], (phase_bits >> slot) & 1u);
    return phase_bits ^ (1u << slot);
  }
};

}  // namespace stoicc
#endif  // STOICC_BULK_COPY
