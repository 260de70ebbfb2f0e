// Host launchers of the mma.sync kernel (mma/kernel.cuh): the grid of each schedule, the
// cluster (sm_90 split-K), PDL and X's tensor map when the sm_90 code runs, and the per-instance
// entry points the generated files (csrc/instances/spmm_*.cu) call. Host code only.
#pragma once
#include <cuda_runtime_api.h>

#include <type_traits>

#include "../../common.h"
#include "../launch.cuh"
#include "../tensor_map.cuh"
#include "kernel.cuh"

namespace stoicc {

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
bool uses_cluster_typed() {
  return SCHED == kSplitK && binary_version(spmm_kernel<T, BM, BN, BK, WN, WM, ST, SCHED>) >= 90;
}

template <typename T, int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
int launch_typed(const SpmmArgs& a, cudaStream_t stream) {
  using K = SpmmKernel<T, BM, BN, BK, WN, WM, ST, SCHED>;
  auto kernel = spmm_kernel<T, BM, BN, BK, WN, WM, ST, SCHED>;
  // Opting in to more than 48 KiB of dynamic shared memory is a per-function attribute; set it on
  // every call (cheap, idempotent, allowed during graph capture) rather than caching per device.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::kSmemBytes);
  if (err != cudaSuccess) return (int)err;
  const int split = SCHED == kSequential ? 1 : a.split_k;
  cudaLaunchConfig_t cfg{};
  const int grid_x = SCHED == kStreamK ? split : (a.N / BN) * split;
  cfg.gridDim = dim3((unsigned)grid_x, (unsigned)((a.M + BM - 1) / BM));
  cfg.blockDim = dim3(K::kThreads);
  cfg.dynamicSmemBytes = K::kSmemBytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n_attr = 0;
  const bool sm90_code = binary_version(kernel) >= 90;
  if (SCHED == kSplitK && split > 1 && uses_cluster_typed<T, BM, BN, BK, WN, WM, ST, SCHED>()) {
    if (split > 8) return (int)cudaErrorInvalidClusterSize;  // portable cluster size
    attr[n_attr].id = cudaLaunchAttributeClusterDimension;
    attr[n_attr].val.clusterDim.x = (unsigned)split;
    attr[n_attr].val.clusterDim.y = 1;
    attr[n_attr].val.clusterDim.z = 1;
    ++n_attr;
  } else if (split > 1 && (a.workspace == nullptr || a.counters == nullptr)) {
    return (int)cudaErrorInvalidValue;  // the caller must provide the split-K workspace here
  }
  if (sm90_code && pdl_enabled()) {  // the sm_90 code waits on griddepcontrol before reading (PDL)
    attr[n_attr].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n_attr].val.programmaticStreamSerializationAllowed = 1;
    ++n_attr;
  }
  cfg.attrs = n_attr ? attr : nullptr;
  cfg.numAttrs = n_attr;
  if (sm90_code) {  // the sm_90 code copies X by TMA: give it X's tensor map
    SpmmArgs b = a;
    const int rc = encode_x_tensor_map(b.x_tmap, a.x, a.M, a.K, a.ldx, std::is_same_v<T, __nv_bfloat16>, BM);
    if (rc != 0) return rc;
    err = cudaLaunchKernelEx(&cfg, kernel, b);
  } else {
    err = cudaLaunchKernelEx(&cfg, kernel, a);
  }
  if (err != cudaSuccess) return (int)err;
  return (int)cudaGetLastError();
}

template <int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
int launch_instance(const SpmmArgs& a, DType dt, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dt == DType::BF16) return launch_typed<__nv_bfloat16, BM, BN, BK, WN, WM, ST, SCHED>(a, s);
  return launch_typed<__half, BM, BN, BK, WN, WM, ST, SCHED>(a, s);
}

template <int BM, int BN, int BK, int WN, int WM, int ST, int SCHED>
bool instance_uses_cluster(DType dt) {
  if (dt == DType::BF16) return uses_cluster_typed<__nv_bfloat16, BM, BN, BK, WN, WM, ST, SCHED>();
  return uses_cluster_typed<__half, BM, BN, BK, WN, WM, ST, SCHED>();
}

}  // namespace stoicc
