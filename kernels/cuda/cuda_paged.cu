// kernels/cuda/cuda_paged.cu — KV writes, page lists, prefill attention, digests, page
// scoring and top-k on CUDA (see cuda_paged.h for the contracts and layouts).
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_paged.h"
#include "kernels/cuda/internal/f16_vectors.cuh"

namespace kvtier::kernels::cuda {
namespace {

using internal::Unpack8;

constexpr int kWarp = 32;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxPerLane = kMaxHeadDim / kWarp;

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return Status::Ok();
  return InternalError(std::string(what) + ": " + cudaGetErrorName(err) + " (" +
                       cudaGetErrorString(err) + ")");
}

unsigned Blocks(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

Status CheckPool(const KvPool& pool, int n_heads, const char* what) {
  if (pool.n_kv_heads <= 0 || pool.page_tokens <= 0 || pool.head_dim <= 0 ||
      pool.head_dim > kMaxHeadDim || pool.head_dim % 2 != 0) {
    return InvalidArgumentError(std::string(what) + ": bad pool shape (head_dim even, <= 256)");
  }
  if (n_heads <= 0 || n_heads % pool.n_kv_heads != 0) {
    return InvalidArgumentError(std::string(what) + ": n_heads must be a multiple of n_kv_heads");
  }
  return Status::Ok();
}

__device__ float WarpSum(float v) {
  for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ float WarpMax(float v) {
  for (int off = kWarp / 2; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// ---- Page lists and KV writes ---------------------------------------------------------------
__global__ void BuildPageRefsKernel(const int32_t* tables, int64_t table_stride, int n_pages,
                                    int32_t total, int page_tokens, PageRef* refs,
                                    int64_t refs_stride) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (p >= n_pages) return;
  const int32_t first = p * page_tokens;
  refs[l * refs_stride + p] =
      PageRef{tables[l * table_stride + p], first, min(page_tokens, total - first)};
}

// One thread per (token, kv head, dim): K and V element.
__global__ void WriteKvKernel(__half* base, int page_tokens, int n_kv_heads, int head_dim,
                              const int32_t* table, const int32_t* positions, const float* k,
                              const float* v, int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = static_cast<int64_t>(n_kv_heads) * head_dim;
  if (idx >= n * row) return;
  const int64_t t = idx / row;
  const int hd = static_cast<int>(idx % row);
  const int h = hd / head_dim, d = hd % head_dim;
  const int32_t pos = positions[t];
  const int32_t page = table[pos / page_tokens];
  const size_t half_elems = static_cast<size_t>(page_tokens) * n_kv_heads * head_dim;
  const size_t off = static_cast<size_t>(page) * 2 * half_elems +
                     (static_cast<size_t>(h) * page_tokens + pos % page_tokens) * head_dim + d;
  base[off] = __float2half_rn(k[idx]);
  base[off + half_elems] = __float2half_rn(v[idx]);
}

// One thread per layer: the ref of the page a decode step writes (its last page).
__global__ void AppendPageRefKernel(const int32_t* tables, int64_t table_stride, int n_layers,
                                    const DecodeStep* step, int page_tokens, PageRef* refs,
                                    int64_t refs_stride) {
  const int l = blockIdx.x * blockDim.x + threadIdx.x;
  if (l >= n_layers) return;
  const int p = step->n_pages - 1;
  const int32_t first = p * page_tokens;
  refs[l * refs_stride + p] =
      PageRef{tables[l * table_stride + p], first, min(page_tokens, step->total - first)};
}

// Grid (n_pages, n_kv_heads), threads over head_dim; with `step`, grid (n_layers, n_kv_heads)
// and block l's page is pages[l * refs_stride + step->n_pages - 1].
__global__ void DigestKernel(const __half* base, int page_tokens, int n_kv_heads, int head_dim,
                             const PageRef* pages, int64_t refs_stride, const DecodeStep* step,
                             __half* digests) {
  const PageRef pr = step != nullptr ? pages[blockIdx.x * refs_stride + step->n_pages - 1]
                                     : pages[blockIdx.x];
  const int g = blockIdx.y;
  const size_t half_elems = static_cast<size_t>(page_tokens) * n_kv_heads * head_dim;
  const __half* kb = base + static_cast<size_t>(pr.page) * 2 * half_elems +
                     static_cast<size_t>(g) * page_tokens * head_dim;
  __half* dg = digests + (static_cast<size_t>(pr.page) * n_kv_heads + g) * 2 * head_dim;
  const int n = min(pr.n_tokens, page_tokens);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < n; ++j) {
      const float x = __half2float(kb[static_cast<size_t>(j) * head_dim + d]);
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
    dg[d] = __float2half_rn(lo);
    dg[head_dim + d] = __float2half_rn(hi);
  }
}

// ---- Prefill attention --------------------------------------------------------------------
// Grid (ceil(n_tokens / kPrefillRows), n_heads); kPrefillWarps warps, each owning
// kRowsPerWarp query tokens of one head. For every visible page the block stages K and V (f32,
// rows padded by one float against bank conflicts) in shared memory; each warp scores its rows
// against the page's keys (lane = key j of the page x half of the dims) and folds them into a
// per-row online softmax whose accumulator lives in registers (lane owns dims lane + 32k).
constexpr int kPrefillWarps = 4;
constexpr int kRowsPerWarp = 8;
constexpr int kPrefillRows = kPrefillWarps * kRowsPerWarp;
constexpr int kPageKeys = 16;  // the kernel's page_tokens (checked by the launcher)

size_t PrefillSharedBytes(int head_dim) {
  return (static_cast<size_t>(kPrefillRows) * head_dim + 2 * kPageKeys * (head_dim + 1)) *
         sizeof(float);
}

__global__ void __launch_bounds__(kPrefillWarps* kWarp)
    PrefillAttentionKernel(const __half* base, int n_kv_heads, int head_dim, const PageRef* pages,
                           int n_pages, const float* q, const int32_t* q_pos, int64_t n_tokens,
                           int n_heads, int group, float scale, float* out) {
  extern __shared__ float smem[];
  float* s_q = smem;                              // [kPrefillRows][head_dim]
  float* s_k = s_q + kPrefillRows * head_dim;     // [kPageKeys][head_dim + 1]
  float* s_v = s_k + kPageKeys * (head_dim + 1);  // [kPageKeys][head_dim + 1]
  __shared__ int32_t s_pos[kPrefillRows];
  __shared__ int32_t s_max_pos;

  const int h = blockIdx.y;
  const int kvh = h / group;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kPrefillRows;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int per = (head_dim + kWarp - 1) / kWarp;
  const int stride = head_dim + 1;

  for (int i = threadIdx.x; i < kPrefillRows * head_dim; i += blockDim.x) {
    const int r = i / head_dim, d = i % head_dim;
    const int64_t t = t0 + r;
    s_q[i] = t < n_tokens ? q[(t * n_heads + h) * head_dim + d] * scale : 0.0f;
  }
  for (int r = threadIdx.x; r < kPrefillRows; r += blockDim.x) {
    s_pos[r] = t0 + r < n_tokens ? q_pos[t0 + r] : INT_MIN;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t mx = INT_MIN;
    for (int r = 0; r < kPrefillRows; ++r) mx = max(mx, s_pos[r]);
    s_max_pos = mx;
  }

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kMaxPerLane];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) acc[r][k] = 0.0f;
  }

  const size_t half_elems = static_cast<size_t>(kPageKeys) * n_kv_heads * head_dim;
  const int j = lane % kPageKeys;  // this lane's key in the scoring step
  const int half = lane / kPageKeys;
  const int hh = head_dim / 2;
  __syncthreads();
  const int32_t block_max_pos = s_max_pos;

  for (int p = 0; p < n_pages; ++p) {
    const PageRef pr = pages[p];
    if (pr.first_pos > block_max_pos) break;
    const __half* kb = base + static_cast<size_t>(pr.page) * 2 * half_elems +
                       static_cast<size_t>(kvh) * kPageKeys * head_dim;
    const __half* vb = kb + half_elems;
    __syncthreads();  // the previous page's K/V are no longer read
    for (int i = threadIdx.x; i < kPageKeys * head_dim; i += blockDim.x) {
      const int jj = i / head_dim, d = i % head_dim;
      const bool ok = jj < pr.n_tokens;
      s_k[jj * stride + d] = ok ? __half2float(kb[i]) : 0.0f;
      s_v[jj * stride + d] = ok ? __half2float(vb[i]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp * kRowsPerWarp + r;
      const int32_t pos = s_pos[row];
      if (pr.first_pos > pos) continue;  // uniform across the warp
      const float* qr = s_q + row * head_dim + half * hh;
      const float* kr = s_k + j * stride + half * hh;
      float dot = 0.0f;
      for (int d = 0; d < hh; ++d) dot += qr[d] * kr[d];
      dot += __shfl_xor_sync(0xffffffffu, dot, kPageKeys);
      const bool valid = j < pr.n_tokens && pr.first_pos + j <= pos;
      const float s = valid ? dot : -INFINITY;
      const float mx = WarpMax(s);  // both halves hold the same 16 scores
      const float m_new = fmaxf(m[r], mx);
      if (m_new == -INFINITY) continue;  // no visible key yet (uniform across the warp)
      const float pj = valid ? expf(s - m_new) : 0.0f;
      const float sum = WarpSum(pj) * 0.5f;    // every key counted twice
      const float alpha = expf(m[r] - m_new);  // m[r] = -inf: 0
      l[r] = l[r] * alpha + sum;
#pragma unroll
      for (int k = 0; k < kMaxPerLane; ++k) acc[r][k] *= alpha;
#pragma unroll
      for (int jj = 0; jj < kPageKeys; ++jj) {
        const float w = __shfl_sync(0xffffffffu, pj, jj);
        const float* vr = s_v + jj * stride;
#pragma unroll
        for (int k = 0; k < kMaxPerLane; ++k) {
          const int d = lane + kWarp * k;
          if (k < per && d < head_dim) acc[r][k] += w * vr[d];
        }
      }
      m[r] = m_new;
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t t = t0 + warp * kRowsPerWarp + r;
    if (t >= n_tokens) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    float* o = out + (t * n_heads + h) * head_dim;
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) {
      const int d = lane + kWarp * k;
      if (k < per && d < head_dim) o[d] = acc[r][k] * inv;
    }
  }
}

// ---- Prefill attention on tensor cores -------------------------------------------------------
// For head_dim 64 or 128 (16-token pages): the same blockwise online softmax as above, with the
// two products on tensor cores (WMMA 16x16x16, f16 inputs, f32 accumulation). Grid
// (ceil(n_tokens / 64), n_heads), 4 warps; each warp owns 16 query rows. Per tile of 64 keys
// (4 pages): the block stages K and V in shared memory (f16, as stored); each warp computes its
// 16 x 64 scores S = Q K^T, applies the causal mask and the online softmax (two lanes per row,
// interleaved keys), writes P (f16) and rescales its f32 output rows O, then O += P V. Q is
// scaled and rounded to f16 once; P in [0, 1] rounds to f16. Row strides are padded so that
// rows do not fall in the same shared-memory banks.
namespace wmma = nvcuda::wmma;
constexpr int kTcWarps = 4;
constexpr int kTcRows = 16 * kTcWarps;  // query rows per block
constexpr int kTcKeys = 4 * kPageKeys;  // keys per tile
constexpr int kTcSStride = kTcKeys + 4;  // floats
constexpr int kTcPStride = kTcKeys + 8;  // halves

template <int D>
struct TcLayout {
  static constexpr int kQStride = D + 8;  // halves (Q, K, V rows)
  static constexpr int kOStride = D + 4;  // floats
  static constexpr size_t kQBytes = static_cast<size_t>(kTcRows) * kQStride * 2;
  static constexpr size_t kKBytes = static_cast<size_t>(kTcKeys) * kQStride * 2;
  static constexpr size_t kSBytes = 16 * kTcSStride * 4;  // per warp
  static constexpr size_t kPBytes = 16 * kTcPStride * 2;  // per warp
  static constexpr size_t kOBytes = 16 * static_cast<size_t>(kOStride) * 4;  // per warp
  static constexpr size_t kBytes = kQBytes + 2 * kKBytes + kTcWarps * (kSBytes + kPBytes + kOBytes);
};

template <int D>
__global__ void __launch_bounds__(kTcWarps* kWarp)
    TcPrefillKernel(const __half* base, int n_kv_heads, const PageRef* pages, int n_pages,
                    const float* q, const int32_t* q_pos, int64_t n_tokens, int n_heads, int group,
                    float scale, float* out) {
  using L = TcLayout<D>;
  constexpr int QS = L::kQStride, OS = L::kOStride;
  extern __shared__ __align__(128) unsigned char tc_smem[];
  __half* s_q = reinterpret_cast<__half*>(tc_smem);
  __half* s_k = reinterpret_cast<__half*>(tc_smem + L::kQBytes);
  __half* s_v = reinterpret_cast<__half*>(tc_smem + L::kQBytes + L::kKBytes);
  unsigned char* per_warp = tc_smem + L::kQBytes + 2 * L::kKBytes;
  __shared__ int32_t s_pos[kTcRows];
  __shared__ int32_t s_kpos[kTcKeys];
  __shared__ int32_t s_max_pos;

  const int h = blockIdx.y, kvh = h / group;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTcRows;
  const float scale_log2 = scale * 1.4426950408889634f;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  float* s_s = reinterpret_cast<float*>(per_warp + warp * L::kSBytes);
  __half* s_p = reinterpret_cast<__half*>(per_warp + kTcWarps * L::kSBytes + warp * L::kPBytes);
  float* s_o = reinterpret_cast<float*>(per_warp + kTcWarps * (L::kSBytes + L::kPBytes) +
                                        warp * L::kOBytes);

  for (int i = threadIdx.x; i < kTcRows * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    const int64_t t = t0 + r;
    // Scores in log2 units (q pre-multiplied by log2 e): exp2f is one instruction.
    s_q[r * QS + d] =
        __float2half_rn(t < n_tokens ? q[(t * n_heads + h) * D + d] * scale_log2 : 0.0f);
  }
  for (int r = threadIdx.x; r < kTcRows; r += blockDim.x) {
    s_pos[r] = t0 + r < n_tokens ? q_pos[t0 + r] : INT_MIN;
  }
  for (int i = lane; i < 16 * D; i += kWarp) s_o[(i / D) * OS + i % D] = 0.0f;
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t mx = INT_MIN;
    for (int r = 0; r < kTcRows; ++r) mx = max(mx, s_pos[r]);
    s_max_pos = mx;
  }
  __syncthreads();
  const int32_t block_max_pos = s_max_pos;
  const int row = lane % 16, half = lane / 16;  // softmax: lane = (row, every other key)
  const int32_t my_pos = s_pos[warp * 16 + row];
  float m_row = -INFINITY, l_row = 0.0f;
  const size_t half_elems = static_cast<size_t>(kPageKeys) * n_kv_heads * D;
  constexpr int kChunks = D / 8;  // 16-byte pieces of a row

  for (int p0 = 0; p0 < n_pages; p0 += 4) {
    if (pages[p0].first_pos > block_max_pos) break;  // position order
    __syncthreads();  // every warp is done with the previous tile
    for (int i = threadIdx.x; i < kTcKeys * kChunks; i += blockDim.x) {
      const int key = i / kChunks, c = i % kChunks;
      const int pg = p0 + key / kPageKeys, j = key % kPageKeys;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (pg < n_pages) {
        const PageRef pr = pages[pg];
        if (j < pr.n_tokens) {
          const __half* kb = base + static_cast<size_t>(pr.page) * 2 * half_elems +
                             (static_cast<size_t>(kvh) * kPageKeys + j) * D + c * 8;
          kv = __ldg(reinterpret_cast<const uint4*>(kb));
          vv = __ldg(reinterpret_cast<const uint4*>(kb + half_elems));
        }
      }
      *reinterpret_cast<uint4*>(s_k + key * QS + c * 8) = kv;
      *reinterpret_cast<uint4*>(s_v + key * QS + c * 8) = vv;
    }
    for (int key = threadIdx.x; key < kTcKeys; key += blockDim.x) {
      const int pg = p0 + key / kPageKeys, j = key % kPageKeys;
      int32_t kp = INT_MAX;
      if (pg < n_pages) {
        const PageRef pr = pages[pg];
        if (j < pr.n_tokens) kp = pr.first_pos + j;
      }
      s_kpos[key] = kp;
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows.
#pragma unroll
    for (int nb = 0; nb < kTcKeys / 16; ++nb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int k0 = 0; k0 < D; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
        wmma::load_matrix_sync(a, s_q + warp * 16 * QS + k0, QS);
        wmma::load_matrix_sync(b, s_k + nb * 16 * QS + k0, QS);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(s_s + nb * 16, acc, kTcSStride, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of row `row` over keys half, half + 2, ...
    const float* srow = s_s + row * kTcSStride;
    float mx = -INFINITY;
#pragma unroll 8
    for (int jj = 0; jj < kTcKeys / 2; ++jj) {
      const int j = 2 * jj + half;
      if (s_kpos[j] <= my_pos) mx = fmaxf(mx, srow[j]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
    const float m_new = fmaxf(m_row, mx);
    float alpha = 1.0f, sum = 0.0f;
    __half* prow = s_p + row * kTcPStride;
#pragma unroll 8
    for (int jj = 0; jj < kTcKeys / 2; ++jj) {
      const int j = 2 * jj + half;
      const float e = (m_new != -INFINITY && s_kpos[j] <= my_pos) ? exp2f(srow[j] - m_new) : 0.0f;
      prow[j] = __float2half_rn(e);
      sum += e;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 16);
    if (m_new != -INFINITY) {
      alpha = exp2f(m_row - m_new);  // m_row = -inf: 0
      m_row = m_new;
    }
    l_row = l_row * alpha + sum;
    float* orow = s_o + row * OS;
    for (int dd = 0; dd < D / 2; ++dd) orow[2 * dd + half] *= alpha;
    __syncwarp();

    // O += P V.
#pragma unroll
    for (int nb = 0; nb < D / 16; ++nb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, s_o + nb * 16, OS, wmma::mem_row_major);
#pragma unroll
      for (int k0 = 0; k0 < kTcKeys; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
        wmma::load_matrix_sync(a, s_p + k0, kTcPStride);
        wmma::load_matrix_sync(b, s_v + k0 * QS + nb * 16, QS);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(s_o + nb * 16, acc, OS, wmma::mem_row_major);
    }
    __syncwarp();
  }

  const int64_t t = t0 + warp * 16 + row;
  if (t < n_tokens) {
    const float inv = l_row > 0.0f ? 1.0f / l_row : 0.0f;
    const float* orow = s_o + row * OS;
    float* o = out + (t * n_heads + h) * D;
    for (int dd = 0; dd < D / 2; ++dd) o[2 * dd + half] = orow[2 * dd + half] * inv;
  }
}

// ---- Page scoring ------------------------------------------------------------------------------
constexpr int kBoundThreads = 256;
constexpr int kMaxGroup = 8;  // query heads per KV head that BoundKernel serves at once

// Grid (ceil(n_cand / kBoundThreads), n_kv_heads, ceil(group / kMaxGroup)): a thread per
// candidate page of KV head g, for up to kMaxGroup of its query heads, so a page's digest is read
// once per group (16-byte loads; head_dim % 8 == 0). Writes bounds[h][i] and, per block and head,
// (max, sum of exp(bound - max)) over the block's candidates into lse_parts[h][blockIdx.x]: the
// pieces of the per-head log-sum-exp, combined by LseKernel.
__global__ void __launch_bounds__(kBoundThreads)
    BoundKernel(const __half* digests, int digest_halfs, int head_dim, const PageRef* pages,
                int n_cand, const float* q, int group, float scale, float* bounds,
                float2* lse_parts) {
  extern __shared__ float s_q[];  // [kMaxGroup][head_dim], scaled
  __shared__ float2 s_red[kBoundThreads / kWarp][kMaxGroup];
  const int g = blockIdx.y;
  const int h0 = g * group + blockIdx.z * kMaxGroup;
  const int n_h = min(kMaxGroup, group - static_cast<int>(blockIdx.z) * kMaxGroup);
  for (int x = threadIdx.x; x < n_h * head_dim; x += blockDim.x) {
    s_q[x] = q[static_cast<size_t>(h0) * head_dim + x] * scale;
  }
  __syncthreads();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float b[kMaxGroup];
#pragma unroll
  for (int hi = 0; hi < kMaxGroup; ++hi) b[hi] = 0.0f;
  if (i < n_cand) {
    const __half* dg =
        digests + static_cast<size_t>(pages[i].page) * digest_halfs + static_cast<size_t>(g) * 2 * head_dim;
    for (int d0 = 0; d0 < head_dim; d0 += 8) {
      float mn[8], mx[8];
      Unpack8(__ldg(reinterpret_cast<const uint4*>(dg + d0)), mn);
      Unpack8(__ldg(reinterpret_cast<const uint4*>(dg + head_dim + d0)), mx);
#pragma unroll
      for (int hi = 0; hi < kMaxGroup; ++hi) {
        if (hi >= n_h) break;
        const float* qh = s_q + hi * head_dim + d0;
#pragma unroll
        for (int k = 0; k < 8; ++k) b[hi] += fmaxf(qh[k] * mn[k], qh[k] * mx[k]);
      }
    }
  }
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
#pragma unroll
  for (int hi = 0; hi < kMaxGroup; ++hi) {
    if (hi >= n_h) break;
    if (i < n_cand) bounds[static_cast<size_t>(h0 + hi) * n_cand + i] = b[hi];
    const float v = i < n_cand ? b[hi] : -INFINITY;
    const float m = WarpMax(v);
    const float e = WarpSum(v == -INFINITY ? 0.0f : expf(v - m));
    if (lane == 0) s_red[warp][hi] = make_float2(m, e);
  }
  __syncthreads();
  if (threadIdx.x < n_h) {
    const int hi = threadIdx.x;
    float m = -INFINITY;
    for (int w = 0; w < kBoundThreads / kWarp; ++w) m = fmaxf(m, s_red[w][hi].x);
    float e = 0.0f;
    for (int w = 0; w < kBoundThreads / kWarp; ++w) {
      if (s_red[w][hi].x != -INFINITY) e += s_red[w][hi].y * expf(s_red[w][hi].x - m);
    }
    lse_parts[static_cast<size_t>(h0 + hi) * gridDim.x + blockIdx.x] = make_float2(m, e);
  }
}

// Grid n_heads, 256 threads: lse[h] = log-sum-exp of head h's bounds, from the n_parts pieces.
__global__ void LseKernel(const float2* lse_parts, int n_parts, float* lse) {
  __shared__ float2 s_red[8];
  const int h = blockIdx.x;
  float m = -INFINITY, e = 0.0f;
  for (int i = threadIdx.x; i < n_parts; i += blockDim.x) {
    const float2 p = lse_parts[static_cast<size_t>(h) * n_parts + i];
    if (p.x == -INFINITY) continue;
    const float m_new = fmaxf(m, p.x);
    e = e * expf(m - m_new) + p.y * expf(p.x - m_new);
    m = m_new;
  }
  // Warp then block: combine (m, e) pairs.
  for (int off = kWarp / 2; off > 0; off /= 2) {
    const float om = __shfl_xor_sync(0xffffffffu, m, off);
    const float oe = __shfl_xor_sync(0xffffffffu, e, off);
    const float m_new = fmaxf(m, om);
    if (m_new != -INFINITY) {
      e = (m == -INFINITY ? 0.0f : e * expf(m - m_new)) + (om == -INFINITY ? 0.0f : oe * expf(om - m_new));
    }
    m = m_new;
  }
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) s_red[warp] = make_float2(m, e);
  __syncthreads();
  if (threadIdx.x == 0) {
    float mm = -INFINITY, ee = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x) / kWarp; ++w) mm = fmaxf(mm, s_red[w].x);
    for (int w = 0; w < static_cast<int>(blockDim.x) / kWarp; ++w) {
      if (s_red[w].x != -INFINITY) ee += s_red[w].y * expf(s_red[w].x - mm);
    }
    lse[h] = mm + logf(ee);
  }
}

// Grid (ceil(n_cand / 256), n_kv_heads): score[g][i] = max over g's heads of bound - lse.
__global__ void GroupScoreKernel(const float* bounds, const float* lse, int n_cand, int group,
                                 float* scores) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int g = blockIdx.y;
  if (i >= n_cand) return;
  float sc = -INFINITY;
  for (int hi = 0; hi < group; ++hi) {
    const int h = g * group + hi;
    sc = fmaxf(sc, bounds[static_cast<size_t>(h) * n_cand + i] - lse[h]);
  }
  scores[static_cast<size_t>(g) * n_cand + i] = sc;
}

// ---- Top-k ------------------------------------------------------------------------------------
constexpr int kTopKThreads = 1024;
// Above kTileTopKMin scores (and for k <= kTopKTile), top-k runs in two stages: each tile of
// kTopKTile scores keeps its own top k (a score of the overall top k is in its tile's top k),
// then one block picks the top k of those candidates. One block alone would read every score
// once per radix digit.
constexpr int kTopKTile = 8192;
constexpr int kTileTopKMin = 2 * kTopKTile;

__device__ inline uint32_t OrderedKey(float f) {
  uint32_t u = __float_as_uint(f);
  if (isnan(f)) return 0;  // below everything
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive prefix sum over the block (kTopKThreads threads); *total gets the sum.
__device__ int BlockExclusiveScan(int v, int* s_warp, int* total) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  int x = v;
  for (int off = 1; off < kWarp; off *= 2) {
    const int y = __shfl_up_sync(0xffffffffu, x, off);
    if (lane >= off) x += y;
  }
  __syncthreads();
  if (lane == kWarp - 1) s_warp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < kTopKThreads / kWarp ? s_warp[lane] : 0;
    for (int off = 1; off < kWarp; off *= 2) {
      const int y = __shfl_up_sync(0xffffffffu, w, off);
      if (lane >= off) w += y;
    }
    s_warp[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  *total = s_warp[kTopKThreads / kWarp - 1];
  return (warp > 0 ? s_warp[warp - 1] : 0) + x - v;
}

// Radix select over keys spread across the block: finds the k-th largest key (*thr) and how
// many keys equal to it are still to be taken (*need_equal; ties go to the items that come
// first). key_of(r, &key) gives this thread's key of round r < rounds (false: none). 4 passes
// of 8-bit digits, most significant first; histogram updates are aggregated per warp
// (__match_any_sync), so a digit shared by many keys does not serialise the atomics. Every
// thread of the block calls it with the same rounds.
template <typename KeyOf>
__device__ void RadixSelect(KeyOf key_of, int rounds, int k, int* s_hist, uint32_t* s_prefix,
                            int* s_remaining, uint32_t* thr, int* need_equal) {
  if (threadIdx.x == 0) {
    *s_prefix = 0;
    *s_remaining = k;  // how many keys of the current prefix are still to be taken
  }
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) s_hist[b] = 0;
    __syncthreads();
    const uint32_t prefix = *s_prefix;
#pragma unroll 8
    for (int j = 0; j < rounds; ++j) {
      uint32_t key = 0;
      const bool valid = key_of(j, &key);
      const bool in = valid && (key & mask) == prefix;
      const unsigned digit = in ? (key >> shift) & 255u : 256u;
      const unsigned peers = __match_any_sync(0xffffffffu, digit);
      const int leader = __ffs(peers) - 1;
      if (in && static_cast<int>(threadIdx.x % kWarp) == leader) {
        atomicAdd(&s_hist[digit], __popc(peers));
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int remaining = *s_remaining;
      int b = 255;
      for (; b > 0; --b) {
        if (s_hist[b] >= remaining) break;
        remaining -= s_hist[b];
      }
      *s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
      *s_remaining = remaining;
    }
    mask |= 255u << shift;
    __syncthreads();
  }
  *thr = *s_prefix;
  *need_equal = *s_remaining;
}

// One block per KV head over a list of n scores: list item i is scores[i], or scores[cand[i]]
// when cand is set (the second stage; head g's list at cand + g * cand_stride), and its index is
// i or cand[i]. Thread t owns items [t * chunk, (t + 1) * chunk), so item order is thread order;
// the winners are compacted in item order with two block-wide prefix sums.
__global__ void __launch_bounds__(kTopKThreads)
    TopKKernel(const float* scores, int n_scores, const int32_t* cand, int cand_stride, int n,
               int k, int32_t* index) {
  __shared__ int s_warp[kWarp];
  __shared__ int s_hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;
  const float* sc = scores + static_cast<size_t>(blockIdx.x) * n_scores;
  const int32_t* cd =
      cand == nullptr ? nullptr : cand + static_cast<size_t>(blockIdx.x) * cand_stride;
  int32_t* out = index + static_cast<size_t>(blockIdx.x) * k;
  const int chunk = (n + kTopKThreads - 1) / kTopKThreads;
  const int begin = min(n, static_cast<int>(threadIdx.x) * chunk);
  const int end = min(n, begin + chunk);
  auto key_at = [&](int i) { return OrderedKey(sc[cd == nullptr ? i : cd[i]]); };
  uint32_t thr = 0;  // the k-th largest key
  int need_equal = 0;
  RadixSelect(
      [&](int r, uint32_t* key) {
        if (begin + r >= end) return false;
        *key = key_at(begin + r);
        return true;
      },
      chunk, k, s_hist, &s_prefix, &s_remaining, &thr, &need_equal);
  int gt = 0, eq = 0;
  for (int i = begin; i < end; ++i) {
    const uint32_t key = key_at(i);
    gt += key > thr;
    eq += key == thr;
  }
  int total = 0;
  const int eq_before = BlockExclusiveScan(eq, s_warp, &total);
  const int take_eq = max(0, min(eq, need_equal - eq_before));
  int pos = BlockExclusiveScan(gt + take_eq, s_warp, &total);
  int taken = 0;
  for (int i = begin; i < end; ++i) {
    const uint32_t key = key_at(i);
    if (key > thr || (key == thr && taken++ < take_eq)) {
      if (pos < k) out[pos] = cd == nullptr ? i : cd[i];
      ++pos;
    }
  }
}

// The first stage. Grid (n_tiles, n_kv_heads): block b keeps the top k_tile = min(k, tile
// length) of scores [b * kTopKTile, ...) (ties to the lowest indices) and writes their indices
// in increasing order to cand[g][b * k ...]. Thread t holds items t + kTopKThreads * j, so the
// compaction runs one block-wide scan per j, in index order.
__global__ void __launch_bounds__(kTopKThreads)
    TileTopKKernel(const float* scores, int n, int k, int32_t* cand, int cand_stride) {
  constexpr int kPer = kTopKTile / kTopKThreads;
  __shared__ int s_warp[kWarp];
  __shared__ int s_hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;
  const int g = blockIdx.y;
  const int base = blockIdx.x * kTopKTile;
  const int len = min(kTopKTile, n - base);
  const int k_tile = min(k, len);
  const float* sc = scores + static_cast<size_t>(g) * n + base;
  int32_t* out = cand + static_cast<size_t>(g) * cand_stride + static_cast<size_t>(blockIdx.x) * k;
  uint32_t keys[kPer];
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int i = threadIdx.x + kTopKThreads * j;
    keys[j] = i < len ? OrderedKey(sc[i]) : 0;
  }
  uint32_t thr = 0;
  int need_equal = 0;
  RadixSelect(
      [&](int j, uint32_t* key) {
        *key = keys[j];
        return static_cast<int>(threadIdx.x) + kTopKThreads * j < len;
      },
      kPer, k_tile, s_hist, &s_prefix, &s_remaining, &thr, &need_equal);
  int eq_seen = 0, sel_seen = 0, total = 0;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int i = threadIdx.x + kTopKThreads * j;
    const bool valid = i < len;
    const int eq = valid && keys[j] == thr;
    const int eq_before = eq_seen + BlockExclusiveScan(eq, s_warp, &total);
    eq_seen += total;
    const int sel = valid && (keys[j] > thr || (eq && eq_before < need_equal));
    const int pos = sel_seen + BlockExclusiveScan(sel, s_warp, &total);
    sel_seen += total;
    if (sel && pos < k_tile) out[pos] = base + i;
  }
}

// Per KV head g: [sinks][top-k candidates, in index order][recent].
__global__ void AssembleKernel(const PageRef* pages, int n_pages, int n_sink, int n_recent,
                               int k_eff, bool all_candidates, const int32_t* index, int k_stride,
                               PageRef* selected) {
  const int g = blockIdx.y;
  const int n_sel = n_sink + k_eff + n_recent;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_sel) return;
  int src;
  if (i < n_sink) {
    src = i;
  } else if (i < n_sink + k_eff) {
    const int c = i - n_sink;
    src = n_sink + (all_candidates ? c : index[static_cast<size_t>(g) * k_stride + c]);
  } else {
    src = n_pages - n_recent + (i - n_sink - k_eff);
  }
  selected[static_cast<size_t>(g) * n_sel + i] = pages[src];
}

struct SelectShape {
  int sink, recent, cand, k_eff;
};

SelectShape ShapeOf(int n_pages, int n_sink, int n_recent, int k_pages) {
  SelectShape s;
  s.sink = std::clamp(n_sink, 0, std::max(n_pages, 0));
  s.recent = std::clamp(n_recent, 0, std::max(n_pages, 0) - s.sink);
  s.cand = std::max(0, n_pages - s.sink - s.recent);
  s.k_eff = std::clamp(k_pages, 0, s.cand);
  return s;
}

size_t AlignUp(size_t n) { return (n + 255) & ~size_t{255}; }

}  // namespace

Status CudaBuildPageRefs(const int32_t* d_tables, int64_t table_stride, int n_layers,
                         int32_t total_tokens, int page_tokens, PageRef* d_refs,
                         int64_t refs_stride, void* stream) {
  if (n_layers < 0 || total_tokens < 0 || page_tokens <= 0) {
    return InvalidArgumentError("CudaBuildPageRefs: bad shape");
  }
  const int n_pages = (total_tokens + page_tokens - 1) / page_tokens;
  if (n_pages > table_stride || n_pages > refs_stride) {
    return InvalidArgumentError("CudaBuildPageRefs: tables too short for the context");
  }
  if (n_pages == 0 || n_layers == 0) return Status::Ok();
  const dim3 grid(Blocks(n_pages, 256), static_cast<unsigned>(n_layers));
  BuildPageRefsKernel<<<grid, 256, 0, AsStream(stream)>>>(
      d_tables, table_stride, n_pages, total_tokens, page_tokens, d_refs, refs_stride);
  return LaunchStatus("CudaBuildPageRefs");
}

Status CudaWriteKv(const KvPool& pool, const int32_t* d_table, const int32_t* d_positions,
                   const float* d_k, const float* d_v, int64_t n_tokens, void* stream) {
  RETURN_IF_ERROR(CheckPool(pool, pool.n_kv_heads, "CudaWriteKv"));
  if (n_tokens < 0) return InvalidArgumentError("CudaWriteKv: n_tokens < 0");
  const int64_t n = n_tokens * pool.n_kv_heads * pool.head_dim;
  if (n == 0) return Status::Ok();
  WriteKvKernel<<<Blocks(n, 256), 256, 0, AsStream(stream)>>>(
      reinterpret_cast<__half*>(pool.base), pool.page_tokens, pool.n_kv_heads, pool.head_dim,
      d_table, d_positions, d_k, d_v, n_tokens);
  return LaunchStatus("CudaWriteKv");
}

Status CudaUpdateDigests(const KvPool& pool, const PageRef* d_pages, int n_pages,
                         uint16_t* d_digests, void* stream) {
  RETURN_IF_ERROR(CheckPool(pool, pool.n_kv_heads, "CudaUpdateDigests"));
  if (n_pages < 0) return InvalidArgumentError("CudaUpdateDigests: n_pages < 0");
  if (n_pages == 0) return Status::Ok();
  const dim3 grid(static_cast<unsigned>(n_pages), static_cast<unsigned>(pool.n_kv_heads));
  DigestKernel<<<grid, 64, 0, AsStream(stream)>>>(
      reinterpret_cast<const __half*>(pool.base), pool.page_tokens, pool.n_kv_heads, pool.head_dim,
      d_pages, 0, nullptr, reinterpret_cast<__half*>(d_digests));
  return LaunchStatus("CudaUpdateDigests");
}

Status CudaAppendPageRef(const int32_t* d_tables, int64_t table_stride, int n_layers,
                         const DecodeStep* d_step, int page_tokens, PageRef* d_refs,
                         int64_t refs_stride, void* stream) {
  if (n_layers < 0 || page_tokens <= 0 || d_step == nullptr) {
    return InvalidArgumentError("CudaAppendPageRef: bad arguments");
  }
  if (n_layers == 0) return Status::Ok();
  AppendPageRefKernel<<<Blocks(n_layers, 128), 128, 0, AsStream(stream)>>>(
      d_tables, table_stride, n_layers, d_step, page_tokens, d_refs, refs_stride);
  return LaunchStatus("CudaAppendPageRef");
}

Status CudaUpdateStepDigests(const KvPool& pool, const PageRef* d_refs, int64_t refs_stride,
                             int n_layers, const DecodeStep* d_step, uint16_t* d_digests,
                             void* stream) {
  RETURN_IF_ERROR(CheckPool(pool, pool.n_kv_heads, "CudaUpdateStepDigests"));
  if (d_step == nullptr || n_layers < 0) {
    return InvalidArgumentError("CudaUpdateStepDigests: bad arguments");
  }
  if (n_layers == 0) return Status::Ok();
  const dim3 grid(static_cast<unsigned>(n_layers), static_cast<unsigned>(pool.n_kv_heads));
  DigestKernel<<<grid, 64, 0, AsStream(stream)>>>(
      reinterpret_cast<const __half*>(pool.base), pool.page_tokens, pool.n_kv_heads, pool.head_dim,
      d_refs, refs_stride, d_step, reinterpret_cast<__half*>(d_digests));
  return LaunchStatus("CudaUpdateStepDigests");
}

Status CudaPagedAttentionPrefill(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                 const float* d_q, const int32_t* d_q_pos, int64_t n_tokens,
                                 int n_heads, float scale, float* d_out, void* stream) {
  RETURN_IF_ERROR(CheckPool(pool, n_heads, "CudaPagedAttentionPrefill"));
  if (pool.page_tokens != kPageKeys) {
    return InvalidArgumentError("CudaPagedAttentionPrefill: page_tokens must be 16");
  }
  if (n_tokens < 0 || n_pages < 0) return InvalidArgumentError("CudaPagedAttentionPrefill: n < 0");
  if (n_tokens == 0) return Status::Ok();
  const auto tc = [&](auto kernel, size_t smem) -> Status {
    // Idempotent and not a stream operation: safe to repeat, and allowed during capture.
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return LaunchStatus("CudaPagedAttentionPrefill: shared memory");
    const dim3 grid(Blocks(n_tokens, kTcRows), static_cast<unsigned>(n_heads));
    kernel<<<grid, kTcWarps * kWarp, smem, AsStream(stream)>>>(
        reinterpret_cast<const __half*>(pool.base), pool.n_kv_heads, d_pages, n_pages, d_q,
        d_q_pos, n_tokens, n_heads, n_heads / pool.n_kv_heads, scale, d_out);
    return LaunchStatus("CudaPagedAttentionPrefill");
  };
  if (reinterpret_cast<uintptr_t>(pool.base) % 16 == 0) {
    if (pool.head_dim == 64) return tc(TcPrefillKernel<64>, TcLayout<64>::kBytes);
    if (pool.head_dim == 128) return tc(TcPrefillKernel<128>, TcLayout<128>::kBytes);
  }
  const size_t smem = PrefillSharedBytes(pool.head_dim);
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(PrefillAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem));
    if (err != cudaSuccess) return LaunchStatus("CudaPagedAttentionPrefill: shared memory");
  }
  const dim3 grid(Blocks(n_tokens, kPrefillRows), static_cast<unsigned>(n_heads));
  PrefillAttentionKernel<<<grid, kPrefillWarps * kWarp, smem, AsStream(stream)>>>(
      reinterpret_cast<const __half*>(pool.base), pool.n_kv_heads, pool.head_dim, d_pages, n_pages,
      d_q, d_q_pos, n_tokens, n_heads, n_heads / pool.n_kv_heads, scale, d_out);
  return LaunchStatus("CudaPagedAttentionPrefill");
}

namespace {
int BoundBlocks(int n_cand) { return static_cast<int>(Blocks(std::max(n_cand, 0), kBoundThreads)); }
}  // namespace

// Workspace of CudaScorePages: bounds [n_heads][n_cand], lse pieces [n_heads][blocks], lse.
size_t CudaScorePagesWorkspaceBytes(int n_heads, int n_cand) {
  const size_t h = static_cast<size_t>(std::max(n_heads, 0));
  return AlignUp(h * std::max(n_cand, 0) * sizeof(float)) +
         AlignUp(h * BoundBlocks(n_cand) * sizeof(float2)) + AlignUp(h * sizeof(float));
}

Status CudaScorePages(const KvPool& pool, const uint16_t* d_digests, const PageRef* d_pages,
                      int n_cand, const float* d_q, int n_heads, float scale, float* d_scores,
                      void* d_workspace, void* stream) {
  RETURN_IF_ERROR(CheckPool(pool, n_heads, "CudaScorePages"));
  if (pool.head_dim % 8 != 0) {
    return InvalidArgumentError("CudaScorePages: head_dim must be a multiple of 8");
  }
  if (n_cand < 0) return InvalidArgumentError("CudaScorePages: n_cand < 0");
  if (n_cand == 0) return Status::Ok();
  if (d_workspace == nullptr) return InvalidArgumentError("CudaScorePages: workspace required");
  if (reinterpret_cast<uintptr_t>(d_digests) % 16 != 0) {
    return InvalidArgumentError("CudaScorePages: digests must be 16-byte aligned");
  }
  auto* ws = static_cast<char*>(d_workspace);
  auto* bounds = reinterpret_cast<float*>(ws);
  const size_t bounds_bytes = AlignUp(static_cast<size_t>(n_heads) * n_cand * sizeof(float));
  auto* parts = reinterpret_cast<float2*>(ws + bounds_bytes);
  const int blocks = BoundBlocks(n_cand);
  auto* lse = reinterpret_cast<float*>(
      ws + bounds_bytes + AlignUp(static_cast<size_t>(n_heads) * blocks * sizeof(float2)));
  const int group = n_heads / pool.n_kv_heads;
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(pool.n_kv_heads),
                  static_cast<unsigned>((group + kMaxGroup - 1) / kMaxGroup));
  const size_t smem = static_cast<size_t>(std::min(group, kMaxGroup)) * pool.head_dim * sizeof(float);
  BoundKernel<<<grid, kBoundThreads, smem, AsStream(stream)>>>(
      reinterpret_cast<const __half*>(d_digests), DigestHalfs(pool), pool.head_dim, d_pages,
      n_cand, d_q, group, scale, bounds, parts);
  RETURN_IF_ERROR(LaunchStatus("CudaScorePages bounds"));
  LseKernel<<<static_cast<unsigned>(n_heads), 256, 0, AsStream(stream)>>>(parts, blocks, lse);
  RETURN_IF_ERROR(LaunchStatus("CudaScorePages lse"));
  const dim3 sgrid(Blocks(n_cand, 256), static_cast<unsigned>(pool.n_kv_heads));
  GroupScoreKernel<<<sgrid, 256, 0, AsStream(stream)>>>(bounds, lse, n_cand, group, d_scores);
  return LaunchStatus("CudaScorePages scores");
}

namespace {
bool TwoStageTopK(int n, int k) { return n >= kTileTopKMin && k <= kTopKTile; }
int TopKTiles(int n) { return (n + kTopKTile - 1) / kTopKTile; }
}  // namespace

size_t CudaTopKWorkspaceBytes(int n_kv_heads, int n, int k) {
  if (!TwoStageTopK(n, k)) return 0;
  return AlignUp(static_cast<size_t>(std::max(n_kv_heads, 0)) * TopKTiles(n) * k *
                 sizeof(int32_t));
}

Status CudaTopK(const float* d_scores, int n_kv_heads, int n, int k, int32_t* d_index,
                void* d_workspace, void* stream) {
  if (n_kv_heads <= 0 || k <= 0 || k > n) return InvalidArgumentError("CudaTopK: need 0 < k <= n");
  if (!TwoStageTopK(n, k)) {
    TopKKernel<<<static_cast<unsigned>(n_kv_heads), kTopKThreads, 0, AsStream(stream)>>>(
        d_scores, n, nullptr, 0, n, k, d_index);
    return LaunchStatus("CudaTopK");
  }
  if (d_workspace == nullptr) return InvalidArgumentError("CudaTopK: workspace required");
  auto* cand = static_cast<int32_t*>(d_workspace);
  const int tiles = TopKTiles(n);
  // Every tile but the last has kTopKTile >= k scores; the last keeps min(k, its length), so
  // the candidates of one KV head are contiguous, in index order.
  const int n_cand = (tiles - 1) * k + std::min(k, n - (tiles - 1) * kTopKTile);
  const int stride = tiles * k;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(n_kv_heads));
  TileTopKKernel<<<grid, kTopKThreads, 0, AsStream(stream)>>>(d_scores, n, k, cand, stride);
  RETURN_IF_ERROR(LaunchStatus("CudaTopK tiles"));
  TopKKernel<<<static_cast<unsigned>(n_kv_heads), kTopKThreads, 0, AsStream(stream)>>>(
      d_scores, n, cand, stride, n_cand, k, d_index);
  return LaunchStatus("CudaTopK");
}

int CudaSelectedPages(int n_pages, int n_sink, int n_recent, int k_pages) {
  const SelectShape s = ShapeOf(n_pages, n_sink, n_recent, k_pages);
  return s.sink + s.k_eff + s.recent;
}

// Workspace of CudaSelectPages: CudaScorePages's, the scores [n_kv][n_pages], the top-k
// indices [n_kv][n_pages], and CudaTopK's (at most n_kv * (n + kTopKTile) candidates for any k).
size_t CudaSelectPagesWorkspaceBytes(int n_heads, int n_kv_heads, int n_pages) {
  const size_t n = static_cast<size_t>(std::max(n_pages, 0));
  const size_t kv = static_cast<size_t>(std::max(n_kv_heads, 0));
  return CudaScorePagesWorkspaceBytes(n_heads, n_pages) + AlignUp(kv * n * sizeof(float)) +
         AlignUp(kv * n * sizeof(int32_t)) + AlignUp(kv * (n + kTopKTile) * sizeof(int32_t));
}

Status CudaSelectPages(const KvPool& pool, const uint16_t* d_digests, const PageRef* d_pages,
                       int n_pages, int n_sink, int n_recent, int k_pages, const float* d_q,
                       int n_heads, float scale, PageRef* d_selected, void* d_workspace,
                       void* stream) {
  RETURN_IF_ERROR(CheckPool(pool, n_heads, "CudaSelectPages"));
  if (n_pages < 0) return InvalidArgumentError("CudaSelectPages: n_pages < 0");
  const SelectShape s = ShapeOf(n_pages, n_sink, n_recent, k_pages);
  const int n_sel = s.sink + s.k_eff + s.recent;
  if (n_sel == 0) return Status::Ok();
  const bool all = s.k_eff == s.cand;  // nothing to choose
  int32_t* index = nullptr;
  if (!all) {
    if (d_workspace == nullptr) return InvalidArgumentError("CudaSelectPages: workspace required");
    const size_t kv = static_cast<size_t>(pool.n_kv_heads), n = static_cast<size_t>(n_pages);
    auto* ws = static_cast<char*>(d_workspace);
    size_t off = CudaScorePagesWorkspaceBytes(n_heads, n_pages);
    auto* scores = reinterpret_cast<float*>(ws + off);
    off += AlignUp(kv * n * sizeof(float));
    index = reinterpret_cast<int32_t*>(ws + off);
    off += AlignUp(kv * n * sizeof(int32_t));
    RETURN_IF_ERROR(CudaScorePages(pool, d_digests, d_pages + s.sink, s.cand, d_q, n_heads, scale,
                                   scores, ws, stream));
    RETURN_IF_ERROR(CudaTopK(scores, pool.n_kv_heads, s.cand, s.k_eff, index, ws + off, stream));
  }
  const dim3 grid(Blocks(n_sel, 128), static_cast<unsigned>(pool.n_kv_heads));
  AssembleKernel<<<grid, 128, 0, AsStream(stream)>>>(d_pages, n_pages, s.sink, s.recent, s.k_eff,
                                                     all, index, s.k_eff, d_selected);
  return LaunchStatus("CudaSelectPages");
}

}  // namespace kvtier::kernels::cuda
