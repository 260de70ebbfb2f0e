// Hopper warpgroup MMA (wgmma.mma_async, sm_90a only) for the tile-sparse kernel's wgmma
// instances. The weight stays the A operand and comes from registers, loaded from the same
// fragment-ordered tiles as the mma.sync path (docs/format.md sections 3-5: per warp, wgmma's A
// and E register layouts are those of mma.sp m16n8k32 and mma m16n8k16). X, the B operand, is
// read by the tensor cores straight from shared memory through a matrix descriptor, so a warp no
// longer spends one ldmatrix per 8 tokens per K step: that issue cost is what held the mma.sync
// path below the memory bound at M = 32 and 64 (docs/kernels.md).
//
// X in shared memory, "core matrix" layout (no swizzle, K-major): the 16-byte chunk holding
// k = 8c .. 8c+7 of token r sits at byte ((c * BM/8 + r/8) * 8 + r%8) * 16. Eight tokens of one
// chunk form one contiguous 128-byte core matrix; core matrices adjacent along the tokens are 128
// bytes apart (the descriptor's stride byte offset), those adjacent along K are BM*16 bytes apart
// (its leading byte offset).
#pragma once
#include <cstdint>

#include "ptx.cuh"

// nvcc defines __CUDA_ARCH_FEAT_SM90_ALL when it compiles for sm_90a, the only target with
// wgmma. Everywhere else the wrappers are empty; the host never launches that code (the instance
// launcher exists only in builds that include 90a, and check_instance requires an sm_90 device).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define STOICC_WGMMA 1
#endif

namespace stoicc {

__device__ __forceinline__ void wgmma_fence() {
#ifdef STOICC_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef STOICC_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef STOICC_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// cp.async writes shared memory through the generic proxy, wgmma reads it through the async
// proxy: each writer fences its own landed copies before the barrier that publishes them.
__device__ __forceinline__ void fence_proxy_async_smem() {
#ifdef STOICC_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Shared-memory matrix descriptor, no swizzle: start address, leading byte offset (K direction)
// and stride byte offset (token direction), each in 16-byte units.
__device__ __forceinline__ uint64_t wgmma_desc(const void* smem, uint32_t lbo, uint32_t sbo) {
  const uint64_t addr = smem_addr(smem);
  return ((addr >> 4) & 0x3FFF) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) | ((uint64_t)((sbo >> 4) & 0x3FFF) << 32);
}

// Operand lists. D: the N/8 n8 blocks of one m64 block, in the order of the mma.m16n8 C
// fragment (which is wgmma's accumulator order too). The A registers, the descriptor and (2:4)
// the metadata and selector follow the N/2 accumulator registers.
#define STOICC_D4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define STOICC_DOPS_16 STOICC_D4(0), STOICC_D4(1)
#define STOICC_DOPS_32 STOICC_DOPS_16, STOICC_D4(2), STOICC_D4(3)
#define STOICC_DOPS_64 STOICC_DOPS_32, STOICC_D4(4), STOICC_D4(5), STOICC_D4(6), STOICC_D4(7)
#define STOICC_DREG_16 "{%0, %1, %2, %3, %4, %5, %6, %7}"
#define STOICC_DREG_32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define STOICC_DREG_64                                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define STOICC_AREG_16 "{%8, %9, %10, %11}, %12"
#define STOICC_AREG_32 "{%16, %17, %18, %19}, %20"
#define STOICC_AREG_64 "{%32, %33, %34, %35}, %36"
#define STOICC_SPARG_16 ", %13, %14"
#define STOICC_SPARG_32 ", %21, %22"
#define STOICC_SPARG_64 ", %37, %38"
// scale-d is the always-true predicate p (accumulate), scale-a = scale-b = 1, B not transposed.
#define STOICC_WGMMA_ASM(OP, SHAPE, TY, N, SPARG, ...)                                                          \
  asm volatile("{\n.reg .pred p;\nsetp.eq.u32 p, 1, 1;\nwgmma.mma_async" OP ".sync.aligned." SHAPE ".f32." TY \
               "." TY " " STOICC_DREG_##N ", " STOICC_AREG_##N SPARG ", p, 1, 1, 0;\n}\n"                       \
               : STOICC_DOPS_##N                                                                               \
               : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(desc)__VA_ARGS__)

// D(64 x N) += A(64 x 32 logical, 2:4, from registers) * B(32 x N, descriptor), metadata e,
// selector SEL (the same lane pairs as mma.sp: 0 reads lanes 4g, 4g+1, 1 reads 4g+2, 4g+3).
template <typename T, int N, int SEL>
__device__ __forceinline__ void wgmma_sp(float (&d)[N / 8][4], const uint4& a, uint64_t desc, uint32_t e) {
#ifdef STOICC_WGMMA
  constexpr bool bf = MmaType<T>::bf16;
  if constexpr (N == 16) {
    if constexpr (bf) STOICC_WGMMA_ASM(".sp", "m64n16k32", "bf16", 16, STOICC_SPARG_16, , "r"(e), "n"(SEL));
    else STOICC_WGMMA_ASM(".sp", "m64n16k32", "f16", 16, STOICC_SPARG_16, , "r"(e), "n"(SEL));
  } else if constexpr (N == 32) {
    if constexpr (bf) STOICC_WGMMA_ASM(".sp", "m64n32k32", "bf16", 32, STOICC_SPARG_32, , "r"(e), "n"(SEL));
    else STOICC_WGMMA_ASM(".sp", "m64n32k32", "f16", 32, STOICC_SPARG_32, , "r"(e), "n"(SEL));
  } else {
    static_assert(N == 64, "wgmma instances cover 16, 32 or 64 tokens");
    if constexpr (bf) STOICC_WGMMA_ASM(".sp", "m64n64k32", "bf16", 64, STOICC_SPARG_64, , "r"(e), "n"(SEL));
    else STOICC_WGMMA_ASM(".sp", "m64n64k32", "f16", 64, STOICC_SPARG_64, , "r"(e), "n"(SEL));
  }
#endif
}

// D(64 x N) += A(64 x 16, dense, from registers) * B(16 x N, descriptor).
template <typename T, int N>
__device__ __forceinline__ void wgmma_dense(float (&d)[N / 8][4], const uint4& a, uint64_t desc) {
#ifdef STOICC_WGMMA
  constexpr bool bf = MmaType<T>::bf16;
  if constexpr (N == 16) {
    if constexpr (bf) STOICC_WGMMA_ASM("", "m64n16k16", "bf16", 16, "");
    else STOICC_WGMMA_ASM("", "m64n16k16", "f16", 16, "");
  } else if constexpr (N == 32) {
    if constexpr (bf) STOICC_WGMMA_ASM("", "m64n32k16", "bf16", 32, "");
    else STOICC_WGMMA_ASM("", "m64n32k16", "f16", 32, "");
  } else {
    static_assert(N == 64, "wgmma instances cover 16, 32 or 64 tokens");
    if constexpr (bf) STOICC_WGMMA_ASM("", "m64n64k16", "bf16", 64, "");
    else STOICC_WGMMA_ASM("", "m64n64k16", "f16", 64, "");
  }
#endif
}

#undef STOICC_WGMMA_ASM

}  // namespace stoicc
