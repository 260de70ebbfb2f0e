// Thin wrappers over the PTX instructions the tile-sparse kernels use (sm_80 and newer):
// cp.async (global -> shared, with zero fill), ldmatrix, mma.sync m16n8k16 (dense tiles) and
// mma.sp.sync m16n8k32 (2:4 tiles). Both MMAs produce the same m16n8 f32 accumulator layout,
// which is why dense and 2:4 K-steps can share one accumulator.
#pragma once
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace stoicc {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy that bypasses L1 (weights are streamed once). src_bytes = 0 zero-fills
// the destination, which is how rows of X past M are padded.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(src_bytes));
}
// Same, with an L2 evict-first hint: each weight byte is read exactly once per call.
__device__ __forceinline__ void cp_async16_stream(void* dst, const void* src, uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
               "l"(src), "l"(policy));
}
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

template <typename T> struct MmaType;
template <> struct MmaType<__half> { static constexpr bool bf16 = false; };
template <> struct MmaType<__nv_bfloat16> { static constexpr bool bf16 = true; };

// The two MMAs differ between fp16 and bf16 only in the type names of the instruction, so
// each is written once as a macro over the type string.
#define STOICC_MMA_DENSE(TY)                                                                              \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
               "{%8,%9}, {%0,%1,%2,%3};\n"                                                               \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                          \
               : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1))
#define STOICC_MMA_SPARSE(TY)                                                                              \
  asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32." TY "." TY                    \
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, %13;\n"          \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                           \
               : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e), \
                 "n"(SEL))

// D = A(16x16, dense) * B(16x8) + D. a: 4 regs, b: 2 regs, c: 4 f32.
template <typename T>
__device__ __forceinline__ void mma_dense(float (&c)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  if constexpr (MmaType<T>::bf16) STOICC_MMA_DENSE("bf16");
  else STOICC_MMA_DENSE("f16");
}

// D = A(16x32 logical, 2:4 -> 16x16 stored) * B(32x8) + D, metadata e, selector SEL (0: lanes
// 4g, 4g+1 supply e; 1: lanes 4g+2, 4g+3). The selector must be an immediate.
template <typename T, int SEL>
__device__ __forceinline__ void mma_sparse(float (&c)[4], const uint4& a, const uint32_t (&b)[4],
                                           uint32_t e) {
  if constexpr (MmaType<T>::bf16) STOICC_MMA_SPARSE("bf16");
  else STOICC_MMA_SPARSE("f16");
}
#undef STOICC_MMA_DENSE
#undef STOICC_MMA_SPARSE

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

}  // namespace stoicc

// ---- Hopper (sm_90): bulk copies completed on an mbarrier -----------------------------------
// One thread moves a whole contiguous tile with one instruction, so the SM needs no per-thread
// copy slots to keep tens of KiB in flight (the cp.async path tops out far below HBM speed).
namespace stoicc {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define STOICC_BULK_COPY 1
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::); }
// The arrive.expect_tx and the try_wait loop of the mbar_* variants below; QUAL is the wait's
// semantics and scope qualifier ("" or ".acquire.cluster"), the rest the asm's clobber list.
#define STOICC_MBAR_EXPECT_TX(...) \
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes) __VA_ARGS__)
#define STOICC_MBAR_WAIT_LOOP(QUAL, ...)                                                            \
  asm volatile("{\n.reg .pred p;\nWAIT_%=:\n"                                                      \
               "mbarrier.try_wait.parity" QUAL ".shared::cta.b64 p, [%0], %1;\n"                     \
               "@!p bra WAIT_%=;\n}\n" ::"r"(smem_addr(bar)),                                        \
               "r"(parity) __VA_ARGS__)
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) { STOICC_MBAR_EXPECT_TX(); }
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) { STOICC_MBAR_WAIT_LOOP(""); }
// The same with a compiler memory clobber, for a hand-off through a plain shared-memory word (the
// two-row kernel's stage descriptor): the compiler must not move its store past the arrive or its
// load above the wait.
__device__ __forceinline__ void mbar_expect_tx_mem(uint64_t* bar, uint32_t bytes) { STOICC_MBAR_EXPECT_TX(: "memory"); }
__device__ __forceinline__ void mbar_wait_mem(uint64_t* bar, uint32_t parity) { STOICC_MBAR_WAIT_LOOP("", : "memory"); }
// Global -> shared bulk copy of `bytes` (multiple of 16, both addresses 16-byte aligned).
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::
          "r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(policy));
}
// Orders this thread's earlier generic-proxy shared-memory accesses (and, after a barrier, the
// CTA's) before its later async-proxy ones (bulk / TMA copies into the same bytes).
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// TMA tensor copy of the 2-D box at element coordinates (c0 along the inner dimension, c1
// along rows) described by the tensor map at `tmap` (a __grid_constant__ kernel argument) into
// shared memory, completed on `bar`. Out-of-range rows are written as zeros.
__device__ __forceinline__ void tma_load_2d(void* dst, const void* tmap, int c0, int c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_addr(dst)),
      "l"(tmap), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}
// Programmatic dependent launch (PDL). launch_dependents lets the next kernel of the stream (if
// launched with the programmatic-serialization attribute) start its CTAs before this grid ends;
// wait blocks until every prerequisite grid has completed and its memory is visible. Nothing a
// previous kernel may have written may be read before wait.
__device__ __forceinline__ void griddep_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
// A hint: start bringing `bytes` (multiple of 16, 16-byte aligned) at `src` into L2. Reads nothing
// into the SM, so it is safe before griddep_wait (a stale address only wastes the prefetch).
__device__ __forceinline__ void prefetch_l2(const void* src, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(src), "r"(bytes) : "memory");
}
// Thread-block clusters: split-K partners reduce through distributed shared memory.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The shared::cluster address of the object at `p`'s shared-memory offset in cluster rank `rank`.
__device__ __forceinline__ uint32_t peer_addr(const void* p, int rank) {
  uint32_t addr;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(addr) : "r"(smem_addr(p)), "r"(rank));
  return addr;
}
// Stores v at `p`'s offset in cluster rank `rank` without waiting: the bytes count against
// the transaction count of the mbarrier at `bar`'s offset in that CTA (complete_tx).
__device__ __forceinline__ void st_async_peer_f4(void* p, int rank, float4 v, uint64_t* bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n"
               ::"r"(peer_addr(p, rank)), "r"(__float_as_uint(v.x)), "r"(__float_as_uint(v.y)),
               "r"(__float_as_uint(v.z)), "r"(__float_as_uint(v.w)), "r"(peer_addr(bar, rank))
               : "memory");
}
// Waits for the phase of parity `parity` of a local mbarrier that other CTAs of the cluster
// complete (acquire at cluster scope: their stores are visible afterwards).
__device__ __forceinline__ void mbar_wait_cluster(uint64_t* bar, uint32_t parity) {
  STOICC_MBAR_WAIT_LOOP(".acquire.cluster", : "memory");
}
#endif
}  // namespace stoicc
