// See parallel.h: remembers, through a pthread_atfork handler registered when the extension
// loads, that this process is a fork() child.
#include "cpu/parallel.h"

#include <pthread.h>

#include <atomic>

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

}  // namespace fused_inception
