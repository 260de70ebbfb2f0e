// Registers the torch.ops.stoicc ops with the dispatcher through the LibTorch stable ABI (one
// binary loads across torch releases from the 2.10 floor on). CPU (reference) and CUDA kernels;
// the fake kernels live in stoicc_ext/_ops.py. Argument checking happens here, once, for both.
#include <cuda_runtime_api.h>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <optional>
#include <string>
#include <vector>

#include "common.h"
#include "dispatch.h"
#include "torch_compat.h"

namespace stoicc {
namespace {

using torch::stable::Tensor;
using torch::headeronly::ScalarType;

const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Float: return "float32";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    default: return "another dtype";
  }
}

#define CHECK_ARG(cond, ...) STD_TORCH_CHECK(cond, "stoicc.spmm: ", __VA_ARGS__)
// Checks shared by spmm and densify: `op` (a variable in scope) names the op in the message.
#define CHECK_OP(cond, ...) STD_TORCH_CHECK(cond, op, ": ", __VA_ARGS__)

// The seven tensors of the compressed weight (docs/format.md section 2).
struct Compressed {
  Tensor s_ptr, s_cols, s_vals, s_meta, d_ptr, d_cols, d_vals;
};

void check_index_tensor(const char* op, const Tensor& t, const char* name, int64_t want_len, const Tensor& x,
                        const char* ref_name) {
  CHECK_OP(t.scalar_type() == ScalarType::Int, name, " must be int32, got ", dtype_name(t.scalar_type()));
  CHECK_OP(t.dim() == 1, name, " must be 1-D, got ", t.dim(), " dimensions");
  CHECK_OP(t.get_device_index() == x.get_device_index() && t.is_cuda() == x.is_cuda(), name,
           " is on another device than ", ref_name);
  if (want_len >= 0)
    CHECK_OP(t.numel() == want_len, name, " has ", t.numel(), " entries, expected ", want_len,
             " (is the tuple from a compression with other N, K or tile shape?)");
}

void check_value_tensor(const char* op, const Tensor& t, const char* name, int64_t want_len, const Tensor& x,
                        ScalarType want_dt, const char* ref_name) {
  CHECK_OP(t.scalar_type() == want_dt, name, " must have dtype ", dtype_name(want_dt), ", got ",
           dtype_name(t.scalar_type()));
  CHECK_OP(t.dim() == 1, name, " must be 1-D, got ", t.dim(), " dimensions");
  CHECK_OP(t.get_device_index() == x.get_device_index() && t.is_cuda() == x.is_cuda(), name,
           " is on another device than ", ref_name);
  CHECK_OP(t.numel() == want_len, name, " has ", t.numel(), " elements, expected ", want_len,
           " for the number of stored tiles");
}

// Validates the tile shape, N and K, and the seven compressed tensors against them (dtype `dt`,
// on the device of `ref`). Shared by spmm (ref = x) and densify (ref = the values).
void check_weight(const char* op, const Compressed& w, int64_t N, int64_t K, int64_t block_n, int64_t block_k,
                  ScalarType dt, const Tensor& ref, const char* ref_name) {
  CHECK_OP(block_n == 64 || block_n == 128, "block_n must be 64 or 128, got ", block_n);
  CHECK_OP(block_k == 64 || block_k == 128, "block_k must be 64 or 128, got ", block_k);
  CHECK_OP(N > 0 && K > 0, "N and K must be positive, got N=", N, " K=", K);
  CHECK_OP(N % block_n == 0, "N=", N, " is not a multiple of block_n=", block_n, " (stoicc does not pad)");
  CHECK_OP(K % block_k == 0, "K=", K, " is not a multiple of block_k=", block_k, " (stoicc does not pad)");
  CHECK_OP(N < (1LL << 31) && K < (1LL << 31), "N and K must fit in int32");
  CHECK_OP(K / block_k <= 512, "K=", K, " has more than 512 tiles of ", block_k, " per row (kernel limit)");
  const int64_t TR = N / block_n;
  check_index_tensor(op, w.s_ptr, "sparse_row_ptr", TR + 1, ref, ref_name);
  check_index_tensor(op, w.s_cols, "sparse_cols", -1, ref, ref_name);
  check_index_tensor(op, w.d_ptr, "dense_row_ptr", TR + 1, ref, ref_name);
  check_index_tensor(op, w.d_cols, "dense_cols", -1, ref, ref_name);
  const int64_t nS = w.s_cols.numel(), nD = w.d_cols.numel();
  check_value_tensor(op, w.s_vals, "sparse_values", nS * block_n * block_k / 2, ref, dt, ref_name);
  CHECK_OP(w.s_meta.scalar_type() == ScalarType::Int, "sparse_meta must be int32, got ",
           dtype_name(w.s_meta.scalar_type()));
  CHECK_OP(w.s_meta.dim() == 1 && w.s_meta.numel() == nS * block_n * block_k / 32, "sparse_meta has ",
           w.s_meta.numel(), " words, expected ", nS * block_n * block_k / 32);
  CHECK_OP(w.s_meta.get_device_index() == ref.get_device_index() && w.s_meta.is_cuda() == ref.is_cuda(),
           "sparse_meta is on another device than ", ref_name);
  check_value_tensor(op, w.d_vals, "dense_values", nD * block_n * block_k, ref, dt, ref_name);
  for (const Tensor* t : {&w.s_ptr, &w.s_cols, &w.s_vals, &w.s_meta, &w.d_ptr, &w.d_cols, &w.d_vals})
    CHECK_OP(t->is_contiguous(), "the compressed weight tensors must be contiguous");
}

// Validates shapes, dtypes and devices of everything, and returns X as a tensor whose rows the
// kernel can read with 16-byte copies (a copy only when the input is strided or misaligned).
Tensor check_args(const Tensor& x, const Compressed& w, const std::optional<Tensor>& bias, int64_t N, int64_t K,
                  int64_t block_n, int64_t block_k) {
  CHECK_ARG(x.dim() == 2, "x must be 2-D (M, K), got ", x.dim(), " dimensions; flatten leading dimensions first");
  const ScalarType dt = x.scalar_type();
  CHECK_ARG(dt == ScalarType::Half || dt == ScalarType::BFloat16, "x must be float16 or bfloat16, got ",
            dtype_name(dt));
  CHECK_ARG(x.size(1) == K, "x has ", x.size(1), " columns but the weight has K=", K);
  CHECK_ARG(x.size(0) < (1LL << 31), "M must fit in int32");
  check_weight("stoicc.spmm", w, N, K, block_n, block_k, dt, x, "x");
  if (bias.has_value()) {
    const Tensor& b = *bias;
    CHECK_ARG(b.scalar_type() == dt, "bias must have x's dtype ", dtype_name(dt), ", got ",
              dtype_name(b.scalar_type()));
    CHECK_ARG(b.dim() == 1 && b.size(0) == N, "bias must have shape (N,) = (", N, ",)");
    CHECK_ARG(b.get_device_index() == x.get_device_index() && b.is_cuda() == x.is_cuda(),
              "bias is on another device than x");
  }
  // Rows must start on 16-byte boundaries for the cp.async copies; otherwise copy.
  const bool aligned = x.stride(1) == 1 && x.stride(0) % 8 == 0 && x.stride(0) >= K &&
                       reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  return aligned ? x : torch::stable::contiguous(x);
}

// The GPU kernels move value and metadata blocks with 16-byte copies (cp.async, bulk copies).
// A tensor from compress() is always aligned; a view that starts mid-allocation may not be: it
// is copied (correct, but a copy per call; keep the tensors aligned to avoid it).
void align_weight_for_gpu(Compressed& w) {
  for (Tensor* t : {&w.s_vals, &w.s_meta, &w.d_vals})
    if (reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 != 0) *t = torch::stable::clone(*t);
}

// The weight's fields of SpmmArgs: its pointers, N, K and the stored tile counts.
SpmmArgs weight_args(const Compressed& w, int64_t N, int64_t K) {
  SpmmArgs a{};
  a.s_ptr = static_cast<const int32_t*>(w.s_ptr.data_ptr());
  a.s_cols = static_cast<const int32_t*>(w.s_cols.data_ptr());
  a.s_vals = w.s_vals.data_ptr();
  a.s_meta = static_cast<const uint32_t*>(w.s_meta.data_ptr());
  a.d_ptr = static_cast<const int32_t*>(w.d_ptr.data_ptr());
  a.d_cols = static_cast<const int32_t*>(w.d_cols.data_ptr());
  a.d_vals = w.d_vals.data_ptr();
  a.N = (int)N;
  a.K = (int)K;
  a.n_sparse = (int)w.s_cols.numel();
  a.n_dense = (int)w.d_cols.numel();
  return a;
}

SpmmArgs make_args(const Tensor& x, const Compressed& w, const std::optional<Tensor>& bias, Tensor& y, int64_t N,
                   int64_t K) {
  SpmmArgs a = weight_args(w, N, K);
  a.x = x.data_ptr();
  a.ldx = x.stride(0);
  a.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  a.y = y.data_ptr();
  a.ldy = N;
  a.M = (int)x.size(0);
  a.split_k = 1;
  return a;
}

// The CPU references work in float32 throughout: operands are converted once per call.
Tensor f32(const Tensor& t) { return torch::stable::contiguous(torch::stable::to(t, ScalarType::Float)); }

Tensor spmm_cpu_impl(Tensor x, Tensor s_ptr, Tensor s_cols, Tensor s_vals, Tensor s_meta, Tensor d_ptr, Tensor d_cols,
                     Tensor d_vals, std::optional<Tensor> bias, int64_t N, int64_t K, int64_t block_n, int64_t block_k,
                     int64_t instance, int64_t split_k) {
  Compressed w{s_ptr, s_cols, s_vals, s_meta, d_ptr, d_cols, d_vals};
  x = check_args(x, w, bias, N, K, block_n, block_k);
  // The reference has one schedule, but a kernel forced here is checked as the GPU path checks
  // it, so that a call the GPU would refuse is refused on the CPU too.
  const std::string bad =
      check_kernel_args(instance, split_k, block_n, block_k, N, w.s_cols.numel(), w.d_cols.numel());
  STD_TORCH_CHECK(bad.empty(), "stoicc.spmm: ", bad);
  const ScalarType dt = x.scalar_type();
  Tensor xf = f32(x), svf = f32(w.s_vals), dvf = f32(w.d_vals);
  std::optional<Tensor> bf;
  if (bias.has_value()) bf = f32(*bias);
  Compressed wf{w.s_ptr, w.s_cols, svf, w.s_meta, w.d_ptr, w.d_cols, dvf};
  Tensor yf = torch::stable::empty({x.size(0), N}, ScalarType::Float, std::nullopt, x.device());
  SpmmArgs a = make_args(xf, wf, bf, yf, N, K);
  const char* err = spmm_cpu(a, dt == ScalarType::BFloat16 ? DType::BF16 : DType::F16, (int)block_n, (int)block_k);
  STD_TORCH_CHECK(err == nullptr, "stoicc.spmm: corrupted compressed weight: ", err ? err : "");
  return torch::stable::to(yf, dt);
}

Tensor spmm_cuda_impl(Tensor x, Tensor s_ptr, Tensor s_cols, Tensor s_vals, Tensor s_meta, Tensor d_ptr,
                      Tensor d_cols, Tensor d_vals, std::optional<Tensor> bias, int64_t N, int64_t K, int64_t block_n,
                      int64_t block_k, int64_t instance, int64_t split_k) {
  Compressed w{s_ptr, s_cols, s_vals, s_meta, d_ptr, d_cols, d_vals};
  x = check_args(x, w, bias, N, K, block_n, block_k);
  const std::string bad_args =  // before the (int) casts
      check_kernel_args(instance, split_k, block_n, block_k, N, w.s_cols.numel(), w.d_cols.numel());
  STD_TORCH_CHECK(bad_args.empty(), "stoicc.spmm: ", bad_args);
  const int device = x.get_device_index();
  torch::stable::accelerator::DeviceGuard guard(device);
  align_weight_for_gpu(w);
  const DeviceProps props = device_props(device);
  const int64_t M = x.size(0);
  Tensor y = torch::stable::empty({M, N}, x.scalar_type(), std::nullopt, x.device());
  if (M == 0) return y;

  const int64_t nS = w.s_cols.numel(), nD = w.d_cols.numel();
  int inst = (int)instance, split = (int)split_k;
  if (inst < 0) {
    Choice c = default_choice((int)M, (int)N, (int)K, (int)block_n, (int)block_k, nS, nD, props);
    STD_TORCH_CHECK(c.instance >= 0, "stoicc.spmm: no compiled instance runs ", block_n, "x", block_k,
                    " tiles on this GPU (compute capability ", props.cc, ")");
    inst = c.instance;
    if (split <= 0) split = c.split_k;
  } else if (split <= 0 && inst < kNumInstances) {
    split = auto_split(kInstances[inst], (int)M, (int)N, (int)K, nS, nD, props);
  }
  const std::string bad = check_instance(inst, (int)block_n, (int)block_k, split, props);
  STD_TORCH_CHECK(bad.empty(), "stoicc.spmm: ", bad);
  const InstanceInfo& in = kInstances[inst];
  int max_contrib = 1;
  if (in.schedule == kStreamK) {
    const std::string bad_weight = check_stream_k_weight(in, split, N, block_n, nS, nD);  // the split chosen here
    STD_TORCH_CHECK(bad_weight.empty(), "stoicc.spmm: ", bad_weight);
    max_contrib = stream_k_max_contrib((int)K, (int)block_k, split, nS, nD);
  }

  SpmmArgs a = make_args(x, w, bias, y, N, K);
  a.split_k = split;
  a.max_contrib = max_contrib;
  // Workspace and counters come from torch's caching allocator (graph-capture safe). The
  // counters start at zero here and the kernel leaves them at zero.
  Tensor ws, counters;
  const DType dtype = x.scalar_type() == ScalarType::BFloat16 ? DType::BF16 : DType::F16;
  const size_t ws_floats = in.uses_cluster(dtype) ? 0 : workspace_floats(in, (int)M, (int)N, split, max_contrib);
  if (ws_floats > 0) {
    ws = torch::stable::empty({(int64_t)ws_floats}, ScalarType::Float, std::nullopt, x.device());
    counters = torch::stable::new_zeros(x, {(int64_t)counter_ints(in, (int)M, (int)N)}, ScalarType::Int);
    a.workspace = static_cast<float*>(ws.data_ptr());
    a.counters = static_cast<int32_t*>(counters.data_ptr());
  }
  void* stream = nullptr;
  STOICC_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device, &stream));
  const int rc = in.launch(a, dtype, stream);
  STD_TORCH_CHECK(rc == 0, "stoicc.spmm: launch of ", in.name, " failed: ", cudaGetErrorString((cudaError_t)rc));
  return y;
}

// --- densify: the dense weight, for the prefill schedule that hands the GEMM to cuBLAS ---------

// Checks the weight (its dtype is that of its values).
void check_densify_args(const Compressed& w, int64_t N, int64_t K, int64_t block_n, int64_t block_k) {
  const char* op = "stoicc.densify";
  const ScalarType dt = w.d_vals.scalar_type();
  CHECK_OP(dt == ScalarType::Half || dt == ScalarType::BFloat16, "dense_values must be float16 or bfloat16, got ",
           dtype_name(dt));
  check_weight(op, w, N, K, block_n, block_k, dt, w.d_vals, "dense_values");
  CHECK_OP((N / block_n) * (K / block_k) < (1LL << 31), "too many tiles for one launch");
}

Tensor densify_cpu_impl(Tensor s_ptr, Tensor s_cols, Tensor s_vals, Tensor s_meta, Tensor d_ptr, Tensor d_cols,
                        Tensor d_vals, int64_t N, int64_t K, int64_t block_n, int64_t block_k) {
  Compressed w{s_ptr, s_cols, s_vals, s_meta, d_ptr, d_cols, d_vals};
  check_densify_args(w, N, K, block_n, block_k);
  SpmmArgs a = weight_args(w, N, K);
  const ScalarType dt = d_vals.scalar_type();
  Tensor svf = f32(s_vals), dvf = f32(d_vals);
  a.s_vals = svf.data_ptr();
  a.d_vals = dvf.data_ptr();
  Tensor outf = torch::stable::empty({N, K}, ScalarType::Float, std::nullopt, d_vals.device());
  const char* err = densify_cpu(a, (int)block_n, (int)block_k, static_cast<float*>(outf.data_ptr()));
  STD_TORCH_CHECK(err == nullptr, "stoicc.densify: corrupted compressed weight: ", err ? err : "");
  return torch::stable::to(outf, dt);  // exact: every value came from an fp16/bf16 tensor
}

Tensor densify_cuda_impl(Tensor s_ptr, Tensor s_cols, Tensor s_vals, Tensor s_meta, Tensor d_ptr, Tensor d_cols,
                         Tensor d_vals, int64_t N, int64_t K, int64_t block_n, int64_t block_k) {
  Compressed w{s_ptr, s_cols, s_vals, s_meta, d_ptr, d_cols, d_vals};
  check_densify_args(w, N, K, block_n, block_k);
  const int device = d_vals.get_device_index();
  torch::stable::accelerator::DeviceGuard guard(device);
  align_weight_for_gpu(w);
  const SpmmArgs a = weight_args(w, N, K);
  Tensor out = torch::stable::empty({N, K}, d_vals.scalar_type(), std::nullopt, d_vals.device());
  void* stream = nullptr;
  STOICC_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device, &stream));
  const int rc = densify_cuda(a, (int)block_n, (int)block_k, out.data_ptr(), stream);
  STD_TORCH_CHECK(rc == 0, "stoicc.densify: launch failed: ", cudaGetErrorString((cudaError_t)rc));
  return out;
}

// --- Introspection of the compiled instances (the manifest's binary side) ---------------------

int64_t num_instances() { return kNumInstances; }

std::vector<int64_t> instance_info(int64_t i) {
  STD_TORCH_CHECK(i >= 0 && i < kNumInstances, "stoicc.instance_info: no instance ", i);
  const InstanceInfo& in = kInstances[i];
  return {in.block_m, in.block_n, in.block_k, in.warps_n, in.warps_m, in.stages, in.schedule, in.min_sm,
          (int64_t)in.smem_bytes, in.launch != nullptr ? 1 : 0, in.exact_sm ? 1 : 0};
}

std::string instance_name(int64_t i) {
  STD_TORCH_CHECK(i >= 0 && i < kNumInstances, "stoicc.instance_name: no instance ", i);
  return kInstances[i].name;
}

int64_t manifest_hash() { return (int64_t)(kManifestHash & 0x7fffffffffffffffULL); }

DeviceProps props_of(int64_t sm_count, int64_t cc, int64_t max_smem_optin, int64_t max_smem_per_sm) {
  STD_TORCH_CHECK(sm_count > 0 && cc > 0 && max_smem_optin > 0 && max_smem_per_sm > 0,
                  "stoicc: device properties must be positive, got sm_count=", sm_count, " cc=", cc,
                  " max_smem_optin=", max_smem_optin, " max_smem_per_sm=", max_smem_per_sm);
  return DeviceProps{(int)sm_count, (int)cc, (int)max_smem_optin, (int)max_smem_per_sm};
}

// [instance, split_k] that the built-in heuristic picks on the current device.
std::vector<int64_t> default_config(int64_t M, int64_t N, int64_t K, int64_t block_n, int64_t block_k,
                                    int64_t n_sparse, int64_t n_dense) {
  int device = 0;
  cudaGetDevice(&device);
  Choice c = default_choice((int)M, (int)N, (int)K, (int)block_n, (int)block_k, n_sparse, n_dense,
                            device_props(device));
  return {c.instance, c.split_k};
}

// [instance, split_k] that the built-in heuristic picks on a device with these properties (no GPU
// needed), among `instances` when that list is not empty.
std::vector<int64_t> choose_config(int64_t M, int64_t N, int64_t K, int64_t block_n, int64_t block_k,
                                   int64_t n_sparse, int64_t n_dense, int64_t sm_count, int64_t cc,
                                   int64_t max_smem_optin, int64_t max_smem_per_sm, std::vector<int64_t> instances) {
  Choice c = default_choice((int)M, (int)N, (int)K, (int)block_n, (int)block_k, n_sparse, n_dense,
                            props_of(sm_count, cc, max_smem_optin, max_smem_per_sm), instances);
  return {c.instance, c.split_k};
}

// The split the op uses for a forced `instance` called with split_k <= 0, on a device with these
// properties.
int64_t auto_split_op(int64_t instance, int64_t M, int64_t N, int64_t K, int64_t n_sparse, int64_t n_dense,
                      int64_t sm_count, int64_t cc, int64_t max_smem_optin, int64_t max_smem_per_sm) {
  STD_TORCH_CHECK(instance >= 0 && instance < kNumInstances, "stoicc.auto_split: no instance ", instance);
  return auto_split(kInstances[instance], (int)M, (int)N, (int)K, n_sparse, n_dense,
                    props_of(sm_count, cc, max_smem_optin, max_smem_per_sm));
}

int64_t stream_k_max_ctas_op(int64_t n_sparse, int64_t n_dense) { return stream_k_max_ctas(n_sparse, n_dense); }

}  // namespace
}  // namespace stoicc

STABLE_TORCH_LIBRARY(stoicc, m) {
  // Y = X @ W^T (+ bias) with W in the mixed-tile format; instance = -1 and split_k <= 0 pick by heuristic.
  m.def(
      "spmm(Tensor x, Tensor sparse_row_ptr, Tensor sparse_cols, Tensor sparse_values, Tensor sparse_meta, "
      "Tensor dense_row_ptr, Tensor dense_cols, Tensor dense_values, Tensor? bias, int N, int K, int block_n, "
      "int block_k, int instance=-1, int split_k=0) -> Tensor");
  // The dense [N, K] weight of a compressed one (the prefill schedule "densify" feeds it to cuBLAS).
  m.def(
      "densify(Tensor sparse_row_ptr, Tensor sparse_cols, Tensor sparse_values, Tensor sparse_meta, "
      "Tensor dense_row_ptr, Tensor dense_cols, Tensor dense_values, int N, int K, int block_n, int block_k) "
      "-> Tensor");
  // Number of compiled kernel instances.
  m.def("num_instances() -> int");
  // [block_m, block_n, block_k, warps_n, warps_m, stages, schedule (0 seq, 1 split_k, 2 stream_k), min_sm,
  //  smem_bytes, compiled, exact_sm (sm_90a code: runs on min_sm only)] of an instance.
  m.def("instance_info(int index) -> int[]");
  // Parameter-spelled name of an instance (the manifest key).
  m.def("instance_name(int index) -> str");
  // Hash of the instance list this binary was generated from (must match instances.json).
  m.def("manifest_hash() -> int");
  // [instance, split_k] the built-in heuristic picks for this problem on the current device.
  m.def("default_config(int M, int N, int K, int block_n, int block_k, int n_sparse, int n_dense) -> int[]");
  // The same heuristic for a device given by its properties (runs without a GPU), restricted to
  // `instances` when not empty: [instance (-1: none fits), split_k].
  m.def(
      "choose_config(int M, int N, int K, int block_n, int block_k, int n_sparse, int n_dense, int sm_count, "
      "int cc, int max_smem_optin, int max_smem_per_sm, int[] instances=[]) -> int[]");
  // split_k that spmm uses for a forced instance called with split_k <= 0, on such a device.
  m.def(
      "auto_split(int instance, int M, int N, int K, int n_sparse, int n_dense, int sm_count, int cc, "
      "int max_smem_optin, int max_smem_per_sm) -> int");
  // The most CTAs a stream_k launch may use on a weight with these stored tile counts.
  m.def("stream_k_max_ctas(int n_sparse, int n_dense) -> int");
}

STABLE_TORCH_LIBRARY_IMPL(stoicc, CPU, m) {
  m.impl("spmm", TORCH_BOX(&stoicc::spmm_cpu_impl));
  m.impl("densify", TORCH_BOX(&stoicc::densify_cpu_impl));
}

STABLE_TORCH_LIBRARY_IMPL(stoicc, CUDA, m) {
  m.impl("spmm", TORCH_BOX(&stoicc::spmm_cuda_impl));
  m.impl("densify", TORCH_BOX(&stoicc::densify_cuda_impl));
}

STABLE_TORCH_LIBRARY_IMPL(stoicc, CompositeExplicitAutograd, m) {
  m.impl("num_instances", TORCH_BOX(&stoicc::num_instances));
  m.impl("instance_info", TORCH_BOX(&stoicc::instance_info));
  m.impl("instance_name", TORCH_BOX(&stoicc::instance_name));
  m.impl("manifest_hash", TORCH_BOX(&stoicc::manifest_hash));
  m.impl("default_config", TORCH_BOX(&stoicc::default_config));
  m.impl("choose_config", TORCH_BOX(&stoicc::choose_config));
  m.impl("auto_split", TORCH_BOX(&stoicc::auto_split_op));
  m.impl("stream_k_max_ctas", TORCH_BOX(&stoicc::stream_k_max_ctas_op));
}
