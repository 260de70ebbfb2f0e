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
//
// The code is in kernels/mma/, a file per phase and per architecture's path:
//   config.cuh            the instance's shape: warp tiling, tile and stage bytes, the swizzled X
//                         layout in shared memory (SpmmConfig)
//   plan.cuh, plan.inc    work assignment: Segment, item_at_cost, the sm_90 L2 prefetch of a CTA's
//                         first tiles (SpmmPlan); the row ranges, stream-K split and plan() of run()
//   load_sm80.cuh/.inc    sm_80/86/89 loads by cp.async: X chunk offsets per thread; one item
//   load_sm90.cuh/.inc    sm_90 loads by cp.async.bulk and TMA on mbarriers: the barriers; one item
//   compute.cuh           the accumulator and the mma.sp / mma K steps of one slot (SpmmCompute)
//   reduce_workspace.inc  epilogue: Y (+ bias), or the fp32 workspace reduction of shared rows
//   reduce_sm90.cuh       sm_90 split-K: the cluster's push reduction through distributed smem
//   kernel.cuh            SpmmKernel::run(): the pipeline loop around the phases; __global__ entry
//   launch.cuh            host: grid, cluster, PDL, X's tensor map; the instance entry points
// The .inc files are fragments of run()'s body, included at their place: a phase that did not
// compile to the same SASS as a function stays text in the one function (kernel.cuh says why).
// scripts/sass_diff.sh checks that a refactor leaves the SASS of every instance as it was.
// The generated instances (csrc/instances/spmm_*.cu) include this header.
#pragma once
#include "mma/kernel.cuh"
#include "mma/launch.cuh"
