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
    cudaDeviceGetAttribute(&p.max_smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
    p.cc = major * 10 + minor;
  }
  return p;
}

namespace {

// Built only for a message: the checks run on every spmm call (and per instance in
// default_choice), where a passing check must not allocate.
std::string instance_name(const InstanceInfo& in) { return std::string("instance ") + in.name; }

// check_kernel_args without the weight's tile counts: what check_instance shares with it.
std::string check_forced(int64_t i, int64_t split_k, int64_t block_n, int64_t block_k) {
  if (i < -1 || i >= kNumInstances)
    return "instance " + std::to_string(i) + " does not exist (this build has " + std::to_string(kNumInstances) +
           " instances; see stoicc_ext.list_instances(); -1 lets the heuristic choose)";
  if (split_k < 0 || split_k > 65535)
    return "split_k must be 0 (the heuristic's split) or in [1, 65535], got " + std::to_string(split_k);
  if (i < 0) return "";
  const InstanceInfo& in = kInstances[i];
  if (in.launch == nullptr) return instance_name(in) + " was not compiled in this build (STOICC_INSTANCES)";
  if (in.block_n != block_n || in.block_k != block_k)
    return instance_name(in) + " runs " + std::to_string(in.block_n) + "x" + std::to_string(in.block_k) +
           " tiles but the weight was compressed with " + std::to_string(block_n) + "x" + std::to_string(block_k);
  if (split_k == 0) return "";  // the GPU path picks the split (auto_split) and checks it with check_instance
  if (in.schedule == kSequential && split_k != 1)
    return instance_name(in) + " uses the sequential schedule, which takes split_k = 1 (got " +
           std::to_string(split_k) + ")";
  if (in.schedule == kSplitK && split_k > 64) return "split_k must be in [1, 64], got " + std::to_string(split_k);
  return "";  // stream_k: any count in [1, 65535] (the weight bounds it further, see check_stream_k_weight)
}

}  // namespace

std::string check_stream_k_weight(const InstanceInfo& in, int64_t split_k, int64_t N, int64_t block_n,
                                  int64_t n_sparse, int64_t n_dense) {
  if (in.schedule != kStreamK || split_k < 1) return "";
  if (split_k > stream_k_max_ctas(n_sparse, n_dense))
    return "stream_k with " + std::to_string(split_k) +
           " CTAs needs at least one dense tile of work per CTA; this weight allows at most " +
           std::to_string(stream_k_max_ctas(n_sparse, n_dense));
  if ((N / block_n + 1) * 4 > (int64_t)in.smem_bytes) return std::string("too many tile rows for ") + in.name;
  return "";
}

std::string check_kernel_args(int64_t i, int64_t split_k, int64_t block_n, int64_t block_k, int64_t N,
                              int64_t n_sparse, int64_t n_dense) {
  const std::string bad = check_forced(i, split_k, block_n, block_k);
  if (!bad.empty() || i < 0) return bad;
  return check_stream_k_weight(kInstances[i], split_k, N, block_n, n_sparse, n_dense);
}

std::string check_instance(int i, int block_n, int block_k, int split_k, const DeviceProps& p) {
  if (i < 0) return "instance " + std::to_string(i) + " does not exist";
  const std::string bad = check_forced(i, split_k, block_n, block_k);
  if (!bad.empty()) return bad;
  const InstanceInfo& in = kInstances[i];
  // On sm_90 the split CTAs of a row form one thread-block cluster: at most 8 (portable size).
  if (in.schedule == kSplitK && p.cc >= 90 && split_k > 8 && in.uses_cluster(DType::F16))
    return instance_name(in) + ": split_k must be <= 8 on this GPU (the split CTAs form one cluster), got " +
           std::to_string(split_k);
  if (p.cc < in.min_sm) return instance_name(in) + " needs compute capability >= " + std::to_string(in.min_sm);
  if (in.exact_sm && p.cc != in.min_sm)
    return instance_name(in) + " is sm_" + std::to_string(in.min_sm) + "a code: it runs on compute capability " +
           std::to_string(in.min_sm) + " only (this GPU: " + std::to_string(p.cc) + ")";
  if ((int)in.smem_bytes > p.max_smem_optin)
    return instance_name(in) + " needs " + std::to_string(in.smem_bytes) +
           " bytes of shared memory per CTA; this GPU allows " + std::to_string(p.max_smem_optin);
  return "";
}

int stream_k_max_ctas(int64_t n_sparse, int64_t n_dense) {
  // Each CTA must own at least one dense tile's worth of cost, so that every CTA whose range
  // meets a row owns an item of it (the reduction counts on that).
  return (int)std::max<int64_t>(1, std::min<int64_t>(65535, (9 * n_sparse + 16 * n_dense) / 16));
}

int auto_split(const InstanceInfo& in, int M, int N, int K, int64_t n_sparse, int64_t n_dense, const DeviceProps& p) {
  if (in.schedule == kSequential) return 1;
  if (in.schedule == kStreamK) {
    // One CTA per resident slot: every SM streams the same number of bytes.
    const int per_sm = std::max(1, std::min(p.max_smem_per_sm / ((int)in.smem_bytes + 4096), 2048 / (32 * in.warps_n * in.warps_m)));
    return std::min(per_sm * p.sm_count, stream_k_max_ctas(n_sparse, n_dense));
  }
  const int ctas = ((M + in.block_m - 1) / in.block_m) * (N / in.block_n);
  const int want = (3 * p.sm_count + 2 * ctas - 1) / (2 * ctas);  // about 1.5 CTAs per SM
  // Each split should keep a few tiles to amortize the pipeline prologue.
  const int max_split = std::max(1, (K / in.block_k) / 4);
  const int cap = p.cc >= 90 ? 8 : 32;  // cluster size limit on sm_90
  return std::max(1, std::min({want, max_split, cap}));
}

Choice default_choice(int M, int N, int K, int block_n, int block_k, int64_t n_sparse, int64_t n_dense,
                      const DeviceProps& p, const std::vector<int64_t>& allowed) {
  const int want_bm = M <= 16 ? 16 : M <= 32 ? 32 : M <= 64 ? 64 : M < 1024 ? 128 : 256;
  Choice best;
  int best_score = 1 << 30;
  for (int i = 0; i < kNumInstances; ++i) {
    const InstanceInfo& in = kInstances[i];
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), i) == allowed.end()) continue;
    if (!check_instance(i, block_n, block_k, 1, p).empty()) continue;
    // Prefer the token block closest to M (a smaller block re-reads W, a larger one computes
    // padding); at decode sizes prefer split_k (it won the H100 sweep, bench/results), at
    // prefill sizes the sequential schedule.
    int score = std::abs(in.block_m - want_bm) * 8;
    if (want_bm <= 64) score += in.schedule == kSplitK ? 0 : in.schedule == kSequential ? 1 : 2;
    // At prefill sizes the arch-specific wgmma kernels (sm_90a: the exact_sm families wgmma and
    // wgmma2) beat the mma.sync path wherever they run (H200 probe, experiments/wgmma-prefill).
    // On a tie the first listed wins: the wgmma2 instances come last in the registry, so the
    // untuned choice stays a wgmma one; the Inspector times both.
    else score += (in.schedule == kSequential ? 0 : 2) + (in.exact_sm ? 0 : 1);
    if ((int)in.smem_bytes > p.max_smem_per_sm / 2 && want_bm <= 64) score += 1;  // prefer 2+ CTAs per SM
    if (score < best_score) {
      best_score = score;
      best.instance = i;
      best.split_k = auto_split(in, M, N, K, n_sparse, n_dense, p);
    }
  }
  return best;
}

}  // namespace stoicc
