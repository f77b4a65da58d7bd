// What the kernel parity drivers (tests/cpp/*_parity.cpp) share: deterministic random inputs
// (values rounded to the kernel's dtype with their float64 copies, never zero, the same on every
// platform and run) and the loop that checks their cases and prints the summary the pytest
// files read.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

namespace parity {

// SplitMix64 and Box-Muller: the same values on every platform and run.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  double uniform() {  // (0, 1)
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (static_cast<double>(z >> 11) + 0.5) / 9007199254740992.0;
  }
  // Normal, magnitude at least 0.01 (never zero, also after rounding to 16 bits).
  double normal() {
    for (;;) {
      const double v =
          std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform());
      if (std::fabs(v) >= 0.01) return v;
    }
  }

 private:
  uint64_t state_;
};

double to_double(float v) { return v; }
double to_double(__half v) { return __half2float(v); }
double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(v));
  } else {
    return static_cast<float>(v);
  }
}

// A tensor in the kernel's dtype and the float64 copy of its (rounded) values.
template <typename T>
struct Tensor {
  std::vector<T> data;
  std::vector<double> ref;
};

template <typename T>
Tensor<T> random_tensor(Rng& rng, int64_t size, double scale, bool negative = false) {
  Tensor<T> t;
  for (int64_t i = 0; i < size; ++i) {
    double v = scale * rng.normal();
    if (negative) v = -std::fabs(v) - 0.05;
    t.data.push_back(from_double<T>(v));
    t.ref.push_back(to_double(t.data.back()));
  }
  return t;
}

// Biases of both signs; the first is positive enough that even a single output channel of a
// single pixel is rarely all ReLU-zero (an all-zero reference would fail as vacuous).
std::vector<float> random_bias(Rng& rng, int64_t size) {
  std::vector<float> b;
  for (int64_t i = 0; i < size; ++i) b.push_back(static_cast<float>(0.5 * rng.normal()));
  if (size > 0) b[0] = std::fabs(b[0]) + 1.0f;
  return b;
}

// Checks every case whose name contains `filter` (check(case, seed) -> a result with .ok; the
// seed is the case's 1-based index, independent of the filter) and prints
// describe(case, result, milliseconds) for each, then the self-test's count of caught
// corruptions (of 3) and "checked <n> cases, <f> failed". Returns main's exit code.
template <typename Case, typename CheckFn, typename Describe, typename SelfTest>
int run_cases(const std::vector<Case>& cases, const std::string& filter, CheckFn check,
              Describe describe, SelfTest self_test) {
  int checked = 0, failed = 0;
  uint64_t seed = 0;
  for (const Case& cs : cases) {
    ++seed;
    if (cs.name.find(filter) == std::string::npos) continue;
    const auto start = std::chrono::steady_clock::now();
    const auto r = check(cs, seed);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ++checked;
    failed += !r.ok;
    describe(cs, r, ms);
    std::fflush(stdout);
  }
  const int caught = self_test();
  std::printf("self-test caught %d of 3 corruptions\n", caught);
  std::printf("checked %d cases, %d failed\n", checked, failed);
  return failed == 0 && caught == 3 && checked > 0 ? 0 : 1;
}

}  // namespace parity
