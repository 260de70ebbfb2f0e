// Hopper prefill path of the tile-sparse GEMM: Y[M, N] = X[M, K] @ W^T (+ bias) on the warpgroup
// MMAs (sm_90a): wgmma.mma_async.sp m64nNk32 for 2:4 weight tiles and wgmma.mma_async m64nNk16
// for dense ones, into one fp32 accumulator, empty tiles skipped. Same compressed weight as the
// decode kernels (docs/format.md): no second copy, no format change.
//
// Why A comes from registers: the hardware takes only a sparse A, so the weight is A and the CTA
// computes the BLOCK_N x BLOCK_M tile of Y^T = W X^T. The format already stores each tile in the
// order of the MMA register fragments (the m16n8k32 / m16n8k16 A fragments of mma.sync, which
// are also the per-warp A fragments of wgmma m64nNk32.sp / m64nNk16, and the same metadata
// registers with the same sparsity selectors), so each thread loads its A fragment and its
// metadata word with one 16-byte and one 4-byte shared-memory load per K step, and B (the X
// slice, K-major, 128-byte swizzled by TMA) is read by the tensor cores through a descriptor.
//
// Warp specialization (384 threads, one CTA per SM):
//   warpgroup 0, one thread: the producer. For each item of the tile row (its 2:4 tiles, then its
//     dense tiles) it waits for a free stage, then issues the TMA copies of the X slice
//     (BK/64 panels of [BM rows][64 columns], rows past M zero-filled) and one or two bulk copies
//     of the weight tile (values, metadata), all completing on the stage's full barrier.
//   warpgroups 1 and 2: the consumers. With BLOCK_N = 128 each takes 64 weight rows and all BM
//     tokens; with BLOCK_N = 64 each takes the 64 rows and half of the tokens. Per item: wait for
//     the stage, load A fragments (+ metadata), issue BK/32 sparse or BK/16 dense wgmmas, wait for
//     them, release the stage (one arrive per consumer thread: an arrive releases only the
//     arriving thread's own reads, so a lane-0 arrive left lanes 1-31 unordered for racecheck).
// Epilogue: the accumulators are staged through shared memory as [BM tokens][BN columns] (the
// pipeline buffers, free once both consumers are past their last MMA) and written to Y with
// coalesced 16-byte stores, bias added in fp32 before rounding, rows past M skipped.
//
// Measured on the H200 and not kept (experiments/wgmma-prefill/README.md): a cluster of 2 or 4
// tile rows walking one K-ordered item list with TMA multicast of X (1.5-4x slower: every stage
// waits for the slowest CTA of the cluster), and keeping one item's MMAs in flight across items
// (wgmma.wait_group 1 with two A-fragment buffers: 10-35 % slower, the stage is released one item
// later, which halves the copies in flight with 2-3 stages).
#pragma once
#include <cstdint>
#include <type_traits>

#include "../common.h"
#include "launch.cuh"
#include "ptx.cuh"
#include "tensor_map.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define STOICC_WGMMA 1
#endif
#include "wgmma_ops.cuh"

namespace stoicc {

#ifdef STOICC_WGMMA
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int R>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// Barrier among the `n` threads of the consumer warpgroups only (id 1; id 0 is __syncthreads).
__device__ __forceinline__ void consumer_bar_sync(int n) { asm volatile("bar.sync 1, %0;\n" ::"r"(n) : "memory"); }
// Bulk copy global -> shared without a cache hint: a prefill weight tile is read again by the
// CTAs of the other token blocks, so it should stay in L2 (the decode path streams evict-first).
__device__ __forceinline__ void bulk_g2s_keep(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
// Shared-memory matrix descriptor of a K-major operand in 128-byte swizzled rows, 8-row atoms of
// 1024 bytes stacked along the rows (what a TMA copy with SWIZZLE_128B and a 64-column box
// writes). Fields: start address >> 4, leading offset (unused for swizzled K-major: 1), stride
// between 8-row atoms (1024 >> 4), layout type 1 = SWIZZLE_128B. Advancing the start address by
// 32 (k16) or 64 (k32) bytes selects the K step inside the 128-byte row; the hardware applies the
// swizzle to the computed addresses, which needs the atoms 1024-byte aligned (they are).
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
         ((uint64_t)1 << 62);
}
#endif

template <typename T, int BM, int BN, int BK, int STAGES>
struct SpmmWgmma {
  static constexpr int kConsumers = 2;                        // consumer warpgroups
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kWN = BN == 128 ? BM : BM / 2;         // tokens per consumer (the wgmma N)
  static constexpr int kAcc = kWN / 2;                        // f32 accumulators per thread
  static constexpr int kXPanelBytes = BM * 128;               // [BM rows][64 columns] of X
  static constexpr int kXBytes = BM * BK * 2;
  static constexpr int kWBytes = 2 * BN * BK;                 // a dense tile; a 2:4 tile uses 9/16
  static constexpr int kSparseValBytes = BN * BK;
  static constexpr int kSparseMetaBytes = BN * BK / 8;
  static constexpr int kStageBytes = kXBytes + kWBytes;       // X first: panels stay 1024-aligned
  static constexpr int kYPitch = BN + 8;                      // staged output row, in elements
  // + 1 KiB: the dynamic shared memory base is rounded up to the 1024-byte swizzle alignment.
  static constexpr size_t kSmemBytes = (size_t)STAGES * kStageBytes + 1024;
  // Host: launches this instantiation (one CTA per tile row and token block); defined below,
  // after the __global__ entry.
  static int launch(const SpmmArgs& a, cudaStream_t stream);
  static_assert(BN == 64 || BN == 128, "BLOCK_N must be 64 or 128");
  static_assert(BK == 64 || BK == 128, "BLOCK_K must be 64 or 128");
  static_assert(kWN == 64 || kWN == 128 || kWN == 256, "wgmma N must be 64, 128 or 256");
  static_assert(STAGES >= 2, "the pipeline needs two stages");
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an H100/H200 CTA may have");
  static_assert(BM * kYPitch * 2 <= STAGES * kStageBytes, "the output staging must fit the pipeline buffers");
  static_assert(kXPanelBytes % 1024 == 0 && kWBytes % 1024 == 0, "stages must stay 1024-byte aligned");

#ifdef STOICC_WGMMA
  __device__ static void run(const SpmmArgs& a) {
    extern __shared__ __align__(128) uint8_t smem_raw[];
    uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    __shared__ __align__(8) uint64_t full_bar[STAGES];
    __shared__ __align__(8) uint64_t empty_bar[STAGES];
    const int tid = threadIdx.x;
    const int wg = tid / 128;
    const int lane = tid & 31;
    const int row = blockIdx.x;  // tile row of W
    const int m0 = blockIdx.y * BM;
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < STAGES; ++s) {
        mbar_init(&full_bar[s], 1);
        mbar_init(&empty_bar[s], 128 * kConsumers);  // one arrive per consumer thread
      }
      mbar_fence_init();
    }
    __syncthreads();
    // PDL: dependents may launch now; nothing a previous kernel wrote is read before the wait.
    griddep_launch_dependents();
    griddep_wait();

    // The row's CSR ranges, clamped so that a corrupted tuple cannot make us read out of bounds.
    const int s_beg = min(max(a.s_ptr[row], 0), a.n_sparse);
    const int nS = min(max(a.s_ptr[row + 1], s_beg), a.n_sparse) - s_beg;
    const int d_beg = min(max(a.d_ptr[row], 0), a.n_dense);
    const int nD = min(max(a.d_ptr[row + 1], d_beg), a.n_dense) - d_beg;
    const int n_items = nS + nD;

    // Registers: each SM sub-partition holds 16K of them and runs one warp of every warpgroup.
    // The producer warpgroup gives its share to the consumers (setmaxnreg), so a consumer thread
    // may hold 232: the 64 x 256 accumulator plus a tile's A fragments. (A CTA of the consumers
    // and one producer warp puts 3 of its 9 warps on one sub-partition: at most 170 registers a
    // thread, and the launch failed with more.)
    if (wg == 0) {
      setmaxnreg_dec<40>();
      if (tid == 0) produce(a, smem, full_bar, empty_bar, s_beg, nS, d_beg, n_items, m0);
      return;
    }
    setmaxnreg_inc<232>();
    consume(a, smem, full_bar, empty_bar, nS, n_items, row, m0, wg - 1, lane);
  }

  __device__ static void produce(const SpmmArgs& a, uint8_t* smem, uint64_t* full_bar, uint64_t* empty_bar,
                                 int s_beg, int nS, int d_beg, int n_items, int m0) {
    const int num_ktiles = a.K / BK;
    const uint8_t* s_vals = static_cast<const uint8_t*>(a.s_vals);
    const uint8_t* s_meta = reinterpret_cast<const uint8_t*>(a.s_meta);
    const uint8_t* d_vals = static_cast<const uint8_t*>(a.d_vals);
    for (int i = 0; i < n_items; ++i) {
      const int s = i % STAGES;
      const int use = i / STAGES;
      if (use > 0) mbar_wait(&empty_bar[s], (use - 1) & 1);  // the consumers released the stage
      uint8_t* sx = smem + s * kStageBytes;
      uint8_t* sw = sx + kXBytes;
      const bool sparse = i < nS;
      const int t = sparse ? s_beg + i : d_beg + (i - nS);
      const int kt = min(max(sparse ? __ldg(a.s_cols + t) : __ldg(a.d_cols + t), 0), num_ktiles - 1);
      mbar_expect_tx(&full_bar[s], kXBytes + (sparse ? kSparseValBytes + kSparseMetaBytes : kWBytes));
      if (sparse) {
        bulk_g2s_keep(sw, s_vals + (size_t)t * kSparseValBytes, kSparseValBytes, &full_bar[s]);
        bulk_g2s_keep(sw + kSparseValBytes, s_meta + (size_t)t * kSparseMetaBytes, kSparseMetaBytes, &full_bar[s]);
      } else {
        bulk_g2s_keep(sw, d_vals + (size_t)t * kWBytes, kWBytes, &full_bar[s]);
      }
#pragma unroll
      for (int h = 0; h < BK / 64; ++h) tma_load_2d(sx + h * kXPanelBytes, a.x_tmap, kt * BK + h * 64, m0, &full_bar[s]);
    }
  }

  __device__ static void consume(const SpmmArgs& a, uint8_t* smem, uint64_t* full_bar, uint64_t* empty_bar, int nS,
                                 int n_items, int row, int m0, int c, int lane) {
    const int warp = (threadIdx.x / 32) & 3;           // warp inside the warpgroup
    const int mb = (BN == 128 ? 4 * c : 0) + warp;      // this warp's 16-row block of the tile
    const int tok0 = BN == 128 ? 0 : c * kWN;           // this warpgroup's first token
    float acc[kAcc];
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

    for (int i = 0; i < n_items; ++i) {
      const int s = i % STAGES;
      mbar_wait(&full_bar[s], (i / STAGES) & 1);
      const uint8_t* sx = smem + s * kStageBytes;
      const uint8_t* sw = sx + kXBytes;
      const uint32_t xa = smem_addr(sx) + tok0 * 128;
      if (i < nS) {
        const uint4* wv = reinterpret_cast<const uint4*>(sw);                        // [BN/16][BK/32][32]
        const uint32_t* wm = reinterpret_cast<const uint32_t*>(sw + kSparseValBytes);  // [BN/16][BK/64][32]
        uint4 av[BK / 32];
        uint32_t e[BK / 64];
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) av[ks] = wv[(mb * (BK / 32) + ks) * 32 + lane];
#pragma unroll
        for (int kp = 0; kp < BK / 64; ++kp) e[kp] = wm[(mb * (BK / 64) + kp) * 32 + lane];
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) {
          const uint64_t desc = smem_desc_sw128(xa + (ks / 2) * kXPanelBytes + (ks % 2) * 64);
          if (ks % 2 == 0) wgmma_sp<T, kWN, 0>(acc, av[ks], desc, e[ks / 2]);
          else wgmma_sp<T, kWN, 1>(acc, av[ks], desc, e[ks / 2]);
        }
      } else {
        const uint4* wv = reinterpret_cast<const uint4*>(sw);  // [BN/16][BK/16][32]
        uint4 av[BK / 16];
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) av[ks] = wv[(mb * (BK / 16) + ks) * 32 + lane];
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks)
          wgmma_dense<T, kWN>(acc, av[ks], smem_desc_sw128(xa + (ks / 4) * kXPanelBytes + (ks % 4) * 32));
      }
      wgmma_commit();
      wgmma_wait<0>();
      mbar_arrive(&empty_bar[s]);  // this thread is done with the stage (each releases its own reads)
    }

    // Epilogue. Both consumers past their last MMA: the pipeline buffers hold the staged tile.
    consumer_bar_sync(128 * kConsumers);
    T* ys = reinterpret_cast<T*>(smem);  // [BM][kYPitch]
    const T* bias = static_cast<const T*>(a.bias);
    const int g = lane >> 2, q = lane & 3;
    const int n_lo = mb * 16 + g;  // tile-local weight rows of this thread: n_lo and n_lo + 8
    const float b_lo = bias ? to_float<T>(bias[row * BN + n_lo]) : 0.f;
    const float b_hi = bias ? to_float<T>(bias[row * BN + n_lo + 8]) : 0.f;
#pragma unroll
    for (int j = 0; j < kWN / 8; ++j) {
      const int tk = tok0 + 8 * j + 2 * q;
      ys[tk * kYPitch + n_lo] = from_float<T>(acc[4 * j + 0] + b_lo);
      ys[(tk + 1) * kYPitch + n_lo] = from_float<T>(acc[4 * j + 1] + b_lo);
      ys[tk * kYPitch + n_lo + 8] = from_float<T>(acc[4 * j + 2] + b_hi);
      ys[(tk + 1) * kYPitch + n_lo + 8] = from_float<T>(acc[4 * j + 3] + b_hi);
    }
    consumer_bar_sync(128 * kConsumers);
    T* y = static_cast<T*>(a.y);
    const int ctid = threadIdx.x - 128;
    for (int ch = ctid; ch < BM * BN / 8; ch += 128 * kConsumers) {
      const int tk = ch / (BN / 8), cc = ch % (BN / 8);
      if (m0 + tk < a.M)
        *reinterpret_cast<uint4*>(y + (size_t)(m0 + tk) * a.ldy + (size_t)row * BN + cc * 8) =
            *reinterpret_cast<const uint4*>(ys + tk * kYPitch + cc * 8);
    }
  }
#endif
};

template <typename T, int BM, int BN, int BK, int ST>
__global__ void __launch_bounds__(384, 1) spmm_wgmma_kernel(const __grid_constant__ SpmmArgs a) {
#ifdef STOICC_WGMMA
  SpmmWgmma<T, BM, BN, BK, ST>::run(a);
#endif
}

// Launches one of the sm_90a prefill kernels (this file's and spmm_wgmma_2rows.cuh's): they
// share the launch: PDL, X's TMA tensor map for BM-token boxes, dynamic shared memory. They exist
// only as sm_90a code (no forward-compatible PTX): launch only when the runtime picked that
// binary for the current device.
template <typename T, typename Kernel>
int launch_sm90a_prefill(Kernel kernel, size_t smem_bytes, int threads, dim3 grid, int bm, const SpmmArgs& a,
                         cudaStream_t stream) {
  if (binary_version(kernel) != 90) return (int)cudaErrorInvalidDeviceFunction;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_bytes);
  if (err != cudaSuccess) return (int)err;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem_bytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  SpmmArgs b = a;
  const int rc = encode_x_tensor_map(b.x_tmap, a.x, a.M, a.K, a.ldx, std::is_same_v<T, __nv_bfloat16>, bm);
  if (rc != 0) return rc;
  err = cudaLaunchKernelEx(&cfg, kernel, b);
  if (err != cudaSuccess) return (int)err;
  return (int)cudaGetLastError();
}

template <typename T, int BM, int BN, int BK, int ST>
int SpmmWgmma<T, BM, BN, BK, ST>::launch(const SpmmArgs& a, cudaStream_t stream) {
  const dim3 grid((unsigned)(a.N / BN), (unsigned)((a.M + BM - 1) / BM));
  return launch_sm90a_prefill<T>(spmm_wgmma_kernel<T, BM, BN, BK, ST>, kSmemBytes, kThreads, grid, BM, a, stream);
}

// What the generated instances of the sm_90a prefill families (wgmma, wgmma2) call: the fp16 or
// bf16 instantiation of the family's kernel struct K, which launches itself (K::launch).
template <template <typename, int, int, int, int> class K, int BM, int BN, int BK, int ST>
int launch_sm90a_instance(const SpmmArgs& a, DType dt, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dt == DType::BF16) return K<__nv_bfloat16, BM, BN, BK, ST>::launch(a, s);
  return K<__half, BM, BN, BK, ST>::launch(a, s);
}

// The sm_90a prefill kernels reduce nothing across CTAs: no cluster, no workspace.
template <int BM, int BN, int BK, int ST>
bool sm90a_uses_cluster(DType) {
  return false;
}

}  // namespace stoicc
