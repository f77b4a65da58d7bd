// The CUDA kernels' offset math (csrc/cuda/tile_math.cuh: pixel_index, pixel_offset) past 2^31
// elements, the sizes a large batch reaches: every result must equal the exact product computed
// here in 128-bit integers. With int32 arithmetic (or an int parameter) these cases wrap.
// Torch-free; built and run by tests/test_cuda_offsets_native.py through tests/native.py.
// Prints one line per case and "checked <n> cases, <f> failed"; exits non-zero on any failure.
#include <cstdint>
#include <cstdio>
#include <type_traits>

#include "cuda/tile_math.cuh"

namespace {

namespace tile = fused_inception::emulated::tile;

static_assert(std::is_same_v<decltype(tile::pixel_index(0, 0, 0, 0, 0)), int64_t>);
static_assert(std::is_same_v<decltype(tile::pixel_offset(0, 0)), int64_t>);

struct Case {
  const char* name;
  int64_t image, y, x, height, width;  // the pixel
  int64_t pixel_stride;                // elements per pixel
};

// The last pixel of a batch, or a pixel of a very wide output, each past 2^31 elements.
constexpr Case kCases[] = {
    {"5b-x-batch-60000-last-pixel", 59999, 6, 6, 7, 7, 832},
    {"3a-x-batch-20000-last-pixel", 19999, 27, 27, 28, 28, 192},
    {"index-past-2^31-batch-50000-224x224", 49999, 223, 223, 224, 224, 1},
    {"out-pixel-3-stride-2^30+64", 0, 0, 3, 1, 4, (int64_t{1} << 30) + 64},
    {"x-batch-2^20-224x224x1024", (int64_t{1} << 20) - 1, 223, 223, 224, 224, 1024},
};

}  // namespace

int main() {
  int failed = 0, checked = 0;
  for (const Case& c : kCases) {
    // volatile: the values reach the functions at run time, as kernel arguments do.
    volatile int64_t image = c.image, y = c.y, x = c.x, height = c.height, width = c.width;
    volatile int64_t stride = c.pixel_stride;
    const __int128 want_index =
        (static_cast<__int128>(c.image) * c.height + c.y) * c.width + static_cast<__int128>(c.x);
    const __int128 want_offset = want_index * c.pixel_stride;
    const int64_t index = tile::pixel_index(image, y, x, height, width);
    const int64_t offset = tile::pixel_offset(index, stride);
    const bool ok =
        index == want_index && offset == want_offset && want_offset >= (int64_t{1} << 31);
    std::printf("%s %s index %lld offset %lld\n", ok ? "ok" : "FAIL", c.name,
                static_cast<long long>(index), static_cast<long long>(offset));
    failed += ok ? 0 : 1;
    ++checked;
  }
  std::printf("checked %d cases, %d failed\n", checked, failed);
  return failed == 0 ? 0 : 1;
}
