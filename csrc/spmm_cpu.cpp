// CPU reference of spmm and densify: decodes each tile row of the mixed-tile format
// (docs/format.md) into a float32 block and multiplies it in float32 (or returns it). It reads every index, so it also checks them:
// a corrupted tuple gives an error message here instead of a wrong answer.
// All value pointers in `a` are float32 here (ops.cpp converts on the way in).
#include <cstdio>
#include <vector>

#include "common.h"

namespace stoicc {
namespace {

thread_local char g_msg[256];

const char* fail(const char* fmt, long a0, long a1 = 0, long a2 = 0) {
  std::snprintf(g_msg, sizeof g_msg, fmt, a0, a1, a2);
  return g_msg;
}

// Checks one CSR list (row pointers + ascending K-tile indices) of the format.
const char* check_csr(const int32_t* ptr, const int32_t* cols, int rows, int n,
                      int tiles_per_row) {
  if (ptr[0] != 0) return fail("row_ptr[0] must be 0, got %ld", ptr[0]);
  for (int r = 0; r < rows; ++r) {
    if (ptr[r + 1] < ptr[r]) return fail("row pointers decrease at tile row %ld (%ld -> %ld)", r, ptr[r], ptr[r + 1]);
    if (ptr[r + 1] > n) return fail("row pointer %ld at tile row %ld exceeds the %ld stored tiles", ptr[r + 1], r, n);
    for (int t = ptr[r]; t < ptr[r + 1]; ++t) {
      if (cols[t] < 0 || cols[t] >= tiles_per_row)
        return fail("K-tile index %ld of stored tile %ld is outside [0, %ld)", cols[t], t, tiles_per_row);
      if (t > ptr[r] && cols[t] <= cols[t - 1])
        return fail("K-tile indices of tile row %ld are not strictly ascending at stored tile %ld", r, t);
    }
  }
  if (ptr[rows] != n) return fail("last row pointer is %ld but %ld tiles are stored", ptr[rows], n);
  return nullptr;
}

// Writes tile row r of W (BN rows of K floats, pre-zeroed) into w; the CSR lists were checked.
const char* decode_tile_row(const SpmmArgs& a, int BN, int BK, int r, float* w, std::vector<char>& seen) {
  const float* sv = static_cast<const float*>(a.s_vals);
  const float* dv = static_cast<const float*>(a.d_vals);
  std::fill(seen.begin(), seen.end(), 0);
  // 2:4 tiles: value (mb, ks, lane, j) sits at compressed column 2q + (j&1) + 8(j>>2) of row
  // g + 8((j>>1)&1); its logical column comes from the metadata nibble of its group.
  for (int t = a.s_ptr[r]; t < a.s_ptr[r + 1]; ++t) {
    const int c = a.s_cols[t];
    seen[c] = 1;
    const float* tv = sv + (size_t)t * BN * BK / 2;
    const uint32_t* tm = a.s_meta + (size_t)t * BN * BK / 32;
    for (int mb = 0; mb < BN / 16; ++mb)
      for (int kp = 0; kp < BK / 64; ++kp)
        for (int lane = 0; lane < 32; ++lane) {
          const uint32_t word = tm[(mb * (BK / 64) + kp) * 32 + lane];
          const int g = lane >> 2, q = lane & 3, ks = 2 * kp + (q >> 1), h = q & 1;
          for (int hv = 0; hv < 2; ++hv)
            for (int i = 0; i < 4; ++i) {
              const int code = (word >> (16 * hv + 4 * i)) & 0xF;
              const int i0 = code & 3, i1 = code >> 2;
              if (i0 >= i1) return fail("invalid 2:4 metadata nibble 0x%lx in stored 2:4 tile %ld", code, t);
              const int row = mb * 16 + g + 8 * hv, group = ks * 8 + 4 * h + i;
              // The two kept values of (row, group): compressed columns 2*(group%8) and +1 of
              // step ks, held by lane 4*(row%8) + ((group%8)%4) at j = 2*hv + 4*((group%8)/4) + slot.
              const int cg = group % 8, vl = 4 * (row % 8) + (cg % 4);
              const int jb = 2 * hv + 4 * (cg / 4);
              const float* base = tv + ((size_t)(mb * (BK / 32) + ks) * 32 + vl) * 8;
              float* dst = &w[(size_t)row * a.K + (size_t)c * BK + 4 * group];
              dst[i0] = base[jb];
              dst[i1] = base[jb + 1];
            }
        }
  }
  for (int t = a.d_ptr[r]; t < a.d_ptr[r + 1]; ++t) {
    const int c = a.d_cols[t];
    if (seen[c]) return fail("K-tile %ld of tile row %ld is stored both as 2:4 and as dense", c, r);
    const float* tv = dv + (size_t)t * BN * BK;
    for (int mb = 0; mb < BN / 16; ++mb)
      for (int k16 = 0; k16 < BK / 16; ++k16)
        for (int lane = 0; lane < 32; ++lane)
          for (int j = 0; j < 8; ++j) {
            const int g = lane >> 2, q = lane & 3;
            const int row = mb * 16 + g + 8 * ((j >> 1) & 1);
            const int col = k16 * 16 + 2 * q + (j & 1) + 8 * (j >> 2);
            w[(size_t)row * a.K + (size_t)c * BK + col] = tv[((size_t)(mb * (BK / 16) + k16) * 32 + lane) * 8 + j];
          }
  }
  return nullptr;
}

const char* check_both_csr(const SpmmArgs& a, int BN, int BK) {
  const int TR = a.N / BN, TC = a.K / BK;
  if (const char* e = check_csr(a.s_ptr, a.s_cols, TR, a.n_sparse, TC)) return e;
  return check_csr(a.d_ptr, a.d_cols, TR, a.n_dense, TC);
}

}  // namespace

const char* spmm_cpu(const SpmmArgs& a, DType, int BN, int BK) {
  if (const char* e = check_both_csr(a, BN, BK)) return e;
  const int TR = a.N / BN;
  const float* x = static_cast<const float*>(a.x);
  const float* bias = static_cast<const float*>(a.bias);
  float* y = static_cast<float*>(a.y);
  std::vector<float> w((size_t)BN * a.K);
  std::vector<char> seen(a.K / BK);

  for (int r = 0; r < TR; ++r) {
    std::fill(w.begin(), w.end(), 0.f);
    if (const char* e = decode_tile_row(a, BN, BK, r, w.data(), seen)) return e;
    for (int m = 0; m < a.M; ++m) {
      const float* xm = x + (size_t)m * a.ldx;
      for (int n = 0; n < BN; ++n) {
        const float* wn = &w[(size_t)n * a.K];
        float s = 0.f;
        for (int k = 0; k < a.K; ++k) s += xm[k] * wn[k];
        const int gn = r * BN + n;
        y[(size_t)m * a.ldy + gn] = s + (bias ? bias[gn] : 0.f);
      }
    }
  }
  return nullptr;
}

const char* densify_cpu(const SpmmArgs& a, int BN, int BK, float* out) {
  if (const char* e = check_both_csr(a, BN, BK)) return e;
  std::vector<char> seen(a.K / BK);
  std::fill(out, out + (size_t)a.N * a.K, 0.f);
  for (int r = 0; r < a.N / BN; ++r)
    if (const char* e = decode_tile_row(a, BN, BK, r, out + (size_t)r * BN * a.K, seen)) return e;
  return nullptr;
}

}  // namespace stoicc
