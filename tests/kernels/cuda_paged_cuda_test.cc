// The kvtier_cuda ops added for the CUDA forward pass — f16 products, embedding, argmax, KV
// writes, prefill attention, digests, page scoring, top-k, sparse decode — against the CPU ops
// (or, where the CPU backend has no such op, a double-precision reference written here), on
// fresh random inputs with normalised error bounds. Labelled `cuda` by its file name; skips
// itself when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/cuda_blas.h"
#include "kernels/cuda/cuda_ops.h"
#include "tests/support/cuda_device_buffer.h"
#include "kernels/cuda/cuda_paged.h"
#include "kernels/dtype.h"
#include "kernels/fp16.h"

namespace kvtier::kernels::cuda {
namespace {

#if KVTIER_HAVE_CUDA

std::vector<float> NormalVec(size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ||got - want|| / ||want|| (ggml test-backend-ops' normalised error); NaN anywhere -> inf.
double NormError(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return std::numeric_limits<double>::infinity();
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

using kvtier::testing::DeviceBuffer;


#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const Status _s = (expr);                               \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString(); \
  } while (0)

class CudaPagedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device available; skipping CUDA tests";
  }
};

// A host weight matrix of `type` holding random values, and its dequantized copy.
struct HostWeight {
  std::vector<uint8_t> bytes;
  WeightView view;
  std::vector<double> dense;  // [rows][cols]
};

HostWeight MakeWeight(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  HostWeight w;
  w.view.type = type;
  w.view.rows = rows;
  w.view.cols = cols;
  w.view.row_bytes = RowBytes(type, cols);
  w.bytes.resize(rows * w.view.row_bytes);
  std::vector<float> row(cols);
  w.dense.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    auto v = NormalVec(cols, rng);
    QuantizeRow(type, v.data(), w.bytes.data() + r * w.view.row_bytes, cols);
    DequantizeRow(type, w.bytes.data() + r * w.view.row_bytes, row.data(), cols);
    for (int64_t c = 0; c < cols; ++c) w.dense[r * cols + c] = row[c];
  }
  w.view.data = w.bytes.data();
  return w;
}

TEST_F(CudaPagedTest, GemmOfUploadedWeightsMatchesReference) {
  auto blas = CudaBlas::Create();
  ASSERT_TRUE(blas.ok()) << blas.status().ToString();
  std::mt19937 rng(101);
  const DType types[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                         DType::kQ4_0, DType::kQ4_1, DType::kQ6_K, DType::kQ4_K};
  for (DType type : types) {
    for (int64_t n_tokens : {1, 7, 64}) {
      const int64_t rows = 96, cols = 512;
      HostWeight w = MakeWeight(type, rows, cols, rng);
      DeviceBuffer dw(WeightF16Bytes(w.view));
      ASSERT_OK(CudaUploadWeightF16(w.view, dw.get<uint16_t>()));
      auto x = NormalVec(n_tokens * cols, rng);
      auto y0 = NormalVec(n_tokens * rows, rng);
      DeviceBuffer dx(x), dx16(x.size() * 2), dy(y0);
      ASSERT_OK(CudaF32ToF16(dx.get<float>(), x.size(), dx16.get<uint16_t>(), nullptr));
      // beta = 1: y = y0 + W x.
      ASSERT_OK((*blas)->Gemm(dw.get<uint16_t>(), rows, cols, dx16.get<uint16_t>(), n_tokens, 1.0f,
                              dy.get<float>(), nullptr));
      std::vector<double> want(n_tokens * rows);
      for (int64_t t = 0; t < n_tokens; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          double acc = y0[t * rows + r];
          for (int64_t c = 0; c < cols; ++c) acc += w.dense[r * cols + c] * x[t * cols + c];
          want[t * rows + r] = acc;
        }
      }
      // f16 rounding of weights and activations: ~2^-11 relative per element.
      EXPECT_LT(NormError(dy.ToHost<float>(), want), 2e-3)
          << GetDTypeInfo(type).name << " n_tokens " << n_tokens;
    }
  }
}

TEST_F(CudaPagedTest, EmbeddingMatchesGetRow) {
  std::mt19937 rng(102);
  const int64_t vocab = 300, dim = 576;
  HostWeight w = MakeWeight(DType::kQ8_0, vocab, dim, rng);
  DeviceBuffer table(WeightF16Bytes(w.view));
  ASSERT_OK(CudaUploadWeightF16(w.view, table.get<uint16_t>()));
  std::vector<int32_t> tokens = {0, 299, 17, 17, 150};
  DeviceBuffer dtok(tokens), dout(tokens.size() * dim * sizeof(float));
  ASSERT_OK(CudaEmbedding(table.get<uint16_t>(), dim, dtok.get<int32_t>(), tokens.size(),
                          dout.get<float>(), nullptr));
  std::vector<double> want;
  std::vector<float> row(dim);
  for (int32_t t : tokens) {
    GetRow(w.view, t, row.data());
    want.insert(want.end(), row.begin(), row.end());
  }
  EXPECT_LT(NormError(dout.ToHost<float>(), want), 1e-3);
}

TEST_F(CudaPagedTest, ArgmaxMatchesHostWithTies) {
  std::mt19937 rng(103);
  const int64_t rows = 4, n = 49152;
  auto x = NormalVec(rows * n, rng);
  x[0 * n + 5] = 10.0f;  // row 0: a tie between 5 and 40000 -> 5
  x[0 * n + 40000] = 10.0f;
  x[1 * n + n - 1] = 100.0f;                               // row 1: the last element
  x[2 * n + 3] = std::numeric_limits<float>::quiet_NaN();  // row 2: a NaN is never chosen
  DeviceBuffer dx(x), dout(rows * sizeof(int32_t));
  ASSERT_OK(CudaArgmax(dx.get<float>(), rows, n, dout.get<int32_t>(), nullptr));
  const auto got = dout.ToHost<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[r * n + i];
      if (!std::isnan(v) && (best < 0 || v > x[r * n + best])) best = i;
    }
    EXPECT_EQ(got[r], best) << "row " << r;
  }
  EXPECT_EQ(got[0], 5);
  EXPECT_EQ(got[1], n - 1);
}

// A pool of random pages with a shuffled page table, as the forward pass sees it.
struct PagedSetup {
  KvPool pool;
  std::vector<uint16_t> storage;
  std::vector<int32_t> table;  // logical page -> pool page
  std::vector<PageRef> pages;  // position order
  int n_ctx = 0;

  PagedSetup(int n_kv_heads, int head_dim, int n_ctx_tokens, std::mt19937& rng) {
    n_ctx = n_ctx_tokens;
    pool.page_tokens = 16;
    pool.n_kv_heads = n_kv_heads;
    pool.head_dim = head_dim;
    const int n_pages = (n_ctx + 15) / 16;
    const int pool_pages = n_pages + 3;
    storage.assign(pool_pages * pool.PageBytes() / 2, 0);
    pool.base = storage.data();
    std::vector<int32_t> order(pool_pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    table.assign(order.begin(), order.begin() + n_pages);
    for (int p = 0; p < n_pages; ++p) {
      pages.push_back({table[p], p * 16, std::min(16, n_ctx - p * 16)});
    }
    std::vector<PageRef> slots(n_ctx);
    for (int i = 0; i < n_ctx; ++i) slots[i] = {table[i / 16], i % 16, 1};
    const size_t row = static_cast<size_t>(n_kv_heads) * head_dim;
    auto k = NormalVec(n_ctx * row, rng);
    auto v = NormalVec(n_ctx * row, rng);
    // A few keys far out, so page digests differ a lot and top-k has something to find.
    for (size_t i = 0; i < k.size(); i += 997) k[i] *= 6.0f;
    WriteKv(pool, slots, k.data(), v.data(), n_ctx);
  }
};

TEST_F(CudaPagedTest, WriteKvMatchesCpuBitForBit) {
  std::mt19937 rng(104);
  const int n_kv = 3, hd = 64, n_past = 21, n_tokens = 40;
  PagedSetup s(n_kv, hd, n_past + n_tokens, rng);
  const size_t row = static_cast<size_t>(n_kv) * hd;
  auto k = NormalVec(n_tokens * row, rng);
  auto v = NormalVec(n_tokens * row, rng);
  std::vector<int32_t> positions(n_tokens);
  std::vector<PageRef> slots(n_tokens);
  for (int t = 0; t < n_tokens; ++t) {
    positions[t] = n_past + t;
    slots[t] = {s.table[positions[t] / 16], positions[t] % 16, 1};
  }
  DeviceBuffer dpool(s.storage), dtable(s.table), dpos(positions), dk(k), dv(v);
  WriteKv(s.pool, slots, k.data(), v.data(), n_tokens);
  KvPool dev = s.pool;
  dev.base = dpool.get<uint16_t>();
  ASSERT_OK(CudaWriteKv(dev, dtable.get<int32_t>(), dpos.get<int32_t>(), dk.get<float>(),
                        dv.get<float>(), n_tokens, nullptr));
  EXPECT_TRUE(dpool.ToHost<uint16_t>() == s.storage);
}

struct PrefillCase {
  int n_heads, n_kv_heads, head_dim, n_past, n_tokens;
};

TEST_F(CudaPagedTest, PrefillAttentionMatchesCpu) {
  // head_dim 64 and 128 run on tensor cores (Q and P rounded to f16: a looser bound), 256 and 32
  // on the float kernel; 500 + 700 spans many key tiles and row blocks.
  const PrefillCase cases[] = {{9, 3, 64, 0, 37},  {9, 3, 64, 100, 300}, {8, 2, 128, 0, 200},
                               {4, 4, 256, 5, 40}, {9, 3, 64, 0, 1},     {6, 1, 32, 33, 70},
                               {9, 3, 64, 500, 700}, {16, 4, 128, 20, 333}};
  for (const PrefillCase& c : cases) {
    std::mt19937 rng(200 + c.n_tokens + c.head_dim);
    PagedSetup s(c.n_kv_heads, c.head_dim, c.n_past + c.n_tokens, rng);
    auto q = NormalVec(static_cast<size_t>(c.n_tokens) * c.n_heads * c.head_dim, rng, 2.0f);
    std::vector<int32_t> q_pos(c.n_tokens);
    for (int t = 0; t < c.n_tokens; ++t) q_pos[t] = c.n_past + t;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    std::vector<float> want(q.size());
    ThreadPool threads(2);
    PagedAttention(s.pool, s.pages, q.data(), q_pos.data(), c.n_tokens, c.n_heads, scale,
                   want.data(), threads);
    DeviceBuffer dpool(s.storage), dpages(s.pages), dq(q), dpos(q_pos),
        dout(q.size() * sizeof(float));
    KvPool dev = s.pool;
    dev.base = dpool.get<uint16_t>();
    ASSERT_OK(CudaPagedAttentionPrefill(dev, dpages.get<PageRef>(), s.pages.size(), dq.get<float>(),
                                        dpos.get<int32_t>(), c.n_tokens, c.n_heads, scale,
                                        dout.get<float>(), nullptr));
    const bool tensor_cores = c.head_dim == 64 || c.head_dim == 128;
    const double err = NormError(dout.ToHost<float>(), ToDouble(want));
    EXPECT_LT(err, tensor_cores ? 3e-3 : 1e-5)
        << "heads " << c.n_heads << "/" << c.n_kv_heads << " dim " << c.head_dim << " past "
        << c.n_past << " tokens " << c.n_tokens;
    std::printf("prefill heads %d/%d dim %d past %d tokens %d: error %.2e\n", c.n_heads,
                c.n_kv_heads, c.head_dim, c.n_past, c.n_tokens, err);
  }
}

// Host digest of one page and KV head: min then max of the keys, per dimension.
std::vector<float> HostDigest(const KvPool& pool, const PageRef& p, int g) {
  std::vector<float> d(2 * pool.head_dim);
  for (int i = 0; i < pool.head_dim; ++i) {
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < p.n_tokens; ++j) {
      const float x = F16ToF32(
          pool.K(p.page)[(static_cast<size_t>(g) * pool.page_tokens + j) * pool.head_dim + i]);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    d[i] = lo;
    d[pool.head_dim + i] = hi;
  }
  return d;
}

TEST_F(CudaPagedTest, DigestsAreExactMinMax) {
  std::mt19937 rng(105);
  PagedSetup s(3, 64, 16 * 20 + 5, rng);
  const size_t pool_pages = s.storage.size() * 2 / s.pool.PageBytes();
  DeviceBuffer dpool(s.storage), dpages(s.pages),
      ddig(pool_pages * DigestHalfs(s.pool) * sizeof(uint16_t));
  KvPool dev = s.pool;
  dev.base = dpool.get<uint16_t>();
  ASSERT_OK(
      CudaUpdateDigests(dev, dpages.get<PageRef>(), s.pages.size(), ddig.get<uint16_t>(), nullptr));
  const auto dig = ddig.ToHost<uint16_t>();
  for (const PageRef& p : s.pages) {
    for (int g = 0; g < 3; ++g) {
      const auto want = HostDigest(s.pool, p, g);
      for (int i = 0; i < 128; ++i) {
        ASSERT_EQ(F16ToF32(dig[(static_cast<size_t>(p.page) * 3 + g) * 128 + i]), want[i])
            << "page " << p.page << " head " << g << " i " << i;
      }
    }
  }
}

// Reference page scores (see cuda_paged.h) in double: [n_kv][n_cand].
std::vector<double> ReferenceScores(const KvPool& pool, const std::vector<PageRef>& cand,
                                    const std::vector<float>& q, int n_heads, float scale) {
  const int group = n_heads / pool.n_kv_heads, hd = pool.head_dim;
  const size_t n = cand.size();
  std::vector<double> scores(pool.n_kv_heads * n, -INFINITY);
  for (int h = 0; h < n_heads; ++h) {
    const int g = h / group;
    std::vector<double> b(n);
    double mx = -INFINITY;
    for (size_t i = 0; i < n; ++i) {
      const auto d = HostDigest(pool, cand[i], g);
      double sum = 0;
      for (int k = 0; k < hd; ++k) {
        const double qk = q[h * hd + k];
        sum += std::max(qk * d[k], qk * d[hd + k]);
      }
      b[i] = scale * sum;
      mx = std::max(mx, b[i]);
    }
    double se = 0;
    for (double x : b) se += std::exp(x - mx);
    const double lse = mx + std::log(se);
    for (size_t i = 0; i < n; ++i) scores[g * n + i] = std::max(scores[g * n + i], b[i] - lse);
  }
  return scores;
}

void ScorePagesCase(int n_heads, int n_kv, int hd, int n_pages, std::mt19937& rng) {
  PagedSetup s(n_kv, hd, 16 * n_pages, rng);
  const size_t pool_pages = s.storage.size() * 2 / s.pool.PageBytes();
  DeviceBuffer dpool(s.storage), dpages(s.pages),
      ddig(pool_pages * DigestHalfs(s.pool) * sizeof(uint16_t));
  KvPool dev = s.pool;
  dev.base = dpool.get<uint16_t>();
  ASSERT_OK(
      CudaUpdateDigests(dev, dpages.get<PageRef>(), s.pages.size(), ddig.get<uint16_t>(), nullptr));
  auto q = NormalVec(n_heads * hd, rng);
  const float scale = 0.125f;
  const int n = static_cast<int>(s.pages.size());
  DeviceBuffer dq(q), dscores(n_kv * n * sizeof(float)),
      dws(CudaScorePagesWorkspaceBytes(n_heads, n));
  ASSERT_OK(CudaScorePages(dev, ddig.get<uint16_t>(), dpages.get<PageRef>(), n, dq.get<float>(),
                           n_heads, scale, dscores.get<float>(), dws.get<void>(), nullptr));
  const auto want = ReferenceScores(s.pool, s.pages, q, n_heads, scale);
  EXPECT_LT(NormError(dscores.ToHost<float>(), want), 1e-5);
}

TEST_F(CudaPagedTest, ScorePagesMatchesReference) {
  // 300 pages: two blocks of the bound kernel; 3000 at head_dim 128, group 4: twelve.
  for (const auto [n_heads, n_kv, hd, n_pages] :
       {std::array{9, 3, 64, 300}, std::array{16, 4, 128, 3000}}) {
    SCOPED_TRACE("pages " + std::to_string(n_pages));
    std::mt19937 rng(106 + n_pages);
    ScorePagesCase(n_heads, n_kv, hd, n_pages, rng);
  }
}

TEST_F(CudaPagedTest, TopKMatchesStableSort) {
  std::mt19937 rng(107);
  // 16384 and up: the two-stage path (per 8192-score tile, then over the tiles' winners),
  // with a short last tile (20000, 70001) and one shorter than k (16434: 50 scores).
  for (int n : {1, 5, 1000, 1024, 1025, 5000, 16384, 16434, 20000, 70001}) {
    for (int k : {1, 3, 100, 108}) {
      if (k > n) continue;
      const int heads = 3;
      auto x = NormalVec(heads * n, rng);
      for (int i = 0; i < heads * n; i += 7) x[i] = 0.5f;  // many ties
      // A run of equal maxima across a tile boundary: ties must still go to the lowest indices.
      if (n > 9000) {
        for (int i = 8192 - 40; i < 8192 + 40; ++i) x[i] = 3.5f;
      }
      DeviceBuffer dx(x), didx(heads * k * sizeof(int32_t)),
          dws(std::max<size_t>(1, CudaTopKWorkspaceBytes(heads, n, k)));
      ASSERT_OK(
          CudaTopK(dx.get<float>(), heads, n, k, didx.get<int32_t>(), dws.get<void>(), nullptr));
      const auto got = didx.ToHost<int32_t>();
      for (int g = 0; g < heads; ++g) {
        std::vector<int32_t> order(n);
        std::iota(order.begin(), order.end(), 0);
        const float* v = x.data() + g * n;
        std::stable_sort(order.begin(), order.end(),
                         [&](int32_t a, int32_t b) { return v[a] > v[b]; });
        std::vector<int32_t> want(order.begin(), order.begin() + k);
        std::sort(want.begin(), want.end());
        EXPECT_EQ(std::vector<int32_t>(got.begin() + g * k, got.begin() + (g + 1) * k), want)
            << "n " << n << " k " << k << " head " << g;
      }
    }
  }
}

TEST_F(CudaPagedTest, SparseDecodeOverSelectedPagesMatchesCpu) {
  std::mt19937 rng(108);
  const int n_heads = 9, n_kv = 3, hd = 64, n_ctx = 16 * 200 + 9;
  PagedSetup s(n_kv, hd, n_ctx, rng);
  const int n_pages = static_cast<int>(s.pages.size());
  const int sink = 4, recent = 16, k = 30;
  const size_t pool_pages = s.storage.size() * 2 / s.pool.PageBytes();
  DeviceBuffer dpool(s.storage), dpages(s.pages),
      ddig(pool_pages * DigestHalfs(s.pool) * sizeof(uint16_t));
  KvPool dev = s.pool;
  dev.base = dpool.get<uint16_t>();
  ASSERT_OK(CudaUpdateDigests(dev, dpages.get<PageRef>(), n_pages, ddig.get<uint16_t>(), nullptr));
  auto q = NormalVec(n_heads * hd, rng);
  const float scale = 0.125f;
  const int n_sel = CudaSelectedPages(n_pages, sink, recent, k);
  ASSERT_EQ(n_sel, sink + k + recent);
  DeviceBuffer dq(q), dsel(n_kv * n_sel * sizeof(PageRef)),
      dws(CudaSelectPagesWorkspaceBytes(n_heads, n_kv, n_pages));
  ASSERT_OK(CudaSelectPages(dev, ddig.get<uint16_t>(), dpages.get<PageRef>(), n_pages, sink, recent,
                            k, dq.get<float>(), n_heads, scale, dsel.get<PageRef>(),
                            dws.get<void>(), nullptr));
  const auto sel = dsel.ToHost<PageRef>();

  // The selection: sinks, then candidates whose reference score is at least that of every
  // candidate left out (up to rounding), in position order, then the recent window.
  const std::vector<PageRef> cand(s.pages.begin() + sink, s.pages.end() - recent);
  const auto scores = ReferenceScores(s.pool, cand, q, n_heads, scale);
  for (int g = 0; g < n_kv; ++g) {
    const PageRef* list = sel.data() + g * n_sel;
    for (int i = 0; i < sink; ++i) {
      EXPECT_EQ(list[i].page, s.pages[i].page);
    }
    for (int i = 0; i < recent; ++i) {
      EXPECT_EQ(list[sink + k + i].page, s.pages[n_pages - recent + i].page);
    }
    std::vector<bool> chosen(cand.size(), false);
    double worst_in = INFINITY;
    for (int i = 0; i < k; ++i) {
      const int idx = list[sink + i].first_pos / 16 - sink;
      ASSERT_GE(idx, 0);
      ASSERT_LT(idx, static_cast<int>(cand.size()));
      if (i > 0) {
        EXPECT_LT(list[sink + i - 1].first_pos, list[sink + i].first_pos);
      }
      chosen[idx] = true;
      worst_in = std::min(worst_in, scores[g * cand.size() + idx]);
    }
    for (size_t i = 0; i < cand.size(); ++i) {
      if (!chosen[i]) {
        EXPECT_LE(scores[g * cand.size() + i], worst_in + 1e-4) << "head " << g;
      }
    }
  }

  // Attention over each KV head's own list against the CPU op over the same list.
  const int32_t q_pos = n_ctx - 1;
  DeviceBuffer dout(q.size() * sizeof(float)),
      dwork(CudaDecodeAttentionWorkspaceBytes(n_heads, hd, n_sel));
  ASSERT_OK(CudaPagedAttentionDecodePerKvHead(dev, dsel.get<PageRef>(), n_sel, dq.get<float>(),
                                              q_pos, n_heads, scale, dout.get<float>(),
                                              dwork.get<void>(), nullptr));
  const auto got = dout.ToHost<float>();
  ThreadPool threads(1);
  std::vector<double> want(q.size());
  const int group = n_heads / n_kv;
  for (int g = 0; g < n_kv; ++g) {
    std::vector<PageRef> list(sel.begin() + g * n_sel, sel.begin() + (g + 1) * n_sel);
    std::vector<float> out(q.size());
    PagedAttention(s.pool, list, q.data(), &q_pos, 1, n_heads, scale, out.data(), threads);
    for (int h = g * group; h < (g + 1) * group; ++h) {
      for (int i = 0; i < hd; ++i) want[h * hd + i] = out[h * hd + i];
    }
  }
  EXPECT_LT(NormError(got, want), 1e-5);
}

TEST_F(CudaPagedTest, LaunchersRejectBadArguments) {
  KvPool pool;
  pool.n_kv_heads = 3;
  pool.head_dim = 64;
  EXPECT_EQ(
      CudaPagedAttentionPrefill(pool, nullptr, 0, nullptr, nullptr, 1, 8, 1.0f, nullptr, nullptr)
          .code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaTopK(nullptr, 1, 5, 6, nullptr, nullptr, nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaTopK(nullptr, 1, 20000, 6, nullptr, nullptr, nullptr).code(),
            StatusCode::kInvalidArgument);  // two-stage without a workspace
  EXPECT_EQ(CudaBuildPageRefs(nullptr, 1, 1, 40, 16, nullptr, 1, nullptr).code(),
            StatusCode::kInvalidArgument);
}

#else  // !KVTIER_HAVE_CUDA

TEST(CudaPagedTest, BuiltWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend"; }

#endif

}  // namespace
}  // namespace kvtier::kernels::cuda
