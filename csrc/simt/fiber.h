// User-space execution contexts (fibers) for the CPU SIMT shim, x86-64 System V only: the
// shim runs a block's CUDA threads as fibers on the launching thread (simt.h, "Execution
// model"), so a __syncthreads or a warp-collective operation costs a few context switches of
// ~20 instructions instead of a futex wake-up and an OS context switch per CUDA thread.
//
//   fiber::Stack                       stack memory with a guard page below it
//   fiber::stacks(n)                   this OS thread's first n stacks, kept for later launches
//   fiber::prepare(stack, entry, arg)  a context that, switched to, calls entry(arg)
//   fiber::switch_context(&from, to)   saves the running context in from, resumes to
//
// Only the callee-saved registers and the stack pointer are switched: the contexts share the
// OS thread's FPU/SSE control words (kernels do not change rounding modes) and its
// thread_local variables (simt.h swaps the shim's own per-CUDA-thread ones).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#if !defined(__x86_64__)
#error "simt/fiber.h switches x86-64 contexts; build the shim with -DSIMT_OS_THREADS=1"
#endif

namespace simt::fiber {

// Pushes the callee-saved registers (rbp, rbx, r12-r15) on the running stack, stores the stack
// pointer in *from (rdi), loads `to` (rsi) as the stack pointer and pops the registers saved
// there, then returns into that context (where it called switch_context, or start_context for
// a prepared one). Naked: the compiler adds no frame, so the stack holds exactly this layout.
[[gnu::naked, gnu::noinline]] inline void switch_context(void** /*from*/, void* /*to*/) {
  asm("pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}

// The first code of a prepared context: entry(argument), from the r13 and r12 that prepare
// stored. The stack pointer is 16-byte aligned here, as the ABI requires before a call. The
// entry must never return (it switches away for good instead); ud2 traps if it does.
[[gnu::naked, gnu::noinline]] inline void start_context() {
  asm("movq %r12, %rdi\n\t"
      "callq *%r13\n\t"
      "ud2\n\t");
}

// Stack memory of one context: kUsableBytes of reserved, lazily committed memory (8 MiB, the
// size of an OS thread's default stack on Linux, so a kernel that ran as a std::thread runs as a
// fiber), with an inaccessible guard page below it, so an overflow faults instead of writing
// into the next stack. Owned: the mapping is released when the Stack is destroyed.
class Stack {
 public:
  static constexpr std::size_t kUsableBytes = 8 * 1024 * 1024;

  Stack() {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    bytes_ = kUsableBytes + page;
    void* base = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED || mprotect(base, page, PROT_NONE) != 0) {
      std::fprintf(stderr, "simt: cannot map a %zu-byte fiber stack\n", bytes_);
      std::abort();
    }
    base_ = static_cast<std::byte*>(base);
  }
  ~Stack() { munmap(base_, bytes_); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  std::byte* top() const { return base_ + bytes_; }
  // The lowest usable byte (just above the guard page).
  std::byte* bottom() const { return top() - kUsableBytes; }

 private:
  std::byte* base_ = nullptr;
  std::size_t bytes_ = 0;
};

// The calling OS thread's first n stacks, made on first need and kept for its later launches
// (a block has at most 1024 threads: at most 8 GiB of address space reserved, as 1024 OS
// threads would, and memory committed only where touched).
inline const std::vector<std::unique_ptr<Stack>>& stacks(std::size_t n) {
  static thread_local std::vector<std::unique_ptr<Stack>> pool;
  while (pool.size() < n) pool.push_back(std::make_unique<Stack>());
  return pool;
}

// A context that calls entry(argument) on `stack` when first switched to. Its saved registers
// (see switch_context), lowest address first: r15, r14, r13 = entry, r12 = argument, rbx, rbp,
// then the return address start_context, which leaves the stack pointer at the aligned top.
inline void* prepare(const Stack& stack, void (*entry)(void*), void* argument) {
  const auto top = reinterpret_cast<std::uintptr_t>(stack.top()) & ~std::uintptr_t{15};
  void** slots = reinterpret_cast<void**>(top) - 7;
  slots[0] = nullptr;
  slots[1] = nullptr;
  slots[2] = reinterpret_cast<void*>(entry);
  slots[3] = argument;
  slots[4] = nullptr;
  slots[5] = nullptr;
  slots[6] = reinterpret_cast<void*>(&start_context);
  return slots;
}

}  // namespace simt::fiber
