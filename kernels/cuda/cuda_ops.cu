// kernels/cuda/cuda_ops.cu — RMSNorm, RoPE, SwiGLU and decode paged attention on CUDA.
//
// The kernels mirror the CPU ops (kernels/cpu/ops.cc) so results agree within float rounding:
// RoPE uses the same double-precision angle; attention is an online softmax over pages, split
// across blocks (split-k) for long contexts and merged by a second small kernel.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/internal/f16_vectors.cuh"

namespace kvtier::kernels::cuda {
namespace {

using internal::Unpack8;

constexpr int kWarp = 32;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxPerLane = kMaxHeadDim / kWarp;
constexpr int kAttnWarps = 4;
// Split-k of decode attention: at most kMaxSplits blocks per KV head (so the merge stays short
// however long the context), at least kMinSplitPages pages per block (one per warp).
constexpr int kMaxSplits = 256;
constexpr int kMinSplitPages = kAttnWarps;
constexpr int kMergeThreads = 1024;
constexpr int kFastPageTokens = 16;  // GroupDecodeKernel's page size (the default)

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

// ---- Single-token GEMV with a fused input stage ---------------------------------------------
// Grid ceil(rows / kGemvRowsPerBlock), kGemvThreads threads. The block first builds the input
// vector in shared memory (every block the same: a few KB from L2), then each warp takes
// kGemvRowsPerWarp rows: lane c8 = lane, lane + 32, ... reads 8 weights with one 16-byte load
// and 8 inputs, a warp sum finishes the row.
constexpr int kGemvThreads = 256;
constexpr int kGemvRowsPerWarp = 1;  // more blocks: a decode step's products are latency-bound
constexpr int kGemvRowsPerBlock = kGemvThreads / kWarp * kGemvRowsPerWarp;

__global__ void __launch_bounds__(kGemvThreads)
    GemvKernel(const __half* w, int64_t rows, int cols, GemvInput input, const float* x,
               const float* norm, float eps, float beta, float* y) {
  extern __shared__ float s_in[];  // [cols]
  __shared__ float s_red[kGemvThreads / kWarp];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (input == GemvInput::kRmsNorm) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += x[i] * x[i];
    ss = WarpSum(ss);
    if (lane == 0) s_red[warp] = ss;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < kGemvThreads / kWarp; ++i) total += s_red[i];
    const float inv = rsqrtf(total / static_cast<float>(cols) + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s_in[i] = x[i] * inv * norm[i];
  } else if (input == GemvInput::kSwiGlu) {
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
      const float g = x[i];
      s_in[i] = g / (1.0f + expf(-g)) * x[cols + i];
    }
  } else {
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s_in[i] = x[i];
  }
  __syncthreads();
  const int chunks = cols / 8;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kGemvRowsPerBlock + warp * kGemvRowsPerWarp;
#pragma unroll
  for (int rr = 0; rr < kGemvRowsPerWarp; ++rr) {
    const int64_t r = r0 + rr;
    if (r >= rows) break;
    const uint4* wr = reinterpret_cast<const uint4*>(w + r * cols);
    float acc = 0.0f;
#pragma unroll 4  // several 16-byte loads in flight per lane, not one at a time
    for (int c8 = lane; c8 < chunks; c8 += kWarp) {
      float wf[8];
      Unpack8(__ldg(wr + c8), wf);
      const float4 a = *reinterpret_cast<const float4*>(s_in + c8 * 8);
      const float4 b = *reinterpret_cast<const float4*>(s_in + c8 * 8 + 4);
      acc += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x + wf[5] * b.y +
             wf[6] * b.z + wf[7] * b.w;
    }
    acc = WarpSum(acc);
    if (lane == 0) y[r] = beta == 0.0f ? acc : beta * y[r] + acc;
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

// Pages per split block: as few as kMinSplitPages, as many as keeps the splits <= kMaxSplits.
__host__ __device__ inline int PagesPerSplit(int n_pages) {
  const int by_cap = (n_pages + kMaxSplits - 1) / kMaxSplits;
  return by_cap > kMinSplitPages ? by_cap : kMinSplitPages;
}

int DecodeSplits(int n_pages) {
  if (n_pages <= 0) return 1;
  const int per = PagesPerSplit(n_pages);
  return (n_pages + per - 1) / per;
}

// Splits that any context of at most n_pages needs: the grid of a step launch and the size of
// the workspace (DecodeSplits itself is not monotonic: 1024 pages take 256 splits, 1025 take 205).
int MaxDecodeSplits(int n_pages) {
  if (n_pages <= 0) return 1;
  return std::min(kMaxSplits, (n_pages + kMinSplitPages - 1) / kMinSplitPages);
}

// ---- Decode attention ---------------------------------------------------------------------
// Two kernels produce the same (m, l, o) partials per (query head, split), merged by
// MergeSplitsKernel when there is more than one split:
//   GroupDecodeKernel, the fast path (head_dim 64 or 128, 16-token pages, a GQA group of at most
//     8 or 4 heads): one block per (KV head, split), so each K/V page is read once for the whole
//     group; a warp reads a page with 16-byte loads, all of K and V at once.
//   DecodeAttentionKernel, every other shape: one block per (query head, split), a lane per
//     dimension, one key at a time.

// The online-softmax states (m, l, o) of a block's kWarps warps, merged: each warp Put()s its
// own (lane: dims lane + 32k), then after a barrier Merged(d) gives the block's (max m, and l
// and o[d] rescaled to it).
template <int kWarps>
struct WarpSoftmaxStates {
  float m[kWarps], l[kWarps];
  float o[kWarps][kMaxHeadDim];

  __device__ void Put(int warp, int lane, float wm, float wl, const float* acc, int head_dim) {
    if (lane == 0) {
      m[warp] = wm;
      l[warp] = wl;
    }
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) {
      const int d = lane + kWarp * k;
      if (d < head_dim) o[warp][d] = acc[k];
    }
  }

  __device__ void Merged(int d, float* mm, float* ll, float* oo) const {
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, m[w]);
    float sl = 0.0f, so = 0.0f;
    if (mx != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float e = expf(m[w] - mx);
        sl += l[w] * e;
        so += o[w][d] * e;
      }
    }
    *mm = mx;
    *ll = sl;
    *oo = so;
  }
};

// Grid (n_heads, n_splits), kAttnWarps warps per block. Warp w of split s walks pages
// s*pages_per_split + w, + kAttnWarps, ...; lane owns dims lane + 32*k. Each warp keeps its own
// online-softmax state; the block merges its warps, then either writes the normalised output
// (one split) or the partial (m, l, o) for MergeSplitsKernel.
__global__ void __launch_bounds__(kAttnWarps* kWarp)
    DecodeAttentionKernel(const __half* pool_base, int page_tokens, int n_kv_heads, int head_dim,
                          const PageRef* pages, int n_pages, int pages_stride,
                          const DecodeStep* step, const float* q, int32_t q_pos, int group,
                          float scale, float* out, float* partials, int n_splits) {
  if (step != nullptr) {
    n_pages = step->n_pages;
    q_pos = step->pos;
  }
  const int pages_per_split = PagesPerSplit(n_pages);
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
  const int p_begin = split * pages_per_split;
  const int p_end = min(n_pages, p_begin + pages_per_split);
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

  __shared__ WarpSoftmaxStates<kAttnWarps> states;
  states.Put(warp, lane, m, l, acc, head_dim);
  __syncthreads();
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float mm, ll, o;
    states.Merged(d, &mm, &ll, &o);
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

// The fast path. Grid (n_kv_heads, n_splits), kAttnWarps warps per block; warp w of split s
// takes pages s*pages_per_split + w, + kAttnWarps, ... A warp reads one page's K and V rows of
// its KV head (16 tokens x D f16 each, contiguous) with 16-byte loads: lane = (token row t of a
// pass, 8-dim chunk c), kLanes = D/8 lanes per row, kRows = 32/kLanes rows per pass. Each lane
// keeps, for every query head of the group, 8 dims of q and of the output accumulator; dot
// products are summed over the kLanes lanes of a row, and the softmax state (m, l) is updated
// once per page. At the end the rows' accumulators are summed and the block merges its warps.
template <int D, int G>
__global__ void __launch_bounds__(kAttnWarps* kWarp)
    GroupDecodeKernel(const __half* pool_base, int n_kv_heads, const PageRef* pages, int n_pages,
                      int pages_stride, const DecodeStep* step, const float* q, int32_t q_pos,
                      float scale, float* out, float* partials, int n_splits) {
  if (step != nullptr) {
    n_pages = step->n_pages;
    q_pos = step->pos;
  }
  const int pages_per_split = PagesPerSplit(n_pages);
  constexpr int kLanes = D / 8;
  constexpr int kRows = kWarp / kLanes;
  constexpr int kPasses = kFastPageTokens / kRows;
  static_assert(kWarp % kLanes == 0 && kFastPageTokens % kRows == 0, "unsupported head_dim");
  // Prefetching the next page doubles the K/V registers: worth it while the kernel still fits
  // 3 blocks per SM (H200: +14% at 64/3, -10% at 128/4 measured; BENCHMARKS.md).
  constexpr bool kPrefetch = D * G <= 256;
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  const int kvh = blockIdx.x, split = blockIdx.y;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int row = lane / kLanes, c = lane % kLanes;
  pages += static_cast<size_t>(kvh) * pages_stride;
  const size_t half_elems = static_cast<size_t>(kFastPageTokens) * n_kv_heads * D;

  float qv[G][8], acc[G][8], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float* qh = q + static_cast<size_t>(kvh * G + g) * D + c * 8;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      qv[g][i] = qh[i] * scale * kLog2e;  // scores in log2 units: exp2f is one instruction
      acc[g][i] = 0.0f;
    }
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  // Software pipeline, per warp: while page i is scored, the K/V loads of page i+1 (kPrefetch)
  // and the PageRef of page i+2 are in flight (a page past the split's end or after q_pos is none:
  // page -1).
  const int p_begin = split * pages_per_split;
  const int p_end = min(n_pages, p_begin + pages_per_split);
  auto page_at = [&](int p) {
    PageRef r{-1, 0, 0};
    if (p < p_end) r = pages[p];
    if (r.first_pos > q_pos) r.page = -1;  // position order: every later page is masked too
    return r;
  };
  auto load = [&](const PageRef& r, uint4* kr, uint4* vr) {
    const __half* kb = pool_base + static_cast<size_t>(r.page) * 2 * half_elems +
                       static_cast<size_t>(kvh) * kFastPageTokens * D + row * D + c * 8;
    const __half* vb = kb + half_elems;
#pragma unroll
    for (int j = 0; j < kPasses; ++j) {
      kr[j] = __ldg(reinterpret_cast<const uint4*>(kb + j * kRows * D));
      vr[j] = __ldg(reinterpret_cast<const uint4*>(vb + j * kRows * D));
    }
  };
  // Scores page pr (K/V rows in kr, vr) for the group's heads and folds it into (m, l, acc).
  auto consume = [&](const PageRef& pr, const uint4* kr, const uint4* vr) {
    const int n_valid = min(min(pr.n_tokens, kFastPageTokens), q_pos - pr.first_pos + 1);
    float sc[G][kPasses];
#pragma unroll
    for (int j = 0; j < kPasses; ++j) {
      float kf[8];
      Unpack8(kr[j], kf);
      const bool valid = j * kRows + row < n_valid;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) dot += qv[g][i] * kf[i];
#pragma unroll
        for (int off = kLanes / 2; off > 0; off /= 2) {
          dot += __shfl_xor_sync(0xffffffffu, dot, off);
        }
        sc[g][j] = valid ? dot : -INFINITY;
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kPasses; ++j) mx = fmaxf(mx, sc[g][j]);
#pragma unroll
      for (int off = kLanes; off < kWarp; off *= 2) {
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      }
      const float m_new = fmaxf(m[g], mx);
      // m_new = -inf only when no key was visible yet: nothing to add (and -inf - -inf is NaN).
      const float alpha = m_new == -INFINITY ? 1.0f : exp2f(m[g] - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kPasses; ++j) {
        sc[g][j] = m_new == -INFINITY ? 0.0f : exp2f(sc[g][j] - m_new);  // exp2f(-inf) = 0
        sum += sc[g][j];
      }
#pragma unroll
      for (int off = kLanes; off < kWarp; off *= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      l[g] = l[g] * alpha + sum;
      m[g] = m_new;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= alpha;
    }
#pragma unroll
    for (int j = 0; j < kPasses; ++j) {
      float vf[8];
      Unpack8(vr[j], vf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] += sc[g][j] * vf[i];
      }
    }
  };
  if constexpr (kPrefetch) {
    int p = p_begin + warp;
    PageRef pr = page_at(p), pr_next = page_at(p + kAttnWarps);
    uint4 kr[kPasses], vr[kPasses], kn[kPasses], vn[kPasses];
    if (pr.page >= 0) load(pr, kr, vr);
    while (pr.page >= 0) {
      const PageRef pr_after = page_at(p + 2 * kAttnWarps);
      if (pr_next.page >= 0) load(pr_next, kn, vn);
      consume(pr, kr, vr);
#pragma unroll
      for (int j = 0; j < kPasses; ++j) {
        kr[j] = kn[j];
        vr[j] = vn[j];
      }
      p += kAttnWarps;
      pr = pr_next;
      pr_next = pr_after;
    }
  } else {
    for (int p = p_begin + warp; p < p_end; p += kAttnWarps) {
      const PageRef pr = pages[p];
      if (pr.first_pos > q_pos) break;  // position order: every later page is masked too
      uint4 kr[kPasses], vr[kPasses];
      load(pr, kr, vr);
      consume(pr, kr, vr);
    }
  }
  // Sum the rows' accumulators: lanes c, c + kLanes, ... hold the same dims.
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
      for (int off = kLanes; off < kWarp; off *= 2) {
        acc[g][i] += __shfl_xor_sync(0xffffffffu, acc[g][i], off);
      }
    }
  }

  __shared__ float s_m[kAttnWarps][G], s_l[kAttnWarps][G];
  __shared__ float s_o[kAttnWarps][G][D];
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      s_m[warp][g] = m[g];
      s_l[warp][g] = l[g];
    }
  }
  if (row == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int i = 0; i < 8; ++i) s_o[warp][g][c * 8 + i] = acc[g][i];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D;
    float mm = -INFINITY;
    for (int w = 0; w < kAttnWarps; ++w) mm = fmaxf(mm, s_m[w][g]);
    float ll = 0.0f, o = 0.0f;
    if (mm != -INFINITY) {
      for (int w = 0; w < kAttnWarps; ++w) {
        const float e = exp2f(s_m[w][g] - mm);
        ll += s_l[w][g] * e;
        o += s_o[w][g][d] * e;
      }
    }
    const int h = kvh * G + g;
    if (n_splits == 1) {
      out[static_cast<size_t>(h) * D + d] = ll > 0.0f ? o / ll : 0.0f;
    } else {
      float* part = partials + (static_cast<size_t>(h) * n_splits + split) * (D + 2);
      part[2 + d] = o;
      if (d == 0) {
        part[0] = mm * kLn2;  // MergeSplitsKernel works in natural-log units
        part[1] = ll;
      }
    }
  }
}

// Grid n_heads, kMergeThreads threads: combines the splits of one head. Warp w folds splits
// w, w + n_warps, ... into its own (m, l, o) (lane: dims lane + 32k), then the warps merge.
__global__ void __launch_bounds__(kMergeThreads)
    MergeSplitsKernel(const float* partials, int n_splits, int head_dim, float* out) {
  constexpr int kWarps = kMergeThreads / kWarp;
  __shared__ WarpSoftmaxStates<kWarps> states;
  const int h = blockIdx.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const float* base = partials + static_cast<size_t>(h) * n_splits * (head_dim + 2);
  float m = -INFINITY, l = 0.0f, o[kMaxPerLane];
#pragma unroll
  for (int k = 0; k < kMaxPerLane; ++k) o[k] = 0.0f;
  for (int s = warp; s < n_splits; s += kWarps) {
    const float* part = base + static_cast<size_t>(s) * (head_dim + 2);
    const float pm = part[0];
    if (pm == -INFINITY) continue;  // a split that saw no key
    const float m_new = fmaxf(m, pm);
    const float a = expf(m - m_new), b = expf(pm - m_new);
    l = l * a + part[1] * b;
#pragma unroll
    for (int k = 0; k < kMaxPerLane; ++k) {
      const int d = lane + kWarp * k;
      if (d < head_dim) o[k] = o[k] * a + part[2 + d] * b;
    }
    m = m_new;
  }
  states.Put(warp, lane, m, l, o, head_dim);
  __syncthreads();
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float mm, ll, oo;
    states.Merged(d, &mm, &ll, &oo);
    out[static_cast<size_t>(h) * head_dim + d] = ll > 0.0f ? oo / ll : 0.0f;
  }
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

Status CudaGemv(const uint16_t* d_w, int64_t rows, int64_t cols, GemvInput input, const float* d_x,
                const float* d_norm, float eps, float beta, float* d_y, void* stream) {
  if (rows <= 0 || cols <= 0 || cols % 8 != 0 || cols > kGemvMaxCols) {
    return InvalidArgumentError("CudaGemv: cols must be a positive multiple of 8, <= 16384");
  }
  if (reinterpret_cast<uintptr_t>(d_w) % 16 != 0) {
    return InvalidArgumentError("CudaGemv: weights must be 16-byte aligned");
  }
  if (input == GemvInput::kRmsNorm && d_norm == nullptr) {
    return InvalidArgumentError("CudaGemv: RMSNorm input needs its weights");
  }
  const size_t smem = static_cast<size_t>(cols) * sizeof(float);
  if (smem > 48 * 1024) {
    // Idempotent and not a stream operation: allowed during graph capture.
    const cudaError_t err = cudaFuncSetAttribute(
        GemvKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return FromCuda(err, "CudaGemv: shared memory");
  }
  GemvKernel<<<Blocks(rows, kGemvRowsPerBlock), kGemvThreads, smem, AsStream(stream)>>>(
      reinterpret_cast<const __half*>(d_w), rows, static_cast<int>(cols), input, d_x, d_norm, eps,
      beta, d_y);
  return LaunchStatus("CudaGemv");
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
  const int splits = MaxDecodeSplits(n_pages);
  if (splits <= 1) return 0;
  return static_cast<size_t>(n_heads) * splits * (head_dim + 2) * sizeof(float);
}

namespace {

// d_step null: n_pages and q_pos as given, DecodeSplits(n_pages) splits. d_step set: both read
// on the device, n_pages is the list's capacity and the grid has MaxDecodeSplits(n_pages).
Status LaunchDecode(const KvPool& pool, const PageRef* d_pages, int n_pages, int pages_stride,
                    const DecodeStep* d_step, const float* d_q, int32_t q_pos, int n_heads,
                    float scale, float* d_out, void* d_workspace, void* stream) {
  if (pool.n_kv_heads <= 0 || n_heads <= 0 || n_heads % pool.n_kv_heads != 0) {
    return InvalidArgumentError(
        "CudaPagedAttentionDecode: n_heads must be a multiple of n_kv_heads");
  }
  if (pool.head_dim <= 0 || pool.head_dim > kMaxHeadDim || pool.page_tokens <= 0) {
    return InvalidArgumentError("CudaPagedAttentionDecode: head_dim must be in [1, 256]");
  }
  if (n_pages < 0) return InvalidArgumentError("CudaPagedAttentionDecode: n_pages < 0");
  const int splits = d_step != nullptr ? MaxDecodeSplits(n_pages) : DecodeSplits(n_pages);
  if (splits > 1 && d_workspace == nullptr) {
    return InvalidArgumentError("CudaPagedAttentionDecode: workspace required");
  }
  const __half* base = reinterpret_cast<const __half*>(pool.base);
  const int group = n_heads / pool.n_kv_heads;
  auto* partials = static_cast<float*>(d_workspace);
  cudaStream_t st = AsStream(stream);
  bool fast = pool.page_tokens == kFastPageTokens &&
              reinterpret_cast<uintptr_t>(pool.base) % 16 == 0;
  if (fast) {
    const dim3 grid(static_cast<unsigned>(pool.n_kv_heads), static_cast<unsigned>(splits));
    const dim3 block(kAttnWarps * kWarp);
#define KVTIER_GROUP_DECODE(D, G)                                                              \
  GroupDecodeKernel<D, G><<<grid, block, 0, st>>>(base, pool.n_kv_heads, d_pages, n_pages,     \
                                                 pages_stride, d_step, d_q, q_pos, scale,     \
                                                 d_out, partials, splits)
    switch (pool.head_dim * 16 + group) {
      case 64 * 16 + 1: KVTIER_GROUP_DECODE(64, 1); break;
      case 64 * 16 + 2: KVTIER_GROUP_DECODE(64, 2); break;
      case 64 * 16 + 3: KVTIER_GROUP_DECODE(64, 3); break;
      case 64 * 16 + 4: KVTIER_GROUP_DECODE(64, 4); break;
      case 64 * 16 + 5: KVTIER_GROUP_DECODE(64, 5); break;
      case 64 * 16 + 6: KVTIER_GROUP_DECODE(64, 6); break;
      case 64 * 16 + 7: KVTIER_GROUP_DECODE(64, 7); break;
      case 64 * 16 + 8: KVTIER_GROUP_DECODE(64, 8); break;
      case 128 * 16 + 1: KVTIER_GROUP_DECODE(128, 1); break;
      case 128 * 16 + 2: KVTIER_GROUP_DECODE(128, 2); break;
      case 128 * 16 + 3: KVTIER_GROUP_DECODE(128, 3); break;
      case 128 * 16 + 4: KVTIER_GROUP_DECODE(128, 4); break;
      default: fast = false;
    }
#undef KVTIER_GROUP_DECODE
  }
  if (!fast) {
    const dim3 grid(static_cast<unsigned>(n_heads), static_cast<unsigned>(splits));
    DecodeAttentionKernel<<<grid, kAttnWarps * kWarp, 0, st>>>(
        base, pool.page_tokens, pool.n_kv_heads, pool.head_dim, d_pages, n_pages, pages_stride,
        d_step, d_q, q_pos, group, scale, d_out, partials, splits);
  }
  RETURN_IF_ERROR(LaunchStatus("CudaPagedAttentionDecode"));
  if (splits > 1) {
    MergeSplitsKernel<<<static_cast<unsigned>(n_heads), kMergeThreads, 0, st>>>(
        partials, splits, pool.head_dim, d_out);
    RETURN_IF_ERROR(LaunchStatus("CudaPagedAttentionDecode merge"));
  }
  return Status::Ok();
}

}  // namespace

Status CudaPagedAttentionDecode(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                const float* d_q, int32_t q_pos, int n_heads, float scale,
                                float* d_out, void* d_workspace, void* stream) {
  return LaunchDecode(pool, d_pages, n_pages, 0, nullptr, d_q, q_pos, n_heads, scale, d_out,
                      d_workspace, stream);
}

Status CudaPagedAttentionDecodePerKvHead(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                         const float* d_q, int32_t q_pos, int n_heads, float scale,
                                         float* d_out, void* d_workspace, void* stream) {
  return LaunchDecode(pool, d_pages, n_pages, n_pages, nullptr, d_q, q_pos, n_heads, scale, d_out,
                      d_workspace, stream);
}

Status CudaPagedAttentionDecodeStep(const KvPool& pool, const PageRef* d_pages, int max_pages,
                                    const DecodeStep* d_step, const float* d_q, int n_heads,
                                    float scale, float* d_out, void* d_workspace, void* stream) {
  if (d_step == nullptr) return InvalidArgumentError("CudaPagedAttentionDecodeStep: no step");
  return LaunchDecode(pool, d_pages, max_pages, 0, d_step, d_q, 0, n_heads, scale, d_out,
                      d_workspace, stream);
}

Status CudaStreamBeginCapture(void* stream) {
  return FromCuda(cudaStreamBeginCapture(AsStream(stream), cudaStreamCaptureModeThreadLocal),
                  "cudaStreamBeginCapture");
}

Result<void*> CudaStreamEndCapture(void* stream) {
  cudaGraph_t graph = nullptr;
  RETURN_IF_ERROR(FromCuda(cudaStreamEndCapture(AsStream(stream), &graph), "cudaStreamEndCapture"));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);  // the executable graph keeps what it needs
  RETURN_IF_ERROR(FromCuda(err, "cudaGraphInstantiate"));
  return static_cast<void*>(exec);
}

Status CudaGraphLaunch(void* graph_exec, void* stream) {
  return FromCuda(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph_exec), AsStream(stream)),
                  "cudaGraphLaunch");
}

void CudaGraphDestroy(void* graph_exec) {
  if (graph_exec != nullptr) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph_exec));
}

}  // namespace kvtier::kernels::cuda
