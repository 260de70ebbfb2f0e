// Compile-time shape of one mma.sync instance (SpmmKernel, mma/kernel.cuh): warp tiling, tile
// and stage bytes, the shared-memory layout of the X slice. Pure declarations; SpmmKernel derives
// from it (through SpmmPlan, mma/plan.cuh) and names these members with using-declarations.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../../common.h"

namespace stoicc {

template <typename T, int BM, int BN, int BK, int WARPS_N, int WARPS_M, int STAGES, int SCHED>
struct SpmmConfig {
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

  static_assert(BK % 64 == 0, "BLOCK_K must be a multiple of 64 (one metadata word spans 64 K)");
  static_assert(kWarpRows % 16 == 0 && kMT >= 1, "each warp needs whole m16 blocks");
  static_assert(kWarpCols % 8 == 0 && kNT >= 1, "each warp needs whole n8 blocks");
  static_assert(STAGES >= 2, "pipeline needs at least two stages");
};

}  // namespace stoicc
