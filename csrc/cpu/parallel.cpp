// See parallel.h: remembers, through a pthread_atfork handler registered when the extension
// loads, that this process is a fork() child; parallel_for_probe, the tests' view of the loop.
#include "cpu/parallel.h"

#include <ATen/ops/zeros.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace fused_inception {
namespace {

std::atomic<bool> forked_child{false};

void mark_forked_child() { forked_child.store(true, std::memory_order_relaxed); }

const bool registered = [] {
  pthread_atfork(nullptr, nullptr, &mark_forked_child);
  return true;
}();

}  // namespace

bool in_forked_child() { return forked_child.load(std::memory_order_relaxed); }

// Declared and described in csrc/fused_inception.cpp, which registers it.
at::Tensor parallel_for_probe(int64_t n, int64_t grain_size, bool hold_first) {
  TORCH_CHECK_VALUE(n >= 0 && grain_size >= 1,
                    "parallel_for_probe: expected n >= 0 and grain_size >= 1, got n ", n,
                    " and grain_size ", grain_size);
  at::Tensor out = at::zeros({n, 2}, at::kLong);
  int64_t* seen = out.mutable_data_ptr<int64_t>();
  const int64_t threads = std::max<int64_t>(1, loop_threads(n, grain_size));
  const int64_t first_range = (n + threads - 1) / threads;
  std::atomic<bool> taken_over{false};
  parallel_for(0, n, grain_size, [&](int64_t begin, int64_t end) {
    const int me = at::get_thread_num();
    for (int64_t i = begin; i < end; ++i) {
      if (hold_first && i == 0 && me == 0) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!taken_over.load() && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
      } else if (i < first_range && me != 0) {
        taken_over.store(true);
      }
      std::atomic_ref<int64_t>(seen[2 * i]).fetch_add(1);
      std::atomic_ref<int64_t>(seen[2 * i + 1]).store(me);
    }
  });
  return out;
}

}  // namespace fused_inception
