// DecodeExtentPage (cache/codec.h): one page of one layer decoded on its own is bit-exact with the
// same slice of the whole-extent decode, for every codec with and without zstd; malformed input is
// an error and writes nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "cache/codec.h"
#include "cache/extent.h"
#include "cache/page_pool.h"
#include "kernels/fp16.h"

namespace kvtier::cache {
namespace {

constexpr int kLayers = 5, kHeads = 3, kDim = 64;
constexpr uint16_t kSentinel = 0x7bcd;

class CodecPageTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    pool_ = std::move(PagePool::Create(PageShape{16, kHeads, kDim},
                                       uint64_t{64} * 2 * 16 * kHeads * kDim * 2))
                .value();
    const int n = kLayers * kExtentPages;
    for (int i = 0; i < 2 * n + 1; ++i) ASSERT_TRUE(pool_->Allocate().ok());
    for (int i = 0; i < n; ++i) src_.push_back(i);
    for (int i = 0; i < n; ++i) whole_.push_back(n + i);
    single_ = 2 * n;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    const ExtentView s{pool_->view(), Shape(), src_};
    for (int l = 0; l < kLayers; ++l)
      for (int h = 0; h < kHeads; ++h)
        for (int t = 0; t < 64; ++t)
          for (int kv = 0; kv < 2; ++kv) {
            uint16_t* row = s.Row(l, h, t, kv == 1);
            for (int d = 0; d < kDim; ++d) row[d] = kernels::F32ToF16(nd(rng) * (1 + d % 7));
          }
  }
  ExtentShape Shape() const { return ExtentShape{kLayers, kHeads, kDim, 16, kExtentPages}; }
  void FillSingle(uint16_t v) {
    uint16_t* k = pool_->view().K(single_);
    std::fill(k, k + pool_->view().PageBytes() / 2, v);
  }
  bool SingleUntouched() const {
    const uint16_t* k = pool_->view().K(single_);
    for (size_t i = 0; i < pool_->view().PageBytes() / 2; ++i) {
      if (k[i] != kSentinel) return false;
    }
    return true;
  }

  std::unique_ptr<PagePool> pool_;
  std::vector<int32_t> src_, whole_;
  int32_t single_ = 0;
};

TEST_P(CodecPageTest, PageDecodeEqualsTheSliceOfTheWholeDecode) {
  auto spec = ParseCodecSpec(GetParam());
  ASSERT_TRUE(spec.ok());
  auto enc = EncodeExtent(ExtentView{pool_->view(), Shape(), src_}, *spec);
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  ASSERT_TRUE(DecodeExtent(*enc, ExtentView{pool_->view(), Shape(), whole_}).ok());
  const size_t page_bytes = pool_->view().PageBytes();
  for (int l = 0; l < kLayers; ++l) {
    for (int p = 0; p < kExtentPages; ++p) {
      FillSingle(kSentinel);
      Status s = DecodeExtentPage(*enc, l, p, pool_->view(), single_);
      ASSERT_TRUE(s.ok()) << s.ToString();
      const int32_t ref = whole_[l * kExtentPages + p];
      EXPECT_EQ(0, std::memcmp(pool_->view().K(single_), pool_->view().K(ref), page_bytes))
          << GetParam() << " layer " << l << " page " << p;
    }
  }
  // A decompressed (plain) copy decodes the same.
  auto plain = DecompressExtent(*enc);
  ASSERT_TRUE(plain.ok());
  auto h = ParseExtentHeader(*plain);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->zstd);
  FillSingle(kSentinel);
  ASSERT_TRUE(DecodeExtentPage(*plain, 3, 2, pool_->view(), single_).ok());
  EXPECT_EQ(0, std::memcmp(pool_->view().K(single_),
                           pool_->view().K(whole_[3 * kExtentPages + 2]), page_bytes));
}

TEST_P(CodecPageTest, CorruptOrShortInputIsAnErrorAndWritesNothing) {
  auto spec = ParseCodecSpec(GetParam());
  ASSERT_TRUE(spec.ok());
  auto enc = EncodeExtent(ExtentView{pool_->view(), Shape(), src_}, *spec);
  ASSERT_TRUE(enc.ok());
  FillSingle(kSentinel);
  // Truncated.
  std::vector<uint8_t> cut(enc->begin(), enc->end() - 10);
  EXPECT_FALSE(DecodeExtentPage(cut, 0, 0, pool_->view(), single_).ok());
  EXPECT_FALSE(DecodeExtentPage(std::span<const uint8_t>(enc->data(), 20), 0, 0, pool_->view(),
                                single_)
                   .ok());
  EXPECT_FALSE(DecompressExtent(cut).ok());
  // Out of range layer and page.
  EXPECT_EQ(DecodeExtentPage(*enc, kLayers, 0, pool_->view(), single_).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeExtentPage(*enc, 0, kExtentPages, pool_->view(), single_).code(),
            StatusCode::kInvalidArgument);
  // A flipped header byte.
  std::vector<uint8_t> bad = *enc;
  bad[9] ^= 0x40;
  EXPECT_EQ(DecodeExtentPage(bad, 0, 0, pool_->view(), single_).code(), StatusCode::kCorruption);
  // A non-finite scale in the decoded page (plain payloads only: in zstd the bytes move).
  if (!spec->zstd && spec->codec != Codec::kF16) {
    bad = *enc;
    // q8: the first K scale of layer 0; q4: the first K scale of layer 0. Both at payload start.
    bad[kExtentHeaderBytes] = 0x00;
    bad[kExtentHeaderBytes + 1] = 0x7c;  // +inf
    EXPECT_EQ(DecodeExtentPage(bad, 0, 0, pool_->view(), single_).code(),
              StatusCode::kCorruption);
  }
  EXPECT_TRUE(SingleUntouched());
}

INSTANTIATE_TEST_SUITE_P(Codecs, CodecPageTest,
                         ::testing::Values("q8", "q8+zstd", "q4", "q4+zstd", "f16"));

}  // namespace
}  // namespace kvtier::cache
