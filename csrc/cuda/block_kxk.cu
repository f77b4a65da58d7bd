// block_kxk (version 2): the block's two kxk convolutions in one launch, over the scratch rows
// r [M = N*H*W, c2r + c3r] that block_1x1 wrote (fused_inception/triton/block_kxk.py is the
// Triton kernel of the same family):
//
//   b2 = relu(conv3x3(r2; w2, pad 1) + b2)  into out's channels [off2, off2 + c2)
//   b3 = relu(convKxK(r3; w3, pad K/2) + b3) into out's channels [off3, off3 + c3), K = k3
//
// with zero padding (taps outside the image contribute 0). Each is an implicit GEMM: M pixel
// rows x N output channels x K = taps x reduced channels, on the tensor cores (mma.sync
// m16n8k16, fp32 accumulators), fp16 or bf16 only (fp32 stays on chain_1x1_kxk). See
// block_kxk_kernel for the tiling, block_kxk_plan for the host's choice of tiles.
#include <cstddef>
#include <cstdint>

#include "cuda/compat.cuh"
#include "cuda/kernels.h"
#include "cuda/ptx.cuh"
#include "cuda/tile_math.cuh"

namespace fused_inception::FI_KERNEL_NS {

// Tile sizes and the dynamic shared-memory layout (byte offsets) of block_kxk_kernel<T, BM>.
template <typename T, int BM>
struct KxkTile {
  static_assert(BM == 64 || BM == 128, "M tiles of 64 or 128 pixel rows");
  static constexpr int kWarpRows = BM / tile::kWarps;  // warps split M: 16 or 32 rows each
  static constexpr int kFragsM = kWarpRows / 16;       // m16 fragments per warp
  static constexpr int kMaxBN = 128;                   // output channels per tile, at most
  static constexpr int kCK = 32;                       // reduced channels per A chunk
  static constexpr int kBK = 32;                       // rows of the flattened K per stage
  static constexpr int kStages = 3;                    // cp.async pipeline depth (B)
  // Staged A rows per chunk: the tile's BM rows plus the halo of the taps' row windows
  // (block_kxk_plan keeps a window's rows within this), then 8 zero rows.
  static constexpr int kHaloRows = 128;
  static constexpr int kRows = BM + kHaloRows;
  static constexpr int kZeroRows = 8;
  // Pitches in elements: 16-byte chunks per row odd (5 and 17), so that 8 consecutive rows at
  // the same column chunk fall in 8 distinct groups of 4 banks (one ldmatrix phase).
  static constexpr int kLdA = kCK + 8;
  static constexpr int kLdB = kMaxBN + 8;
  static constexpr std::size_t kABytes = sizeof(T) * (kRows + kZeroRows) * kLdA;
  static constexpr std::size_t kBBytes = sizeof(T) * kBK * kLdB;
  static constexpr std::size_t kA = 0;  // 2 A buffers (one per chunk in flight)
  static constexpr std::size_t kB = tile::align128(2 * kABytes);
  static constexpr std::size_t kSmemBytes = kB + kStages * kBBytes;
  static_assert(kRows % 8 == 0 && kABytes % 128 == 0, "zero rows aligned to the bank groups");
};

// Host-chosen tiling of one launch (block_kxk_plan), passed to the kernel by value.
struct BlockKxkPlan {
  int bm;                // pixel rows per tile: 64 or 128
  int bn2, bn3;          // output channels per tile of b2 and b3 (multiples of 16, <= 128)
  int rows2, rows3;      // tap rows (dy) per staged window of b2 and b3 (1 .. K)
  int64_t tiles_m;       // M tiles of this launch: ceil(M / bm) for the whole of M
  int64_t tile_m_begin;  // its first M tile (0; the tests launch single tiles to count them)
  int64_t tiles2;        // ceil(c2 / bn2): blockIdx.y < tiles2 is b2, the rest b3
  int64_t tiles3;        // ceil(c3 / bn3)
  double executed_macs;  // the tensor-core MACs this plan executes (the model the chooser uses)
  double loaded_bytes;   // global bytes it loads (A windows and B tiles, 16-byte granular)
};

namespace kxk_detail {

// One branch's operands as the kernel sees them.
struct Branch {
  const void* w;  // [k*k, cr, cout]
  const float* bias;
  int64_t cr, col0, cout, off;  // reduced channels, their first column in r, outputs, out slice
  int k, bn, window_rows;
};

// One unit of the K loop: a chunk of reduced channels [c0, c0 + cv) and a window of tap rows
// [ty0, ty0 + ny) of every tap (ty, tx). Its K is flattened as (tap, channel) with the
// channels rounded up to 8 (one ldmatrix matrix each), then up to 16 (one mma step).
struct Unit {
  int64_t c0;
  int cv, cv8, ty0, ny, taps, k_rows, steps;
};

template <int CK, int BK, int STAGES>
__device__ __forceinline__ Unit unit_at(const Branch& b, int index, int windows) {
  Unit u;
  u.c0 = static_cast<int64_t>(index / windows) * CK;
  const int64_t left = b.cr - u.c0;
  u.cv = static_cast<int>(left < CK ? left : CK);
  u.cv8 = (u.cv + 7) / 8 * 8;
  u.ty0 = index % windows * b.window_rows;
  u.ny = b.k - u.ty0 < b.window_rows ? b.k - u.ty0 : b.window_rows;
  u.taps = u.ny * b.k;
  u.k_rows = u.taps * u.cv8;
  const int steps = (u.k_rows + BK - 1) / BK;
  // A unit spans at least STAGES - 1 steps, so that its A buffer is not refilled (two units
  // later) while a step of it is still read.
  u.steps = steps > STAGES - 1 ? steps : STAGES - 1;
  return u;
}

}  // namespace kxk_detail

// Grid: (tiles_m, tiles2 + tiles3), 128 threads (4 warps, each BM/4 pixel rows and all of the
// tile's bn channels). Block (bx, by) computes pixel rows [bx*BM, bx*BM + BM) (flattened
// n, y, x: consecutive pixels) and bn output channels of b2 (by < tiles2) or b3.
//
// The K loop runs over units (a 32-channel chunk of r x a window of tap rows) and, within one,
// over steps of 32 rows of the flattened (tap, channel) K. Shared memory:
//   A: two buffers (units u and u + 1 in flight) of [kRows + 8][40] elements: the unit's
//      rows of r, i.e. the pixels m0 + (ty0 - pad)*W - pad onwards, BM + (ny-1)*W + 2*pad rows
//      (the tile and every tap's shift of it), loaded once per unit with cp.async (rows outside
//      [0, M) zero-filled), then 8 rows of zeros;
//   B: kStages buffers of [32][136]: the step's 32 rows of w (zero past the unit's K or cout).
// One cp.async group per step (the unit's A joins its first step's group), kStages - 1 steps
// ahead. Each mma step takes A by address with ldmatrix.x4: a lane gives the row of its pixel
// m shifted by the tap, m - m0 + ty*W + tx in the window, or, when the tap (or m) lies outside
// the image, zero row (that row & 7), which sits in the bank group of the row it replaces;
// B with ldmatrix.x4.trans. Both pitches are an odd number of 16-byte chunks, so the 8 rows of
// any ldmatrix phase (8 consecutive staged rows or their zero stand-ins, same chunk) hit 8
// distinct bank groups: conflict-free. Epilogue: bias + ReLU from the fragments into out.
//
// Reads r (each row of a unit's window once per tile of output channels), w2 / w3 (once per
// M tile), b2, b3; writes out's two channel slices only.
template <typename T, int BM>
__global__ void __launch_bounds__(tile::kThreads)
    block_kxk_kernel(const BlockKxkArgs args, const BlockKxkPlan plan) {
  using Tile = KxkTile<T, BM>;
  using kxk_detail::Branch;
  using kxk_detail::Unit;
  constexpr int kCK = Tile::kCK, kBK = Tile::kBK, kStages = Tile::kStages;
  constexpr int kFragsM = Tile::kFragsM, kMaxFragsN = Tile::kMaxBN / 8;
  FI_DYNAMIC_SHARED(unsigned char, smem);
  T* const a_smem = reinterpret_cast<T*>(smem + Tile::kA);
  T* const b_smem = reinterpret_cast<T*>(smem + Tile::kB);

  const bool is_b2 = blockIdx.y < plan.tiles2;
  const Branch br =
      is_b2 ? Branch{args.w2, args.b2, args.c2r, 0, args.c2, args.off2, 3, plan.bn2, plan.rows2}
            : Branch{args.w3,   args.b3, args.c3r, args.c2r,  args.c3,
                     args.off3, args.k3, plan.bn3, plan.rows3};
  const int64_t n0 = static_cast<int64_t>(is_b2 ? blockIdx.y : blockIdx.y - plan.tiles2) * br.bn;
  const int64_t m0 = (plan.tile_m_begin + static_cast<int64_t>(blockIdx.x)) * BM;
  const int64_t M = args.batch * args.height * args.width;
  const int64_t r_ld = args.c2r + args.c3r;
  const int W = static_cast<int>(args.width), H = static_cast<int>(args.height);
  const int pad = br.k / 2;
  const int windows = (br.k + br.window_rows - 1) / br.window_rows;
  const int units = static_cast<int>((br.cr + kCK - 1) / kCK) * windows;
  const T* const r = static_cast<const T*>(args.r);
  const T* const w = static_cast<const T*>(br.w);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  // 16-byte copies where rows start 16-byte aligned; element loads otherwise (uniform).
  const bool a_vec = tile::aligned16(r) && r_ld % 8 == 0 && br.col0 % 8 == 0;
  const bool b_vec = tile::aligned16(w) && br.cout % 8 == 0;

  // The zero rows of both A buffers (never overwritten: a window has at most kRows rows).
  for (int i = tid; i < 2 * Tile::kZeroRows * Tile::kLdA; i += tile::kThreads) {
    const int buffer = i / (Tile::kZeroRows * Tile::kLdA), e = i % (Tile::kZeroRows * Tile::kLdA);
    a_smem[buffer * (Tile::kABytes / sizeof(T)) + Tile::kRows * Tile::kLdA + e] =
        tile::from_float<T>(0.0f);
  }

  // The rows of r of unit u into A buffer `buffer`: window row i is pixel g0 + i.
  auto load_a = [&](const Unit& u, T* a) {
    const int64_t g0 = m0 + static_cast<int64_t>(u.ty0 - pad) * W - pad;
    const int rows = BM + (u.ny - 1) * W + 2 * pad, vecs = u.cv8 / 8;
    const int64_t col = br.col0 + u.c0;
    for (int i = tid; i < rows * vecs; i += tile::kThreads) {
      const int row = i / vecs, c = i % vecs * 8;
      const int64_t g = g0 + row;
      const bool real = g >= 0 && g < M;
      T* dst = a + row * Tile::kLdA + c;
      if (a_vec) {
        const int valid = real ? (u.cv - c < 8 ? u.cv - c : 8) : 0;
        fi::ptx::cp_async_16(dst, real ? r + g * r_ld + col + c : r,
                             static_cast<int>(sizeof(T)) * valid);
      } else {
        for (int e = 0; e < 8; ++e) {
          dst[e] = real && c + e < u.cv ? r[g * r_ld + col + c + e] : tile::from_float<T>(0.0f);
        }
      }
    }
  };
  // Rows [step*BK, step*BK + BK) of unit u's flattened K: row f is tap f / cv8 of the window,
  // channel c0 + f % cv8 (zero past the unit's channels and K, and past cout).
  auto load_b = [&](const Unit& u, int step, T* b) {
    const int vecs = br.bn / 8;
    for (int i = tid; i < kBK * vecs; i += tile::kThreads) {
      const int row = i / vecs, n = i % vecs * 8;
      const int f = step * kBK + row, tap = f / u.cv8, c = f % u.cv8;
      const bool real_row = f < u.k_rows && c < u.cv;
      const int64_t tap_g = static_cast<int64_t>(u.ty0 + tap / br.k) * br.k + tap % br.k;
      const int64_t w_row = tap_g * br.cr + u.c0 + c;
      const int64_t cols = br.cout - n0 - n;
      T* dst = b + row * Tile::kLdB + n;
      if (b_vec) {
        const int valid = real_row && cols > 0 ? (cols < 8 ? static_cast<int>(cols) : 8) : 0;
        fi::ptx::cp_async_16(dst, valid > 0 ? w + w_row * br.cout + n0 + n : w,
                             static_cast<int>(sizeof(T)) * valid);
      } else {
        for (int e = 0; e < 8; ++e) {
          dst[e] =
              real_row && e < cols ? w[w_row * br.cout + n0 + n + e] : tile::from_float<T>(0.0f);
        }
      }
    }
  };

  // Producer and consumer cursors over (unit, step within it).
  int p_unit = 0, p_step = 0, p_count = 0;
  Unit p_u{};
  if (units > 0) p_u = kxk_detail::unit_at<kCK, kBK, kStages>(br, 0, windows);
  auto produce = [&]() {
    if (p_unit < units) {
      if (p_step == 0) load_a(p_u, a_smem + (p_unit % 2) * (Tile::kABytes / sizeof(T)));
      load_b(p_u, p_step, b_smem + (p_count % kStages) * (Tile::kBBytes / sizeof(T)));
      ++p_count;
      if (++p_step == p_u.steps) {
        p_step = 0;
        if (++p_unit < units) p_u = kxk_detail::unit_at<kCK, kBK, kStages>(br, p_unit, windows);
      }
    }
    fi::ptx::cp_async_commit();  // possibly empty: one group per step keeps the count uniform
  };

  // This lane's pixels: row (lane % 16) of each of the warp's m16 fragments.
  int row_in_tile[kFragsM], py[kFragsM], px[kFragsM];
  bool row_real[kFragsM];
  FI_UNROLL
  for (int i = 0; i < kFragsM; ++i) {
    row_in_tile[i] = warp * Tile::kWarpRows + 16 * i + lane % 16;
    const int64_t m = m0 + row_in_tile[i];
    row_real[i] = m < M;
    py[i] = static_cast<int>(m % (args.height * args.width) / args.width);
    px[i] = static_cast<int>(m % args.width);
  }

  float acc[kFragsM][kMaxFragsN][4];
  FI_UNROLL
  for (int i = 0; i < kFragsM; ++i) {
    FI_UNROLL
    for (int j = 0; j < kMaxFragsN; ++j) {
      FI_UNROLL
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    }
  }

  int total_steps = 0;
  for (int u = 0; u < units; ++u) {
    total_steps += kxk_detail::unit_at<kCK, kBK, kStages>(br, u, windows).steps;
  }
  for (int s = 0; s < kStages - 1; ++s) produce();

  int c_unit = 0, c_step = 0;
  Unit c_u{};
  if (units > 0) c_u = kxk_detail::unit_at<kCK, kBK, kStages>(br, 0, windows);
  for (int step = 0; step < total_steps; ++step) {
    fi::ptx::cp_async_wait<kStages - 2>();
    __syncthreads();
    produce();
    const T* a = a_smem + (c_unit % 2) * (Tile::kABytes / sizeof(T));
    const T* b = b_smem + (step % kStages) * (Tile::kBBytes / sizeof(T));
    FI_UNROLL
    for (int kk = 0; kk < kBK / 16; ++kk) {
      const int f = c_step * kBK + 16 * kk;  // the mma step's first flattened K row
      if (f >= c_u.k_rows) break;            // uniform: past the unit's K
      // A: this lane's 8-channel block of the step, of tap (ty, tx) of the window.
      const int fl = f + 8 * (lane / 16);
      const bool k_real = fl < c_u.k_rows;
      const int tap = fl / c_u.cv8, c = fl % c_u.cv8;
      const int ty = tap / br.k, tx = tap % br.k;
      const int dy = c_u.ty0 + ty - pad, dx = tx - pad;
      std::uint32_t a_frag[kFragsM][4];
      FI_UNROLL
      for (int i = 0; i < kFragsM; ++i) {
        const int row = row_in_tile[i] + ty * W + tx;
        const bool inside = k_real && row_real[i] && py[i] + dy >= 0 && py[i] + dy < H &&
                            px[i] + dx >= 0 && px[i] + dx < W;
        const T* address =
            inside ? a + row * Tile::kLdA + c : a + (Tile::kRows + (row & 7)) * Tile::kLdA + c;
        fi::ptx::ldmatrix_x4(a_frag[i], address);
      }
      // B: pairs of n8 fragments, k rows 16*kk + (0..15).
      FI_UNROLL
      for (int jp = 0; jp < kMaxFragsN / 2; ++jp) {
        if (16 * jp >= br.bn) break;  // uniform
        std::uint32_t b_frag[4];
        const int k_row = 16 * kk + (lane / 8 % 2) * 8 + lane % 8;
        fi::ptx::ldmatrix_x4_trans(b_frag, b + k_row * Tile::kLdB + 16 * jp + (lane / 16) * 8);
        const std::uint32_t b0[2] = {b_frag[0], b_frag[1]}, b1[2] = {b_frag[2], b_frag[3]};
        FI_UNROLL
        for (int i = 0; i < kFragsM; ++i) {
          fi::ptx::mma_m16n8k16_f32<T>(acc[i][2 * jp], a_frag[i], b0, acc[i][2 * jp]);
          fi::ptx::mma_m16n8k16_f32<T>(acc[i][2 * jp + 1], a_frag[i], b1, acc[i][2 * jp + 1]);
        }
      }
    }
    if (++c_step == c_u.steps) {
      c_step = 0;
      if (++c_unit < units) c_u = kxk_detail::unit_at<kCK, kBK, kStages>(br, c_unit, windows);
    }
  }
  fi::ptx::cp_async_wait_all();

  // Epilogue: fragment element e of (i, j) is row 16i + lane/4 + 8*(e/2), column
  // 8j + 2*(lane%4) + e%2.
  T* const out = static_cast<T*>(args.out);
  FI_UNROLL
  for (int i = 0; i < kFragsM; ++i) {
    FI_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int64_t m = m0 + warp * Tile::kWarpRows + 16 * i + lane / 4 + 8 * half;
      if (m >= M) continue;
      T* const out_row = out + tile::pixel_offset(m, args.out_pixel_stride) + br.off;
      FI_UNROLL
      for (int j = 0; j < kMaxFragsN; ++j) {
        FI_UNROLL
        for (int e = 0; e < 2; ++e) {
          const int64_t n = n0 + 8 * j + 2 * (lane % 4) + e;
          if (8 * j < br.bn && n < br.cout) {
            out_row[n] = tile::from_float<T>(tile::relu(acc[i][j][2 * half + e] + br.bias[n]));
          }
        }
      }
    }
  }
}

namespace {

constexpr int kKxkTileWidths[] = {32, 64, 96, 128};

// Tap rows per staged window: all K when the window's halo, (rows - 1) * width + 2 * (k/2)
// rows, fits the A buffer's kHaloRows, else as many as fit (at least one).
int kxk_window_rows(int k, int64_t width) {
  const int64_t spare = KxkTile<__half, 64>::kHaloRows - 2 * (k / 2);
  const int64_t rows = 1 + spare / (width > 0 ? width : 1);
  return static_cast<int>(rows < k ? rows : k);
}

// Executed MACs and loaded bytes of one branch under a tiling (the model of BlockKxkPlan).
void kxk_branch_cost(int64_t tiles_m, int bm, int bn, int k, int window_rows, int64_t cr,
                     int64_t cout, int64_t width, double* macs, double* bytes) {
  if (cout == 0) return;
  const int64_t tiles_n = (cout + bn - 1) / bn;
  const int64_t cr8 = (cr + 7) / 8 * 8;
  double k_rows = 0.0, a_rows = 0.0;
  for (int ty0 = 0; ty0 < k; ty0 += window_rows) {
    const int ny = k - ty0 < window_rows ? k - ty0 : window_rows;
    for (int64_t c0 = 0; c0 < cr8; c0 += 32) {
      const int64_t cv8 = cr8 - c0 < 32 ? cr8 - c0 : 32;
      k_rows += static_cast<double>((ny * k * cv8 + 15) / 16 * 16);
      a_rows += static_cast<double>(bm + (ny - 1) * width + 2 * (k / 2)) * cv8;
    }
  }
  const double tiles = static_cast<double>(tiles_m) * static_cast<double>(tiles_n);
  *macs += tiles * bm * bn * k_rows;
  *bytes += tiles * 2.0 * (a_rows + static_cast<double>(k * k) * cr8 * bn);
}

}  // namespace

// The tiling of a launch: M tiles of 64 or 128 rows, output tiles of 32..128 channels per
// branch. It keeps the executed tensor-core MACs within 1.25x the useful ones (1.3x with a
// 5x5 b3) where it can, and among those loads the fewest global bytes (the model above: A
// windows per output tile, B per M tile); ties go to the first (smaller tiles, more CTAs).
BlockKxkPlan block_kxk_plan(const BlockKxkArgs& args) {
  const int64_t M = args.batch * args.height * args.width;
  const double useful = static_cast<double>(M) * (9.0 * static_cast<double>(args.c2r * args.c2) +
                                                  static_cast<double>(args.k3 * args.k3) *
                                                      static_cast<double>(args.c3r * args.c3));
  const double limit = args.k3 == 5 ? 1.30 : 1.25;
  BlockKxkPlan best{};
  bool have = false, best_within = false;
  for (const int bm : {64, 128}) {
    for (const int bn2 : kKxkTileWidths) {
      for (const int bn3 : kKxkTileWidths) {
        BlockKxkPlan p{};
        p.bm = bm;
        p.bn2 = bn2;
        p.bn3 = bn3;
        p.rows2 = kxk_window_rows(3, args.width);
        p.rows3 = kxk_window_rows(args.k3, args.width);
        p.tiles_m = (M + bm - 1) / bm;
        p.tiles2 = (args.c2 + bn2 - 1) / bn2;
        p.tiles3 = (args.c3 + bn3 - 1) / bn3;
        kxk_branch_cost(p.tiles_m, bm, bn2, 3, p.rows2, args.c2r, args.c2, args.width,
                        &p.executed_macs, &p.loaded_bytes);
        kxk_branch_cost(p.tiles_m, bm, bn3, args.k3, p.rows3, args.c3r, args.c3, args.width,
                        &p.executed_macs, &p.loaded_bytes);
        const bool within = useful <= 0.0 || p.executed_macs <= limit * useful;
        const bool better =
            !have || (within && !best_within) ||
            (within == best_within &&
             (within ? p.loaded_bytes < best.loaded_bytes : p.executed_macs < best.executed_macs));
        if (better) {
          best = p;
          best_within = within;
          have = true;
        }
      }
    }
  }
  return best;
}

namespace {

template <typename T, int BM>
const char* launch_block_kxk_tiles(const BlockKxkArgs& args, const BlockKxkPlan& plan,
                                   void* stream) {
  using Tile = KxkTile<T, BM>;
  const int64_t blocks_y = plan.tiles2 + plan.tiles3;
  if (plan.tiles_m > 2147483647 || blocks_y > 65535) {
    return "block_kxk: grid size out of range (more than 2^31 - 1 x 65535 blocks: split the "
           "batch)";
  }
  auto kernel = block_kxk_kernel<T, BM>;
  if (const char* error = fi_opt_in_dynamic_shared(kernel, Tile::kSmemBytes)) return error;
  const dim3 grid(static_cast<unsigned>(plan.tiles_m), static_cast<unsigned>(blocks_y));
  return fi_launch(kernel, grid, dim3(tile::kThreads), Tile::kSmemBytes, stream, args, plan);
}

}  // namespace

// Launches block_kxk with an explicit plan (the tests count the GPU's tiling on the shim).
const char* block_kxk_with_plan(const BlockKxkArgs& args, const BlockKxkPlan& plan, void* stream) {
  if (args.k3 != 3 && args.k3 != 5) return "block_kxk: unsupported k3 (expected 3 or 5)";
  if (plan.tiles_m == 0 || plan.tiles2 + plan.tiles3 == 0) return nullptr;
  return tile::dispatch_dtype(args.dtype, [&](auto element) -> const char* {
    using T = decltype(element);
    if constexpr (!tile::kTensorCores<T>) {
      return "block_kxk: float32 is not supported (16-bit only; fp32 runs chain_1x1_kxk)";
    } else {
      return plan.bm == 64 ? launch_block_kxk_tiles<T, 64>(args, plan, stream)
                           : launch_block_kxk_tiles<T, 128>(args, plan, stream);
    }
  });
}

const char* block_kxk(const BlockKxkArgs& args, void* stream) {
  if (args.batch == 0 || args.height == 0 || args.width == 0) return nullptr;
  return block_kxk_with_plan(args, block_kxk_plan(args), stream);
}

// The dynamic shared memory each instantiation launches with, named as c++filt prints the
// kernel (read by fused_inception/report/cuda.py).
inline void block_kxk_shared_memory(void (*emit)(const char* kernel, std::size_t bytes)) {
  emit("block_kxk_kernel<__half, 64>", KxkTile<__half, 64>::kSmemBytes);
  emit("block_kxk_kernel<__half, 128>", KxkTile<__half, 128>::kSmemBytes);
  emit("block_kxk_kernel<__nv_bfloat16, 64>", KxkTile<__nv_bfloat16, 64>::kSmemBytes);
  emit("block_kxk_kernel<__nv_bfloat16, 128>", KxkTile<__nv_bfloat16, 128>::kSmemBytes);
}

}  // namespace fused_inception::FI_KERNEL_NS
