// Every wrapper of csrc/cuda/ptx.cuh in kernels that nvcc compiles for sm_80 and sm_90, for
// tests/test_shim_ptx.py to find the SASS instructions they must become (HMMA.16816.F32 and
// .F32.BF16, LDSM, LDGSTS, LDGDEPBAR/DEPBAR, LDS/STS) with no stack frame. Not part of the package.
#include "cuda/compat.cuh"
#include "cuda/ptx.cuh"

namespace probe {

// One warp: cp.async two groups of a 16x16 A tile and a 16x8 B tile (B stored n-major) into
// shared memory, ldmatrix them (x4 and x2, plain and .trans) and multiply with mma.sync.
template <typename T>
__global__ void __launch_bounds__(32)
    ptx_mma_kernel(const T* a, const T* b, const T* b_kn, float* d, int valid_bytes) {
  __shared__ __align__(128) T a_smem[16 * 16];
  __shared__ __align__(128) T b_smem[8 * 16];
  __shared__ __align__(128) T b_kn_smem[16 * 8];
  const unsigned lane = threadIdx.x;
  fi::ptx::cp_async_16(a_smem + lane * 8, a + lane * 8, valid_bytes);
  fi::ptx::cp_async_commit();
  if (lane < 16) {
    fi::ptx::cp_async_16(b_smem + lane * 8, b + lane * 8, 16);
    fi::ptx::cp_async_16(b_kn_smem + lane * 8, b_kn + lane * 8, 16);
  }
  fi::ptx::cp_async_commit();
  fi::ptx::cp_async_wait<1>();
  fi::ptx::cp_async_wait<0>();
  __syncthreads();
  std::uint32_t a_frag[4], b_frag[2], b_frag_t[2], b_one[1], b_one_t[1];
  fi::ptx::ldmatrix_x4(a_frag, a_smem + (lane % 16) * 16 + (lane / 16) * 8);
  fi::ptx::ldmatrix_x2(b_frag, b_smem + (lane % 8) * 16 + (lane / 8 % 2) * 8);
  fi::ptx::ldmatrix_x2_trans(b_frag_t, b_kn_smem + (lane % 16) * 8);
  fi::ptx::ldmatrix_x1(b_one, b_smem + (lane % 8) * 16);
  fi::ptx::ldmatrix_x1_trans(b_one_t, b_kn_smem + (lane % 8) * 8);
  std::uint32_t a_t[4];
  fi::ptx::ldmatrix_x4_trans(a_t, a_smem + (lane % 16) * 16 + (lane / 16) * 8);
  const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float acc[4], acc_t[4];
  fi::ptx::mma_m16n8k16_f32<T>(acc, a_frag, b_frag, zero);
  fi::ptx::mma_m16n8k16_f32<T>(acc, a_t, b_frag_t, acc);
  b_frag[0] ^= b_one[0];
  b_frag[1] ^= b_one_t[0];
  fi::ptx::mma_m16n8k16_f32<T>(acc_t, a_frag, b_frag, acc);
  for (int i = 0; i < 4; ++i) d[lane * 4 + i] = acc[i] + acc_t[i];
}

// The counted shared accesses: 4 and 16 bytes per lane, stored and loaded back.
__global__ void __launch_bounds__(32) shared_access_kernel(const uint4* in, uint4* out) {
  __shared__ __align__(16) uint4 tile[32];
  __shared__ std::uint32_t words[32];
  const unsigned lane = threadIdx.x;
  fi::ptx::sts128(&tile[lane], in[lane]);
  fi::ptx::sts32(&words[lane], in[lane].x);
  __syncwarp();
  uint4 v = fi::ptx::lds128(&tile[31 - lane]);
  v.y += fi::ptx::lds32(&words[(lane + 1) % 32]);
  out[lane] = v;
}

// cp.async.wait_all, which also commits the open group.
__global__ void __launch_bounds__(32) wait_all_kernel(const uint4* in, uint4* out) {
  __shared__ __align__(16) uint4 tile[32];
  fi::ptx::cp_async_16(&tile[threadIdx.x], &in[threadIdx.x], 16);
  fi::ptx::cp_async_wait_all();
  out[threadIdx.x] = tile[threadIdx.x];
}

template __global__ void ptx_mma_kernel<__half>(const __half*, const __half*, const __half*, float*,
                                                int);
template __global__ void ptx_mma_kernel<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                       const __nv_bfloat16*, float*, int);

}  // namespace probe
