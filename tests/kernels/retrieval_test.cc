// Tests of the retrieval attention kernels (kernels/cpu/retrieval.h) and of
// PagedAttentionPerKvHead against naive double-precision references, at every SIMD level the
// machine has.
#include "kernels/cpu/retrieval.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/internal/ops_level.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/fp16.h"

namespace kvtier::kernels {
namespace {

using internal::OpsLevel;

// A pool of n_pages pages with digests, filled by WriteKv with random keys (heads get
// different means so pages differ), holding positions [0, n_tokens).
struct KvSetup {
  int page_tokens = 16, n_kv = 3, head_dim = 64, n_heads = 9;
  int n_tokens = 0;
  std::vector<uint16_t> data, digests;
  KvPool pool;
  std::vector<PageRef> pages;  // the sequence, in position order

  KvSetup(int tokens, int dim, std::mt19937& rng, bool shuffle_pages = true) {
    head_dim = dim;
    n_tokens = tokens;
    const int n_pages = (tokens + page_tokens - 1) / page_tokens;
    pool.page_tokens = page_tokens;
    pool.n_kv_heads = n_kv;
    pool.head_dim = head_dim;
    data.assign((n_pages + 3) * pool.PageBytes() / 2, 0);
    digests.assign((n_pages + 3) * pool.DigestHalfs(), 0);
    pool.base = data.data();
    pool.digests = digests.data();
    std::vector<int32_t> ids(n_pages);
    std::iota(ids.begin(), ids.end(), 2);  // pool pages 2.. (0 and 1 stay unused)
    if (shuffle_pages) std::shuffle(ids.begin(), ids.end(), rng);
    for (int p = 0; p < n_pages; ++p) {
      pages.push_back({ids[p], p * page_tokens, std::min(page_tokens, tokens - p * page_tokens)});
    }
    const int row = n_kv * head_dim;
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> k(static_cast<size_t>(tokens) * row), v(k.size());
    for (int t = 0; t < tokens; ++t) {
      const float bump = (t / page_tokens) % 7 == 3 ? 2.0f : 0.0f;  // some pages stand out
      for (int i = 0; i < row; ++i) {
        k[t * row + i] = nd(rng) + (i % 5 == 0 ? bump : 0.0f);
        v[t * row + i] = nd(rng);
      }
    }
    std::vector<PageRef> slots(tokens);
    for (int t = 0; t < tokens; ++t) slots[t] = {ids[t / page_tokens], t % page_tokens, 1};
    // In two calls, so that a page is widened across WriteKv calls too.
    const int half = tokens / 2 + 5;
    WriteKv(pool, std::span(slots).first(half), k.data(), v.data(), half);
    WriteKv(pool, std::span(slots).subspan(half), k.data() + half * row, v.data() + half * row,
            tokens - half);
  }

  double Key(const PageRef& p, int g, int j, int d) const {
    return F16ToF32(pool.K(p.page)[(static_cast<size_t>(g) * page_tokens + j) * head_dim + d]);
  }
  double Val(const PageRef& p, int g, int j, int d) const {
    return F16ToF32(pool.V(p.page)[(static_cast<size_t>(g) * page_tokens + j) * head_dim + d]);
  }
};

std::vector<float> NormalVec(size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// The scores of retrieval.h computed in double from the keys themselves (not the digests).
std::vector<double> ReferenceScores(const KvSetup& s, std::span<const PageRef> cand,
                                    const std::vector<float>& q, int n_tokens, float scale,
                                    ScoringMode mode = ScoringMode::kSketch) {
  const int n = static_cast<int>(cand.size());
  const int group = s.n_heads / s.n_kv;
  const bool sketch = mode != ScoringMode::kBound;
  const int sd = s.head_dim / 4;
  std::vector<double> out(static_cast<size_t>(s.n_kv) * n, sketch ? 0.0 : -INFINITY);
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < s.n_heads; ++h) {
      const int g = h / group;
      const float* qh = q.data() + (static_cast<size_t>(t) * s.n_heads + h) * s.head_dim;
      std::vector<double> b(n);
      for (int i = 0; i < n; ++i) {
        if (sketch) {  // logsumexp of the page's logits over its last sd dimensions
          std::vector<double> logit;
          for (int j = 0; j < cand[i].n_tokens; ++j) {
            double dot = 0.0;
            for (int d = s.head_dim - sd; d < s.head_dim; ++d) dot += qh[d] * s.Key(cand[i], g, j, d);
            logit.push_back(scale * dot);
          }
          const double m = *std::max_element(logit.begin(), logit.end());
          double z = 0.0;
          for (double x : logit) z += std::exp(x - m);
          b[i] = m + std::log(z);
          if (mode == ScoringMode::kSketch) {  // + q . the digest's centroid (checked elsewhere)
            const uint16_t* c = s.pool.Centroid(s.pool.DigestHead(cand[i].page, g));
            for (int d = 0; d < s.head_dim - sd; ++d) b[i] += scale * qh[d] * F16ToF32(c[d]);
          }
          continue;
        }
        double sum = 0.0;
        for (int d = 0; d < s.head_dim; ++d) {
          double mn = INFINITY, mx = -INFINITY;
          for (int j = 0; j < cand[i].n_tokens; ++j) {
            mn = std::min(mn, s.Key(cand[i], g, j, d));
            mx = std::max(mx, s.Key(cand[i], g, j, d));
          }
          sum += std::max(qh[d] * mn, qh[d] * mx);
        }
        b[i] = scale * sum;
      }
      const double mx = *std::max_element(b.begin(), b.end());
      double z = 0.0;
      for (double x : b) z += std::exp(x - mx);
      const double lse = mx + std::log(z);
      for (int i = 0; i < n; ++i) {
        out[g * n + i] = sketch ? out[g * n + i] + std::exp(b[i] - lse)
                                : std::max(out[g * n + i], b[i] - lse);
      }
    }
  }
  return out;
}

// Attention of query token t (at position q_pos) over the given pages of KV head g, in double.
void ReferenceAttention(const KvSetup& s, std::span<const PageRef> pages, const float* q, int h,
                        int g, int32_t q_pos, float scale, double* out) {
  std::vector<double> sc;
  std::vector<const PageRef*> who;
  std::vector<int> slot;
  for (const PageRef& p : pages) {
    for (int j = 0; j < p.n_tokens; ++j) {
      if (p.first_pos + j > q_pos) continue;
      double dot = 0.0;
      for (int d = 0; d < s.head_dim; ++d) dot += q[h * s.head_dim + d] * s.Key(p, g, j, d);
      sc.push_back(dot * scale);
      who.push_back(&p);
      slot.push_back(j);
    }
  }
  std::fill(out, out + s.head_dim, 0.0);
  if (sc.empty()) return;
  const double mx = *std::max_element(sc.begin(), sc.end());
  double z = 0.0;
  for (double& x : sc) z += (x = std::exp(x - mx));
  for (size_t i = 0; i < sc.size(); ++i) {
    for (int d = 0; d < s.head_dim; ++d) out[d] += sc[i] / z * s.Val(*who[i], g, slot[i], d);
  }
}

class RetrievalTest : public ::testing::TestWithParam<OpsLevel> {
 protected:
  void SetUp() override {
    if (internal::SetOpsLevelForTesting(GetParam()) != GetParam()) {
      GTEST_SKIP() << "this CPU cannot run level " << internal::OpsLevelName(GetParam());
    }
  }
  void TearDown() override { internal::SetOpsLevelForTesting(internal::DetectOpsLevel()); }
};

TEST_P(RetrievalTest, WriteKvKeepsExactDigestsAndUpdateDigestsAgrees) {
  std::mt19937 rng(1);
  for (int dim : {64, 40}) {  // 40: a tail after the vector lanes
    KvSetup s(16 * 5 + 7, dim, rng);
    for (const PageRef& p : s.pages) {
      for (int g = 0; g < s.n_kv; ++g) {
        uint16_t* dg = s.pool.DigestHead(p.page, g);
        // The sketch rows are the keys' last dim/4 dimensions, bit for bit.
        const int sd = s.pool.SketchDims();
        for (int j = 0; j < p.n_tokens; ++j) {
          for (int d = 0; d < sd; ++d) {
            const uint16_t key = s.pool.K(p.page)[(static_cast<size_t>(g) * 16 + j) * dim + dim - sd + d];
            ASSERT_EQ(s.pool.Sketch(dg)[d * 16 + j], key) << "page " << p.page << " slot " << j;
          }
        }
        // The centroid is the mean of the other dimensions, to f16 rounding per slot.
        for (int d = 0; d < s.pool.CentroidDims(); ++d) {
          double mean = 0.0, biggest = 0.0;
          for (int j = 0; j < p.n_tokens; ++j) {
            mean += s.Key(p, g, j, d) / p.n_tokens;
            biggest = std::max(biggest, std::abs(s.Key(p, g, j, d)));
          }
          ASSERT_NEAR(F16ToF32(s.pool.Centroid(dg)[d]), mean, 0x1p-9 * biggest)
              << "page " << p.page << " head " << g << " d " << d;
        }
        for (int d = 0; d < dim; ++d) {
          double mn = INFINITY, mx = -INFINITY;
          for (int j = 0; j < p.n_tokens; ++j) {
            mn = std::min(mn, s.Key(p, g, j, d));
            mx = std::max(mx, s.Key(p, g, j, d));
          }
          ASSERT_EQ(F16ToF32(dg[d]), mn) << "page " << p.page << " head " << g << " d " << d;
          ASSERT_EQ(F16ToF32(dg[dim + d]), mx) << "page " << p.page << " head " << g;
        }
      }
    }
    // Recomputing from the keys gives the same bits; an empty page gets (+inf, -inf).
    const std::vector<uint16_t> kept = s.digests;
    std::fill(s.digests.begin(), s.digests.end(), uint16_t{0});
    UpdateDigests(s.pool, s.pages);
    for (const PageRef& p : s.pages) {
      for (size_t i = 0; i < s.pool.DigestHalfs(); ++i) {
        ASSERT_EQ(s.pool.Digest(p.page)[i], kept[p.page * s.pool.DigestHalfs() + i]);
      }
    }
    const PageRef empty{0, 0, 0};
    UpdateDigests(s.pool, std::span(&empty, 1));
    EXPECT_EQ(F16ToF32(s.pool.Digest(0)[0]), INFINITY);
    EXPECT_EQ(F16ToF32(s.pool.Digest(0)[dim]), -INFINITY);
  }
}

TEST_P(RetrievalTest, BoundIsAnUpperBoundOfEveryKeyInThePage) {
  std::mt19937 rng(2);
  KvSetup s(16 * 12, 64, rng);
  const auto q = NormalVec(s.n_heads * s.head_dim, rng, 3.0f);
  // The digest's bound against every key of the page, for every query head.
  for (const PageRef& p : s.pages) {
    for (int h = 0; h < s.n_heads; ++h) {
      const int g = h / 3;
      const uint16_t* dg = s.pool.DigestHead(p.page, g);
      double bound = 0.0;
      for (int d = 0; d < s.head_dim; ++d) {
        const double qd = q[h * s.head_dim + d];
        bound += std::max(qd * F16ToF32(dg[d]), qd * F16ToF32(dg[s.head_dim + d]));
      }
      for (int j = 0; j < p.n_tokens; ++j) {
        double dot = 0.0;
        for (int d = 0; d < s.head_dim; ++d) dot += q[h * s.head_dim + d] * s.Key(p, g, j, d);
        EXPECT_LE(dot, bound + 1e-9);
      }
    }
  }
}

TEST_P(RetrievalTest, ScorePagesMatchesReference) {
  std::mt19937 rng(3);
  for (const ScoringMode mode :
       {ScoringMode::kSketch, ScoringMode::kSketchOnly, ScoringMode::kBound}) {
    const bool sketch = mode != ScoringMode::kBound;
    for (int dim : {64, 40}) {
      KvSetup s(16 * 40 + 9, dim, rng);
      const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
      for (int n_tokens : {1, 3, 20}) {  // 20: more than one token chunk
        const auto q = NormalVec(static_cast<size_t>(n_tokens) * s.n_heads * dim, rng, 2.0f);
        for (int threads_n : {1, 2}) {
          ThreadPool threads(threads_n);
          // The last candidate is the partly filled page.
          const std::span<const PageRef> cand = std::span(s.pages).subspan(2, s.pages.size() - 2);
          std::vector<float> got(s.n_kv * cand.size());
          ScorePages(s.pool, cand, q.data(), n_tokens, s.n_heads, scale, got.data(), threads, mode);
          const auto want = ReferenceScores(s, cand, q, n_tokens, scale, mode);
          double worst = 0.0, biggest = 0.0;
          for (size_t i = 0; i < want.size(); ++i) {
            worst = std::max(worst, std::abs(got[i] - want[i]));
            biggest = std::max(biggest, std::abs(want[i]));
          }
          const std::string where = std::to_string(static_cast<int>(mode)) + " dim " +
                                    std::to_string(dim) + " tokens " + std::to_string(n_tokens) +
                                    " threads " + std::to_string(threads_n);
          EXPECT_LT(worst, 2e-5 * (1 + biggest)) << where;
          const int group = s.n_heads / s.n_kv;
          for (int g = 0; g < s.n_kv; ++g) {
            const auto first = got.begin() + g * cand.size(), last = first + cand.size();
            if (sketch) {
              // Shares of attention: each of the group's n_tokens * group query rows adds a
              // softmax over the candidates, so a head's scores sum to that many.
              double total = 0.0;
              for (auto it = first; it != last; ++it) {
                EXPECT_GE(*it, 0.0f);
                total += *it;
              }
              EXPECT_NEAR(total, n_tokens * group, 1e-3 * n_tokens * group) << where;
            } else {
              // Log shares: at most 0, and each head has one at least -log(n).
              const float best = *std::max_element(first, last);
              EXPECT_LE(best, 1e-6f) << where;
              EXPECT_GE(best, -std::log(static_cast<float>(cand.size())) - 1e-4f) << where;
            }
          }
        }
      }
    }
  }
}

// The forward pass scores pages whose digests are not in the pool (cold pages) through
// KvPool::digest_table: page p's digest wherever digest_table[p] points. Copies of the digests
// in another buffer, in reverse order, reached through the table by logical page index, must
// score exactly as the pool's own digests do.
TEST_P(RetrievalTest, DigestTableScoresLikeThePoolsDigests) {
  std::mt19937 rng(5);
  KvSetup s(16 * 24 + 5, 64, rng);
  const float scale = 1.0f / 8.0f;
  const auto q = NormalVec(static_cast<size_t>(3) * s.n_heads * 64, rng, 2.0f);
  const size_t dh = s.pool.DigestHalfs();
  const int n = static_cast<int>(s.pages.size());
  std::vector<uint16_t> elsewhere(static_cast<size_t>(n) * dh);
  std::vector<uint16_t*> table(n);
  std::vector<PageRef> logical = s.pages;
  for (int p = 0; p < n; ++p) {
    uint16_t* dst = elsewhere.data() + static_cast<size_t>(n - 1 - p) * dh;
    std::copy_n(s.pool.Digest(s.pages[p].page), dh, dst);
    table[p] = dst;
    logical[p].page = p;
  }
  KvPool by_table = s.pool;
  by_table.digest_table = table.data();
  ThreadPool threads(2);
  for (const ScoringMode mode :
       {ScoringMode::kSketch, ScoringMode::kSketchOnly, ScoringMode::kBound}) {
    std::vector<float> want(s.n_kv * n), got(s.n_kv * n);
    ScorePages(s.pool, s.pages, q.data(), 3, s.n_heads, scale, want.data(), threads, mode);
    ScorePages(by_table, logical, q.data(), 3, s.n_heads, scale, got.data(), threads, mode);
    EXPECT_EQ(got, want) << static_cast<int>(mode);
  }
}

TEST(RetrievalTopKTest, MatchesStableSortWithTiesAndNaN) {
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> small(0, 5);  // many ties
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + trial % 37;
    std::vector<float> x(n);
    for (auto& v : x) v = static_cast<float>(small(rng));
    if (trial % 3 == 0) x[trial % n] = std::numeric_limits<float>::quiet_NaN();
    if (trial % 5 == 0) x[(trial / 5) % n] = -INFINITY;
    for (int k = 0; k <= n; ++k) {
      std::vector<int32_t> got(k);
      TopK(x.data(), n, k, got.data());
      std::vector<int32_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      auto rank = [&](int32_t i) {
        return std::isnan(x[i]) ? -2.0 : std::isinf(x[i]) ? -1.0 : x[i];
      };
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return rank(a) > rank(b); });
      std::vector<int32_t> want(order.begin(), order.begin() + k);
      std::sort(want.begin(), want.end());
      ASSERT_EQ(got, want) << "trial " << trial << " k " << k;
    }
  }
}

TEST(RetrievalShapeTest, ClampsToThePageCount) {
  SelectShape s = ShapeSelection(100, 4, 16, 30);
  EXPECT_EQ(s.sink, 4);
  EXPECT_EQ(s.recent, 16);
  EXPECT_EQ(s.cand, 80);
  EXPECT_EQ(s.k, 30);
  EXPECT_EQ(s.selected(), 50);
  EXPECT_FALSE(s.all());
  s = ShapeSelection(10, 4, 16, 30);
  EXPECT_EQ(s.sink, 4);
  EXPECT_EQ(s.recent, 6);
  EXPECT_EQ(s.cand, 0);
  EXPECT_TRUE(s.all());
  EXPECT_EQ(s.selected(), 10);
}

TEST_P(RetrievalTest, SelectPagesTakesSinksRecentAndTheTopCandidates) {
  std::mt19937 rng(5);
  KvSetup s(16 * 60 + 3, 64, rng);
  const float scale = 0.125f;
  const int sink = 4, recent = 16, k = 12;
  for (int n_tokens : {1, 4}) {
    const auto q = NormalVec(static_cast<size_t>(n_tokens) * s.n_heads * s.head_dim, rng, 2.0f);
    ThreadPool threads(2);
    std::vector<PageRef> sel;
    SelectProfile prof;
    const SelectShape shape = SelectPages(s.pool, s.pages, sink, recent, k, q.data(), n_tokens,
                                          s.n_heads, scale, &sel, threads, &prof);
    ASSERT_EQ(shape.selected(), sink + recent + k);
    ASSERT_EQ(sel.size(), static_cast<size_t>(s.n_kv * shape.selected()));
    const std::span<const PageRef> cand = std::span(s.pages).subspan(sink, shape.cand);
    const auto want_scores = ReferenceScores(s, cand, q, n_tokens, scale);
    for (int g = 0; g < s.n_kv; ++g) {
      const PageRef* l = sel.data() + g * shape.selected();
      for (int i = 0; i < sink; ++i) EXPECT_EQ(l[i].page, s.pages[i].page);
      for (int i = 0; i < recent; ++i) {
        EXPECT_EQ(l[sink + k + i].page, s.pages[s.pages.size() - recent + i].page);
      }
      for (int i = 1; i < shape.selected(); ++i) EXPECT_LT(l[i - 1].first_pos, l[i].first_pos);
      // Every chosen candidate scores at least as high (in the reference) as every one left out,
      // up to rounding.
      double worst_in = INFINITY, best_out = -INFINITY;
      std::vector<bool> chosen(shape.cand, false);
      for (int i = 0; i < k; ++i) chosen[l[sink + i].first_pos / 16 - sink] = true;
      for (int i = 0; i < shape.cand; ++i) {
        const double v = want_scores[g * shape.cand + i];
        if (chosen[i])
          worst_in = std::min(worst_in, v);
        else
          best_out = std::max(best_out, v);
      }
      EXPECT_GE(worst_in, best_out - 1e-4) << "kv head " << g;
    }
    // The heads' lists differ (they score against different keys and queries).
    bool differ = false;
    for (int i = 0; i < shape.selected(); ++i) {
      differ |= sel[i].page != sel[shape.selected() + i].page;
    }
    EXPECT_TRUE(differ);
  }
}

// BudgetSplit::kShared: n_kv * k candidates in all, to the best (head, page) scores of any head
// (scores normalised over every page). KV head 0's queries are zero, so its attention is spread
// evenly over the pages, while the others' is peaked: head 0 must get more than k candidates
// and the others fewer. The lists keep sinks and recent pages, are in position order, padded to
// the longest with empty refs, and attention over them equals attention over the unpadded lists.
TEST_P(RetrievalTest, SharedBudgetGoesToTheBestPagesOfAnyHead) {
  std::mt19937 rng(12);
  KvSetup s(16 * 60 + 3, 64, rng);
  const float scale = 0.125f;
  const int sink = 4, recent = 16, k = 12;
  const int group = s.n_heads / s.n_kv;
  ThreadPool threads(2);
  for (int n_tokens : {1, 4}) {
    auto q = NormalVec(static_cast<size_t>(n_tokens) * s.n_heads * s.head_dim, rng, 3.0f);
    for (int t = 0; t < n_tokens; ++t) {
      std::fill_n(q.begin() + static_cast<size_t>(t) * s.n_heads * s.head_dim,
                  group * s.head_dim, 0.0f);
    }
    std::vector<PageRef> sel;
    const SelectShape shape = SelectPages(s.pool, s.pages, sink, recent, k, q.data(), n_tokens,
                                          s.n_heads, scale, &sel, threads, nullptr,
                                          ScoringMode::kSketch, BudgetSplit::kShared);
    ASSERT_EQ(shape.k, k);
    ASSERT_EQ(sel.size(), static_cast<size_t>(s.n_kv * shape.selected()));
    EXPECT_EQ(shape.attended, s.n_kv * (sink + k + recent));
    const auto want = ReferenceScores(s, s.pages, q, n_tokens, scale);  // over every page
    const int n_pages = static_cast<int>(s.pages.size());
    std::vector<int> count(s.n_kv, 0);
    double worst_in = INFINITY, best_out = -INFINITY;
    std::vector<PageRef> unpadded;
    std::vector<std::vector<PageRef>> lists(s.n_kv);
    for (int g = 0; g < s.n_kv; ++g) {
      const PageRef* l = sel.data() + g * shape.selected();
      int real = 0;
      while (real < shape.selected() && l[real].n_tokens > 0) ++real;
      for (int i = real; i < shape.selected(); ++i) {
        EXPECT_EQ(l[i].n_tokens, 0);
        EXPECT_EQ(l[i].first_pos, std::numeric_limits<int32_t>::max());
        EXPECT_EQ(l[i].page, l[0].page);  // no page that is not already in the list
      }
      count[g] = real - sink - recent;
      for (int i = 0; i < sink; ++i) EXPECT_EQ(l[i].page, s.pages[i].page);
      for (int i = 0; i < recent; ++i) {
        EXPECT_EQ(l[real - recent + i].page, s.pages[n_pages - recent + i].page);
      }
      for (int i = 1; i < real; ++i) EXPECT_LT(l[i - 1].first_pos, l[i].first_pos);
      std::vector<bool> chosen(n_pages, false);
      for (int i = sink; i < real - recent; ++i) chosen[l[i].first_pos / 16] = true;
      for (int p = sink; p < n_pages - recent; ++p) {
        const double v = want[g * n_pages + p];
        if (chosen[p])
          worst_in = std::min(worst_in, v);
        else
          best_out = std::max(best_out, v);
      }
      lists[g].assign(l, l + real);
    }
    EXPECT_GE(worst_in, best_out - 1e-4) << "tokens " << n_tokens;
    EXPECT_EQ(count[0] + count[1] + count[2], s.n_kv * k);
    EXPECT_EQ(shape.k_max, *std::max_element(count.begin(), count.end()));
    EXPECT_GT(count[0], k) << "the spread-out head gets more pages";
    EXPECT_LT(std::min(count[1], count[2]), k);

    // Attention over the padded lists = over each head's real list.
    std::vector<int32_t> q_pos(n_tokens);
    for (int t = 0; t < n_tokens; ++t) q_pos[t] = s.n_tokens - n_tokens + t;
    std::vector<float> out(q.size());
    PagedAttentionPerKvHead(s.pool, sel, shape.selected(), q.data(), q_pos.data(), n_tokens,
                            s.n_heads, scale, out.data(), threads);
    double err = 0.0, mag = 0.0;
    std::vector<double> ref(s.head_dim);
    for (int t = 0; t < n_tokens; ++t) {
      for (int h = 0; h < s.n_heads; ++h) {
        ReferenceAttention(s, lists[h / group],
                           q.data() + static_cast<size_t>(t) * s.n_heads * s.head_dim, h,
                           h / group, q_pos[t], scale, ref.data());
        for (int d = 0; d < s.head_dim; ++d) {
          err = std::max(err, std::abs(out[(t * s.n_heads + h) * s.head_dim + d] - ref[d]));
          mag = std::max(mag, std::abs(ref[d]));
        }
      }
    }
    EXPECT_LT(err / mag, 2e-5) << "tokens " << n_tokens;
  }
}

TEST_P(RetrievalTest, PerKvHeadAttentionMatchesReferenceOverEachHeadsList) {
  std::mt19937 rng(6);
  KvSetup s(16 * 30 + 5, 64, rng);
  const float scale = 0.125f;
  const int per_head = 11;
  // Each head gets its own random subset of pages (in position order), always with the last.
  std::vector<PageRef> lists;
  for (int g = 0; g < s.n_kv; ++g) {
    std::vector<int> idx(s.pages.size() - 1);
    std::iota(idx.begin(), idx.end(), 0);
    std::shuffle(idx.begin(), idx.end(), rng);
    idx.resize(per_head - 1);
    idx.push_back(static_cast<int>(s.pages.size()) - 1);
    std::sort(idx.begin(), idx.end());
    for (int i : idx) lists.push_back(s.pages[i]);
  }
  for (int n_tokens : {1, 9}) {  // 9 tokens: the many-rows kernel, with causal masking
    const auto q = NormalVec(static_cast<size_t>(n_tokens) * s.n_heads * s.head_dim, rng);
    std::vector<int32_t> q_pos(n_tokens);
    for (int t = 0; t < n_tokens; ++t) q_pos[t] = s.n_tokens - n_tokens + t;
    for (int threads_n : {1, 2}) {
      ThreadPool threads(threads_n);
      std::vector<float> out(q.size());
      PagedAttentionPerKvHead(s.pool, lists, per_head, q.data(), q_pos.data(), n_tokens, s.n_heads,
                              scale, out.data(), threads);
      double err = 0.0, mag = 0.0;
      std::vector<double> ref(s.head_dim);
      for (int t = 0; t < n_tokens; ++t) {
        for (int h = 0; h < s.n_heads; ++h) {
          const int g = h / 3;
          ReferenceAttention(s, std::span(lists).subspan(g * per_head, per_head),
                             q.data() + static_cast<size_t>(t) * s.n_heads * s.head_dim, h, g,
                             q_pos[t], scale, ref.data());
          for (int d = 0; d < s.head_dim; ++d) {
            err = std::max(err, std::abs(out[(t * s.n_heads + h) * s.head_dim + d] - ref[d]));
            mag = std::max(mag, std::abs(ref[d]));
          }
        }
      }
      EXPECT_LT(err / mag, 2e-5) << "tokens " << n_tokens << " threads " << threads_n;
    }
  }
}

TEST_P(RetrievalTest, SelectingEveryPageEqualsDenseAttention) {
  std::mt19937 rng(7);
  KvSetup s(16 * 20, 64, rng);
  const auto q = NormalVec(s.n_heads * s.head_dim, rng);
  const int32_t pos = s.n_tokens - 1;
  ThreadPool threads(2);
  std::vector<PageRef> sel;
  const SelectShape shape =
      SelectPages(s.pool, s.pages, 4, 16, 1000, q.data(), 1, s.n_heads, 0.125f, &sel, threads);
  ASSERT_TRUE(shape.all());
  std::vector<float> dense(q.size()), sparse(q.size());
  PagedAttention(s.pool, s.pages, q.data(), &pos, 1, s.n_heads, 0.125f, dense.data(), threads);
  PagedAttentionPerKvHead(s.pool, sel, shape.selected(), q.data(), &pos, 1, s.n_heads, 0.125f,
                          sparse.data(), threads);
  EXPECT_EQ(dense, sparse);
}

INSTANTIATE_TEST_SUITE_P(Levels, RetrievalTest,
                         ::testing::Values(OpsLevel::kScalar, OpsLevel::kAvx2, OpsLevel::kAvx512),
                         [](const ::testing::TestParamInfo<OpsLevel>& info) {
                           return std::string(internal::OpsLevelName(info.param));
                         });

}  // namespace
}  // namespace kvtier::kernels
