// fused_inception::parallel_for: at::parallel_for, except in a process forked from one that had
// started OpenMP's threads.
//
// at::parallel_for is an OpenMP loop compiled into this extension (setup.py builds it with
// -fopenmp). GNU libgomp's thread pool does not survive fork(): in the child, the first parallel
// region waits forever for pool threads that were not copied (torch's own operators hang the
// same way; tests/test_concurrency.py forks while the parent computes). After a fork the
// operators therefore run their loops on the calling thread.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace fused_inception {

// True in a process created by fork() from one that had loaded this extension.
bool in_forked_child();

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain_size, const F& f) {
  if (in_forked_child()) {
    if (begin < end) {
      f(begin, end);
    }
    return;
  }
  at::parallel_for(begin, end, grain_size, f);
}

// f(begin, end) over n items (n >= 1) of unequal work, item i starting at before[i] of `total`:
// in a few parts per thread (4, at most n) of about equal work, each from the first item
// starting at or past its share, so threads that take equal counts of parts (at::parallel_for's
// static split) take about equal work.
template <typename F>
void parallel_for_equal_work(const std::vector<int64_t>& before, int64_t n, int64_t total,
                             const F& f) {
  const int64_t parts = std::min<int64_t>(n, 4 * at::get_num_threads());
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

}  // namespace fused_inception
