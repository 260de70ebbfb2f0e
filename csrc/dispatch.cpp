#include "dispatch.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace stoicc {

DeviceProps device_props(int device) {
  static std::mutex mu;
  static std::vector<DeviceProps> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= (int)cache.size()) cache.resize(device + 1);
  DeviceProps& p = cache[device];
  if (p.sm_count == 0) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&p.sm_count, cudaDevAttrMultiProcessorCount, device);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    cudaDeviceGetAttribute(&p.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    p.cc = major * 10 + minor;
  }
  return p;
}

std::string check_instance(int i, int block_n, int block_k, int split_k, const DeviceProps& p) {
  if (i < 0 || i >= kNumInstances)
    return "instance " + std::to_string(i) + " does not exist (this build has " + std::to_string(kNumInstances) +
           " instances; see stoicc_ext.list_instances())";
  const InstanceInfo& in = kInstances[i];
  const std::string name = std::string("instance ") + in.name;
  if (in.launch == nullptr) return name + " was not compiled in this build (STOICC_INSTANCES)";
  if (in.block_n != block_n || in.block_k != block_k)
    return name + " runs " + std::to_string(in.block_n) + "x" + std::to_string(in.block_k) +
           " tiles but the weight was compressed with " + std::to_string(block_n) + "x" + std::to_string(block_k);
  if (!in.split_k && split_k != 1)
    return name + " uses the sequential schedule, which takes split_k = 1 (got " + std::to_string(split_k) + ")";
  if (split_k < 1 || split_k > 64) return "split_k must be in [1, 64], got " + std::to_string(split_k);
  // On sm_90 the split CTAs of a row form one thread-block cluster: at most 8 (portable size).
  if (p.cc >= 90 && split_k > 8 && in.uses_cluster(DType::F16))
    return name + ": split_k must be <= 8 on this GPU (the split CTAs form one cluster), got " +
           std::to_string(split_k);
  if (p.cc < in.min_sm) return name + " needs compute capability >= " + std::to_string(in.min_sm);
  if ((int)in.smem_bytes > p.max_smem_optin)
    return name + " needs " + std::to_string(in.smem_bytes) + " bytes of shared memory per CTA; this GPU allows " +
           std::to_string(p.max_smem_optin);
  return "";
}

int auto_split(const InstanceInfo& in, int M, int N, int K, const DeviceProps& p) {
  if (!in.split_k) return 1;
  const int ctas = ((M + in.block_m - 1) / in.block_m) * (N / in.block_n);
  const int want = (2 * p.sm_count + ctas - 1) / ctas;  // about two waves
  // Each split should keep a few tiles to amortize the pipeline prologue.
  const int max_split = std::max(1, (K / in.block_k) / 4);
  const int cap = p.cc >= 90 ? 8 : 32;  // cluster size limit on sm_90
  return std::max(1, std::min({want, max_split, cap}));
}

Choice default_choice(int M, int N, int K, int block_n, int block_k, const DeviceProps& p) {
  const int want_bm = M <= 16 ? 16 : M <= 32 ? 32 : M <= 64 ? 64 : 128;
  Choice best;
  int best_score = 1 << 30;
  for (int i = 0; i < kNumInstances; ++i) {
    const InstanceInfo& in = kInstances[i];
    if (!check_instance(i, block_n, block_k, in.split_k ? 1 : 1, p).empty()) continue;
    // Prefer the token block closest to M (a smaller block wastes nothing but re-reads W; a
    // larger one computes padding), then the split-K schedule when the grid is small.
    int score = std::abs(in.block_m - want_bm) * 4;
    const int ctas = ((M + in.block_m - 1) / in.block_m) * (N / in.block_n);
    if (ctas < p.sm_count && !in.split_k) score += 2;
    if (ctas >= 2 * p.sm_count && in.split_k) score += 1;
    if (score < best_score) {
      best_score = score;
      best.instance = i;
      best.split_k = auto_split(in, M, N, K, p);
    }
  }
  return best;
}

}  // namespace stoicc
