// densify: the dense weight W[N, K] (row-major) of a mixed-tile weight (docs/format.md).
//
// Why it exists: at prefill sizes the GEMM is compute bound, and cuBLAS on Hopper (wgmma/TMA)
// runs about twice the FLOP rate of our mma.sync kernels. Expanding the compressed weight into
// a dense scratch costs one pass over the compressed bytes plus one write of the dense bytes
// (tens of microseconds for a 7B layer, against a few hundred for the M = 2048 GEMM), so the
// Inspector's "densify" schedule (stoicc_ext/densify.py) times densify + F.linear beside the
// tile-sparse kernels and keeps whichever wins. The stored model stays compressed.
//
// One CTA per tile of the TR x TC grid, in row-major tile order: it finds its tile in the row's
// 2:4 list or dense list (binary search of the ascending K-tile indices), stages the tile's
// fragment-ordered values (and metadata) in shared memory with coalesced 16-byte loads, and
// writes the tile out as 16-byte row chunks. A tile in neither list is written as zeros.
// Indices are clamped exactly as in the GEMM kernel: a corrupted tuple yields garbage values,
// never an out-of-bounds access (validate() and the CPU op name the corruption).
#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace stoicc {
namespace {

constexpr int kThreads = 256;

// Position of K-tile c in the ascending list cols[beg, beg + n), or -1.
__device__ __forceinline__ int find_tile(const int32_t* __restrict__ cols, int beg, int n, int c) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (cols[beg + mid] < c) lo = mid + 1; else hi = mid;
  }
  return (lo < n && cols[beg + lo] == c) ? beg + lo : -1;
}

// Copies `bytes` (a multiple of 16) from global to shared memory, 16 bytes per access when VEC.
// 16-byte loads: the op layer hands over 16-byte aligned value and metadata tensors
// (align_weight_for_gpu in ops.cpp copies a misaligned view first, as for spmm).
__device__ __forceinline__ void stage(uint8_t* dst, const uint8_t* __restrict__ src, int bytes) {
  for (int i = threadIdx.x; i < bytes / 16; i += kThreads)
    reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
}

template <int BN, int BK>
__global__ void __launch_bounds__(kThreads) densify_kernel(SpmmArgs a, uint16_t* __restrict__ out) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr int kChunksPerRow = BK / 8;      // 16-byte output chunks per tile row
  constexpr int kChunks = BN * kChunksPerRow;
  const int TC = a.K / BK;
  const int r = blockIdx.x / TC, c = blockIdx.x % TC;

  const int s_beg = min(max(a.s_ptr[r], 0), a.n_sparse);
  const int s_end = min(max(a.s_ptr[r + 1], s_beg), a.n_sparse);
  const int d_beg = min(max(a.d_ptr[r], 0), a.n_dense);
  const int d_end = min(max(a.d_ptr[r + 1], d_beg), a.n_dense);
  const int ts = find_tile(a.s_cols, s_beg, s_end - s_beg, c);
  const int td = ts >= 0 ? -1 : find_tile(a.d_cols, d_beg, d_end - d_beg, c);
  uint16_t* dst = out + (size_t)r * BN * a.K + (size_t)c * BK;

  if (ts < 0 && td < 0) {  // an empty tile
    for (int ch = threadIdx.x; ch < kChunks; ch += kThreads)
      *reinterpret_cast<uint4*>(dst + (size_t)(ch / kChunksPerRow) * a.K + (ch % kChunksPerRow) * 8) =
          make_uint4(0, 0, 0, 0);
    return;
  }
  const uint16_t* vals = reinterpret_cast<const uint16_t*>(smem);
  const uint32_t* meta = reinterpret_cast<const uint32_t*>(smem + BN * BK);
  if (ts >= 0) {
    stage(smem, static_cast<const uint8_t*>(a.s_vals) + (size_t)ts * BN * BK, BN * BK);
    stage(smem + BN * BK, reinterpret_cast<const uint8_t*>(a.s_meta) + (size_t)ts * BN * BK / 8, BN * BK / 8);
  } else {
    stage(smem, static_cast<const uint8_t*>(a.d_vals) + (size_t)td * BN * BK * 2, BN * BK * 2);
  }
  __syncthreads();

  for (int ch = threadIdx.x; ch < kChunks; ch += kThreads) {
    const int row = ch / kChunksPerRow, c8 = ch % kChunksPerRow;
    const int mb = row / 16, g = row % 8, hv = (row % 16) / 8;
    alignas(16) uint16_t v[8];
    if (ts >= 0) {
      // Two groups of four: group G's kept pair sits at compressed step ks = G/8 in lane
      // 4g + (G%8)%4, j = 2hv + 4((G%8)/4) and +1; its nibble is i = G%4 of the word of lane
      // 4g + (G%16)/4 for the K64 step G/16, in the row half hv (docs/format.md sections 3-4).
#pragma unroll
      for (int gi = 0; gi < 2; ++gi) {
        const int G = 2 * c8 + gi, ks = G / 8, cg = G % 8;
        const int base = ((mb * (BK / 32) + ks) * 32 + 4 * g + (cg % 4)) * 8 + 2 * hv + 4 * (cg / 4);
        const uint32_t word = meta[(mb * (BK / 64) + G / 16) * 32 + 4 * g + (G % 16) / 4];
        const int code = (word >> (16 * hv + 4 * (G % 4))) & 0xF;
        uint16_t* grp = v + 4 * gi;
        grp[0] = grp[1] = grp[2] = grp[3] = 0;
        grp[code & 3] = vals[base];
        grp[code >> 2] = vals[base + 1];
      }
    } else {
      // Dense fragment order: column cc of a K16 step is held by lane 4g + (cc%8)/2 at
      // j = cc%2 + 2hv + 4(cc/8) (docs/format.md section 5).
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int col = c8 * 8 + e, cc = col % 16;
        v[e] = vals[((mb * (BK / 16) + col / 16) * 32 + 4 * g + (cc % 8) / 2) * 8 + (cc % 2) + 2 * hv + 4 * (cc / 8)];
      }
    }
    *reinterpret_cast<uint4*>(dst + (size_t)row * a.K + c8 * 8) = *reinterpret_cast<const uint4*>(v);
  }
}

template <int BN, int BK>
int launch(const SpmmArgs& a, void* out, cudaStream_t stream) {
  const int64_t tiles = (int64_t)(a.N / BN) * (a.K / BK);
  if (tiles == 0) return 0;
  const size_t smem = 2 * BN * BK;  // a dense tile; a 2:4 tile's values + metadata use 9/16
  densify_kernel<BN, BK><<<(unsigned)tiles, kThreads, smem, stream>>>(a, static_cast<uint16_t*>(out));
  return (int)cudaGetLastError();
}

}  // namespace

int densify_cuda(const SpmmArgs& a, int block_n, int block_k, void* out, void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (block_n == 128 && block_k == 128) return launch<128, 128>(a, out, s);
  if (block_n == 128 && block_k == 64) return launch<128, 64>(a, out, s);
  if (block_n == 64 && block_k == 128) return launch<64, 128>(a, out, s);
  if (block_n == 64 && block_k == 64) return launch<64, 64>(a, out, s);
  return (int)cudaErrorInvalidValue;
}

}  // namespace stoicc
