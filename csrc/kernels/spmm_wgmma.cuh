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
//     them, release the stage (one arrive per consumer warp).
// Epilogue: the accumulators are staged through shared memory as [BM tokens][BN columns] (the
// pipeline buffers, free once both consumers are past their last MMA) and written to Y with
// coalesced 16-byte stores, bias added in fp32 before rounding, rows past M skipped.
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
// The arrives below are predicated inside the asm rather than branched around: a consumer warp
// releases a stage while its newest MMAs are still in flight, and a divergent branch there makes
// ptxas serialize every wgmma (it must place its register-protection arrive in that path).
__device__ __forceinline__ void mbar_arrive_if(uint64_t* bar, bool pred) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %1, 0;\n@p mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(
                   smem_addr(bar)),
               "r"((int)pred)
               : "memory");
}
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
// Arrives on the mbarrier at `bar`'s offset in cluster rank `rank` (release at cluster scope: this
// warp's earlier shared-memory reads are ordered before the peer's producer refills the stage).
__device__ __forceinline__ void mbar_arrive_cluster_if(uint64_t* bar, int rank, bool pred) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %1, 0;\n@p mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n}\n" ::"r"(
          peer_addr(bar, rank)),
      "r"((int)pred)
      : "memory");
}
// TMA tensor copy of a 2-D box into the same shared-memory offset of every CTA in `mask`, each
// copy completing on the mbarrier at `bar`'s offset in its destination CTA.
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const void* tmap, int c0, int c1, uint64_t* bar,
                                                      uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(smem_addr(dst)),
      "l"(tmap), "r"(c0), "r"(c1), "r"(smem_addr(bar)), "h"(mask)
      : "memory");
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

template <typename T, int BM, int BN, int BK, int STAGES, int CLUSTER, bool PIPE>
struct SpmmWgmma {
  static constexpr int kConsumers = 2;                        // consumer warpgroups (warps 0-7)
  static constexpr int kThreads = 128 * (kConsumers + 1);     // + the producer warpgroup (warps 8-11)
  static constexpr int kWN = BN == 128 ? BM : BM / 2;         // tokens per consumer (the wgmma N)
  static constexpr int kAcc = kWN / 2;                        // f32 accumulators per thread
  static constexpr int kXPanelBytes = BM * 128;               // [BM rows][64 columns] of X
  static constexpr int kXBytes = BM * BK * 2;
  static constexpr int kXRowsPerCta = BM / CLUSTER;           // rows of each X slice one CTA copies
  static constexpr int kWBytes = 2 * BN * BK;                 // a dense tile; a 2:4 tile uses 9/16
  static constexpr int kSparseValBytes = BN * BK;
  static constexpr int kSparseMetaBytes = BN * BK / 8;
  static constexpr int kStageBytes = kXBytes + kWBytes;       // X first: panels stay 1024-aligned
  static constexpr int kYPitch = BN + 8;                      // staged output row, in elements
  static constexpr bool kPipelined = PIPE && !(kAcc == 128 && BK == 128);  // see consume()
  // + 1 KiB: the dynamic shared memory base is rounded up to the 1024-byte swizzle alignment.
  static constexpr size_t kSmemBytes = (size_t)STAGES * kStageBytes + 1024;
  // What a stage holds for this CTA's tile row (the X slice is there in every case).
  enum Kind : int { kNone = 0, kSparse = 1, kDense = 2, kEnd = 3 };
  static_assert(BN == 64 || BN == 128, "BLOCK_N must be 64 or 128");
  static_assert(BK == 64 || BK == 128, "BLOCK_K must be 64 or 128");
  static_assert(kWN == 64 || kWN == 128 || kWN == 256, "wgmma N must be 64, 128 or 256");
  static_assert(CLUSTER == 1 || CLUSTER == 2 || CLUSTER == 4, "cluster of 1, 2 or 4 tile rows");
  static_assert(kXRowsPerCta % 8 == 0, "each CTA's share of X must be whole 8-row swizzle atoms");
  static_assert(STAGES >= 2, "the pipeline needs two stages");
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an H100/H200 CTA may have");
  static_assert(BM * kYPitch * 2 <= STAGES * kStageBytes, "the output staging must fit the pipeline buffers");
  static_assert(kXPanelBytes % 1024 == 0 && kWBytes % 1024 == 0, "stages must stay 1024-byte aligned");

#ifdef STOICC_WGMMA
  struct Barriers {
    uint64_t full[STAGES];   // X slice (from every CTA of the cluster) + this CTA's weight tile landed
    uint64_t empty[STAGES];  // the consumers of every CTA of the cluster are done with the stage
    int kind[STAGES];        // Kind of the stage's item for this CTA's row, written by the producer
  };

  // A tile row's CSR ranges, clamped so that a corrupted tuple cannot make us read out of bounds
  // (rows past the weight, the padding CTA of an odd cluster, have none).
  struct RowLists {
    int s_beg, s_end, d_beg, d_end;
  };
  __device__ static RowLists row_lists(const SpmmArgs& a, int row) {
    RowLists l{0, 0, 0, 0};
    if (row >= a.N / BN) return l;
    l.s_beg = min(max(a.s_ptr[row], 0), a.n_sparse);
    l.s_end = min(max(a.s_ptr[row + 1], l.s_beg), a.n_sparse);
    l.d_beg = min(max(a.d_ptr[row], 0), a.n_dense);
    l.d_end = min(max(a.d_ptr[row + 1], l.d_beg), a.n_dense);
    return l;
  }

  __device__ static void run(const SpmmArgs& a) {
    extern __shared__ __align__(128) uint8_t smem_raw[];
    uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    __shared__ __align__(8) Barriers bars;
    const int tid = threadIdx.x;
    const int rank = CLUSTER > 1 ? (int)cluster_ctarank() : 0;
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < STAGES; ++s) {
        mbar_init(&bars.full[s], 1);
        mbar_init(&bars.empty[s], 4 * kConsumers * CLUSTER);  // one arrive per consumer warp of the cluster
      }
      mbar_fence_init();
    }
    // Every CTA's barriers are initialized before any peer copies into it or arrives on them.
    if constexpr (CLUSTER > 1) cluster_sync();
    else __syncthreads();
    // PDL: dependents may launch now; nothing a previous kernel wrote is read before the wait.
    griddep_launch_dependents();
    griddep_wait();

    // Registers: each SM sub-partition holds 16K of them and gets one warp of every warpgroup;
    // the producer warpgroup gives its share to the consumers (setmaxnreg), so a consumer thread
    // may hold 232 (the 64 x N accumulator plus two buffers of A fragments).
    if (tid >= 128 * kConsumers) {
      setmaxnreg_dec<40>();
      if (tid == 128 * kConsumers) produce(a, smem, bars, rank);
    } else {
      setmaxnreg_inc<232>();
      consume(a, smem, bars);
    }
    // No CTA leaves while a peer may still copy into its shared memory or arrive on its barriers.
    if constexpr (CLUSTER > 1) cluster_sync();
  }

  // One thread. The cluster's CTAs hold CLUSTER consecutive tile rows and the same token block.
  // They walk the same list: every K tile that any of their rows stores, in K order. For each
  // item every CTA copies its kXRowsPerCta rows of the X slice into the same stage of every CTA
  // (TMA multicast), so each CTA reads 1/CLUSTER of the X bytes it consumes; each CTA copies its
  // own row's weight tile when it has one there. A stage is refilled only once the consumers of
  // every CTA released it (the multicast writes into all of them).
  __device__ static void produce(const SpmmArgs& a, uint8_t* smem, Barriers& bars, int rank) {
    const int num_ktiles = a.K / BK;
    const int base_row = blockIdx.x - rank;
    const int m0 = blockIdx.y * BM;
    const uint8_t* s_vals = static_cast<const uint8_t*>(a.s_vals);
    const uint8_t* s_meta = reinterpret_cast<const uint8_t*>(a.s_meta);
    const uint8_t* d_vals = static_cast<const uint8_t*>(a.d_vals);
    constexpr int kNoCol = 1 << 30;
    RowLists l[CLUSTER];
    int cs[CLUSTER], cd[CLUSTER];  // next K-tile column of each row's 2:4 / dense list (kNoCol: done)
    auto col = [&](const int32_t* cols, int i, int end) {
      return i < end ? min(max(__ldg(cols + i), 0), num_ktiles - 1) : kNoCol;
    };
#pragma unroll
    for (int r = 0; r < CLUSTER; ++r) {
      l[r] = row_lists(a, base_row + r);
      cs[r] = col(a.s_cols, l[r].s_beg, l[r].s_end);
      cd[r] = col(a.d_cols, l[r].d_beg, l[r].d_end);
    }
    const uint16_t mask = (uint16_t)((1 << CLUSTER) - 1);
    for (int i = 0;; ++i) {
      int c = kNoCol;
#pragma unroll
      for (int r = 0; r < CLUSTER; ++r) c = min(c, min(cs[r], cd[r]));
      const int s = i % STAGES;
      const int use = i / STAGES;
      if (use > 0) mbar_wait(&bars.empty[s], (use - 1) & 1);  // every CTA's consumers released it
      if (c == kNoCol) {  // end of the list: tell the consumers
        bars.kind[s] = kEnd;
        mbar_arrive(&bars.full[s]);
        return;
      }
      int kind = kNone, t = 0;
#pragma unroll
      for (int r = 0; r < CLUSTER; ++r) {  // advance every row's list past column c
        if (cs[r] == c) {
          if (r == rank) { kind = kSparse; t = l[r].s_beg; }
          cs[r] = col(a.s_cols, ++l[r].s_beg, l[r].s_end);
        } else if (cd[r] == c) {
          if (r == rank) { kind = kDense; t = l[r].d_beg; }
          cd[r] = col(a.d_cols, ++l[r].d_beg, l[r].d_end);
        }
      }
      bars.kind[s] = kind;  // published by the arrive below (release), read after the full wait
      uint8_t* sx = smem + s * kStageBytes;
      uint8_t* sw = sx + kXBytes;
      mbar_expect_tx(&bars.full[s], kXBytes + (kind == kSparse ? kSparseValBytes + kSparseMetaBytes
                                               : kind == kDense ? kWBytes : 0));
      if (kind == kSparse) {
        bulk_g2s_keep(sw, s_vals + (size_t)t * kSparseValBytes, kSparseValBytes, &bars.full[s]);
        bulk_g2s_keep(sw + kSparseValBytes, s_meta + (size_t)t * kSparseMetaBytes, kSparseMetaBytes, &bars.full[s]);
      } else if (kind == kDense) {
        bulk_g2s_keep(sw, d_vals + (size_t)t * kWBytes, kWBytes, &bars.full[s]);
      }
#pragma unroll
      for (int h = 0; h < BK / 64; ++h) {
        uint8_t* dst = sx + h * kXPanelBytes + rank * kXRowsPerCta * 128;
        if constexpr (CLUSTER > 1)
          tma_load_2d_multicast(dst, a.x_tmap, c * BK + h * 64, m0 + rank * kXRowsPerCta, &bars.full[s], mask);
        else
          tma_load_2d(dst, a.x_tmap, c * BK + h * 64, m0, &bars.full[s]);
      }
    }
  }

  // Releases stage s to the producers of every CTA of the cluster (one arrive per warp).
  __device__ static void release(Barriers& bars, int s, int lane) {
    if constexpr (CLUSTER > 1) {
#pragma unroll
      for (int r = 0; r < CLUSTER; ++r) mbar_arrive_cluster_if(&bars.empty[s], r, lane == 0);
    } else {
      mbar_arrive_if(&bars.empty[s], lane == 0);
    }
  }

  // Two consumer warpgroups, in step over the same items (each its rows or its tokens). Pipelined:
  // each keeps one item's MMAs in flight while it loads the next item's A fragments (two register
  // buffers, alternating) and releases a stage once the MMAs that read it are complete
  // (wgmma.wait_group 1: all but the newest group). Where the two buffers and the accumulators do
  // not fit the 232 registers a consumer thread has (a 64 x 256 accumulator with 128-wide dense
  // tiles), ptxas would serialize every wgmma (C7512): those instances wait for each item's MMAs
  // before loading the next.
  __device__ static void consume(const SpmmArgs& a, uint8_t* smem, Barriers& bars) {
    const int lane = threadIdx.x & 31;
    const int c = threadIdx.x / 128;                    // consumer warpgroup
    const int warp = (threadIdx.x / 32) & 3;            // warp inside the warpgroup
    const int mb = (BN == 128 ? 4 * c : 0) + warp;      // this warp's 16-row block of the tile
    const int tok0 = BN == 128 ? 0 : c * kWN;           // this warpgroup's first token
    float acc[kAcc];
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;
    if constexpr (kPipelined) {
      uint4 av0[BK / 16], av1[BK / 16];  // A fragments: BK/32 (2:4) or BK/16 (dense) K steps
      uint32_t e0[BK / 64], e1[BK / 64];

      int i = 0, prev = -1;
      // Issues item i from buffer (av, e); false at the end of the list.
      auto step = [&](uint4 (&av)[BK / 16], uint32_t (&e)[BK / 64]) -> bool {
        const int s = i % STAGES;
        mbar_wait(&bars.full[s], (i / STAGES) & 1);
        // Warp-uniform as far as ptxas can tell: a wgmma under a branch it thinks divergent is
        // serialized (C7520).
        const int kind = __shfl_sync(0xffffffffu, bars.kind[s], 0);
        if (kind == kEnd) return false;
        const uint8_t* sx = smem + s * kStageBytes;
        const uint8_t* sw = sx + kXBytes;
        const uint32_t xa = smem_addr(sx) + tok0 * 128;
        if (kind == kSparse) {
          const uint4* wv = reinterpret_cast<const uint4*>(sw);                        // [BN/16][BK/32][32]
          const uint32_t* wm = reinterpret_cast<const uint32_t*>(sw + kSparseValBytes);  // [BN/16][BK/64][32]
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
        } else if (kind == kDense) {
          const uint4* wv = reinterpret_cast<const uint4*>(sw);  // [BN/16][BK/16][32]
#pragma unroll
          for (int ks = 0; ks < BK / 16; ++ks) av[ks] = wv[(mb * (BK / 16) + ks) * 32 + lane];
          wgmma_fence();
#pragma unroll
          for (int ks = 0; ks < BK / 16; ++ks)
            wgmma_dense<T, kWN>(acc, av[ks], smem_desc_sw128(xa + (ks / 4) * kXPanelBytes + (ks % 4) * 32));
        }
        wgmma_commit();
        wgmma_wait<1>();  // the previous item's MMAs are complete
        if (prev >= 0) release(bars, prev, lane);
        prev = s;
        ++i;
        return true;
      };
      while (step(av0, e0) && step(av1, e1)) {
      }
      wgmma_wait<0>();
      if (prev >= 0) release(bars, prev, lane);

    } else {
      for (int i = 0;; ++i) {
        const int s = i % STAGES;
        mbar_wait(&bars.full[s], (i / STAGES) & 1);
        // Warp-uniform as far as ptxas can tell: a wgmma under a branch it thinks divergent is
        // serialized (C7520).
        const int kind = __shfl_sync(0xffffffffu, bars.kind[s], 0);
        if (kind == kEnd) break;
        const uint8_t* sx = smem + s * kStageBytes;
        const uint8_t* sw = sx + kXBytes;
        const uint32_t xa = smem_addr(sx) + tok0 * 128;
        if (kind == kSparse) {
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
          wgmma_commit();
          wgmma_wait<0>();
        } else if (kind == kDense) {
          const uint4* wv = reinterpret_cast<const uint4*>(sw);  // [BN/16][BK/16][32]
          uint4 av[BK / 16];
#pragma unroll
          for (int ks = 0; ks < BK / 16; ++ks) av[ks] = wv[(mb * (BK / 16) + ks) * 32 + lane];
          wgmma_fence();
#pragma unroll
          for (int ks = 0; ks < BK / 16; ++ks)
            wgmma_dense<T, kWN>(acc, av[ks], smem_desc_sw128(xa + (ks / 4) * kXPanelBytes + (ks % 4) * 32));
          wgmma_commit();
          wgmma_wait<0>();
        }
        release(bars, s, lane);
      }
    }

    // Epilogue. Both consumers past their last MMA, every item's copies landed: the pipeline
    // buffers hold the staged tile.
    consumer_bar_sync(128 * kConsumers);
    const int row = blockIdx.x;
    if (row >= a.N / BN) return;  // the padding CTA of a cluster past the last tile row
    const int m0 = blockIdx.y * BM;
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
    const int ctid = threadIdx.x;
    for (int ch = ctid; ch < BM * BN / 8; ch += 128 * kConsumers) {
      const int tk = ch / (BN / 8), cc = ch % (BN / 8);
      if (m0 + tk < a.M)
        *reinterpret_cast<uint4*>(y + (size_t)(m0 + tk) * a.ldy + (size_t)row * BN + cc * 8) =
            *reinterpret_cast<const uint4*>(ys + tk * kYPitch + cc * 8);
    }
  }
#endif
};

template <typename T, int BM, int BN, int BK, int ST, int CL, bool PIPE>
__global__ void __launch_bounds__(384, 1) spmm_wgmma_kernel(const __grid_constant__ SpmmArgs a) {
#ifdef STOICC_WGMMA
  SpmmWgmma<T, BM, BN, BK, ST, CL, PIPE>::run(a);
#endif
}

// The wgmma kernels exist only as sm_90a code (no forward-compatible PTX): launch only when the
// runtime picked that binary for the current device.
template <typename T, int BM, int BN, int BK, int ST, int CL, bool PIPE>
int launch_wgmma_typed(const SpmmArgs& a, cudaStream_t stream) {
  using K = SpmmWgmma<T, BM, BN, BK, ST, CL, PIPE>;
  auto kernel = spmm_wgmma_kernel<T, BM, BN, BK, ST, CL, PIPE>;
  if (binary_version(kernel) != 90) return (int)cudaErrorInvalidDeviceFunction;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::kSmemBytes);
  if (err != cudaSuccess) return (int)err;
  cudaLaunchConfig_t cfg{};
  // A cluster holds CL consecutive tile rows; an odd last cluster gets a padding CTA that only
  // copies its share of X for its peers.
  const int tile_rows = a.N / BN;
  cfg.gridDim = dim3((unsigned)((tile_rows + CL - 1) / CL * CL), (unsigned)((a.M + BM - 1) / BM));
  cfg.blockDim = dim3(K::kThreads);
  cfg.dynamicSmemBytes = K::kSmemBytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n_attr = 0;
  if (CL > 1) {
    attr[n_attr].id = cudaLaunchAttributeClusterDimension;
    attr[n_attr].val.clusterDim.x = CL;
    attr[n_attr].val.clusterDim.y = 1;
    attr[n_attr].val.clusterDim.z = 1;
    ++n_attr;
  }
  if (pdl_enabled()) {
    attr[n_attr].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n_attr].val.programmaticStreamSerializationAllowed = 1;
    ++n_attr;
  }
  cfg.attrs = n_attr ? attr : nullptr;
  cfg.numAttrs = n_attr;
  SpmmArgs b = a;
  const int rc = encode_x_tensor_map(b.x_tmap, a.x, a.M, a.K, a.ldx, std::is_same_v<T, __nv_bfloat16>, BM / CL);
  if (rc != 0) return rc;
  err = cudaLaunchKernelEx(&cfg, kernel, b);
  if (err != cudaSuccess) return (int)err;
  return (int)cudaGetLastError();
}

template <int BM, int BN, int BK, int ST, int CL, bool PIPE>
int launch_wgmma_instance(const SpmmArgs& a, DType dt, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dt == DType::BF16) return launch_wgmma_typed<__nv_bfloat16, BM, BN, BK, ST, CL, PIPE>(a, s);
  return launch_wgmma_typed<__half, BM, BN, BK, ST, CL, PIPE>(a, s);
}

}  // namespace stoicc
