// Compute of the mma.sync kernel (all archs): one slot's K steps into the warp's f32 accumulator.
#pragma once
#include <cstdint>

#include "../ptx.cuh"
#include "config.cuh"

namespace stoicc {

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmCompute : SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED> {
  using Config = SpmmConfig<T, BM, BN, BK, WARPS_N, WARPS_M, STAGES, SCHED>;
  using Config::kMT;
  using Config::kNT;
  using Config::kWarpCols;
  using Config::kSparseValBytes;
  using Config::x_chunk_offset;

  __device__ __forceinline__ static void zero_acc(float (&acc)[kMT][kNT][4]) {
#pragma unroll
    for (int i = 0; i < kMT; ++i)
#pragma unroll
      for (int j = 0; j < kNT; ++j)
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.f;
  }

  // B fragments (X^T) for a 32-wide K step `ks` of every n8 block of this warp: one ldmatrix.x4
  // per n8 block gives k = 2q.., 2q+8.., 2q+16.., 2q+24.. of token g.
  __device__ __forceinline__ static void load_b(const uint8_t* sx, int ks, uint32_t (&b)[kNT][4], int warp_m, int lane) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int r = warp_m * kWarpCols + nt * 8 + (lane & 7);
      ldmatrix_x4(b[nt], sx + x_chunk_offset(r, ks * 4 + (lane >> 3)));
    }
  }

  __device__ __forceinline__ static void compute_sparse(float (&acc)[kMT][kNT][4], const uint8_t* sw, const uint8_t* sx,
                                                      int warp_n, int warp_m, int lane) {
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
        load_b(sx, ks, b, warp_m, lane);
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
  }

  __device__ __forceinline__ static void compute_dense(float (&acc)[kMT][kNT][4], const uint8_t* sw, const uint8_t* sx,
                                                     int warp_n, int warp_m, int lane) {
    const uint4* wv = reinterpret_cast<const uint4*>(sw);  // [BN/16][BK/16][32]
#pragma unroll
    for (int ks = 0; ks < BK / 32; ++ks) {
      uint32_t b[kNT][4];
      load_b(sx, ks, b, warp_m, lane);
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
  }
};

}  // namespace stoicc
