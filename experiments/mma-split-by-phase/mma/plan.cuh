// Work assignment of the mma.sync kernel: which items of which tile rows a CTA computes, and how
// the sum of each run of items leaves the CTA (written to Y, or reduced with the CTAs that share
// the tile row). The schedules are described in spmm_kernel.cuh.
#pragma once
#include <cstdint>

#include "../../common.h"
#include "config.cuh"

namespace stoicc {

// Items of a tile row are its 2:4 tiles then its dense tiles; a 2:4 tile costs 9, a dense one
// 16 (bytes / BN*BK/8). First item whose start cost is >= `target` (cost from the row start).
__device__ inline int item_at_cost(int64_t target, int nS, int nD) {
  if (target <= 0) return 0;
  if (target <= 9 * (int64_t)nS) return (int)((target + 8) / 9);
  return min(nS + nD, nS + (int)((target - 9 * (int64_t)nS + 15) / 16));
}

// A run of items of one tile row that this CTA processes, and how its sum leaves the CTA.
struct Segment {
  int row, s_beg, nS, d_beg, nD;  // the row and its CSR ranges (clamped)
  int j0, j1;                     // items [j0, j1) of the row
  int contributors;               // CTAs sharing the row (1: write Y directly)
  int rank;                       // this CTA's place among them (fixed reduction order)
};
constexpr int kMaxSeg = 16;  // tile-row segments one CTA walks per pass (stream-K)

// Item j of segment g: its weight tile (index t in its CSR list, K tile kt, values at gv).
struct ItemTile {
  bool sparse;
  int t, kt;
  const uint8_t* gv;
};
template <class C>
__device__ inline ItemTile item_tile(const SpmmArgs& a, const Segment& g, int j, int num_ktiles,
                                     const uint8_t* s_vals, const uint8_t* d_vals) {
  ItemTile it;
  it.sparse = j < g.nS;
  it.t = it.sparse ? g.s_beg + j : g.d_beg + (j - g.nS);
  it.kt = min(max(it.sparse ? __ldg(a.s_cols + it.t) : __ldg(a.d_cols + it.t), 0), num_ktiles - 1);
  it.gv = it.sparse ? s_vals + (size_t)it.t * C::kSparseValBytes : d_vals + (size_t)it.t * C::kWBytes;
  return it;
}

// Fills the CTA's segment list (in shared memory), one batch of at most kMaxSeg at a time.
template <class C>
struct Planner {
  const SpmmArgs& a;
  const int tid, TR;
  Segment* segs;  // __shared__ [kMaxSeg]
  int& n_segs;    // __shared__
  // Stream-K state (cost space): this CTA owns the item starts in [lo, hi).
  int G = 1, cta = 0;
  int64_t lo = 0, hi = 0, total = 0;
  int next_row = 0;     // stream-K: first row not yet turned into segments; else 1 once planned
  int* row_cost;        // stream-K: prefix costs, in the pipeline buffer
  bool costs_in_smem = true;  // until the pipeline overwrites them (end_batch)

  __device__ Planner(const SpmmArgs& a_, const CtaCoords<C>& at, uint8_t* smem, Segment* segs_, int& n_segs_)
      : a(a_), tid(at.tid), TR(at.TR), segs(segs_), n_segs(n_segs_), row_cost(reinterpret_cast<int*>(smem)) {
    if (C::SCHED == kStreamK) {
      G = a_.split_k;
      cta = blockIdx.x;
      // Prefix cost of every row start, read by all threads at once (one latency, not TR).
      for (int r = at.tid; r <= at.TR; r += C::kThreads)
        row_cost[r] = 9 * min(max(a_.s_ptr[r], 0), a_.n_sparse) + 16 * min(max(a_.d_ptr[r], 0), a_.n_dense);
      __syncthreads();
      total = row_cost[at.TR];
      lo = total * cta / G;
      hi = total * (cta + 1) / G;
      // First row whose cost range ends at or after lo (binary search in shared memory).
      int L = 0, H = at.TR;
      while (L < H) {
        const int mid = (L + H) / 2;
        if (row_cost[mid + 1] >= lo) H = mid; else L = mid + 1;
      }
      next_row = L;
    }
  }

  // Row CSR ranges, clamped so that a corrupted tuple cannot make us read out of bounds
  // (docs/format.md section 2).
  __device__ void row_info(int r, Segment& g) const {
    g.row = r;
    g.s_beg = min(max(a.s_ptr[r], 0), a.n_sparse);
    g.nS = min(max(a.s_ptr[r + 1], g.s_beg), a.n_sparse) - g.s_beg;
    g.d_beg = min(max(a.d_ptr[r], 0), a.n_dense);
    g.nD = min(max(a.d_ptr[r + 1], g.d_beg), a.n_dense) - g.d_beg;
  }
  // owner(v): the CTA whose cost range holds cost v.
  __device__ int owner(int64_t v) const {
    if (total <= 0) return 0;
    const int64_t o = ((v + 1) * G + total - 1) / total - 1;
    return (int)(o < G - 1 ? o : G - 1);
  }
  __device__ int64_t cost_of(int r) const {
    if (costs_in_smem) return row_cost[r];
    return 9 * (int64_t)min(max(a.s_ptr[r], 0), a.n_sparse) + 16 * (int64_t)min(max(a.d_ptr[r], 0), a.n_dense);
  }

  // Fills segs[] with the next batch of segments. Returns false when the CTA has no more work.
  __device__ bool next() {
    if (tid == 0) {
      int n = 0;
      if (C::SCHED == kStreamK) {
        while (next_row < TR && n < kMaxSeg) {
          const int r = next_row;
          const int64_t c0 = cost_of(r), c1 = cost_of(r + 1);
          const bool last_cta = cta == G - 1;
          if (c0 > hi || (c0 == hi && !last_cta)) break;
          ++next_row;
          Segment g;
          row_info(r, g);
          if (c1 == c0) {  // empty row: its owner writes bias (or zeros)
            if (c0 >= lo) { g.j0 = g.j1 = 0; g.contributors = 1; g.rank = 0; segs[n++] = g; }
            continue;
          }
          g.j0 = item_at_cost(lo - c0, g.nS, g.nD);
          g.j1 = item_at_cost(min(hi, c1) - c0, g.nS, g.nD);
          if (g.j0 >= g.j1) continue;  // no item starts here: not a contributor
          const int first = owner(c0);
          const int last = owner(c1 - (g.nD > 0 ? 16 : 9));
          g.contributors = last - first + 1;
          g.rank = cta - first;
          segs[n++] = g;
        }
      } else if (next_row == 0) {
        const int split = C::SCHED == kSplitK ? a.split_k : 1;
        Segment g;
        row_info(blockIdx.x / split, g);
        const int s = blockIdx.x % split;
        const int64_t cost = 9 * (int64_t)g.nS + 16 * (int64_t)g.nD;
        g.j0 = item_at_cost(cost * s / split, g.nS, g.nD);
        g.j1 = item_at_cost(cost * (s + 1) / split, g.nS, g.nD);
        g.contributors = split;
        g.rank = s;
        segs[n++] = g;
        next_row = 1;
      }
      n_segs = n;
    }
    __syncthreads();
    return n_segs > 0;
  }

  // The batch is done and the pipeline has overwritten the cost table: read the CSR from now on.
  __device__ void end_batch() { costs_in_smem = false; }
};

}  // namespace stoicc
