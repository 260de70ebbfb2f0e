// How a finished segment's accumulator leaves the CTA (every arch): written to Y (+ bias) when
// the CTA has the tile row alone, else reduced through the fp32 workspace with the CTAs that
// share the row. Each contributor parks its partial; the last to arrive (atomic counter) sums
// them in rank order (deterministic), writes Y and resets the counter to zero, which keeps the
// call safe to capture and replay in a CUDA graph. (On sm_90 split-K rows are reduced in the
// thread-block cluster instead: reduce_sm90.cuh.)
#pragma once
#include <cstdint>

#include "../../common.h"
#include "../ptx.cuh"
#include "compute.cuh"
#include "config.cuh"
#include "plan.cuh"

namespace stoicc {

template <class C>
struct Epilogue {
  using T = typename C::T;
  static constexpr int BM = C::BM, BN = C::BN, kMT = C::kMT, kNT = C::kNT, kThreads = C::kThreads;

  const SpmmArgs& a;
  const CtaCoords<C>& at;
  int& is_last;  // __shared__: this CTA arrived last at a workspace row
  const T* __restrict__ const& bias;
  T* __restrict__ const& y;

  __device__ Epilogue(const SpmmArgs& a_, const CtaCoords<C>& at_, int& is_last_, const T* __restrict__ const& bias_,
                      T* __restrict__ const& y_)
      : a(a_), at(at_), is_last(is_last_), bias(bias_), y(y_) {}

  // Writes float4 slot f (fragment order: (warp, mt, nt, lane)) of tile row `row` to Y.
  __device__ void store_slot(int row, int f, float4 v) {
    const int fl = f % 32, rest = f / 32, nt = rest % kNT, mt = (rest / kNT) % kMT, w = rest / (kNT * kMT);
    const int n = row * BN + ((w % C::WARPS_N) * kMT + mt) * 16 + (fl >> 2);
    const int m = at.m0 + (w / C::WARPS_N) * C::kWarpCols + nt * 8 + 2 * (fl & 3);
    const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int nn = n + 8 * (i >> 1), mm = m + (i & 1);
      if (mm < a.M) y[(size_t)mm * a.ldy + nn] = from_float<T>(e[i] + (bias ? to_float<T>(bias[nn]) : 0.f));
    }
  }

  // Sends the accumulator of a finished segment out of the CTA and clears it.
  __device__ void flush(const Segment& g, Accumulator<C>& acc) {
    if (g.contributors <= 1) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) store_slot(g.row, frag_slot<C>(at, mt, nt), acc.frag(mt, nt));
      acc.zero();
      return;
    }
    // Shared row: park the partial in the fp32 workspace; the last CTA to arrive (atomic
    // counter) sums all partials in rank order (deterministic), writes Y and resets the counter
    // to zero (graph replays find it zero again). The workspace holds `max_contrib` partials
    // per row; ranks past it (only with a corrupted tuple) are dropped, never written.
    const int max_contrib = C::SCHED == kSplitK ? a.split_k : a.max_contrib;
    const size_t row_id = (size_t)at.m_tile * at.TR + g.row;
    float4* ws = reinterpret_cast<float4*>(a.workspace) + row_id * max_contrib * (BN * BM / 4);
    if (g.rank < max_contrib) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          __stcg(&ws[(size_t)g.rank * (BN * BM / 4) + frag_slot<C>(at, mt, nt)], acc.frag(mt, nt));
    }
    acc.zero();
    __threadfence();
    __syncthreads();
    if (at.tid == 0) {
      const int prev = atomicAdd(&a.counters[row_id], 1);
      is_last = (prev == g.contributors - 1);
      if (is_last) a.counters[row_id] = 0;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    const int n = min(g.contributors, max_contrib);
    for (int f = at.tid; f < BN * BM / 4; f += kThreads) {
      float4 sum = __ldcg(&ws[f]);
      for (int r = 1; r < n; ++r) {
        const float4 p = __ldcg(&ws[(size_t)r * (BN * BM / 4) + f]);
        sum.x += p.x; sum.y += p.y; sum.z += p.z; sum.w += p.w;
      }
      store_slot(g.row, f, sum);
    }
  }
};

}  // namespace stoicc
