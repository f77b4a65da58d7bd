// block_kxk (csrc/cuda/block_kxk.cu) on the CPU through the SIMT shim: parity against a float64
// reference of docs/design.md's formulas, and the shim's counters at the GPU's tiling.
//
// Usage: block_kxk_parity all|small|counters [substring]
//   all:      every parity case (GoogLeNet channel counts of 3a, 4e and 5b at small images,
//             k3 = 3 and 5, odd channel counts, H != W, 1x1 and 2x2 images, unaligned
//             pointers and slice offsets; fp16 and bf16), plus the fp32 rejection;
//   small:    a few small parity cases (for the sanitizer builds);
//   counters: the counted launch of given GoogLeNet blocks at batch 8 (substring: block names,
//             e.g. "3a,5b"; all nine by default), one line per block and k3.
// Parity: random r, weights and biases (never zero) rounded to the dtype; out filled with NaN
// (0xFF bytes) before the launch; every channel outside the two written slices must stay
// poison, none inside may be NaN, and max|out - ref| <= tol * max|ref| per slice.
// Prints "ok ..."/"FAIL ..." per case and "checked <n> cases, <f> failed"; non-zero exit on
// any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "emulated/block_kxk.cpp"
#include "parity_common.h"

namespace {

namespace fin = fused_inception;

// xorshift64*: deterministic values, magnitudes in [0.1, 1) with random sign (never zero).
struct Values {
  uint64_t s;
  double next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    const double u = static_cast<double>((s * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
    return (u < 0.5 ? -1.0 : 1.0) * (0.1 + 0.9 * std::fmod(2.0 * u, 1.0));
  }
};

// `count` values of the dtype at an element offset `shift` into their buffer (shift 1 makes
// the pointer 2 bytes off 16-byte alignment: the kernel's element-load path), with their
// float64 copies.
template <typename T>
struct Buffer {
  std::vector<T> storage;
  std::vector<double> value;
  int shift;
  Buffer(Values& rng, int64_t count, double scale, int shift_) : shift(shift_) {
    storage.resize(count + 8);
    for (int64_t i = 0; i < count; ++i) {
      storage[shift + i] = parity::from_double<T>(scale * rng.next());
      value.push_back(parity::to_double(storage[shift + i]));
    }
  }
  const T* data() const { return storage.data() + shift; }
};

struct Case {
  std::string name;
  fin::ScalarKind dtype;
  int64_t batch, height, width, c2r, c3r, c2, c3;
  int k3;
  int64_t off2 = 2, off3 = 0, extra = 3;  // off3 0: right after b2's slice plus one gap
  int shift = 0;                          // element misalignment of r, w2 and w3
  int bm = 0, bn2 = 0, bn3 = 0;           // a forced tiling (0: block_kxk's choice)
};

// The reference of one branch: relu(convKxK(r[:, col0:col0+cr]) + bias), zero padding.
std::vector<double> reference(const Case& cs, const std::vector<double>& r, int64_t col0,
                              int64_t cr, const std::vector<double>& w, const std::vector<float>& b,
                              int64_t cout, int k) {
  const int64_t pixels = cs.batch * cs.height * cs.width, ld = cs.c2r + cs.c3r;
  std::vector<double> out(pixels * cout);
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t y = p / cs.width % cs.height, x = p % cs.width;
    for (int64_t j = 0; j < cout; ++j) {
      double sum = b[j];
      for (int t = 0; t < k * k; ++t) {
        const int64_t yy = y + t / k - k / 2, xx = x + t % k - k / 2;
        if (yy < 0 || yy >= cs.height || xx < 0 || xx >= cs.width) continue;
        const int64_t q = p + (yy - y) * cs.width + (xx - x);
        for (int64_t c = 0; c < cr; ++c) sum += r[q * ld + col0 + c] * w[(t * cr + c) * cout + j];
      }
      out[p * cout + j] = sum > 0.0 ? sum : 0.0;
    }
  }
  return out;
}

template <typename T>
bool run_case(const Case& cs, uint64_t seed) {
  Values rng{seed};
  const int64_t pixels = cs.batch * cs.height * cs.width, k3 = cs.k3;
  const int64_t off3 = cs.off3 > 0 ? cs.off3 : cs.off2 + cs.c2 + 1;
  const int64_t stride = off3 + cs.c3 + cs.extra;
  const Buffer<T> r(rng, pixels * (cs.c2r + cs.c3r), 1.0, cs.shift);
  const Buffer<T> w2(rng, 9 * cs.c2r * cs.c2, 1.0 / std::sqrt(9.0 * cs.c2r), cs.shift);
  const Buffer<T> w3(rng, k3 * k3 * cs.c3r * cs.c3, 1.0 / std::sqrt(double(k3 * k3 * cs.c3r)),
                     cs.shift);
  std::vector<float> b2(cs.c2), b3(cs.c3);
  for (auto& v : b2) v = static_cast<float>(0.3 * rng.next() + 0.2);
  for (auto& v : b3) v = static_cast<float>(0.3 * rng.next() + 0.2);
  std::vector<T> out(pixels * stride);
  std::memset(static_cast<void*>(out.data()), 0xFF, out.size() * sizeof(T));
  const fin::BlockKxkArgs args{cs.dtype,   r.data(), w2.data(), b2.data(), w3.data(), b3.data(),
                               out.data(), cs.batch, cs.height, cs.width,  cs.c2r,    cs.c3r,
                               cs.c2,      cs.c3,    stride,    cs.off2,   off3,      cs.k3};
  fin::emulated::BlockKxkPlan plan = fin::emulated::block_kxk_plan(args);
  if (cs.bm > 0) {
    plan.bm = cs.bm;
    plan.bn2 = cs.bn2;
    plan.bn3 = cs.bn3;
    plan.tiles_m = (pixels + cs.bm - 1) / cs.bm;
    plan.tiles2 = (cs.c2 + cs.bn2 - 1) / cs.bn2;
    plan.tiles3 = (cs.c3 + cs.bn3 - 1) / cs.bn3;
  }
  const char* error = fin::emulated::block_kxk_with_plan(args, plan, nullptr);
  if (error != nullptr) {
    std::printf("FAIL %s: launch error: %s\n", cs.name.c_str(), error);
    return false;
  }
  const std::vector<double> ref2 = reference(cs, r.value, 0, cs.c2r, w2.value, b2, cs.c2, 3);
  const std::vector<double> ref3 =
      reference(cs, r.value, cs.c2r, cs.c3r, w3.value, b3, cs.c3, cs.k3);
  const double tol = cs.dtype == fin::ScalarKind::kFloat16 ? 1e-2 : 2e-2;
  double err[2] = {0, 0}, top[2] = {0, 0};
  std::string why;
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(out.data());
  for (int64_t p = 0; p < pixels && why.empty(); ++p) {
    for (int64_t c = 0; c < stride; ++c) {
      const int64_t i = p * stride + c;
      const int slice = c >= cs.off2 && c < cs.off2 + cs.c2 ? 0
                        : c >= off3 && c < off3 + cs.c3     ? 1
                                                            : -1;
      if (slice < 0) {
        for (std::size_t b = 0; b < sizeof(T); ++b) {
          if (bytes[i * sizeof(T) + b] != 0xFF) {
            why = "channel " + std::to_string(c) + " of pixel " + std::to_string(p) +
                  " outside both slices was written";
          }
        }
        continue;
      }
      const double v = parity::to_double(out[i]);
      const double e = slice == 0 ? ref2[p * cs.c2 + c - cs.off2] : ref3[p * cs.c3 + c - off3];
      if (std::isnan(v)) {
        why = "channel " + std::to_string(c) + " of pixel " + std::to_string(p) + " is NaN";
      }
      err[slice] = std::max(err[slice], std::fabs(v - e));
      top[slice] = std::max(top[slice], std::fabs(e));
    }
  }
  for (int s = 0; s < 2 && why.empty(); ++s) {
    const int64_t cout = s == 0 ? cs.c2 : cs.c3;
    if (cout > 0 && top[s] == 0.0) why = "reference of b" + std::to_string(s + 2) + " is all 0";
    if (cout > 0 && !(err[s] <= tol * top[s])) {
      why = "b" + std::to_string(s + 2) + ": max|err| " + std::to_string(err[s]) + " > " +
            std::to_string(tol) + " * max|ref| " + std::to_string(top[s]);
    }
  }
  std::printf("%s %s (bm %d, bn2 %d, bn3 %d): max|err|/max|ref| b2 %.2e b3 %.2e%s%s\n",
              why.empty() ? "ok" : "FAIL", cs.name.c_str(), plan.bm, plan.bn2, plan.bn3,
              top[0] > 0 ? err[0] / top[0] : 0.0, top[1] > 0 ? err[1] / top[1] : 0.0,
              why.empty() ? "" : ": ", why.c_str());
  return why.empty();
}

std::vector<Case> parity_cases(bool small) {
  using fin::ScalarKind;
  const ScalarKind h = ScalarKind::kFloat16, bf = ScalarKind::kBFloat16;
  if (small) {
    return {
        {"small_fp16_k5", h, 1, 3, 4, 16, 8, 24, 16, 5},
        {"small_bf16_odd_unaligned", bf, 1, 2, 3, 5, 13, 7, 5, 3, 1, 0, 2, 1},
    };
  }
  std::vector<Case> cases;
  for (const ScalarKind dt : {h, bf}) {
    const std::string d = dt == h ? "fp16" : "bf16";
    // GoogLeNet's channel counts (c2r, c3r, c2, c3) at small images; each block with both
    // k3 across the two dtypes (the shim needs about 2 s per CTA of these).
    const int k_a = dt == h ? 3 : 5, k_b = 8 - k_a;
    cases.push_back(
        {"3a_5x6_" + d + "_k" + std::to_string(k_a), dt, 2, 5, 6, 96, 16, 128, 32, k_a});
    cases.push_back(
        {"4e_7x7_" + d + "_k" + std::to_string(k_b), dt, 2, 7, 7, 160, 32, 320, 128, k_b});
    cases.push_back(
        {"5b_7x7_" + d + "_k" + std::to_string(k_a), dt, 2, 7, 7, 192, 48, 384, 128, k_a});
    // Odd shapes: channels not multiples of 8, H != W, tiny images, unaligned offsets/pointers.
    cases.push_back({"odd_5_13_33_" + d, dt, 2, 3, 7, 5, 13, 33, 13, 5, 1, 0, 2});
    cases.push_back({"odd_33_5_" + d, dt, 1, 6, 2, 33, 5, 13, 33, 3, 3, 40, 1});
    cases.push_back({"1x1_image_" + d, dt, 3, 1, 1, 24, 16, 40, 24, 5});
    cases.push_back({"2x2_image_" + d, dt, 2, 2, 2, 16, 24, 48, 32, 5, 5, 0, 1});
    cases.push_back({"unaligned_ptrs_" + d, dt, 1, 4, 5, 32, 16, 24, 16, 3, 2, 0, 3, 1});
    // The 128-row tiles (two m16 fragments per warp, a partial last tile) and 96-wide ones.
    if (dt == h) {
      Case forced{"bm128_bn96_9x10_" + d, dt, 2, 9, 10, 40, 24, 96, 64, 5};
      forced.bm = 128;
      forced.bn2 = 96;
      forced.bn3 = 64;
      cases.push_back(forced);
    }
    // A wide image (W = 70): the 5x5 windows are staged in parts of fewer tap rows.
    cases.push_back({"wide_70_" + d, dt, 1, 3, 70, 16, 8, 16, 16, 5});
  }
  return cases;
}

// fp32 is rejected with a message (it runs on version 1's kernels).
bool fp32_rejected() {
  const float one = 1.0f;
  float out = 0.0f;
  const fin::BlockKxkArgs args{fin::ScalarKind::kFloat32,
                               &one,
                               &one,
                               &one,
                               &one,
                               &one,
                               &out,
                               1,
                               1,
                               1,
                               1,
                               1,
                               1,
                               1,
                               1,
                               0,
                               0,
                               3};
  const char* error = fin::emulated::block_kxk(args, nullptr);
  const bool ok = error != nullptr && out == 0.0f;
  std::printf("%s fp32_rejected: %s\n", ok ? "ok" : "FAIL", error ? error : "(no error)");
  return ok;
}

// GoogLeNet's blocks (fused_inception/configs.py GOOGLENET_BLOCKS): c2r, c2, c3r, c3, hw.
struct Block {
  const char* name;
  int64_t c2r, c2, c3r, c3, hw;
};
constexpr Block kBlocks[] = {
    {"3a", 96, 128, 16, 32, 28},   {"3b", 128, 192, 32, 96, 28}, {"4a", 96, 208, 16, 48, 14},
    {"4b", 112, 224, 24, 64, 14},  {"4c", 128, 256, 24, 64, 14}, {"4d", 144, 288, 32, 64, 14},
    {"4e", 160, 320, 32, 128, 14}, {"5a", 160, 320, 32, 128, 7}, {"5b", 192, 384, 48, 128, 7},
};

// One block's launch at batch 8, fp16, at the tiling block_kxk chooses (the GPU's). Every CTA
// of a branch runs the same mma steps, so the executed MACs of the launch are exactly the
// grid's CTA counts times those of one CTA per branch, which are counted here (the whole grid
// would take minutes on the shim): an interior M tile (its halo all inside [0, M)) and output
// tile 0, launched alone. Its cp.async bytes times the grid bound the launch's loads from above
// (tiles at the ends of M and of the channels zero-fill part of theirs).
struct Counted {
  double macs = 0, bytes = 0;
  simt::SharedAccessStats ldmatrix;
  const char* error = nullptr;
};

Counted count_branch(const fin::BlockKxkArgs& args, fin::emulated::BlockKxkPlan plan, bool b2) {
  const int64_t ctas = plan.tiles_m * (b2 ? plan.tiles2 : plan.tiles3);
  plan.tile_m_begin = plan.tiles_m / 2;
  plan.tiles_m = 1;
  plan.tiles2 = b2 ? 1 : 0;
  plan.tiles3 = b2 ? 0 : 1;
  Counted c;
  if (ctas == 0) return c;
  c.error = fin::emulated::block_kxk_with_plan(args, plan, nullptr);
  const simt::LaunchStats st = simt::last_launch_stats();
  c.macs = static_cast<double>(ctas) * static_cast<double>(st.mma_macs);
  c.bytes = static_cast<double>(ctas) * static_cast<double>(st.cp_async_bytes);
  c.ldmatrix = st.ldmatrix;
  return c;
}

bool count_block(const Block& blk, int k3) {
  const int64_t batch = 8, M = batch * blk.hw * blk.hw, ld = blk.c2r + blk.c3r;
  const int64_t stride = blk.c2 + blk.c3;
  std::vector<__half> r(M * ld, __float2half_rn(0.25f)), out(M * stride);
  std::vector<__half> w2(9 * blk.c2r * blk.c2, __float2half_rn(0.01f));
  std::vector<__half> w3(k3 * k3 * blk.c3r * blk.c3, __float2half_rn(0.01f));
  std::vector<float> b2(blk.c2, 0.1f), b3(blk.c3, 0.1f);
  const fin::BlockKxkArgs args{fin::ScalarKind::kFloat16,
                               r.data(),
                               w2.data(),
                               b2.data(),
                               w3.data(),
                               b3.data(),
                               out.data(),
                               batch,
                               blk.hw,
                               blk.hw,
                               blk.c2r,
                               blk.c3r,
                               blk.c2,
                               blk.c3,
                               stride,
                               0,
                               blk.c2,
                               k3};
  const fin::emulated::BlockKxkPlan plan = fin::emulated::block_kxk_plan(args);
  const Counted c2 = count_branch(args, plan, true), c3 = count_branch(args, plan, false);
  const char* error = c2.error != nullptr ? c2.error : c3.error;
  const double useful =
      static_cast<double>(M) * (9.0 * blk.c2r * blk.c2 + double(k3 * k3) * blk.c3r * blk.c3);
  const double ratio = (c2.macs + c3.macs) / useful;
  const double bytes_per_flop = (c2.bytes + c3.bytes) / (2.0 * useful);
  const unsigned degree = std::max(c2.ldmatrix.max_degree, c3.ldmatrix.max_degree);
  const double limit = k3 == 5 ? 1.30 : 1.25;
  const bool ok = error == nullptr && ratio <= limit && c2.macs + c3.macs == plan.executed_macs &&
                  degree == 1 && c2.ldmatrix.instructions > 0 && c3.ldmatrix.instructions > 0 &&
                  c2.bytes + c3.bytes > 0 && c2.bytes + c3.bytes <= plan.loaded_bytes;
  std::printf(
      "%s counters %s k3=%d: bm %d bn2 %d bn3 %d tap rows per window %d/%d grid %lldx%lld | "
      "executed/useful MACs %.3f (model %.3f) | cp.async bytes per useful FLOP %.4f (model "
      "%.4f) | ldmatrix max degree %u, wavefronts/phase %.3f%s%s\n",
      ok ? "ok" : "FAIL", blk.name, k3, plan.bm, plan.bn2, plan.bn3, plan.rows2, plan.rows3,
      static_cast<long long>(plan.tiles_m), static_cast<long long>(plan.tiles2 + plan.tiles3),
      ratio, plan.executed_macs / useful, bytes_per_flop, plan.loaded_bytes / (2.0 * useful),
      degree,
      static_cast<double>(c2.ldmatrix.wavefronts + c3.ldmatrix.wavefronts) /
          static_cast<double>(c2.ldmatrix.phases + c3.ldmatrix.phases),
      error ? ": " : "", error ? error : "");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "all";
  const std::string filter = argc > 2 ? argv[2] : "";
  int checked = 0, failed = 0;
  auto tally = [&](bool ok) {
    ++checked;
    failed += ok ? 0 : 1;
  };
  if (mode == "counters") {
    for (const Block& blk : kBlocks) {
      if (!filter.empty() &&
          ("," + filter + ",").find("," + std::string(blk.name) + ",") == std::string::npos) {
        continue;
      }
      for (const int k3 : {3, 5}) tally(count_block(blk, k3));
    }
  } else if (mode == "all" || mode == "small") {
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (const Case& cs : parity_cases(mode == "small")) {
      if (cs.name.find(filter) == std::string::npos) continue;
      seed += 0x1234567ull;
      tally(cs.dtype == fin::ScalarKind::kFloat16 ? run_case<__half>(cs, seed)
                                                  : run_case<__nv_bfloat16>(cs, seed));
    }
    if (mode == "all" && filter.empty()) tally(fp32_rejected());
  } else {
    std::fprintf(stderr, "usage: block_kxk_parity all|small|counters [substring]\n");
    return 2;
  }
  std::printf("checked %d cases, %d failed\n", checked, failed);
  return failed == 0 && checked > 0 ? 0 : 1;
}
