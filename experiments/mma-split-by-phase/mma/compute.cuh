// The math of the mma.sync kernel: one item's K steps from a pipeline slot into the warp's f32
// accumulator. 2:4 tiles run mma.sp m16n8k32, dense tiles mma m16n8k16; both produce the same
// m16n8 fragment, so one accumulator serves both. The weight values come in the A-fragment order
// the compressor writes (one 16-byte load per fragment), X^T through ldmatrix from the swizzled
// slice (config.cuh). Identical on every arch.
#pragma once
#include <cstdint>

#include "../ptx.cuh"
#include "config.cuh"

namespace stoicc {

// The warp's f32 accumulator: an object of its own, never a member beside references or
// pointers. LLVM's SROA keeps a variably indexed array in memory until the loops over it are
// unrolled, and with it anything else in the same object; held apart, the references the phases
// hold resolve early and the code is the same as when this was all one function.
template <class C>
struct Accumulator {
  float v[C::kMT][C::kNT][4];

  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < C::kMT; ++i)
#pragma unroll
      for (int j = 0; j < C::kNT; ++j)
#pragma unroll
        for (int k = 0; k < 4; ++k) v[i][j][k] = 0.f;
  }
  __device__ float4 frag(int mt, int nt) const {
    return make_float4(v[mt][nt][0], v[mt][nt][1], v[mt][nt][2], v[mt][nt][3]);
  }
};

// The CTA-wide float4 slot of fragment (mt, nt) of this thread: fragment order (warp, mt, nt,
// lane), the order the reductions park partials in and the epilogue decodes (reduce.cuh).
template <class C>
__device__ inline int frag_slot(const CtaCoords<C>& at, int mt, int nt) {
  return ((at.warp * C::kMT + mt) * C::kNT + nt) * 32 + at.lane;
}

// One item's K steps into the accumulator.
template <class C>
struct MmaSteps {
  using T = typename C::T;
  static constexpr int kMT = C::kMT, kNT = C::kNT, BK = C::BK;

  const CtaCoords<C>& at;
  Accumulator<C>& acc;

  // B fragments (X^T) for a 32-wide K step `ks` of every n8 block of this warp: one ldmatrix.x4
  // per n8 block gives k = 2q.., 2q+8.., 2q+16.., 2q+24.. of token g.
  __device__ void load_b(const uint8_t* sx, int ks, uint32_t (&b)[kNT][4]) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int r = at.warp_m * C::kWarpCols + nt * 8 + (at.lane & 7);
      ldmatrix_x4(b[nt], sx + C::x_chunk_offset(r, ks * 4 + (at.lane >> 3)));
    }
  }

  // A 2:4 tile at sw (values, then metadata), X slice at sx.
  __device__ void sparse_item(const uint8_t* sw, const uint8_t* sx) {
    const uint4* wv = reinterpret_cast<const uint4*>(sw);                           // [BN/16][BK/32][32]
    const uint32_t* wm = reinterpret_cast<const uint32_t*>(sw + C::kSparseValBytes);  // [BN/16][BK/64][32]
#pragma unroll
    for (int kp = 0; kp < BK / 64; ++kp) {
      uint32_t e[kMT];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) e[mt] = wm[((at.warp_n * kMT + mt) * (BK / 64) + kp) * 32 + at.lane];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int ks = 2 * kp + half;
        uint32_t b[kNT][4];
        load_b(sx, ks, b);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          const uint4 av = wv[((at.warp_n * kMT + mt) * (BK / 32) + ks) * 32 + at.lane];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            if (half == 0) mma_sparse<T, 0>(acc.v[mt][nt], av, b[nt], e[mt]);
            else mma_sparse<T, 1>(acc.v[mt][nt], av, b[nt], e[mt]);
          }
        }
      }
    }
  }

  // A dense tile at sw, X slice at sx.
  __device__ void dense_item(const uint8_t* sw, const uint8_t* sx) {
    const uint4* wv = reinterpret_cast<const uint4*>(sw);  // [BN/16][BK/16][32]
#pragma unroll
    for (int ks = 0; ks < BK / 32; ++ks) {
      uint32_t b[kNT][4];
      load_b(sx, ks, b);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        const uint4 a0 = wv[((at.warp_n * kMT + mt) * (BK / 16) + 2 * ks) * 32 + at.lane];
        const uint4 a1 = wv[((at.warp_n * kMT + mt) * (BK / 16) + 2 * ks + 1) * 32 + at.lane];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          mma_dense<T>(acc.v[mt][nt], a0, b[nt][0], b[nt][1]);
          mma_dense<T>(acc.v[mt][nt], a1, b[nt][2], b[nt][3]);
        }
      }
    }
  }
};

}  // namespace stoicc
