// Parity of the CUDA kernels (csrc/cuda/conv1x1_slice.cu, chain_1x1_kxk.cu), run on the CPU
// through the SIMT shim (their csrc/emulated/*.cpp builds), against a float64 reference computed
// here straight from the formulas of docs/design.md section 2. Torch-free, so it also builds under
// AddressSanitizer and ThreadSanitizer (tests/test_cuda_kernels_native.py).
//
// Usage: kernel_parity all|small [substring]
//   all:   every case (three dtypes; conv1x1 with and without pool; the chain with K = 3, 5;
//          odd shapes; GoogLeNet's 3a and 5b channel counts at 4x5 pixels);
//   small: a few small cases, for the sanitizer builds;
//   substring: run only the cases whose name contains it.
// For each case: deterministic random inputs (never zero) rounded to the dtype, the reference
// from those rounded values, the output buffer poisoned with NaN (0xFF bytes), the kernel writing
// channels [c0, c0 + cout) of out_pixel_stride > cout channels; then every channel outside the
// slice must still be poison, none inside may be NaN, and max|err| <= tol * max|ref|.
// Then a self-test corrupts a correct result three ways and checks that each is caught.
// Prints one line per case and "checked <n> cases, <f> failed"; exits non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "emulated/chain_1x1_kxk.cpp"
#include "emulated/conv1x1_slice.cpp"
#include "parity_common.h"

namespace {

namespace fi = fused_inception;

using parity::from_double;
using parity::random_bias;
using parity::random_tensor;
using parity::Rng;
using parity::Tensor;
using parity::to_double;

enum class Kind { kConv1x1, kChain };

struct Case {
  std::string name;
  Kind kind;
  fi::ScalarKind dtype;
  int64_t batch, height, width, cin, cr, cout;  // cr: chain only
  int k = 0;                                    // chain only
  bool pool = false;                            // conv1x1 only
  bool negative = false;                        // all-negative x
};

// Where the branch sits in the block output: channels [kC0, kC0 + cout) of cout + kC0 + 5.
constexpr int64_t kC0 = 3;
constexpr int64_t kExtraChannels = 5;

struct Check {
  bool ok;
  double max_err, max_ref;
  std::string why;
};

// Compares the poisoned-then-written output [pixels, stride] with ref [pixels, cout].
template <typename T>
Check check_output(const std::vector<T>& out, const std::vector<double>& ref, int64_t pixels,
                   int64_t cout, int64_t stride, double tol) {
  Check r{true, 0.0, 0.0, ""};
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(out.data());
  for (int64_t p = 0; p < pixels; ++p) {
    for (int64_t c = 0; c < stride; ++c) {
      const int64_t i = p * stride + c;
      if (c < kC0 || c >= kC0 + cout) {
        for (std::size_t b = 0; b < sizeof(T); ++b) {
          if (bytes[i * sizeof(T) + b] != 0xFF && r.ok) {
            r = {false, 0, 0,
                 "channel " + std::to_string(c) + " of pixel " + std::to_string(p) +
                     " outside the slice was written"};
          }
        }
        continue;
      }
      const double v = to_double(out[i]), e = ref[p * cout + c - kC0];
      if (std::isnan(v) && r.ok) {
        r = {false, 0, 0,
             "channel " + std::to_string(c - kC0) + " of pixel " + std::to_string(p) +
                 " is NaN (not written)"};
      }
      r.max_err = std::max(r.max_err, std::fabs(v - e));
      r.max_ref = std::max(r.max_ref, std::fabs(e));
    }
  }
  if (r.ok && r.max_ref == 0.0) r = {false, r.max_err, r.max_ref, "reference is all zero"};
  if (r.ok && !(r.max_err <= tol * r.max_ref)) {
    r.ok = false;
    r.why = "max|err| " + std::to_string(r.max_err) + " > " + std::to_string(tol) + " * max|ref| " +
            std::to_string(r.max_ref);
  }
  return r;
}

// A case's inputs, reference [pixels, cout] and the kernel's output [pixels, stride].
template <typename T>
struct Run {
  std::vector<double> ref;
  std::vector<T> out;
  int64_t pixels, stride;
  const char* error;
};

template <typename T>
Run<T> run_conv1x1(const Case& cs, Rng& rng) {
  const int64_t pixels = cs.batch * cs.height * cs.width, stride = cs.cout + kC0 + kExtraChannels;
  const Tensor<T> x = random_tensor<T>(rng, pixels * cs.cin, 1.0, cs.negative);
  const Tensor<T> w = random_tensor<T>(rng, cs.cin * cs.cout, 1.0 / std::sqrt(double(cs.cin)));
  const std::vector<float> bias = random_bias(rng, cs.cout);
  Run<T> run{std::vector<double>(pixels * cs.cout), std::vector<T>(pixels * stride), pixels, stride,
             nullptr};
  std::vector<double> a(cs.cin);
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t y = p / cs.width % cs.height, xx = p % cs.width;
    for (int64_t c = 0; c < cs.cin; ++c) {
      a[c] = cs.pool ? -INFINITY : x.ref[p * cs.cin + c];
      for (int64_t dy = -1; cs.pool && dy <= 1; ++dy) {
        for (int64_t dx = -1; dx <= 1; ++dx) {
          if (y + dy < 0 || y + dy >= cs.height || xx + dx < 0 || xx + dx >= cs.width) continue;
          a[c] = std::max(a[c], x.ref[(p + dy * cs.width + dx) * cs.cin + c]);
        }
      }
    }
    for (int64_t j = 0; j < cs.cout; ++j) {
      double s = bias[j];
      for (int64_t c = 0; c < cs.cin; ++c) s += a[c] * w.ref[c * cs.cout + j];
      run.ref[p * cs.cout + j] = std::max(s, 0.0);
    }
  }
  std::memset(static_cast<void*>(run.out.data()), 0xFF, run.out.size() * sizeof(T));
  const fi::Conv1x1SliceArgs args{
      cs.dtype, x.data.data(), w.data.data(), bias.data(), run.out.data() + kC0,
      cs.batch, cs.height,     cs.width,      cs.cin,      cs.cout,
      stride,   cs.pool};
  run.error = fi::emulated::conv1x1_slice(args, nullptr);
  return run;
}

template <typename T>
Run<T> run_chain(const Case& cs, Rng& rng) {
  const int64_t pixels = cs.batch * cs.height * cs.width, stride = cs.cout + kC0 + kExtraChannels;
  const int64_t k = cs.k, taps = k * k;
  const Tensor<T> x = random_tensor<T>(rng, pixels * cs.cin, 1.0, cs.negative);
  const Tensor<T> w_red = random_tensor<T>(rng, cs.cin * cs.cr, 1.0 / std::sqrt(double(cs.cin)));
  const std::vector<float> b_red = random_bias(rng, cs.cr);
  const Tensor<T> w_kxk =
      random_tensor<T>(rng, taps * cs.cr * cs.cout, 1.0 / std::sqrt(double(taps * cs.cr)));
  const std::vector<float> b_kxk = random_bias(rng, cs.cout);
  Run<T> run{std::vector<double>(pixels * cs.cout), std::vector<T>(pixels * stride), pixels, stride,
             nullptr};
  std::vector<double> r(pixels * cs.cr);
  for (int64_t p = 0; p < pixels; ++p) {
    for (int64_t c = 0; c < cs.cr; ++c) {
      double s = b_red[c];
      for (int64_t i = 0; i < cs.cin; ++i) s += x.ref[p * cs.cin + i] * w_red.ref[i * cs.cr + c];
      r[p * cs.cr + c] = std::max(s, 0.0);
    }
  }
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t y = p / cs.width % cs.height, xx = p % cs.width;
    for (int64_t j = 0; j < cs.cout; ++j) {
      double s = b_kxk[j];
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t dy = t / k - k / 2, dx = t % k - k / 2;
        // Zero padding of r: taps outside the image contribute nothing.
        if (y + dy < 0 || y + dy >= cs.height || xx + dx < 0 || xx + dx >= cs.width) continue;
        const int64_t q = p + dy * cs.width + dx;
        for (int64_t c = 0; c < cs.cr; ++c) {
          s += r[q * cs.cr + c] * w_kxk.ref[(t * cs.cr + c) * cs.cout + j];
        }
      }
      run.ref[p * cs.cout + j] = std::max(s, 0.0);
    }
  }
  std::memset(static_cast<void*>(run.out.data()), 0xFF, run.out.size() * sizeof(T));
  const fi::ChainArgs args{cs.dtype,
                           x.data.data(),
                           w_red.data.data(),
                           b_red.data(),
                           w_kxk.data.data(),
                           b_kxk.data(),
                           run.out.data() + kC0,
                           cs.batch,
                           cs.height,
                           cs.width,
                           cs.cin,
                           cs.cr,
                           cs.cout,
                           stride,
                           cs.k};
  run.error = fi::emulated::chain_1x1_kxk(args, nullptr);
  return run;
}

double tolerance(fi::ScalarKind dtype) {
  return dtype == fi::ScalarKind::kFloat32 ? 1e-4 : dtype == fi::ScalarKind::kFloat16 ? 1e-2 : 2e-2;
}

template <typename T>
Check run_case(const Case& cs, uint64_t seed, Run<T>* keep = nullptr) {
  Rng rng(seed);
  Run<T> run = cs.kind == Kind::kConv1x1 ? run_conv1x1<T>(cs, rng) : run_chain<T>(cs, rng);
  if (run.error != nullptr) return {false, 0, 0, std::string("launch failed: ") + run.error};
  Check check =
      check_output(run.out, run.ref, run.pixels, cs.cout, run.stride, tolerance(cs.dtype));
  if (keep != nullptr) *keep = std::move(run);
  return check;
}

Check dispatch(const Case& cs, uint64_t seed) {
  switch (cs.dtype) {
    case fi::ScalarKind::kFloat32:
      return run_case<float>(cs, seed);
    case fi::ScalarKind::kFloat16:
      return run_case<__half>(cs, seed);
    case fi::ScalarKind::kBFloat16:
      return run_case<__nv_bfloat16>(cs, seed);
  }
  return {false, 0, 0, "unknown dtype"};
}

const char* dtype_name(fi::ScalarKind dtype) {
  return dtype == fi::ScalarKind::kFloat32   ? "fp32"
         : dtype == fi::ScalarKind::kFloat16 ? "fp16"
                                             : "bf16";
}

std::vector<Case> make_cases(bool all) {
  std::vector<Case> cases;
  const fi::ScalarKind dtypes[] = {fi::ScalarKind::kFloat32, fi::ScalarKind::kFloat16,
                                   fi::ScalarKind::kBFloat16};
  auto conv = [&](fi::ScalarKind d, const std::string& tag, int64_t n, int64_t h, int64_t w,
                  int64_t cin, int64_t cout, bool pool, bool negative = false) {
    cases.push_back({std::string("conv1x1/") + dtype_name(d) + (pool ? "/pool/" : "/") + tag,
                     Kind::kConv1x1, d, n, h, w, cin, 0, cout, 0, pool, negative});
  };
  auto chain = [&](fi::ScalarKind d, const std::string& tag, int64_t n, int64_t h, int64_t w,
                   int64_t cin, int64_t cr, int64_t cout, int k) {
    cases.push_back({std::string("chain/") + dtype_name(d) + "/k" + std::to_string(k) + "/" + tag,
                     Kind::kChain, d, n, h, w, cin, cr, cout, k, false, false});
  };
  if (!all) {
    conv(fi::ScalarKind::kFloat32, "n1-3x5-c17-33", 1, 3, 5, 17, 33, true);
    conv(fi::ScalarKind::kBFloat16, "n2-3x4-c33-17", 2, 3, 4, 33, 17, false);
    conv(fi::ScalarKind::kFloat16, "negative-n1-3x4-c17-9", 1, 3, 4, 17, 9, true, true);
    chain(fi::ScalarKind::kFloat16, "n1-9x10-c17-33-3", 1, 9, 10, 17, 33, 3, 3);
    chain(fi::ScalarKind::kFloat32, "n1-4x5-c3-17-2", 1, 4, 5, 3, 17, 2, 5);
    chain(fi::ScalarKind::kBFloat16, "n1-3x2-c9-17-33", 1, 3, 2, 9, 17, 33, 3);
    return cases;
  }
  for (const fi::ScalarKind d : dtypes) {
    for (const bool pool : {false, true}) {
      conv(d, "odd-n2-9x11-c17-33", 2, 9, 11, 17, 33, pool);
      conv(d, "odd-n1-1x1-c3-1", 1, 1, 1, 3, 1, pool);
    }
    conv(d, "odd-n1-5x3-c1-65", 1, 5, 3, 1, 65, false);
    conv(d, "negative-n1-4x5-c33-17", 1, 4, 5, 33, 17, true, true);
    conv(d, "3a-b1-192-64", 1, 4, 5, 192, 64, false);
    conv(d, "3a-b4-192-32", 1, 4, 5, 192, 32, true);
    conv(d, "5b-b1-832-384", 1, 4, 5, 832, 384, false);
    conv(d, "5b-b4-832-128", 1, 4, 5, 832, 128, true);
    for (const int k : {3, 5}) chain(d, "odd-n2-9x11-c17-33-3", 2, 9, 11, 17, 33, 3, k);
    chain(d, "odd-n1-1x1-c3-1-17", 1, 1, 1, 3, 1, 17, 3);
    chain(d, "odd-n1-1x1-c3-1-17", 1, 1, 1, 3, 1, 17, 5);
    chain(d, "odd-n1-10x3-c33-17-65", 1, 10, 3, 33, 17, 65, 5);
    chain(d, "3a-b2-192-96-128", 1, 4, 5, 192, 96, 128, 3);
    chain(d, "3a-b3-192-16-32", 1, 4, 5, 192, 16, 32, 5);
    chain(d, "5b-b2-832-192-384", 1, 4, 5, 832, 192, 384, 3);
    chain(d, "5b-b3-832-48-128", 1, 4, 5, 832, 48, 128, 5);
    chain(d, "5b-b3-torchvision-832-48-128", 1, 4, 5, 832, 48, 128, 3);
  }
  return cases;
}

// Corrupts a correct result three ways (a wrong value, a write outside the slice, an unwritten
// element) and returns how many of the three the check catches.
int self_test() {
  const Case cs{"selftest", Kind::kConv1x1, fi::ScalarKind::kFloat32, 1, 2, 3, 5, 0, 4, 0, false};
  Run<float> run;
  if (!run_case<float>(cs, 1, &run).ok) return 0;
  int caught = 0;
  auto caught_after = [&](auto corrupt) {
    std::vector<float> out = run.out;
    corrupt(out);
    caught += !check_output(out, run.ref, run.pixels, cs.cout, run.stride, 1e-4).ok;
  };
  caught_after([&](std::vector<float>& out) { out[run.stride + kC0 + 1] += 1.0f; });
  caught_after([&](std::vector<float>& out) { out[run.stride + kC0 + cs.cout] = 0.0f; });
  caught_after([&](std::vector<float>& out) { std::memset(&out[kC0 + 2], 0xFF, sizeof(float)); });
  return caught;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "small";
  if (which != "all" && which != "small") {
    std::fprintf(stderr, "usage: %s all|small [substring]\n", argv[0]);
    return 2;
  }
  return parity::run_cases(
      make_cases(which == "all"), argc > 2 ? argv[2] : "", dispatch,
      [](const Case& cs, const Check& r, double ms) {
        std::printf("%s %-52s max_err %.3g max_ref %.3g rel %.3g (tol %.0e) %.0f ms%s%s\n",
                    r.ok ? "ok  " : "FAIL", cs.name.c_str(), r.max_err, r.max_ref,
                    r.max_ref > 0 ? r.max_err / r.max_ref : 0.0, tolerance(cs.dtype), ms,
                    r.ok ? "" : ": ", r.why.c_str());
      },
      self_test);
}
