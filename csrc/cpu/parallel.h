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

#include <cstdint>

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

}  // namespace fused_inception
