// kernels/cuda/cuda_blas.h — f16 weights on the GPU and matrix products through cuBLAS.
//
// Thread safety: a CudaBlas (one cuBLAS handle and its workspace) is used by one thread at a
// time; the free functions may be called from any thread.
//
// Weights are dequantized at load, on the host, to IEEE f16 rows and copied to the device
// (CudaUploadWeightF16): every GGUF type the CPU backend reads (F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q6_K, Q4_K) goes through the same kernels::DequantizeRow the CPU uses, so the device
// copy is the CPU's weight rounded once to f16. Products take f16 activations and f16
// weights and accumulate in f32 (cublasGemmEx, CUBLAS_COMPUTE_32F).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/status.h"
#include "kernels/cpu/ops.h"

namespace kvtier::kernels::cuda {

// Bytes of `w` as f16 on the device: rows * cols * 2.
size_t WeightF16Bytes(const WeightView& w);

// Dequantizes the host weight `w` row by row into f16 (values beyond +-65504 are clamped to
// it) and copies it to d_dst ([rows][cols] f16, row-major), synchronously. Allocates a host
// staging buffer: a load-time call, not for a decode step.
Status CudaUploadWeightF16(const WeightView& w, uint16_t* d_dst);

class CudaBlas {
 public:
  // Creates the cuBLAS handle and gives it a fixed workspace (cublasSetWorkspace), so that
  // products allocate nothing afterwards and can be captured in a CUDA graph.
  static Result<std::unique_ptr<CudaBlas>> Create();
  ~CudaBlas();
  CudaBlas(const CudaBlas&) = delete;
  CudaBlas& operator=(const CudaBlas&) = delete;

  // y[t][r] = beta * y[t][r] + sum_c W[r][c] * x[t][c]   for t < n_tokens, r < rows.
  //   d_w: [rows][cols] f16 (CudaUploadWeightF16's layout); d_x: [n_tokens][cols] f16;
  //   d_y: [n_tokens][rows] f32 (beta 1 adds the product to it: a fused residual add).
  // Enqueued on `stream`.
  Status Gemm(const uint16_t* d_w, int64_t rows, int64_t cols, const uint16_t* d_x,
              int64_t n_tokens, float beta, float* d_y, void* stream);

 private:
  CudaBlas() = default;
  void* handle_ = nullptr;     // cublasHandle_t
  void* workspace_ = nullptr;  // device
  void* stream_ = nullptr;     // the stream the handle is bound to
  bool stream_set_ = false;
};

}  // namespace kvtier::kernels::cuda
