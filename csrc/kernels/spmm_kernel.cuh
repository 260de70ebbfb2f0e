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
//     of its items balanced by bytes (a 2:4 tile costs 9/16 of a dense one). Decode needs this:
//     N / BLOCK_N tile rows alone are far fewer CTAs than SMs. The partial sums are reduced in
//     split order (deterministic), on sm_90 through distributed shared memory inside a
//     thread-block cluster of the split CTAs (split_k <= 8); before sm_90 through an fp32
//     workspace, where the last CTA to arrive (atomic counter) sums and resets the counter to
//     zero, keeping the call safe to capture and replay in a CUDA graph.
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
  // X slice rows are padded by 16 bytes: ldmatrix then reads 8 rows from 8 different bank
  // groups, and each row stays one contiguous copy (a bulk copy cannot swizzle).
  static constexpr int kXRowBytes = 2 * BK + 16;
  static constexpr int kXBytes = BM * kXRowBytes;
  static constexpr int kStageBytes = kWBytes + kXBytes;
  static constexpr size_t kSmemBytes = (size_t)STAGES * kStageBytes;

  static constexpr int kMaxItems = 512;  // K-tiles per row a CTA can walk (K <= 512 * BLOCK_K)
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
    const int n_items = min(it1 - it0, kMaxItems);  // host guarantees K / BK <= kMaxItems

    // The K-tile index of every item of this CTA, staged in shared memory once. Reading it from
    // global memory inside the loop put one dependent load (~0.5 us) before every copy issue and
    // capped each CTA at about two items per microsecond.
    __shared__ int item_kt[kMaxItems];
    for (int i = tid; i < n_items; i += kThreads) {
      const int it = it0 + i;
      const int kt = it < nS ? a.s_cols[s_beg + it] : a.d_cols[d_beg + (it - nS)];
      item_kt[i] = min(max(kt, 0), num_ktiles - 1);
    }
    __syncthreads();

    const T* __restrict__ x = static_cast<const T*>(a.x);
    const uint8_t* __restrict__ s_vals = static_cast<const uint8_t*>(a.s_vals);
    const uint8_t* __restrict__ s_meta = reinterpret_cast<const uint8_t*>(a.s_meta);
    const uint8_t* __restrict__ d_vals = static_cast<const uint8_t*>(a.d_vals);
    const uint64_t policy = evict_first_policy();  // weights: read once per call

#ifdef STOICC_BULK_COPY
    __shared__ __align__(8) uint64_t full_bar[STAGES];
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < STAGES; ++s) mbar_init(&full_bar[s], 1);
      mbar_fence_init();
    }
    __syncthreads();
    uint32_t phase_bits = 0;
#endif
    const int rows_valid = min(BM, a.M - m0);

    // Start the copies of item `it` (one weight tile + the matching X slice) into slot `slot`.
    auto load_item = [&](int it, int slot) {
      uint8_t* sw = smem + slot * kStageBytes;
      uint8_t* sx = sw + kWBytes;
      const bool sparse = it < nS;
      const int t = sparse ? s_beg + it : d_beg + (it - nS);
      const int kt = item_kt[it - it0];
      const uint8_t* gv = sparse ? s_vals + (size_t)t * kSparseValBytes : d_vals + (size_t)t * kWBytes;
      const T* gx = x + (size_t)m0 * a.ldx + (size_t)kt * BK;
#ifdef STOICC_BULK_COPY
      // The weight tile is one contiguous block: one thread moves it with one or two bulk copies
      // completed on the slot's mbarrier.
      if (tid == 0) {
        mbar_expect_tx(&full_bar[slot], sparse ? kSparseValBytes + kSparseMetaBytes : kWBytes);
        if (sparse) {
          bulk_g2s(sw, gv, kSparseValBytes, &full_bar[slot], policy);
          bulk_g2s(sw + kSparseValBytes, s_meta + (size_t)t * kSparseMetaBytes, kSparseMetaBytes, &full_bar[slot],
                   policy);
        } else {
          bulk_g2s(sw, gv, kWBytes, &full_bar[slot], policy);
        }
      }
#else
      const int wbytes = sparse ? kSparseValBytes : kWBytes;
#pragma unroll
      for (int c = tid; c < wbytes / 16; c += kThreads) cp_async16_stream(sw + c * 16, gv + c * 16, policy);
      if (sparse) {
        const uint8_t* gm = s_meta + (size_t)t * kSparseMetaBytes;
#pragma unroll
        for (int c = tid; c < kSparseMetaBytes / 16; c += kThreads)
          cp_async16_stream(sw + kSparseValBytes + c * 16, gm + c * 16, policy);
      }
#endif
      // The X slice (BM rows of BK, L2-resident: every CTA reads X) goes by 16-byte cp.async from
      // all threads on both paths: as bulk copies its many small rows would queue behind each
      // other in the SM's copy engine. Rows past M are zero-filled.
#pragma unroll
      for (int c = tid; c < BM * (BK / 8); c += kThreads) {
        const int r = c / (BK / 8), ch = c % (BK / 8);
        const bool ok = r < rows_valid;
        cp_async16(sx + r * kXRowBytes + ch * 16, ok ? gx + (size_t)r * a.ldx + ch * 8 : x, ok ? 16 : 0);
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
        ldmatrix_x4(b[nt], sx + r * kXRowBytes + (ks * 4 + (lane >> 3)) * 16);
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
      cp_async_wait<STAGES - 2>();  // this thread's X copies of item i landed
      __syncthreads();  // every warp is done with item i-1, so its slot may be refilled
      const int nxt = i + STAGES - 1;
      if (nxt < n_items) {
        int nslot = slot + STAGES - 1;
        if (nslot >= STAGES) nslot -= STAGES;
        load_item(it0 + nxt, nslot);
      }
      cp_async_commit();
#ifdef STOICC_BULK_COPY
      mbar_wait(&full_bar[slot], (phase_bits >> slot) & 1u);  // the weight tile of item i landed
      phase_bits ^= 1u << slot;
#endif
      const uint8_t* sw = smem + slot * kStageBytes;
      if (it0 + i < nS) compute_sparse(sw, sw + kWBytes);
      else compute_dense(sw, sw + kWBytes);
      if (++slot == STAGES) slot = 0;
    }
    cp_async_wait<0>();

    if constexpr (SPLIT) {
#ifdef STOICC_BULK_COPY
      // Hopper: the split CTAs of a tile row form one thread-block cluster and reduce through
      // distributed shared memory: no workspace, no counters, no extra graph node. Each CTA
      // parks its partial in its own shared memory, then sums a 1/split share of the tile over
      // the cluster in rank order (deterministic) and writes that share of Y.
      if (split > 1) {
        __syncthreads();  // the pipeline buffers are free (every item was consumed)
        float4* part = reinterpret_cast<float4*>(smem);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
            part[((warp * kMT + mt) * kNT + nt) * 32 + lane] =
                make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3]);
        cluster_sync();
        const T* __restrict__ bias = static_cast<const T*>(a.bias);
        T* __restrict__ y = static_cast<T*>(a.y);
        for (int f = split_idx * kThreads + tid; f < BN * BM / 4; f += split * kThreads) {
          float4 sum = ld_peer_f4(part + f, 0);
          for (int r = 1; r < split; ++r) {
            const float4 p = ld_peer_f4(part + f, r);
            sum.x += p.x; sum.y += p.y; sum.z += p.z; sum.w += p.w;
          }
          // Slot f -> (warp, mt, nt, lane) -> output coordinates, as in the epilogue below.
          const int fl = f % 32, rest = f / 32, nt = rest % kNT, mt = (rest / kNT) % kMT, w = rest / (kNT * kMT);
          const int n = tile_row * BN + ((w % WARPS_N) * kMT + mt) * 16 + (fl >> 2);
          const int m = m0 + (w / WARPS_N) * kWarpCols + nt * 8 + 2 * (fl & 3);
          const float v[4] = {sum.x, sum.y, sum.z, sum.w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int nn = n + 8 * (e >> 1), mm = m + (e & 1);
            if (mm < a.M) y[(size_t)mm * a.ldy + nn] = from_float<T>(v[e] + (bias ? to_float<T>(bias[nn]) : 0.f));
          }
        }
        cluster_sync();  // peers may not exit while their shared memory is being read
        return;
      }
#else
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
#endif
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

// SASS version the runtime picked for `kernel` on the current device (cached per device): tells
// whether the split-K reduction runs through clusters (sm_90 code) or the global workspace.
template <typename F>
int binary_version(F kernel) {
  static int cache[64] = {};
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev < 64 && cache[dev]) return cache[dev];
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) return 0;
  if (dev < 64) cache[dev] = attr.binaryVersion;
  return attr.binaryVersion;
}

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, bool SPLIT>
bool uses_cluster_typed() {
  return SPLIT && binary_version(spmm_kernel<T, BM, BN, BK, WN, WM, ST, SPLIT>) >= 90;
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
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3((unsigned)((a.N / BN) * split), (unsigned)((a.M + BM - 1) / BM));
  cfg.blockDim = dim3(K::kThreads);
  cfg.dynamicSmemBytes = K::kSmemBytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if (split > 1 && uses_cluster_typed<T, BM, BN, BK, WN, WM, ST, SPLIT>()) {
    if (split > 8) return (int)cudaErrorInvalidClusterSize;  // portable cluster size
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = (unsigned)split;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  } else if (split > 1 && (a.workspace == nullptr || a.counters == nullptr)) {
    return (int)cudaErrorInvalidValue;  // the caller must provide the split-K workspace here
  }
  err = cudaLaunchKernelEx(&cfg, kernel, a);
  if (err != cudaSuccess) return (int)err;
  return (int)cudaGetLastError();
}

template <int BM, int BN, int BK, int WN, int WM, int ST, bool SPLIT>
int launch_instance(const SpmmArgs& a, DType dt, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dt == DType::BF16) return launch_typed<__nv_bfloat16, BM, BN, BK, WN, WM, ST, SPLIT>(a, s);
  return launch_typed<__half, BM, BN, BK, WN, WM, ST, SPLIT>(a, s);
}

template <int BM, int BN, int BK, int WN, int WM, int ST, bool SPLIT>
bool instance_uses_cluster(DType dt) {
  if (dt == DType::BF16) return uses_cluster_typed<__nv_bfloat16, BM, BN, BK, WN, WM, ST, SPLIT>();
  return uses_cluster_typed<__half, BM, BN, BK, WN, WM, ST, SPLIT>();
}

}  // namespace stoicc
