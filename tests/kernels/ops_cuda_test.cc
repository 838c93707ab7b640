// CUDA ops against the CPU ops (kernels/cpu/ops.h) on random inputs, with normalised error
// bounds. Labelled `cuda` by its file name; skips itself when no GPU is present, and is a
// single skipped test when the build has no CUDA backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/cuda_ops.h"
#include "tests/support/cuda_device_buffer.h"
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

// Worst over rows of max |got - want| / max |want| within the row.
double RowError(const std::vector<float>& got, const std::vector<float>& want, size_t row) {
  double worst = 0.0;
  for (size_t r = 0; r < want.size() / row; ++r) {
    double err = 0.0, mag = 1e-6;
    for (size_t i = r * row; i < (r + 1) * row; ++i) {
      err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
      mag = std::max(mag, std::abs(static_cast<double>(want[i])));
    }
    worst = std::max(worst, err / mag);
  }
  return worst;
}

// A device buffer holding a copy of a host vector; freed on destruction.
using kvtier::testing::DeviceBuffer;


class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device available; skipping CUDA ops tests";
  }
};

TEST_F(CudaOpsTest, RmsNormMatchesCpu) {
  std::mt19937 rng(1);
  for (int64_t dim : {64, 576, 1000}) {
    const int64_t n_tokens = 5;
    auto x = NormalVec(n_tokens * dim, rng, 3.0f);
    auto w = NormalVec(dim, rng);
    std::vector<float> want(x.size());
    RmsNorm(x.data(), w.data(), n_tokens, dim, 1e-5f, want.data());
    DeviceBuffer dx(x), dw(w), dout(x.size() * sizeof(float));
    ASSERT_TRUE(CudaRmsNorm(dx.get<float>(), dw.get<float>(), n_tokens, dim, 1e-5f,
                            dout.get<float>(), nullptr)
                    .ok());
    ASSERT_TRUE(CudaSynchronize(nullptr).ok());
    EXPECT_LT(RowError(dout.ToHost<float>(), want, dim), 1e-5) << "dim " << dim;
  }
}

TEST_F(CudaOpsTest, RopeMatchesCpuAtLargePositions) {
  std::mt19937 rng(2);
  const int n_heads = 9, head_dim = 64;
  const std::vector<int32_t> positions = {0, 1, 17, 4095, 100000, 1000000};
  const int64_t n = static_cast<int64_t>(positions.size());
  for (float base : {10000.0f, 100000.0f}) {
    auto x = NormalVec(n * n_heads * head_dim, rng);
    auto want = x;
    RopeInPlace(want.data(), n, n_heads, head_dim, positions.data(), base, 1.0f);
    DeviceBuffer dx(x), dpos(positions);
    ASSERT_TRUE(CudaRopeInPlace(dx.get<float>(), n, n_heads, head_dim, dpos.get<int32_t>(), base,
                                1.0f, nullptr)
                    .ok());
    ASSERT_TRUE(CudaSynchronize(nullptr).ok());
    EXPECT_LT(RowError(dx.ToHost<float>(), want, head_dim), 2e-6) << "base " << base;
  }
}

TEST_F(CudaOpsTest, SwiGluMatchesCpu) {
  std::mt19937 rng(3);
  const int64_t n = 1543;
  auto gate = NormalVec(n, rng, 8.0f);
  auto up = NormalVec(n, rng);
  std::vector<float> want(n);
  SwiGlu(gate.data(), up.data(), n, want.data());
  DeviceBuffer dg(gate), du(up), dout(n * sizeof(float));
  ASSERT_TRUE(CudaSwiGlu(dg.get<float>(), du.get<float>(), n, dout.get<float>(), nullptr).ok());
  ASSERT_TRUE(CudaSynchronize(nullptr).ok());
  const auto got = dout.ToHost<float>();
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_LE(std::abs(got[i] - want[i]), 2e-6 * std::abs(want[i]) + 1e-30) << "i " << i;
  }
}

// CudaGemv against a double reference: each input stage, beta 0 and 1, the model's shapes and
// a 16384-column one (more than 48 KB of shared memory).
TEST_F(CudaOpsTest, GemvMatchesReference) {
  struct Case {
    int64_t rows, cols;
    GemvInput input;
    float beta;
  };
  const Case cases[] = {{960, 576, GemvInput::kRmsNorm, 0.0f}, {576, 576, GemvInput::kPlain, 1.0f},
                        {3072, 576, GemvInput::kRmsNorm, 0.0f}, {576, 1536, GemvInput::kSwiGlu, 1.0f},
                        {37, 16384, GemvInput::kPlain, 0.0f},   {5, 8, GemvInput::kSwiGlu, 0.0f}};
  std::mt19937 rng(77);
  for (const Case& c : cases) {
    std::vector<uint16_t> w(c.rows * c.cols);
    std::vector<double> wd(w.size());
    std::normal_distribution<float> nd(0.0f, 0.05f);
    for (size_t i = 0; i < w.size(); ++i) {
      w[i] = F32ToF16(nd(rng));
      wd[i] = F16ToF32(w[i]);
    }
    const int64_t xn = c.input == GemvInput::kSwiGlu ? 2 * c.cols : c.cols;
    auto x = NormalVec(xn, rng, 2.0f);
    auto norm = NormalVec(c.cols, rng);
    auto y0 = NormalVec(c.rows, rng);
    std::vector<double> in(c.cols);
    double ss = 0;
    for (int64_t i = 0; i < c.cols; ++i) ss += static_cast<double>(x[i]) * x[i];
    const double inv = 1.0 / std::sqrt(ss / c.cols + 1e-5);
    for (int64_t i = 0; i < c.cols; ++i) {
      if (c.input == GemvInput::kRmsNorm) {
        in[i] = x[i] * inv * norm[i];
      } else if (c.input == GemvInput::kSwiGlu) {
        in[i] = x[i] / (1.0 + std::exp(-static_cast<double>(x[i]))) * x[c.cols + i];
      } else {
        in[i] = x[i];
      }
    }
    std::vector<float> want(c.rows);
    for (int64_t r = 0; r < c.rows; ++r) {
      double acc = 0;
      for (int64_t k = 0; k < c.cols; ++k) acc += wd[r * c.cols + k] * in[k];
      want[r] = static_cast<float>(c.beta * y0[r] + acc);
    }
    DeviceBuffer dw(w), dx(x), dn(norm), dy(y0);
    const Status st = CudaGemv(dw.get<uint16_t>(), c.rows, c.cols, c.input, dx.get<float>(),
                               dn.get<float>(), 1e-5f, c.beta, dy.get<float>(), nullptr);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_TRUE(CudaSynchronize(nullptr).ok());
    EXPECT_LT(RowError(dy.ToHost<float>(), want, c.rows), 1e-5)
        << "rows " << c.rows << " cols " << c.cols << " input " << static_cast<int>(c.input);
  }
  EXPECT_EQ(CudaGemv(nullptr, 4, 12, GemvInput::kPlain, nullptr, nullptr, 0, 0, nullptr, nullptr)
                .code(),
            StatusCode::kInvalidArgument);  // cols not a multiple of 8
}

struct DecodeCase {
  int n_heads, n_kv_heads, head_dim, n_ctx;
};

TEST_F(CudaOpsTest, PagedAttentionDecodeMatchesCpu) {
  // The fast group kernel (head_dim 64/128, small groups; many splits at 70000) and the
  // generic one (head_dim 32, a group of 8 at head_dim 128).
  const DecodeCase cases[] = {{9, 3, 64, 1},     {9, 3, 64, 37},      {9, 3, 64, 1000},
                              {9, 3, 64, 5000},  {8, 2, 128, 700},    {9, 9, 64, 333},
                              {8, 2, 128, 70000}, {24, 3, 64, 20000}, {4, 2, 32, 500},
                              {16, 2, 128, 900}};
  for (const DecodeCase& c : cases) {
    std::mt19937 rng(10 + c.n_ctx);
    KvPool pool;
    pool.page_tokens = 16;
    pool.n_kv_heads = c.n_kv_heads;
    pool.head_dim = c.head_dim;
    const int n_pages = (c.n_ctx + pool.page_tokens - 1) / pool.page_tokens;
    const int pool_pages = n_pages + 2;
    std::vector<uint16_t> storage(pool_pages * pool.PageBytes() / sizeof(uint16_t));
    pool.base = storage.data();
    std::vector<int32_t> order(pool_pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);  // pages not in pool order
    std::vector<PageRef> pages, slots(c.n_ctx);
    for (int p = 0; p < n_pages; ++p) {
      pages.push_back({order[p], p * pool.page_tokens,
                       std::min(pool.page_tokens, c.n_ctx - p * pool.page_tokens)});
    }
    for (int i = 0; i < c.n_ctx; ++i)
      slots[i] = {order[i / pool.page_tokens], i % pool.page_tokens, 1};
    const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    auto k = NormalVec(c.n_ctx * row, rng);
    auto v = NormalVec(c.n_ctx * row, rng);
    WriteKv(pool, slots, k.data(), v.data(), c.n_ctx);
    auto q = NormalVec(static_cast<size_t>(c.n_heads) * c.head_dim, rng);
    // The query sits one position before the end: the last key is masked.
    const int32_t q_pos = c.n_ctx >= 2 ? c.n_ctx - 2 : 0;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    std::vector<float> want(q.size());
    ThreadPool threads(1);
    PagedAttention(pool, pages, q.data(), &q_pos, 1, c.n_heads, scale, want.data(), threads);

    DeviceBuffer dpool(storage), dpages(pages), dq(q), dout(q.size() * sizeof(float));
    DeviceBuffer dwork(CudaDecodeAttentionWorkspaceBytes(c.n_heads, c.head_dim, n_pages));
    KvPool dev = pool;
    dev.base = dpool.get<uint16_t>();
    const Status s =
        CudaPagedAttentionDecode(dev, dpages.get<PageRef>(), n_pages, dq.get<float>(), q_pos,
                                 c.n_heads, scale, dout.get<float>(), dwork.get<void>(), nullptr);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(CudaSynchronize(nullptr).ok());
    EXPECT_LT(RowError(dout.ToHost<float>(), want, c.head_dim), 2e-5)
        << "heads " << c.n_heads << "/" << c.n_kv_heads << " dim " << c.head_dim << " ctx "
        << c.n_ctx;
  }
}

TEST_F(CudaOpsTest, PagedAttentionRejectsBadShapes) {
  KvPool pool;
  pool.n_kv_heads = 3;
  pool.head_dim = 64;
  EXPECT_EQ(
      CudaPagedAttentionDecode(pool, nullptr, 0, nullptr, 0, 8, 1.0f, nullptr, nullptr, nullptr)
          .code(),
      StatusCode::kInvalidArgument);
  pool.head_dim = 512;
  EXPECT_EQ(
      CudaPagedAttentionDecode(pool, nullptr, 0, nullptr, 0, 9, 1.0f, nullptr, nullptr, nullptr)
          .code(),
      StatusCode::kInvalidArgument);
}

#else  // !KVTIER_HAVE_CUDA

TEST(CudaOpsTest, BuiltWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend"; }

#endif

}  // namespace
}  // namespace kvtier::kernels::cuda
