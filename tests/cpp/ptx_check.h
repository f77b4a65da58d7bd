// Helpers of the PTX-emulation test programs (tests/cpp/shim_ptx_*.cpp): aligned host buffers,
// failure counting, and launch-error checks. Each program prints "FAIL ..." lines and exits 1,
// or prints its OK line and exits 0.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace ptx_check {

inline int failures = 0;

// Counts a failure and prints it (the first 20 only).
template <typename... Args>
void fail(const char* format, Args... args) {
  if (failures++ < 20) {
    std::printf("FAIL ");
    std::printf(format, args...);
    std::printf("\n");
  }
}

struct Free {
  void operator()(void* p) const { std::free(p); }
};

// n elements of T, 128-byte aligned, exactly n * sizeof(T) bytes when that is a multiple of 128
// (so AddressSanitizer sees an access past the end).
template <typename T>
std::unique_ptr<T[], Free> buffer(std::size_t n) {
  const std::size_t bytes = (n * sizeof(T) + 127) / 128 * 128;
  return std::unique_ptr<T[], Free>(static_cast<T*>(std::aligned_alloc(128, bytes)));
}

// The launch must have succeeded.
inline void expect_ok(const char* name, const char* error) {
  if (error != nullptr) fail("%s: launch error: %s", name, error);
}

// The launch must have failed with an error containing `needle`; the error is printed (unless
// `print` is false) so the Python test can check the whole message.
inline void expect_error(const char* name, const char* error, const char* needle,
                         bool print = true) {
  if (error == nullptr) {
    fail("%s: launch succeeded, expected an error containing \"%s\"", name, needle);
  } else if (std::strstr(error, needle) == nullptr) {
    fail("%s: error \"%s\" does not contain \"%s\"", name, error, needle);
  } else if (print) {
    std::printf("error %s: %s\n", name, error);
  }
}

inline int finish(const char* ok_line) {
  if (failures != 0) {
    std::printf("FAIL: %d failures\n", failures);
    return 1;
  }
  std::printf("%s\n", ok_line);
  return 0;
}

}  // namespace ptx_check
