// Types shared by the op layer (ops.cpp, built against the LibTorch stable ABI), the CPU
// reference and the CUDA kernels. No torch and no CUDA headers here: kernel translation units
// stay free of torch headers (compile time), and the C++ benchmark links without Python.
#pragma once
#include <cstddef>
#include <cstdint>

namespace stoicc {

enum class DType : int { F16 = 0, BF16 = 1 };

// Everything one spmm launch needs. Y[M, N] = X[M, K] @ W^T (+ bias), W given as the mixed-tile
// format of docs/format.md. Pointers are device pointers for the CUDA path.
struct SpmmArgs {
  const void* x;            // [M, K], row stride ldx elements, 16-byte aligned rows
  int64_t ldx;
  const int32_t* s_ptr;     // [TR + 1] CSR row pointers of the 2:4 tiles
  const int32_t* s_cols;    // [n_sparse] K-tile index of each 2:4 tile
  const void* s_vals;       // [n_sparse * BN * BK / 2] kept values, mma.sp A-fragment order
  const uint32_t* s_meta;   // [n_sparse * BN * BK / 32] metadata words, mma.sp E order
  const int32_t* d_ptr;     // [TR + 1] CSR row pointers of the dense tiles
  const int32_t* d_cols;    // [n_dense]
  const void* d_vals;       // [n_dense * BN * BK] values, mma A-fragment order
  const void* bias;         // [N] or nullptr
  void* y;                  // [M, N], row stride ldy elements
  int64_t ldy;
  float* workspace;         // split-K partial sums (fp32), see workspace_floats()
  int32_t* counters;        // split-K arrival counters, zero before the launch, zero after it
  int M, N, K;
  int n_sparse, n_dense;    // total stored tiles: every index read is clamped to these
  int split_k;              // split_k: CTAs per tile row; stream_k: CTAs per token block (G)
  int max_contrib;          // stream_k: partials the workspace holds per tile row
  // sm_90: the TMA tensor map (a CUtensorMap) of X, written by the launcher (tensor_map.cuh).
  alignas(64) unsigned char x_tmap[128];
};

// How the CTAs of a launch share the work: the SCHED template parameter of the kernels and
// InstanceInfo::schedule (kernels/spmm_kernel.cuh describes each).
enum ScheduleId : int { kSequential = 0, kSplitK = 1, kStreamK = 2 };

// One compiled kernel instance (a row of the generated registry / manifest).
struct InstanceInfo {
  const char* name;
  int block_m, block_n, block_k;
  int warps_n, warps_m;     // warp grid inside the CTA
  int stages;               // cp.async pipeline depth
  ScheduleId schedule;
  int min_sm;               // lowest compute capability (major*10+minor) it runs on
  // Launches on `stream` (a cudaStream_t). Returns 0 or a cudaError_t value.
  int (*launch)(const SpmmArgs&, DType, void* stream);
  size_t smem_bytes;        // dynamic shared memory per CTA
  // True when split-K partials are reduced inside a thread-block cluster on this device (sm_90
  // code), so that no workspace is needed; false: the caller allocates workspace + counters.
  bool (*uses_cluster)(DType);
  // Arch-specific code (the sm_90a wgmma kernels): runs on compute capability min_sm only.
  bool exact_sm;
};

// The generated registry (csrc/instances/registry.cpp).
extern const InstanceInfo kInstances[];
extern const int kNumInstances;
extern const uint64_t kManifestHash;

// stream_k: how many partials one tile row can receive (its cost over the smallest CTA share,
// plus the two partly covered ends). n_sparse / n_dense are the stored tile counts.
inline int stream_k_max_contrib(int K, int block_k, int G, int64_t n_sparse, int64_t n_dense) {
  const int64_t total = 9 * n_sparse + 16 * n_dense;
  if (total <= 0 || G <= 1) return 1;
  const int64_t row_max = 16LL * (K / block_k);
  return (int)((row_max * G + total - 1) / total + 2);
}

// fp32 elements of workspace and int32 counters an instance needs for one call (0 when the
// reduction needs none: sequential, or split_k reduced in a cluster on sm_90).
inline size_t workspace_floats(const InstanceInfo& in, int M, int N, int split_k, int max_contrib) {
  if (in.schedule == kSequential || split_k <= 1) return 0;
  const size_t per_row = in.schedule == kSplitK ? (size_t)split_k : (size_t)max_contrib;
  size_t mt = (size_t)((M + in.block_m - 1) / in.block_m);
  return mt * (size_t)(N / in.block_n) * per_row * (size_t)in.block_n * in.block_m;
}
inline size_t counter_ints(const InstanceInfo& in, int M, int N) {
  if (in.schedule == kSequential) return 0;
  return (size_t)((M + in.block_m - 1) / in.block_m) * (size_t)(N / in.block_n);
}

// CPU reference (spmm_cpu.cpp): float32 accumulation, same argument struct with host pointers.
// Returns nullptr or an error message (index corruption found while reading).
const char* spmm_cpu(const SpmmArgs& a, DType dt, int block_n, int block_k);

// CPU reference of densify: out[N, K] (float32, host) = the dense weight of `a` (x, y, bias
// unused). Returns nullptr or an error message, like spmm_cpu.
const char* densify_cpu(const SpmmArgs& a, int block_n, int block_k, float* out);

// densify on the GPU (csrc/densify.cu): writes the dense weight of `a` into out[N, K] (2-byte
// values, row-major) on `stream`. One CTA per tile; empty tiles are written as zeros. Indices
// are clamped like the GEMM's (a corrupted tuple gives garbage, never a fault). Returns 0 or a
// cudaError_t value.
int densify_cuda(const SpmmArgs& a, int block_n, int block_k, void* out, void* stream);

}  // namespace stoicc
