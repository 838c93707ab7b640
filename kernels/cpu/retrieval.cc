// kernels/cpu/retrieval.cc — page digests, scoring, top-k and page-list assembly for sparse
// attention. The per-page vector work (digest updates, bounds) is in internal/retrieval_impl.h,
// one instantiation per SIMD level, like the normalisation (a vector exp); top-k and
// assembly are scalar.
#include "kernels/cpu/retrieval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "base/status.h"
#include "kernels/cpu/internal/ops_level.h"
#include "kernels/cpu/internal/retrieval_table.h"
#include "kernels/fp16.h"

namespace kvtier::kernels {
namespace internal {

const RetrievalTable& CurrentRetrievalTable() {
  switch (CurrentOpsLevel()) {
    case OpsLevel::kAvx512:
      return Avx512RetrievalTable();
    case OpsLevel::kAvx2:
      return Avx2RetrievalTable();
    case OpsLevel::kScalar:
      break;
  }
  return ScalarRetrievalTable();
}

}  // namespace internal

namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr uint16_t kF16PosInf = 0x7C00;
constexpr uint16_t kF16NegInf = 0xFC00;
// Query tokens scored together: bounds scratch is n_heads * kTokenChunk * n_cand floats.
constexpr int64_t kTokenChunk = 16;
// Candidate pages per thread-pool work range.
constexpr int64_t kPagesPerRange = 32;

// The reference scoring for the benchmarks (kExact), from the page's keys themselves (scalar;
// it reads every key, as dense attention does): SketchLse over all the dimensions.
void KeysLse(const KvPool& pool, const PageRef* pages, int n_pages, int kv_head, const float* q,
             int n_rows, float* out, int64_t out_stride) {
  const int d_dim = pool.head_dim;
  std::vector<float> k(static_cast<size_t>(pool.page_tokens) * d_dim);
  std::vector<float> logit(static_cast<size_t>(pool.page_tokens));
  for (int i = 0; i < n_pages; ++i) {
    const int n = std::min(pages[i].n_tokens, pool.page_tokens);
    const uint16_t* src =
        pool.K(pages[i].page) + static_cast<size_t>(kv_head) * pool.page_tokens * d_dim;
    for (int j = 0; j < n * d_dim; ++j) k[j] = F16ToF32(src[j]);
    for (int r = 0; r < n_rows; ++r) {
      const float* qr = q + static_cast<size_t>(r) * d_dim;
      float mx = kNegInf;
      for (int j = 0; j < n; ++j) {
        float dot = 0;
        for (int d = 0; d < d_dim; ++d) dot += qr[d] * k[j * d_dim + d];
        logit[j] = dot;
        mx = std::max(mx, dot);
      }
      float sum = 0;
      for (int j = 0; j < n; ++j) sum += std::exp(logit[j] - mx);
      out[r * out_stride + i] = n > 0 ? mx + std::log(sum) : kNegInf;
    }
  }
}

}  // namespace

void UpdateDigests(const KvPool& pool, std::span<const PageRef> pages) {
  KVTIER_CHECK(pool.digests != nullptr);
  const internal::RetrievalTable& table = internal::CurrentRetrievalTable();
  const int d_dim = pool.head_dim;
  for (const PageRef& p : pages) {
    const int n = std::min(p.n_tokens, pool.page_tokens);
    for (int g = 0; g < pool.n_kv_heads; ++g) {
      uint16_t* dg = pool.DigestHead(p.page, g);
      if (n <= 0) {
        std::fill(dg, dg + d_dim, kF16PosInf);
        std::fill(dg + d_dim, dg + 2 * d_dim, kF16NegInf);
        std::fill(pool.Centroid(dg), pool.Centroid(dg) + pool.CentroidDims(), uint16_t{0});
        continue;
      }
      const uint16_t* k = pool.K(p.page) + static_cast<size_t>(g) * pool.page_tokens * d_dim;
      for (int j = 0; j < n; ++j) {
        table.digest_update(k + j * d_dim, d_dim, dg, j == 0);
        pool.SetSketch(dg, j, k + j * d_dim);
        pool.UpdateCentroid(dg, j, k + j * d_dim);
      }
    }
  }
}

void ScorePages(const KvPool& pool, std::span<const PageRef> cand, const float* q, int64_t n_tokens,
                int n_heads, float scale, float* scores, ThreadPool& threads, ScoringMode mode) {
  KVTIER_CHECK(pool.digests != nullptr && pool.head_dim <= 256 && pool.page_tokens <= 64);
  KVTIER_CHECK(pool.n_kv_heads > 0 && n_heads % pool.n_kv_heads == 0);
  const int n_cand = static_cast<int>(cand.size());
  const int n_kv = pool.n_kv_heads;
  const int group = n_heads / n_kv;
  const int d_dim = pool.head_dim;
  // kBound maxes log-probabilities (from -inf); the others sum probabilities (from 0).
  const bool sketch = mode != ScoringMode::kBound;
  std::fill(scores, scores + static_cast<size_t>(n_kv) * n_cand, sketch ? 0.0f : kNegInf);
  if (n_cand == 0 || n_tokens <= 0) return;
  const internal::RetrievalTable& table = internal::CurrentRetrievalTable();
  // Per page and query row: the sketch's (or the keys') logsumexp, or the bound.
  const bool centroid = mode == ScoringMode::kSketch;
  const auto page_kernel = [&](const PageRef* pages, int n_pages, int g, const float* qg, int rows,
                               float* out) {
    switch (mode) {
      case ScoringMode::kExact:
        return KeysLse(pool, pages, n_pages, g, qg, rows, out, n_cand);
      case ScoringMode::kBound:
        return table.bounds(pool, pages, n_pages, g, qg, rows, out, n_cand);
      case ScoringMode::kSketch:
      case ScoringMode::kSketchOnly:
        break;
    }
    table.sketch_lse(pool, pages, n_pages, g, qg, rows, out, n_cand, centroid);
  };
  thread_local std::vector<float> qs, bounds;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenChunk) {
    const int nt = static_cast<int>(std::min(kTokenChunk, n_tokens - t0));
    const int rows = nt * group;  // per KV head: row = t * group + gi
    // Scaled queries regrouped by KV head: qs[g][row][d].
    qs.resize(static_cast<size_t>(n_kv) * rows * d_dim);
    for (int t = 0; t < nt; ++t) {
      for (int h = 0; h < n_heads; ++h) {
        const float* src = q + ((t0 + t) * n_heads + h) * d_dim;
        float* dst =
            qs.data() + (static_cast<size_t>(h / group) * rows + t * group + h % group) * d_dim;
        for (int d = 0; d < d_dim; ++d) dst[d] = src[d] * scale;
      }
    }
    bounds.resize(static_cast<size_t>(n_kv) * rows * n_cand);
    const float* qp = qs.data();
    float* bp = bounds.data();
    const PageRef* pages = cand.data();
    threads.ParallelFor(n_cand, kPagesPerRange, [&](int64_t begin, int64_t end) {
      for (int g = 0; g < n_kv; ++g) {
        page_kernel(pages + begin, static_cast<int>(end - begin), g,
                    qp + static_cast<size_t>(g) * rows * d_dim, rows,
                    bp + static_cast<size_t>(g) * rows * n_cand + begin);
      }
    });
    // Per row: (log-)softmax over the candidates, then summed (maxed) into the head's scores.
    const auto fold = sketch ? table.fold_softmax_sum : table.fold_log_softmax;
    for (int g = 0; g < n_kv; ++g) {
      float* sc = scores + static_cast<size_t>(g) * n_cand;
      for (int r = 0; r < rows; ++r) {
        fold(bp + (static_cast<size_t>(g) * rows + r) * n_cand, n_cand, sc);
      }
    }
  }
}

void TopK(const float* scores, int n, int k, int32_t* index) {
  KVTIER_CHECK(k >= 0 && k <= n);
  if (k == 0) return;
  thread_local std::vector<int32_t> order;
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  // A strict total order: higher score first, NaN last, then lower index first.
  auto key = [scores](int32_t i) {
    const float s = scores[i];
    return std::isnan(s) ? kNegInf : s;
  };
  auto before = [&](int32_t a, int32_t b) {
    const float sa = key(a), sb = key(b);
    if (sa != sb) return sa > sb;
    const bool na = std::isnan(scores[a]), nb = std::isnan(scores[b]);
    if (na != nb) return nb;  // a non-NaN -inf ranks above a NaN
    return a < b;
  };
  if (k < n) std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), before);
  std::sort(order.begin(), order.begin() + k);
  std::copy(order.begin(), order.begin() + k, index);
}

SelectShape ShapeSelection(int n_pages, int n_sink, int n_recent, int k_pages) {
  SelectShape s;
  const int n = std::max(n_pages, 0);
  s.sink = std::clamp(n_sink, 0, n);
  s.recent = std::clamp(n_recent, 0, n - s.sink);
  s.cand = n - s.sink - s.recent;
  s.k = std::clamp(k_pages, 0, s.cand);
  s.k_max = s.k;
  return s;
}

SelectShape SelectPages(const KvPool& pool, std::span<const PageRef> pages, int n_sink,
                        int n_recent, int k_pages, const float* q, int64_t n_tokens, int n_heads,
                        float scale, std::vector<PageRef>* selected, ThreadPool& threads,
                        SelectProfile* profile, ScoringMode mode, BudgetSplit split) {
  const int n_pages = static_cast<int>(pages.size());
  SelectShape s = ShapeSelection(n_pages, n_sink, n_recent, k_pages);
  const int n_kv = pool.n_kv_heads;
  thread_local std::vector<float> scores;
  thread_local std::vector<int32_t> index;
  thread_local std::vector<uint8_t> chosen;  // [n_kv][cand]
  const bool shared = split == BudgetSplit::kShared && !s.all();
  Clock::time_point t0 = Clock::now();
  if (shared) {
    // Shares over every page, so that they compare across heads; the candidates' are kept.
    scores.resize(static_cast<size_t>(n_kv) * n_pages);
    ScorePages(pool, pages, q, n_tokens, n_heads, scale, scores.data(), threads, mode);
    for (int g = 0; g < n_kv; ++g) {
      std::copy_n(scores.begin() + static_cast<size_t>(g) * n_pages + s.sink, s.cand,
                  scores.begin() + static_cast<size_t>(g) * s.cand);
    }
  } else if (!s.all()) {
    scores.resize(static_cast<size_t>(n_kv) * s.cand);
    ScorePages(pool, pages.subspan(s.sink, s.cand), q, n_tokens, n_heads, scale, scores.data(),
               threads, mode);
  }
  if (profile != nullptr) profile->score_ms = MsSince(t0);
  t0 = Clock::now();
  // chosen[g * cand + i]: candidate i is in head g's list.
  chosen.assign(static_cast<size_t>(n_kv) * s.cand, s.all() ? 1 : 0);
  if (shared) {
    index.resize(static_cast<size_t>(n_kv) * s.k);
    TopK(scores.data(), n_kv * s.cand, n_kv * s.k, index.data());
    for (const int32_t i : index) chosen[i] = 1;
    s.k_max = 0;
    for (int g = 0; g < n_kv; ++g) {
      const uint8_t* c = chosen.data() + static_cast<size_t>(g) * s.cand;
      s.k_max = std::max(s.k_max, static_cast<int>(std::count(c, c + s.cand, uint8_t{1})));
    }
  } else if (!s.all()) {
    index.resize(static_cast<size_t>(s.k));
    for (int g = 0; g < n_kv; ++g) {
      TopK(scores.data() + static_cast<size_t>(g) * s.cand, s.cand, s.k, index.data());
      for (const int32_t i : index) chosen[static_cast<size_t>(g) * s.cand + i] = 1;
    }
  }
  const int n_sel = s.selected();
  selected->resize(static_cast<size_t>(n_kv) * n_sel);
  s.attended = 0;
  for (int g = 0; g < n_kv; ++g) {
    PageRef* out = selected->data() + static_cast<size_t>(g) * n_sel;
    int w = 0;
    for (int i = 0; i < s.sink; ++i) out[w++] = pages[i];
    const uint8_t* c = chosen.data() + static_cast<size_t>(g) * s.cand;
    for (int i = 0; i < s.cand; ++i) {
      if (c[i]) out[w++] = pages[s.sink + i];
    }
    for (int i = n_pages - s.recent; i < n_pages; ++i) out[w++] = pages[i];
    s.attended += w;
    const int32_t pad_page = w > 0 ? out[0].page : (n_pages > 0 ? pages[0].page : 0);
    for (; w < n_sel; ++w) out[w] = PageRef{pad_page, std::numeric_limits<int32_t>::max(), 0};
  }
  if (profile != nullptr) profile->select_ms = MsSince(t0);
  return s;
}

}  // namespace kvtier::kernels
