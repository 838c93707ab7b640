// Tests of the CPU elementwise ops, RoPE, WriteKv and PagedAttention against naive
// double-precision references, at every SIMD level the machine has.
#include "kernels/cpu/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/internal/ops_level.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/fp16.h"

namespace kvtier::kernels {
namespace {

using internal::OpsLevel;

std::vector<float> RandomVec(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> NormalVec(size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// max |got - ref| / max |ref| (ref not all zero).
double NormalizedError(const std::vector<float>& got, const std::vector<double>& ref) {
  double err = 0.0, mag = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - ref[i]));
    mag = std::max(mag, std::abs(ref[i]));
  }
  return mag > 0.0 ? err / mag : err;
}

// Runs each test at one SIMD level; levels the CPU lacks are skipped.
class OpsTest : public ::testing::TestWithParam<OpsLevel> {
 protected:
  void SetUp() override {
    if (internal::SetOpsLevelForTesting(GetParam()) != GetParam()) {
      GTEST_SKIP() << "this CPU cannot run level " << internal::OpsLevelName(GetParam());
    }
  }
  void TearDown() override { internal::SetOpsLevelForTesting(internal::DetectOpsLevel()); }
};

TEST_P(OpsTest, RmsNormMatchesReference) {
  std::mt19937 rng(1);
  for (int64_t dim : {1, 7, 64, 576, 1000}) {
    const int64_t n_tokens = 3;
    auto x = NormalVec(n_tokens * dim, rng, 3.0f);
    auto w = RandomVec(dim, rng, 0.5f, 1.5f);
    std::vector<float> out(x.size());
    RmsNorm(x.data(), w.data(), n_tokens, dim, 1e-5f, out.data());
    std::vector<double> ref(x.size());
    for (int64_t t = 0; t < n_tokens; ++t) {
      double ss = 0.0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[t * dim + i]) * x[t * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int64_t i = 0; i < dim; ++i) ref[t * dim + i] = x[t * dim + i] * inv * w[i];
    }
    EXPECT_LT(NormalizedError(out, ref), 2e-6) << "dim " << dim;
    RmsNorm(x.data(), w.data(), n_tokens, dim, 1e-5f, x.data());  // in place
    EXPECT_EQ(0, std::memcmp(x.data(), out.data(), x.size() * sizeof(float))) << "dim " << dim;
  }
}

TEST_P(OpsTest, RopeMatchesReferenceAtLargePositions) {
  std::mt19937 rng(2);
  const int n_heads = 9, head_dim = 64;
  const std::vector<int32_t> positions = {0, 1, 17, 4095, 8191, 100000, 1000000};
  for (float base : {10000.0f, 100000.0f}) {
    for (float scale : {1.0f, 0.25f}) {
      const int64_t n = static_cast<int64_t>(positions.size());
      auto x = NormalVec(n * n_heads * head_dim, rng);
      std::vector<double> ref(x.size());
      for (int64_t t = 0; t < n; ++t) {
        for (int h = 0; h < n_heads; ++h) {
          for (int i = 0; i < head_dim / 2; ++i) {
            const double a = positions[t] * static_cast<double>(scale) *
                             std::pow(static_cast<double>(base), -2.0 * i / head_dim);
            const size_t o = (t * n_heads + h) * head_dim + 2 * i;
            ref[o] = x[o] * std::cos(a) - x[o + 1] * std::sin(a);
            ref[o + 1] = x[o] * std::sin(a) + x[o + 1] * std::cos(a);
          }
        }
      }
      RopeInPlace(x.data(), n, n_heads, head_dim, positions.data(), base, scale);
      // A float angle recurrence (theta *= theta_scale) is off by ~1e-2 rad at 100000.
      EXPECT_LT(NormalizedError(x, ref), 2e-6) << "base " << base << " scale " << scale;
    }
  }
}

TEST_P(OpsTest, RopeRotatesAdjacentPairs) {
  // Position 1, head_dim 4, base 1: every pair rotates by 1 rad; pairs are (x0,x1), (x2,x3).
  std::vector<float> x = {1.0f, 0.0f, 0.0f, 1.0f};
  const int32_t pos = 1;
  RopeInPlace(x.data(), 1, 1, 4, &pos, 1.0f, 1.0f);
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[2], -std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[3], std::cos(1.0), 1e-6);
}

TEST_P(OpsTest, SwiGluMatchesReference) {
  std::mt19937 rng(3);
  for (int64_t n : {1, 15, 16, 1536, 1543}) {
    auto gate = RandomVec(n, rng, -20.0f, 20.0f);
    if (n > 10) {
      gate[0] = 100.0f;
      gate[1] = -100.0f;
      gate[2] = 0.0f;
      gate[3] = -87.0f;
      gate[4] = 1e-4f;
    }
    auto up = RandomVec(n, rng, -3.0f, 3.0f);
    std::vector<float> out(n);
    SwiGlu(gate.data(), up.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[i];
      const double ref = g / (1.0 + std::exp(-g)) * up[i];
      EXPECT_LE(std::abs(out[i] - ref), 1e-6 * std::abs(ref) + 1e-30)
          << "i " << i << " gate " << g << " got " << out[i] << " ref " << ref;
    }
    SwiGlu(gate.data(), up.data(), n, gate.data());  // out aliases gate
    EXPECT_EQ(0, std::memcmp(gate.data(), out.data(), n * sizeof(float)));
  }
}

TEST_P(OpsTest, AddInPlaceAdds) {
  std::mt19937 rng(4);
  for (int64_t n : {1, 9, 576, 1001}) {
    auto y = RandomVec(n, rng);
    auto x = RandomVec(n, rng);
    auto want = y;
    for (int64_t i = 0; i < n; ++i) want[i] += x[i];
    AddInPlace(y.data(), x.data(), n);
    EXPECT_EQ(y, want);
  }
}

TEST_P(OpsTest, SoftmaxMatchesReferenceIncludingLargeMagnitudes) {
  std::mt19937 rng(5);
  for (int64_t n : {1, 7, 16, 100, 49152}) {
    for (float offset : {0.0f, 3e4f, -3e4f}) {
      auto x = NormalVec(n, rng, 8.0f);
      for (auto& v : x) v += offset;
      if (n > 10) x[3] = -std::numeric_limits<float>::infinity();
      double mx = -1e300;
      for (float v : x) mx = std::max(mx, static_cast<double>(v));
      std::vector<double> ref(n);
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += ref[i] = std::exp(static_cast<double>(x[i]) - mx);
      for (auto& r : ref) r /= sum;
      SoftmaxInPlace(x.data(), n);
      EXPECT_LT(NormalizedError(x, ref), 2e-6) << "n " << n << " offset " << offset;
      const double total = std::accumulate(x.begin(), x.end(), 0.0);
      EXPECT_NEAR(total, 1.0, 1e-5);
    }
  }
}

// ---- KV pages -----------------------------------------------------------------------------

struct TestPool {
  KvPool pool;
  std::vector<uint16_t> storage;
  TestPool(int n_pages, int page_tokens, int n_kv_heads, int head_dim) {
    pool.page_tokens = page_tokens;
    pool.n_kv_heads = n_kv_heads;
    pool.head_dim = head_dim;
    storage.assign(n_pages * pool.PageBytes() / 2, 0xABCD);
    pool.base = storage.data();
  }
};

TEST_P(OpsTest, WriteKvLayoutIsByteExact) {
  std::mt19937 rng(6);
  const int kv_heads = 3, head_dim = 64, page_tokens = 16;
  TestPool tp(4, page_tokens, kv_heads, head_dim);
  const int n_tokens = 20;
  auto k = NormalVec(n_tokens * kv_heads * head_dim, rng, 2.0f);
  auto v = NormalVec(n_tokens * kv_heads * head_dim, rng, 2.0f);
  // Edge values: subnormal halves, overflow to inf, exact ties, signed zero.
  const float edges[] = {1e-6f, 3e-8f, 70000.0f, 65504.0f, -0.0f, 1.0009765625f, 1e-8f, -65520.0f};
  for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); ++i) k[i * 3] = v[i * 5] = edges[i];
  std::vector<PageRef> slots(n_tokens);
  for (int t = 0; t < n_tokens; ++t) {
    slots[t].page = t < 16 ? 2 : 0;  // not in pool order
    slots[t].first_pos = t < 16 ? t : t - 16;
  }
  WriteKv(tp.pool, slots, k.data(), v.data(), n_tokens);
  std::vector<uint16_t> want(tp.storage.size(), 0xABCD);
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < kv_heads; ++h) {
      for (int d = 0; d < head_dim; ++d) {
        const size_t off =
            (static_cast<size_t>(h) * page_tokens + slots[t].first_pos) * head_dim + d;
        const size_t src = (static_cast<size_t>(t) * kv_heads + h) * head_dim + d;
        want[tp.pool.K(slots[t].page) - tp.pool.base + off] = F32ToF16(k[src]);
        want[tp.pool.V(slots[t].page) - tp.pool.base + off] = F32ToF16(v[src]);
      }
    }
  }
  ASSERT_EQ(tp.storage.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(tp.storage[i], want[i]) << "element " << i;
  }
}

// A sequence of `n_ctx` tokens at positions first_pos.. in pages that are shuffled in the pool,
// with the query tokens being the last `n_q` positions (n_q = 1: decode).
struct AttnCase {
  int n_heads = 9;
  int n_kv_heads = 3;
  int head_dim = 64;
  int page_tokens = 16;
  int n_ctx = 100;
  int n_q = 1;
  int first_pos = 0;
  int threads = 1;
};

std::string Describe(const AttnCase& c) {
  return "heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) + " dim " +
         std::to_string(c.head_dim) + " page " + std::to_string(c.page_tokens) + " ctx " +
         std::to_string(c.n_ctx) + " q " + std::to_string(c.n_q) + " threads " +
         std::to_string(c.threads);
}

struct AttnSetup {
  TestPool tp;
  std::vector<PageRef> pages;
  std::vector<float> q;
  std::vector<int32_t> q_pos;
  AttnSetup(const AttnCase& c, std::mt19937& rng)
      : tp((c.n_ctx + c.page_tokens - 1) / c.page_tokens + 3, c.page_tokens, c.n_kv_heads,
           c.head_dim) {
    const int n_pages = (c.n_ctx + c.page_tokens - 1) / c.page_tokens;
    std::vector<int32_t> order(n_pages + 3);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    const int row = c.n_kv_heads * c.head_dim;
    auto k = NormalVec(static_cast<size_t>(c.n_ctx) * row, rng);
    auto v = NormalVec(static_cast<size_t>(c.n_ctx) * row, rng);
    std::vector<PageRef> slots(c.n_ctx);
    for (int p = 0; p < n_pages; ++p) {
      PageRef ref;
      ref.page = order[p];
      ref.first_pos = c.first_pos + p * c.page_tokens;
      ref.n_tokens = std::min(c.page_tokens, c.n_ctx - p * c.page_tokens);
      pages.push_back(ref);
    }
    for (int i = 0; i < c.n_ctx; ++i) {
      slots[i].page = order[i / c.page_tokens];
      slots[i].first_pos = i % c.page_tokens;
    }
    WriteKv(tp.pool, slots, k.data(), v.data(), c.n_ctx);
    q = NormalVec(static_cast<size_t>(c.n_q) * c.n_heads * c.head_dim, rng);
    for (int t = 0; t < c.n_q; ++t) q_pos.push_back(c.first_pos + c.n_ctx - c.n_q + t);
  }
};

// Naive attention in double over the f16 values stored in the pool.
std::vector<double> ReferenceAttention(const AttnCase& c, const AttnSetup& s, float scale) {
  const int group = c.n_heads / c.n_kv_heads;
  const int d_dim = c.head_dim;
  std::vector<double> out(static_cast<size_t>(c.n_q) * c.n_heads * d_dim, 0.0);
  for (int t = 0; t < c.n_q; ++t) {
    for (int h = 0; h < c.n_heads; ++h) {
      const int kvh = h / group;
      const float* qr = s.q.data() + (static_cast<size_t>(t) * c.n_heads + h) * d_dim;
      std::vector<double> scores, weights;
      std::vector<const uint16_t*> vrows;
      for (const PageRef& p : s.pages) {
        for (int j = 0; j < p.n_tokens; ++j) {
          if (p.first_pos + j > s.q_pos[t]) continue;
          const size_t off = (static_cast<size_t>(kvh) * c.page_tokens + j) * d_dim;
          const uint16_t* kr = s.tp.pool.K(p.page) + off;
          double dot = 0.0;
          for (int d = 0; d < d_dim; ++d) dot += static_cast<double>(qr[d]) * F16ToF32(kr[d]);
          scores.push_back(dot * scale);
          vrows.push_back(s.tp.pool.V(p.page) + off);
        }
      }
      if (scores.empty()) continue;
      const double mx = *std::max_element(scores.begin(), scores.end());
      double sum = 0.0;
      for (double sc : scores) sum += std::exp(sc - mx);
      double* o = out.data() + (static_cast<size_t>(t) * c.n_heads + h) * d_dim;
      for (size_t i = 0; i < scores.size(); ++i) {
        const double w = std::exp(scores[i] - mx) / sum;
        for (int d = 0; d < d_dim; ++d) o[d] += w * F16ToF32(vrows[i][d]);
      }
    }
  }
  return out;
}

// Worst over (token, head) rows of max |got - ref| / max |ref| within the row.
double RowNormalizedError(const std::vector<float>& got, const std::vector<double>& ref,
                          int d_dim) {
  double worst = 0.0;
  for (size_t r = 0; r < ref.size() / d_dim; ++r) {
    double err = 0.0, mag = 1e-6;
    for (int d = 0; d < d_dim; ++d) {
      err = std::max(err, std::abs(got[r * d_dim + d] - ref[r * d_dim + d]));
      mag = std::max(mag, std::abs(ref[r * d_dim + d]));
    }
    worst = std::max(worst, err / mag);
  }
  return worst;
}

void CheckAttention(const AttnCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  AttnSetup s(c, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<float> out(s.q.size(), -7.0f);
  ThreadPool pool(c.threads);
  PagedAttention(s.tp.pool, s.pages, s.q.data(), s.q_pos.data(), c.n_q, c.n_heads, scale,
                 out.data(), pool);
  const auto ref = ReferenceAttention(c, s, scale);
  EXPECT_LT(RowNormalizedError(out, ref, c.head_dim), 2e-5) << Describe(c);
  // A second call reuses the scratch buffers and must give the same bits.
  std::vector<float> again(s.q.size(), 0.0f);
  PagedAttention(s.tp.pool, s.pages, s.q.data(), s.q_pos.data(), c.n_q, c.n_heads, scale,
                 again.data(), pool);
  EXPECT_EQ(0, std::memcmp(out.data(), again.data(), out.size() * sizeof(float))) << Describe(c);
}

TEST_P(OpsTest, PagedAttentionDecode) {
  for (int threads : {1, 2}) {
    for (auto [heads, kv_heads] : {std::pair{9, 3}, std::pair{9, 9}, std::pair{8, 2}}) {
      for (int n_ctx : {1, 16, 37, 1000}) {
        AttnCase c;
        c.n_heads = heads;
        c.n_kv_heads = kv_heads;
        c.n_ctx = n_ctx;
        c.threads = threads;
        CheckAttention(c, 100 + n_ctx);
      }
    }
  }
}

TEST_P(OpsTest, PagedAttentionPrefill) {
  for (int threads : {1, 2}) {
    for (auto [heads, kv_heads] : {std::pair{9, 3}, std::pair{9, 9}, std::pair{8, 2}}) {
      // Whole-prompt prefill, and new tokens after a cached context (partial last pages).
      for (auto [n_ctx, n_q] : {std::pair{77, 77}, std::pair{300, 100}, std::pair{40, 5}}) {
        AttnCase c;
        c.n_heads = heads;
        c.n_kv_heads = kv_heads;
        c.n_ctx = n_ctx;
        c.n_q = n_q;
        c.first_pos = 3;
        c.threads = threads;
        CheckAttention(c, 200 + n_ctx);
      }
    }
  }
}

TEST_P(OpsTest, PagedAttentionOddShapes) {
  // head_dim not a multiple of the vector width, small pages, a long cached context.
  for (int threads : {1, 2}) {
    AttnCase c;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 72;
    c.page_tokens = 8;
    c.n_ctx = 203;
    c.n_q = 70;
    c.threads = threads;
    CheckAttention(c, 300);
    c.n_q = 1;
    CheckAttention(c, 301);
  }
}

TEST_P(OpsTest, PagedAttentionMasksFutureKeys) {
  // The key at the last position gets a huge score and a distinct value: every query before
  // it must not see it at all.
  for (int threads : {1, 2}) {
    for (int n_q : {1, 40}) {
      AttnCase c;
      c.n_ctx = 64;
      c.n_q = n_q;
      c.threads = threads;
      std::mt19937 rng(400);
      AttnSetup s(c, rng);
      const PageRef& last = s.pages.back();
      const int j = last.n_tokens - 1;
      for (int h = 0; h < c.n_kv_heads; ++h) {
        for (int d = 0; d < c.head_dim; ++d) {
          const size_t off = (static_cast<size_t>(h) * c.page_tokens + j) * c.head_dim + d;
          s.tp.pool.K(last.page)[off] = F32ToF16(1000.0f);
          s.tp.pool.V(last.page)[off] = F32ToF16(50.0f);
        }
      }
      // Queries one position earlier than the sequence end, so the last key is in the future.
      for (auto& p : s.q_pos) --p;
      for (auto& x : s.q) x = std::abs(x);  // makes q . k_future large
      const float scale = 0.125f;
      std::vector<float> out(s.q.size());
      ThreadPool pool(threads);
      PagedAttention(s.tp.pool, s.pages, s.q.data(), s.q_pos.data(), n_q, c.n_heads, scale,
                     out.data(), pool);
      const auto ref = ReferenceAttention(c, s, scale);
      EXPECT_LT(RowNormalizedError(out, ref, c.head_dim), 2e-5) << Describe(c);
      for (float x : out) ASSERT_LT(std::abs(x), 10.0f) << "future key leaked, " << Describe(c);
    }
  }
}

TEST_P(OpsTest, PagedAttentionWithNothingVisibleWritesZeros) {
  AttnCase c;
  c.n_ctx = 20;
  c.first_pos = 10;
  std::mt19937 rng(500);
  AttnSetup s(c, rng);
  s.q_pos[0] = 5;  // before every key
  std::vector<float> out(s.q.size(), 1.0f);
  ThreadPool pool(2);
  PagedAttention(s.tp.pool, s.pages, s.q.data(), s.q_pos.data(), 1, c.n_heads, 0.125f, out.data(),
                 pool);
  for (float x : out) EXPECT_EQ(x, 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Levels, OpsTest,
                         ::testing::Values(OpsLevel::kScalar, OpsLevel::kAvx2, OpsLevel::kAvx512),
                         [](const ::testing::TestParamInfo<OpsLevel>& info) {
                           return std::string(internal::OpsLevelName(info.param));
                         });

TEST(OpsLevelTest, EnvironmentCanOnlyLowerTheLevel) {
  const OpsLevel hw = internal::DetectOpsLevel();
  setenv("KVTIER_CPU_LEVEL", "scalar", 1);
  EXPECT_EQ(internal::DetectOpsLevel(), OpsLevel::kScalar);
  setenv("KVTIER_CPU_LEVEL", "avx512", 1);
  EXPECT_LE(internal::DetectOpsLevel(), OpsLevel::kAvx512);
  unsetenv("KVTIER_CPU_LEVEL");
  EXPECT_GE(internal::DetectOpsLevel(), hw);
}

}  // namespace
}  // namespace kvtier::kernels
