// The loads of the mma.sync kernel before sm_90 (sm_80/86/89, and the host pass): every thread
// copies 16-byte chunks of the weight tile and of the X slice by cp.async; the pipeline waits on
// cp.async groups. No PDL, no mbarriers. The sm_90 counterpart is loads_sm90.cuh; arch.cuh picks.
#pragma once
#include <cstdint>

#include "../../common.h"
#include "../ptx.cuh"
#include "config.cuh"
#include "plan.cuh"

namespace stoicc {

template <class C>
struct LoadsSm80 {
  using T = typename C::T;
  static constexpr int kThreads = C::kThreads;
  // This thread's 16-byte chunks of an X slice.
  static constexpr int kXChunks = C::BM * (C::BK / 8);
  static constexpr int kXPerThread = (kXChunks + kThreads - 1) / kThreads;

  // This thread's X chunks, the same (row, chunk) pairs for every item: global offset in
  // elements (< 0: row past M, zero-filled) and shared-memory offset. An object of its own (the
  // kernel keeps it), not a member: see Accumulator in compute.cuh.
  struct Registers {
    int64_t x_goff[kXPerThread];
    uint32_t x_soff[kXPerThread];
  };

  const SpmmArgs& a;
  const CtaCoords<C>& at;
  uint8_t* smem;
  const T* x;
  const uint8_t* s_vals;  // read only by the copy instructions (inline asm)
  const uint8_t* s_meta;
  const uint8_t* d_vals;
  uint64_t policy;  // weights: read once per call
  Registers* xr;

  __device__ LoadsSm80(const SpmmArgs& a_, const CtaCoords<C>& at_, uint8_t* smem_)
      : a(a_), at(at_), smem(smem_), x(static_cast<const T*>(a_.x)), s_vals(static_cast<const uint8_t*>(a_.s_vals)),
        s_meta(reinterpret_cast<const uint8_t*>(a_.s_meta)), d_vals(static_cast<const uint8_t*>(a_.d_vals)),
        policy(evict_first_policy()) {}

  // Nothing to do before the first read of the inputs (no PDL before sm_90).
  __device__ void before_reads(const SpmmArgs&) {}

  // This thread's 16-byte chunks of every X slice are the same (row, chunk) pairs for every
  // item, so their offsets are computed once here, not once per item. At M = 32/64 a CTA is
  // bound by the latency of its per-item instruction stream (docs/log/kernels-steps.md, step 12);
  // this took 15-20 % off those cases on the H100 (step 13,
  // experiments/x-offsets-per-cta/xoffsets_H100.log). x_goff < 0: row past M, zero-filled.
  // (The kernel's mbarriers are sm_90's: unused here, and dropped by the compiler.)
  __device__ void setup(const SpmmArgs& a_, int tid, int rows_valid, uint64_t*, uint64_t*, Registers& xr_) {
    xr = &xr_;
#pragma unroll
    for (int i = 0; i < kXPerThread; ++i) {
      const int c = tid + i * kThreads;
      const int r = c / (C::BK / 8), ch = c % (C::BK / 8);
      xr->x_soff[i] = C::x_chunk_offset(r, ch);
      xr->x_goff[i] = r < rows_valid ? (int64_t)r * a_.ldx + ch * 8 : -1;
    }
  }

  // Start the copies of item j of segment g (one weight tile + the matching X slice) into
  // pipeline slot `slot`, as this thread's share of the CTA's cp.async chunks.
  __device__ void load(const Segment& g, int j, int slot) {
    uint8_t* sw = smem + slot * C::kStageBytes;
    uint8_t* sx = sw + C::kWBytes;
    const ItemTile it = item_tile<C>(a, g, j, at.num_ktiles, s_vals, d_vals);
    const T* gx = x + (size_t)at.m0 * a.ldx + (size_t)it.kt * C::BK;
    const int wbytes = it.sparse ? C::kSparseValBytes : C::kWBytes;
#pragma unroll
    for (int c = at.tid; c < wbytes / 16; c += kThreads) cp_async16_stream(sw + c * 16, it.gv + c * 16, policy);
    if (it.sparse) {
      const uint8_t* gm = s_meta + (size_t)it.t * C::kSparseMetaBytes;
#pragma unroll
      for (int c = at.tid; c < C::kSparseMetaBytes / 16; c += kThreads)
        cp_async16_stream(sw + C::kSparseValBytes + c * 16, gm + c * 16, policy);
    }
    // The X slice (BM rows of BK, L2-resident: every CTA reads X) by 16-byte cp.async from all
    // threads. Rows past M are zero-filled.
#pragma unroll
    for (int i = 0; i < kXPerThread; ++i) {
      if (kXChunks % kThreads == 0 || at.tid + i * kThreads < kXChunks) {
        const bool ok = xr->x_goff[i] >= 0;
        cp_async16(sx + xr->x_soff[i], ok ? gx + xr->x_goff[i] : x, ok ? 16 : 0);
      }
    }
  }

  // A new batch of segments: nothing to order (cp.async writes through the generic proxy).
  __device__ void begin_batch() {}
  // The weight tile of `slot` landed: cp_async_wait in the main loop already says so.
  __device__ uint32_t wait_stage(int, uint32_t phase_bits) { return phase_bits; }
};

}  // namespace stoicc
