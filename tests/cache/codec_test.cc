#include "cache/codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cache/extent.h"
#include "cache/page_pool.h"
#include "kernels/fp16.h"

namespace kvtier::cache {
namespace {

using kernels::F16ToF32;
using kernels::F32ToF16;

constexpr int kLayers = 30, kHeads = 3, kDim = 64;  // the default model's shape
constexpr uint16_t kSentinel = 0x7bcd;              // a finite f16 no codec output equals

// A pool holding a source extent (pages 0..119) and a destination extent on every other page
// after it, with guard pages in between and around.
class CodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = std::move(PagePool::Create(PageShape{16, kHeads, kDim},
                                       uint64_t{400} * 2 * 16 * kHeads * kDim * 2))
                .value();
    for (int i = 0; i < 400; ++i) ASSERT_TRUE(pool_->Allocate().ok());
    const int n = kLayers * kExtentPages;
    for (int i = 0; i < n; ++i) src_pages_.push_back(i);
    for (int i = 0; i < n; ++i) dst_pages_.push_back(n + 1 + 2 * i);  // n, n+2, ... are guards
    total_pages_ = 400;
    FillAll(kSentinel);
  }

  ExtentShape Shape() const { return ExtentShape{kLayers, kHeads, kDim, 16, kExtentPages}; }
  ExtentView Src() const { return ExtentView{pool_->view(), Shape(), src_pages_}; }
  ExtentView Dst() const { return ExtentView{pool_->view(), Shape(), dst_pages_}; }

  void FillAll(uint16_t v) {
    uint16_t* base = pool_->view().base;
    std::fill(base, base + total_pages_ * pool_->view().PageBytes() / 2, v);
  }

  // Pages other than dst still hold only kSentinel / the source data they had.
  bool GuardsIntact(const std::vector<uint16_t>& src_before) const {
    const kernels::KvPool& v = pool_->view();
    const size_t page_halves = v.PageBytes() / 2;
    std::vector<bool> is_dst(total_pages_, false);
    for (int32_t p : dst_pages_) is_dst[p] = true;
    for (int p = static_cast<int>(src_pages_.size()); p < total_pages_; ++p) {
      if (is_dst[p]) continue;
      const uint16_t* k = v.K(p);
      for (size_t i = 0; i < page_halves; ++i) {
        if (k[i] != kSentinel) return false;
      }
    }
    std::vector<uint16_t> now(Shape().RawBytes() / 2);
    EXPECT_TRUE(GatherExtent(Src(), now).ok());
    return now == src_before;
  }

  // Fills the source extent from f(layer, kv, head, token, dim).
  template <typename F>
  void FillSrc(F f) {
    const ExtentView s = Src();
    for (int l = 0; l < kLayers; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (int h = 0; h < kHeads; ++h)
          for (int t = 0; t < 64; ++t) {
            uint16_t* row = s.Row(l, h, t, kv == 1);
            for (int d = 0; d < kDim; ++d) row[d] = F32ToF16(f(l, kv, h, t, d));
          }
  }

  void FillRandom(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    FillSrc([&](int, int, int, int, int) { return n(rng); });
  }

  // Keys with outlier channels (as real post-RoPE keys have) and outlier tokens (sinks);
  // values with a few large tokens.
  void FillStructured(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    FillSrc([&](int l, int kv, int h, int t, int d) {
      float x = n(rng) * (0.5f + 0.05f * l);
      if (kv == 0) {
        if (d == 3 || d == 17 || d == 40 + h) x = 30.0f + 8.0f * n(rng);  // outlier channels
        if (t == 0) x *= 6.0f;                                            // sink token
        if (d == 63) x = -200.0f;                                         // constant channel
      } else {
        if (t % 29 == 5) x *= 40.0f;  // large tokens
        if (t == 7) x = 0.0f;         // an all-zero row
      }
      return x;
    });
  }

  std::vector<uint16_t> Gather(const ExtentView& v) const {
    std::vector<uint16_t> out(Shape().RawBytes() / 2);
    EXPECT_TRUE(GatherExtent(v, out).ok());
    return out;
  }

  std::unique_ptr<PagePool> pool_;
  std::vector<int32_t> src_pages_, dst_pages_;
  int total_pages_ = 0;
};

// Logical index into a gathered extent: [layer][kv][head][token][dim].
size_t At(int l, int kv, int h, int t, int d) {
  return (((static_cast<size_t>(l) * 2 + kv) * kHeads + h) * 64 + t) * kDim + d;
}

struct ErrorStats {
  double max_ratio = 0;  // max over elements of |err| / allowed bound
  double mean_abs = 0;
  double mean_abs_x = 0;
};

// Checks every element against the codec's bound: q8 |err| <= amax_row / 254 (+ f16 rounding);
// q4 keys |err| <= range_channel / 30, values |err| <= range_row / 30 (+ rounding of scale and
// result). A wrong scale, a transposed layout or a swapped K/V breaks these by orders of
// magnitude.
ErrorStats Check(Codec codec, const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  ErrorStats st;
  double sum_err = 0, sum_x = 0;
  size_t n = 0;
  for (int l = 0; l < kLayers; ++l)
    for (int kv = 0; kv < 2; ++kv)
      for (int h = 0; h < kHeads; ++h) {
        std::vector<float> ch_lo(kDim, 1e30f), ch_hi(kDim, -1e30f);
        for (int t = 0; t < 64; ++t)
          for (int d = 0; d < kDim; ++d) {
            const float x = F16ToF32(a[At(l, kv, h, t, d)]);
            ch_lo[d] = std::min(ch_lo[d], x);
            ch_hi[d] = std::max(ch_hi[d], x);
          }
        for (int t = 0; t < 64; ++t) {
          float lo = 1e30f, hi = -1e30f, amax = 0;
          for (int d = 0; d < kDim; ++d) {
            const float x = F16ToF32(a[At(l, kv, h, t, d)]);
            lo = std::min(lo, x);
            hi = std::max(hi, x);
            amax = std::max(amax, std::fabs(x));
          }
          for (int d = 0; d < kDim; ++d) {
            const float x = F16ToF32(a[At(l, kv, h, t, d)]);
            const float y = F16ToF32(b[At(l, kv, h, t, d)]);
            const double err = std::fabs(static_cast<double>(x) - y);
            double bound = 0;
            const double round = std::fabs(x) / 1024.0 + 1e-7;
            if (codec == Codec::kQ8) {
              bound = amax / 254.0 * 1.002 + round;
            } else if (codec == Codec::kQ4) {
              const double r = kv == 0 ? ch_hi[d] - ch_lo[d] : hi - lo;
              bound = r / 30.0 * 1.002 + r / 1024.0 + round;
            }
            st.max_ratio = std::max(st.max_ratio, bound > 0 ? err / bound : (err > 0 ? 1e9 : 0));
            sum_err += err;
            sum_x += std::fabs(x);
            ++n;
          }
        }
      }
  st.mean_abs = sum_err / n;
  st.mean_abs_x = sum_x / n;
  return st;
}

TEST_F(CodecTest, F16IsExact) {
  for (bool zstd : {false, true}) {
    FillStructured(1);
    const std::vector<uint16_t> before = Gather(Src());
    auto enc = EncodeExtent(Src(), CodecSpec{Codec::kF16, zstd});
    ASSERT_TRUE(enc.ok()) << enc.status().ToString();
    ASSERT_TRUE(DecodeExtent(*enc, Dst()).ok());
    EXPECT_EQ(Gather(Dst()), before);
    EXPECT_TRUE(GuardsIntact(before));
  }
}

TEST_F(CodecTest, RoundTripErrorBounds) {
  for (Codec codec : {Codec::kQ8, Codec::kQ4}) {
    for (int structured = 0; structured < 2; ++structured) {
      for (bool zstd : {false, true}) {
        SCOPED_TRACE(std::string(CodecName(codec)) + (structured ? " structured" : " random") +
                     (zstd ? " zstd" : ""));
        FillAll(kSentinel);
        if (structured) {
          FillStructured(7);
        } else {
          FillRandom(7);
        }
        const std::vector<uint16_t> before = Gather(Src());
        auto enc = EncodeExtent(Src(), CodecSpec{codec, zstd});
        ASSERT_TRUE(enc.ok()) << enc.status().ToString();
        ASSERT_TRUE(DecodeExtent(*enc, Dst()).ok());
        const ErrorStats st = Check(codec, before, Gather(Dst()));
        EXPECT_LE(st.max_ratio, 1.0);
        // Mean error: uniform rounding error is a quarter of a step on average.
        const double rel = st.mean_abs / st.mean_abs_x;
        std::printf("max error / bound %.3f, mean |err| / mean |x| %.4f\n", st.max_ratio, rel);
        if (codec == Codec::kQ8) {
          EXPECT_LT(rel, structured ? 0.06 : 0.01);  // the -200 channel sets row scales
          EXPECT_GT(rel, 1e-4);                      // it is quantizing
        } else {
          EXPECT_LT(rel, structured ? 0.08 : 0.11);
          EXPECT_GT(rel, 1e-3);
        }
        EXPECT_TRUE(GuardsIntact(before));
      }
    }
  }
}

TEST_F(CodecTest, OutliersStayAccurate) {
  // q4 keys are per channel: an outlier channel must not ruin the other channels' precision.
  FillStructured(3);
  const std::vector<uint16_t> before = Gather(Src());
  ASSERT_TRUE(DecodeExtent(*EncodeExtent(Src(), CodecSpec{Codec::kQ4, false}), Dst()).ok());
  const std::vector<uint16_t> after = Gather(Dst());
  // Channel 0 of layer 0 head 0 (sigma 0.5 except the 6x sink token): error well below
  // what a per-token scale dominated by the 30-valued outlier channels would give (~1).
  double max_err = 0;
  for (int t = 1; t < 64; ++t) {
    max_err = std::max<double>(max_err, std::fabs(F16ToF32(before[At(0, 0, 0, t, 0)]) -
                                                  F16ToF32(after[At(0, 0, 0, t, 0)])));
  }
  EXPECT_LT(max_err, 0.5);
  // The constant channel is exact, the zero value row decodes to zeros.
  for (int t = 0; t < 64; ++t) {
    EXPECT_EQ(after[At(5, 0, 1, t, 63)], before[At(5, 0, 1, t, 63)]);
    EXPECT_EQ(F16ToF32(after[At(5, 1, 1, 7, t % kDim)]), 0.0f);
  }
}

TEST_F(CodecTest, ScalarAndSimdAgreeBitForBit) {
  FillStructured(11);
  for (Codec codec : {Codec::kQ8, Codec::kQ4}) {
    const bool old = SetCodecScalarOnlyForTesting(true);
    auto scalar = EncodeExtent(Src(), CodecSpec{codec, false});
    ASSERT_TRUE(scalar.ok());
    ASSERT_TRUE(DecodeExtent(*scalar, Dst()).ok());
    const std::vector<uint16_t> scalar_out = Gather(Dst());
    SetCodecScalarOnlyForTesting(false);
    auto simd = EncodeExtent(Src(), CodecSpec{codec, false});
    ASSERT_TRUE(simd.ok());
    EXPECT_EQ(*scalar, *simd);
    ASSERT_TRUE(DecodeExtent(*simd, Dst()).ok());
    EXPECT_EQ(Gather(Dst()), scalar_out);
    SetCodecScalarOnlyForTesting(old);
  }
}

TEST_F(CodecTest, SizesForTheDefaultModel) {
  const ExtentShape s = Shape();
  EXPECT_EQ(s.RawBytes(), 1474560u);
  EXPECT_EQ(CodecPayloadBytes(Codec::kF16, s), 1474560u);
  EXPECT_EQ(CodecPayloadBytes(Codec::kQ8, s), 760320u);  // 30 * 2 * (192 * 2 + 192 * 64)
  EXPECT_EQ(CodecPayloadBytes(Codec::kQ4, s), 414720u);  // 30 * 2 * (192 * 4 + 192 * 32)
  FillStructured(5);
  for (Codec codec : {Codec::kF16, Codec::kQ8, Codec::kQ4}) {
    auto plain = EncodeExtent(Src(), CodecSpec{codec, false});
    auto z = EncodeExtent(Src(), CodecSpec{codec, true});
    ASSERT_TRUE(plain.ok() && z.ok());
    EXPECT_EQ(plain->size(), kExtentHeaderBytes + CodecPayloadBytes(codec, s));
    EXPECT_LT(z->size(), plain->size());
    std::printf("%-3s: %8zu bytes (%.3f of f16), +zstd %8zu bytes (%.3f)\n",
                std::string(CodecName(codec)).c_str(), plain->size(),
                static_cast<double>(plain->size()) / s.RawBytes(), z->size(),
                static_cast<double>(z->size()) / s.RawBytes());
  }
}

TEST_F(CodecTest, EveryHeaderByteCorruptedOrTruncatedIsAnError) {
  FillRandom(2);
  const std::vector<uint16_t> before = Gather(Src());
  for (Codec codec : {Codec::kF16, Codec::kQ8, Codec::kQ4}) {
    for (bool zstd : {false, true}) {
      SCOPED_TRACE((CodecSpec{codec, zstd}.Name()));
      const std::vector<uint8_t> good = *EncodeExtent(Src(), CodecSpec{codec, zstd});
      for (size_t off = 0; off < kExtentHeaderBytes; ++off) {
        for (uint8_t mask : {0x01, 0x10, 0x80, 0xff}) {
          std::vector<uint8_t> bad = good;
          bad[off] ^= mask;
          const Status st = DecodeExtent(bad, Dst());
          ASSERT_FALSE(st.ok()) << "offset " << off << " mask " << int(mask);
          EXPECT_TRUE(st.code() == StatusCode::kCorruption ||
                      st.code() == StatusCode::kInvalidArgument);
        }
      }
      std::vector<size_t> lengths;
      for (size_t n = 0; n <= kExtentHeaderBytes; ++n) lengths.push_back(n);
      for (size_t n = kExtentHeaderBytes + 1; n < good.size(); n += 4093) lengths.push_back(n);
      lengths.push_back(good.size() - 1);
      for (size_t n : lengths) {
        const Status st = DecodeExtent(std::span<const uint8_t>(good.data(), n), Dst());
        ASSERT_FALSE(st.ok()) << "length " << n;
        EXPECT_EQ(st.code(), StatusCode::kCorruption);
      }
      std::vector<uint8_t> longer = good;
      longer.push_back(0);
      EXPECT_EQ(DecodeExtent(longer, Dst()).code(), StatusCode::kCorruption);
      // Nothing was written by any failed decode.
      EXPECT_TRUE(GuardsIntact(before));
      const uint16_t* d = pool_->view().K(dst_pages_[0]);
      EXPECT_EQ(d[0], kSentinel);
    }
  }
}

TEST_F(CodecTest, CorruptPayloadNeverCrashesOrWritesNonFinite) {
  FillRandom(4);
  const std::vector<uint16_t> before = Gather(Src());
  // A scale turned into NaN or a negative number: Corruption, nothing written.
  for (Codec codec : {Codec::kQ8, Codec::kQ4}) {
    std::vector<uint8_t> bad = *EncodeExtent(Src(), CodecSpec{codec, false});
    for (uint16_t h : {uint16_t{0x7e00}, uint16_t{0xbc00}, uint16_t{0x7c00}}) {
      bad[kExtentHeaderBytes] = static_cast<uint8_t>(h);
      bad[kExtentHeaderBytes + 1] = static_cast<uint8_t>(h >> 8);
      EXPECT_EQ(DecodeExtent(bad, Dst()).code(), StatusCode::kCorruption);
    }
    EXPECT_TRUE(GuardsIntact(before));
  }
  // Random payload bytes (no checksum at this level): decodes, or fails, but output is finite.
  std::mt19937 rng(9);
  for (Codec codec : {Codec::kQ8, Codec::kQ4}) {
    for (bool zstd : {false, true}) {
      const std::vector<uint8_t> good = *EncodeExtent(Src(), CodecSpec{codec, zstd});
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<uint8_t> bad = good;
        for (int k = 0; k < 8; ++k) {
          bad[kExtentHeaderBytes + rng() % (bad.size() - kExtentHeaderBytes)] ^= 1 + rng() % 255;
        }
        if (DecodeExtent(bad, Dst()).ok()) {
          for (uint16_t h : Gather(Dst())) ASSERT_TRUE(std::isfinite(F16ToF32(h)));
        }
      }
      EXPECT_TRUE(GuardsIntact(before));
    }
  }
}

TEST_F(CodecTest, ShapeMismatchAndBadViews) {
  FillRandom(5);
  const std::vector<uint8_t> enc = *EncodeExtent(Src(), CodecSpec{Codec::kQ8, false});
  ExtentShape other = Shape();
  other.n_layers = 29;
  std::vector<int32_t> fewer(dst_pages_.begin(), dst_pages_.begin() + 29 * kExtentPages);
  EXPECT_EQ(DecodeExtent(enc, ExtentView{pool_->view(), other, fewer}).code(),
            StatusCode::kInvalidArgument);
  // A view with the wrong page count or a negative page.
  EXPECT_EQ(DecodeExtent(enc, ExtentView{pool_->view(), Shape(), fewer}).code(),
            StatusCode::kInvalidArgument);
  std::vector<int32_t> neg = dst_pages_;
  neg[5] = -1;
  EXPECT_EQ(DecodeExtent(enc, ExtentView{pool_->view(), Shape(), neg}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(EncodeExtent(ExtentView{pool_->view(), Shape(), fewer}, CodecSpec{}).ok());
}

TEST_F(CodecTest, NonFiniteInputIsRejectedByQuantizers) {
  FillRandom(6);
  Src().VRow(3, 1, 20)[5] = 0x7c00;  // +inf
  EXPECT_EQ(EncodeExtent(Src(), CodecSpec{Codec::kQ8, false}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeExtent(Src(), CodecSpec{Codec::kQ4, false}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(EncodeExtent(Src(), CodecSpec{Codec::kF16, false}).ok());  // raw bytes as they are
}

TEST_F(CodecTest, GatherScatterAndPageIds) {
  FillRandom(8);
  const std::vector<uint16_t> before = Gather(Src());
  ASSERT_TRUE(ScatterExtent(before, Dst()).ok());
  EXPECT_EQ(Gather(Dst()), before);
  EXPECT_TRUE(GuardsIntact(before));
  // Page ids of extent 1 from per-layer tables of 8 pages.
  std::vector<std::vector<int32_t>> tables(2);
  for (int l = 0; l < 2; ++l)
    for (int i = 0; i < 8; ++i) tables[l].push_back(100 * l + i);
  auto ids = ExtentPageIds(tables, 1);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{4, 5, 6, 7, 104, 105, 106, 107}));
  EXPECT_FALSE(ExtentPageIds(tables, 2).ok());
  EXPECT_EQ(WholeExtents(200), 3);
}

TEST(CodecSpecTest, ParseAndName) {
  EXPECT_EQ(ParseCodecSpec("q8")->Name(), "q8");
  EXPECT_EQ(ParseCodecSpec("q4+zstd")->Name(), "q4+zstd");
  EXPECT_EQ(ParseCodecSpec("f16+zstd")->codec, Codec::kF16);
  EXPECT_FALSE(ParseCodecSpec("q5").ok());
  EXPECT_FALSE(ParseCodecSpec("+zstd").ok());
  EXPECT_FALSE(ParseCodecSpec("").ok());
}

TEST(AllocateExtentPagesTest, AllOrNothing) {
  auto pool = std::move(PagePool::Create(PageShape{16, 1, 8}, 10 * 2 * 16 * 8 * 2)).value();
  auto a = AllocateExtentPages(*pool, 2);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size(), 8u);
  EXPECT_EQ(pool->free_pages(), 2);
  auto b = AllocateExtentPages(*pool, 1);
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->free_pages(), 2);
}

}  // namespace
}  // namespace kvtier::cache
