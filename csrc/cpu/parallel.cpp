// See parallel.h: remembers, through a pthread_atfork handler registered when the extension
// loads, that this process is a fork() child; parallel_for_probe and parallel_for_ordered_probe,
// the tests' view of the loops.
#include "cpu/parallel.h"

#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

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

// Declared and described in csrc/fused_inception.cpp, which registers it.
at::Tensor parallel_for_ordered_probe(at::IntArrayRef tasks, at::IntArrayRef after,
                                      int64_t hold_task, int64_t throw_task) {
  std::vector<int64_t> ends, waits(after.begin(), after.end());
  for (const int64_t count : tasks) {
    TORCH_CHECK_VALUE(count >= 0, "parallel_for_ordered_probe: expected task counts >= 0, got ",
                      count);
    ends.push_back((ends.empty() ? 0 : ends.back()) + count);
  }
  const int64_t total = ends.empty() ? 0 : ends.back();
  at::Tensor out = at::full({total, 5}, -1, at::kLong);
  int64_t* seen = out.mutable_data_ptr<int64_t>();
  for (int64_t t = 0; t < total; ++t) seen[5 * t] = 0;
  std::atomic<int64_t> clock{0}, started{0};
  parallel_for_ordered(ends, waits, [&](int64_t task, int64_t next) {
    int64_t* row = seen + 5 * task;
    std::atomic_ref<int64_t>(row[2]).store(clock.fetch_add(1));
    started.fetch_add(1);
    if (task == throw_task) {
      TORCH_CHECK(false, "parallel_for_ordered_probe: task ", task, " throws");
    }
    if (task == hold_task) {  // until another task has started (or 10 s)
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (started.load() < 2 && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::atomic_ref<int64_t>(row[0]).fetch_add(1);
    std::atomic_ref<int64_t>(row[1]).store(at::get_thread_num());
    std::atomic_ref<int64_t>(row[4]).store(next);
    std::atomic_ref<int64_t>(row[3]).store(clock.fetch_add(1));
  });
  return out;
}

}  // namespace fused_inception
