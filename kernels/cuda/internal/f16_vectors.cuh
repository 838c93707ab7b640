// kernels/cuda/internal/f16_vectors.cuh — device helpers shared by the .cu files of kvtier_cuda
// (included only by them: it needs cuda_fp16.h).
#pragma once

#include <cuda_fp16.h>

namespace kvtier::kernels::cuda::internal {

// The 8 f16 values of a 16-byte load, as floats.
__device__ inline void Unpack8(const uint4& u, float* f) {
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __half22float2(h[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

}  // namespace kvtier::kernels::cuda::internal
