// CPU SIMT shim: CUDA C++ kernel sources (.cu) compile as plain C++ (g++ -std=c++20 -x c++) and
// run on the CPU, so CI executes them without a GPU, also under AddressSanitizer and
// ThreadSanitizer (docs/design.md section 6, item 3). Kernels include csrc/cuda/compat.cuh, which
// includes this header when __CUDACC__ is not defined; tests may call ::simt directly.
//
// What kernels get: __global__/__device__/__host__ (empty), __forceinline__ (inline),
// __launch_bounds__(...) (empty), __align__(n), __shared__ (`static`); dim3/uint3 (CUDA's own,
// from vector_types.h); thread_local threadIdx, blockIdx, blockDim, gridDim; warpSize;
// __syncthreads, __syncwarp, __shfl{,_xor,_up,_down}_sync, __ballot_sync, __any_sync,
// __all_sync, atomicAdd/Max/Min/Exch/CAS, __ldg, min/max; __half and __nv_bfloat16 (CUDA's
// cuda_fp16.h/cuda_bf16.h); nvcuda::wmma (simt/wmma.h).
// The host API (namespace simt):
//   const char* launch(dim3 grid, dim3 block, size_t dynamic_smem_bytes, kernel, args...);
//   const char* set_max_dynamic_shared(kernel, long long bytes);
//   const char* last_launch_error();  // returns and clears, like cudaGetLastError
//   void* dynamic_shared_memory();    // inside a kernel
// Errors are nullptr or strings that live for the whole program.
//
// Execution model of simt::launch:
//   - the configuration is checked as CUDA does (dims >= 1, <= 1024 threads per block,
//     block.z <= 64, dynamic shared memory <= 48 KiB unless raised per kernel with
//     set_max_dynamic_shared, never above 166912 bytes, sm_80's opt-in limit); a bad one
//     returns "invalid configuration argument: ..." and runs nothing;
//   - launches are serialized by one global mutex (so `__shared__`, which is `static` here, is
//     never shared by two launches); fork() waits for a running launch to finish, so a child
//     process can launch too (pthread_atfork handlers, see install_fork_handlers);
//   - each launch runs blockDim.x*y*z CUDA threads; every thread runs the blocks in order
//     (x fastest, then y, then z) with one barrier at the end of each block, so blocks run one
//     after another. The threads are fibers on the launching thread by default (SIMT_OS_THREADS
//     below, and simt/fiber.h): a fiber runs until it waits at a barrier or in a warp
//     collective, then the next one runs, so a barrier costs a few user-space context switches;
//     with SIMT_OS_THREADS=1 (the ThreadSanitizer builds) they are std::threads that run
//     concurrently;
//   - __syncthreads() is one arrival at that barrier; __syncwarp() a barrier of the warp's lanes
//     (lane = linear thread id % 32, where linear id = x + y*bdx + z*bdx*bdy);
//   - dynamic shared memory is a heap buffer of exactly the requested size (128-byte aligned),
//     refilled with 0xFF bytes (NaN for float/half/bf16) before each block.
// Faults that hardware would turn into wrong results or hangs do not abort: the first one is
// recorded and returned by launch() as its error string (with the block and thread):
//   - "__syncthreads mismatch in block (x,y,z): thread ... reached the end of the kernel after
//     N __syncthreads() calls while thread ... waits in call #N+1 ..." (the launch stops there);
//   - "wmma::<call>: pointer 0x... is not 256-bit (32-byte) aligned",
//     "wmma::<call>: ldm L is not a multiple of 8 elements (16 bytes)" (4 for float),
//     "wmma::<call> called by a partial warp of L lanes ...".
//
//   - in fiber mode, a block whose threads all wait with none able to go on (a lane skipped a
//     __syncwarp or shuffle its warp waits in) faults: "deadlock in block (x,y,z): no thread
//     can go on; N wait in <what> (thread (x,y,z) and others), ...".
//
// Limitations: static `__shared__` variables start zeroed and keep their values from the
// previous block (hardware gives garbage); __syncwarp, shuffles and votes ignore their mask and
// must be called by all lanes of the warp (lanes that skip one deadlock: reported in fiber
// mode, a hang with OS threads); a kernel must not launch kernels; in fiber mode, a kernel must
// not wait for another thread of its block other than through the shim's barriers and warp
// operations (a spin on an atomic would never let the other fiber run).
#pragma once

#include <cuda_bf16.h>  // also pulls in vector_types.h (dim3, uint3) and host_defines.h
#include <cuda_fp16.h>
#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// SIMT_OS_THREADS=1 runs a block's CUDA threads as OS threads (the mode of the
// ThreadSanitizer builds: real concurrency is what lets it see a missing __syncthreads); 0, the
// default elsewhere on x86-64, as fibers on the launching thread (simt/fiber.h), also under
// AddressSanitizer, which is told of every stack switch (SIMT_ASAN_FIBERS).
#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMT_ASAN 1
#endif
#endif
#if !defined(SIMT_OS_THREADS)
#if defined(__SANITIZE_THREAD__) || !defined(__x86_64__)
#define SIMT_OS_THREADS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIMT_OS_THREADS 1
#endif
#endif
#endif
#if !defined(SIMT_OS_THREADS)
#define SIMT_OS_THREADS 0
#endif
#if !SIMT_OS_THREADS
#include "simt/fiber.h"
#if defined(SIMT_ASAN)
#define SIMT_ASAN_FIBERS 1
// AddressSanitizer's fiber interface (sanitizer/common_interface_defs.h): a switch to another
// stack is announced by the context leaving and completed by the one arriving.
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom,
                                               size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                                size_t* size_old);
#endif
#endif

// host_defines.h already made __host__, __device__, __global__, __constant__, __managed__ and
// __grid_constant__ empty; the rest get their shim meaning here.
#undef __shared__
#define __shared__ static
#undef __forceinline__
#define __forceinline__ inline
#undef __noinline__
#define __noinline__ __attribute__((noinline))
#undef __align__
#define __align__(n) __attribute__((aligned(n)))
#undef __launch_bounds__
#define __launch_bounds__(...)

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

namespace simt {

// Limits of the devices the kernels target (sm_80 / sm_90 share these, except the opt-in
// shared memory, where sm_80's smaller 163 KiB is the portable limit).
inline constexpr unsigned kMaxThreadsPerBlock = 1024;
inline constexpr unsigned kMaxBlockDimXY = 1024;
inline constexpr unsigned kMaxBlockDimZ = 64;
inline constexpr unsigned kMaxGridDimX = 2147483647u;
inline constexpr unsigned kMaxGridDimYZ = 65535;
inline constexpr std::size_t kDefaultDynamicSharedLimit = 48 * 1024;
inline constexpr std::size_t kMaxDynamicShared = 166912;
inline constexpr std::size_t kDynamicSharedAlignment = 128;

// Bank-conflict counts of one kind of warp-wide shared-memory access (simt/ptx.h describes the
// bank model): a conflict-free access takes one wavefront per phase, a conflicted one `degree`.
struct SharedAccessStats {
  std::uint64_t instructions = 0;  // warp-wide accesses
  std::uint64_t phases = 0;        // the wavefronts they take without bank conflicts
  std::uint64_t wavefronts = 0;    // the wavefronts they take: the sum of the phases' degrees
  unsigned max_degree = 0;         // the largest degree of one phase

  void add(const SharedAccessStats& other) {
    instructions += other.instructions;
    phases += other.phases;
    wavefronts += other.wavefronts;
    max_degree = std::max(max_degree, other.max_degree);
  }
};

// Global-memory regions a launch attributes its cp.async bytes to (simt::count_regions).
inline constexpr std::size_t kCountedRegions = 8;

// What one launch executed, counted by the emulated PTX instructions of simt/ptx.h.
struct LaunchStats {
  std::uint64_t mma_macs = 0;         // multiply-adds of mma.sync (16*8*16 per warp-wide mma)
  std::uint64_t cp_async_copies = 0;  // completed 16-byte cp.async copies
  std::uint64_t cp_async_bytes = 0;   // global bytes they read (the sum of src_bytes)
  // cp_async_bytes by the region (simt::count_regions) holding the copy's first source byte.
  std::array<std::uint64_t, kCountedRegions> region_bytes{};
  SharedAccessStats ldmatrix;       // ldmatrix (one phase per 8x8 matrix)
  SharedAccessStats shared_loads;   // lds32 / lds128
  SharedAccessStats shared_stores;  // sts32 / sts128
  // The launch's configuration (set by simt::launch, not summed).
  std::uint64_t blocks = 0, threads_per_block = 0, dynamic_shared_bytes = 0;

  void add(const LaunchStats& other) {
    mma_macs += other.mma_macs;
    cp_async_copies += other.cp_async_copies;
    cp_async_bytes += other.cp_async_bytes;
    for (std::size_t i = 0; i < kCountedRegions; ++i) region_bytes[i] += other.region_bytes[i];
    ldmatrix.add(other.ldmatrix);
    shared_loads.add(other.shared_loads);
    shared_stores.add(other.shared_stores);
  }
};

namespace detail {

inline std::mutex& intern_mutex() {
  static std::mutex mutex;
  return mutex;
}

// Error strings live forever (like cudaGetErrorString's), so launch() can return a pointer.
inline const char* intern(const std::string& message) {
  static std::set<std::string> strings;
  std::lock_guard<std::mutex> lock(intern_mutex());
  return strings.insert(message).first->c_str();
}

inline thread_local const char* last_error = nullptr;

inline const char* record_error(const std::string& message) {
  last_error = intern(message);
  return last_error;
}

inline std::string coords(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}
inline std::string coords(dim3 v) { return coords(uint3{v.x, v.y, v.z}); }

struct Launch;

// One cp.async copy of simt/ptx.h, issued and not yet performed.
struct AsyncCopy {
  void* dst;
  const void* src;
  int src_bytes;
};

// The state of the calling CUDA thread, besides threadIdx, blockIdx, blockDim and gridDim: its
// place in the running launch (current is nullptr outside a kernel), its counters, and its
// cp.async copies (simt/ptx.h): issued but not committed, and committed groups in order, oldest
// first. In fiber mode every thread_local of this list is switched with the fiber.
inline thread_local Launch* current = nullptr;
inline thread_local unsigned linear_tid = 0;
inline thread_local LaunchStats thread_stats;
inline thread_local std::vector<AsyncCopy> uncommitted;
inline thread_local std::deque<std::vector<AsyncCopy>> committed;

#if SIMT_OS_THREADS
template <typename Completion>
using BlockBarrier = std::barrier<Completion>;
using WarpBarrier = std::barrier<>;
#else
// Fiber mode: a block's CUDA threads are fibers that the launching OS thread runs in turn. A
// fiber runs until it must wait (a barrier, a warp-collective operation), then switches to the
// next fiber of the round that is not finished; a waiting fiber checks its condition again each
// time its turn comes. The round's direction flips whenever a __syncthreads phase completes,
// so the threads of a block run in increasing and decreasing order in alternate phases, and a
// missing __syncthreads between a write and a read shows up as a wrong result whichever thread
// writes first. When every unfinished fiber has checked its condition once since any thread
// last ran, none ever can go on: the launch faults with a deadlock report instead of hanging.

// A CUDA thread's thread_local state while its fiber is switched out.
struct SavedLocals {
  uint3 thread_idx{0, 0, 0};
  uint3 block_idx{0, 0, 0};
  dim3 block_dim{1, 1, 1};
  dim3 grid_dim{1, 1, 1};
  Launch* launch = nullptr;
  unsigned linear_tid = 0;
  LaunchStats stats;
  std::vector<AsyncCopy> uncommitted;
  std::deque<std::vector<AsyncCopy>> committed;

  // Exchanges this saved state with the running thread_local one.
  void exchange() {
    std::swap(thread_idx, ::threadIdx);
    std::swap(block_idx, ::blockIdx);
    std::swap(block_dim, ::blockDim);
    std::swap(grid_dim, ::gridDim);
    std::swap(launch, current);
    std::swap(linear_tid, detail::linear_tid);
    std::swap(stats, thread_stats);
    std::swap(uncommitted, detail::uncommitted);
    std::swap(committed, detail::committed);
  }
};

struct Fiber {
  void* context = nullptr;
  bool finished = false;
  const char* waits_in = nullptr;  // what it waits for while it waits (deadlock reports)
  SavedLocals saved;
  // Its stack, and AddressSanitizer's fake stack while it is switched out (SIMT_ASAN_FIBERS).
  const void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
  void* fake_stack = nullptr;
};

struct FiberScheduler {
  std::vector<Fiber> fibers;  // one per CUDA thread of the block, by linear thread id
  Fiber host;                 // the launching thread's context
  unsigned running = 0;
  unsigned unfinished = 0;
  unsigned failed_checks = 0;  // wait conditions found false in a row since a thread last ran
  bool forward = true;
  Launch* launch = nullptr;
  void (*run_thread)(void* body, unsigned linear_tid) = nullptr;
  void* body = nullptr;

  // The next unfinished fiber in the round's direction after the running one (itself if it
  // is the only one); call with at least one unfinished.
  unsigned next() const {
    const unsigned n = static_cast<unsigned>(fibers.size());
    unsigned i = running;
    do {
      i = forward ? (i + 1 == n ? 0 : i + 1) : (i == 0 ? n - 1 : i - 1);
    } while (fibers[i].finished);
    return i;
  }
};

// The scheduler of the launch running on this OS thread (nullptr outside a launch).
inline thread_local FiberScheduler* scheduler = nullptr;

// Switches from the running fiber (or the host) to `to`; returns when something switches back.
// `from_finished`: `from` never runs again (AddressSanitizer may drop its fake stack).
inline void switch_fiber(Fiber& from, Fiber& to, [[maybe_unused]] bool from_finished = false) {
  from.saved.exchange();
  to.saved.exchange();
#if defined(SIMT_ASAN_FIBERS)
  __sanitizer_start_switch_fiber(from_finished ? nullptr : &from.fake_stack, to.stack_bottom,
                                 to.stack_size);
#endif
  fiber::switch_context(&from.context, to.context);
#if defined(SIMT_ASAN_FIBERS)
  __sanitizer_finish_switch_fiber(from.fake_stack, nullptr, nullptr);
#endif
}

// Defined after Launch: records the deadlock of the running block as the launch's fault and
// stops it.
inline void report_deadlock(FiberScheduler& s);

// Waits, letting the other fibers run, until ready() holds (ready() must become true when the
// launch stops, or a deadlock could not be broken). `what`: the wait, for a deadlock report.
template <typename Ready>
void wait_until(Ready ready, const char* what) {
  if (ready()) return;
  FiberScheduler& s = *scheduler;
  s.failed_checks = 0;  // this thread ran since its last wait
  Fiber& self = s.fibers[s.running];
  self.waits_in = what;
  do {
    if (++s.failed_checks > s.unfinished) report_deadlock(s);  // every fiber checked in vain
    const unsigned next = s.next();
    if (next != s.running) {
      s.running = next;  // whoever switches back to this fiber sets running to it first
      switch_fiber(self, s.fibers[next]);
    }
  } while (!ready());
  self.waits_in = nullptr;
}

// The first code of a fiber: runs its CUDA thread, then switches for good to the next
// unfinished fiber, or to the launching thread after the last one.
inline void fiber_main(void* argument) {
  FiberScheduler& s = *static_cast<FiberScheduler*>(argument);
  const unsigned me = s.running;
#if defined(SIMT_ASAN_FIBERS)
  // The first fiber is entered from the launching thread: learn its stack for the way back.
  const void* bottom_old = nullptr;
  std::size_t size_old = 0;
  __sanitizer_finish_switch_fiber(nullptr, &bottom_old, &size_old);
  if (s.host.stack_bottom == nullptr) {
    s.host.stack_bottom = bottom_old;
    s.host.stack_size = size_old;
  }
#endif
  s.run_thread(s.body, me);
  Fiber& self = s.fibers[me];
  self.finished = true;
  --s.unfinished;
  s.failed_checks = 0;
  if (s.unfinished == 0) {
    switch_fiber(self, s.host, /*from_finished=*/true);
  } else {
    s.running = s.next();
    switch_fiber(self, s.fibers[s.running], /*from_finished=*/true);
  }
  __builtin_unreachable();
}

// Runs body(linear_tid) for threads 0..threads-1 as fibers; returns when all have finished.
template <typename Body>
void run_fibers(Launch& launch, unsigned threads, Body& body) {
  FiberScheduler s;
  s.fibers.resize(threads);
  s.unfinished = threads;
  s.launch = &launch;
  s.body = &body;
  s.run_thread = [](void* b, unsigned linear_tid) { (*static_cast<Body*>(b))(linear_tid); };
  const auto& stacks = fiber::stacks(threads);
  for (unsigned t = 0; t < threads; ++t) {
    s.fibers[t].context = fiber::prepare(*stacks[t], fiber_main, &s);
    s.fibers[t].stack_bottom = stacks[t]->bottom();
    s.fibers[t].stack_size = fiber::Stack::kUsableBytes;
  }
  scheduler = &s;
  s.running = 0;
  switch_fiber(s.host, s.fibers[0]);
  scheduler = nullptr;
}

// The barriers of fiber mode, with std::barrier's interface: the last of `count` arrivals
// runs the completion and releases the others. Waiters also leave once the launch stopped
// (a fault or a deadlock), so arrive_and_drop, which only threads leaving a stopped launch call,
// has nothing to release.
struct NoCompletion {
  void operator()() noexcept {}
};

template <typename Completion = NoCompletion>
class FiberBarrier {
 public:
  FiberBarrier(unsigned count, Completion completion, const std::atomic<bool>* stopped,
               const char* what)
      : pending_(count), count_(count), completion_(completion), stopped_(stopped), what_(what) {}

  void arrive_and_wait() {
    const std::uint64_t phase = phase_;
    if (--pending_ == 0) {
      completion_();
      pending_ = count_;
      ++phase_;
      return;
    }
    wait_until([&] { return phase_ != phase || stopped_->load(std::memory_order_relaxed); }, what_);
  }
  void arrive_and_drop() {}

 private:
  unsigned pending_, count_;
  std::uint64_t phase_ = 0;
  Completion completion_;
  const std::atomic<bool>* stopped_;
  const char* what_;
};

template <typename Completion>
using BlockBarrier = FiberBarrier<Completion>;
using WarpBarrier = FiberBarrier<>;
#endif

// Waits on a warp collective's condition variable until ready() holds, with `lock` (on its
// mutex) held when ready() is called and on return: an OS-thread wait, or a fiber wait that
// releases the lock while the other fibers run.
template <typename Ready>
void wait(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Ready ready,
          [[maybe_unused]] const char* what) {
#if SIMT_OS_THREADS
  cv.wait(lock, ready);
#else
  (void)cv;
  if (ready()) return;
  lock.unlock();
  wait_until(ready, what);
  lock.lock();
#endif
}

// Rendezvous of one warp's lanes in a warp-collective operation of simt/ptx.h (see
// warp_collective there): the operands each lane published, the lanes present, and a
// generation count that tells waiting lanes their operation completed.
struct WarpCollective {
  std::mutex mutex;
  std::condition_variable wake;
  std::array<const void*, 32> operands{};
  std::array<const char*, 32> names{};
  unsigned present = 0;  // bit l: lane l waits in the current operation
  std::uint64_t generation = 0;
  bool completed_ok = false;
  std::atomic<unsigned> waiting{0};  // lanes asleep in wake
};

// Runs once per barrier phase, after every thread of the block arrived and before any leaves.
struct PhaseCompletion {
  Launch* launch;
  void operator()() noexcept;
};

// A global-memory range [begin, end) whose cp.async bytes are counted apart.
struct Region {
  const std::byte* begin = nullptr;
  const std::byte* end = nullptr;
};

struct Launch {
  unsigned num_threads = 0;
  std::size_t dynamic_bytes = 0;
  std::vector<Region> regions;  // of this launch (simt::count_regions), read-only while it runs
  std::byte* dynamic_shared = nullptr;
  BlockBarrier<PhaseCompletion> block_barrier;
  std::vector<std::unique_ptr<WarpBarrier>> warp_barriers;
  std::vector<std::uint64_t> warp_slots;  // 32 per warp, for shuffles and votes
  // Per thread (indexed by linear thread id), written by that thread before it arrives.
  std::vector<unsigned> sync_calls;
  std::vector<unsigned char> at_block_end;
  // Per thread: 1 while it waits at the block barrier (__syncthreads or the end of the block),
  // so lanes waiting in a warp collective can tell that it will not join them.
  std::vector<std::atomic<unsigned char>> at_block_barrier;
  std::vector<std::unique_ptr<WarpCollective>> warp_collectives;
  std::mutex stats_mutex;
  LaunchStats stats;  // the threads' counters, merged when they finish
  std::atomic<bool> stopped{false};
  std::atomic<bool> faulted{false};
  std::mutex fault_mutex;
  std::string fault;

  Launch(unsigned threads, std::size_t bytes)
      : num_threads(threads),
        dynamic_bytes(bytes),
#if SIMT_OS_THREADS
        block_barrier(threads, PhaseCompletion{this}),
#else
        block_barrier(threads, PhaseCompletion{this}, &stopped,
                      "__syncthreads or the end of the block"),
#endif
        warp_slots((threads + warpSize - 1) / warpSize * warpSize, 0),
        sync_calls(threads, 0),
        at_block_end(threads, 0),
        at_block_barrier(threads) {
    for (unsigned first = 0; first < threads; first += warpSize) {
      const unsigned lanes = std::min<unsigned>(warpSize, threads - first);
#if SIMT_OS_THREADS
      warp_barriers.push_back(std::make_unique<WarpBarrier>(lanes));
#else
      warp_barriers.push_back(std::make_unique<WarpBarrier>(
          lanes, NoCompletion{}, &stopped, "__syncwarp, a warp shuffle or a warp vote"));
#endif
      warp_collectives.push_back(std::make_unique<WarpCollective>());
    }
  }

  void report(const std::string& message) {
    std::lock_guard<std::mutex> lock(fault_mutex);
    if (!faulted.load(std::memory_order_relaxed)) {
      fault = message;
      faulted.store(true, std::memory_order_release);
    }
  }

  void poison_dynamic_shared() {
    if (dynamic_bytes > 0) std::memset(dynamic_shared, 0xFF, dynamic_bytes);
  }
};

// The host thread's copy of the last launch's totals (simt::last_launch_stats).
inline thread_local LaunchStats last_stats;
// The regions the next launch on this host thread counts (simt::count_regions).
inline thread_local std::vector<Region> next_regions;

inline void PhaseCompletion::operator()() noexcept {
  Launch& l = *launch;
  // Every thread arrived, so none waits in a warp collective any more: clear the flags before
  // any thread leaves, or a collective right after the barrier could see a stale one.
  for (auto& flag : l.at_block_barrier) flag.store(0, std::memory_order_relaxed);
#if !SIMT_OS_THREADS
  scheduler->forward = !scheduler->forward;
#endif
  unsigned ended = 0;
  for (unsigned t = 0; t < l.num_threads; ++t) ended += l.at_block_end[t];
  if (ended == l.num_threads) {
    l.poison_dynamic_shared();
  } else if (ended != 0) {
    unsigned done = 0, waiting = 0;
    while (!l.at_block_end[done]) ++done;
    while (l.at_block_end[waiting]) ++waiting;
    const dim3 bd = blockDim;
    auto tid = [bd](unsigned lin) {
      return coords(uint3{lin % bd.x, lin / bd.x % bd.y, lin / (bd.x * bd.y)});
    };
    l.report("__syncthreads mismatch in block " + coords(blockIdx) + ": thread " + tid(done) +
             " reached the end of the kernel after " + std::to_string(l.sync_calls[done]) +
             " __syncthreads() calls while thread " + tid(waiting) + " waits in call #" +
             std::to_string(l.sync_calls[waiting]) +
             " (every thread of a block must reach every __syncthreads)");
    l.stopped.store(true, std::memory_order_relaxed);
  }
}

inline std::mutex& launch_mutex() {
  static std::mutex mutex;
  return mutex;
}

inline std::mutex& attribute_mutex() {
  static std::mutex mutex;
  return mutex;
}

// fork() copies only the calling thread. If another thread was inside launch() at that moment,
// the child got launch_mutex locked by a thread it does not have, and its first launch waited
// forever. These pthread_atfork handlers take every mutex of the shim before fork (waiting for
// a running launch to finish, so the child also never sees a half-updated limits map or string
// set) and release them after it in the parent and in the child, where the forking thread's
// copy owns them. Order: launch_mutex, then the others, as launch() nests them (it interns its
// error string while holding launch_mutex and never takes launch_mutex while holding another).
inline void lock_for_fork() {
  launch_mutex().lock();
  attribute_mutex().lock();
  intern_mutex().lock();
}

inline void unlock_after_fork() {
  intern_mutex().unlock();
  attribute_mutex().unlock();
  launch_mutex().unlock();
}

// Registers the handlers once per process, before the first launch can hold launch_mutex.
inline void install_fork_handlers() {
  static const int registered = pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
  (void)registered;  // a failure (ENOMEM) leaves fork as unsafe as it was, nothing worse
}

// Max dynamic shared memory per kernel, as set by set_max_dynamic_shared.
inline std::map<const void*, std::size_t>& dynamic_shared_limits() {
  static std::map<const void*, std::size_t> limits;
  return limits;
}

// How many times set_max_dynamic_shared succeeded (tests check it is called once per kernel).
inline std::atomic<unsigned> set_max_dynamic_shared_calls{0};

template <typename... KArgs>
const void* kernel_key(void (*kernel)(KArgs...)) {
  return reinterpret_cast<const void*>(kernel);
}

inline std::string check_configuration(dim3 grid, dim3 block, std::size_t bytes,
                                       std::size_t bytes_allowed) {
  const std::string what = "invalid configuration argument: ";
  if (grid.x < 1 || grid.y < 1 || grid.z < 1)
    return what + "grid " + coords(grid) + " has a zero dimension";
  if (grid.x > kMaxGridDimX || grid.y > kMaxGridDimYZ || grid.z > kMaxGridDimYZ)
    return what + "grid " + coords(grid) + " exceeds (2147483647,65535,65535)";
  if (block.x < 1 || block.y < 1 || block.z < 1)
    return what + "block " + coords(block) + " has a zero dimension";
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads > kMaxThreadsPerBlock)
    return what + "block " + coords(block) + " has " + std::to_string(threads) +
           " threads, the limit is 1024";
  if (block.x > kMaxBlockDimXY || block.y > kMaxBlockDimXY || block.z > kMaxBlockDimZ)
    return what + "block " + coords(block) + " exceeds (1024,1024,64)";
  if (bytes > kMaxDynamicShared)
    return what + std::to_string(bytes) + " bytes of dynamic shared memory exceed " +
           std::to_string(kMaxDynamicShared) + " (sm_80 opt-in limit)";
  if (bytes > bytes_allowed)
    return what + std::to_string(bytes) + " bytes of dynamic shared memory exceed " +
           std::to_string(bytes_allowed) +
           " (above 48 KiB requires set_max_dynamic_shared / FI_SET_MAX_DYNAMIC_SHARED)";
  return {};
}

// Marks the calling thread as waiting at the block barrier and wakes the lanes of its warp that
// wait in a warp collective, so they find it there instead of waiting for it forever. The
// seq_cst flag and counter make sure one side sees the other (simt/ptx.h, warp_collective).
inline void arrive_at_block_barrier(Launch& l) {
  l.at_block_barrier[linear_tid].store(1);
  WarpCollective& warp = *l.warp_collectives[linear_tid / warpSize];
  if (warp.waiting.load() != 0) {
    std::lock_guard<std::mutex> lock(warp.mutex);
    warp.wake.notify_all();
  }
  l.block_barrier.arrive_and_wait();
}

#if !SIMT_OS_THREADS
inline void report_deadlock(FiberScheduler& s) {
  // What the block's unfinished threads wait in, in order of the first thread waiting in each.
  std::vector<std::pair<const char*, std::vector<unsigned>>> waits;
  for (unsigned t = 0; t < s.fibers.size(); ++t) {
    const Fiber& f = s.fibers[t];
    if (f.finished || f.waits_in == nullptr) continue;
    auto it = std::find_if(waits.begin(), waits.end(),
                           [&](const auto& w) { return std::strcmp(w.first, f.waits_in) == 0; });
    if (it == waits.end()) it = waits.insert(waits.end(), {f.waits_in, {}});
    it->second.push_back(t);
  }
  const dim3 bd = blockDim;
  std::string message = "deadlock in block " + coords(blockIdx) + ": no thread can go on;";
  for (std::size_t i = 0; i < waits.size(); ++i) {
    const unsigned first = waits[i].second.front();
    message += std::string(i == 0 ? " " : ", ") + std::to_string(waits[i].second.size()) +
               " wait in " + waits[i].first + " (thread " +
               coords(uint3{first % bd.x, first / bd.x % bd.y, first / (bd.x * bd.y)}) +
               (waits[i].second.size() > 1 ? " and others)" : ")");
  }
  message +=
      " (every lane of a warp must make each warp-wide call, and every thread of the block "
      "reach each __syncthreads)";
  s.launch->report(message);
  s.launch->stopped.store(true);
  s.failed_checks = 0;
}
#endif

// Defined in simt/ptx.h: faults for the calling thread's work left at the end of a block
// (cp.async copies never waited for).
inline void check_block_end();

inline void end_block() {
  Launch& l = *current;
  if (l.stopped.load(std::memory_order_relaxed)) return;
  check_block_end();
  l.at_block_end[linear_tid] = 1;
  arrive_at_block_barrier(l);
  l.at_block_end[linear_tid] = 0;
  l.sync_calls[linear_tid] = 0;
}

}  // namespace detail

// Lets `kernel` be launched with up to `bytes` of dynamic shared memory (the shim's
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)).
// Returns nullptr, or an error string (also recorded for last_launch_error()).
template <typename... KArgs>
const char* set_max_dynamic_shared(void (*kernel)(KArgs...), long long bytes) {
  if (bytes < 0 || static_cast<unsigned long long>(bytes) > kMaxDynamicShared) {
    return detail::record_error("invalid argument: set_max_dynamic_shared(" +
                                std::to_string(bytes) + " bytes): the limit is " +
                                std::to_string(kMaxDynamicShared));
  }
  std::lock_guard<std::mutex> lock(detail::attribute_mutex());
  detail::dynamic_shared_limits()[detail::kernel_key(kernel)] = static_cast<std::size_t>(bytes);
  ++detail::set_max_dynamic_shared_calls;
  return nullptr;
}

// The error of the last failed shim call on this host thread, cleared by reading it (like
// cudaGetLastError: a later successful call does not clear it). nullptr if none.
inline const char* last_launch_error() {
  const char* error = detail::last_error;
  detail::last_error = nullptr;
  return error;
}

// The counters of the last launch on this host thread (zero if it faulted before running).
inline LaunchStats last_launch_stats() { return detail::last_stats; }

// The next launch on this host thread attributes the global bytes its cp.async copies read to
// these ranges (base, bytes), in order, up to kCountedRegions (LaunchStats::region_bytes[i]: the
// copies whose first source byte lies in range i, the first range that holds it); bytes outside
// every range count only in cp_async_bytes. Used once: the launch takes the list.
inline const char* count_regions(const std::vector<std::pair<const void*, std::size_t>>& ranges) {
  if (ranges.size() > kCountedRegions) {
    return detail::record_error("count_regions: " + std::to_string(ranges.size()) +
                                " ranges, at most " + std::to_string(kCountedRegions));
  }
  detail::next_regions.clear();
  for (const auto& [base, bytes] : ranges) {
    const auto* begin = static_cast<const std::byte*>(base);
    detail::next_regions.push_back({begin, begin + bytes});
  }
  return nullptr;
}

// The block's dynamic shared memory (valid inside a kernel only).
inline void* dynamic_shared_memory() {
  return detail::current != nullptr ? detail::current->dynamic_shared : nullptr;
}

// Runs kernel<<<grid, block, dynamic_smem_bytes>>>(args...) on the CPU and returns when it has
// finished: nullptr on success, else the configuration error (nothing ran) or the first fault.
template <typename... KArgs, typename... Args>
const char* launch(dim3 grid, dim3 block, std::size_t dynamic_smem_bytes, void (*kernel)(KArgs...),
                   Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "simt::launch: wrong number of arguments");
  std::vector<detail::Region> regions = std::move(detail::next_regions);  // this launch's, even
  detail::next_regions.clear();                                           // if it fails
  if (detail::current != nullptr) {
    return detail::record_error("simt::launch from inside a kernel is not supported");
  }
  std::size_t allowed = kDefaultDynamicSharedLimit;
  {
    std::lock_guard<std::mutex> lock(detail::attribute_mutex());
    const auto& limits = detail::dynamic_shared_limits();
    const auto it = limits.find(detail::kernel_key(kernel));
    if (it != limits.end() && it->second > allowed) allowed = it->second;
  }
  const std::string bad = detail::check_configuration(grid, block, dynamic_smem_bytes, allowed);
  if (!bad.empty()) return detail::record_error(bad);

  detail::last_stats = LaunchStats{};
  const std::tuple<std::decay_t<KArgs>...> params(std::forward<Args>(args)...);
  detail::install_fork_handlers();
  std::lock_guard<std::mutex> serialize(detail::launch_mutex());
  const unsigned threads = block.x * block.y * block.z;
  detail::Launch state(threads, dynamic_smem_bytes);
  state.regions = std::move(regions);
  // Exactly the requested size on the heap, so AddressSanitizer sees overruns.
  struct Free {
    void operator()(std::byte* p) const {
      ::operator delete[](p, std::align_val_t{kDynamicSharedAlignment});
    }
  };
  std::unique_ptr<std::byte[], Free> smem(static_cast<std::byte*>(
      ::operator new[](dynamic_smem_bytes, std::align_val_t{kDynamicSharedAlignment})));
  state.dynamic_shared = smem.get();
  state.poison_dynamic_shared();

  auto body = [&](unsigned lin) {
    detail::current = &state;
    detail::linear_tid = lin;
    blockDim = block;
    gridDim = grid;
    threadIdx = uint3{lin % block.x, lin / block.x % block.y, lin / (block.x * block.y)};
    detail::thread_stats = LaunchStats{};
    [&] {
      for (unsigned bz = 0; bz < grid.z; ++bz) {
        for (unsigned by = 0; by < grid.y; ++by) {
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            if (state.stopped.load(std::memory_order_relaxed)) return;
            blockIdx = uint3{bx, by, bz};
            std::apply(kernel, params);
            detail::end_block();
          }
        }
      }
    }();
    if (state.stopped.load(std::memory_order_relaxed)) {
      // Threads of this block may still wait at a barrier (a fault stopped the launch while
      // they waited): leaving for good counts as arriving, so they are released.
      state.block_barrier.arrive_and_drop();
      state.warp_barriers[lin / warpSize]->arrive_and_drop();
    }
    {
      std::lock_guard<std::mutex> lock(state.stats_mutex);
      state.stats.add(detail::thread_stats);
    }
    detail::current = nullptr;
  };
#if SIMT_OS_THREADS
  {
    std::vector<std::jthread> workers;
    workers.reserve(threads);
    for (unsigned lin = 0; lin < threads; ++lin) workers.emplace_back(body, lin);
  }
#else
  detail::run_fibers(state, threads, body);
#endif
  detail::last_stats = state.stats;
  detail::last_stats.blocks = std::uint64_t{grid.x} * grid.y * grid.z;
  detail::last_stats.threads_per_block = threads;
  detail::last_stats.dynamic_shared_bytes = dynamic_smem_bytes;
  if (state.faulted.load(std::memory_order_acquire)) return detail::record_error(state.fault);
  return nullptr;
}

// Records a fault of the running launch (first one wins); outside a kernel, prints it.
inline void report_fault(const std::string& message) {
  if (detail::current == nullptr) {
    std::fprintf(stderr, "simt fault outside a kernel: %s\n", message.c_str());
    return;
  }
  detail::current->report(message + " [block " + detail::coords(blockIdx) + ", thread " +
                          detail::coords(threadIdx) + "]");
}

// Linear thread id within the block, lane and warp of the calling thread.
inline unsigned linear_thread_id() { return detail::linear_tid; }
inline unsigned lane_id() { return detail::linear_tid % warpSize; }
inline unsigned warp_id() { return detail::linear_tid / warpSize; }
// Number of lanes in the calling thread's warp (fewer than 32 in a partial last warp).
inline unsigned warp_lanes() {
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  return std::min<unsigned>(warpSize, threads - warp_id() * warpSize);
}

}  // namespace simt

inline void __syncthreads() {
  simt::detail::Launch* l = simt::detail::current;
  if (l == nullptr || l->stopped.load(std::memory_order_relaxed)) return;
  ++l->sync_calls[simt::detail::linear_tid];
  simt::detail::arrive_at_block_barrier(*l);
}

inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) {
  simt::detail::Launch* l = simt::detail::current;
  if (l == nullptr || l->stopped.load(std::memory_order_relaxed)) return;
  l->warp_barriers[simt::warp_id()]->arrive_and_wait();
}

namespace simt::detail {

// All lanes of the warp publish `value`; each gets the value of lane `source(lane)`, or its
// own value when source returns an absent lane (as the shuffles do for out-of-range lanes).
template <typename T, typename Source>
T warp_exchange(T value, Source source) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "simt warp shuffles move trivially copyable values of up to 8 bytes");
  Launch* l = current;
  if (l == nullptr || l->stopped.load(std::memory_order_relaxed)) return value;
  const unsigned warp = warp_id(), lane = lane_id(), lanes = warp_lanes();
  std::uint64_t* slots = &l->warp_slots[warp * warpSize];
  std::uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  slots[lane] = bits;
  l->warp_barriers[warp]->arrive_and_wait();
  const unsigned src = source(lane);
  if (src < lanes) bits = slots[src];
  l->warp_barriers[warp]->arrive_and_wait();  // nobody overwrites a slot still being read
  T result = value;
  if (src < lanes) std::memcpy(&result, &bits, sizeof(T));
  return result;
}

// Bit l set when lane l of the calling warp passed a non-zero predicate.
inline unsigned warp_ballot(int predicate) {
  Launch* l = current;
  if (l == nullptr || l->stopped.load(std::memory_order_relaxed)) return predicate != 0;
  const unsigned warp = warp_id(), lane = lane_id(), lanes = warp_lanes();
  std::uint64_t* slots = &l->warp_slots[warp * warpSize];
  slots[lane] = predicate != 0;
  l->warp_barriers[warp]->arrive_and_wait();
  unsigned ballot = 0;
  for (unsigned i = 0; i < lanes; ++i) ballot |= static_cast<unsigned>(slots[i]) << i;
  l->warp_barriers[warp]->arrive_and_wait();
  return ballot;
}

}  // namespace simt::detail

// Warp shuffles and votes (all lanes of the warp must call them; the mask is ignored).
template <typename T>
T __shfl_sync(unsigned /*mask*/, T var, int src_lane, int width = warpSize) {
  return simt::detail::warp_exchange(var, [=](unsigned lane) {
    return lane / width * width + static_cast<unsigned>(src_lane) % width;
  });
}
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T var, int lane_mask, int width = warpSize) {
  return simt::detail::warp_exchange(var, [=](unsigned lane) {
    const unsigned src = lane ^ static_cast<unsigned>(lane_mask);
    return src / width == lane / width ? src : lane;
  });
}
template <typename T>
T __shfl_down_sync(unsigned /*mask*/, T var, unsigned delta, int width = warpSize) {
  return simt::detail::warp_exchange(var, [=](unsigned lane) {
    return lane % width + delta < static_cast<unsigned>(width) ? lane + delta : lane;
  });
}
template <typename T>
T __shfl_up_sync(unsigned /*mask*/, T var, unsigned delta, int width = warpSize) {
  return simt::detail::warp_exchange(
      var, [=](unsigned lane) { return lane % width >= delta ? lane - delta : lane; });
}
inline unsigned __ballot_sync(unsigned /*mask*/, int predicate) {
  return simt::detail::warp_ballot(predicate);
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
  const unsigned lanes = simt::warp_lanes();
  const unsigned full = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
  return __ballot_sync(mask, predicate) == full;
}

// Atomics on any memory (threads of a block run concurrently).
template <typename T>
T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}
namespace simt::detail {
// Stores value into *address if replaces(current, value), retrying while other threads change
// it; returns the value found (CUDA's atomicMax and atomicMin).
template <typename T, typename Replaces>
T atomic_replace_if(T* address, T value, Replaces replaces) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load();
  while (replaces(old, value) && !ref.compare_exchange_weak(old, value)) {
  }
  return old;
}
}  // namespace simt::detail
template <typename T>
T atomicMax(T* address, T value) {
  return simt::detail::atomic_replace_if(address, value, [](T old, T v) { return old < v; });
}
template <typename T>
T atomicMin(T* address, T value) {
  return simt::detail::atomic_replace_if(address, value, [](T old, T v) { return v < old; });
}
template <typename T>
T atomicExch(T* address, T value) {
  return std::atomic_ref<T>(*address).exchange(value);
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  std::atomic_ref<T>(*address).compare_exchange_strong(compare, value);
  return compare;
}

template <typename T>
T __ldg(const T* address) {
  return *address;
}

// CUDA's min/max overloads, which device code calls unqualified (fminf/fmaxf for floats).
#define SIMT_MIN_MAX(T)                            \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
SIMT_MIN_MAX(int)
SIMT_MIN_MAX(unsigned)
SIMT_MIN_MAX(long long)
SIMT_MIN_MAX(unsigned long long)
#undef SIMT_MIN_MAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

#include "simt/ptx.h"
#include "simt/wmma.h"
