// Instance selection and launch for the CUDA path. No torch headers: used by ops.cpp and by the
// C++ benchmark binary alike.
#pragma once
#include <string>

#include "common.h"

namespace stoicc {

struct Choice {
  int instance = -1;
  int split_k = 1;
};

// Properties of the current CUDA device that selection needs (cached per device).
struct DeviceProps {
  int sm_count = 0;
  int cc = 0;              // major*10 + minor
  int max_smem_optin = 0;  // bytes of dynamic shared memory a CTA may opt in to
};
DeviceProps device_props(int device);

// Checks that `instance` may run this problem on this device; returns "" or a message.
std::string check_instance(int instance, int block_n, int block_k, int split_k, const DeviceProps& p);

// The built-in heuristic (used when no instance is forced, e.g. during CUDA-graph capture
// without a tuned choice): token block by M, a compiled instance for the compressed tile shape,
// and enough split-K CTAs for about two waves.
Choice default_choice(int M, int N, int K, int block_n, int block_k, const DeviceProps& p);

// Fills split_k for a forced instance when the caller passed split_k <= 0 (auto).
int auto_split(const InstanceInfo& in, int M, int N, int K, const DeviceProps& p);

}  // namespace stoicc
