// The tile-sparse GEMM: Y[M, N] = X[M, K] @ W^T (+ bias), W in the mixed-tile format of
// docs/format.md (per tile row: a CSR list of 2:4 tiles and one of dense tiles).
//
// One CTA computes the BLOCK_N x BLOCK_M tile of Y^T = W X^T for one tile row of W and one block
// of BLOCK_M tokens. The weight is the MMA's A operand because the hardware takes only a sparse A.
// The CTA walks the tile row's item list (its 2:4 tiles, then its dense tiles) through a
// STAGES-deep cp.async pipeline; each item brings one weight tile (values, and metadata for 2:4
// tiles) and the matching BLOCK_M x BLOCK_K slice of X. 2:4 items go through mma.sp m16n8k32,
// dense items through mma m16n8k16, into one f32 accumulator.
//
// Schedules (SCHED):
//   sequential: one CTA per (tile row, token block), direct epilogue.
//   split_k:    `split_k` CTAs share each tile row, each taking a contiguous slice of its items
//     balanced by bytes (a 2:4 tile costs 9/16 of a dense one). Decode needs this: N / BLOCK_N
//     tile rows alone are far fewer CTAs than SMs. On sm_90 the split CTAs of a row form one
//     thread-block cluster and reduce through distributed shared memory (split_k <= 8); before
//     sm_90 through the fp32 workspace (below).
//   stream_k:   `split_k` = G CTAs (about one per SM slot) share the whole weight: CTA c takes the
//     items whose start lies in the c-th G-th of the total byte cost, crossing tile rows. Every SM
//     streams the same number of bytes whatever the mix of tile types per row. Rows shared by
//     several CTAs are reduced through the workspace.
// Workspace reduction: each contributor parks its fp32 partial; the last to arrive (atomic
// counter) sums them in a fixed order (deterministic), writes Y and resets the counter to zero,
// which keeps the call safe to capture and replay in a CUDA graph.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "../common.h"
#include "ptx.cuh"
#include "launch.cuh"
#include "tensor_map.cuh"

namespace stoicc {

// Schedules (template parameter SCHED): ScheduleId in common.h.

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmKernel {
  static constexpr int kThreads = WARPS_N * WARPS_M * 32;
  static constexpr int kWarpRows = BN / WARPS_N;   // weight rows per warp
  static constexpr int kMT = kWarpRows / 16;       // m16 blocks per warp
  static constexpr int kWarpCols = BM / WARPS_M;   // tokens per warp
  static constexpr int kNT = kWarpCols / 8;        // n8 blocks per warp
  static constexpr int kWBytes = 2 * BN * BK;      // a dense tile; a 2:4 tile uses 9/16 of it
  static constexpr int kSparseValBytes = BN * BK;  // BN*BK/2 values of 2 bytes
  static constexpr int kSparseMetaBytes = BN * BK / 8;
  // The X slice is stored as BK/64 panels of [BM rows][64 columns] (128 bytes a row, no padding)
  // with the 128-byte swizzle: the 16-byte chunk c of row r sits at chunk c ^ (r % 8) of its
  // row. The 8 rows one ldmatrix reads (and the 8 chunks of a row a copy writes) then fall in 8
  // different bank groups, and it is the layout a TMA tensor copy with SWIZZLE_128B writes
  // (sm_90 path). No padding keeps a stage small enough for 3 CTAs per H100 SM at M = 64.
  static constexpr int kXPanelBytes = BM * 128;
  static constexpr int kXBytes = BM * 2 * BK;
  static constexpr int kStageBytes = kWBytes + kXBytes;
  // + 1 KiB: the dynamic shared memory base is rounded up to 1024 bytes, the alignment the TMA
  // 128-byte swizzle pattern is defined against (every stage and panel offset is a multiple of it).
  static constexpr size_t kSmemBytes = (size_t)STAGES * kStageBytes + 1024;
  static_assert(kWBytes % 1024 == 0 && kXPanelBytes % 1024 == 0, "panels must stay 1024-byte aligned");
  // Byte offset of chunk `ch` (8 columns) of X row r inside a slice.
  __device__ static int x_chunk_offset(int r, int ch) {
    return (ch >> 3) * kXPanelBytes + r * 128 + (((ch & 7) ^ (r & 7)) << 4);
  }
  static constexpr int kMaxSeg = 16;  // tile-row segments one CTA walks per pass (stream-K)

  static_assert(BK % 64 == 0, "BLOCK_K must be a multiple of 64 (one metadata word spans 64 K)");
  static_assert(kWarpRows % 16 == 0 && kMT >= 1, "each warp needs whole m16 blocks");
  static_assert(kWarpCols % 8 == 0 && kNT >= 1, "each warp needs whole n8 blocks");
  static_assert(STAGES >= 2, "pipeline needs at least two stages");

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
    }
    const int db = max(j0, nS);
    if (j1 > db)
      prefetch_l2(static_cast<const uint8_t*>(a.d_vals) + (size_t)(d_beg + db - nS) * kWBytes,
                  (uint32_t)(j1 - db) * kWBytes);
  }
#endif

  // A run of items of one tile row that this CTA processes, and how its sum leaves the CTA.
  struct Segment {
    int row, s_beg, nS, d_beg, nD;  // the row and its CSR ranges (clamped)
    int j0, j1;                     // items [j0, j1) of the row
    int contributors;               // CTAs sharing the row (1: write Y directly)
    int rank;                       // this CTA's place among them (fixed reduction order)
  };

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

    // Row CSR ranges, clamped so that a corrupted tuple cannot make us read out of bounds
    // (docs/format.md section 2).
    auto row_info = [&](int r, Segment& g) {
      g.row = r;
      g.s_beg = min(max(a.s_ptr[r], 0), a.n_sparse);
      g.nS = min(max(a.s_ptr[r + 1], g.s_beg), a.n_sparse) - g.s_beg;
      g.d_beg = min(max(a.d_ptr[r], 0), a.n_dense);
      g.nD = min(max(a.d_ptr[r + 1], g.d_beg), a.n_dense) - g.d_beg;
    };

    // ---- Work assignment: the segments of this CTA --------------------------------------------
    // Stream-K state (cost space): this CTA owns the item starts in [lo, hi).
    int G = 1, cta = 0;
    int64_t lo = 0, hi = 0, total = 0;
    int next_row = 0;  // stream-K: first row not yet turned into segments
    int* row_cost = reinterpret_cast<int*>(smem);  // stream-K: prefix costs, in the pipeline buffer
    bool costs_in_smem = true;                     // until the pipeline overwrites them
    if (SCHED == kStreamK) {
      G = a.split_k;
      cta = blockIdx.x;
      // Prefix cost of every row start, read by all threads at once (one latency, not TR).
      for (int r = tid; r <= TR; r += kThreads)
        row_cost[r] = 9 * min(max(a.s_ptr[r], 0), a.n_sparse) + 16 * min(max(a.d_ptr[r], 0), a.n_dense);
      __syncthreads();
      total = row_cost[TR];
      lo = total * cta / G;
      hi = total * (cta + 1) / G;
      // First row whose cost range ends at or after lo (binary search in shared memory).
      int L = 0, H = TR;
      while (L < H) {
        const int mid = (L + H) / 2;
        if (row_cost[mid + 1] >= lo) H = mid; else L = mid + 1;
      }
      next_row = L;
    }
    // owner(v): the CTA whose cost range holds cost v.
    auto owner = [&](int64_t v) -> int {
      if (total <= 0) return 0;
      const int64_t o = ((v + 1) * G + total - 1) / total - 1;
      return (int)(o < G - 1 ? o : G - 1);
    };
    auto cost_of = [&](int r) -> int64_t {
      if (costs_in_smem) return row_cost[r];
      return 9 * (int64_t)min(max(a.s_ptr[r], 0), a.n_sparse) + 16 * (int64_t)min(max(a.d_ptr[r], 0), a.n_dense);
    };

    // Fills segs[] with the next batch of segments. Returns false when the CTA has no more work.
    auto plan = [&]() -> bool {
      if (tid == 0) {
        int n = 0;
        if (SCHED == kStreamK) {
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
          const int split = SCHED == kSplitK ? a.split_k : 1;
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
    };

#ifdef STOICC_BULK_COPY
    __shared__ __align__(8) uint64_t full_bar[STAGES];
    __shared__ __align__(8) uint64_t red_bar;  // split-K: the cluster peers' partials landed
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < STAGES; ++s) mbar_init(&full_bar[s], 1);
      mbar_init(&red_bar, 1);
      mbar_fence_init();
    }
    __syncthreads();
    uint32_t phase_bits = 0;
#endif

#ifndef STOICC_BULK_COPY
    // cp.async path: this thread's 16-byte chunks of every X slice are the same (row, chunk)
    // pairs for every item, so their offsets are computed once here, not once per item. At
    // M = 32/64 a CTA is bound by the latency of its per-item instruction stream
    // (docs/log/kernels-steps.md, step 12); this took 15-20 % off those cases on the H100
    // (step 13, experiments/x-offsets-per-cta/xoffsets_H100.log). x_goff < 0: row past M,
    // zero-filled.
    constexpr int kXChunks = BM * (BK / 8);
    constexpr int kXPerThread = (kXChunks + kThreads - 1) / kThreads;
    int64_t x_goff[kXPerThread];
    uint32_t x_soff[kXPerThread];
#pragma unroll
    for (int i = 0; i < kXPerThread; ++i) {
      const int c = tid + i * kThreads;
      const int r = c / (BK / 8), ch = c % (BK / 8);
      x_soff[i] = x_chunk_offset(r, ch);
      x_goff[i] = r < rows_valid ? (int64_t)r * a.ldx + ch * 8 : -1;
    }
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
      // One thread issues everything: the weight tile (one contiguous block) by one or two bulk
      // copies, the X slice by one TMA tensor copy per 64-column panel (rows past M come back
      // as zeros), all completing on the slot's mbarrier. The other threads issue nothing, so
      // their path from one item to the next is only the barrier, the wait and the MMAs.
      if (tid == 0) {
        mbar_expect_tx(&full_bar[slot], (sparse ? kSparseValBytes + kSparseMetaBytes : kWBytes) + kXBytes);
#pragma unroll
        for (int h = 0; h < BK / 64; ++h)
          tma_load_2d(sx + h * kXPanelBytes, a.x_tmap, kt * BK + h * 64, m0, &full_bar[slot]);
        if (sparse) {
          bulk_g2s(sw, gv, kSparseValBytes, &full_bar[slot], policy);
          bulk_g2s(sw + kSparseValBytes, s_meta + (size_t)t * kSparseMetaBytes, kSparseMetaBytes, &full_bar[slot],
                   policy);
        } else {
          bulk_g2s(sw, gv, kWBytes, &full_bar[slot], policy);
        }
      }
#else
      const T* gx = x + (size_t)m0 * a.ldx + (size_t)kt * BK;
      const int wbytes = sparse ? kSparseValBytes : kWBytes;
#pragma unroll
      for (int c = tid; c < wbytes / 16; c += kThreads) cp_async16_stream(sw + c * 16, gv + c * 16, policy);
      if (sparse) {
        const uint8_t* gm = s_meta + (size_t)t * kSparseMetaBytes;
#pragma unroll
        for (int c = tid; c < kSparseMetaBytes / 16; c += kThreads)
          cp_async16_stream(sw + kSparseValBytes + c * 16, gm + c * 16, policy);
      }
      // The X slice (BM rows of BK, L2-resident: every CTA reads X) by 16-byte cp.async from all
      // threads. Rows past M are zero-filled.
#pragma unroll
      for (int i = 0; i < kXPerThread; ++i) {
        if (kXChunks % kThreads == 0 || tid + i * kThreads < kXChunks) {
          const bool ok = x_goff[i] >= 0;
          cp_async16(sx + x_soff[i], ok ? gx + x_goff[i] : x, ok ? 16 : 0);
        }
      }
#endif
    };

    float acc[kMT][kNT][4];
    auto zero_acc = [&]() {
#pragma unroll
      for (int i = 0; i < kMT; ++i)
#pragma unroll
        for (int j = 0; j < kNT; ++j)
#pragma unroll
          for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.f;
    };
    zero_acc();

    // B fragments (X^T) for a 32-wide K step `ks` of every n8 block of this warp: one ldmatrix.x4
    // per n8 block gives k = 2q.., 2q+8.., 2q+16.., 2q+24.. of token g.
    auto load_b = [&](const uint8_t* sx, int ks, uint32_t (&b)[kNT][4]) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int r = warp_m * kWarpCols + nt * 8 + (lane & 7);
        ldmatrix_x4(b[nt], sx + x_chunk_offset(r, ks * 4 + (lane >> 3)));
      }
    };

    auto compute_sparse = [&](const uint8_t* sw, const uint8_t* sx) {
      const uint4* wv = reinterpret_cast<const uint4*>(sw);                        // [BN/16][BK/32][32]
      const uint32_t* wm = reinterpret_cast<const uint32_t*>(sw + kSparseValBytes);  // [BN/16][BK/64][32]
#pragma unroll
      for (int kp = 0; kp < BK / 64; ++kp) {
        uint32_t e[kMT];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) e[mt] = wm[((warp_n * kMT + mt) * (BK / 64) + kp) * 32 + lane];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int ks = 2 * kp + half;
          uint32_t b[kNT][4];
          load_b(sx, ks, b);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            const uint4 av = wv[((warp_n * kMT + mt) * (BK / 32) + ks) * 32 + lane];
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) {
              if (half == 0) mma_sparse<T, 0>(acc[mt][nt], av, b[nt], e[mt]);
              else mma_sparse<T, 1>(acc[mt][nt], av, b[nt], e[mt]);
            }
          }
        }
      }
    };

    auto compute_dense = [&](const uint8_t* sw, const uint8_t* sx) {
      const uint4* wv = reinterpret_cast<const uint4*>(sw);  // [BN/16][BK/16][32]
#pragma unroll
      for (int ks = 0; ks < BK / 32; ++ks) {
        uint32_t b[kNT][4];
        load_b(sx, ks, b);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          const uint4 a0 = wv[((warp_n * kMT + mt) * (BK / 16) + 2 * ks) * 32 + lane];
          const uint4 a1 = wv[((warp_n * kMT + mt) * (BK / 16) + 2 * ks + 1) * 32 + lane];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            mma_dense<T>(acc[mt][nt], a0, b[nt][0], b[nt][1]);
            mma_dense<T>(acc[mt][nt], a1, b[nt][2], b[nt][3]);
          }
        }
      }
    };

    const T* __restrict__ bias = static_cast<const T*>(a.bias);
    T* __restrict__ y = static_cast<T*>(a.y);
    // Writes float4 slot f (fragment order: (warp, mt, nt, lane)) of tile row `row` to Y.
    auto store_slot = [&](int row, int f, float4 v) {
      const int fl = f % 32, rest = f / 32, nt = rest % kNT, mt = (rest / kNT) % kMT, w = rest / (kNT * kMT);
      const int n = row * BN + ((w % WARPS_N) * kMT + mt) * 16 + (fl >> 2);
      const int m = m0 + (w / WARPS_N) * kWarpCols + nt * 8 + 2 * (fl & 3);
      const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int nn = n + 8 * (i >> 1), mm = m + (i & 1);
        if (mm < a.M) y[(size_t)mm * a.ldy + nn] = from_float<T>(e[i] + (bias ? to_float<T>(bias[nn]) : 0.f));
      }
    };
    auto my_slot = [&](int mt, int nt) { return ((warp * kMT + mt) * kNT + nt) * 32 + lane; };
    auto acc4 = [&](int mt, int nt) { return make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3]); };

    // Sends the accumulator of a finished segment out of the CTA and clears it.
    auto flush = [&](const Segment& g) {
      if (g.contributors <= 1) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) store_slot(g.row, my_slot(mt, nt), acc4(mt, nt));
        zero_acc();
        return;
      }
      // Shared row: park the partial in the fp32 workspace; the last CTA to arrive (atomic
      // counter) sums all partials in rank order (deterministic), writes Y and resets the counter
      // to zero (graph replays find it zero again). The workspace holds `max_contrib` partials
      // per row; ranks past it (only with a corrupted tuple) are dropped, never written.
      const int max_contrib = SCHED == kSplitK ? a.split_k : a.max_contrib;
      const size_t row_id = (size_t)m_tile * TR + g.row;
      float4* ws = reinterpret_cast<float4*>(a.workspace) + row_id * max_contrib * (BN * BM / 4);
      if (g.rank < max_contrib) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
            __stcg(&ws[(size_t)g.rank * (BN * BM / 4) + my_slot(mt, nt)], acc4(mt, nt));
      }
      zero_acc();
      __threadfence();
      __syncthreads();
      if (tid == 0) {
        const int prev = atomicAdd(&a.counters[row_id], 1);
        is_last = (prev == g.contributors - 1);
        if (is_last) a.counters[row_id] = 0;
      }
      __syncthreads();
      if (!is_last) return;
      __threadfence();
      const int n = min(g.contributors, max_contrib);
      for (int f = tid; f < BN * BM / 4; f += kThreads) {
        float4 sum = __ldcg(&ws[f]);
        for (int r = 1; r < n; ++r) {
          const float4 p = __ldcg(&ws[(size_t)r * (BN * BM / 4) + f]);
          sum.x += p.x; sum.y += p.y; sum.z += p.z; sum.w += p.w;
        }
        store_slot(g.row, f, sum);
      }
    };

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
          if (j < g.nS) compute_sparse(sw, sw + kWBytes);
          else compute_dense(sw, sw + kWBytes);
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
        if (tid == 0) mbar_expect_tx(&red_bar, (uint32_t)((split - 1) * owned * 16));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            const int f = my_slot(mt, nt);
            const int owner = (f / kThreads) % split;
            float4* dst = recv + rank * per_owner + (f / stride) * kThreads + f % kThreads;
            if (owner == rank) *dst = acc4(mt, nt);
            else st_async_peer_f4(dst, owner, acc4(mt, nt), &red_bar);
          }
        __syncthreads();               // this CTA's own partial is in place
        mbar_wait_cluster(&red_bar, 0);  // and the peers' partials have landed
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
#endif
  }
};

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
__global__ void __launch_bounds__(WN * WM * 32) spmm_kernel(const __grid_constant__ SpmmArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  SpmmKernel<T, BM, BN, BK, WN, WM, ST, SCHED>::run(a);
#endif
}

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
bool uses_cluster_typed() {
  return SCHED == kSplitK && binary_version(spmm_kernel<T, BM, BN, BK, WN, WM, ST, SCHED>) >= 90;
}

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
int launch_typed(const SpmmArgs& a, cudaStream_t stream) {
  using K = SpmmKernel<T, BM, BN, BK, WN, WM, ST, SCHED>;
  auto kernel = spmm_kernel<T, BM, BN, BK, WN, WM, ST, SCHED>;
  // Opting in to more than 48 KiB of dynamic shared memory is a per-function attribute; set it on
  // every call (cheap, idempotent, allowed during graph capture) rather than caching per device.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::kSmemBytes);
  if (err != cudaSuccess) return (int)err;
  const int split = SCHED == kSequential ? 1 : a.split_k;
  cudaLaunchConfig_t cfg{};
  const int grid_x = SCHED == kStreamK ? split : (a.N / BN) * split;
  cfg.gridDim = dim3((unsigned)grid_x, (unsigned)((a.M + BM - 1) / BM));
  cfg.blockDim = dim3(K::kThreads);
  cfg.dynamicSmemBytes = K::kSmemBytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n_attr = 0;
  const bool sm90_code = binary_version(kernel) >= 90;
  if (SCHED == kSplitK && split > 1 && uses_cluster_typed<T, BM, BN, BK, WN, WM, ST, SCHED>()) {
    if (split > 8) return (int)cudaErrorInvalidClusterSize;  // portable cluster size
    attr[n_attr].id = cudaLaunchAttributeClusterDimension;
    attr[n_attr].val.clusterDim.x = (unsigned)split;
    attr[n_attr].val.clusterDim.y = 1;
    attr[n_attr].val.clusterDim.z = 1;
    ++n_attr;
  } else if (split > 1 && (a.workspace == nullptr || a.counters == nullptr)) {
    return (int)cudaErrorInvalidValue;  // the caller must provide the split-K workspace here
  }
  if (sm90_code && pdl_enabled()) {  // the sm_90 code waits on griddepcontrol before reading (PDL)
    attr[n_attr].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n_attr].val.programmaticStreamSerializationAllowed = 1;
    ++n_attr;
  }
  cfg.attrs = n_attr ? attr : nullptr;
  cfg.numAttrs = n_attr;
  if (sm90_code) {  // the sm_90 code copies X by TMA: give it X's tensor map
    SpmmArgs b = a;
    const int rc = encode_x_tensor_map(b.x_tmap, a.x, a.M, a.K, a.ldx, std::is_same_v<T, __nv_bfloat16>, BM);
    if (rc != 0) return rc;
    err = cudaLaunchKernelEx(&cfg, kernel, b);
  } else {
    err = cudaLaunchKernelEx(&cfg, kernel, a);
  }
  if (err != cudaSuccess) return (int)err;
  return (int)cudaGetLastError();
}

template <int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
int launch_instance(const SpmmArgs& a, DType dt, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dt == DType::BF16) return launch_typed<__nv_bfloat16, BM, BN, BK, WN, WM, ST, SCHED>(a, s);
  return launch_typed<__half, BM, BN, BK, WN, WM, ST, SCHED>(a, s);
}

template <int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
bool instance_uses_cluster(DType dt) {
  if (dt == DType::BF16) return uses_cluster_typed<__nv_bfloat16, BM, BN, BK, WN, WM, ST, SCHED>();
  return uses_cluster_typed<__half, BM, BN, BK, WN, WM, ST, SCHED>();
}

}  // namespace stoicc
