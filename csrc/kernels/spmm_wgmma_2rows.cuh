// Hopper prefill kernel, two tile rows per CTA (family "wgmma2", experiment): Y[M, N] = X[M, K] @ W^T
// (+ bias) on wgmma.mma_async.sp (2:4 tiles) / wgmma.mma_async (dense tiles), like spmm_wgmma.cuh,
// but one CTA covers TWO consecutive tile rows (2 x BN weight rows) and BM tokens, and walks the
// union of the two rows' K tiles in K order. Each step loads the X slice once and the weight tile
// of each row that has one at that K, so one X slice feeds the MMAs of both rows.
//
// Two shapes (the accumulator of a consumer is always one tile row x BM tokens):
//   BN = 128, BM = 128: two m64 blocks x 128 tokens, two m64n128 accumulators (128 fp32 registers);
//   BN =  64, BM = 256: one m64 block x 256 tokens, one m64n256 accumulator (128 fp32 registers).
// The second is for 64-row tiles, where spmm_wgmma.cuh reuses each X slice for 64 weight rows
// only: here an X slice of 256 tokens serves the 128 weight rows of the two tile rows whenever
// their K tiles coincide, and each MMA is the widest one (m64n256). BN = 128 with BM = 256 would
// need 256 accumulator registers.
//
// Warp specialization (384 threads, one CTA per SM), as in spmm_wgmma.cuh:
//   warpgroup 0, one thread: the producer. It merges the two rows' item streams (each row's stream
//     is the merge of its sparse_cols and dense_cols lists, ascending in K): per step, the smallest
//     head K over both rows; each row whose head has that K contributes its head item (equal heads
//     -> one step with both tiles). Per step: wait for a free stage, write the stage's descriptor
//     (kind of each row's tile: none / 2:4 / dense), arrive.expect_tx on the full barrier (its
//     release semantics order the descriptor write before the consumers' acquire), then issue the
//     weight bulk copies and the X TMA panels.
//   warpgroups 1 and 2: consumer c owns tile row 2*blockIdx.x + c entirely: BN weight rows x BM
//     tokens = BN/64 m64 blocks (h; warp w holds the 16-row block 4h + w of each), each an m64nBM
//     accumulator. Per step: wait for the stage, read the row's kind from the descriptor
//     (broadcast from lane 0 so that the branch is warp-uniform), load A fragments (+ metadata) of
//     the m64 blocks, issue BN/64 x BK/32 sparse or BN/64 x BK/16 dense wgmmas, wait for them,
//     release the stage (one arrive per consumer thread, also when the row had no tile at this step).
//
// How the consumers learn the step count: the producer publishes it. After its last real step it
// takes one more stage (waiting for it to be free like any other), writes kind = END into its
// descriptor and completes the stage's full barrier with a plain arrive (no bytes). The consumers
// loop until they read END. The hand-off is the same mbarrier release/acquire as every other step,
// so there is no second protocol to get wrong, and the consumers never touch the CSR arrays (no
// global loads on their critical path). The END step issues no copy, so when both consumers have
// read it every async write into the pipeline buffers has completed: the epilogue may reuse them.
//
// Robustness: CSR ranges are clamped to [0, n_sparse] / [0, n_dense] and K tile indices to
// [0, K/BK - 1], as in spmm_wgmma.cuh. Each step consumes at least one item and every item exactly
// once, whatever the order of the lists, so the walk terminates within n_sparse + n_dense steps and
// the result stays the exact sum even for unsorted lists (only the X-sharing is lost then).
//
// Odd tile-row counts: the last CTA's second row does not exist; its item stream is empty (its CSR
// is never read), consumer 1 only arrives on the empty barriers, and its columns are not written.
#pragma once
#include "spmm_wgmma.cuh"

namespace stoicc {

template <typename T, int BM, int BN, int BK, int STAGES>
struct SpmmWgmma2Rows {
  static constexpr int kConsumers = 2;                        // one consumer warpgroup per tile row
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kMB = BN / 64;                          // m64 blocks per consumer (tile row)
  static constexpr int kAcc = BM / 2;                          // fp32 accumulators per thread per m64 block
  static constexpr int kXPanelBytes = BM * 128;               // [BM rows][64 columns] of X
  static constexpr int kXBytes = BM * BK * 2;
  static constexpr int kWBytes = 2 * BN * BK;                 // one weight slot: a dense tile
  static constexpr int kSparseValBytes = BN * BK;
  static constexpr int kSparseMetaBytes = BN * BK / 8;
  static constexpr int kStageBytes = kXBytes + 2 * kWBytes;   // X first, then row 0's and row 1's slot
  static constexpr int kYPitch = 2 * BN + 8;                  // staged output row (both tile rows)
  static constexpr size_t kSmemBytes = (size_t)STAGES * kStageBytes + 1024;  // + base alignment
  // Host: launches this instantiation (one CTA per pair of tile rows and token block); defined
  // below, after the __global__ entry.
  static int launch(const SpmmArgs& a, cudaStream_t stream);
  // Descriptor of a stage: kind of row 0 | kind of row 1 << 4, or kEnd.
  static constexpr int kNone = 0, kSparse = 1, kDense = 2, kEnd = 0xFF;
  static constexpr int kInf = 0x7FFFFFFF;
  // Dense tiles are multiplied in chunks of kDenseK K columns so that the A fragments of a chunk
  // (kMB x kDenseK / 16 uint4) stay at 32 registers beside the 128 accumulators.
  static constexpr int kDenseK = BK < 128 / kMB ? BK : 128 / kMB;
  // The consumer's accumulators are kMB x kAcc = BN * BM / 128 fp32 registers a thread: 128 for
  // 128 x 128 and 64 x 256 (the shapes with instances); 128 x 256 would need 256.
  static_assert((BN == 128 && BM == 128) || (BN == 64 && (BM == 128 || BM == 256)),
                "BN x BM must be 128 x 128, 64 x 256 or 64 x 128 (accumulator registers)");
  static_assert(BK == 64 || BK == 128, "BLOCK_K must be 64 or 128");
  static_assert(STAGES >= 2, "the pipeline needs two stages");
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an H100/H200 CTA may have");
  static_assert(BM * kYPitch * 2 <= STAGES * kStageBytes, "the output staging must fit the pipeline buffers");
  static_assert(kXPanelBytes % 1024 == 0 && kWBytes % 1024 == 0 && kXBytes % 1024 == 0,
                "panels and weight slots must stay 1024-byte aligned");

#ifdef STOICC_WGMMA
  __device__ static void run(const SpmmArgs& a) {
    extern __shared__ __align__(128) uint8_t smem_raw[];
    uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    __shared__ __align__(8) uint64_t full_bar[STAGES];
    __shared__ __align__(8) uint64_t empty_bar[STAGES];
    __shared__ int desc[STAGES];
    const int tid = threadIdx.x;
    const int wg = tid / 128;
    const int lane = tid & 31;
    const int row0 = 2 * blockIdx.x;  // first tile row of W
    const int m0 = blockIdx.y * BM;
    const int n_rows = a.N / BN;
    const bool has_row1 = row0 + 1 < n_rows;
    if (tid == 0) {
#pragma unroll
      for (int s = 0; s < STAGES; ++s) {
        mbar_init(&full_bar[s], 1);
        mbar_init(&empty_bar[s], 128 * kConsumers);  // one arrive per consumer thread
      }
      mbar_fence_init();
    }
    __syncthreads();
    // PDL: dependents may launch now; nothing a previous kernel wrote is read before the wait.
    griddep_launch_dependents();
    griddep_wait();

    if (wg == 0) {
      setmaxnreg_dec<40>();
      if (tid == 0) produce(a, smem, full_bar, empty_bar, desc, row0, has_row1, m0);
      return;
    }
    setmaxnreg_inc<232>();
    consume(a, smem, full_bar, empty_bar, desc, row0, has_row1, m0, wg - 1, lane);
  }

  // One row's item stream: the merge of its sparse and dense lists by (clamped) K tile index.
  struct RowStream {
    int is, s_end, id, d_end;  // next sparse / dense entry and the ends of the row's ranges
    int ks, kd;                // K tile of the sparse / dense head (kInf when exhausted)
  };

  __device__ static int clamp_k(int k, int num_ktiles) { return min(max(k, 0), num_ktiles - 1); }

  __device__ static RowStream open_row(const SpmmArgs& a, int row, bool present, int num_ktiles) {
    RowStream r{0, 0, 0, 0, kInf, kInf};
    if (!present) return r;
    r.is = min(max(a.s_ptr[row], 0), a.n_sparse);
    r.s_end = min(max(a.s_ptr[row + 1], r.is), a.n_sparse);
    r.id = min(max(a.d_ptr[row], 0), a.n_dense);
    r.d_end = min(max(a.d_ptr[row + 1], r.id), a.n_dense);
    r.ks = r.is < r.s_end ? clamp_k(__ldg(a.s_cols + r.is), num_ktiles) : kInf;
    r.kd = r.id < r.d_end ? clamp_k(__ldg(a.d_cols + r.id), num_ktiles) : kInf;
    return r;
  }

  // The row's head K (kInf when exhausted); on a tie of its own sparse and dense heads (not a
  // valid format, but it must stay correct) the sparse one goes first.
  __device__ static int head_k(const RowStream& r) { return min(r.ks, r.kd); }

  // Takes the row's head item: returns its kind, sets its storage index `t` and whether it is a 2:4
  // tile, adds its bytes. Loads the row's next head of that list (the load's latency hides behind
  // the next empty-barrier wait).
  __device__ static int take(const SpmmArgs& a, RowStream& r, int num_ktiles, uint32_t& bytes, int& t, bool& sparse) {
    sparse = r.ks <= r.kd;
    if (sparse) {
      t = r.is++;
      r.ks = r.is < r.s_end ? clamp_k(__ldg(a.s_cols + r.is), num_ktiles) : kInf;
      bytes += kSparseValBytes + kSparseMetaBytes;
      return kSparse;
    }
    t = r.id++;
    r.kd = r.id < r.d_end ? clamp_k(__ldg(a.d_cols + r.id), num_ktiles) : kInf;
    bytes += kWBytes;
    return kDense;
  }

  __device__ static void copy_tile(const SpmmArgs& a, bool sparse, int t, uint8_t* sw, uint64_t* bar) {
    if (sparse) {
      bulk_g2s_keep(sw, static_cast<const uint8_t*>(a.s_vals) + (size_t)t * kSparseValBytes, kSparseValBytes, bar);
      bulk_g2s_keep(sw + kSparseValBytes, reinterpret_cast<const uint8_t*>(a.s_meta) + (size_t)t * kSparseMetaBytes,
                    kSparseMetaBytes, bar);
    } else {
      bulk_g2s_keep(sw, static_cast<const uint8_t*>(a.d_vals) + (size_t)t * kWBytes, kWBytes, bar);
    }
  }

  __device__ static void produce(const SpmmArgs& a, uint8_t* smem, uint64_t* full_bar, uint64_t* empty_bar,
                                 int* desc, int row0, bool has_row1, int m0) {
    const int num_ktiles = a.K / BK;
    RowStream r0 = open_row(a, row0, true, num_ktiles);
    RowStream r1 = open_row(a, row0 + 1, has_row1, num_ktiles);
    for (int i = 0;; ++i) {
      const int s = i % STAGES;
      const int use = i / STAGES;
      if (use > 0) mbar_wait_mem(&empty_bar[s], (use - 1) & 1);  // the consumers released the stage
      const int h0 = head_k(r0), h1 = head_k(r1);
      const int k = min(h0, h1);
      if (k == kInf) {
        // END: no copies; the plain arrive completes the phase (count 1, no transaction bytes)
        // and releases the descriptor write.
        *reinterpret_cast<volatile int*>(&desc[s]) = kEnd;
        mbar_arrive(&full_bar[s]);
        return;
      }
      uint8_t* sx = smem + s * kStageBytes;
      uint8_t* sw0 = sx + kXBytes;
      uint8_t* sw1 = sw0 + kWBytes;
      uint32_t bytes = kXBytes;
      int kind0 = kNone, kind1 = kNone, t0 = 0, t1 = 0;
      bool sp0 = false, sp1 = false;
      if (h0 == k) kind0 = take(a, r0, num_ktiles, bytes, t0, sp0);
      if (h1 == k) kind1 = take(a, r1, num_ktiles, bytes, t1, sp1);
      *reinterpret_cast<volatile int*>(&desc[s]) = kind0 | (kind1 << 4);
      mbar_expect_tx_mem(&full_bar[s], bytes);
      if (kind0 != kNone) copy_tile(a, sp0, t0, sw0, &full_bar[s]);
      if (kind1 != kNone) copy_tile(a, sp1, t1, sw1, &full_bar[s]);
#pragma unroll
      for (int h = 0; h < BK / 64; ++h) tma_load_2d(sx + h * kXPanelBytes, a.x_tmap, k * BK + h * 64, m0, &full_bar[s]);
    }
  }

  __device__ static void consume(const SpmmArgs& a, uint8_t* smem, uint64_t* full_bar, uint64_t* empty_bar,
                                 const int* desc, int row0, bool has_row1, int m0, int c, int lane) {
    const int warp = (threadIdx.x / 32) & 3;  // warp inside the warpgroup
    // acc[h]: m64 block h (tile rows 64h .. 64h + 63) x BM tokens; warp w holds its 16-row block 4h + w
    float acc[kMB][kAcc];
#pragma unroll
    for (int h = 0; h < kMB; ++h)
#pragma unroll
      for (int i = 0; i < kAcc; ++i) acc[h][i] = 0.f;
    const int shift = 4 * c;

    for (int i = 0;; ++i) {
      const int s = i % STAGES;
      mbar_wait_mem(&full_bar[s], (i / STAGES) & 1);
      // Lane 0's read, broadcast: the kind is warp-uniform as ptxas sees it (a wgmma under a
      // branch it considers divergent serializes every wgmma of the kernel).
      const int d = __shfl_sync(0xFFFFFFFFu, *reinterpret_cast<const volatile int*>(&desc[s]), 0);
      if (d == kEnd) break;
      const int kind = (d >> shift) & 0xF;
      const uint8_t* sx = smem + s * kStageBytes;
      const uint8_t* sw = sx + kXBytes + c * kWBytes;
      const uint32_t xa = smem_addr(sx);
      if (kind == kSparse) {
        const uint4* wv = reinterpret_cast<const uint4*>(sw);                        // [BN/16][BK/32][32]
        const uint32_t* wm = reinterpret_cast<const uint32_t*>(sw + kSparseValBytes);  // [BN/16][BK/64][32]
        uint4 av[kMB][BK / 32];
        uint32_t e[kMB][BK / 64];
#pragma unroll
        for (int h = 0; h < kMB; ++h) {
#pragma unroll
          for (int ks = 0; ks < BK / 32; ++ks) av[h][ks] = wv[((4 * h + warp) * (BK / 32) + ks) * 32 + lane];
#pragma unroll
          for (int kp = 0; kp < BK / 64; ++kp) e[h][kp] = wm[((4 * h + warp) * (BK / 64) + kp) * 32 + lane];
        }
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) {
          const uint64_t dx = smem_desc_sw128(xa + (ks / 2) * kXPanelBytes + (ks % 2) * 64);
#pragma unroll
          for (int h = 0; h < kMB; ++h) {
            if (ks % 2 == 0) wgmma_sp<T, BM, 0>(acc[h], av[h][ks], dx, e[h][ks / 2]);
            else wgmma_sp<T, BM, 1>(acc[h], av[h][ks], dx, e[h][ks / 2]);
          }
        }
      } else if (kind == kDense) {
        // In chunks of kDenseK K columns: the A fragments of a whole 128-wide dense tile for two
        // m64 blocks would be 64 registers on top of the 128 accumulators, more than ptxas grants
        // (C7512: it then serializes every wgmma). With more than one chunk, a chunk's MMAs are
        // waited for before the next chunk's fragments reuse their registers.
        const uint4* wv = reinterpret_cast<const uint4*>(sw);  // [BN/16][BK/16][32]
        constexpr int kJ = kDenseK / 16;                       // k16 steps per chunk
#pragma unroll
        for (int kc = 0; kc < BK / kDenseK; ++kc) {
          uint4 av[kMB][kJ];
#pragma unroll
          for (int h = 0; h < kMB; ++h)
#pragma unroll
            for (int j = 0; j < kJ; ++j) av[h][j] = wv[((4 * h + warp) * (BK / 16) + kJ * kc + j) * 32 + lane];
          wgmma_fence();
#pragma unroll
          for (int j = 0; j < kJ; ++j) {
            const int kk = kJ * kc + j;  // k16 step in the tile
            const uint64_t dx = smem_desc_sw128(xa + (kk / 4) * kXPanelBytes + (kk % 4) * 32);
#pragma unroll
            for (int h = 0; h < kMB; ++h) wgmma_dense<T, BM>(acc[h], av[h][j], dx);
          }
          if (kc + 1 < BK / kDenseK) {
            wgmma_commit();
            wgmma_wait<0>();
          }
        }
      }
      wgmma_commit();
      wgmma_wait<0>();
      // Every consumer thread arrives: an arrive releases only the arriving thread's own reads
      // (PTX memory model), so a lane-0 arrive left lanes 1-31's fragment reads unordered before
      // the producer's next copy into the stage (racecheck's hazards on the wgmma kernel).
      mbar_arrive(&empty_bar[s]);
    }

    // Epilogue. Both consumers past their last MMA (and past END: no copy is in flight): the
    // pipeline buffers hold the staged [BM tokens][2 * BN columns] tile.
    consumer_bar_sync(128 * kConsumers);
    const bool present = c == 0 || has_row1;
    T* ys = reinterpret_cast<T*>(smem);
    if (present) {
      const T* bias = static_cast<const T*>(a.bias);
      const int g = lane >> 2, q = lane & 3;
      const int row = row0 + c;
#pragma unroll
      for (int h = 0; h < kMB; ++h) {
        const int n_lo = (4 * h + warp) * 16 + g;  // tile-local weight rows n_lo and n_lo + 8
        const float b_lo = bias ? to_float<T>(bias[row * BN + n_lo]) : 0.f;
        const float b_hi = bias ? to_float<T>(bias[row * BN + n_lo + 8]) : 0.f;
        T* yc = ys + c * BN + n_lo;
#pragma unroll
        for (int j = 0; j < BM / 8; ++j) {
          const int tk = 8 * j + 2 * q;
          yc[tk * kYPitch] = from_float<T>(acc[h][4 * j + 0] + b_lo);
          yc[(tk + 1) * kYPitch] = from_float<T>(acc[h][4 * j + 1] + b_lo);
          yc[tk * kYPitch + 8] = from_float<T>(acc[h][4 * j + 2] + b_hi);
          yc[(tk + 1) * kYPitch + 8] = from_float<T>(acc[h][4 * j + 3] + b_hi);
        }
      }
    }
    consumer_bar_sync(128 * kConsumers);
    T* y = static_cast<T*>(a.y);
    const int ctid = threadIdx.x - 128;
    constexpr int kChunks = 2 * BN / 8;  // 16-byte chunks of a staged token row
    for (int ch = ctid; ch < BM * kChunks; ch += 128 * kConsumers) {
      const int tk = ch / kChunks, cc = ch % kChunks;
      if (m0 + tk < a.M && (has_row1 || cc < BN / 8))
        *reinterpret_cast<uint4*>(y + (size_t)(m0 + tk) * a.ldy + (size_t)row0 * BN + cc * 8) =
            *reinterpret_cast<const uint4*>(ys + tk * kYPitch + cc * 8);
    }
  }
#endif
};

template <typename T, int BM, int BN, int BK, int ST>
__global__ void __launch_bounds__(384, 1) spmm_wgmma2_kernel(const __grid_constant__ SpmmArgs a) {
#ifdef STOICC_WGMMA
  SpmmWgmma2Rows<T, BM, BN, BK, ST>::run(a);
#endif
}

template <typename T, int BM, int BN, int BK, int ST>
int SpmmWgmma2Rows<T, BM, BN, BK, ST>::launch(const SpmmArgs& a, cudaStream_t stream) {
  const int tile_rows = a.N / BN;
  const dim3 grid((unsigned)((tile_rows + 1) / 2), (unsigned)((a.M + BM - 1) / BM));
  return launch_sm90a_prefill<T>(spmm_wgmma2_kernel<T, BM, BN, BK, ST>, kSmemBytes, kThreads, grid, BM, a, stream);
}

}  // namespace stoicc
