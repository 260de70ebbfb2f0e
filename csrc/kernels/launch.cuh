// Host-side helpers shared by the kernel launchers (mma/launch.cuh, spmm_wgmma.cuh).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdlib>

namespace stoicc {

// The architecture the code that runs `kernel` on the current device was compiled for (cached
// per device): tells whether sm_90 code runs (split-K reduced through clusters, TMA copies, the
// wgmma kernels). That is cudaFuncAttributes::ptxVersion, the virtual architecture of the code:
// for SASS built from compute_90a it is 90, and when the driver JIT-compiles the embedded
// compute_80 PTX on a GPU newer than the shipped SASS it is 80. binaryVersion would say the
// GPU's own arch there, and the launchers would set up sm_90 paths (clusters, TMA) for code that
// has none: illegal memory accesses, seen on an H200 running a PTX-only build.
template <typename F>
int binary_version(F kernel) {
  static int cache[64] = {};
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev < 64 && cache[dev]) return cache[dev];
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) return 0;
  if (dev < 64) cache[dev] = attr.ptxVersion;
  return attr.ptxVersion;
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
