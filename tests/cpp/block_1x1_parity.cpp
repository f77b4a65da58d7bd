// Parity and counted work of block_1x1 (csrc/cuda/block_1x1.cu, version 2), run on the CPU
// through the SIMT shim (csrc/emulated/block_1x1.cpp), against a float64 reference computed here
// from the formulas of csrc/cuda/kernels.h. Torch-free (tests/test_cuda_block_1x1.py builds it
// plain, with AddressSanitizer and with ThreadSanitizer).
//
// Usage:
//   block_1x1_parity all|small [substring]
//     every case (GoogLeNet channel counts at 5x6 pixels, odd shapes, both dtypes, the four
//     tilings 64 | 128 x 64 | 128, some forced), or a few small ones for the sanitizer builds.
//     Inputs are random and never zero; x's pixels carry NaN channels past c_in (a stride > c_in
//     that the kernel must skip); out and r are poisoned with NaN (0xFF bytes) before the launch.
//     Then b1, r and b4 must each hold max|out - ref| <= tol * max|ref|, and every element outside
//     them (other channels, the elements before out's first channel and after both buffers) must
//     still be poison. Prints one line per case, a self-test line and "checked <n> cases, <f>
//     failed".
//   block_1x1_parity counters <name> <batch> <height> <width> <c_in> <c1> <c2r> <c3r> <c_pool>
//     one GoogLeNet block in fp16 at the tiling block_1x1_plan chooses: launches one CTA of each
//     distinct tiling (see run_counters), checks their outputs as above and prints the whole
//     launch's counters (simt::last_launch_stats of each CTA times its class's CTA count):
//     executed / useful MACs, global bytes loaded by cp.async per useful FLOP, the largest
//     bank-conflict degree of ldmatrix, lds and sts; fails when MACs exceed 1.25x, a degree
//     exceeds 1, or cp.async loaded less than x and the weights.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "emulated/block_1x1.cpp"
#include "parity_common.h"

namespace {

namespace fi = fused_inception;
namespace fin = fused_inception::emulated;
using parity::random_bias;
using parity::random_tensor;
using parity::Rng;
using parity::Tensor;
using parity::to_double;

struct Case {
  std::string name;
  fi::ScalarKind dtype;
  int64_t batch, height, width, c_in, c1, c_red, c_pool;
  int64_t x_extra = 0;    // NaN channels after c_in in each pixel of x
  int64_t out_lead = 3;   // elements of the buffer before out's channel 0
  int64_t out_gap = 5;    // channels between b1 and b4 (the block's b2 | b3)
  bool negative = false;  // all-negative x (pool windows without a positive value)
  int bm = 0, bn = 0;     // a forced tiling (0: block_1x1_plan's)
};

constexpr int64_t kTail = 11;  // poisoned elements after out's and r's last pixel

struct Check {
  bool ok = true;
  std::string why;
  double max_err[3] = {0, 0, 0}, max_ref[3] = {0, 0, 0};  // b1, r, b4
  void fail(const std::string& message) {
    if (ok) why = message;
    ok = false;
  }
};

template <typename T>
bool poisoned(const T& v) {
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  return std::all_of(bytes, bytes + sizeof(T), [](unsigned char b) { return b == 0xFF; });
}

// A case's random inputs (x with NaN channels past c_in) and the launch's arguments.
template <typename T>
struct Inputs {
  Tensor<T> x, w_x, w_pool;
  std::vector<float> b_x, b_pool;
  int64_t pixels, x_stride, n_x;
};

template <typename T>
Inputs<T> make_inputs(const Case& cs, uint64_t seed) {
  Rng rng(seed);
  Inputs<T> in;
  in.pixels = cs.batch * cs.height * cs.width;
  in.x_stride = cs.c_in + cs.x_extra;
  in.n_x = cs.c1 + cs.c_red;
  in.x = random_tensor<T>(rng, in.pixels * in.x_stride, 1.0, cs.negative);
  for (int64_t p = 0; p < in.pixels; ++p) {
    for (int64_t c = cs.c_in; c < in.x_stride; ++c) {
      in.x.data[p * in.x_stride + c] = parity::from_double<T>(NAN);
    }
  }
  const double w_scale = 1.0 / std::sqrt(static_cast<double>(cs.c_in));
  in.w_x = random_tensor<T>(rng, cs.c_in * in.n_x, w_scale);
  in.w_pool = random_tensor<T>(rng, cs.c_in * cs.c_pool, w_scale);
  in.b_x = random_bias(rng, in.n_x);
  in.b_pool = random_bias(rng, cs.c_pool);
  return in;
}

// A case's reference (rows the launch computes; all of them by default), its buffers after the
// launch and the launch's error.
template <typename T>
struct Run {
  std::vector<double> ref_b1, ref_r, ref_b4;  // [M, c1], [M, c_red], [M, c_pool]
  std::vector<T> out, r;                      // out_lead + M * stride + kTail, M * c_red + kTail
  int64_t pixels, stride, pool_off;
  bool partial = false;  // only some tiles launched: elements with a NaN reference are not checked
  const char* error;
};

// The float64 reference of pixel p into run's ref_* rows.
template <typename T>
void reference_pixel(const Case& cs, const Inputs<T>& in, int64_t p, Run<T>& run) {
  const int64_t y = p / cs.width % cs.height, xx = p % cs.width;
  std::vector<double> pooled(cs.c_in);
  for (int64_t c = 0; c < cs.c_in; ++c) {
    pooled[c] = -INFINITY;
    for (int64_t dy = -1; dy <= 1; ++dy) {
      for (int64_t dx = -1; dx <= 1; ++dx) {
        if (y + dy < 0 || y + dy >= cs.height || xx + dx < 0 || xx + dx >= cs.width) continue;
        pooled[c] = std::max(pooled[c], in.x.ref[(p + dy * cs.width + dx) * in.x_stride + c]);
      }
    }
  }
  for (int64_t j = 0; j < in.n_x; ++j) {
    double s = in.b_x[j];
    for (int64_t c = 0; c < cs.c_in; ++c) {
      s += in.x.ref[p * in.x_stride + c] * in.w_x.ref[c * in.n_x + j];
    }
    s = std::max(s, 0.0);
    if (j < cs.c1) {
      run.ref_b1[p * cs.c1 + j] = s;
    } else {
      run.ref_r[p * cs.c_red + j - cs.c1] = s;
    }
  }
  for (int64_t j = 0; j < cs.c_pool; ++j) {
    double s = in.b_pool[j];
    for (int64_t c = 0; c < cs.c_in; ++c) s += pooled[c] * in.w_pool.ref[c * cs.c_pool + j];
    run.ref_b4[p * cs.c_pool + j] = std::max(s, 0.0);
  }
}

// Poisoned buffers for a case and the arguments that point the kernel at them.
template <typename T>
fi::Block1x1Args prepare(const Case& cs, const Inputs<T>& in, Run<T>& run) {
  const int64_t pixels = in.pixels;
  run.pixels = pixels;
  run.pool_off = cs.c1 + cs.out_gap;
  run.stride = run.pool_off + cs.c_pool + 2;
  run.ref_b1.assign(pixels * cs.c1, NAN);
  run.ref_r.assign(pixels * cs.c_red, NAN);
  run.ref_b4.assign(pixels * cs.c_pool, NAN);
  run.out.resize(cs.out_lead + pixels * run.stride + kTail);
  run.r.resize(pixels * cs.c_red + kTail);
  std::memset(static_cast<void*>(run.out.data()), 0xFF, run.out.size() * sizeof(T));
  std::memset(static_cast<void*>(run.r.data()), 0xFF, run.r.size() * sizeof(T));
  fi::Block1x1Args args{};
  args.dtype = cs.dtype;
  args.x = in.x.data.data();
  args.w_x = in.w_x.data.data();
  args.b_x = in.b_x.data();
  args.w_pool = in.w_pool.data.data();
  args.b_pool = in.b_pool.data();
  args.out = run.out.data() + cs.out_lead;
  args.r = run.r.data();
  args.batch = cs.batch;
  args.height = cs.height;
  args.width = cs.width;
  args.c_in = cs.c_in;
  args.n_x = in.n_x;
  args.c1 = cs.c1;
  args.c_pool = cs.c_pool;
  args.x_pixel_stride = in.x_stride;
  args.out_pixel_stride = run.stride;
  args.pool_off = run.pool_off;
  return args;
}

// The plan a case runs: block_1x1_plan's, or its forced tile sizes.
fin::Block1x1Plan case_plan(const Case& cs, const fi::Block1x1Args& args) {
  fin::Block1x1Plan plan = fin::block_1x1_plan(args);
  if (cs.bm != 0) {
    const int64_t pixels = args.batch * args.height * args.width;
    plan.bm = cs.bm;
    plan.bn = cs.bn;
    plan.tiles_m = (pixels + cs.bm - 1) / cs.bm;
    plan.tiles_x = (args.n_x + cs.bn - 1) / cs.bn;
    plan.tiles_pool = (args.c_pool + cs.bn - 1) / cs.bn;
    plan.tiles_y = plan.tiles_x + plan.tiles_pool;
  }
  return plan;
}

template <typename T>
Run<T> run_case(const Case& cs, uint64_t seed) {
  const Inputs<T> in = make_inputs<T>(cs, seed);
  Run<T> run;
  const fi::Block1x1Args args = prepare(cs, in, run);
  for (int64_t p = 0; p < in.pixels; ++p) reference_pixel(cs, in, p, run);
  const fin::Block1x1Plan plan = case_plan(cs, args);
  run.error = cs.bm != 0 ? fin::block_1x1_with_plan(args, plan, nullptr)
                         : fi::emulated::block_1x1(args, nullptr);
  return run;
}

double tolerance(fi::ScalarKind dtype) { return dtype == fi::ScalarKind::kFloat16 ? 1e-2 : 2e-2; }

// Compares a run's buffers with its reference (see the top of the file).
template <typename T>
Check check_run(const Case& cs, const Run<T>& run) {
  Check r;
  if (run.error != nullptr) {
    r.fail(std::string("launch failed: ") + run.error);
    return r;
  }
  auto compare = [&](int branch, const T& v, double expected, const std::string& where) {
    if (run.partial && std::isnan(expected)) return;
    if (std::isnan(to_double(v))) r.fail(where + " is NaN (not written)");
    r.max_err[branch] = std::max(r.max_err[branch], std::fabs(to_double(v) - expected));
    r.max_ref[branch] = std::max(r.max_ref[branch], std::fabs(expected));
  };
  for (int64_t i = 0; i < static_cast<int64_t>(run.out.size()); ++i) {
    const int64_t e = i - cs.out_lead, p = e / run.stride, c = e % run.stride;
    const std::string where = "out pixel " + std::to_string(p) + " channel " + std::to_string(c);
    if (e >= 0 && p < run.pixels && c < cs.c1) {
      compare(0, run.out[i], run.ref_b1[p * cs.c1 + c], where);
    } else if (e >= 0 && p < run.pixels && c >= run.pool_off && c < run.pool_off + cs.c_pool) {
      compare(2, run.out[i], run.ref_b4[p * cs.c_pool + c - run.pool_off], where);
    } else if (!poisoned(run.out[i])) {
      r.fail("out element " + std::to_string(e) + " outside b1 and b4 was written");
    }
  }
  for (int64_t i = 0; i < static_cast<int64_t>(run.r.size()); ++i) {
    if (i < run.pixels * cs.c_red) {
      compare(1, run.r[i], run.ref_r[i], "r element " + std::to_string(i));
    } else if (!poisoned(run.r[i])) {
      r.fail("r element " + std::to_string(i) + " past the scratch was written");
    }
  }
  const char* names[3] = {"b1", "r", "b4"};
  const int64_t widths[3] = {cs.c1, cs.c_red, cs.c_pool};
  for (int b = 0; b < 3; ++b) {
    if (widths[b] == 0) continue;
    if (r.max_ref[b] == 0.0) r.fail(std::string(names[b]) + "'s reference is all zero");
    if (!(r.max_err[b] <= tolerance(cs.dtype) * r.max_ref[b])) {
      r.fail(std::string(names[b]) + ": max|err| " + std::to_string(r.max_err[b]) + " > " +
             std::to_string(tolerance(cs.dtype)) + " * max|ref| " + std::to_string(r.max_ref[b]));
    }
  }
  return r;
}

Check dispatch(const Case& cs, uint64_t seed) {
  if (cs.dtype == fi::ScalarKind::kFloat16) return check_run(cs, run_case<__half>(cs, seed));
  return check_run(cs, run_case<__nv_bfloat16>(cs, seed));
}

const char* dtype_name(fi::ScalarKind dtype) {
  return dtype == fi::ScalarKind::kFloat16 ? "fp16" : "bf16";
}

std::vector<Case> make_cases(bool all) {
  std::vector<Case> cases;
  auto add = [&](fi::ScalarKind d, const std::string& tag, Case c) {
    c.name = std::string(dtype_name(d)) + "/" + tag;
    c.dtype = d;
    cases.push_back(c);
  };
  constexpr auto kHalf = fi::ScalarKind::kFloat16, kBf16 = fi::ScalarKind::kBFloat16;
  if (!all) {
    add(kHalf, "n2-3x5-c32-16+24-8-stride40", {"", kHalf, 2, 3, 5, 32, 16, 24, 8, 8});
    add(kBf16, "odd-n1-3x4-c13-5+33-5-lead1", {"", kBf16, 1, 3, 4, 13, 5, 33, 5, 0, 1, 2});
    add(kHalf, "negative-n1-2x3-c16-8+8-16", {"", kHalf, 1, 2, 3, 16, 8, 8, 16, 0, 3, 5, true});
    // 128 x 128 tiles (forced): two M tiles, the last of 2 rows.
    add(kBf16, "n1-5x26-c16-8+8-8-tile128x128",
        {"", kBf16, 1, 5, 26, 16, 8, 8, 8, 8, 3, 5, false, 128, 128});
    return cases;
  }
  for (const fi::ScalarKind d : {kHalf, kBf16}) {
    // GoogLeNet's channel counts (c_in, c1, c2r + c3r, c_pool) at 5x6 pixels, batch 2.
    add(d, "3a-n2-5x6", {"", d, 2, 5, 6, 192, 64, 96 + 16, 32});
    add(d, "4e-n2-5x6", {"", d, 2, 5, 6, 528, 256, 160 + 32, 128});
    add(d, "5b-n2-5x6", {"", d, 2, 5, 6, 832, 384, 192 + 48, 128});
    // Odd channel counts (element loads), H != W, an odd out offset (unaligned slices).
    add(d, "odd-n2-3x7-c13-5+33-5-lead1", {"", d, 2, 3, 7, 13, 5, 33, 5, 0, 1, 2});
    add(d, "odd-n1-1x1-c33-13+5-13", {"", d, 1, 1, 1, 33, 13, 5, 13});
    add(d, "odd-n1-4x2-c5-33+13-33-stride8", {"", d, 1, 4, 2, 5, 33, 13, 33, 3});
    // Pixel strides past c_in: a multiple of 8 (cp.async) and not (element loads).
    add(d, "n2-6x5-c40-16+24-8-stride48", {"", d, 2, 6, 5, 40, 16, 24, 8, 8});
    add(d, "n1-5x6-c40-16+24-8-stride43", {"", d, 1, 5, 6, 40, 16, 24, 8, 3});
    // Several pixel tiles (partial last one), the widest staged halo (W = 28) and a wider
    // image (element loads for the pool), all-negative pool windows.
    add(d, "n2-9x8-c64-24+40-16", {"", d, 2, 9, 8, 64, 24, 40, 16});
    add(d, "n1-3x28-c32-8+8-16", {"", d, 1, 3, 28, 32, 8, 8, 16});
    add(d, "n1-2x33-c16-8+8-8", {"", d, 1, 2, 33, 16, 8, 8, 8});
    add(d, "negative-n1-4x5-c48-16+16-24", {"", d, 1, 4, 5, 48, 16, 16, 24, 0, 3, 5, true});
    // No reductions (r empty), and no b1 (all of x's columns into r).
    add(d, "n1-3x3-c16-24+0-8", {"", d, 1, 3, 3, 16, 24, 0, 8});
    add(d, "n1-3x3-c16-0+24-8", {"", d, 1, 3, 3, 16, 0, 24, 8});
    // 128-row tiles: 128 x 128 (two M tiles, the last of 12 rows; a second column tile of 8
    // columns), the same shape forced into 64 x 64 tiles, 64 x 128 and 128 x 128 forced on
    // cases above (the widest staged halo in a 128-row tile), and odd channel counts (element
    // loads for the GEMM and the pool) in one partial 128 x 128 tile.
    add(d, "n2-10x7-c96-64+72-80", {"", d, 2, 10, 7, 96, 64, 72, 80});
    add(d, "n2-10x7-c96-64+72-80-tile64x64",
        {"", d, 2, 10, 7, 96, 64, 72, 80, 0, 3, 5, false, 64, 64});
    add(d, "n2-9x8-c64-24+40-16-tile64x128",
        {"", d, 2, 9, 8, 64, 24, 40, 16, 0, 3, 5, false, 64, 128});
    add(d, "n1-3x28-c32-8+8-16-tile128x128",
        {"", d, 1, 3, 28, 32, 8, 8, 16, 0, 3, 5, false, 128, 128});
    add(d, "odd-n1-5x17-c13-37+35-67-lead1", {"", d, 1, 5, 17, 13, 37, 35, 67, 0, 1, 2});
  }
  return cases;
}

// Corrupts a correct result three ways (a wrong value, a write outside the slices, an unwritten
// element of r) and returns how many of the three the check catches.
int self_test() {
  const Case cs{"selftest", fi::ScalarKind::kFloat16, 1, 2, 3, 16, 8, 8, 8};
  const Run<__half> run = run_case<__half>(cs, 1);
  if (!check_run(cs, run).ok) return 0;
  int caught = 0;
  auto caught_after = [&](auto corrupt) {
    Run<__half> bad = run;
    corrupt(bad);
    caught += !check_run(cs, bad).ok;
  };
  caught_after([&](Run<__half>& b) { b.out[cs.out_lead + 1] = __float2half(1e4f); });
  caught_after([&](Run<__half>& b) { b.out[cs.out_lead + cs.c1] = __float2half(0.0f); });
  caught_after(
      [&](Run<__half>& b) { std::memset(static_cast<void*>(&b.r[2]), 0xFF, sizeof(__half)); });
  return caught;
}

void describe(const Case& cs, const Check& r, double ms) {
  std::printf("%s %-40s rel err b1 %.2g r %.2g b4 %.2g (tol %.0e) %.0f ms%s%s\n",
              r.ok ? "ok  " : "FAIL", cs.name.c_str(), r.max_err[0] / (r.max_ref[0] + 1e-300),
              r.max_err[1] / (r.max_ref[1] + 1e-300), r.max_err[2] / (r.max_ref[2] + 1e-300),
              tolerance(cs.dtype), ms, r.ok ? "" : ": ", r.why.c_str());
}

// The launch's counters from a few CTAs, one per distinct tiling (a full launch at batch 8 would
// take minutes on the shim). A CTA's work (MACs, the bytes cp.async reads, its shared-memory
// accesses) depends on its kind, the columns of its column tile and, in M, on the rows of its
// tile (GEMM CTAs) and also the halo rows inside [0, M) before and after it (pool CTAs); the
// data never changes it. So the tiles are grouped into classes by those numbers (classes():
// interior tiles, the first, the last, the partial ones), the first CTA of each class is launched
// alone and its counters are multiplied by the class's CTA count: the launch's exact MACs,
// cp.async bytes and access counts (conflict degrees are maxima, unchanged), checked against full
// launches when this was written. The counted CTAs' outputs are also checked against the
// float64 reference of their rows and columns.
struct Counted {
  double macs = 0, bytes = 0, ldmatrix = 0, lds = 0, sts = 0;
  unsigned degree[3] = {0, 0, 0};  // ldmatrix, lds, sts
  int ctas = 0;
};

template <typename T>
const char* count_class(const fi::Block1x1Args& args, fin::Block1x1Plan plan, int64_t m_tile,
                        int64_t y_tile, int64_t copies, Counted& c) {
  if (copies == 0) return nullptr;
  plan.tile_m_begin = m_tile;
  plan.tiles_m = 1;
  plan.tile_y_begin = y_tile;
  plan.tiles_y = 1;
  if (const char* error = fin::block_1x1_with_plan(args, plan, nullptr)) return error;
  const simt::LaunchStats st = simt::last_launch_stats();
  const double n = static_cast<double>(copies);
  c.macs += n * static_cast<double>(st.mma_macs);
  c.bytes += n * static_cast<double>(st.cp_async_bytes);
  c.ldmatrix += n * static_cast<double>(st.ldmatrix.instructions);
  c.lds += n * static_cast<double>(st.shared_loads.instructions);
  c.sts += n * static_cast<double>(st.shared_stores.instructions);
  c.degree[0] = std::max(c.degree[0], st.ldmatrix.max_degree);
  c.degree[1] = std::max(c.degree[1], st.shared_loads.max_degree);
  c.degree[2] = std::max(c.degree[2], st.shared_stores.max_degree);
  ++c.ctas;
  return nullptr;
}

// Tiles that do the same work, by a key: key -> (the first such tile, their number).
using Key = std::vector<int64_t>;
using Classes = std::map<Key, std::pair<int64_t, int64_t>>;

template <typename KeyOf>
Classes classes(int64_t tiles, KeyOf key_of) {
  Classes out;
  for (int64_t t = 0; t < tiles; ++t) ++out.try_emplace(key_of(t), t, 0).first->second.second;
  return out;
}

int run_counters(char** argv) {
  int64_t v[8];
  for (int i = 0; i < 8; ++i) v[i] = std::stoll(argv[3 + i]);
  const auto [batch, height, width, c_in, c1, c2r, c3r, c_pool] = v;
  const Case cs{argv[2], fi::ScalarKind::kFloat16, batch, height, width, c_in, c1, c2r + c3r,
                c_pool};
  const auto start = std::chrono::steady_clock::now();
  const Inputs<__half> in = make_inputs<__half>(cs, 7);
  Run<__half> run;
  run.partial = true;
  const fi::Block1x1Args args = prepare(cs, in, run);
  const fin::Block1x1Plan plan = fin::block_1x1_plan(args);
  const int64_t tiles_m = plan.tiles_m, bm = plan.bm, bn = plan.bn, halo = width + 1;
  // Classes of M tiles and of column tiles, by what a CTA loads and multiplies: GEMM CTAs by
  // the tile's rows, pool CTAs also by the halo rows inside [0, M) before and after it.
  auto rows_in = [&](int64_t t) { return std::min(bm, in.pixels - t * bm); };
  const Classes gemm_rows = classes(tiles_m, [&](int64_t t) { return Key{rows_in(t)}; });
  const Classes pool_rows = classes(tiles_m, [&](int64_t t) {
    const int64_t after = std::clamp(in.pixels - (t + 1) * bm, int64_t{0}, halo);
    return Key{std::min(halo, t * bm), rows_in(t), after};
  });
  const Classes gemm_cols =
      classes(plan.tiles_x, [&](int64_t j) { return Key{std::min(bn, in.n_x - j * bn)}; });
  const Classes pool_cols =
      classes(plan.tiles_pool, [&](int64_t j) { return Key{std::min(bn, c_pool - j * bn)}; });
  Counted c;
  const char* error = nullptr;
  std::set<std::pair<int64_t, int64_t>> launched;  // (M tile, column tile) of the counted CTAs
  auto count = [&](const Classes& rows, const Classes& cols, int64_t y0) {
    for (const auto& [row_key, row_class] : rows) {
      for (const auto& [col_key, col_class] : cols) {
        if (error != nullptr) return;
        const int64_t mt = row_class.first, yt = y0 + col_class.first;
        error = count_class<__half>(args, plan, mt, yt, row_class.second * col_class.second, c);
        launched.insert({mt, yt});
      }
    }
  };
  count(gemm_rows, gemm_cols, 0);
  count(pool_rows, pool_cols, plan.tiles_x);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // The reference of the counted CTAs' rows, NaN outside their columns.
  std::vector<char> counted_tile(tiles_m, 0);
  for (const auto& cta : launched) counted_tile[cta.first] = 1;
  for (int64_t p = 0; p < in.pixels; ++p) {
    if (counted_tile[p / bm]) reference_pixel(cs, in, p, run);
    for (int64_t j = 0; j < in.n_x; ++j) {
      if (launched.count({p / bm, j / bn})) continue;
      double& ref = j < c1 ? run.ref_b1[p * c1 + j] : run.ref_r[p * cs.c_red + j - c1];
      ref = NAN;
    }
    for (int64_t j = 0; j < c_pool; ++j) {
      if (!launched.count({p / bm, plan.tiles_x + j / bn})) run.ref_b4[p * c_pool + j] = NAN;
    }
  }
  run.error = error;
  const Check check = check_run(cs, run);

  const int64_t pixels = in.pixels, n_x = in.n_x;
  const double useful = static_cast<double>(pixels * c_in * (n_x + c_pool));
  const double ratio = c.macs / useful;
  const double once = 2.0 * static_cast<double>(pixels * c_in + c_in * (n_x + c_pool));
  const unsigned degree = std::max({c.degree[0], c.degree[1], c.degree[2]});
  std::printf(
      "counters %s batch %lld %lldx%lld tile %dx%d grid %lldx%lld M %lld (%d CTAs counted): "
      "executed/useful MACs %.4f, cp.async bytes %.0f (%.2fx x+w once), bytes/useful FLOP "
      "%.4f, max conflict degree ldmatrix %u lds %u sts %u (%.0f ldmatrix, %.0f lds, %.0f sts), "
      "%.1f s\n",
      cs.name.c_str(), static_cast<long long>(batch), static_cast<long long>(height),
      static_cast<long long>(width), plan.bm, plan.bn, static_cast<long long>(plan.tiles_m),
      static_cast<long long>(plan.tiles_y), static_cast<long long>(pixels), c.ctas, ratio, c.bytes,
      c.bytes / once, c.bytes / (2.0 * useful), c.degree[0], c.degree[1], c.degree[2], c.ldmatrix,
      c.lds, c.sts, s);
  bool ok = check.ok;
  if (!check.ok) std::printf("FAIL parity: %s\n", check.why.c_str());
  if (!(ratio >= 1.0 && ratio <= 1.25)) ok = false, std::printf("FAIL executed/useful MACs\n");
  if (degree != 1) ok = false, std::printf("FAIL bank conflicts (degree %u)\n", degree);
  if (!(c.bytes >= once)) ok = false, std::printf("FAIL cp.async bytes < x + w\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "small";
  if (which == "counters" && argc == 11) return run_counters(argv);
  if (which != "all" && which != "small") {
    std::fprintf(stderr,
                 "usage: %s all|small [substring]\n"
                 "       %s counters name batch height width c_in c1 c2r c3r c_pool\n",
                 argv[0], argv[0]);
    return 2;
  }
  return parity::run_cases(make_cases(which == "all"), argc > 2 ? argv[2] : "", dispatch, describe,
                           self_test);
}
