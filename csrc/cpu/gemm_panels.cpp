// gemm_panels.h's convolution, and fused_inception::conv_bias_relu_nhwc, the operator that
// exposes it.
//
// Why the package has its own: on an AVX2 CPU (a Zen 3 EPYC) oneDNN's convolutions at batch 1
// (49 or 196 pixels) stall on weights that are not in cache. Inside a network every block's
// weights arrive from DRAM, and one 832 -> 448 1x1 convolution at 7x7 took 277-284 us warm and
// 363-450 us cold there. This kernel streams its packed panels in order; measured side by side
// in one process it was level with oneDNN warm and 20-35% faster cold on the GoogLeNet blocks'
// 1x1 shapes (README, "Backends"). It also writes each column range to its destination with
// the bias and ReLU applied, so the block needs no ReLU copies into the output's slices.
//
// Blocking: a register tile over the whole reduction, taps outer and channels inner, so each
// output is one chain of FMAs in (tap, channel) order:
// - AVX2: 6 rows x 16 columns (12 accumulators of 8 floats; per step two loads of the panel,
//   six broadcasts of A and twelve FMAs);
// - AVX-512 (since 2026-12-04): up to 12 rows x 32 columns, two adjacent panels (24
//   accumulators of 16 floats; per step two loads, twelve broadcasts, 24 FMAs).
// A chunk's rows are cut into tiles of near-equal size (49 rows: 9 + 4 x 10 on AVX-512,
// 5 x 5 + 4 x 6 on AVX2), where the AVX2 tiles take one 7x7 image under a padded KxK as its
// inside rows and the four sides of its border ring (chunk_tiling).
// A KxK convolution is the same loop over K * K taps whose A rows are pointers to the shifted
// pixels (or to a zero row outside the image; a tile skips the taps under which all its rows are
// outside, tile_rows): an implicit GEMM, with no im2col copy. Rows are
// taken in chunks whose A rows fit in L2 (kChunkBytes), and a task is (chunk, pair of adjacent
// panels, or the last one alone): its panels (K * K * C * 64 bytes each) are read once per chunk,
// the chunk's rows once per task; on AVX-512 a chunk has at least kMinChunkRowsAvx512 rows. On
// AVX-512 CPUs the block's 1x1s and direct KxKs take this kernel, Winograd's GEMMs stay on oneDNN's
// (backends/cpu_onednn.py, own_gemm_direct), and conv_bias_relu_nhwc's first layers take the
// tiles of first_layer.cpp (since 2026-12-06).
// B is packed panels, or (since 2026-12-04) a weight in the plain layout read in place, its
// rows ldb floats apart (GemmJob::ldb, plain_weight_ldb; fused_inception/plain_layout.py),
// with a per-channel scale (BatchNorm's, unfolded) in the epilogue: no packed copy to check
// against the parameters, so no second read of the weights per forward.

#include "cpu/gemm_panels.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include "cpu/parallel.h"
#include "cpu/vector_isa.h"

#ifdef FI_X86_VECTOR
#include <immintrin.h>
#endif

namespace fused_inception {
namespace {

// Rows per tile: 12 for the AVX-512 kernel, which the AVX2 one takes as two tiles of 6.
constexpr int kRows = 12;
constexpr int kRowsAvx2 = 6;
constexpr int kMaxTaps = kMaxKernel * kMaxKernel;
constexpr int64_t kChunkBytes = 256 * 1024;
constexpr int64_t kMinChunkRowsAvx512 = 96;
constexpr int64_t kOneChunkRowsAvx2 = 54;
// Below this many channels a KxK convolution takes its kernel rows as taps (ConvInput::merged).
constexpr int64_t kMergeChannels = 16;
// A plain weight's rows are ldb floats apart, so each step of a tile reads one line of a new
// row: the AVX-512 tile prefetches the row kPrefetchRows steps ahead (x86 prefetches never
// fault, past the weight's end included). Measured on the 2-core Sapphire Rapids (2026-12-04,
// 5b's and 4b-4e's 1x1s and 5b's 3x3 and 5x5): without it the plain weight ran 0.86-0.97x the
// packed panels at batch 8 and about level cold at batch 1; with 8, 16 or 32 rows ahead
// 1.04-1.49x at batch 1 and, with 16, 0.98-1.14x at batch 8 (the packed side includes the
// content hash the plain weight does not need). The AVX2 tile prefetches the same way in the
// first tile of each task only (2-core Zen 2 EPYC, 2026-12-05, a prepared network's blocks
// interleaved in one process: against no prefetch, 5a and 5b 1.13-1.24x and the 14x14 blocks
// 1.0-1.08x at batch 1, level at batch 8; prefetching in every tile was level at batch 1 and
// 4-8% slower at batch 8).
constexpr int64_t kPrefetchRows = 16;
// The AVX2 tile's distance: 48 rows (same host, 2026-12-05, the prepared network interleaved in
// one process with a per-call switch: 5a and 5b at batch 1 0.96-0.98x the time with 32, 48 or
// 64 against 16, the other blocks level, batch 8 level with 48; without the first tile's
// prefetch 5a and 5b took 1.14x).
constexpr int64_t kPrefetchRowsAvx2 = 48;
// A panel's rows that fit a 32 KB L1 data cache (one 64-byte line each).
constexpr int64_t kL1PanelRows = 512;

// The largest NCHW plane (h * w floats) the AVX-512 tile scatters into (32-bit offsets, up to
// 15 planes): larger ones are stored one float at a time, and gemms_nchw_stores says no.
constexpr int64_t kMaxScatterPlane = int64_t{1} << 26;

// The 16 columns of the panel starting at column col0: where they go.
struct PanelStore {
  const std::vector<ColumnRange>* ranges;
  int64_t col0;
  int64_t n;
  // The single NHWC range holding all 16 columns, or nullptr (the panel straddles ranges or n,
  // or its range is NCHW).
  const ColumnRange* whole;
  bool stream = false;  // GemmJob::stream
  // The single NCHW range holding the panel's columns below n, or nullptr (also where its
  // planes are too large for the AVX-512 tile's 32-bit scatter offsets, 15 * hw).
  const ColumnRange* planes = nullptr;
};

PanelStore panel_store(const std::vector<ColumnRange>& ranges, int64_t col0, int64_t n) {
  PanelStore s{&ranges, col0, n, nullptr};
  for (const ColumnRange& r : ranges) {
    if (r.hw == 0 && r.begin <= col0 && col0 + kPanel <= r.end) s.whole = &r;
    if (r.hw > 0 && r.hw <= kMaxScatterPlane && r.begin <= col0 &&
        std::min<int64_t>(col0 + kPanel, n) <= r.end) {
      s.planes = &r;
    }
  }
  return s;
}

// Row i's 16 results (bias and ReLU applied) to their destinations, column by column.
void store_scattered(const PanelStore& s, int64_t i, const float* values) {
  for (int j = 0; j < kPanel && s.col0 + j < s.n; ++j) {
    const int64_t col = s.col0 + j;
    for (const ColumnRange& r : *s.ranges) {
      if (r.begin <= col && col < r.end) {
        if (r.hw > 0) {
          r.dst[(i / r.hw) * r.ldc + (col - r.begin) * r.hw + i % r.hw] = values[j];
        } else {
          r.dst[i * r.ldc + (col - r.begin)] = values[j];
        }
        break;
      }
    }
  }
}

void store_row(const PanelStore& s, int64_t i, const float* values) {
  if (s.whole != nullptr) {
    std::memcpy(s.whole->dst + i * s.whole->ldc + (s.col0 - s.whole->begin), values,
                sizeof(float) * kPanel);
  } else {
    store_scattered(s, i, values);
  }
}

// What tile_rows needs of x beyond its fields, made once per task (tile_geometry) rather than
// per tile: the output's size (two divisions by the stride) and each tap's offset from its
// window's corner. perf on GoogLeNet's conv1 (two threads, Zen 3, with line information) had
// put divisions (by the stride in out_h and out_w, for row i0's position, in part_of) at about a
// third of the samples outside the tiles and this loop at 7%; now row i0's position also takes
// two divisions instead of three, and the tiles' order no remainder. Measured (2026-12-07, Zen 3,
// against the geometry and the remainder per tile, row i0's two divisions on both sides,
// switched per round of calls in one process, a slow phase of the host): conv1
// 0.930-0.972x the time at batch 1 (three runs, one and two threads), 0.949x at batch 8; the
// prepared blocks at batch 1 4e 0.954x, 3a 0.941x, 5b 0.987x.
struct TileGeometry {
  int64_t oh = 0, ow = 0;
  int64_t offset[kMaxTaps] = {};
};

TileGeometry tile_geometry(const ConvInput& x) {
  TileGeometry g;
  g.oh = x.out_h();
  g.ow = x.out_w();
  // Tap t's offset from the window's top-left pixel (merged: kernel row t's first pixel).
  const int k = x.kernel;
  for (int dy = 0, t = 0; dy < k; ++dy) {
    for (int dx = 0; dx < (x.merged ? 1 : k); ++dx, ++t) g.offset[t] = (dy * x.w + dx) * x.ld;
  }
  return g;
}

// The A rows of a 12-row tile: rows[t * kRows + r] is output row i0 + r's pixel under tap t (or
// the zero row), for `count` rows (the tiles read no others); returns the taps the tiles run,
// tap_of[u] the tap of rows[u * kRows ...] (see below: taps of padding alone are dropped). Row i0's
// (image, y, x) is divided out once and stepped from row to row, and a row whose window lies inside
// the image takes its taps as fixed offsets from its window's corner: three 64-bit divisions per
// row and a bounds check per tap were a large part of the time outside the tiles (perf, batch-1
// network; conv1 at batch 1 0.94-0.99x the time, alternating processes on a Zen 2 EPYC,
// 2026-12-05).
//
// lda (nullptr: not asked): where the tile's rows are one run of pixels of one output row, each
// inside the image (or a merged first layer's, whose copy is padded), so that under every tap row r
// is row 0 plus r * lda floats, tile_rows writes only row 0 of each tap and sets *lda to that step
// (tile_avx2's UNIFORM form); else *lda = 0 and every row is written. Writing 42 row pointers
// per 6-row tile of GoogLeNet's conv1 (7 merged taps) put tile_rows at 5.5% of conv1's samples,
// against the tiles' 62% (perf, one thread, Zen 3).
int tile_rows(const ConvInput& x, const TileGeometry& g, const float* zeros, int64_t i0, int count,
              int64_t step, const float** rows, int* tap_of, int64_t* lda) {
  const int k = x.kernel, taps = x.merged ? k : k * k, pad = x.padding();
  for (int t = 0; t < taps; ++t) tap_of[t] = t;
  if (lda != nullptr) *lda = 0;
  if (count <= 0) return taps;
  if (k == 1 && x.stride == 1 && pad == 0) {  // a 1x1 convolution: x's rows
    if (lda != nullptr && (step == 1 || count == 1)) {
      rows[0] = x.data + i0 * x.ld;
      *lda = x.ld;
      return taps;
    }
    for (int r = 0; r < count; ++r) rows[r] = x.data + (i0 + r * step) * x.ld;
    return taps;
  }
  bool border = false;
  const int64_t* const offset = g.offset;
  const int64_t oh = g.oh, ow = g.ow;
  int64_t b = 0, oy = 0, ox = 0;
  const auto locate = [&](int64_t i) {  // two divisions: i = (b * oh + oy) * ow + ox
    const int64_t rows_done = i / ow;
    ox = i - rows_done * ow;
    b = rows_done / oh;
    oy = rows_done - b * oh;
  };
  locate(i0);
  if (lda != nullptr && (step == 1 || count == 1) && ox + count <= ow) {
    const int64_t y0 = oy * x.stride - pad, x0 = ox * x.stride - pad;
    const int64_t x_last = (ox + count - 1) * x.stride - pad;
    if (x.merged || (y0 >= 0 && y0 + k <= x.h && x0 >= 0 && x_last + k <= x.w)) {
      const float* corner = x.data + ((b * x.h + y0) * x.w + x0) * x.ld;
      for (int t = 0; t < taps; ++t) rows[t * kRows] = corner + offset[t];
      *lda = x.stride * x.ld;
      return taps;
    }
  }
  for (int r = 0; r < count; ++r) {
    const int64_t y0 = oy * x.stride - pad, x0 = ox * x.stride - pad;
    if (x.merged || (y0 >= 0 && y0 + k <= x.h && x0 >= 0 && x0 + k <= x.w)) {
      const float* corner = x.data + ((b * x.h + y0) * x.w + x0) * x.ld;
      for (int t = 0; t < taps; ++t) rows[t * kRows + r] = corner + offset[t];
    } else {
      border = true;
      for (int t = 0; t < taps; ++t) {
        const int64_t y = y0 + t / k, xx = x0 + t % k;
        const bool inside = y >= 0 && y < x.h && xx >= 0 && xx < x.w;
        rows[t * kRows + r] = inside ? x.data + ((b * x.h + y) * x.w + xx) * x.ld : zeros;
      }
    }
    if (step != 1) {  // a column of a ring's side (chunk_tiling): the next row's position
      locate(i0 + (r + 1) * step);
    } else if (++ox == ow) {
      ox = 0;
      if (++oy == oh) {
        oy = 0;
        ++b;
      }
    }
  }
  if (!border) return taps;
  // The taps under which every row of the tile is padding are dropped, the others moved down in
  // order: their products are zeros, and a sum that starts at +0 never is -0, so adding them
  // changed no bit (a weight of Inf or NaN made 0 x Inf = NaN there, as it still does where a
  // tile keeps the tap for its other rows; torch's convolution skips padding). Counted by the
  // kernel's own tiles (conv_tile_taps): GoogLeNet's 7x7 3x3s at batch 1 ran 408 of 441 (pixel,
  // tap) pairs on AVX2 in row-major runs, 369 since they take the image's ring (chunk_tiling;
  // the AVX-512 tiles of 9-10 rows start mid-row: 441), its 7x7 5x5s 1059, now 935 (AVX-512:
  // 1121) of 1225 and the 14x14 ones 4528 (4570) of 4900; 361, 841 and 4096 read the image.
  // Measured (the row-major runs) on a 2-core Zen 3 EPYC (AVX2; 2026-12-07, the benchmark's
  // prepared blocks, switched per round of calls and interleaved in one process): 5b at batch 1
  // 0.944-0.949x the time, 5a 0.961-0.974x, 4e 0.981x, 4b 0.991x, 3a 1.009x; the network at batch 1
  // 0.994x and 1.006x (level), at batch 8 5b 1.008x, 4e 0.989x, the network 0.980x.
  int kept = 0;
  for (int t = 0; t < taps; ++t) {
    const float* const* tr = rows + t * kRows;
    if (std::all_of(tr, tr + count, [zeros](const float* a) { return a == zeros; })) continue;
    if (kept != t) std::copy(tr, tr + count, rows + kept * kRows);
    tap_of[kept++] = t;
  }
  return kept;
}

// A tile's row R under one tap (`tr`: the tap's rows from tile_rows), if the tile has that
// row: tile_rows writes only the tile's `count` rows.
template <int R, int ROWS>
inline const float* tile_row(const float* const* tr) {
  if constexpr (R < ROWS) {
    return tr[R];
  } else {
    return nullptr;
  }
}

// relu(v), NaN kept: the sum is max's second operand, which x86 returns when either is NaN.
inline float relu_keep_nan(float v) { return std::isnan(v) ? v : std::max(0.f, v); }

// One tile of one panel: the plain loop, FMAs in (tap, channel) order as the vector kernel.
void tile_plain(const float* const* rows, const int* tap_of, int taps, int64_t c,
                const float* panel, int64_t ldb, const float* scale16, const float* bias16,
                bool relu, const PanelStore& s, int64_t i0, int count, int64_t step) {
  for (int r = 0; r < count; ++r) {
    float acc[kPanel] = {};
    for (int t = 0; t < taps; ++t) {
      const float* a = rows[t * kRows + r];
      const float* b = panel + tap_of[t] * c * ldb;
      for (int64_t k = 0; k < c; ++k) {
        for (int j = 0; j < kPanel; ++j) acc[j] = std::fma(a[k], b[k * ldb + j], acc[j]);
      }
    }
    for (int j = 0; j < kPanel; ++j) {
      acc[j] = scale16 != nullptr ? std::fma(acc[j], scale16[j], bias16[j]) : acc[j] + bias16[j];
      if (relu) acc[j] = relu_keep_nan(acc[j]);
    }
    store_row(s, i0 + r * step, acc);
  }
}

#ifdef FI_X86_VECTOR
// Row R of a tile, if the tile has it: its A value times the panel's two vectors b0 and b1.
#define FI_TILE_ROW_AT(R, P, C0, C1)         \
  if constexpr (ROWS > R) {                  \
    const __m256 v = _mm256_broadcast_ss(P); \
    C0 = _mm256_fmadd_ps(v, b0, C0);         \
    C1 = _mm256_fmadd_ps(v, b1, C1);         \
  }
#define FI_TILE_ROW(R, A, C0, C1) FI_TILE_ROW_AT(R, (A) + k, C0, C1)

// Lines of a panel the thread reads in its next task, prefetched into L2 by a tile as it runs,
// one per step of its loop: `rows` lines from p, `stride` bytes apart (see gemms).
struct Ahead {
  const char* p = nullptr;
  int64_t stride = 0, rows = 0;
};

// One tile of ROWS rows (1..6): ROWS x 16 accumulators in registers over every tap and channel.
// Named registers, not an array: g++ kept an array of __m256 on the stack, storing all twelve
// every step (2x slower, measured). AHEAD: prefetch `ahead`'s lines as well.
// Before its loop the tile prefetches its output lines for writing (PREFETCHW), so that the
// read-for-ownership of each line (inside a network the outputs are cold: the blocks between
// two uses of a buffer stream megabytes of weights) overlaps the loop instead of stalling the
// stores behind it: perf had put those stalls on the stores after each tile. Measured on a
// 2-core Zen 2 EPYC (2026-12-05, the prepared network, interleaved in one process with a
// per-call switch, two runs each): batch 1 0.96x the time (conv1 0.91-0.93x, 4a-4e 0.93-0.94x),
// batch 8 0.95x (3b 0.91-0.92x). Non-temporal stores (GemmJob::stream) need no such read. (x86
// CPUs that do not list PREFETCHW, Intel's Haswell among them, run its encoding as a no-op.)
// UNIFORM: under each tap t the tile's row r is rows[t * kRows] + r * lda (tile_rows' lda), as
// in tile_avx512's form for 1x1s: the tile makes its own row pointers, and tile_rows writes one
// per tap instead of one per tap and row. Measured on a 2-core Zen 3 EPYC (2026-12-07, switched
// per round of calls in one process, same bits): GoogLeNet's conv1 (7 merged taps of 21 floats)
// 0.943-0.958x the time at batch 1 on one and two threads (five runs), 0.950x at batch 8; the
// prepared blocks at batch 1 level (4a 0.93-1.03x in five runs, 3b, 4e, 5a and 5b 0.94-1.02x), the
// network at batch 1 level (1.008x, within the host's noise).
template <int ROWS, bool PREFETCH, bool AHEAD, bool UNIFORM>
__attribute__((target("avx2,fma,prfchw"))) void tile_avx2(
    const float* const* rows, const int* tap_of, int taps, int64_t c, const float* panel,
    int64_t ldb, const float* scale16, const float* bias16, bool relu, const PanelStore& s,
    int64_t i0, int64_t step, const Ahead& ahead, int64_t lda) {
  static_assert(ROWS >= 1 && ROWS <= kRowsAvx2);
  const char* pf = ahead.p;
  const char* const pf_end = ahead.p + ahead.rows * ahead.stride;
  if (s.whole != nullptr && !s.stream) {  // the tile's output lines, for writing (PREFETCHW)
    for (int r = 0; r < ROWS; ++r) {
      __builtin_prefetch(s.whole->dst + (i0 + r * step) * s.whole->ldc + (s.col0 - s.whole->begin),
                         1, 3);
    }
  }
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int t = 0; UNIFORM && t < taps; ++t) {
    // Rows 0 and 3 by two pointers that step one float, rows 1, 2, 4 and 5 at + lda and
    // + 2 lda from them (two index registers), as in tile_avx512's UNIFORM loop: four general
    // registers fewer than six row pointers, so that the loop that also prefetches the next
    // task's panels (AHEAD) keeps everything in registers, where with six pointers g++ spilled
    // 14-16 values per two steps (objdump). Against every row's pointer from tile_rows, the
    // prepared blocks at batch 1 were level (Zen 3, switched per round of calls in one process,
    // medians: 0.95-1.01x the time; the operator alone on one thread 0.99-1.02x).
    const float* q0 = rows[t * kRows];
    const float* q3 = ROWS > 3 ? q0 + 3 * lda : q0;
    const int64_t l1 = lda, l2 = 2 * lda;
    const float* b = panel + tap_of[t] * c * ldb;
    for (int64_t k = 0; k < c; ++k) {
      if constexpr (PREFETCH) {
        _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchRowsAvx2 * ldb), _MM_HINT_T0);
      }
      if constexpr (AHEAD) {
        if (pf < pf_end) {
          _mm_prefetch(pf, _MM_HINT_T1);
          pf += ahead.stride;
        }
      }
      const __m256 b0 = _mm256_loadu_ps(b);
      const __m256 b1 = _mm256_loadu_ps(b + 8);
      FI_TILE_ROW_AT(0, q0, c00, c01)
      FI_TILE_ROW_AT(1, q0 + l1, c10, c11)
      FI_TILE_ROW_AT(2, q0 + l2, c20, c21)
      FI_TILE_ROW_AT(3, q3, c30, c31)
      FI_TILE_ROW_AT(4, q3 + l1, c40, c41)
      FI_TILE_ROW_AT(5, q3 + l2, c50, c51)
      ++q0;
      ++q3;
      b += ldb;
    }
  }
  for (int t = 0; !UNIFORM && t < taps; ++t) {
    const float* const* tr = rows + t * kRows;
    const float *a0 = tile_row<0, ROWS>(tr), *a1 = tile_row<1, ROWS>(tr),
                *a2 = tile_row<2, ROWS>(tr), *a3 = tile_row<3, ROWS>(tr),
                *a4 = tile_row<4, ROWS>(tr), *a5 = tile_row<5, ROWS>(tr);
    const float* b = panel + tap_of[t] * c * ldb;
    for (int64_t k = 0; k < c; ++k) {
      if constexpr (PREFETCH) {
        _mm_prefetch(reinterpret_cast<const char*>(b + (k + kPrefetchRowsAvx2) * ldb), _MM_HINT_T0);
      }
      if constexpr (AHEAD) {
        if (pf < pf_end) {
          _mm_prefetch(pf, _MM_HINT_T1);
          pf += ahead.stride;
        }
      }
      const __m256 b0 = _mm256_loadu_ps(b + k * ldb);
      const __m256 b1 = _mm256_loadu_ps(b + k * ldb + 8);
      FI_TILE_ROW(0, a0, c00, c01)
      FI_TILE_ROW(1, a1, c10, c11)
      FI_TILE_ROW(2, a2, c20, c21)
      FI_TILE_ROW(3, a3, c30, c31)
      FI_TILE_ROW(4, a4, c40, c41)
      FI_TILE_ROW(5, a5, c50, c51)
    }
  }
  if constexpr (AHEAD) {  // lines left where taps were dropped (tile_rows)
    for (; pf < pf_end; pf += ahead.stride) _mm_prefetch(pf, _MM_HINT_T1);
  }
  const __m256 acc[kRowsAvx2][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                                    {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 bias0 = _mm256_loadu_ps(bias16), bias1 = _mm256_loadu_ps(bias16 + 8);
  const __m256 zero = _mm256_setzero_ps();
  for (int r = 0; r < ROWS; ++r) {
    __m256 y0, y1;
    if (scale16 != nullptr) {
      y0 = _mm256_fmadd_ps(acc[r][0], _mm256_loadu_ps(scale16), bias0);
      y1 = _mm256_fmadd_ps(acc[r][1], _mm256_loadu_ps(scale16 + 8), bias1);
    } else {
      y0 = _mm256_add_ps(acc[r][0], bias0);
      y1 = _mm256_add_ps(acc[r][1], bias1);
    }
    if (relu) {  // max(0, v) returns v, its second operand, when v is NaN: torch's ReLU keeps it
      y0 = _mm256_max_ps(zero, y0);
      y1 = _mm256_max_ps(zero, y1);
    }
    if (s.whole != nullptr) {
      float* dst = s.whole->dst + (i0 + r * step) * s.whole->ldc + (s.col0 - s.whole->begin);
      if (s.stream && (reinterpret_cast<uintptr_t>(dst) & 31) == 0) {
        _mm256_stream_ps(dst, y0);
        _mm256_stream_ps(dst + 8, y1);
      } else {
        _mm256_storeu_ps(dst, y0);
        _mm256_storeu_ps(dst + 8, y1);
      }
    } else {
      float values[kPanel];
      _mm256_storeu_ps(values, y0);
      _mm256_storeu_ps(values + 8, y1);
      store_scattered(s, i0 + r * step, values);
    }
  }
}

// tile_avx2 for `count` rows (1..6: a full tile, or one of 1-5 rows at a chunk's end).
template <bool PREFETCH, bool AHEAD, bool UNIFORM>
auto tile_avx2_for(int count) {
  switch (count) {
    case 6:
      return &tile_avx2<6, PREFETCH, AHEAD, UNIFORM>;
    case 5:
      return &tile_avx2<5, PREFETCH, AHEAD, UNIFORM>;
    case 4:
      return &tile_avx2<4, PREFETCH, AHEAD, UNIFORM>;
    case 3:
      return &tile_avx2<3, PREFETCH, AHEAD, UNIFORM>;
    case 2:
      return &tile_avx2<2, PREFETCH, AHEAD, UNIFORM>;
    default:
      return &tile_avx2<1, PREFETCH, AHEAD, UNIFORM>;
  }
}

template <bool UNIFORM>
auto tile_avx2_for(bool prefetch, bool ahead, int count) {
  if (ahead) {
    return prefetch ? tile_avx2_for<true, true, UNIFORM>(count)
                    : tile_avx2_for<false, true, UNIFORM>(count);
  }
  return prefetch ? tile_avx2_for<true, false, UNIFORM>(count)
                  : tile_avx2_for<false, false, UNIFORM>(count);
}
#undef FI_TILE_ROW
#undef FI_TILE_ROW_AT

// Row R of an AVX-512 tile, if the tile has it: its A value times the PANELS panels' vectors.
#define FI_TILE_ROW512(R, A, C0, C1)    \
  if constexpr (ROWS > R) {             \
    const __m512 v = _mm512_set1_ps(A); \
    C0 = _mm512_fmadd_ps(v, b0, C0);    \
    if constexpr (PANELS > 1) {         \
      C1 = _mm512_fmadd_ps(v, b1, C1);  \
    }                                   \
  }

// One tile of ROWS rows (1..12) and PANELS (1 or 2) adjacent panels, `stride` floats apart: one
// 16-float vector per row and panel, up to 24 accumulators, over every tap and channel. Per
// step of a full tile: two loads of the panels, twelve broadcasts of A and 24 FMAs (the AVX2
// tile: two loads, six broadcasts, twelve FMAs of half the width). bias: 16 * PANELS floats;
// s: PANELS stores.
template <int ROWS, int PANELS, bool AHEAD, bool UNIFORM>
__attribute__((target("avx512f,prfchw"))) void tile_avx512(
    const float* const* rows, const int* tap_of, int taps, int64_t c, const float* panel,
    int64_t ldb, int64_t stride, const float* scale, const float* bias, bool relu,
    const PanelStore* s, int64_t i0, const Ahead* ahead, int64_t lda) {
  static_assert(ROWS >= 1 && ROWS <= kRows && (PANELS == 1 || PANELS == 2));
  // The next task's lines (Ahead): both panels' rows from `pf`, `pf_gap` bytes apart (0: one
  // panel), `pf_step` bytes from one row to the next, `pf_left` rows still to prefetch.
  const char* pf = nullptr;
  int64_t pf_left = 0, pf_step = 0, pf_gap = 0;
  if constexpr (AHEAD) {
    pf = ahead[0].p;
    pf_left = ahead[0].rows;
    pf_step = ahead[0].stride;
    pf_gap = ahead[1].rows > 0 ? ahead[1].p - ahead[0].p : 0;
  }
  __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0,
         c2_1 = c0_0, c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0, c5_1 = c0_0,
         c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0, c8_0 = c0_0, c8_1 = c0_0, c9_0 = c0_0,
         c9_1 = c0_0, c10_0 = c0_0, c10_1 = c0_0, c11_0 = c0_0, c11_1 = c0_0;
  // The tile's output lines prefetched for writing first (PREFETCHW), as tile_avx2 does: the
  // read for ownership of each line overlaps the loop rather than stalling the stores after
  // it. Measured on the 2-core Emerald Rapids Xeon (2026-12-06, switched per call and
  // interleaved in one process): the prepared network at batch 1 0.96-0.98x the time (four
  // runs), at batch 8 0.98-1.04x (three); the prepared blocks 0.95-0.99x (3a at batch 8 0.954x).
  for (int q = 0; q < PANELS; ++q) {
    if (s[q].whole == nullptr) continue;
    for (int r = 0; r < ROWS; ++r) {
      __builtin_prefetch(
          s[q].whole->dst + (i0 + r) * s[q].whole->ldc + (s[q].col0 - s[q].whole->begin), 1, 3);
    }
  }
  // The c steps of one tap: those that also prefetch a line of each of the next task's panels
  // (Ahead) while pf_left lasts, then the others (see below, "The steps split in two loops").
#define FI_STEPS512(STEP)                                 \
  {                                                       \
    int64_t k = 0;                                        \
    if constexpr (AHEAD) {                                \
      const int64_t with = std::min<int64_t>(c, pf_left); \
      pf_left -= with;                                    \
      for (; k < with; ++k) {                             \
        _mm_prefetch(pf, _MM_HINT_T1);                    \
        _mm_prefetch(pf + pf_gap, _MM_HINT_T1);           \
        pf += pf_step;                                    \
        STEP                                              \
      }                                                   \
    }                                                     \
    for (; k < c; ++k) STEP                               \
  }
  if constexpr (UNIFORM) {
    // A 1x1's rows, lda floats apart from rows[0]: rows 0, 3, 6 and 9 by four pointers that
    // step one float, the rows between at + lda and + 2 lda (two index registers), so that the
    // loop keeps every A address in general registers. With twelve row pointers (the general
    // loop below) the compiler still moved 2-3 of them through vector registers each step
    // (5-6 in the steps that prefetch ahead; objdump), on the FMA ports; here none. Measured on
    // the 2-core Emerald Rapids Xeon (2026-12-06, the benchmark's prepared blocks on
    // channels_last input, switched per call and interleaved in one process): batch 1
    // 0.94-0.99x the time (4e 0.941x, 4b 0.951x, 4c 0.955x, 5a 0.991x), batch 8 0.97-0.99x.
    // Tiles of up to 14 rows (28 accumulators), tried the same way: 0.95-1.02x at batch 1 and
    // 1.00-1.06x at batch 8, not kept.
    const float* q0 = rows[0];
    const float* q3 = ROWS > 3 ? q0 + 3 * lda : q0;
    const float* q6 = ROWS > 6 ? q0 + 6 * lda : q0;
    const float* q9 = ROWS > 9 ? q0 + 9 * lda : q0;
    const int64_t l1 = lda, l2 = 2 * lda;
    const float* b = panel;
    const float* bq = b + (PANELS > 1 ? stride : 0);
#define FI_STEP512U                                                                       \
  {                                                                                       \
    _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchRows * ldb), _MM_HINT_T0);    \
    if constexpr (PANELS > 1) {                                                           \
      _mm_prefetch(reinterpret_cast<const char*>(bq + kPrefetchRows * ldb), _MM_HINT_T0); \
    }                                                                                     \
    const __m512 b0 = _mm512_loadu_ps(b);                                                 \
    __m512 b1 = b0;                                                                       \
    if constexpr (PANELS > 1) b1 = _mm512_loadu_ps(bq);                                   \
    FI_TILE_ROW512(0, q0[0], c0_0, c0_1)                                                  \
    FI_TILE_ROW512(1, q0[l1], c1_0, c1_1)                                                 \
    FI_TILE_ROW512(2, q0[l2], c2_0, c2_1)                                                 \
    FI_TILE_ROW512(3, q3[0], c3_0, c3_1)                                                  \
    FI_TILE_ROW512(4, q3[l1], c4_0, c4_1)                                                 \
    FI_TILE_ROW512(5, q3[l2], c5_0, c5_1)                                                 \
    FI_TILE_ROW512(6, q6[0], c6_0, c6_1)                                                  \
    FI_TILE_ROW512(7, q6[l1], c7_0, c7_1)                                                 \
    FI_TILE_ROW512(8, q6[l2], c8_0, c8_1)                                                 \
    FI_TILE_ROW512(9, q9[0], c9_0, c9_1)                                                  \
    FI_TILE_ROW512(10, q9[l1], c10_0, c10_1)                                              \
    FI_TILE_ROW512(11, q9[l2], c11_0, c11_1)                                              \
    ++q0, ++q3, ++q6, ++q9;                                                               \
    b += ldb, bq += ldb;                                                                  \
  }
    FI_STEPS512(FI_STEP512U)
#undef FI_STEP512U
  }
  for (int t = 0; t < (UNIFORM ? 0 : taps); ++t) {  // the rows as tile_rows gives them
    const float* const* tr = rows + t * kRows;
    const float *a0 = tile_row<0, ROWS>(tr), *a1 = tile_row<1, ROWS>(tr),
                *a2 = tile_row<2, ROWS>(tr), *a3 = tile_row<3, ROWS>(tr),
                *a4 = tile_row<4, ROWS>(tr), *a5 = tile_row<5, ROWS>(tr),
                *a6 = tile_row<6, ROWS>(tr), *a7 = tile_row<7, ROWS>(tr),
                *a8 = tile_row<8, ROWS>(tr), *a9 = tile_row<9, ROWS>(tr),
                *a10 = tile_row<10, ROWS>(tr), *a11 = tile_row<11, ROWS>(tr);
    const float* b = panel + tap_of[t] * c * ldb;
    const float* bq = b + (PANELS > 1 ? stride : 0);  // the second panel's
    // One step: the rows kPrefetchRows ahead of both panels into L1 (a plain weight's next
    // rows are ldb floats apart; for packed panels, lines the hardware would fetch anyway),
    // then the panels' vectors times each row's A value.
#define FI_STEP512                                                                              \
  {                                                                                             \
    _mm_prefetch(reinterpret_cast<const char*>(b + (k + kPrefetchRows) * ldb), _MM_HINT_T0);    \
    if constexpr (PANELS > 1) {                                                                 \
      _mm_prefetch(reinterpret_cast<const char*>(bq + (k + kPrefetchRows) * ldb), _MM_HINT_T0); \
    }                                                                                           \
    const __m512 b0 = _mm512_loadu_ps(b + k * ldb);                                             \
    __m512 b1 = b0;                                                                             \
    if constexpr (PANELS > 1) b1 = _mm512_loadu_ps(bq + k * ldb);                               \
    FI_TILE_ROW512(0, a0[k], c0_0, c0_1)                                                        \
    FI_TILE_ROW512(1, a1[k], c1_0, c1_1)                                                        \
    FI_TILE_ROW512(2, a2[k], c2_0, c2_1)                                                        \
    FI_TILE_ROW512(3, a3[k], c3_0, c3_1)                                                        \
    FI_TILE_ROW512(4, a4[k], c4_0, c4_1)                                                        \
    FI_TILE_ROW512(5, a5[k], c5_0, c5_1)                                                        \
    FI_TILE_ROW512(6, a6[k], c6_0, c6_1)                                                        \
    FI_TILE_ROW512(7, a7[k], c7_0, c7_1)                                                        \
    FI_TILE_ROW512(8, a8[k], c8_0, c8_1)                                                        \
    FI_TILE_ROW512(9, a9[k], c9_0, c9_1)                                                        \
    FI_TILE_ROW512(10, a10[k], c10_0, c10_1)                                                    \
    FI_TILE_ROW512(11, a11[k], c11_0, c11_1)                                                    \
  }
    // The steps split in two loops, those that also prefetch a line of the next task's panels
    // into L2 and those that do not, with no condition inside either: the conditions per step
    // (a plain weight or not, prefetch rows left) had kept the tile's row pointers from the
    // general registers (the compiler moved them through vector registers each step, taking
    // issue slots of the FMA port). Measured on the 2-core Emerald Rapids Xeon (2026-12-06,
    // conv_bias_relu_nhwc on a plain weight, alternating per call in one process): one thread
    // 1.03-1.12x the multiply-adds per second on the 7x7 and 14x14 batch-1 shapes; the prepared
    // blocks at batch 1, interleaved with eager: 0.95-1.01x the time (5a, 5b 0.96x).
    FI_STEPS512(FI_STEP512)
#undef FI_STEP512
  }
#undef FI_STEPS512
  if constexpr (AHEAD) {  // lines left where taps were dropped (tile_rows)
    for (; pf_left > 0; --pf_left, pf += pf_step) {
      _mm_prefetch(pf, _MM_HINT_T1);
      _mm_prefetch(pf + pf_gap, _MM_HINT_T1);
    }
  }
  const __m512 acc[kRows][2] = {{c0_0, c0_1}, {c1_0, c1_1}, {c2_0, c2_1},   {c3_0, c3_1},
                                {c4_0, c4_1}, {c5_0, c5_1}, {c6_0, c6_1},   {c7_0, c7_1},
                                {c8_0, c8_1}, {c9_0, c9_1}, {c10_0, c10_1}, {c11_0, c11_1}};
  const __m512 zero = _mm512_setzero_ps();
  for (int q = 0; q < PANELS; ++q) {
    const __m512 bias_q = _mm512_loadu_ps(bias + q * kPanel);
    const __m512 scale_q = scale != nullptr ? _mm512_loadu_ps(scale + q * kPanel) : zero;
    for (int r = 0; r < ROWS; ++r) {
      __m512 y = scale != nullptr ? _mm512_fmadd_ps(acc[r][q], scale_q, bias_q)
                                  : _mm512_add_ps(acc[r][q], bias_q);
      // max(0, y), NaN kept as in tile_avx2 (the masked form: GCC 12's _mm512_max_ps warns
      // about its undefined pass-through operand)
      if (relu) y = _mm512_maskz_max_ps(static_cast<__mmask16>(0xFFFF), zero, y);
      if (s[q].planes != nullptr) {  // row i0 + r's channels to their planes (NCHW)
        const ColumnRange& pr = *s[q].planes;
        const int64_t i = i0 + r;
        const int cols = static_cast<int>(std::min<int64_t>(kPanel, s[q].n - s[q].col0));
        const __m512i planes = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32(static_cast<int>(pr.hw)));
        _mm512_mask_i32scatter_ps(
            pr.dst + (i / pr.hw) * pr.ldc + (s[q].col0 - pr.begin) * pr.hw + i % pr.hw,
            static_cast<__mmask16>((1u << cols) - 1), planes, y, 4);
      } else if (s[q].whole != nullptr) {
        _mm512_storeu_ps(
            s[q].whole->dst + (i0 + r) * s[q].whole->ldc + (s[q].col0 - s[q].whole->begin), y);
      } else {
        float values[kPanel];
        _mm512_storeu_ps(values, y);
        store_scattered(s[q], i0 + r, values);
      }
    }
  }
}

using TileAvx512 = void (*)(const float* const*, const int*, int, int64_t, const float*, int64_t,
                            int64_t, const float*, const float*, bool, const PanelStore*, int64_t,
                            const Ahead*, int64_t);

// tile_avx512<ROWS, PANELS, AHEAD, UNIFORM> for ROWS = 1 .. kRows, indexed by ROWS - 1.
template <int PANELS, bool AHEAD, bool UNIFORM, int... R>
constexpr std::array<TileAvx512, sizeof...(R)> avx512_tiles(std::integer_sequence<int, R...>) {
  return {&tile_avx512<R + 1, PANELS, AHEAD, UNIFORM>...};
}

// A tile of `count` rows (1..12); `ahead` (two, or nullptr): the next task's lines to prefetch
// into L2, one of each per step (see gemms). lda > 0: the rows are rows[0] + r * lda, a 1x1
// over stride-1 pixels (tile_avx512's UNIFORM loop), else rows as tile_rows gives them.
template <int PANELS>
void tile_vector512(const float* const* rows, const int* tap_of, int taps, int64_t c,
                    const float* panel, int64_t ldb, int64_t stride, const float* scale,
                    const float* bias, bool relu, const PanelStore* s, int64_t i0, int count,
                    const Ahead* ahead, int64_t lda) {
  static constexpr auto kTiles =
      avx512_tiles<PANELS, false, false>(std::make_integer_sequence<int, kRows>{});
  static constexpr auto kTilesAhead =
      avx512_tiles<PANELS, true, false>(std::make_integer_sequence<int, kRows>{});
  static constexpr auto kUniform =
      avx512_tiles<PANELS, false, true>(std::make_integer_sequence<int, kRows>{});
  static constexpr auto kUniformAhead =
      avx512_tiles<PANELS, true, true>(std::make_integer_sequence<int, kRows>{});
  const auto& tiles = lda > 0 ? (ahead != nullptr ? kUniformAhead : kUniform)
                              : (ahead != nullptr ? kTilesAhead : kTiles);
  tiles[count - 1](rows, tap_of, taps, c, panel, ldb, stride, scale, bias, relu, s, i0, ahead, lda);
}
#undef FI_TILE_ROW512
#endif

bool vectorised() {
#ifdef FI_X86_VECTOR
  return vector_isa() != VectorIsa::kNone;
#else
  return false;
#endif
}

// x [N, C, H, W] whose pixels are rows of C contiguous channels, `ld` floats apart (a
// channels_last tensor or a channel slice of one): ld, else -1.
int64_t pixel_rows(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  if (c > 1 && x.stride(1) != 1) return -1;
  // The pixel stride from the first pixel dimension longer than 1 (any, if none is).
  const int64_t ld = w > 1 ? x.stride(3) : h > 1 ? x.stride(2) : n > 1 ? x.stride(0) : c;
  if (ld < c) return -1;
  if ((h > 1 && x.stride(2) != w * ld) || (n > 1 && x.stride(0) != h * w * ld)) return -1;
  return ld;
}

// Outputs larger than this are written with non-temporal stores (GemmJob::stream), for
// conv_bias_relu_nhwc's stream_bytes -1: 16 MB, the last-level cache an AVX2 core shares on a
// Zen 2 or Zen 3 CCX (the C library's _SC_LEVEL3_CACHE_SIZE says 256 MB in the KVM guest here:
// the socket's, not what one core can use). Measured on a 2-core Zen 2 EPYC (2026-12-05,
// alternating processes, env-switched build): GoogLeNet's conv1 at batch 8 (a 25.7 MB output)
// 14.5-14.8 ms against 16.1-16.4 inside the prepared network, the max-pool that reads it
// level, the network 0.95-1.00x the time; at batch 1 (3.2 MB) nothing changes.
constexpr int64_t kStreamBytes = int64_t{16} << 20;

// x [N, C, H, W] (float32, any strides) as a zero-padded NHWC buffer [N, H + 2 pad, W + 2 pad,
// C], each row written once (its zeros, then its pixels) and the rows spread over the threads.
// Before, as at::zeros and a permuted copy_, GoogLeNet's image took 0.07 ms warm and 0.19 ms
// after a cache flush at batch 1; this way conv1 inside the prepared network took 0.93-0.94x
// the time at batch 1 and 0.97-0.98x at batch 8 (Zen 2 EPYC, alternating processes,
// 2026-12-05).
at::Tensor padded_nhwc(const at::Tensor& x, int64_t pad) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad, row_len = wp * c;
  at::Tensor out = at::empty({n, hp, wp, c}, x.options());
  if (out.numel() == 0) return out;
  const float* src = x.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  const int64_t s0 = x.stride(0), s1 = x.stride(1), s2 = x.stride(2), s3 = x.stride(3);
  const int64_t grain = std::max<int64_t>(1, 32768 / row_len);
  parallel_for(0, n * hp, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* d = dst + row * row_len;
      const int64_t b = row / hp, y = row % hp - pad;
      if (y < 0 || y >= h) {
        std::fill(d, d + row_len, 0.f);
        continue;
      }
      std::fill(d, d + pad * c, 0.f);
      std::fill(d + (pad + w) * c, d + row_len, 0.f);
      const float* s = src + b * s0 + y * s2;
      float* o = d + pad * c;
      if (c == 3 && s3 == 1) {  // an NCHW image: three channel rows interleaved
        const float *r0 = s, *r1 = s + s1, *r2 = s + 2 * s1;
        for (int64_t i = 0; i < w; ++i) {
          o[3 * i] = r0[i];
          o[3 * i + 1] = r1[i];
          o[3 * i + 2] = r2[i];
        }
      } else {
        for (int64_t i = 0; i < w; ++i) {
          for (int64_t ch = 0; ch < c; ++ch) o[i * c + ch] = s[ch * s1 + i * s3];
        }
      }
    }
  });
  return out;
}

at::Tensor conv_bias_relu_nhwc_cpu(const at::Tensor& x, const at::Tensor& panels,
                                   const at::Tensor& bias, int64_t stride, int64_t padding,
                                   const std::optional<at::Tensor>& scale, int64_t stream_bytes) {
  constexpr const char* op = "conv_bias_relu_nhwc";
  TORCH_CHECK_VALUE(x.dim() == 4 && (panels.dim() == 3 || panels.dim() == 4) && bias.dim() == 1, op,
                    ": expected x [N, C, H, W], panels [P, K * K * C, 16] or a weight [Cout, C, K, "
                    "K], and bias [Cout], got ",
                    x.dim(), "-D, ", panels.dim(), "-D and ", bias.dim(), "-D");
  for (const at::Tensor* t : {&x, &panels, &bias}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, op,
                ": expected float32 CPU tensors, got ", t->scalar_type(), " on ", t->device());
  }
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t c_out = bias.size(0), n_panels = (c_out + kPanel - 1) / kPanel;
  int kernel = 0;
  int64_t ldb = 0;
  if (panels.dim() == 4) {
    ldb = plain_weight_ldb(panels);
    TORCH_CHECK_VALUE(ldb > 0 && panels.size(0) == c_out && panels.size(1) == c, op,
                      ": a weight must be [", c_out, ", ", c,
                      ", K, K] (K odd, at most 7) with output channels contiguous, rows of at "
                      "least ",
                      n_panels * kPanel, " readable floats (plain_weight_ldb), got sizes ",
                      panels.sizes(), " and strides ", panels.strides());
    kernel = static_cast<int>(panels.size(3));
  } else {
    kernel = panels_kernel(panels.size(1), c);
    TORCH_CHECK_VALUE(kernel > 0 && panels.size(0) == n_panels && panels.size(2) == kPanel, op,
                      ": panels must be [", n_panels, ", K * K * ", c, ", 16] (K odd, at most ",
                      kMaxKernel, ") for ", c_out, " outputs from ", c, " channels, got ",
                      panels.sizes());
  }
  const at::Tensor sc = channel_scale(op, "scale", scale, c_out);
  const int64_t pad = padding < 0 ? kernel / 2 : padding;
  TORCH_CHECK_VALUE(stride >= 1 && stride <= 8 && pad <= kernel / 2, op,
                    ": stride must be 1 to 8 and padding at most K // 2 = ", kernel / 2, ", got ",
                    stride, " and ", padding);
  // Few channels (a first layer: 3): x, in any layout, is copied into a zero-padded NHWC buffer
  // below, whose kernel rows are whole taps; otherwise x is read in place.
  const bool merge = kernel > 1 && c < kMergeChannels;
  const int64_t ld = merge ? c : pixel_rows(x);
  TORCH_CHECK_VALUE(ld >= 0, op,
                    ": x's pixels must be rows of contiguous channels (channels_last), got "
                    "strides ",
                    x.strides());
  ConvInput in{x.const_data_ptr<float>(), ld, n, h, w, c, kernel, static_cast<int>(stride),
               static_cast<int>(pad)};
  const int64_t oh = in.out_h(), ow = in.out_w();
  TORCH_CHECK_VALUE(oh >= 0 && ow >= 0, op, ": a ", kernel, "x", kernel, " kernel does not fit a ",
                    h, "x", w, " image with padding ", pad);
  at::Tensor out =
      at::empty({n, c_out, oh, ow}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) return out;
  at::Tensor padded;
  if (merge) {
    padded = padded_nhwc(x, pad);
    in = ConvInput{padded.const_data_ptr<float>(), c, n,   h + 2 * pad, w + 2 * pad, c, kernel,
                   static_cast<int>(stride),       0, true};
  }
  const at::Tensor p = ldb > 0 ? panels : panels.contiguous(), b = bias.contiguous();
  GemmJob job{in,
              p.const_data_ptr<float>(),
              c_out,
              b.const_data_ptr<float>(),
              {ColumnRange{0, c_out, out.mutable_data_ptr<float>(), c_out}}};
  job.ldb = ldb;
  job.scale = sc.defined() ? sc.const_data_ptr<float>() : nullptr;
  job.stream = out.nbytes() > static_cast<size_t>(stream_bytes < 0 ? kStreamBytes : stream_bytes);
  // a first layer: AVX-512 CPUs take first_layer.cpp's tiles
  if (merge && first_layer_avx512(job)) return out;
  gemms({job}, /*relu=*/true);
  return out;
}

}  // namespace

int64_t plain_weight_ldb(const at::Tensor& w) {
  if (w.dim() != 4 || w.layout() != at::kStrided || w.scalar_type() != at::kFloat ||
      !w.device().is_cpu()) {
    return 0;
  }
  const int64_t c_out = w.size(0), c_in = w.size(1), k = w.size(2);
  if (k != w.size(3) || k % 2 == 0 || k > kMaxKernel || c_out < 1 || c_in < 1) return 0;
  if (c_out > 1 && w.stride(0) != 1) return 0;
  const int64_t padded = (c_out + kPanel - 1) / kPanel * kPanel;
  // Rows (ky, kx, ci) ldb floats apart: ci's stride, else (one channel) kx's or ky's.
  const int64_t ldb = c_in > 1 ? w.stride(1) : k > 1 ? w.stride(3) : padded;
  if (ldb < padded) return 0;
  if (k > 1 && (w.stride(3) != c_in * ldb || w.stride(2) != k * c_in * ldb)) return 0;
  // The last row's padded lanes must lie inside the storage.
  const int64_t end = w.storage_offset() + (k * k * c_in - 1) * ldb + padded;
  if (end * static_cast<int64_t>(sizeof(float)) > static_cast<int64_t>(w.storage().nbytes())) {
    return 0;
  }
  return ldb;
}

int panels_kernel(int64_t rows, int64_t c_in) {
  for (int k = 1; k <= kMaxKernel; k += 2) {
    if (rows == k * k * c_in) return k;
  }
  return 0;
}

at::Tensor channel_scale(const char* op, const char* name, const std::optional<at::Tensor>& scale,
                         int64_t c) {
  if (!scale.has_value()) return at::Tensor();
  TORCH_CHECK_VALUE(scale->dim() == 1 && scale->size(0) == c && scale->device().is_cpu() &&
                        scale->scalar_type() == at::kFloat,
                    op, ": ", name, " must be float32 [", c, "] on the CPU, got ",
                    scale->scalar_type(), " ", scale->sizes(), " on ", scale->device());
  return scale->contiguous();
}

namespace {

// Panels per task: two adjacent ones (32 columns). AVX-512 tiles take both at once; the AVX2
// tile and the plain loop take one after the other on the same A rows, whose pointers are then
// made once for both (one panel per task until 2026-12-05: on a Zen 2 EPYC, interleaved in a
// prepared network, pairs took conv1 0.78-0.94x the time at batch 8 and 0.96-0.97x at batch 1,
// the 14x14 blocks 0.93-0.96x at batch 1, the network 0.97x at batch 1 and 0.85-0.99x at batch
// 8).
constexpr int64_t kGroup = 2;

bool wide_tiles() {
#ifdef FI_X86_VECTOR
  return vector_isa() == VectorIsa::kAvx512;
#else
  return false;
#endif
}

// Whether the tiles take one row pointer per tap where tile_rows can give one (its lda): the
// AVX2 tiles (tile_avx2's UNIFORM form); gemms and conv_tile_taps ask tile_rows for it then.
bool one_pointer_rows() { return vectorised() && !wide_tiles(); }

// A job's tasks (chunks x panel groups): [first, end) of one flat range.
struct Plan {
  int taps;
  int64_t c_tap, k, n_panels, n_groups, chunk_rows, m, first, end;

  // Tasks are ordered chunk by chunk, panel group by panel group inside a chunk.
  int64_t chunks() const { return n_groups > 0 ? (end - first) / n_groups : 0; }
  int64_t chunk_of(int64_t task) const { return (task - first) / n_groups; }
  int64_t first_panel(int64_t task) const { return (task - first) % n_groups * kGroup; }
};

// A task's B: its first panel, with the job's row stride (ldb) and the floats from one panel to
// the next (stride): GemmJob::b_row_stride and b_panel_stride.
struct TaskPanels {
  const float* panel;
  int64_t ldb, stride;
};

// The tiles a chunk of `rows` rows is cut into (near-equal sizes, at most 12 rows on AVX-512
// and 6 otherwise; see gemms).
inline int64_t chunk_tiles(int64_t rows, bool wide) {
  const int64_t most_rows = wide ? kRows : kRowsAvx2;
  return (rows + most_rows - 1) / most_rows;
}

// A tile's output rows: first, first + step, ... (count of them).
struct TileSpan {
  int64_t first;
  int count;
  int64_t step;
};

// Part `q` of `parts` near-equal parts of `length` items: its first item and its length.
inline std::pair<int64_t, int> part_of(int64_t length, int64_t parts, int64_t q) {
  const int64_t a = q * length / parts, b = (q + 1) * length / parts;
  return {a, static_cast<int>(b - a)};
}

// How a chunk's rows are cut into tiles. Row-major runs of near-equal size (chunk_tiles);
// or, for a padded KxK over whole images (stride 1, the output the input's size) where it
// takes no more tiles, each image as its border ring and its inside (`ring`): the inside's
// rows (columns 1 .. W-2), each cut into runs of at most 6 pixels, then the ring's four sides
// (top: row 0's columns 0 .. W-2; right: column W-1's rows 0 .. H-2, W pixels apart; bottom:
// row H-1's columns 1 .. W-1; left: column 0's rows 1 .. H-1), each cut the same way. A tile
// drops the taps under which all its pixels read padding (tile_rows), and the pixels of a
// side all read padding on that side, where a run of a 7x7 image's rows straddles two rows
// (one of them a border) and drops only the top or bottom taps. A 7x7 image's 3x3 (GoogLeNet's
// 5a and 5b at batch 1, 9 tiles either way) runs 369 of its 441 (pixel, tap) pairs instead of
// 408 (361 read the image), its 5x5 935 of 1225 instead of 1059 (841). The same bits: a dropped
// tap's products are zeros (see tile_rows). Measured on a 2-core Zen 3 EPYC (2026-12-07, ring
// or row-major switched per round of calls in one process): the benchmark's prepared 5b at
// batch 1 0.971-0.990x the time (channels_last, two runs; NCHW 0.977), 5a 0.965-0.967x (both
// layouts); the eval operator alone on one thread 5b 0.965x, 5a 0.959x (medians); the network
// at batch 1 level (0.990-1.001x, three runs). The AVX-512 tiles (up to 12 rows) keep row-major
// runs: a 7x7 ring's 6-pixel sides would half fill them (not built, not measured).
struct Tiling {
  int64_t start = 0, rows = 0, tiles = 0;
  // Ring: per image, ni tiles per inside row, nt per top or bottom side, nl per left or right
  // side; per_image 0: row-major runs.
  int64_t h = 0, w = 0, ni = 0, nt = 0, nl = 0, per_image = 0;

  // The tile that runs first (see gemms): one that reads every tap of a padded KxK, the middle
  // one (ring: the middle inside row's first), whose task reads its panels from memory.
  int64_t first(bool padded_kxk) const {
    if (per_image > 0) return (h - 2) / 2 * ni;
    return padded_kxk ? tiles / 2 : 0;
  }

  TileSpan tile(int64_t t) const {
    if (per_image == 0) {
      const auto [a, count] = part_of(rows, tiles, t);
      return {start + a, count, 1};
    }
    const int64_t base = start + t / per_image * h * w;
    int64_t u = t % per_image;
    if (u < (h - 2) * ni) {  // an inside row's run
      const auto [a, count] = part_of(w - 2, ni, u % ni);
      return {base + (1 + u / ni) * w + 1 + a, count, 1};
    }
    u -= (h - 2) * ni;
    if (u < nt) {  // top
      const auto [a, count] = part_of(w - 1, nt, u);
      return {base + a, count, 1};
    }
    u -= nt;
    if (u < nl) {  // right
      const auto [a, count] = part_of(h - 1, nl, u);
      return {base + a * w + w - 1, count, w};
    }
    u -= nl;
    if (u < nt) {  // bottom
      const auto [a, count] = part_of(w - 1, nt, u);
      return {base + (h - 1) * w + 1 + a, count, 1};
    }
    u -= nt;
    const auto [a, count] = part_of(h - 1, nl, u);  // left
    return {base + (1 + a) * w, count, w};
  }
};

Tiling chunk_tiling(const ConvInput& x, int64_t start, int64_t rows, bool wide) {
  Tiling tiling;
  tiling.start = start;
  tiling.rows = rows;
  tiling.tiles = chunk_tiles(rows, wide);
  const int64_t h = x.out_h(), w = x.out_w(), hw = h * w;
  if (wide || x.merged || x.kernel == 1 || x.stride != 1 || x.padding() != x.kernel / 2 || h < 3 ||
      w < 3 || start % hw != 0 || rows % hw != 0) {
    return tiling;
  }
  const auto runs = [](int64_t length) { return (length + kRowsAvx2 - 1) / kRowsAvx2; };
  const int64_t ni = runs(w - 2), nt = runs(w - 1), nl = runs(h - 1);
  const int64_t per_image = (h - 2) * ni + 2 * nt + 2 * nl;
  if (per_image * (rows / hw) > tiling.tiles) return tiling;
  tiling.h = h;
  tiling.w = w;
  tiling.ni = ni;
  tiling.nt = nt;
  tiling.nl = nl;
  tiling.per_image = per_image;
  tiling.tiles = per_image * (rows / hw);
  return tiling;
}

TaskPanels task_panels(const GemmJob& job, int64_t p0) {
  const int64_t stride = job.b_panel_stride();
  return {job.panels + p0 * stride, job.b_row_stride(), stride};
}

// The jobs' plans; `total`: their tasks, `widest`: the channels of the widest job.
std::vector<Plan> plan_jobs(const std::vector<GemmJob>& jobs, int64_t& total, int64_t& widest) {
  const bool wide = wide_tiles();
  const int64_t group = kGroup;
  // Fewest rows per chunk: every chunk reads all of its panels again, which for a few rows
  // over a deep reduction cost more than A leaving L2 (AVX-512: 5a's and 5b's 3x3s at batch
  // 1, 49 rows of 1440-1728 floats, were two uneven chunks that ran 1.6x slower than one).
  const int64_t least_rows = wide ? kMinChunkRowsAvx512 : kRowsAvx2;
  std::vector<Plan> plans;
  total = 0;
  widest = 1;
  for (const GemmJob& job : jobs) {
    const ConvInput& x = job.x;
    TORCH_CHECK(x.kernel >= 1 && x.kernel <= kMaxKernel && x.kernel % 2 == 1 && x.stride >= 1 &&
                    (!x.merged || (x.pad == 0 && x.ld == x.c)),
                "gemms: unsupported convolution (kernel ", x.kernel, ", stride ", x.stride,
                ", padding ", x.pad, ")");
    Plan plan{};
    plan.taps = x.merged ? x.kernel : x.kernel * x.kernel;
    plan.c_tap = x.merged ? x.kernel * x.c : x.c;  // floats per tap
    plan.k = plan.taps * plan.c_tap;
    plan.m = std::max<int64_t>(0, x.n * x.out_h() * x.out_w());
    plan.n_panels = job.n_out > 0 && plan.m > 0 ? (job.n_out + kPanel - 1) / kPanel : 0;
    plan.n_groups = (plan.n_panels + group - 1) / group;
    // Rows per chunk: A rows of about kChunkBytes, at least least_rows, spread evenly (on
    // AVX2 a multiple of its 6-row tile; on AVX-512 any count: tiles are cut evenly inside).
    // On AVX2 a job of at most kOneChunkRowsAvx2 rows is one chunk however deep (5a's and 5b's
    // 3x3s at batch 1 had been two chunks of 24-25 rows, each reading all the panels; as one,
    // which also lets the two KxKs share one loop, 5a and 5b at batch 1 took 0.93-0.96x the
    // time, interleaved in one process in the prepared network on a Zen 2 EPYC, 2026-12-05).
    const int64_t most =
        !wide && plan.m <= kOneChunkRowsAvx2
            ? std::max<int64_t>(plan.m, 1)
            : std::max<int64_t>(least_rows, kChunkBytes / (4 * std::max<int64_t>(plan.k, 1)));
    const int64_t chunks = plan.n_panels > 0 ? (plan.m + most - 1) / most : 0;
    const int64_t even = chunks > 0 ? (plan.m + chunks - 1) / chunks : 1;
    plan.chunk_rows = wide ? even : (even + kRowsAvx2 - 1) / kRowsAvx2 * kRowsAvx2;
    plan.first = total;
    total += chunks * plan.n_groups;
    plan.end = total;
    widest = std::max(widest, plan.c_tap);
    plans.push_back(plan);
  }
  return plans;
}

// Whether jobs that are steps of their own (the block's 1x1s over x and over the pooled x, or
// its two direct KxKs) run as one parallel loop: where each job is one chunk of rows and one
// has fewer than a few tasks per thread (49 rows at batch 1: 5a's and 5b's pooled 1x1s and
// 3x3s have 4-12 tasks). That loop's flat range is cut into a few parts per thread of about
// equal work (multiply-adds; tasks of different jobs differ), which spares a loop's end where
// one thread waits on the other. Measured on a 2-core Zen 2 EPYC (alternating processes,
// 2026-12-05, five pairs of runs each): 5a and 5b at batch 1 took 0.81-1.02x the time, faster in
// 8 of 10 pairs; one loop for every such pair also took 4b at batch 1 (two chunks of 98 rows)
// 1.02-1.14x and 4a at batch 8 1.03-1.04x, hence the conditions. Otherwise they run one after
// the other, each job's tasks split evenly.
bool one_loop(const std::vector<Plan>& plans) {
  bool merge = plans.size() > 1, small = false;
  for (const Plan& plan : plans) {
    merge &= plan.chunks() <= 1;
    small |= plan.end - plan.first < 4 * at::get_num_threads();
  }
  return merge && small;
}

}  // namespace

bool gemms_nchw_stores(int64_t hw) { return wide_tiles() && hw <= kMaxScatterPlane; }

bool gemms_one_loop(const std::vector<GemmJob>& jobs) {
  int64_t total = 0, widest = 1;
  const std::vector<Plan> plans = plan_jobs(jobs, total, widest);
  return one_loop(plans);
}

namespace {

// How gemms_impl runs the tasks: kFlat one loop of all of them (gemms' steps false), kSteps as
// gemms with steps, kOrdered as gemms_in_order.
enum class Schedule { kFlat, kSteps, kOrdered };

void gemms_impl(const std::vector<GemmJob>& jobs, bool relu, Schedule schedule,
                const std::vector<int64_t>& after) {
  [[maybe_unused]] const bool vector = vectorised();
  const bool wide = wide_tiles();
  const bool one_pointer = one_pointer_rows();
  const int64_t group = kGroup;
  int64_t total = 0, widest = 1;
  const std::vector<Plan> plans = plan_jobs(jobs, total, widest);
  if (total == 0) return;
  const std::vector<float> zeros(widest, 0.f);  // padding's row
  // The plan of `task`: plans[j], j moved from where it was.
  const auto plan_of = [&](int64_t task, size_t& j) {
    while (j + 1 < plans.size() && task >= plans[j + 1].first) ++j;
    while (task < plans[j].first) --j;
  };
  const int64_t threads = at::get_num_threads();
  // One task; `next`: the task this thread runs after it (its panels are prefetched where
  // the tiles do so, see below), -1 where unknown or none.
  const auto run_task = [&](int64_t task, int64_t next_task, size_t& j) {
    const float* rows[kMaxTaps * kRows];
    int tap_of[kMaxTaps];
    plan_of(task, j);
    const Plan& plan = plans[j];
    const GemmJob& job = jobs[j];
    const int64_t chunk = plan.chunk_of(task), p0 = plan.first_panel(task);
    const int panels = static_cast<int>(std::min(group, plan.n_panels - p0));
    float bias[2 * kPanel] = {}, scale[2 * kPanel] = {};
    PanelStore stores[2];
    for (int q = 0; q < panels; ++q) {
      const int64_t col0 = (p0 + q) * kPanel;
      const size_t valid = sizeof(float) * std::min<int64_t>(kPanel, job.n_out - col0);
      if (job.bias != nullptr) std::memcpy(bias + q * kPanel, job.bias + col0, valid);
      if (job.scale != nullptr) std::memcpy(scale + q * kPanel, job.scale + col0, valid);
      stores[q] = panel_store(job.ranges, col0, job.n_out);
      stores[q].stream = job.stream;
    }
    const float* scales = job.scale != nullptr ? scale : nullptr;
    const auto [panel, ldb, stride] = task_panels(job, p0);
    // A 1x1 over stride-1 pixels: the tile's rows are ld floats apart (tile_avx512 UNIFORM).
    const bool uniform = job.x.kernel == 1 && job.x.stride == 1 && job.x.padding() == 0 &&
                         !job.x.merged && plan.taps == 1;
    const int64_t start = chunk * plan.chunk_rows;
    const int64_t stop = std::min(plan.m, start + plan.chunk_rows);
    // Tiles of near-equal size, at most 12 or 6 rows (chunk_tiles; on AVX2 a 7x7 image under a
    // padded KxK as its ring and inside rows, chunk_tiling): 49 rows (7x7 at batch 1) as 9
    // + 10 + 10
    // + 10 + 10 on AVX-512, not 4 x 12 + 1, whose last tile loads the panels for one row, and
    // as 5 x 5 + 4 x 6 on AVX2, not 8 x 6 + 1: a 1-row AVX2 tile has two chains of FMAs, so
    // each step waits for the FMA's latency (about 5/6 of a 6-row tile's time for 1/6 of
    // its work; 5 rows, ten chains, keep both FMA units busy). On a Zen 2 EPYC (2026-12-05,
    // alternating processes, blocks alone) 5a and 5b at batch 1 took 0.93-0.97x the time,
    // 4a and 5a at batch 8 level. Each output is the same FMA chain either way.
    const Tiling tiling = chunk_tiling(job.x, start, stop - start, wide);
    const int64_t tiles = tiling.tiles;
    // The tiles prefetch the panels of this thread's next task into L2 where that task's
    // job has at most one chunk of rows per thread, so that each thread reads each of its
    // panels once per call, from memory (a batch-1 network's 7x7 and 14x14 blocks, whose
    // weights arrive cold from DRAM): panel q's rows [tile * per, (tile + 1) * per) by
    // tile `tile`'s call for panel q, one line per step. Measured on a 2-core Zen 2 EPYC
    // (2026-12-05, interleaved in one process, the prepared network): batch 1 0.97-0.99x the
    // time (4b-4e and 5b 0.94-0.98x); at batch 8 level. Prefetching for every task took batch
    // 8 1.05x the time (conv1 1.1x), and all of a task's prefetches in its first tile batch 1
    // 1.03x. The AVX-512 tiles do the same for both panels of the next task in each tile
    // (since 2026-12-06; 2-core Emerald Rapids Xeon, interleaved in one process with an
    // environment switch, each call after a 64 MB sweep, three runs at batch 1: 5a 0.94-0.97x
    // and 5b 0.94-0.95x the time, the 14x14 and 28x28 blocks 0.96-1.04x, the network
    // 0.97-1.00x; at batch 8 no job has so few chunks).
    Ahead next[2];
    int64_t per = 0;
    if (vector && next_task >= 0 && tiles > 0) {
      size_t jn = j;
      plan_of(next_task, jn);
      const Plan& pn = plans[jn];
      if (pn.chunks() <= threads) {
        const int64_t pn0 = pn.first_panel(next_task);
        const TaskPanels b = task_panels(jobs[jn], pn0);
        per = (pn.k + tiles - 1) / tiles;
        for (int64_t q = 0; q < std::min(group, pn.n_panels - pn0); ++q) {
          next[q].p = reinterpret_cast<const char*>(b.panel + q * b.stride);
          next[q].stride = b.ldb * static_cast<int64_t>(sizeof(float));
          next[q].rows = std::min(per, plan.k);
        }
      }
    }
    // A padded KxK's tiles from the chunk's middle one on: at an image's top and bottom a
    // tile drops the taps of padding alone (tile_rows), so the task's first tile, which
    // reads its panels from memory (and on AVX2 prefetches a plain weight's rows for the
    // others), is then one that reads every tap.
    const int64_t first = tiling.first(plan.taps > 1 && job.x.padding() > 0);
    const TileGeometry geometry = tile_geometry(job.x);
    for (int64_t step = 0, t = first; step < tiles; ++step, t = t + 1 < tiles ? t + 1 : 0) {
      const auto [i, count, row_step] = tiling.tile(t);
      int64_t lda = 0;  // see tile_rows; asked for on AVX2 only
      const int taps = tile_rows(job.x, geometry, zeros.data(), i, count, row_step, rows, tap_of,
                                 one_pointer ? &lda : nullptr);
#ifdef FI_X86_VECTOR
      if (wide) {
        const auto tile = panels == 2 ? &tile_vector512<2> : &tile_vector512<1>;
        tile(rows, tap_of, taps, plan.c_tap, panel, ldb, stride, scales, bias, relu, stores, i,
             count, per > 0 ? next : nullptr, uniform ? job.x.ld : 0);
        for (Ahead& a : next) a.p += a.rows * a.stride;  // the next tile's rows
        continue;
      }
      if (vector) {
        // The plain weight's rows prefetched by the task's first tile, which reads them from
        // memory; its other tiles find them in cache, in L2 at least: and where the task's rows
        // of one panel outgrow L1 (kL1PanelRows) in tasks of a batch-1 block (those that
        // prefetch their next task, per > 0) every tile prefetches them, from L2. The rows lie
        // ldb floats apart (several KB: a new 4 KB page every step or two), which the
        // hardware's prefetchers do not follow; a packed panel's rows are one run they do.
        // Measured on the 2-core Zen 3 EPYC (2026-12-07, switched per round of calls in one
        // process, same bits): the benchmark's prepared 5b at batch 1 0.964x the time (NCHW
        // 0.958x), 5a 0.960x (0.944x), 4e 0.980x, the network level (0.973x and 0.993x,
        // minima 1.002x and 1.004x); with every tile of such tasks prefetching, whatever their
        // rows, 4a and 4b were at 0.98-1.02x. Packed panels took 0.90-0.92x the time of the
        // plain weights for 5b's operator alone (a copy, which needs the content check: not
        // counted there).
        const bool prefetch = ldb != kPanel && (step == 0 || (per > 0 && plan.k > kL1PanelRows));
        const auto tile = lda != 0 ? tile_avx2_for<true>(prefetch, per > 0, count)
                                   : tile_avx2_for<false>(prefetch, per > 0, count);
        for (int q = 0; q < panels; ++q) {
          tile(rows, tap_of, taps, plan.c_tap, panel + q * stride, ldb,
               scales != nullptr ? scales + q * kPanel : nullptr, bias + q * kPanel, relu,
               stores[q], i, row_step, next[q], lda);
          next[q].p += next[q].rows * next[q].stride;  // the next tile's rows
        }
        continue;
      }
#endif
      for (int q = 0; q < panels; ++q) {
        tile_plain(rows, tap_of, taps, plan.c_tap, panel + q * stride, ldb,
                   scales != nullptr ? scales + q * kPanel : nullptr, bias + q * kPanel, relu,
                   stores[q], i, count, row_step);
      }
    }
  };
  // The tasks of the running loop end here. A thread's next task is task + 1 up to the end of
  // the loop, not of its call: parallel_for hands a thread its range in steps (parallel.h).
  int64_t limit = total;
  const auto run = [&](int64_t begin, int64_t end) {
    size_t j = 0;
    for (int64_t task = begin; task < end; ++task) {
      run_task(task, task + 1 < limit ? task + 1 : -1, j);
    }
#ifdef FI_X86_VECTOR
    _mm_sfence();  // this thread's non-temporal stores, if any, before the loop ends
#endif
  };
  if (schedule == Schedule::kOrdered) {
    std::vector<int64_t> ends;
    for (const Plan& plan : plans) ends.push_back(plan.end);
    parallel_for_ordered(ends, after, [&](int64_t task, int64_t next_task) {
      size_t j = 0;
      run_task(task, next_task, j);
#ifdef FI_X86_VECTOR
      _mm_sfence();  // its non-temporal stores, if any, before it counts as ended
#endif
    });
    return;
  }
  if (schedule == Schedule::kFlat) {
    parallel_for(0, total, 1, run);
    return;
  }
  // Steps of their own (see one_loop): one after the other, or one loop of equal-work parts.
  if (!one_loop(plans)) {
    for (const Plan& plan : plans) {
      limit = plan.end;
      parallel_for(plan.first, plan.end, 1, run);
    }
    return;
  }
  std::vector<int64_t> work(static_cast<size_t>(total) + 1, 0);  // before each task
  for (const Plan& plan : plans) {
    for (int64_t task = plan.first; task < plan.end; ++task) {
      const int64_t start = plan.chunk_of(task) * plan.chunk_rows;
      const int64_t rows = std::clamp<int64_t>(plan.m - start, 0, plan.chunk_rows);
      const int64_t panels = std::min(group, plan.n_panels - plan.first_panel(task));
      work[static_cast<size_t>(task) + 1] =
          work[static_cast<size_t>(task)] + plan.k * rows * panels;
    }
  }
  // One part per task (empty parts where a task spans several shares): a thread done first
  // takes the other's tasks one by one, where parts of a few tasks (4 per thread until
  // 2026-12-07) left it waiting on the other's last part. On a 2-core Zen 3 EPYC (2026-12-07):
  // perf on 5b at batch 1 (NCHW) had the second thread idle in 25% of its samples, 19% with
  // one part per task (the first thread mostly inside a tile meanwhile); the benchmark's
  // prepared 5b at batch 1, switched per round of calls in one process, seven runs on a noisy
  // host: 0.93-1.02x the time (five of seven below 0.98), 5a 0.94-1.03x, the network level.
  parallel_for_equal_work(work, total, work.back(), run, total);
}

}  // namespace

void gemms(const std::vector<GemmJob>& jobs, bool relu, bool steps) {
  gemms_impl(jobs, relu, steps ? Schedule::kSteps : Schedule::kFlat, {});
}

void gemms_in_order(const std::vector<GemmJob>& jobs, const std::vector<int64_t>& after,
                    bool relu) {
  gemms_impl(jobs, relu, Schedule::kOrdered, after);  // (parallel_for_ordered checks `after`)
}

std::vector<int64_t> conv_tile_taps(int64_t n, int64_t c, int64_t h, int64_t w, int64_t kernel,
                                    int64_t stride, int64_t padding) {
  TORCH_CHECK_VALUE(n >= 0 && c >= 1 && h >= 1 && w >= 1 && kernel >= 1 && kernel <= kMaxKernel &&
                        kernel % 2 == 1 && stride >= 1 && stride <= 8 && padding >= 0 &&
                        padding <= kernel / 2 && n * h * w * c <= (int64_t{1} << 28),
                    "conv_tile_taps: unsupported convolution (n ", n, ", c ", c, ", ", h, "x", w,
                    ", kernel ", kernel, ", stride ", stride, ", padding ", padding, ")");
  const std::vector<float> x(static_cast<size_t>(n * h * w * c)), zeros(static_cast<size_t>(c));
  GemmJob job{};
  job.x = ConvInput{x.data(),
                    c,
                    n,
                    h,
                    w,
                    c,
                    static_cast<int>(kernel),
                    static_cast<int>(stride),
                    static_cast<int>(padding)};
  job.n_out = kPanel;
  int64_t total = 0, widest = 1;
  const Plan plan = plan_jobs({job}, total, widest).front();
  const bool wide = wide_tiles();
  const bool one_pointer = one_pointer_rows();
  const TileGeometry geometry = tile_geometry(job.x);
  const float* rows[kMaxTaps * kRows];
  int tap_of[kMaxTaps];
  std::vector<int64_t> counts{0, 0, 0, 0};  // pairs run, all pairs, one-pointer tiles, tiles
  for (int64_t task = plan.first; task < plan.end; ++task) {
    const int64_t start = plan.chunk_of(task) * plan.chunk_rows;
    const Tiling tiling =
        chunk_tiling(job.x, start, std::min(plan.m, start + plan.chunk_rows) - start, wide);
    for (int64_t t = 0; t < tiling.tiles; ++t) {
      const auto [i, count, step] = tiling.tile(t);
      int64_t lda = 0;
      const int taps = tile_rows(job.x, geometry, zeros.data(), i, count, step, rows, tap_of,
                                 one_pointer ? &lda : nullptr);
      counts[0] += int64_t{taps} * count;
      counts[1] += int64_t{plan.taps} * count;
      counts[2] += lda != 0 ? 1 : 0;
      counts[3] += 1;
    }
  }
  return counts;
}

}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("conv_bias_relu_nhwc", &fused_inception::conv_bias_relu_nhwc_cpu);
}
