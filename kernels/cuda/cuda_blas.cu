// kernels/cuda/cuda_blas.cu — weight upload (host dequantization to f16) and cuBLAS products.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_blas.h"
#include "kernels/fp16.h"

namespace kvtier::kernels::cuda {
namespace {

// cuBLAS's recommended workspace on Hopper (32 MiB).
constexpr size_t kBlasWorkspaceBytes = 32u << 20;

Status FromCuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return InternalError(std::string(what) + ": " + cudaGetErrorName(err));
}

Status FromBlas(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return InternalError(std::string(what) + ": " + cublasGetStatusName(st) + " (" +
                       cublasGetStatusString(st) + ")");
}

cublasHandle_t H(void* h) { return static_cast<cublasHandle_t>(h); }

}  // namespace

size_t WeightF16Bytes(const WeightView& w) {
  return static_cast<size_t>(w.rows) * static_cast<size_t>(w.cols) * sizeof(uint16_t);
}

Status CudaUploadWeightF16(const WeightView& w, uint16_t* d_dst) {
  if (w.rows <= 0 || w.cols <= 0 || w.data == nullptr) {
    return InvalidArgumentError("CudaUploadWeightF16: empty weight");
  }
  // Chunks of about 4M elements keep the staging buffer small for large matrices.
  const int64_t rows_per_chunk = std::max<int64_t>(1, (int64_t{4} << 20) / w.cols);
  std::vector<float> row(static_cast<size_t>(w.cols));
  std::vector<uint16_t> staging(static_cast<size_t>(std::min(rows_per_chunk, w.rows) * w.cols));
  const auto* src = static_cast<const uint8_t*>(w.data);
  for (int64_t r0 = 0; r0 < w.rows; r0 += rows_per_chunk) {
    const int64_t n = std::min(rows_per_chunk, w.rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      DequantizeRow(w.type, src + (r0 + r) * w.row_bytes, row.data(), w.cols);
      uint16_t* out = staging.data() + r * w.cols;
      for (int64_t c = 0; c < w.cols; ++c) {
        out[c] = F32ToF16(std::clamp(row[c], -65504.0f, 65504.0f));
      }
    }
    RETURN_IF_ERROR(FromCuda(
        cudaMemcpy(d_dst + r0 * w.cols, staging.data(),
                   static_cast<size_t>(n * w.cols) * sizeof(uint16_t), cudaMemcpyHostToDevice),
        "CudaUploadWeightF16 copy"));
  }
  return Status::Ok();
}

Result<std::unique_ptr<CudaBlas>> CudaBlas::Create() {
  std::unique_ptr<CudaBlas> b(new CudaBlas());
  cublasHandle_t h = nullptr;
  RETURN_IF_ERROR(FromBlas(cublasCreate(&h), "cublasCreate"));
  b->handle_ = h;
  RETURN_IF_ERROR(FromCuda(cudaMalloc(&b->workspace_, kBlasWorkspaceBytes), "cudaMalloc"));
  RETURN_IF_ERROR(
      FromBlas(cublasSetWorkspace(h, b->workspace_, kBlasWorkspaceBytes), "cublasSetWorkspace"));
  return Result<std::unique_ptr<CudaBlas>>(std::move(b));
}

CudaBlas::~CudaBlas() {
  if (handle_ != nullptr) (void)cublasDestroy(H(handle_));
  if (workspace_ != nullptr) (void)cudaFree(workspace_);
}

Status CudaBlas::Gemm(const uint16_t* d_w, int64_t rows, int64_t cols, const uint16_t* d_x,
                      int64_t n_tokens, float beta, float* d_y, void* stream) {
  if (rows <= 0 || cols <= 0 || n_tokens < 0 || rows > INT32_MAX || cols > INT32_MAX ||
      n_tokens > INT32_MAX) {
    return InvalidArgumentError("CudaBlas::Gemm: bad shape");
  }
  if (n_tokens == 0) return Status::Ok();
  if (!stream_set_ || stream != stream_) {
    // cublasSetStream resets the handle to cuBLAS's default workspace pool: give it ours back.
    RETURN_IF_ERROR(FromBlas(cublasSetStream(H(handle_), static_cast<cudaStream_t>(stream)),
                             "cublasSetStream"));
    RETURN_IF_ERROR(FromBlas(cublasSetWorkspace(H(handle_), workspace_, kBlasWorkspaceBytes),
                             "cublasSetWorkspace"));
    stream_ = stream;
    stream_set_ = true;
  }
  // Column-major view: W is stored as a cols x rows matrix (ld cols), so op(A) = A^T is
  // rows x cols; x is cols x n (ld cols); y is rows x n (ld rows).
  const float alpha = 1.0f;
  return FromBlas(
      cublasGemmEx(H(handle_), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows),
                   static_cast<int>(n_tokens), static_cast<int>(cols), &alpha, d_w, CUDA_R_16F,
                   static_cast<int>(cols), d_x, CUDA_R_16F, static_cast<int>(cols), &beta, d_y,
                   CUDA_R_32F, static_cast<int>(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx");
}

}  // namespace kvtier::kernels::cuda
