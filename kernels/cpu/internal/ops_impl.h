// kernels/cpu/internal/ops_impl.h — the op kernels, written once against the vector
// abstraction of simd.h and instantiated by ops_scalar.cc, ops_avx2.cc and ops_avx512.cc.
//
// Thread safety: pure functions, except that the attention kernels keep growing thread_local
// scratch buffers (no heap allocation once a thread has seen the largest problem).
//
// Include this only from those three files, after their `#pragma GCC target` line and after
// every other header, so that only these templates are compiled for the wider target.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/internal/ops_table.h"
#include "kernels/cpu/internal/simd.h"
#include "kernels/fp16.h"

namespace kvtier::kernels::internal::impl {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- Elementwise --------------------------------------------------------------------------

template <class Isa>
void RmsNorm(const float* x, const float* weight, int64_t n_tokens, int64_t dim, float eps,
             float* out) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = x + t * dim;
    float* ot = out + t * dim;
    V a0 = Isa::Zero(), a1 = Isa::Zero();
    int64_t i = 0;
    for (; i + 2 * kW <= dim; i += 2 * kW) {
      const V v0 = Isa::Load(xt + i), v1 = Isa::Load(xt + i + kW);
      a0 = Isa::Fma(v0, v0, a0);
      a1 = Isa::Fma(v1, v1, a1);
    }
    for (; i + kW <= dim; i += kW) {
      const V v0 = Isa::Load(xt + i);
      a0 = Isa::Fma(v0, v0, a0);
    }
    float sum = Isa::ReduceAdd(Isa::Add(a0, a1));
    for (; i < dim; ++i) sum += xt[i] * xt[i];
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(dim) + eps);
    const V vinv = Isa::Set1(inv);
    i = 0;
    for (; i + kW <= dim; i += kW) {
      Isa::Store(ot + i, Isa::Mul(Isa::Mul(Isa::Load(xt + i), vinv), Isa::Load(weight + i)));
    }
    for (; i < dim; ++i) ot[i] = xt[i] * inv * weight[i];
  }
}

template <class Isa>
void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  const V one = Isa::Set1(1.0f);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) {
    const V g = Isa::Load(gate + i);
    const V silu = Isa::Div(g, Isa::Add(one, Isa::Exp(Isa::Sub(Isa::Zero(), g))));
    Isa::Store(out + i, Isa::Mul(silu, Isa::Load(up + i)));
  }
  for (; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

template <class Isa>
void Add(float* y, const float* x, int64_t n) {
  constexpr int kW = Isa::kW;
  int64_t i = 0;
  for (; i + kW <= n; i += kW) Isa::Store(y + i, Isa::Add(Isa::Load(y + i), Isa::Load(x + i)));
  for (; i < n; ++i) y[i] += x[i];
}

template <class Isa>
void Softmax(float* x, int64_t n) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  if (n <= 0) return;
  V vmax = Isa::Set1(kNegInf);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vmax = Isa::Max(vmax, Isa::Load(x + i));
  float mx = Isa::ReduceMax(vmax);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == kNegInf) mx = 0.0f;  // all -inf: every exp is 0 and the sum guard below applies
  const V vm = Isa::Set1(mx);
  // Partial sums in float vectors, folded into a double every kChunk elements so that a
  // vocabulary-sized row keeps full float accuracy even in the one-lane scalar version.
  constexpr int64_t kChunk = 256;
  double sum = 0.0;
  i = 0;
  while (i + kW <= n) {
    V vsum = Isa::Zero();
    const int64_t stop = std::min(n, i + kChunk);
    for (; i + kW <= stop; i += kW) {
      const V e = Isa::Exp(Isa::Sub(Isa::Load(x + i), vm));
      Isa::Store(x + i, e);
      vsum = Isa::Add(vsum, e);
    }
    sum += Isa::ReduceAdd(vsum);
  }
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = sum > 0.0 ? static_cast<float>(1.0 / sum) : 0.0f;
  const V vinv = Isa::Set1(inv);
  i = 0;
  for (; i + kW <= n; i += kW) Isa::Store(x + i, Isa::Mul(Isa::Load(x + i), vinv));
  for (; i < n; ++i) x[i] *= inv;
}

template <class Isa>
void ToF16(const float* x, int64_t n, uint16_t* out) {
  constexpr int kW = Isa::kW;
  int64_t i = 0;
  for (; i + kW <= n; i += kW) Isa::StoreH(out + i, Isa::Load(x + i));
  for (; i < n; ++i) out[i] = F32ToF16(x[i]);
}

template <class Isa>
void FromF16(const uint16_t* h, int64_t n, float* out) {
  constexpr int kW = Isa::kW;
  int64_t i = 0;
  for (; i + kW <= n; i += kW) Isa::Store(out + i, Isa::LoadH(h + i));
  for (; i < n; ++i) out[i] = F16ToF32(h[i]);
}

// ---- Attention ----------------------------------------------------------------------------

// The helpers are templates on Isa so that each level's translation unit has its own copy,
// compiled for its own target (an inline non-template would be merged across them by the linker).
template <class Isa>
int RoundUp(int x, int m) {
  return (x + m - 1) / m * m;
}

// Per-thread scratch of at least n floats.
template <class Isa>
float* AttnScratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Minimum and maximum query position of the item's tokens.
template <class Isa>
void PosRange(const AttnProblem& pb, const AttnItem& it, int32_t* lo, int32_t* hi) {
  *lo = std::numeric_limits<int32_t>::max();
  *hi = std::numeric_limits<int32_t>::min();
  for (int64_t t = it.t_begin; t < it.t_end; ++t) {
    *lo = std::min(*lo, pb.q_pos[t]);
    *hi = std::max(*hi, pb.q_pos[t]);
  }
}

// Few rows (decode: the `group` query heads of one token): head_dim runs along the vector
// lanes; each score is a dot product, the page's probabilities are one or two vector exps.
template <class Isa>
void AttendFewRows(const AttnProblem& pb, const AttnItem& it, const AttnPartial& out) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  const KvPool& pool = *pb.pool;
  const int d_dim = pool.head_dim;
  const int page_tokens = pool.page_tokens;
  const int group = pb.group;
  const int rows = static_cast<int>(it.t_end - it.t_begin) * group;
  const int s_len = RoundUp<Isa>(page_tokens, kW);
  float* qs = AttnScratch<Isa>(static_cast<size_t>(rows) * d_dim + 2 * page_tokens * d_dim + s_len);
  float* kf = qs + static_cast<size_t>(rows) * d_dim;
  float* vf = kf + page_tokens * d_dim;
  float* s = vf + page_tokens * d_dim;

  for (int64_t t = it.t_begin; t < it.t_end; ++t) {
    const float* src = pb.q + (t * pb.n_heads + it.kv_head * group) * d_dim;
    float* dst = qs + (t - it.t_begin) * group * d_dim;
    for (int i = 0; i < group * d_dim; ++i) dst[i] = src[i] * pb.scale;
  }
  for (int r = 0; r < rows; ++r) {
    out.m[r] = kNegInf;
    out.l[r] = 0.0f;
  }
  std::fill(out.o, out.o + static_cast<size_t>(rows) * d_dim, 0.0f);
  int32_t min_pos, max_pos;
  PosRange<Isa>(pb, it, &min_pos, &max_pos);
  const size_t head_off = static_cast<size_t>(it.kv_head) * page_tokens * d_dim;
  const PageRef* pages = pb.pages + it.kv_head * pb.head_pages_stride;

  for (int p = it.p_begin; p < it.p_end; ++p) {
    const PageRef& pr = pages[p];
    const int n = std::min(pr.n_tokens, page_tokens);
    if (n <= 0) continue;
    if (pr.first_pos > max_pos) break;  // pages are in position order
    FromF16<Isa>(pool.K(pr.page) + head_off, static_cast<int64_t>(n) * d_dim, kf);
    FromF16<Isa>(pool.V(pr.page) + head_off, static_cast<int64_t>(n) * d_dim, vf);
    const bool need_mask = pr.first_pos + n - 1 > min_pos;
    for (int r = 0; r < rows; ++r) {
      const float* qr = qs + static_cast<size_t>(r) * d_dim;
      const int32_t qp = pb.q_pos[it.t_begin + r / group];
      for (int j = 0; j < n; ++j) {
        if (need_mask && pr.first_pos + j > qp) {
          s[j] = kNegInf;
          continue;
        }
        const float* kj = kf + j * d_dim;
        V a0 = Isa::Zero(), a1 = Isa::Zero();
        int c = 0;
        for (; c + 2 * kW <= d_dim; c += 2 * kW) {
          a0 = Isa::Fma(Isa::Load(qr + c), Isa::Load(kj + c), a0);
          a1 = Isa::Fma(Isa::Load(qr + c + kW), Isa::Load(kj + c + kW), a1);
        }
        for (; c + kW <= d_dim; c += kW) a0 = Isa::Fma(Isa::Load(qr + c), Isa::Load(kj + c), a0);
        float dot = Isa::ReduceAdd(Isa::Add(a0, a1));
        for (; c < d_dim; ++c) dot += qr[c] * kj[c];
        s[j] = dot;
      }
      for (int j = n; j < s_len; ++j) s[j] = kNegInf;
      V vmax = Isa::Set1(kNegInf);
      for (int j = 0; j < s_len; j += kW) vmax = Isa::Max(vmax, Isa::Load(s + j));
      const float mx = Isa::ReduceMax(vmax);
      if (mx == kNegInf) continue;  // nothing visible to this row in this page
      const float m_old = out.m[r];
      const float m_new = std::max(m_old, mx);
      const float alpha = m_new > m_old ? std::exp(m_old - m_new) : 1.0f;
      const V vm = Isa::Set1(m_new);
      V vsum = Isa::Zero();
      for (int j = 0; j < s_len; j += kW) {
        const V e = Isa::Exp(Isa::Sub(Isa::Load(s + j), vm));
        Isa::Store(s + j, e);
        vsum = Isa::Add(vsum, e);
      }
      out.l[r] = out.l[r] * alpha + Isa::ReduceAdd(vsum);
      out.m[r] = m_new;
      float* orow = out.o + static_cast<size_t>(r) * d_dim;
      const V va = Isa::Set1(alpha);
      int c = 0;
      for (; c + kW <= d_dim; c += kW) {
        V acc = Isa::Mul(Isa::Load(orow + c), va);
        for (int j = 0; j < n; ++j)
          acc = Isa::Fma(Isa::Set1(s[j]), Isa::Load(vf + j * d_dim + c), acc);
        Isa::Store(orow + c, acc);
      }
      for (; c < d_dim; ++c) {
        float acc = orow[c] * alpha;
        for (int j = 0; j < n; ++j) acc += s[j] * vf[j * d_dim + c];
        orow[c] = acc;
      }
    }
  }
}

// Many rows (prefill: a block of tokens times the group): the rows run along the vector lanes.
// Q is held transposed (qt[d][row]) and so are the scores (st[key][row]) and the output
// (ot[d][row]); K and V are used in their natural [token][d] layout, each element broadcast.
// Each f16 page is converted once per item and serves every row of the block.
template <class Isa>
void AttendManyRows(const AttnProblem& pb, const AttnItem& it, const AttnPartial& out) {
  using V = typename Isa::V;
  constexpr int kW = Isa::kW;
  const KvPool& pool = *pb.pool;
  const int d_dim = pool.head_dim;
  const int page_tokens = pool.page_tokens;
  const int group = pb.group;
  const int rows = static_cast<int>(it.t_end - it.t_begin) * group;
  const int rp = RoundUp<Isa>(rows, kW);
  const size_t qt_len = static_cast<size_t>(d_dim) * rp;
  float* qt = AttnScratch<Isa>(2 * qt_len + static_cast<size_t>(page_tokens) * rp +
                               2 * static_cast<size_t>(page_tokens) * d_dim + 3 * rp);
  float* ot = qt + qt_len;
  float* st = ot + qt_len;
  float* kf = st + static_cast<size_t>(page_tokens) * rp;
  float* vf = kf + static_cast<size_t>(page_tokens) * d_dim;
  float* qpos = vf + static_cast<size_t>(page_tokens) * d_dim;
  float* mrow = qpos + rp;
  float* lrow = mrow + rp;

  std::fill(qt, qt + 2 * qt_len, 0.0f);  // padded rows of qt stay 0; ot starts at 0
  for (int r = 0; r < rp; ++r) {
    mrow[r] = kNegInf;
    lrow[r] = 0.0f;
    qpos[r] = FLT_MAX;  // padded rows see everything; their output is dropped
  }
  for (int r = 0; r < rows; ++r) {
    const int64_t t = it.t_begin + r / group;
    const float* src = pb.q + (t * pb.n_heads + it.kv_head * group + r % group) * d_dim;
    for (int d = 0; d < d_dim; ++d) qt[static_cast<size_t>(d) * rp + r] = src[d] * pb.scale;
    qpos[r] = static_cast<float>(pb.q_pos[t]);
  }
  int32_t min_pos, max_pos;
  PosRange<Isa>(pb, it, &min_pos, &max_pos);
  const size_t head_off = static_cast<size_t>(it.kv_head) * page_tokens * d_dim;
  const PageRef* pages = pb.pages + it.kv_head * pb.head_pages_stride;
  const V neg_inf = Isa::Set1(kNegInf);

  for (int p = it.p_begin; p < it.p_end; ++p) {
    const PageRef& pr = pages[p];
    const int n = std::min(pr.n_tokens, page_tokens);
    if (n <= 0) continue;
    if (pr.first_pos > max_pos) break;
    FromF16<Isa>(pool.K(pr.page) + head_off, static_cast<int64_t>(n) * d_dim, kf);
    FromF16<Isa>(pool.V(pr.page) + head_off, static_cast<int64_t>(n) * d_dim, vf);
    const bool need_mask = pr.first_pos + n - 1 > min_pos;
    for (int rc = 0; rc < rp; rc += kW) {
      // Scores of keys j, four at a time: st[j][rc..] = sum_d k[j][d] * qt[d][rc..].
      int j = 0;
      for (; j + 4 <= n; j += 4) {
        V a0 = Isa::Zero(), a1 = Isa::Zero(), a2 = Isa::Zero(), a3 = Isa::Zero();
        const float* k0 = kf + j * d_dim;
        for (int d = 0; d < d_dim; ++d) {
          const V qv = Isa::Load(qt + static_cast<size_t>(d) * rp + rc);
          a0 = Isa::Fma(Isa::Set1(k0[d]), qv, a0);
          a1 = Isa::Fma(Isa::Set1(k0[d_dim + d]), qv, a1);
          a2 = Isa::Fma(Isa::Set1(k0[2 * d_dim + d]), qv, a2);
          a3 = Isa::Fma(Isa::Set1(k0[3 * d_dim + d]), qv, a3);
        }
        Isa::Store(st + static_cast<size_t>(j) * rp + rc, a0);
        Isa::Store(st + static_cast<size_t>(j + 1) * rp + rc, a1);
        Isa::Store(st + static_cast<size_t>(j + 2) * rp + rc, a2);
        Isa::Store(st + static_cast<size_t>(j + 3) * rp + rc, a3);
      }
      for (; j < n; ++j) {
        V a0 = Isa::Zero();
        const float* k0 = kf + j * d_dim;
        for (int d = 0; d < d_dim; ++d) {
          a0 = Isa::Fma(Isa::Set1(k0[d]), Isa::Load(qt + static_cast<size_t>(d) * rp + rc), a0);
        }
        Isa::Store(st + static_cast<size_t>(j) * rp + rc, a0);
      }
      if (need_mask) {
        const V qv = Isa::Load(qpos + rc);
        for (j = 0; j < n; ++j) {
          float* sj = st + static_cast<size_t>(j) * rp + rc;
          const V kp = Isa::Set1(static_cast<float>(pr.first_pos + j));
          Isa::Store(sj, Isa::SelectLt(qv, kp, neg_inf, Isa::Load(sj)));
        }
      }
      // Online softmax, one lane per row.
      V mx = neg_inf;
      for (j = 0; j < n; ++j) mx = Isa::Max(mx, Isa::Load(st + static_cast<size_t>(j) * rp + rc));
      const V m_old = Isa::Load(mrow + rc);
      const V m_new = Isa::Max(m_old, mx);
      const V m_safe = Isa::Max(m_new, Isa::Set1(-FLT_MAX));  // rows with nothing visible yet
      const V alpha = Isa::Exp(Isa::Sub(m_old, m_safe));
      V lsum = Isa::Zero();
      for (j = 0; j < n; ++j) {
        float* sj = st + static_cast<size_t>(j) * rp + rc;
        const V e = Isa::Exp(Isa::Sub(Isa::Load(sj), m_safe));
        Isa::Store(sj, e);
        lsum = Isa::Add(lsum, e);
      }
      Isa::Store(lrow + rc, Isa::Fma(Isa::Load(lrow + rc), alpha, lsum));
      Isa::Store(mrow + rc, m_new);
      // ot[d][rc..] = ot * alpha + sum_j v[j][d] * p[j][rc..], four d at a time.
      int d = 0;
      for (; d + 4 <= d_dim; d += 4) {
        float* o0 = ot + static_cast<size_t>(d) * rp + rc;
        V a0 = Isa::Mul(Isa::Load(o0), alpha);
        V a1 = Isa::Mul(Isa::Load(o0 + rp), alpha);
        V a2 = Isa::Mul(Isa::Load(o0 + 2 * rp), alpha);
        V a3 = Isa::Mul(Isa::Load(o0 + 3 * rp), alpha);
        for (j = 0; j < n; ++j) {
          const V pv = Isa::Load(st + static_cast<size_t>(j) * rp + rc);
          const float* vj = vf + j * d_dim + d;
          a0 = Isa::Fma(Isa::Set1(vj[0]), pv, a0);
          a1 = Isa::Fma(Isa::Set1(vj[1]), pv, a1);
          a2 = Isa::Fma(Isa::Set1(vj[2]), pv, a2);
          a3 = Isa::Fma(Isa::Set1(vj[3]), pv, a3);
        }
        Isa::Store(o0, a0);
        Isa::Store(o0 + rp, a1);
        Isa::Store(o0 + 2 * rp, a2);
        Isa::Store(o0 + 3 * rp, a3);
      }
      for (; d < d_dim; ++d) {
        float* o0 = ot + static_cast<size_t>(d) * rp + rc;
        V a0 = Isa::Mul(Isa::Load(o0), alpha);
        for (j = 0; j < n; ++j) {
          a0 = Isa::Fma(Isa::Set1(vf[j * d_dim + d]),
                        Isa::Load(st + static_cast<size_t>(j) * rp + rc), a0);
        }
        Isa::Store(o0, a0);
      }
    }
  }
  for (int r = 0; r < rows; ++r) {
    out.m[r] = mrow[r];
    out.l[r] = lrow[r];
    float* orow = out.o + static_cast<size_t>(r) * d_dim;
    for (int d = 0; d < d_dim; ++d) orow[d] = ot[static_cast<size_t>(d) * rp + r];
  }
}

template <class Isa>
void Attend(const AttnProblem& pb, const AttnItem& it, const AttnPartial& out) {
  const int rows = static_cast<int>(it.t_end - it.t_begin) * pb.group;
  const int many = Isa::kW > 1 ? 2 * Isa::kW : 8;
  if (rows >= many) {
    AttendManyRows<Isa>(pb, it, out);
  } else {
    AttendFewRows<Isa>(pb, it, out);
  }
}

template <class Isa>
const OpsTable& MakeTable() {
  static const OpsTable table = {&RmsNorm<Isa>, &SwiGlu<Isa>, &Add<Isa>,
                                 &Softmax<Isa>, &ToF16<Isa>,  &Attend<Isa>};
  return table;
}

}  // namespace kvtier::kernels::internal::impl
