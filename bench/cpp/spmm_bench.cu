// stoicc_spmm_bench: times one stoicc spmm kernel instance on a synthetic PATCH-like weight,
// without Python or torch (the kernels, registry and dispatch come from libstoicc_kernels.a).
//
// The compressed weight is written directly on the host in the format of docs/format.md: no
// dense W is built (except for --selftest), which keeps 70B-class shapes cheap to set up. The
// timing follows stoicc_ext/timing.py: weight copies rotated past 2x the L2, all calls captured
// in one CUDA graph, median over replays after warm-up.
//
//   stoicc_spmm_bench --list
//   stoicc_spmm_bench --n 4096 --k 4096 --m 16 --frac 0.5 --dtype bf16 --check
//
// stdout is one result line; everything else (device, copies, check) goes to stderr.
// Exit status: 0 ok, 1 error or --check mismatch, 77 (kExitNoDevice) when a timing run finds no
// CUDA device: ctest (CMakeLists.txt) counts that as skipped, so the GPU test passes as
// "skipped" on machines without one. --list and --selftest need no GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "common.h"
#include "dispatch.h"

using namespace stoicc;

namespace {

[[noreturn]] void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "stoicc_spmm_bench: error: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
  std::exit(1);
}

// Every CUDA runtime call goes through CK: a failure names the call and the error, then exits.
#define CK(call)                                                                                 \
  do {                                                                                           \
    cudaError_t e_ = (call);                                                                     \
    if (e_ != cudaSuccess)                                                                       \
      die("%s failed (%s:%d): %s: %s", #call, __FILE__, __LINE__, cudaGetErrorName(e_),           \
          cudaGetErrorString(e_));                                                               \
  } while (0)

constexpr int kExitNoDevice = 77;  // the automake / ctest SKIP_RETURN_CODE convention
constexpr int kCheckRows = 64;  // --check compares the first min(M, 64) rows (CPU cost ~ M*N*K)

struct Options {
  long n = 4096, k = 4096, m = 16;
  double frac = 0.5;
  DType dt = DType::F16;
  long block_n = 128, block_k = 128;
  long instance = -1, split_k = 0, iters = 100;
  unsigned long long seed = 1;
  bool list = false, check = false, selftest = false;
};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: stoicc_spmm_bench [options]\n"
               "  --n N            out_features (default 4096)\n"
               "  --k K            in_features (default 4096)\n"
               "  --m M            tokens (default 16)\n"
               "  --frac F         fraction of 2:4 tiles on PATCH's 128x128 grid, rest dense (0.5)\n"
               "  --dtype T        f16 | bf16 (f16)\n"
               "  --block-n B      tile rows, 64 | 128 (128)\n"
               "  --block-k B      tile columns, 64 | 128 (128)\n"
               "  --instance I     registry index, -1 = built-in heuristic (-1)\n"
               "  --split-k S      split-K CTAs per tile row, 0 = auto (0)\n"
               "  --iters R        timed graph replays; the median is reported (100)\n"
               "  --seed S         random seed (1)\n"
               "  --check          compare with the CPU reference (first %d rows); exit 1 on mismatch\n"
               "  --selftest       host only: check this compressor against the CPU reference decoder\n"
               "  --list           print the instance registry and exit (needs no GPU)\n"
               "exit status: 0 ok, 1 error or mismatch, %d no CUDA device (a run that needs one)\n",
               kCheckRows, kExitNoDevice);
}

long parse_int(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno) die("%s expects an integer, got '%s'", flag.c_str(), v.c_str());
  return x;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], val;
    const bool has_eq = flag.find('=') != std::string::npos;
    if (has_eq) val = flag.substr(flag.find('=') + 1), flag = flag.substr(0, flag.find('='));
    if (flag == "--help" || flag == "-h") usage(stdout), std::exit(0);
    if (flag == "--list") { o.list = true; continue; }
    if (flag == "--check") { o.check = true; continue; }
    if (flag == "--selftest") { o.selftest = true; continue; }
    static const char* const kValued[] = {"--n", "--k", "--m", "--frac", "--dtype", "--block-n", "--block-k",
                                          "--instance", "--split-k", "--iters", "--seed"};
    if (std::find(std::begin(kValued), std::end(kValued), flag) == std::end(kValued)) {
      usage(stderr);
      die("unknown option '%s'", argv[i]);
    }
    if (!has_eq) {
      if (i + 1 >= argc) die("%s needs a value (see --help)", flag.c_str());
      val = argv[++i];
    }
    if (flag == "--n") o.n = parse_int(flag, val);
    else if (flag == "--k") o.k = parse_int(flag, val);
    else if (flag == "--m") o.m = parse_int(flag, val);
    else if (flag == "--block-n") o.block_n = parse_int(flag, val);
    else if (flag == "--block-k") o.block_k = parse_int(flag, val);
    else if (flag == "--instance") o.instance = parse_int(flag, val);
    else if (flag == "--split-k") o.split_k = parse_int(flag, val);
    else if (flag == "--iters") o.iters = parse_int(flag, val);
    else if (flag == "--seed") o.seed = (unsigned long long)parse_int(flag, val);
    else if (flag == "--frac") {
      char* end = nullptr;
      o.frac = std::strtod(val.c_str(), &end);
      if (val.empty() || *end != '\0' || !(o.frac >= 0.0 && o.frac <= 1.0))
        die("--frac expects a number in [0, 1], got '%s'", val.c_str());
    } else if (flag == "--dtype") {
      if (val == "f16" || val == "fp16" || val == "float16") o.dt = DType::F16;
      else if (val == "bf16" || val == "bfloat16") o.dt = DType::BF16;
      else die("--dtype must be f16 or bf16, got '%s'", val.c_str());
    }
  }
  if (o.list) return o;  // --list ignores the problem options
  if (o.block_n != 64 && o.block_n != 128) die("--block-n must be 64 or 128, got %ld", o.block_n);
  if (o.block_k != 64 && o.block_k != 128) die("--block-k must be 64 or 128, got %ld", o.block_k);
  if (o.n <= 0 || o.k <= 0 || o.m <= 0) die("--n, --k and --m must be positive");
  if (o.n >= (1L << 31) || o.k >= (1L << 31) || o.m >= (1L << 31)) die("--n, --k and --m must fit in int32");
  if (o.n % o.block_n) die("--n %ld is not a multiple of --block-n %ld (stoicc does not pad)", o.n, o.block_n);
  if (o.k % o.block_k) die("--k %ld is not a multiple of --block-k %ld (stoicc does not pad)", o.k, o.block_k);
  if (o.split_k < 0 || o.split_k > 65535) die("--split-k must be in [0, 65535] (0 = auto), got %ld", o.split_k);
  if (o.instance < -1) die("--instance must be -1 (heuristic) or a registry index, got %ld", o.instance);
  if (o.iters < 1) die("--iters must be >= 1, got %ld", o.iters);
  return o;
}

void list_instances() {
  std::printf("%3s  %-36s %4s %4s %4s %5s %6s %-10s %7s %6s %s\n", "idx", "name", "BM", "BN", "BK", "warps",
              "stages", "schedule", "smem", "min_sm", "compiled");
  for (int i = 0; i < kNumInstances; ++i) {
    const InstanceInfo& in = kInstances[i];
    std::printf("%3d  %-36s %4d %4d %4d %3dx%d %6d %-10s %7zu %6d %s\n", i, in.name, in.block_m, in.block_n,
                in.block_k, in.warps_n, in.warps_m, in.stages, in.schedule == kStreamK ? "stream_k" : in.schedule == kSplitK ? "split_k" : "sequential", in.smem_bytes,
                in.min_sm, in.launch ? "yes" : "no (STOICC_INSTANCES)");
  }
}

// splitmix64: fast, seedable, identical on every platform (std distributions are not).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double)(next() >> 11) * 0x1.0p-53; }
};

uint16_t to_bits(float f, DType dt) {
  uint16_t b;
  if (dt == DType::BF16) {
    __nv_bfloat16 h = __float2bfloat16_rn(f);
    std::memcpy(&b, &h, 2);
  } else {
    __half h = __float2half_rn(f);
    std::memcpy(&b, &h, 2);
  }
  return b;
}

float to_float(uint16_t b, DType dt) {
  if (dt == DType::BF16) {
    __nv_bfloat16 h;
    std::memcpy(&h, &b, 2);
    return __bfloat162float(h);
  }
  __half h;
  std::memcpy(&h, &b, 2);
  return __half2float(h);
}

// A non-zero weight value, |v| in [0.1, 1): a stored value is never zero, so every random tile
// is what compress() would produce for it (a 2:4 group keeps exactly its two non-zeros, a dense
// tile has no zero at all and so is not 2:4).
uint16_t weight_bits(Rng& rng, DType dt) {
  const uint64_t r = rng.next();
  const float mag = 0.1f + 0.9f * (float)((r >> 11) * 0x1.0p-53);
  return to_bits((r & 1) ? -mag : mag, dt);
}

// The seven arrays of docs/format.md section 2 (values as bit patterns of W's dtype).
struct HostWeight {
  int N, K, BN, BK, TR, TC;
  std::vector<int32_t> s_ptr, s_cols, d_ptr, d_cols;
  std::vector<uint16_t> s_vals, d_vals;
  std::vector<uint32_t> s_meta;
  size_t nbytes() const {  // all seven tensors, as CompressedWeight.nbytes
    return 4 * (s_ptr.size() + s_cols.size() + d_ptr.size() + d_cols.size() + s_meta.size()) +
           2 * (s_vals.size() + d_vals.size());
  }
};

// One 2:4 tile (sections 3 and 4). The kept pair of every (row, group of four) is drawn first;
// values are then placed in mma.sp A-fragment order and the codes in E-operand order.
// `w` (optional) receives the logical tile: &W[tile origin], row stride K.
void write_sparse_tile(Rng& rng, DType dt, int BN, int BK, uint16_t* vals, uint32_t* meta, float* w, int K) {
  static const uint8_t kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  const int G = BK / 4;  // groups per row
  std::vector<uint8_t> code((size_t)BN * G);
  for (auto& c : code) {
    const uint8_t* p = kPairs[rng.next() % 6];
    c = (uint8_t)(p[0] | (p[1] << 2));
  }
  for (int mb = 0; mb < BN / 16; ++mb)
    for (int ks = 0; ks < BK / 32; ++ks)
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 8; ++j) {
          const int g = lane / 4, q = lane % 4;
          const int row = mb * 16 + g + 8 * ((j / 2) % 2);
          const int ccol = 2 * q + (j % 2) + 8 * (j / 4);
          const int group = ks * 8 + ccol / 2, slot = ccol % 2;
          const uint16_t b = weight_bits(rng, dt);
          vals[((size_t)(mb * (BK / 32) + ks) * 32 + lane) * 8 + j] = b;
          if (w) {
            const int cd = code[(size_t)row * G + group];
            w[(size_t)row * K + 4 * group + (slot ? cd >> 2 : cd & 3)] = to_float(b, dt);
          }
        }
  for (int mb = 0; mb < BN / 16; ++mb)
    for (int kp = 0; kp < BK / 64; ++kp)
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, q = lane % 4, ks = 2 * kp + q / 2, h = q % 2;
        uint32_t word = 0;
        for (int i = 0; i < 4; ++i) {
          const int group = ks * 8 + 4 * h + i;
          word |= (uint32_t)code[(size_t)(mb * 16 + g) * G + group] << (4 * i);
          word |= (uint32_t)code[(size_t)(mb * 16 + g + 8) * G + group] << (16 + 4 * i);
        }
        meta[(mb * (BK / 64) + kp) * 32 + lane] = word;
      }
}

// One dense tile (section 5): mma m16n8k16 A-fragment order.
void write_dense_tile(Rng& rng, DType dt, int BN, int BK, uint16_t* vals, float* w, int K) {
  for (int mb = 0; mb < BN / 16; ++mb)
    for (int k16 = 0; k16 < BK / 16; ++k16)
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 8; ++j) {
          const int g = lane / 4, q = lane % 4;
          const int row = mb * 16 + g + 8 * ((j / 2) % 2);
          const int col = k16 * 16 + 2 * q + (j % 2) + 8 * (j / 4);
          const uint16_t b = weight_bits(rng, dt);
          vals[((size_t)(mb * (BK / 16) + k16) * 32 + lane) * 8 + j] = b;
          if (w) w[(size_t)row * K + col] = to_float(b, dt);
        }
}

// PATCH-like tile map: a fraction `frac` of the cells of the 128x128 grid, placed at random, is
// 2:4, the rest dense (no EMPTY tiles), as bench/bench_kernels.py builds it; a 64-wide tile takes
// the type of the grid cell it lies in. Then the CSR lists and the tiles, in storage order.
HostWeight make_weight(const Options& o, std::vector<float>* dense_w) {
  HostWeight hw;
  hw.N = (int)o.n, hw.K = (int)o.k, hw.BN = (int)o.block_n, hw.BK = (int)o.block_k;
  hw.TR = hw.N / hw.BN, hw.TC = hw.K / hw.BK;
  Rng rng{o.seed * 0x2545F4914F6CDD1Dull + 7};
  const long GR = (o.n + 127) / 128, GC = (o.k + 127) / 128;
  std::vector<long> cells(GR * GC);
  for (long i = 0; i < GR * GC; ++i) cells[i] = i;
  for (long i = GR * GC - 1; i > 0; --i) std::swap(cells[i], cells[rng.next() % (uint64_t)(i + 1)]);
  std::vector<char> sparse_cell(GR * GC, 0);
  const long n_sparse_cells = std::lround(o.frac * (double)(GR * GC));
  for (long i = 0; i < n_sparse_cells; ++i) sparse_cell[cells[i]] = 1;

  hw.s_ptr.push_back(0);
  hw.d_ptr.push_back(0);
  for (int r = 0; r < hw.TR; ++r) {
    for (int c = 0; c < hw.TC; ++c)  // ascending K-tile index within a row
      (sparse_cell[(long)r * hw.BN / 128 * GC + (long)c * hw.BK / 128] ? hw.s_cols : hw.d_cols).push_back(c);
    hw.s_ptr.push_back((int32_t)hw.s_cols.size());
    hw.d_ptr.push_back((int32_t)hw.d_cols.size());
  }
  const size_t tile = (size_t)hw.BN * hw.BK;
  hw.s_vals.resize(hw.s_cols.size() * tile / 2);
  hw.s_meta.resize(hw.s_cols.size() * tile / 32);
  hw.d_vals.resize(hw.d_cols.size() * tile);
  if (dense_w) dense_w->assign((size_t)hw.N * hw.K, 0.f);
  auto origin = [&](int r, int c) { return dense_w ? dense_w->data() + (size_t)r * hw.BN * hw.K + (size_t)c * hw.BK : nullptr; };
  for (int r = 0; r < hw.TR; ++r) {
    for (int t = hw.s_ptr[r]; t < hw.s_ptr[r + 1]; ++t)
      write_sparse_tile(rng, o.dt, hw.BN, hw.BK, &hw.s_vals[t * tile / 2], &hw.s_meta[t * tile / 32],
                        origin(r, hw.s_cols[t]), hw.K);
    for (int t = hw.d_ptr[r]; t < hw.d_ptr[r + 1]; ++t)
      write_dense_tile(rng, o.dt, hw.BN, hw.BK, &hw.d_vals[t * tile], origin(r, hw.d_cols[t]), hw.K);
  }
  return hw;
}

std::vector<float> to_floats(const std::vector<uint16_t>& v, DType dt) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = to_float(v[i], dt);
  return f;
}

// Y[M, N] (float) from stoicc::spmm_cpu, which takes float32 values (as ops.cpp converts them).
std::vector<float> cpu_reference(const HostWeight& hw, const std::vector<float>& xf, int M, DType dt) {
  const std::vector<float> sv = to_floats(hw.s_vals, dt), dv = to_floats(hw.d_vals, dt);
  std::vector<float> y((size_t)M * hw.N);
  SpmmArgs a{};
  a.x = xf.data(), a.ldx = hw.K;
  a.s_ptr = hw.s_ptr.data(), a.s_cols = hw.s_cols.data(), a.s_vals = sv.data(), a.s_meta = hw.s_meta.data();
  a.d_ptr = hw.d_ptr.data(), a.d_cols = hw.d_cols.data(), a.d_vals = dv.data();
  a.y = y.data(), a.ldy = hw.N;
  a.M = M, a.N = hw.N, a.K = hw.K;
  a.n_sparse = (int)hw.s_cols.size(), a.n_dense = (int)hw.d_cols.size(), a.split_k = 1;
  if (const char* err = spmm_cpu(a, dt, hw.BN, hw.BK)) die("CPU reference rejected the compressed weight: %s", err);
  return y;
}

// max |got - ref| / max |ref|
double rel_error(const std::vector<float>& got, const std::vector<float>& ref) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, (double)std::fabs(got[i] - ref[i]));
    mag = std::max(mag, (double)std::fabs(ref[i]));
  }
  return mag > 0 ? err / mag : err;
}

std::vector<uint16_t> random_x(long M, long K, DType dt, uint64_t seed) {
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 11};
  std::vector<uint16_t> x((size_t)M * K);
  for (auto& v : x) v = to_bits((float)(2 * rng.uniform() - 1), dt);
  return x;
}

// Host only: the logical W the compressor placed must be what spmm_cpu decodes from the tuple.
int selftest(const Options& o) {
  std::vector<float> w;
  const HostWeight hw = make_weight(o, &w);
  const int M = (int)std::min<long>(o.m, kCheckRows);
  const std::vector<float> xf = to_floats(random_x(M, o.k, o.dt, o.seed), o.dt);
  const std::vector<float> ref = cpu_reference(hw, xf, M, o.dt);
  std::vector<float> y((size_t)M * hw.N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < hw.N; ++n) {
      float s = 0.f;  // same order as spmm_cpu: the results should agree to the bit
      for (int k = 0; k < hw.K; ++k) s += xf[(size_t)m * hw.K + k] * w[(size_t)n * hw.K + k];
      y[(size_t)m * hw.N + n] = s;
    }
  const double e = rel_error(y, ref);
  std::fprintf(stderr, "selftest: %zu 2:4 + %zu dense tiles, M=%d, max|err|/max|ref| = %.3g\n", hw.s_cols.size(),
               hw.d_cols.size(), M, e);
  if (!(e <= 1e-6)) die("selftest failed: the compressor and the CPU reference disagree");
  std::printf("selftest OK\n");
  return 0;
}

std::vector<void*> g_allocs;
template <class T>
T* upload(const T* h, size_t count) {
  void* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(count * sizeof(T), 16)));  // never null, even for 0 tiles
  g_allocs.push_back(p);
  if (count) CK(cudaMemcpy(p, h, count * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(p);
}
template <class T>
T* upload(const std::vector<T>& h) { return upload(h.data(), h.size()); }

int run(const Options& o) {
  int ndev = 0;
  const cudaError_t e = cudaGetDeviceCount(&ndev);
  if (e != cudaSuccess || ndev == 0) {
    std::fprintf(stderr, "stoicc_spmm_bench: no CUDA device (%s); only --list and --selftest run without one "
                 "(exit status %d: skipped)\n", e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0",
                 kExitNoDevice);
    std::exit(kExitNoDevice);
  }
  int dev = 0;
  CK(cudaSetDevice(dev));
  const DeviceProps props = device_props(dev);
  const int M = (int)o.m, N = (int)o.n, K = (int)o.k, BN = (int)o.block_n, BK = (int)o.block_k;

  const HostWeight hw = make_weight(o, nullptr);
  const int64_t nS = (int64_t)hw.s_cols.size(), nD = (int64_t)hw.d_cols.size();

  // Instance and split-K exactly as spmm_cuda_impl (csrc/ops.cpp) chooses them.
  int inst = (int)o.instance, split = (int)o.split_k;
  if (inst < 0) {
    const Choice c = default_choice(M, N, K, BN, BK, nS, nD, props);
    if (c.instance < 0)
      die("no compiled instance runs %dx%d tiles on this GPU (compute capability %d); see --list", BN, BK, props.cc);
    inst = c.instance;
    if (split <= 0) split = c.split_k;
  } else if (split <= 0 && inst < kNumInstances) {
    split = auto_split(kInstances[inst], M, N, K, nS, nD, props);
  }
  const std::string bad = check_instance(inst, BN, BK, split, props);
  if (!bad.empty()) die("%s", bad.c_str());
  const InstanceInfo& in = kInstances[inst];
  int max_contrib = 1;
  if (in.schedule == kStreamK) {
    if (split > stream_k_max_ctas(nS, nD)) die("stream_k: at most %d CTAs for this weight", stream_k_max_ctas(nS, nD));
    max_contrib = stream_k_max_contrib(K, BK, split, nS, nD);
  }
  const std::vector<uint16_t> x = random_x(M, K, o.dt, o.seed);

  // Copies of the weight spanning >= 2x the L2 (at least 4, at most 64), as copies_for().
  int l2 = 0;
  CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  const size_t nbytes = hw.nbytes();
  const int copies = (int)std::clamp<size_t>(2 * (size_t)l2 / std::max<size_t>(nbytes, 1) + 1, 4, 64);

  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, dev));
  std::fprintf(stderr, "device: %s (sm_%d, %d SMs, L2 %d MiB); weight %dx%d %s, %zu 2:4 + %zu dense %dx%d tiles, "
               "%.2f MiB compressed, %d copies\n", prop.name, props.cc, props.sm_count, l2 >> 20, N, K,
               o.dt == DType::BF16 ? "bf16" : "f16", hw.s_cols.size(), hw.d_cols.size(), BN, BK,
               nbytes / 1048576.0, copies);

  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  SpmmArgs base{};
  base.x = upload(x), base.ldx = K;
  void* y = nullptr;
  CK(cudaMalloc(&y, (size_t)M * N * 2));
  g_allocs.push_back(y);
  base.y = y, base.ldy = N, base.bias = nullptr;
  base.M = M, base.N = N, base.K = K;
  base.n_sparse = (int)nS, base.n_dense = (int)nD, base.split_k = split, base.max_contrib = max_contrib;
  // Split-K workspace + zeroed counters as ops.cpp allocates them: only for the workspace path
  // (split > 1 without a cluster reduction). The calls run in order on one stream and the kernel
  // leaves the counters at zero, so all rotated calls share one workspace.
  const size_t wf = in.uses_cluster(o.dt) ? 0 : workspace_floats(in, M, N, split, max_contrib);
  if (wf > 0) {
    const size_t ci = counter_ints(in, M, N);
    CK(cudaMalloc(&base.workspace, wf * sizeof(float)));
    CK(cudaMalloc(&base.counters, ci * sizeof(int32_t)));
    g_allocs.push_back(base.workspace), g_allocs.push_back(base.counters);
    CK(cudaMemsetAsync(base.counters, 0, ci * sizeof(int32_t), stream));
  }
  std::vector<SpmmArgs> args(copies, base);
  for (SpmmArgs& a : args) {
    a.s_ptr = upload(hw.s_ptr), a.s_cols = upload(hw.s_cols), a.s_vals = upload(hw.s_vals);
    a.s_meta = upload(hw.s_meta), a.d_ptr = upload(hw.d_ptr), a.d_cols = upload(hw.d_cols);
    a.d_vals = upload(hw.d_vals);
  }
  // cudaMemcpy from pageable memory may return before the DMA lands, and a non-blocking stream
  // does not wait for the legacy stream: finish all setup before the first launch.
  CK(cudaDeviceSynchronize());
  auto launch_all = [&]() {
    for (const SpmmArgs& a : args)
      if (const int rc = in.launch(a, o.dt, stream))
        die("launch of %s (split_k %d) failed: %s", in.name, split, cudaGetErrorString((cudaError_t)rc));
  };
  launch_all();  // eager first: lazy loading and per-function attributes happen off the capture
  CK(cudaStreamSynchronize(stream));

  if (o.check) {
    const int mc = std::min(M, kCheckRows);
    std::vector<uint16_t> yb((size_t)mc * N);
    CK(cudaMemcpy(yb.data(), y, yb.size() * 2, cudaMemcpyDeviceToHost));
    const std::vector<float> xf = to_floats(std::vector<uint16_t>(x.begin(), x.begin() + (size_t)mc * K), o.dt);
    const std::vector<float> ref = cpu_reference(hw, xf, mc, o.dt);
    // fp32 accumulation on both sides; the GPU result is rounded to the output dtype, whose
    // relative step is 2^-11 (f16) or 2^-8 (bf16): a layout bug gives errors of order 1.
    const double tol = o.dt == DType::BF16 ? 2e-2 : 1e-2, err = rel_error(to_floats(yb, o.dt), ref);
    std::fprintf(stderr, "check: first %d rows, max|err|/max|ref| = %.3g (tolerance %.0e) %s\n", mc, err, tol,
                 err <= tol ? "OK" : "MISMATCH");
    if (!(err <= tol)) die("GPU result of %s does not match the CPU reference", in.name);
  }

  // One graph replays every copy once; per-call time = replay time / copies.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  launch_all();
  CK(cudaStreamEndCapture(stream, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(exec, stream));
  cudaEvent_t t0, t1;
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  std::vector<float> us(o.iters);
  for (long i = 0; i < o.iters; ++i) {
    CK(cudaEventRecord(t0, stream));
    CK(cudaGraphLaunch(exec, stream));
    CK(cudaEventRecord(t1, stream));
    CK(cudaEventSynchronize(t1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, t0, t1));
    us[i] = ms * 1000.f / copies;
  }
  std::sort(us.begin(), us.end());
  const double t = o.iters % 2 ? us[o.iters / 2] : 0.5 * (us[o.iters / 2 - 1] + us[o.iters / 2]);
  // TB/s over the compressed weight bytes (as the demo's weight_TBps); TFLOP/s counts the dense
  // 2*M*N*K (as bench_kernels.py), so that it compares directly with cuBLAS.
  std::printf("%s split_k=%d time_us=%.3f TB/s=%.3f TFLOP/s=%.2f\n", in.name, split, t, nbytes / (t * 1e6),
              2.0 * M * N * K / (t * 1e6));

  CK(cudaEventDestroy(t0));
  CK(cudaEventDestroy(t1));
  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  CK(cudaStreamDestroy(stream));
  for (void* p : g_allocs) CK(cudaFree(p));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (o.list) {  // registry only: no CUDA call, so it works without a GPU
    list_instances();
    return 0;
  }
  if (o.selftest) return selftest(o);
  return run(o);
}
