// kernels/cpu/internal/retrieval_impl.h — the retrieval attention kernels written once against
// the vector abstraction of simd.h, instantiated by retrieval_scalar.cc, retrieval_avx2.cc and
// retrieval_avx512.cc.
//
// Thread safety: pure functions.
//
// Include this only from those three files, after their `#pragma GCC target` line and after
// every other header, so that only these templates are compiled for the wider target.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cpu/internal/retrieval_table.h"
#include "kernels/cpu/internal/simd.h"
#include "kernels/fp16.h"

namespace kvtier::kernels::internal::retrieval_impl {

// min(a, b) from the abstraction's Max: negation is exact, so this is exactly min for every
// non-NaN input.
template <class Isa>
typename Isa::V Min(typename Isa::V a, typename Isa::V b) {
  const typename Isa::V z = Isa::Zero();
  return Isa::Sub(z, Isa::Max(Isa::Sub(z, a), Isa::Sub(z, b)));
}

// f16 -> f32 -> f16 is exact and min/max of f16 values are f16 values, so the digest is exact.
template <class Isa>
void DigestUpdate(const uint16_t* key, int head_dim, uint16_t* digest, bool first) {
  constexpr int kW = Isa::kW;
  uint16_t* mn = digest;
  uint16_t* mx = digest + head_dim;
  int d = 0;
  if (first) {
    for (; d < head_dim; ++d) mn[d] = mx[d] = key[d];
    return;
  }
  for (; d + kW <= head_dim; d += kW) {
    const typename Isa::V k = Isa::LoadH(key + d);
    Isa::StoreH(mn + d, Min<Isa>(Isa::LoadH(mn + d), k));
    Isa::StoreH(mx + d, Isa::Max(Isa::LoadH(mx + d), k));
  }
  for (; d < head_dim; ++d) {
    const float k = F16ToF32(key[d]);
    if (k < F16ToF32(mn[d])) mn[d] = key[d];
    if (k > F16ToF32(mx[d])) mx[d] = key[d];
  }
}

// One page at a time: its min and max rows are converted once (head_dim along the lanes) and
// serve every query row; max(q*min, q*max) is two products and a max per lane.
template <class Isa>
void Bounds(const KvPool& pool, const PageRef* pages, int n_pages, int kv_head, const float* q,
            int n_rows, float* out, int64_t out_stride) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  constexpr int kMaxDim = 256;
  const int d_dim = pool.head_dim;
  alignas(64) float mn[kMaxDim], mx[kMaxDim];
  for (int i = 0; i < n_pages; ++i) {
    const uint16_t* dg = pool.DigestHead(pages[i].page, kv_head);
    int d = 0;
    for (; d + kW <= d_dim; d += kW) {
      Isa::Store(mn + d, Isa::LoadH(dg + d));
      Isa::Store(mx + d, Isa::LoadH(dg + d_dim + d));
    }
    for (; d < d_dim; ++d) {
      mn[d] = F16ToF32(dg[d]);
      mx[d] = F16ToF32(dg[d_dim + d]);
    }
    for (int r = 0; r < n_rows; ++r) {
      const float* qr = q + static_cast<size_t>(r) * d_dim;
      V a0 = Isa::Zero(), a1 = Isa::Zero();
      d = 0;
      for (; d + 2 * kW <= d_dim; d += 2 * kW) {
        const V q0 = Isa::Load(qr + d), q1 = Isa::Load(qr + d + kW);
        a0 = Isa::Add(a0,
                      Isa::Max(Isa::Mul(q0, Isa::Load(mn + d)), Isa::Mul(q0, Isa::Load(mx + d))));
        a1 = Isa::Add(a1, Isa::Max(Isa::Mul(q1, Isa::Load(mn + d + kW)),
                                   Isa::Mul(q1, Isa::Load(mx + d + kW))));
      }
      for (; d + kW <= d_dim; d += kW) {
        const V q0 = Isa::Load(qr + d);
        a0 = Isa::Add(a0,
                      Isa::Max(Isa::Mul(q0, Isa::Load(mn + d)), Isa::Mul(q0, Isa::Load(mx + d))));
      }
      float sum = Isa::ReduceAdd(Isa::Add(a0, a1));
      for (; d < d_dim; ++d) {
        const float a = qr[d] * mn[d], b = qr[d] * mx[d];
        sum += a > b ? a : b;
      }
      out[r * out_stride + i] = sum;
    }
  }
}

// logsumexp(b[0, n)); -inf when every b[i] is -inf (or n == 0).
template <class Isa>
float LogSumExp(const float* b, int n) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  V vmax = Isa::Set1(-HUGE_VALF);
  int i = 0;
  for (; i + kW <= n; i += kW) vmax = Isa::Max(vmax, Isa::Load(b + i));
  float mx = Isa::ReduceMax(vmax);
  for (; i < n; ++i) mx = b[i] > mx ? b[i] : mx;
  if (mx == -HUGE_VALF) return mx;
  const V vm = Isa::Set1(mx);
  V vsum = Isa::Zero();
  i = 0;
  for (; i + kW <= n; i += kW) vsum = Isa::Add(vsum, Isa::Exp(Isa::Sub(Isa::Load(b + i), vm)));
  float sum = Isa::ReduceAdd(vsum);
  for (; i < n; ++i) sum += std::exp(b[i] - mx);
  return mx + std::log(sum);
}

template <class Isa>
void FoldLogSoftmax(const float* b, int n, float* scores) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  const float lse = LogSumExp<Isa>(b, n);
  const V vl = Isa::Set1(lse);
  int i = 0;
  for (; i + kW <= n; i += kW) {
    Isa::Store(scores + i, Isa::Max(Isa::Load(scores + i), Isa::Sub(Isa::Load(b + i), vl)));
  }
  for (; i < n; ++i) {
    const float v = b[i] - lse;
    scores[i] = v > scores[i] ? v : scores[i];
  }
}

// One page at a time: its sketch is converted once, dimension-major (consecutive slots along
// the lanes), and serves every query row; per row the logits of all the page's slots are
// accumulated together (one broadcast multiply-add per sketch dimension, no horizontal sums),
// then their logsumexp, plus (centroid) q . the page's centroid of the other dimensions.
template <class Isa>
void SketchLse(const KvPool& pool, const PageRef* pages, int n_pages, int kv_head, const float* q,
               int n_rows, float* out, int64_t out_stride, bool centroid) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  constexpr int kMaxSlots = 64, kMaxSketch = 64, kMaxDim = 256, kRowBlock = 4;
  const int sd = pool.SketchDims();
  const int pt = pool.page_tokens;
  const int q_off = pool.head_dim - sd;  // the sketch is the keys' last sd dimensions
  const int cd = pool.CentroidDims();    // == q_off: the centroid is the first cd dimensions
  alignas(64) float sk[kMaxSketch * kMaxSlots];
  alignas(64) float logit[kRowBlock * kMaxSlots];
  alignas(64) float cen[kMaxDim];
  for (int i = 0; i < n_pages; ++i) {
    const int n = pages[i].n_tokens < pt ? pages[i].n_tokens : pt;
    if (n <= 0) {
      for (int r = 0; r < n_rows; ++r) out[r * out_stride + i] = -HUGE_VALF;
      continue;
    }
    uint16_t* head = pool.DigestHead(pages[i].page, kv_head);
    const uint16_t* src = pool.Sketch(head);
    const int nv = n / kW * kW;  // slots done with vectors; the rest scalar
    const int cv = cd / kW * kW;
    if (centroid) {
      const uint16_t* c = pool.Centroid(head);
      int d = 0;
      for (; d < cv; d += kW) Isa::Store(cen + d, Isa::LoadH(c + d));
      for (; d < cd; ++d) cen[d] = F16ToF32(c[d]);
    }
    for (int d = 0; d < sd; ++d) {
      const uint16_t* row = src + static_cast<size_t>(d) * pt;
      float* dst = sk + d * kMaxSlots;
      int j = 0;
      for (; j < nv; j += kW) Isa::Store(dst + j, Isa::LoadH(row + j));
      for (; j < n; ++j) dst[j] = F16ToF32(row[j]);
    }
    // Rows in groups of kRowBlock: each row keeps its own accumulator and the same order of
    // operations as alone, but a group's independent FMA chains overlap (a decode step's rows
    // are the GQA group's query heads, 3 on the default model). A short last group repeats its
    // last row (fixed trip counts keep the accumulators in registers); the copies are dropped.
    for (int r0 = 0; r0 < n_rows; r0 += kRowBlock) {
      const int nr = n_rows - r0 < kRowBlock ? n_rows - r0 : kRowBlock;
      const float* qr[kRowBlock];
      for (int b = 0; b < kRowBlock; ++b) {
        qr[b] = q + static_cast<size_t>(r0 + (b < nr ? b : nr - 1)) * pool.head_dim;
      }
      for (int j = 0; j < nv; j += kW) {
        V acc[kRowBlock];
        for (int b = 0; b < kRowBlock; ++b) acc[b] = Isa::Zero();
        for (int d = 0; d < sd; ++d) {
          const V k = Isa::Load(sk + d * kMaxSlots + j);
          for (int b = 0; b < kRowBlock; ++b) {
            acc[b] = Isa::Fma(Isa::Set1(qr[b][q_off + d]), k, acc[b]);
          }
        }
        for (int b = 0; b < kRowBlock; ++b) Isa::Store(logit + b * kMaxSlots + j, acc[b]);
      }
      for (int b = 0; b < nr; ++b) {
        for (int j = nv; j < n; ++j) {
          float dot = 0;
          for (int d = 0; d < sd; ++d) dot += qr[b][q_off + d] * sk[d * kMaxSlots + j];
          logit[b * kMaxSlots + j] = dot;
        }
      }
      float base[kRowBlock] = {};
      if (centroid) {
        V acc[kRowBlock];
        for (int b = 0; b < kRowBlock; ++b) acc[b] = Isa::Zero();
        int d = 0;
        for (; d < cv; d += kW) {
          const V c = Isa::Load(cen + d);
          for (int b = 0; b < kRowBlock; ++b) acc[b] = Isa::Fma(Isa::Load(qr[b] + d), c, acc[b]);
        }
        for (int b = 0; b < nr; ++b) {
          base[b] = Isa::ReduceAdd(acc[b]);
          for (int e = d; e < cd; ++e) base[b] += qr[b][e] * cen[e];
        }
      }
      for (int b = 0; b < nr; ++b) {
        out[(r0 + b) * out_stride + i] = LogSumExp<Isa>(logit + b * kMaxSlots, n) + base[b];
      }
    }
  }
}

// scores[i] += exp(b[i] - logsumexp(b[0, n))) for i < n: one row's softmax over the pages
// (its estimated share of attention per page) added into its KV head's scores.
template <class Isa>
void FoldSoftmaxSum(const float* b, int n, float* scores) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  const float lse = LogSumExp<Isa>(b, n);
  if (lse == -HUGE_VALF) return;  // no filled page
  const V vl = Isa::Set1(lse);
  int i = 0;
  for (; i + kW <= n; i += kW) {
    Isa::Store(scores + i,
               Isa::Add(Isa::Load(scores + i), Isa::Exp(Isa::Sub(Isa::Load(b + i), vl))));
  }
  for (; i < n; ++i) scores[i] += std::exp(b[i] - lse);
}

template <class Isa>
const RetrievalTable& MakeTable() {
  static const RetrievalTable table = {&DigestUpdate<Isa>, &Bounds<Isa>, &FoldLogSoftmax<Isa>,
                                       &SketchLse<Isa>, &FoldSoftmaxSum<Isa>};
  return table;
}

}  // namespace kvtier::kernels::internal::retrieval_impl
