// Instance selection and launch for the CUDA path. No torch headers: used by ops.cpp and by the
// C++ benchmark binary alike.
#pragma once
#include <string>
#include <vector>

#include "common.h"

namespace stoicc {

struct Choice {
  int instance = -1;
  int split_k = 1;
};

// What selection needs to know of a device. device_props() reads it from the CUDA device; the
// heuristic below takes it as an argument, so that it also runs without a GPU (the
// torch.ops.stoicc.choose_config op, called with another device's numbers).
struct DeviceProps {
  int sm_count = 0;
  int cc = 0;              // major*10 + minor
  int max_smem_optin = 0;  // bytes of dynamic shared memory a CTA may opt in to
  int max_smem_per_sm = 0;
};
DeviceProps device_props(int device);  // cached per device

// The checks of spmm's kernel arguments that need no device, run on the CPU as on the GPU so both
// refuse the same calls: `instance` is -1 (the heuristic's) or a compiled instance whose tile is
// the weight's, `split_k` is 0 (the heuristic's) or in the instance's schedule's range, and a
// stream_k split fits the weight (check_stream_k_weight). Values are checked as int64, before
// anything narrows them to int. Returns "" or a message.
std::string check_kernel_args(int64_t instance, int64_t split_k, int64_t block_n, int64_t block_k, int64_t N,
                              int64_t n_sparse, int64_t n_dense);

// What a stream_k launch of `split_k` CTAs needs of the weight: at least one dense tile of work
// per CTA (stream_k_max_ctas) and its tile rows' offsets in the instance's shared memory. "" for
// another schedule or split_k 0. Returns "" or a message.
std::string check_stream_k_weight(const InstanceInfo& in, int64_t split_k, int64_t N, int64_t block_n,
                                  int64_t n_sparse, int64_t n_dense);

// Checks that `instance` may run this problem on this device (check_kernel_args less the
// weight's part, then the device's limits); `split_k` >= 1, the split the launch uses. Returns
// "" or a message.
std::string check_instance(int instance, int block_n, int block_k, int split_k, const DeviceProps& p);

// The built-in heuristic (used when no instance is forced, e.g. during CUDA-graph capture
// without a tuned choice): token block by M, a compiled instance for the compressed tile shape,
// split_k at decode sizes with about 1.5 CTAs per SM. `allowed`, when not empty, restricts the
// choice to those instance indices (a caller's config space); instance -1: none fits.
Choice default_choice(int M, int N, int K, int block_n, int block_k, int64_t n_sparse, int64_t n_dense,
                      const DeviceProps& p, const std::vector<int64_t>& allowed = {});

// split_k for a forced instance when the caller passed split_k <= 0 (auto): split count for
// split_k, number of CTAs (G) for stream_k (one per resident slot), 1 for sequential.
int auto_split(const InstanceInfo& in, int M, int N, int K, int64_t n_sparse, int64_t n_dense, const DeviceProps& p);

// The largest stream_k G this weight allows (each CTA must own >= one dense tile of cost).
int stream_k_max_ctas(int64_t n_sparse, int64_t n_dense);

}  // namespace stoicc
