// Host side of the sm_90 X copies: the TMA tensor map that describes X [M, K] (row stride ldx
// elements) to the copy engine, with a box of 64 columns x BLOCK_M rows and the 128-byte
// swizzle that SpmmKernel's X layout uses. Encoded per call (X's address changes per call; it is
// pure host work, about a microsecond) and passed inside the kernel's __grid_constant__
// arguments, so CUDA-graph capture records it with the launch.
#pragma once
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <cstring>

namespace stoicc {

// cuTensorMapEncodeTiled from the driver, found through the runtime (no -lcuda at link time).
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// Writes the 128-byte tensor map of X into `out`. Returns 0 or a cudaError_t value. X's base
// and row stride are 16-byte aligned (the op layer guarantees it), as TMA requires.
inline int encode_x_tensor_map(unsigned char* out, const void* x, int M, int K, int64_t ldx, bool bf16,
                               int box_rows) {
  auto encode = tensor_map_encoder();
  if (encode == nullptr) return (int)cudaErrorNotSupported;
  CUtensorMap map;
  const cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)M};
  const cuuint64_t strides[1] = {(cuuint64_t)ldx * 2};
  const cuuint32_t box[2] = {64, (cuuint32_t)box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode(&map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2,
                            const_cast<void*>(x), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return (int)cudaErrorInvalidValue;
  static_assert(sizeof(CUtensorMap) == 128, "a tensor map is 128 bytes");
  std::memcpy(out, &map, sizeof(map));
  return 0;
}

}  // namespace stoicc
