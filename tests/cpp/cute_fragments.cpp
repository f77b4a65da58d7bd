// Prints the lane/register mapping of mma.m16n8k16 (f16 and bf16, fp32 accumulators) and of
// ldmatrix (x1/x2/x4, plain and .trans) as CuTe defines them (MMA_Traits of
// SM80_16x8x16_F32{F16F16,BF16BF16}F32_TN, Copy_Traits of the SM75 LDSM atoms), evaluated on the
// host. tests/test_shim_ptx.py feeds the output to shim_ptx.cpp, which checks the shim's
// emulation against it: an independent source for the PTX ISA's fragment tables.
//
// Lines ("half" is the 16-bit half of a 32-bit register, 0 = low):
//   mma <type> A <lane> <reg> <half> <m> <k>
//   mma <type> B <lane> <reg> <half> <k> <n>
//   mma <type> C <lane> <index> <m> <n>
//   ldmatrix <matrices> <trans> <lane> <reg> <half> <address_lane> <element>
// where address_lane is the lane whose row address the element is read from and element its
// index within that 8-element row.
#include <cstdio>
#include <cute/atom/copy_traits_sm75.hpp>
#include <cute/atom/mma_traits_sm80.hpp>

namespace {

template <typename Traits>
void print_mma(const char* type) {
  using namespace cute;
  typename Traits::ALayout a;  // (thread, value) -> m + 16 * k
  typename Traits::BLayout b;  // (thread, value) -> n + 8 * k
  typename Traits::CLayout c;  // (thread, value) -> m + 16 * n
  for (int lane = 0; lane < 32; ++lane) {
    for (int v = 0; v < 8; ++v) {
      const int idx = a(lane, v);
      std::printf("mma %s A %d %d %d %d %d\n", type, lane, v / 2, v % 2, idx % 16, idx / 16);
    }
    for (int v = 0; v < 4; ++v) {
      const int idx = b(lane, v);
      std::printf("mma %s B %d %d %d %d %d\n", type, lane, v / 2, v % 2, idx / 8, idx % 8);
    }
    for (int v = 0; v < 4; ++v) {
      const int idx = c(lane, v);
      std::printf("mma %s C %d %d %d %d\n", type, lane, v, idx % 16, idx / 16);
    }
  }
}

// DstLayout maps (lane, bit of the lane's registers) to a bit of the source rows, lane s's row
// holding bits 128 * s .. 128 * s + 127 (SrcLayout).
template <typename Atom>
void print_ldmatrix(int matrices, int trans) {
  typename cute::Copy_Traits<Atom>::DstLayout dst;
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < matrices; ++reg) {
      for (int half = 0; half < 2; ++half) {
        const int bit = dst(lane, 32 * reg + 16 * half);
        std::printf("ldmatrix %d %d %d %d %d %d %d\n", matrices, trans, lane, reg, half, bit / 128,
                    bit % 128 / 16);
      }
    }
  }
}

}  // namespace

int main() {
  print_mma<cute::MMA_Traits<cute::SM80_16x8x16_F32F16F16F32_TN>>("f16");
  print_mma<cute::MMA_Traits<cute::SM80_16x8x16_F32BF16BF16F32_TN>>("bf16");
  print_ldmatrix<cute::SM75_U32x1_LDSM_N>(1, 0);
  print_ldmatrix<cute::SM75_U32x2_LDSM_N>(2, 0);
  print_ldmatrix<cute::SM75_U32x4_LDSM_N>(4, 0);
  print_ldmatrix<cute::SM75_U16x2_LDSM_T>(1, 1);
  print_ldmatrix<cute::SM75_U16x4_LDSM_T>(2, 1);
  print_ldmatrix<cute::SM75_U16x8_LDSM_T>(4, 1);
  return 0;
}
