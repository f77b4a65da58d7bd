// fused_inception::fingerprint(Tensor[] tensors) -> Tensor: a 64-bit hash (a 0-dim int64
// tensor) of the bytes of CPU tensors, so that FusedInception can tell whether any weight or
// buffer changed since it packed them, including writes that autograd's version counter never
// sees (`w.data.mul_(2)`, a write through a numpy view, an EMA written with `.data`).
//
// Guarantee: changing any single 32-bit word of any tensor always changes the result (proof
// below); several changes at once collide with probability about 2^-64. Each tensor's dtype,
// sizes and strides are hashed too (a non-dense tensor is hashed through a dense copy).
//
// Hash: the bytes of each tensor's memory span (dense tensors only) are cut into 64 KiB chunks.
// In a chunk, 32-bit word i goes to lane i % 64, whose state (a, b) is updated with xxHash32's
// round, a = rotl(a + w * P2, 13) * P1 (mod 2^32, P1 and P2 odd), then b = b + a. For a fixed
// state a round is a bijection of w, and for a fixed w a bijection of a (odd multiplications
// and rotations are invertible), so a changed word changes a at its round and every later
// round keeps it different: the final a differs. b, the sum of a lane's states, makes two
// different changes agree on both a and b with probability about 2^-64. (A plain
// a = a * P + w would not do: a flipped top bit adds 2^31 * P^k = 2^31 for every k, so sign
// flips of two words of one lane would collide.) Each lane's (a, b) goes through splitmix64's
// finaliser, a bijection, offset by a per-lane constant, and the lanes' values are combined by
// XOR, so a changed lane always changes its chunk's value. Each chunk's value is combined with
// its position (tensor, chunk) through the same finaliser and the chunk values by XOR, so a
// change in one chunk always changes the result and chunks hash in parallel.
//
// Speed: the lane loops vectorise (64 lanes are independent vector chains, which hides the
// multiplication latency: 2.6x faster than 16 lanes with AVX2, measured on a Zen 5 EPYC). Three
// builds compute the same function (tests/test_fingerprint.py checks each against a numpy
// transcription, at every capability this CPU allows), picked once per process from torch's
// CPU capability like the other operators' loops (cpu/vector_isa.h):
// - AVX-512: written out with intrinsics (vpmulld and vprold on 16 lanes, the 64 lanes' a and b
//   in 8 of the 32 registers for the whole chunk). The compiler's vectorisation of the plain
//   loop ran at 41 GB/s on one core of a Zen 5 EPYC but kept the states on the stack: on one
//   core of an Emerald Rapids Xeon this build hashes 24-33 GB/s from L2 against 20-28 GB/s
//   (from L3, 27 MB, 19-21.5 against 15-20 GB/s; README "Weights, attributes and hooks"), and
//   prefetches 4 KiB ahead (kPrefetchBytes: weights that come from memory);
// - AVX2: written out with intrinsics. The compiler's vectorisation of the plain loop keeps
//   the 16 registers' worth of state on the stack (AVX2 has 16 in all) and runs at 14-15 GB/s
//   on a Zen 3 EPYC core. Here the chunk is taken in blocks of 16 rows of 64 words (4 KiB, in
//   L1): lanes 0-31 over the block's rows, then lanes 32-63 over the same rows, each half's
//   state in 8 registers: 38-40 GB/s on the same core from L2 or a 3 MB buffer, 2.5-2.6x
//   (memory-bound beyond L3: 21 against 14 GB/s at 27 MB);
// - baseline (capability "default"): the plain loop for SSE2.
// Chunks run in parallel (parallel_for); README "Weights, attributes and hooks" has the
// measured cost. fingerprint_value is the operator's function; the C function
// fused_inception._C.fingerprint (csrc/fingerprint_int.cpp) returns its value as a Python int
// without the dispatcher, for the per-forward checks.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/vector_isa.h"

#ifdef FI_X86_VECTOR
#include <immintrin.h>
#endif

namespace fused_inception {
namespace {

constexpr int64_t kChunkBytes = 64 * 1024;
constexpr int64_t kSerialBytes = 4 * kChunkBytes;
constexpr int kLanes = 64;
// xxHash32's primes (odd).
constexpr uint32_t kP1 = 0x9E3779B1u;
constexpr uint32_t kP2 = 0x85EBCA77u;
constexpr uint32_t kP3 = 0xC2B2AE3Du;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // splitmix64's increment

inline uint32_t xxh_round(uint32_t acc, uint32_t w) {
  acc += w * kP2;
  return ((acc << 13) | (acc >> 19)) * kP1;
}

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser: a bijection on 64-bit values
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// One round of every lane in a[, b] for words `w` (lane j takes w[j], j < count).
inline __attribute__((always_inline)) void rounds(uint32_t* a, uint32_t* b, const unsigned char* w,
                                                  int count) {
  for (int j = 0; j < count; ++j) {
    uint32_t word;
    std::memcpy(&word, w + 4 * j, 4);
    a[j] = xxh_round(a[j], word);
    b[j] += a[j];
  }
}

// The 64 lanes' states (a, b), made at their start values; aligned for vector loads.
struct Lanes {
  alignas(64) uint32_t a[kLanes];
  alignas(64) uint32_t b[kLanes];
  Lanes() {
    for (int j = 0; j < kLanes; ++j) {
      a[j] = kP1 + static_cast<uint32_t>(j);
      b[j] = kP3 - static_cast<uint32_t>(j);
    }
  }
};

// The rest of a chunk after its first `rows` whole rows of 64 words, and the chunk's value.
inline __attribute__((always_inline)) uint64_t finish(uint32_t* a, uint32_t* b,
                                                      const unsigned char* data, int64_t bytes,
                                                      int64_t rows) {
  const int64_t words = bytes / 4;
  for (int64_t i = rows * kLanes; i < words; i += kLanes) {
    rounds(a, b, data + 4 * i, static_cast<int>(std::min<int64_t>(kLanes, words - i)));
  }
  // Trailing bytes (bytes % 4), zero-extended, as one more word of lane 0 (the byte count goes
  // into h below, so a trailing zero byte is not the same as no byte).
  const int64_t tail = bytes % 4;
  if (tail != 0) {
    uint32_t w = 0;
    std::memcpy(&w, data + 4 * words, tail);
    a[0] = xxh_round(a[0], w);
    b[0] += a[0];
  }
  // The lanes combine by XOR of independent mixes (lane j's value plus j * kGolden, through
  // splitmix64's finaliser). The 64 mixes vectorise; a chain of 64 dependent ones cost about
  // 0.25 us per chunk, most of a small tensor's hash.
  uint64_t h = mix64(static_cast<uint64_t>(bytes));
  for (int j = 0; j < kLanes; ++j) {
    const uint64_t lane = (static_cast<uint64_t>(a[j]) << 32) | b[j];
    h ^= mix64(lane + static_cast<uint64_t>(j) * kGolden);
  }
  return h;
}

// Hash of one chunk of `bytes` bytes at `data` (any alignment): the plain loop, which the
// compiler vectorises for the target it is built for.
inline __attribute__((always_inline)) uint64_t chunk_hash_plain(const unsigned char* data,
                                                                int64_t bytes) {
  Lanes lanes;
  uint32_t* a = lanes.a;
  uint32_t* b = lanes.b;
  const int64_t rows = bytes / (4 * kLanes);
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t w[kLanes];
    std::memcpy(w, data + 4 * kLanes * r, sizeof(w));  // unaligned-safe; vector loads
    for (int j = 0; j < kLanes; ++j) {
      a[j] = xxh_round(a[j], w[j]);
      b[j] += a[j];
    }
  }
  return finish(a, b, data, bytes, rows);
}

uint64_t chunk_hash_baseline(const unsigned char* data, int64_t bytes) {
  return chunk_hash_plain(data, bytes);
}

#ifdef FI_X86_VECTOR
// The AVX-512 loop prefetches the line kPrefetchBytes ahead of each one it reads (x86 prefetches
// never fault, past the data's end included). Inside a network the weights a check hashes come
// from memory; the hardware prefetchers start again at each 4 KiB page. Measured on the 2-core
// Emerald Rapids (2026-12-06, the prepared GoogLeNet's seven Winograd sources, 7.5 MB in seven
// calls, 64 or 256 MB written before each round, distances interleaved in one process): 4096
// bytes ahead took 0.74-0.76x the time of none (0.685 -> 0.521 ms and 0.374 -> 0.277 ms in two
// runs; 8192 and 16384 the same within 2%, 1024 and 2048 less).
constexpr int64_t kPrefetchBytes = 4096;

// One round of 16 lanes (acc, sum) on the 16 words at w.
__attribute__((target("avx512f"), always_inline)) inline void round16(__m512i& acc, __m512i& sum,
                                                                      const unsigned char* w,
                                                                      __m512i p1, __m512i p2) {
  const __m512i word = _mm512_loadu_si512(w);
  acc = _mm512_mullo_epi32(
      _mm512_rol_epi32(_mm512_add_epi32(acc, _mm512_mullo_epi32(word, p2)), 13), p1);
  sum = _mm512_add_epi32(sum, acc);
}

// The 64 lanes' states in 8 of the 32 registers for the whole chunk: four independent chains,
// one row of 256 bytes per step. (The compiler's vectorisation of the plain loop kept them on
// the stack, a store and a load per lane vector per row in every chain.)
__attribute__((target("avx512f"))) uint64_t chunk_hash_avx512(const unsigned char* data,
                                                              int64_t bytes) {
  Lanes lanes;
  const int64_t rows = bytes / (4 * kLanes);
  const __m512i p1 = _mm512_set1_epi32(static_cast<int>(kP1));
  const __m512i p2 = _mm512_set1_epi32(static_cast<int>(kP2));
  __m512i acc[4], sum[4];  // (constant indices after unrolling: registers, checked in the asm)
  for (int v = 0; v < 4; ++v) {
    acc[v] = _mm512_load_si512(lanes.a + 16 * v);
    sum[v] = _mm512_load_si512(lanes.b + 16 * v);
  }
  const unsigned char* w = data;
  for (int64_t r = 0; r < rows; ++r, w += 4 * kLanes) {
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + 64 * v), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) round16(acc[v], sum[v], w + 64 * v, p1, p2);
  }
  for (int v = 0; v < 4; ++v) {
    _mm512_store_si512(lanes.a + 16 * v, acc[v]);
    _mm512_store_si512(lanes.b + 16 * v, sum[v]);
  }
  return finish(lanes.a, lanes.b, data, bytes, rows);
}

// Rows per block of the AVX2 loop: 16 x 256 bytes, read from memory by the first half's pass
// and from L1 by the second's.
constexpr int64_t kAvx2BlockRows = 16;

// One round of 8 lanes (acc, sum) on the 8 words at w.
__attribute__((target("avx2"), always_inline)) inline void round8(__m256i& acc, __m256i& sum,
                                                                  const unsigned char* w,
                                                                  __m256i p1, __m256i p2) {
  const __m256i word = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  __m256i t = _mm256_add_epi32(acc, _mm256_mullo_epi32(word, p2));
  t = _mm256_or_si256(_mm256_slli_epi32(t, 13), _mm256_srli_epi32(t, 19));
  acc = _mm256_mullo_epi32(t, p1);
  sum = _mm256_add_epi32(sum, acc);
}

__attribute__((target("avx2"))) uint64_t chunk_hash_avx2(const unsigned char* data, int64_t bytes) {
  Lanes lanes;
  const int64_t rows = bytes / (4 * kLanes);
  const __m256i p1 = _mm256_set1_epi32(static_cast<int>(kP1));
  const __m256i p2 = _mm256_set1_epi32(static_cast<int>(kP2));
  for (int64_t r0 = 0; r0 < rows; r0 += kAvx2BlockRows) {
    const int64_t r1 = std::min(rows, r0 + kAvx2BlockRows);
    for (int half = 0; half < 2; ++half) {  // lanes 32 * half .. 32 * half + 31
      auto* ah = reinterpret_cast<__m256i*>(lanes.a + 32 * half);
      auto* bh = reinterpret_cast<__m256i*>(lanes.b + 32 * half);
      __m256i a0 = _mm256_load_si256(ah), a1 = _mm256_load_si256(ah + 1);
      __m256i a2 = _mm256_load_si256(ah + 2), a3 = _mm256_load_si256(ah + 3);
      __m256i b0 = _mm256_load_si256(bh), b1 = _mm256_load_si256(bh + 1);
      __m256i b2 = _mm256_load_si256(bh + 2), b3 = _mm256_load_si256(bh + 3);
      const unsigned char* w = data + 4 * kLanes * r0 + 128 * half;
      for (int64_t r = r0; r < r1; ++r, w += 4 * kLanes) {
        round8(a0, b0, w, p1, p2);
        round8(a1, b1, w + 32, p1, p2);
        round8(a2, b2, w + 64, p1, p2);
        round8(a3, b3, w + 96, p1, p2);
      }
      _mm256_store_si256(ah, a0);
      _mm256_store_si256(ah + 1, a1);
      _mm256_store_si256(ah + 2, a2);
      _mm256_store_si256(ah + 3, a3);
      _mm256_store_si256(bh, b0);
      _mm256_store_si256(bh + 1, b1);
      _mm256_store_si256(bh + 2, b2);
      _mm256_store_si256(bh + 3, b3);
    }
  }
  return finish(lanes.a, lanes.b, data, bytes, rows);
}
#endif

// Hash of one chunk, by the build of the process's vector ISA.
uint64_t chunk_hash(const unsigned char* data, int64_t bytes) {
#ifdef FI_X86_VECTOR
  switch (vector_isa()) {
    case VectorIsa::kAvx512:
      return chunk_hash_avx512(data, bytes);
    case VectorIsa::kAvx2:
      return chunk_hash_avx2(data, bytes);
    case VectorIsa::kNone:
      break;
  }
#endif
  return chunk_hash_baseline(data, bytes);
}

// dtype, sizes and strides of a tensor, as one 64-bit value.
uint64_t layout_hash(const at::Tensor& x) {
  uint64_t h = mix64(static_cast<uint64_t>(x.scalar_type()) + 1);
  for (int64_t d = 0; d < x.dim(); ++d) {
    h = mix64(h ^ static_cast<uint64_t>(x.size(d)));
    h = mix64(h ^ (static_cast<uint64_t>(x.stride(d)) + 0x51EDull));
  }
  return h;
}

}  // namespace

// The hash of `tensors` (all on the CPU), as the operator's value.
int64_t fingerprint_value(const at::TensorList tensors) {
  struct Piece {  // one chunk: its bytes and its position (tensor t, chunk c of t)
    const unsigned char* data;
    int64_t bytes;
    uint64_t position;  // (t << 40) ^ c
  };
  std::vector<at::Tensor> copies;  // dense copies of non-dense tensors, alive while hashing
  std::vector<Piece> pieces;
  std::vector<int64_t> starts;  // bytes before each piece
  uint64_t result = mix64(static_cast<uint64_t>(tensors.size()));
  int64_t total_bytes = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const at::Tensor& given = tensors[t];
    TORCH_CHECK(given.device().is_cpu(), "fused_inception::fingerprint: tensor ", t, " is on ",
                given.device(), "; this operator hashes CPU tensors");
    result ^= mix64(layout_hash(given) ^ (static_cast<uint64_t>(t) << 48));
    const at::Tensor& x =
        given.is_non_overlapping_and_dense() ? given : copies.emplace_back(given.contiguous());
    const int64_t bytes = x.numel() * static_cast<int64_t>(x.element_size());
    // A dense tensor's span starts at its lowest address, which is data_ptr unless a stride is
    // negative (torch has none) or the tensor is empty.
    const auto* data = static_cast<const unsigned char*>(x.data_ptr());
    int64_t c = 0;
    do {  // an empty tensor is one empty piece
      const int64_t offset = c * kChunkBytes;
      const int64_t len = std::min(kChunkBytes, bytes - offset);
      pieces.push_back({data + offset, len, (static_cast<uint64_t>(t) << 40) ^ c});
      starts.push_back(total_bytes);
      total_bytes += len;
      ++c;
    } while (c * kChunkBytes < bytes);
  }
  const auto n = static_cast<int64_t>(pieces.size());
  std::vector<uint64_t> values(static_cast<size_t>(n));
  const auto hash_pieces = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Piece& p = pieces[static_cast<size_t>(i)];
      const uint64_t h = p.bytes > 0 ? chunk_hash(p.data, p.bytes) : 0x5EEDull;
      values[static_cast<size_t>(i)] = mix64(h ^ mix64(p.position));
    }
  };
  // Threads only pay for themselves past a few chunks' bytes (waking them costs a few us, the
  // hash of 64 KiB about 1.5 us): a block's 30 small BN and bias tensors hash on this thread.
  // Otherwise the pieces are cut into parts of about equal bytes (not equal counts: a block's
  // tensors are a few large weights among many small ones), a few per thread.
  if (total_bytes <= kSerialBytes) {
    hash_pieces(0, n);
  } else {
    fused_inception::parallel_for_equal_work(starts, n, total_bytes, hash_pieces);
  }
  for (const uint64_t v : values) result ^= v;
  return static_cast<int64_t>(result);
}

namespace {

at::Tensor fingerprint_cpu(const at::TensorList tensors) {
  return at::scalar_tensor(fingerprint_value(tensors), at::TensorOptions().dtype(at::kLong));
}

}  // namespace
}  // namespace fused_inception

TORCH_LIBRARY_IMPL(fused_inception, CPU, m) {
  m.impl("fingerprint", &fused_inception::fingerprint_cpu);
}
