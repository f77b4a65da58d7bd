// The shim's launch counters (simt::LaunchStats) for the binding layer, which does not include
// the shim: see kernels.h (count_regions, last_launch_counters).
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "cuda/compat.cuh"
#include "cuda/kernels.h"

namespace fused_inception::emulated {

static_assert(kCountedRegions == static_cast<int>(simt::kCountedRegions));

const char* count_regions(const void* const* bases, const int64_t* bytes, int n) {
  std::vector<std::pair<const void*, std::size_t>> ranges;
  for (int i = 0; i < n; ++i) ranges.emplace_back(bases[i], static_cast<std::size_t>(bytes[i]));
  return simt::count_regions(ranges);
}

void last_launch_counters(int64_t* out) {
  const simt::LaunchStats s = simt::last_launch_stats();
  std::vector<std::uint64_t> values = {s.blocks,   s.threads_per_block, s.dynamic_shared_bytes,
                                       s.mma_macs, s.cp_async_copies,   s.cp_async_bytes};
  values.insert(values.end(), s.region_bytes.begin(), s.region_bytes.end());
  for (const simt::SharedAccessStats* a : {&s.ldmatrix, &s.shared_loads, &s.shared_stores}) {
    values.insert(values.end(), {a->instructions, a->phases, a->wavefronts, a->max_degree});
  }
  for (int i = 0; i < kLaunchCounters; ++i) out[i] = static_cast<int64_t>(values.at(i));
}

}  // namespace fused_inception::emulated
