// fused_inception::parallel_for: at::parallel_for's static split, balanced between the threads
// at run time; in a process forked from one that had started OpenMP's threads, a plain loop.
//
// Balance. Each of the T threads owns the range at::parallel_for would give it (ceil(n / T)
// items; so a thread's pool, GEMM and transposing-copy loops over the pixels keep touching the
// same pixels, as before) and takes it from its front in steps of half of what is left (at
// least grain_size items); a thread done with its own range takes steps from the back of the
// others'. On an evenly loaded CPU every range ends where it would have, and f sees a few more,
// shorter calls; where one core runs slower (a cloud vCPU whose core is shared, minute to
// minute), the faster thread takes over the tail of the slower one's range instead of waiting
// at the end of the loop. The items are the callers' independent tasks, so the outputs do not
// depend on who takes which (the same bits as the static split). Measured on a 2-core Emerald
// Rapids Xeon (2026-12-06, the benchmark's prepared blocks and network, balanced and static
// alternately in one process): README "Backends", cpu, the C++ operators' loops.
//
// Fork. at::parallel_for is an OpenMP loop compiled into this extension (setup.py builds it with
// -fopenmp). GNU libgomp's thread pool does not survive fork(): in the child, the first parallel
// region waits forever for pool threads that were not copied (torch's own operators hang the
// same way; tests/test_concurrency.py forks while the parent computes). After a fork the
// operators therefore run their loops on the calling thread.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace fused_inception {

// True in a process created by fork() from one that had loaded this extension.
bool in_forked_child();

// The threads parallel_for runs n items on: at most at::get_num_threads(), each at least
// grain_size items (0 for no items).
inline int64_t loop_threads(int64_t n, int64_t grain_size) {
  const int64_t grain = std::max<int64_t>(1, grain_size);
  return std::min<int64_t>(at::get_num_threads(), (n + grain - 1) / grain);
}

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain_size, const F& f) {
  if (in_forked_child()) {
    if (begin < end) {
      f(begin, end);
    }
    return;
  }
  const int64_t n = end - begin, grain = std::max<int64_t>(1, grain_size);
  const int64_t threads = loop_threads(n, grain);
  if (threads <= 1 || n >= (int64_t{1} << 32) || at::in_parallel_region()) {
    at::parallel_for(begin, end, grain_size, f);  // on the calling thread
    return;
  }
  const int64_t chunk = (n + threads - 1) / threads;
  struct alignas(64) Range {
    std::atomic<uint64_t> left;  // offsets from begin: front (low 32 bits) and back (high)
  };
  std::vector<Range> ranges(static_cast<size_t>(threads));
  for (int64_t t = 0; t < threads; ++t) {
    const uint64_t front = static_cast<uint64_t>(std::min(n, t * chunk));
    const uint64_t back = static_cast<uint64_t>(std::min(n, (t + 1) * chunk));
    ranges[static_cast<size_t>(t)].left.store(front | back << 32, std::memory_order_relaxed);
  }
  // f over one step of range r, from its front (its owner) or its back; false once it is empty.
  const auto step = [&](int64_t r, bool from_front) {
    std::atomic<uint64_t>& left = ranges[static_cast<size_t>(r)].left;
    uint64_t seen = left.load(std::memory_order_relaxed);
    for (;;) {
      const int64_t front = static_cast<int64_t>(seen & 0xFFFFFFFFu);
      const int64_t back = static_cast<int64_t>(seen >> 32);
      if (front >= back) return false;
      const int64_t count = std::min(back - front, std::max(grain, (back - front) / 2));
      const int64_t first = from_front ? front : back - count;
      const uint64_t rest = from_front ? static_cast<uint64_t>(front + count) | (seen >> 32 << 32)
                                       : (seen & 0xFFFFFFFFu) | static_cast<uint64_t>(first) << 32;
      if (left.compare_exchange_weak(seen, rest, std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
        f(begin + first, begin + first + count);
        return true;
      }
    }
  };
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      while (step(t, true)) {
      }
      for (int64_t k = 1; k < threads; ++k) {
        while (step((t + k) % threads, false)) {
        }
      }
    }
  });
}

// f(begin, end) over n items (n >= 1) of unequal work, item i starting at before[i] of `total`:
// in `most_parts` parts (at most n; 0: a few per thread, 4) of about equal work, each from the
// first item starting at or past its share, so threads that take equal counts of parts (the
// static split parallel_for starts from) take about equal work. A part is the least a thread
// takes over from another (parallel_for's steps), so more parts even out the loop's end.
template <typename F>
void parallel_for_equal_work(const std::vector<int64_t>& before, int64_t n, int64_t total,
                             const F& f, int64_t most_parts = 0) {
  const int64_t parts =
      std::min<int64_t>(n, most_parts > 0 ? most_parts : 4 * at::get_num_threads());
  std::vector<int64_t> bounds(static_cast<size_t>(parts) + 1, n);
  bounds[0] = 0;
  for (int64_t k = 1, i = 0; k < parts; ++k) {
    while (i < n && before[static_cast<size_t>(i)] * parts < k * total) ++i;
    bounds[static_cast<size_t>(k)] = i;
  }
  parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    f(bounds[static_cast<size_t>(begin)], bounds[static_cast<size_t>(end)]);
  });
}

// f(task, next) over the tasks [0, ends.back()) of jobs j = 0, 1, ... (job j: tasks
// [ends[j - 1], ends[j]), ends[-1] = 0), taken one at a time in that order from a counter the
// threads share; a task of job j starts once every task of jobs [0, after[j]) has ended
// (0 <= after[j] <= j), so a job may read what earlier ones write. next: the task the same
// thread runs after this one (taken when this one starts, so that f can prefetch for it), -1
// for none. No task waits on a later one and a thread runs the tasks it takes in order, so
// every wait ends, however many threads the loop gets (on one, or in a forked child, the tasks
// run in order on the calling thread). Where f throws, the others stop taking tasks and their
// waits end, and the exception propagates (at::parallel_for's).
template <typename F>
void parallel_for_ordered(const std::vector<int64_t>& ends, const std::vector<int64_t>& after,
                          const F& f) {
  TORCH_CHECK(after.size() == ends.size(), "parallel_for_ordered: one `after` per job, got ",
              after.size(), " for ", ends.size(), " jobs");
  for (size_t j = 0; j < ends.size(); ++j) {
    TORCH_CHECK(after[j] >= 0 && after[j] <= static_cast<int64_t>(j) &&
                    ends[j] >= (j > 0 ? ends[j - 1] : 0),
                "parallel_for_ordered: job ", j,
                " must end at or after the one before it and "
                "wait only for jobs before it, got end ",
                ends[j], " and after ", after[j]);
  }
  const int64_t total = ends.empty() ? 0 : ends.back();
  const int64_t threads = loop_threads(total, 1);
  if (in_forked_child() || threads <= 1 || at::in_parallel_region()) {
    for (int64_t task = 0; task < total; ++task) f(task, task + 1 < total ? task + 1 : -1);
    return;
  }
  struct alignas(64) Counter {
    std::atomic<int64_t> value{0};
  };
  std::vector<Counter> done(ends.size());  // each job's tasks ended
  Counter next;                            // the next task to take
  std::atomic<bool> failed{false};
  const auto job_of = [&](int64_t task) {
    size_t j = 0;
    while (task >= ends[j]) ++j;
    return j;
  };
  const auto wait_for = [&](size_t j) {
    for (size_t k = 0; k < static_cast<size_t>(after[j]); ++k) {
      const int64_t tasks = ends[k] - (k > 0 ? ends[k - 1] : 0);
      for (int spins = 0; done[k].value.load(std::memory_order_acquire) < tasks;) {
        if (failed.load(std::memory_order_relaxed)) return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (spins < 1024) {
          ++spins;
        } else {
          std::this_thread::yield();  // a descheduled thread's task
        }
      }
    }
  };
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    try {
      size_t ready = ends.size();  // the job whose waits have ended
      int64_t task = next.value.fetch_add(1, std::memory_order_relaxed);
      while (task < total && !failed.load(std::memory_order_relaxed)) {
        const int64_t following = next.value.fetch_add(1, std::memory_order_relaxed);
        const size_t job = job_of(task);
        if (job != ready) {
          wait_for(job);
          if (failed.load(std::memory_order_relaxed)) break;
          ready = job;
        }
        f(task, following < total ? following : -1);
        done[job].value.fetch_add(1, std::memory_order_release);
        task = following;
      }
    } catch (...) {
      failed.store(true, std::memory_order_relaxed);
      throw;
    }
  });
}

}  // namespace fused_inception
