// kernels/cuda/cuda_ops.cu — RMSNorm, RoPE, SwiGLU and decode paged attention on CUDA.
//
// The kernels mirror the CPU ops (kernels/cpu/ops.cc) so results agree within float rounding:
// RoPE uses the same double-precision angle; attention is an online softmax over pages, split
// across blocks (split-k) for long contexts and merged by a second small kernel.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/cuda_ops.h"

namespace kvtier::kernels::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxPerLane = kMaxHeadDim / kWarp;
constexpr int kAttnWarps = 4;
constexpr int kPagesPerSplit = 32;  // one block of the partial kernel covers up to 512 keys

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

Status FromCuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return InternalError(std::string(what) + ": " + cudaGetErrorName(err) + " (" +
                       cudaGetErrorString(err) + ")");
}

Status LaunchStatus(const char* what) { return FromCuda(cudaGetLastError(), what); }

__device__ float WarpSum(float v) {
  for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// ---- RMSNorm: one block per token ---------------------------------------------------------
__device__ inline void Store(float* p, float v) { *p = v; }
__device__ inline void Store(uint16_t* p, float v) { *p = __half_as_ushort(__float2half_rn(v)); }

template <typename Out>
__global__ void RmsNormKernel(const float* x, const float* weight, int64_t dim, float eps,
                              Out* out) {
  const int64_t t = blockIdx.x;
  const float* xt = x + t * dim;
  Out* ot = out + t * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xt[i] * xt[i];
  ss = WarpSum(ss);
  __shared__ float warp_sums[32];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) warp_sums[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = (blockDim.x + kWarp - 1) / kWarp;
    float v = lane < n_warps ? warp_sums[lane] : 0.0f;
    v = WarpSum(v);
    if (lane == 0) warp_sums[0] = v;
  }
  __syncthreads();
  const float inv = rsqrtf(warp_sums[0] / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) Store(ot + i, xt[i] * inv * weight[i]);
}

// ---- RoPE: one thread per (token, head, pair) ---------------------------------------------
__global__ void RopeKernel(float* x, int64_t n_tokens, int n_heads, int head_dim,
                           const int32_t* positions, double freq_base, double freq_scale) {
  const int half = head_dim / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_tokens * n_heads * half) return;
  const int i = static_cast<int>(idx % half);
  const int64_t th = idx / half;  // t * n_heads + h
  const int64_t t = th / n_heads;
  const double inv_freq = pow(freq_base, -2.0 * i / head_dim);
  const double p = static_cast<double>(positions[t]) * freq_scale;
  const double a = remainder(p * inv_freq, 2.0 * 3.14159265358979323846);
  float s, c;
  sincosf(static_cast<float>(a), &s, &c);
  float* v = x + th * head_dim + 2 * i;
  const float x0 = v[0], x1 = v[1];
  v[0] = x0 * c - x1 * s;
  v[1] = x0 * s + x1 * c;
}

// ---- SwiGLU ---------------------------------------------------------------------------------
template <typename Out>
__global__ void SwiGluKernel(const float* gate, const float* up, int64_t n, Out* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  Store(out + i, g / (1.0f + expf(-g)) * up[i]);
}

__global__ void F32ToF16Kernel(const float* x, int64_t n, uint16_t* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) Store(y + i, x[i]);
}

__global__ void AddKernel(float* y, const float* x, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

// Grid n_tokens x ceil(dim / 256).
__global__ void EmbeddingKernel(const __half* table, int64_t dim, const int32_t* tokens,
                                float* out) {
  const int64_t t = blockIdx.x;
  const int64_t d = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (d >= dim) return;
  out[t * dim + d] = __half2float(table[static_cast<int64_t>(tokens[t]) * dim + d]);
}

// One block (1024 threads) per row. (value, index) pairs reduce to the largest value, lowest
// index; NaN compares as below everything.
__device__ inline bool Better(float v, int64_t i, float bv, int64_t bi) {
  if (isnan(v)) return false;
  if (isnan(bv)) return true;
  return v > bv || (v == bv && i < bi);
}

__global__ void ArgmaxKernel(const float* x, int64_t n, int32_t* out) {
  const float* row = x + static_cast<int64_t>(blockIdx.x) * n;
  float best = NAN;
  int64_t best_i = n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (Better(row[i], i, best, best_i)) {
      best = row[i];
      best_i = i;
    }
  }
  for (int off = kWarp / 2; off > 0; off /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, off);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, best_i, off);
    if (Better(ov, oi, best, best_i)) {
      best = ov;
      best_i = oi;
    }
  }
  __shared__ float s_v[32];
  __shared__ int64_t s_i[32];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) {
    s_v[warp] = best;
    s_i[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int n_warps = (blockDim.x + kWarp - 1) / kWarp;
    for (int w = 1; w < n_warps; ++w) {
      if (Better(s_v[w], s_i[w], best, best_i)) {
        best = s_v[w];
        best_i = s_i[w];
      }
    }
    out[blockIdx.x] = best_i < n ? static_cast<int32_t>(best_i) : 0;
  }
}

// SplitMix64 per element, Box-Muller to a normal value.
__device__ inline uint64_t SplitMix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void FillRandomKernel(uint16_t* x, int64_t n, uint64_t seed, float sigma) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint64_t r = SplitMix(seed * 0x2545f4914f6cdd1dull + static_cast<uint64_t>(i));
  const float u1 = (static_cast<float>(r >> 40) + 1.0f) * (1.0f / 16777217.0f);
  const float u2 = static_cast<float>((r >> 16) & 0xffffff) * (1.0f / 16777216.0f);
  const float v = sigma * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  Store(x + i, v);
}

// ---- Decode attention ---------------------------------------------------------------------
// Grid (n_heads, n_splits), kAttnWarps warps per block. Warp w of split s walks pages
// s*kPagesPerSplit + w, + kAttnWarps, ...; lane owns dims lane + 32*k. Each warp keeps its own
// online-softmax state; the block merges its warps, then either writes the normalised output
// (one split) or the partial (m, l, o) for MergeSplitsKernel.
__global__ void __launch_bounds__(kAttnWarps* kWarp)
    DecodeAttentionKernel(const __half* pool_base, int page_tokens, int n_kv_heads, int head_dim,
                          const PageRef* pages, int n_pages, int pages_stride, const float* q,
                          int32_t q_pos, int group, float scale, float* out, float* partials,
                          int n_splits) {
  const int h = blockIdx.x;
  const int split = blockIdx.y;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int kvh = h / group;
  pages += static_cast<size_t>(kvh) * pages_stride;
  const int per = (head_dim + kWarp - 1) / kWarp;
  const size_t half_elems = static_cast<size_t>(page_tokens) * n_kv_heads * head_dim;

  float qv[kMaxPerLane], acc[kMaxPerLane];
#pragma unroll
  for (int k = 0; k < kMaxPerLane; ++k) {
    const int d = lane + kWarp * k;
    qv[k] = (k < per && d < head_dim) ? q[static_cast<size_t>(h) * head_dim + d] * scale : 0.0f;
    acc[k] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int p_begin = split * kPagesPerSplit;
  const int p_end = min(n_pages, p_begin + kPagesPerSplit);
  for (int p = p_begin + warp; p < p_end; p += kAttnWarps) {
    const PageRef pr = pages[p];
    if (pr.first_pos > q_pos) break;
    const __half* kbase = pool_base + static_cast<size_t>(pr.page) * 2 * half_elems +
                          static_cast<size_t>(kvh) * page_tokens * head_dim;
    const __half* vbase = kbase + half_elems;
    const int n = min(pr.n_tokens, page_tokens);
    for (int j = 0; j < n; ++j) {
      if (pr.first_pos + j > q_pos) break;
      const __half* kj = kbase + static_cast<size_t>(j) * head_dim;
      float dot = 0.0f;
#pragma unroll
      for (int k = 0; k < kMaxPerLane; ++k) {
        const int d = lane + kWarp * k;
        if (k < per && d < head_dim) dot += qv[k] * __half2float(kj[d]);
      }
      const float s = WarpSum(dot);
      const float m_new = fmaxf(m, s);
      const float alpha = expf(m - m_new);  // m = -inf: 0
      const float pj = expf(s - m_new);
      l = l * alpha + pj;
      const __half* vj = vbase + static_cast<size_t>(j) * head_dim;
#pragma unroll
      for (int k = 0; k < kMaxPerLane; ++k) {
        const int d = lane + kWarp * k;
        const float vv = (k < per && d < head_dim) ? __half2float(vj[d]) : 0.0f;
        acc[k] = acc[k] * alpha + pj * vv;
      }
      m = m_new;
    }
  }

  __shared__ float s_m[kAttnWarps], s_l[kAttnWarps];
  __shared__ float s_o[kAttnWarps][kMaxHeadDim];
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int k = 0; k < kMaxPerLane; ++k) {
    const int d = lane + kWarp * k;
    if (k < per && d < head_dim) s_o[warp][d] = acc[k];
  }
  __syncthreads();
  float mm = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) mm = fmaxf(mm, s_m[w]);
  float ll = 0.0f;
  if (mm != -INFINITY) {
    for (int w = 0; w < kAttnWarps; ++w) ll += s_l[w] * expf(s_m[w] - mm);
  }
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float o = 0.0f;
    if (mm != -INFINITY) {
      for (int w = 0; w < kAttnWarps; ++w) o += s_o[w][d] * expf(s_m[w] - mm);
    }
    if (n_splits == 1) {
      out[static_cast<size_t>(h) * head_dim + d] = ll > 0.0f ? o / ll : 0.0f;
    } else {
      float* part = partials + (static_cast<size_t>(h) * n_splits + split) * (head_dim + 2);
      part[2 + d] = o;
      if (d == 0) {
        part[0] = mm;
        part[1] = ll;
      }
    }
  }
}

// Grid n_heads, one thread per dim: combines the splits of one head.
__global__ void MergeSplitsKernel(const float* partials, int n_splits, int head_dim, float* out) {
  const int h = blockIdx.x;
  const float* base = partials + static_cast<size_t>(h) * n_splits * (head_dim + 2);
  float mm = -INFINITY;
  for (int s = 0; s < n_splits; ++s) mm = fmaxf(mm, base[s * (head_dim + 2)]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float o = 0.0f, l = 0.0f;
    if (mm != -INFINITY) {
      for (int s = 0; s < n_splits; ++s) {
        const float* part = base + s * (head_dim + 2);
        const float w = expf(part[0] - mm);
        l += part[1] * w;
        o += part[2 + d] * w;
      }
    }
    out[static_cast<size_t>(h) * head_dim + d] = l > 0.0f ? o / l : 0.0f;
  }
}

int DecodeSplits(int n_pages) {
  return n_pages <= 0 ? 1 : (n_pages + kPagesPerSplit - 1) / kPagesPerSplit;
}

unsigned Blocks(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace

bool CudaDeviceAvailable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return false;
  }
  return count > 0;
}

Result<void*> CudaMalloc(size_t bytes) {
  void* ptr = nullptr;
  RETURN_IF_ERROR(FromCuda(cudaMalloc(&ptr, bytes), "cudaMalloc"));
  return ptr;
}

Status CudaFree(void* d_ptr) { return FromCuda(cudaFree(d_ptr), "cudaFree"); }

Status CudaCopyToDevice(void* d_dst, const void* src, size_t bytes) {
  return FromCuda(cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}

Status CudaCopyToHost(void* dst, const void* d_src, size_t bytes) {
  return FromCuda(cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

Status CudaSynchronize(void* stream) {
  return FromCuda(cudaStreamSynchronize(AsStream(stream)), "cudaStreamSynchronize");
}

Status CudaMemsetAsync(void* d_ptr, int value, size_t bytes, void* stream) {
  return FromCuda(cudaMemsetAsync(d_ptr, value, bytes, AsStream(stream)), "cudaMemsetAsync");
}

Status CudaCopyToDeviceAsync(void* d_dst, const void* host, size_t bytes, void* stream) {
  return FromCuda(cudaMemcpyAsync(d_dst, host, bytes, cudaMemcpyHostToDevice, AsStream(stream)),
                  "cudaMemcpyAsync H2D");
}

Status CudaCopyToHostAsync(void* host, const void* d_src, size_t bytes, void* stream) {
  return FromCuda(cudaMemcpyAsync(host, d_src, bytes, cudaMemcpyDeviceToHost, AsStream(stream)),
                  "cudaMemcpyAsync D2H");
}

Status CudaCopyDeviceToDeviceAsync(void* d_dst, const void* d_src, size_t bytes, void* stream) {
  return FromCuda(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, AsStream(stream)),
                  "cudaMemcpyAsync D2D");
}

Result<void*> CudaHostAlloc(size_t bytes) {
  void* ptr = nullptr;
  RETURN_IF_ERROR(FromCuda(cudaMallocHost(&ptr, bytes), "cudaMallocHost"));
  return ptr;
}

Status CudaHostFree(void* ptr) { return FromCuda(cudaFreeHost(ptr), "cudaFreeHost"); }

Result<void*> CudaStreamCreate() {
  cudaStream_t s = nullptr;
  RETURN_IF_ERROR(
      FromCuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"));
  return static_cast<void*>(s);
}

Status CudaStreamDestroy(void* stream) {
  return FromCuda(cudaStreamDestroy(AsStream(stream)), "cudaStreamDestroy");
}

Status CudaMemoryInfo(size_t* free_bytes, size_t* total_bytes) {
  return FromCuda(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
}

std::string CudaDeviceName() {
  int dev = 0;
  cudaDeviceProp prop;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return "?";
  }
  return prop.name;
}

Result<void*> CudaEventCreate() {
  cudaEvent_t e = nullptr;
  RETURN_IF_ERROR(FromCuda(cudaEventCreate(&e), "cudaEventCreate"));
  return static_cast<void*>(e);
}

Status CudaEventDestroy(void* event) {
  return FromCuda(cudaEventDestroy(static_cast<cudaEvent_t>(event)), "cudaEventDestroy");
}

Status CudaEventRecord(void* event, void* stream) {
  return FromCuda(cudaEventRecord(static_cast<cudaEvent_t>(event), AsStream(stream)),
                  "cudaEventRecord");
}

Result<float> CudaEventElapsedMs(void* start, void* end) {
  RETURN_IF_ERROR(
      FromCuda(cudaEventSynchronize(static_cast<cudaEvent_t>(end)), "cudaEventSynchronize"));
  float ms = 0.0f;
  RETURN_IF_ERROR(FromCuda(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)),
      "cudaEventElapsedTime"));
  return ms;
}

Status CudaRmsNorm(const float* d_x, const float* d_weight, int64_t n_tokens, int64_t dim,
                   float eps, float* d_out, void* stream) {
  if (n_tokens < 0 || dim <= 0) return InvalidArgumentError("CudaRmsNorm: bad shape");
  if (n_tokens == 0) return Status::Ok();
  RmsNormKernel<<<static_cast<unsigned>(n_tokens), 256, 0, AsStream(stream)>>>(d_x, d_weight, dim,
                                                                               eps, d_out);
  return LaunchStatus("CudaRmsNorm");
}

Status CudaRmsNormToF16(const float* d_x, const float* d_weight, int64_t n_tokens, int64_t dim,
                        float eps, uint16_t* d_out, void* stream) {
  if (n_tokens < 0 || dim <= 0) return InvalidArgumentError("CudaRmsNormToF16: bad shape");
  if (n_tokens == 0) return Status::Ok();
  RmsNormKernel<<<static_cast<unsigned>(n_tokens), 256, 0, AsStream(stream)>>>(d_x, d_weight, dim,
                                                                               eps, d_out);
  return LaunchStatus("CudaRmsNormToF16");
}

Status CudaRopeInPlace(float* d_x, int64_t n_tokens, int n_heads, int head_dim,
                       const int32_t* d_positions, float freq_base, float freq_scale,
                       void* stream) {
  if (n_tokens < 0 || n_heads <= 0 || head_dim <= 0 || head_dim % 2 != 0) {
    return InvalidArgumentError("CudaRopeInPlace: bad shape");
  }
  const int64_t n = n_tokens * n_heads * (head_dim / 2);
  if (n == 0) return Status::Ok();
  RopeKernel<<<Blocks(n, 256), 256, 0, AsStream(stream)>>>(d_x, n_tokens, n_heads, head_dim,
                                                           d_positions, freq_base, freq_scale);
  return LaunchStatus("CudaRopeInPlace");
}

Status CudaSwiGlu(const float* d_gate, const float* d_up, int64_t n, float* d_out, void* stream) {
  if (n < 0) return InvalidArgumentError("CudaSwiGlu: bad size");
  if (n == 0) return Status::Ok();
  SwiGluKernel<<<Blocks(n, 256), 256, 0, AsStream(stream)>>>(d_gate, d_up, n, d_out);
  return LaunchStatus("CudaSwiGlu");
}

Status CudaSwiGluToF16(const float* d_gate, const float* d_up, int64_t n, uint16_t* d_out,
                       void* stream) {
  if (n < 0) return InvalidArgumentError("CudaSwiGluToF16: bad size");
  if (n == 0) return Status::Ok();
  SwiGluKernel<<<Blocks(n, 256), 256, 0, AsStream(stream)>>>(d_gate, d_up, n, d_out);
  return LaunchStatus("CudaSwiGluToF16");
}

Status CudaF32ToF16(const float* d_x, int64_t n, uint16_t* d_y, void* stream) {
  if (n < 0) return InvalidArgumentError("CudaF32ToF16: bad size");
  if (n == 0) return Status::Ok();
  F32ToF16Kernel<<<Blocks(n, 256), 256, 0, AsStream(stream)>>>(d_x, n, d_y);
  return LaunchStatus("CudaF32ToF16");
}

Status CudaAddInPlace(float* d_y, const float* d_x, int64_t n, void* stream) {
  if (n < 0) return InvalidArgumentError("CudaAddInPlace: bad size");
  if (n == 0) return Status::Ok();
  AddKernel<<<Blocks(n, 256), 256, 0, AsStream(stream)>>>(d_y, d_x, n);
  return LaunchStatus("CudaAddInPlace");
}

Status CudaEmbedding(const uint16_t* d_table, int64_t dim, const int32_t* d_tokens,
                     int64_t n_tokens, float* d_out, void* stream) {
  if (n_tokens < 0 || dim <= 0) return InvalidArgumentError("CudaEmbedding: bad shape");
  if (n_tokens == 0) return Status::Ok();
  const dim3 grid(static_cast<unsigned>(n_tokens), Blocks(dim, 256));
  EmbeddingKernel<<<grid, 256, 0, AsStream(stream)>>>(reinterpret_cast<const __half*>(d_table), dim,
                                                      d_tokens, d_out);
  return LaunchStatus("CudaEmbedding");
}

Status CudaArgmax(const float* d_x, int64_t rows, int64_t n, int32_t* d_out, void* stream) {
  if (rows < 0 || n <= 0) return InvalidArgumentError("CudaArgmax: bad shape");
  if (rows == 0) return Status::Ok();
  ArgmaxKernel<<<static_cast<unsigned>(rows), 1024, 0, AsStream(stream)>>>(d_x, n, d_out);
  return LaunchStatus("CudaArgmax");
}

Status CudaFillRandomF16(uint16_t* d_x, int64_t n, uint64_t seed, float sigma, void* stream) {
  if (n < 0) return InvalidArgumentError("CudaFillRandomF16: bad size");
  if (n == 0) return Status::Ok();
  FillRandomKernel<<<Blocks(n, 256), 256, 0, AsStream(stream)>>>(d_x, n, seed, sigma);
  return LaunchStatus("CudaFillRandomF16");
}

size_t CudaDecodeAttentionWorkspaceBytes(int n_heads, int head_dim, int n_pages) {
  const int splits = DecodeSplits(n_pages);
  if (splits <= 1) return 0;
  return static_cast<size_t>(n_heads) * splits * (head_dim + 2) * sizeof(float);
}

namespace {

Status LaunchDecode(const KvPool& pool, const PageRef* d_pages, int n_pages, int pages_stride,
                    const float* d_q, int32_t q_pos, int n_heads, float scale, float* d_out,
                    void* d_workspace, void* stream) {
  if (pool.n_kv_heads <= 0 || n_heads <= 0 || n_heads % pool.n_kv_heads != 0) {
    return InvalidArgumentError(
        "CudaPagedAttentionDecode: n_heads must be a multiple of n_kv_heads");
  }
  if (pool.head_dim <= 0 || pool.head_dim > kMaxHeadDim || pool.page_tokens <= 0) {
    return InvalidArgumentError("CudaPagedAttentionDecode: head_dim must be in [1, 256]");
  }
  if (n_pages < 0) return InvalidArgumentError("CudaPagedAttentionDecode: n_pages < 0");
  const int splits = DecodeSplits(n_pages);
  if (splits > 1 && d_workspace == nullptr) {
    return InvalidArgumentError("CudaPagedAttentionDecode: workspace required");
  }
  const dim3 grid(static_cast<unsigned>(n_heads), static_cast<unsigned>(splits));
  DecodeAttentionKernel<<<grid, kAttnWarps * kWarp, 0, AsStream(stream)>>>(
      reinterpret_cast<const __half*>(pool.base), pool.page_tokens, pool.n_kv_heads, pool.head_dim,
      d_pages, n_pages, pages_stride, d_q, q_pos, n_heads / pool.n_kv_heads, scale, d_out,
      static_cast<float*>(d_workspace), splits);
  RETURN_IF_ERROR(LaunchStatus("CudaPagedAttentionDecode"));
  if (splits > 1) {
    MergeSplitsKernel<<<static_cast<unsigned>(n_heads), 128, 0, AsStream(stream)>>>(
        static_cast<const float*>(d_workspace), splits, pool.head_dim, d_out);
    RETURN_IF_ERROR(LaunchStatus("CudaPagedAttentionDecode merge"));
  }
  return Status::Ok();
}

}  // namespace

Status CudaPagedAttentionDecode(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                const float* d_q, int32_t q_pos, int n_heads, float scale,
                                float* d_out, void* d_workspace, void* stream) {
  return LaunchDecode(pool, d_pages, n_pages, 0, d_q, q_pos, n_heads, scale, d_out, d_workspace,
                      stream);
}

Status CudaPagedAttentionDecodePerKvHead(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                         const float* d_q, int32_t q_pos, int n_heads, float scale,
                                         float* d_out, void* d_workspace, void* stream) {
  return LaunchDecode(pool, d_pages, n_pages, n_pages, d_q, q_pos, n_heads, scale, d_out,
                      d_workspace, stream);
}

}  // namespace kvtier::kernels::cuda
