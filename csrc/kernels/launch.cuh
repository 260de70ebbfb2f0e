// Host-side helpers shared by the kernel launchers (spmm_kernel.cuh, spmm_wgmma.cuh).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdlib>

namespace stoicc {

// SASS version the runtime picked for `kernel` on the current device (cached per device): tells
// whether sm_90 code runs (split-K reduced through clusters, TMA copies, the wgmma kernels).
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

// Programmatic dependent launch is on unless STOICC_DISABLE_PDL=1 (read once per process): a
// switch for A/B timing and for ruling PDL out when debugging.
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("STOICC_DISABLE_PDL");
    return !(v && v[0] == '1');
  }();
  return on;
}

}  // namespace stoicc
