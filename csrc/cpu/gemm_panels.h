// The package's own float32 convolution for NHWC images as a GEMM over their pixel rows, with
// the bias, the ReLU and the store into channel slices in its epilogue
// (csrc/cpu/gemm_panels.cpp):
//
//   C[i, j] = relu(sum_t sum_c A_t[i, c] * B[t * C + c, j] + bias[j]),   i < m, j < n
//
// A_t: the pixel rows of x [N, H, W, C] under tap t = (dy, dx) of a K x K kernel (stride 1 and
// zero padding K / 2 unless ConvInput says otherwise; for K = 1, x's rows: a 1x1 convolution). B:
// the weight [n, K, K, C] packed as "panels" [ceil(n / 16), K * K * C, 16] (panel p holds output
// channels 16p .. 16p + 15, zero past n; fused_inception/backends/cpu_onednn.py, pack_panels), or
// the weight itself in the plain layout (output channels contiguous: GemmJob::ldb). C's
// columns go to one or more destinations (ColumnRange): e.g. b1's into the block output's channel
// slice and r2's and r3's into their own buffers. The ReLU keeps NaN, as torch's does.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace fused_inception {

// Output channels per panel: B's packed panels are [ceil(n / kPanel), K * K * C, kPanel], and the
// tiles' vectors of C hold kPanel channels.
constexpr int kPanel = 16;

// Columns [begin, end) of C go to dst: C[i, j] is stored at dst[i * ldc + (j - begin)]; or,
// with hw > 0 (an NCHW destination: C's rows are the pixels of images of hw pixels, ldc floats
// apart, channel j - begin's plane at (j - begin) * hw), at
// dst[(i / hw) * ldc + (j - begin) * hw + i % hw].
struct ColumnRange {
  int64_t begin, end;
  float* dst;
  int64_t ldc;
  int64_t hw = 0;
};

// x as the GEMM's A: pixel (b, y, x) of an [n, h, w] image with c channels at
// data + ((b * h + y) * w + x) * ld; `kernel` K (odd, at most kMaxKernel), `stride` and zero
// padding `pad` (-1: K / 2) on each side. With `merged` (pad 0 and ld == c only), a kernel row's
// K pixels are one tap of K * c contiguous floats: for few channels (a network's first layer on
// a zero-padded copy), K taps of K * c instead of K * K taps of c.
struct ConvInput {
  const float* data;
  int64_t ld, n, h, w, c;
  int kernel;
  int stride = 1;
  int pad = -1;
  bool merged = false;

  int padding() const { return pad < 0 ? kernel / 2 : pad; }
  int64_t out_h() const { return (h + 2 * padding() - kernel) / stride + 1; }
  int64_t out_w() const { return (w + 2 * padding() - kernel) / stride + 1; }
};

constexpr int kMaxKernel = 7;

// A weight [Cout, C, K, K] whose output channels are contiguous (stride 1) and whose rows
// (ky, kx, ci) are ldb floats apart, each with its Cout rounded up to 16 floats readable (a
// weight in fused_inception/plain_layout.py's layout, as prepare_for_inference leaves a fused
// block's): ldb, else 0. Such a weight is the GEMM's B as it is (GemmJob::ldb).
int64_t plain_weight_ldb(const at::Tensor& w);

// The kernel size K of panels with `rows` rows for c_in input channels: the smallest odd K up to
// kMaxKernel with K * K * c_in == rows, else 0 (for c_in = 0, K = 1).
int panels_kernel(int64_t rows, int64_t c_in);

// An optional per-channel scale (GemmJob::scale) as the kernel reads it: dense float32 [c] on the
// CPU, else a ValueError naming `op` and `name`; undefined when there is none.
at::Tensor channel_scale(const char* op, const char* name, const std::optional<at::Tensor>& scale,
                         int64_t c);

// One GEMM of a batch (gemms below): A from x, B as panels, bias (nullptr: none), C into ranges.
struct GemmJob {
  ConvInput x;
  const float* panels;
  int64_t n_out;
  const float* bias;
  std::vector<ColumnRange> ranges;
  // ldb 0: `panels` are packed panels. ldb > 0: `panels` is the weight itself as a plain
  // [K * K * C, ldb] matrix (row (tap, channel), output channel j at column j; ldb >= n_out
  // rounded up to 16, the columns past n_out readable), read with no packing.
  int64_t ldb = 0;
  // Per output channel: C = scale * sum + bias (one rounding, an FMA); nullptr: sum + bias.
  const float* scale = nullptr;
  // Write C with non-temporal stores (the AVX2 tile, where a row's 16 columns are 32-byte
  // aligned): for an output larger than the last-level cache, whose lines would otherwise be
  // read from memory before being overwritten. The same values either way.
  bool stream = false;

  // B's row (tap, channel) r of panel q is at panels + q * b_panel_stride() + r * b_row_stride():
  // packed panels are rows of kPanel floats, one panel after the other; a plain weight is rows of
  // ldb floats, a panel kPanel floats from the next.
  int64_t b_row_stride() const { return ldb > 0 ? ldb : kPanel; }
  int64_t b_panel_stride() const {
    return ldb > 0 ? kPanel : int64_t{x.kernel} * x.kernel * x.c * kPanel;
  }
};

// relu(conv(x) + bias) of a first layer (few channels, read from the zero-padded NHWC copy:
// job.x.merged) on AVX-512 CPUs (csrc/cpu/first_layer.cpp), into job.ranges' single range: the
// bits of gemms({job}, true). false (nothing done) where the CPU or build has no AVX-512 loops.
bool first_layer_avx512(const GemmJob& job);

// C = relu(conv(x) + bias) as above for each job, into its `ranges` (covering [0, n_out) without
// overlap, in column order). The vector kernel is AVX-512 or AVX2 + FMA as cpu/vector_isa.h
// allows, else a plain loop; all take one FMA chain per output in (tap, channel) order, so they
// give the same bits.
// Several independent GEMMs in one parallel loop over all their (chunk, panel pair) tasks, with the
// ReLU or without (e.g. Winograd's 16 GEMMs, whose sums are transformed afterwards). steps: the
// jobs are steps of their own (a block's 1x1s, or its direct KxKs), run one after the other
// unless they are small enough to pay for one loop of parts of equal work (see there).
void gemms(const std::vector<GemmJob>& jobs, bool relu, bool steps = false);

// gemms(jobs, relu) as one loop whose tasks are taken one at a time in the jobs' order, from a
// counter the threads share: a task of jobs[j] starts once every task of jobs[0, after[j]) has
// ended (after[j] <= j), so a job may read what earlier ones write (a block's KxKs the reduced
// tensors of its 1x1 over x). The same bits as gemms.
void gemms_in_order(const std::vector<GemmJob>& jobs, const std::vector<int64_t>& after, bool relu);

// Whether the block operator's GEMMs write an NCHW output of hw pixels per image into its
// channel slices directly (ranges with hw > 0): where the AVX-512 tiles run, which scatter each
// row's 16 channels to their planes, and the planes fit the scatter's 32-bit offsets. The other
// kernels take such ranges too, one float at a time; the operator stages their results in NHWC
// and transposes them after.
bool gemms_nchw_stores(int64_t hw);

// Whether gemms(jobs, relu, /*steps=*/true) runs them as one loop (else one after the other):
// a caller keeps all their operands alive together only then (their `ranges` are not read).
bool gemms_one_loop(const std::vector<GemmJob>& jobs);

// The (output pixel, tap) pairs gemms' tiles multiply for a stride/padding KxK convolution of an
// [n, c, h, w] input, and all n * out_h * out_w * K * K of them (tap = kernel position; the
// first layers' merged taps aside): counted with gemms' own plan, tiles and tile_rows (which
// drops the taps under which a whole tile is padding), no arithmetic; then the tiles that take one
// row pointer per tap (tile_rows' lda: AVX2 tiles only) and all tiles. Tests and the README's
// counted work.
std::vector<int64_t> conv_tile_taps(int64_t n, int64_t c, int64_t h, int64_t w, int64_t kernel,
                                    int64_t stride, int64_t padding);

}  // namespace fused_inception
