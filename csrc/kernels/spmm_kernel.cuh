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
// Schedules:
//   sequential (SPLIT = false): one CTA per (tile row, token block), direct epilogue.
//   split_k    (SPLIT = true):  `split_k` CTAs share a tile row, each taking a contiguous slice
//     of its items balanced by bytes (a 2:4 tile costs 9/16 of a dense one). Each writes its f32
//     partial to the workspace; the last to arrive (atomic counter) sums the partials in split
//     order, so the result is deterministic, writes Y and resets the counter to zero, which keeps
//     the call safe to capture and replay in a CUDA graph. Decode needs this: N / BLOCK_N tile
//     rows alone are far fewer CTAs than SMs.
#pragma once
#include <cstdint>

#include "../common.h"
#include "ptx.cuh"

namespace stoicc {

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, bool SPLIT>
struct SpmmKernel {
  static constexpr int kThreads = WARPS_N * WARPS_M * 32;
  static constexpr int kWarpRows = BN / WARPS_N;   // weight rows per warp
  static constexpr int kMT = kWarpRows / 16;       // m16 blocks per warp
  static constexpr int kWarpCols = BM / WARPS_M;   // tokens per warp
  static constexpr int kNT = kWarpCols / 8;        // n8 blocks per warp
  static constexpr int kWBytes = 2 * BN * BK;      // a dense tile; a 2:4 tile uses 9/16 of it
  static constexpr int kSparseValBytes = BN * BK;  // BN*BK/2 values of 2 bytes
  static constexpr int kSparseMetaBytes = BN * BK / 8;
  static constexpr int kXBytes = 2 * BM * BK;
  static constexpr int kStageBytes = kWBytes + kXBytes;
  static constexpr size_t kSmemBytes = (size_t)STAGES * kStageBytes;
  static constexpr int kXChunksPerRow = BK / 8;    // 16-byte chunks in one X row of the tile

  static_assert(BK % 64 == 0, "BLOCK_K must be a multiple of 64 (one metadata word spans 64 K)");
  static_assert(kWarpRows % 16 == 0 && kMT >= 1, "each warp needs whole m16 blocks");
  static_assert(kWarpCols % 8 == 0 && kNT >= 1, "each warp needs whole n8 blocks");
  static_assert(STAGES >= 2, "pipeline needs at least two stages");

  // Cost-balanced split of a row's items [0, L) (nS 2:4 items first, then nD dense): the first
  // item index of split s. Monotone in s, bound(0) = 0, bound(split) = L.
  __device__ static int split_bound(int s, int split, int nS, int nD) {
    const int64_t total = 9 * (int64_t)nS + 16 * (int64_t)nD;
    const int64_t t = total * s / split;
    if (t <= 9 * (int64_t)nS) return (int)((t + 8) / 9);
    return nS + (int)((t - 9 * (int64_t)nS + 15) / 16);
  }

  __device__ static void run(const SpmmArgs& a) {
    extern __shared__ __align__(128) uint8_t smem[];
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int warp_n = warp % WARPS_N;
    const int warp_m = warp / WARPS_N;
    const int split = SPLIT ? a.split_k : 1;
    const int tile_row = blockIdx.x / split;
    const int split_idx = blockIdx.x - tile_row * split;
    const int m0 = blockIdx.y * BM;
    const int num_ktiles = a.K / BK;

    // Item range of this tile row, every index clamped so that a corrupted tuple cannot make us
    // read out of bounds (docs/format.md section 2).
    const int s_beg = min(max(a.s_ptr[tile_row], 0), a.n_sparse);
    const int s_end = min(max(a.s_ptr[tile_row + 1], s_beg), a.n_sparse);
    const int d_beg = min(max(a.d_ptr[tile_row], 0), a.n_dense);
    const int d_end = min(max(a.d_ptr[tile_row + 1], d_beg), a.n_dense);
    const int nS = s_end - s_beg, nD = d_end - d_beg;
    int it0 = 0, it1 = nS + nD;
    if (SPLIT) {
      it0 = split_bound(split_idx, split, nS, nD);
      it1 = split_bound(split_idx + 1, split, nS, nD);
    }
    const int n_items = it1 - it0;

    const T* __restrict__ x = static_cast<const T*>(a.x);
    const uint8_t* __restrict__ s_vals = static_cast<const uint8_t*>(a.s_vals);
    const uint8_t* __restrict__ s_meta = reinterpret_cast<const uint8_t*>(a.s_meta);
    const uint8_t* __restrict__ d_vals = static_cast<const uint8_t*>(a.d_vals);
    const uint64_t policy = evict_first_policy();

    // Issue the cp.async copies of item `it` into pipeline slot `slot`.
    auto load_item = [&](int it, int slot) {
      uint8_t* sw = smem + slot * kStageBytes;
      uint8_t* sx = sw + kWBytes;
      int kt;
      if (it < nS) {
        const int t = s_beg + it;
        kt = a.s_cols[t];
        const uint8_t* gv = s_vals + (size_t)t * kSparseValBytes;
        const uint8_t* gm = s_meta + (size_t)t * kSparseMetaBytes;
#pragma unroll
        for (int c = tid; c < kSparseValBytes / 16; c += kThreads) cp_async16_stream(sw + c * 16, gv + c * 16, policy);
#pragma unroll
        for (int c = tid; c < kSparseMetaBytes / 16; c += kThreads)
          cp_async16_stream(sw + kSparseValBytes + c * 16, gm + c * 16, policy);
      } else {
        const int t = d_beg + (it - nS);
        kt = a.d_cols[t];
        const uint8_t* gv = d_vals + (size_t)t * kWBytes;
#pragma unroll
        for (int c = tid; c < kWBytes / 16; c += kThreads) cp_async16_stream(sw + c * 16, gv + c * 16, policy);
      }
      kt = min(max(kt, 0), num_ktiles - 1);
      // X slice: BM rows x BK columns, 16-byte chunks XOR-swizzled by (row % 8) so that the
      // ldmatrix reads of 8 consecutive rows hit 8 different bank groups.
#pragma unroll
      for (int c = tid; c < BM * kXChunksPerRow; c += kThreads) {
        const int r = c / kXChunksPerRow, ch = c % kXChunksPerRow;
        const int m = m0 + r;
        const bool ok = m < a.M;
        const T* src = ok ? x + (size_t)m * a.ldx + (size_t)kt * BK + ch * 8 : x;
        cp_async16(sx + (r * kXChunksPerRow + (ch ^ (r & 7))) * 16, src, ok ? 16 : 0);
      }
    };

    float acc[kMT][kNT][4];
#pragma unroll
    for (int i = 0; i < kMT; ++i)
#pragma unroll
      for (int j = 0; j < kNT; ++j)
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.f;

    // B fragments (X^T) for a 32-wide K step `ks` of every n8 block of this warp: one ldmatrix.x4
    // per n8 block gives k = 2q.., 2q+8.., 2q+16.., 2q+24.. of token g.
    auto load_b = [&](const uint8_t* sx, int ks, uint32_t (&b)[kNT][4]) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int r = warp_m * kWarpCols + nt * 8 + (lane & 7);
        const int ch = ks * 4 + (lane >> 3);
        ldmatrix_x4(b[nt], sx + (r * kXChunksPerRow + (ch ^ (r & 7))) * 16);
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

    // Multistage pipeline: STAGES-1 items in flight while one is computed.
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < n_items) load_item(it0 + s, s);
      cp_async_commit();
    }
    int slot = 0;
    for (int i = 0; i < n_items; ++i) {
      cp_async_wait<STAGES - 2>();
      __syncthreads();  // item i landed for all threads; slot of item i-1 is free again
      const int nxt = i + STAGES - 1;
      if (nxt < n_items) {
        int nslot = slot + STAGES - 1;
        if (nslot >= STAGES) nslot -= STAGES;
        load_item(it0 + nxt, nslot);
      }
      cp_async_commit();
      const uint8_t* sw = smem + slot * kStageBytes;
      if (it0 + i < nS) compute_sparse(sw, sw + kWBytes);
      else compute_dense(sw, sw + kWBytes);
      if (++slot == STAGES) slot = 0;
    }
    cp_async_wait<0>();

    if constexpr (SPLIT) {
      if (split > 1) {
        // Partial tile in fragment order: each thread owns kMT*kNT float4s, contiguous per thread
        // group, so both the write and the read-back are coalesced 16-byte accesses.
        const size_t tile_id = (size_t)blockIdx.y * (a.N / BN) + tile_row;
        float4* ws = reinterpret_cast<float4*>(a.workspace) + tile_id * split * (BN * BM / 4);
        auto frag_index = [&](int s, int mt, int nt) {
          return (size_t)s * (BN * BM / 4) + ((size_t)(warp * kMT + mt) * kNT + nt) * 32 + lane;
        };
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
            __stcg(&ws[frag_index(split_idx, mt, nt)],
                   make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3]));
        __threadfence();
        __syncthreads();
        __shared__ int is_last;
        if (tid == 0) {
          const int prev = atomicAdd(&a.counters[tile_id], 1);
          is_last = (prev == split - 1);
          if (is_last) a.counters[tile_id] = 0;  // self-reset: the next launch finds zero
        }
        __syncthreads();
        if (!is_last) return;
        __threadfence();
        // Sum in split order (deterministic whoever arrives last).
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int s = 0; s < split; ++s) {
              const float4 p = (s == split_idx)
                                   ? make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3])
                                   : __ldcg(&ws[frag_index(s, mt, nt)]);
              sum.x += p.x; sum.y += p.y; sum.z += p.z; sum.w += p.w;
            }
            acc[mt][nt][0] = sum.x; acc[mt][nt][1] = sum.y; acc[mt][nt][2] = sum.z; acc[mt][nt][3] = sum.w;
          }
      }
    }

    // Epilogue. Accumulator element (mt, nt, v): weight row g (+8 for v >= 2), token 2q (+1 for
    // odd v) of the m16n8 block, i.e. Y[token][row].
    const T* __restrict__ bias = static_cast<const T*>(a.bias);
    T* __restrict__ y = static_cast<T*>(a.y);
    const int g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int hv = 0; hv < 2; ++hv) {
        const int n = tile_row * BN + (warp_n * kMT + mt) * 16 + g + 8 * hv;
        const float bv = bias ? to_float<T>(bias[n]) : 0.f;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
          for (int odd = 0; odd < 2; ++odd) {
            const int m = m0 + warp_m * kWarpCols + nt * 8 + 2 * q + odd;
            if (m < a.M) y[(size_t)m * a.ldy + n] = from_float<T>(acc[mt][nt][2 * hv + odd] + bv);
          }
        }
      }
    }
  }
};

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, bool SPLIT>
__global__ void __launch_bounds__(WN * WM * 32) spmm_kernel(const SpmmArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  SpmmKernel<T, BM, BN, BK, WN, WM, ST, SPLIT>::run(a);
#endif
}

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, bool SPLIT>
int launch_typed(const SpmmArgs& a, cudaStream_t stream) {
  using K = SpmmKernel<T, BM, BN, BK, WN, WM, ST, SPLIT>;
  auto kernel = spmm_kernel<T, BM, BN, BK, WN, WM, ST, SPLIT>;
  // Opting in to more than 48 KiB of dynamic shared memory is a per-function attribute; set it on
  // every call (cheap, idempotent, allowed during graph capture) rather than caching per device.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::kSmemBytes);
  if (err != cudaSuccess) return (int)err;
  const int split = SPLIT ? a.split_k : 1;
  dim3 grid((unsigned)((a.N / BN) * split), (unsigned)((a.M + BM - 1) / BM));
  kernel<<<grid, K::kThreads, K::kSmemBytes, stream>>>(a);
  return (int)cudaGetLastError();
}

template <int BM, int BN, int BK, int WN, int WM, int ST, bool SPLIT>
int launch_instance(const SpmmArgs& a, DType dt, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dt == DType::BF16) return launch_typed<__nv_bfloat16, BM, BN, BK, WN, WM, ST, SPLIT>(a, s);
  return launch_typed<__half, BM, BN, BK, WN, WM, ST, SPLIT>(a, s);
}

}  // namespace stoicc
