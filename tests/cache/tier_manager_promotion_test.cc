// Selected-page promotion in the TierManager (cache/tier_manager.h), on a small random KV with a
// real SegmentStore: cold prefixes with resident digests (RAM and the disk's digest records),
// single pages decoded equal to whole-extent promotion, hot-cache hits, counters.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "cache/tier_manager.h"
#include "kernels/cpu/retrieval.h"
#include "kernels/fp16.h"
#include "storage/segment_store.h"
#include "tests/support/test_support.h"

namespace kvtier::cache {
namespace {

constexpr int kLayers = 2, kHeads = 3, kDim = 64, kTokens = 256;  // 4 extents

class TierPromotionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("kvtier_tier_promo_");
    pool_ = std::move(PagePool::Create(PageShape{16, kHeads, kDim},
                                       uint64_t{200} * 2 * 16 * kHeads * kDim * 2))
                .value();
    shape_ = ExtentShapeOf(pool_->view(), kLayers);
    scheme_.model_fingerprint = "test";
    scheme_.layout = LayoutId(CodecSpec{Codec::kQ8, false}, shape_);
    for (int i = 0; i < kTokens + 1; ++i) tokens_.push_back(100 + i);
    disk_ = OpenDisk();
  }
  void TearDown() override {
    disk_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::unique_ptr<storage::SegmentStore> OpenDisk() {
    storage::SegmentStoreOptions so;
    so.dir = dir_ + "/kv";
    so.index_dir = dir_ + "/index";
    so.segment_bytes = 4 << 20;
    std::filesystem::create_directories(so.dir);
    std::filesystem::create_directories(so.index_dir);
    auto s = storage::SegmentStore::Open(so);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }
  std::unique_ptr<TierManager> Tiers(uint64_t host_bytes, int64_t hot_pages) {
    TierOptions o;
    o.host_capacity_bytes = host_bytes;
    o.disk = disk_.get();
    o.hot_cache_pages = hot_pages;
    return std::make_unique<TierManager>(*pool_, shape_, scheme_, o);
  }
  // A random sequence of kTokens published and written through; returns the digests per layer
  // and logical page.
  std::vector<std::vector<uint16_t>> PublishRandom(TierManager& tiers) {
    SequenceKv seq(*pool_, kLayers);
    EXPECT_TRUE(seq.Reserve(kTokens).ok());
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const kernels::KvPool& v = pool_->view();
    std::vector<std::vector<uint16_t>> digests(kLayers);
    for (int l = 0; l < kLayers; ++l) {
      for (int32_t page : seq.page_tables()[l]) {
        uint16_t* k = v.K(page);
        for (size_t i = 0; i < 2 * v.HalfElems(); ++i) k[i] = kernels::F32ToF16(nd(rng));
        const kernels::PageRef ref{page, 0, 16};
        kernels::UpdateDigests(v, std::span(&ref, 1));
        digests[l].insert(digests[l].end(), v.Digest(page), v.Digest(page) + v.DigestHalfs());
      }
    }
    EXPECT_TRUE(tiers.Publish("ns", tokens_, seq.page_tables(), kTokens).ok());
    tiers.WriteThrough();
    return digests;
  }

  std::string dir_;
  std::unique_ptr<PagePool> pool_;
  ExtentShape shape_;
  KeyScheme scheme_;
  std::vector<int32_t> tokens_;
  std::unique_ptr<storage::SegmentStore> disk_;
};

TEST_F(TierPromotionTest, ColdPrefixPromotesSinglePagesEqualToWholePromotion) {
  std::vector<std::vector<uint16_t>> digests;
  std::vector<uint8_t> whole_page;  // layer 1, logical page 9 after a whole promotion
  {
    auto tiers = Tiers(64 << 20, 8);
    digests = PublishRandom(*tiers);
    ASSERT_TRUE(tiers->Evict("ns", "device").ok());
    auto whole = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kWhole);
    ASSERT_TRUE(whole.ok());
    ASSERT_EQ(whole->tokens, kTokens);
    const int32_t page = whole->page_tables[1][9];
    const auto* p = reinterpret_cast<const uint8_t*>(pool_->view().K(page));
    whole_page.assign(p, p + pool_->page_bytes());
  }
  // A fresh tier manager (empty RAM tiers) over the same disk: everything is cold.
  auto tiers = Tiers(64 << 20, 8);
  auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  EXPECT_EQ(hit->tokens, kTokens);
  EXPECT_EQ(hit->tokens_cold, kTokens);
  EXPECT_EQ(hit->tokens_from_disk, kTokens);
  ASSERT_EQ(hit->cold.size(), 4u);
  EXPECT_EQ(pool_->used_pages(), 0);  // nothing promoted
  EXPECT_EQ(tiers->promotion_counters().digests_from_disk, 4);
  EXPECT_EQ(tiers->Stats().disk.records, 4u);  // extents; their digest records counted apart
  EXPECT_EQ(tiers->Stats().disk_digest_records, 4u);
  const size_t dh = pool_->view().DigestHalfs();
  for (int l = 0; l < kLayers; ++l) {
    for (int p = 0; p < kTokens / 16; ++p) {
      const int32_t entry = hit->page_tables[l][p];
      ASSERT_LT(entry, 0);
      EXPECT_EQ(ColdIndexOf(entry), p / 4);
      EXPECT_EQ(ColdPageOf(entry), p % 4);
      const uint16_t* d = hit->cold[ColdIndexOf(entry)].digests->data() +
                          (static_cast<size_t>(l) * kExtentPages + ColdPageOf(entry)) * dh;
      EXPECT_EQ(0, std::memcmp(d, digests[l].data() + p * dh, dh * 2)) << l << " " << p;
    }
  }
  // Layer 1, logical pages 9 and 2 (extents 2 and 0): decoded from disk, then hot.
  const ColdPageRef refs[2] = {{&hit->cold[2].key, 1, 1}, {&hit->cold[0].key, 1, 2}};
  int32_t pages[2] = {-1, -1};
  ASSERT_TRUE(tiers->PromotePages(refs, pages).ok());
  EXPECT_EQ(0, std::memcmp(pool_->view().K(pages[0]), whole_page.data(), whole_page.size()));
  PromotionCounters c = tiers->promotion_counters();
  EXPECT_EQ(c.hot_misses, 2);
  EXPECT_EQ(c.pages_from_disk, 2);
  EXPECT_EQ(c.bytes_decompressed, 2 * pool_->page_bytes());
  // The records are in the host tier now: another page of extent 2 decodes from RAM.
  const ColdPageRef more[3] = {refs[0], refs[1], {&hit->cold[2].key, 0, 3}};
  int32_t again[3] = {-1, -1, -1};
  ASSERT_TRUE(tiers->PromotePages(more, again).ok());
  EXPECT_EQ(again[0], pages[0]);
  EXPECT_EQ(again[1], pages[1]);
  c = tiers->promotion_counters();
  EXPECT_EQ(c.hot_hits, 2);
  EXPECT_EQ(c.pages_from_host, 1);
  EXPECT_EQ(c.disk_reads, 2);
  // Over the hot cache's capacity within one call is allowed; the next call trims it.
  std::vector<ColdPageRef> all;
  for (int e = 0; e < 4; ++e)
    for (int p = 0; p < 4; ++p) all.push_back({&hit->cold[e].key, 0, p});
  std::vector<int32_t> out(all.size(), -1);
  ASSERT_TRUE(tiers->PromotePages(all, out).ok());
  EXPECT_EQ(tiers->Stats().promotion.hot_pages, 16);  // all in use: the layer-1 pages went
  ASSERT_TRUE(tiers->PromotePages(std::span(refs, 1), std::span(pages, 1)).ok());
  EXPECT_LE(tiers->Stats().promotion.hot_pages, 8);
  // Publishing a sequence that holds the cold prefix skips the cold extents (they are cached).
  ASSERT_TRUE(tiers->Publish("ns", tokens_, hit->page_tables, kTokens).ok());
  EXPECT_EQ(tiers->Stats().device.extents, 0);
}

// A digest record of another layout (an older kvtier's digest size) is not used: the digests
// are recomputed from the extent (its q8 record, so close to the originals, not equal) and the
// record is replaced, so the next process reads those from disk again.
TEST_F(TierPromotionTest, DigestRecordOfAnotherLayoutIsRecomputedAndReplaced) {
  std::vector<std::vector<uint16_t>> digests;
  {
    auto tiers = Tiers(64 << 20, 8);
    digests = PublishRandom(*tiers);
  }
  // Extent 1's digest record becomes one of the old size (min/max and sketch, no centroid).
  std::vector<ExtentKey> keys;
  {
    auto tiers = Tiers(64 << 20, 8);
    auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
    ASSERT_TRUE(hit.ok());
    for (const ColdExtent& c : hit->cold) keys.push_back(c.key);
  }
  ASSERT_EQ(keys.size(), 4u);
  const storage::ExtentKey record = TierManager::DigestRecordKey(keys[1]);
  ASSERT_TRUE(disk_->Remove(record).ok());
  const std::vector<uint8_t> old(1000, 7);
  ASSERT_TRUE(disk_->Put(record, 0xD1, old.size(), old).ok());
  ASSERT_TRUE(disk_->Sync().ok());
  const size_t dh = pool_->view().DigestHalfs();
  std::vector<uint16_t> recomputed;  // extent 1's digests in round 0
  for (int round = 0; round < 2; ++round) {
    auto tiers = Tiers(64 << 20, 8);
    auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
    ASSERT_TRUE(hit.ok()) << hit.status().ToString();
    ASSERT_EQ(hit->tokens_cold, kTokens);
    EXPECT_EQ(tiers->promotion_counters().digests_recomputed, round == 0 ? 1 : 0) << round;
    EXPECT_EQ(tiers->promotion_counters().digests_from_disk, round == 0 ? 3 : 4) << round;
    const std::vector<uint16_t>& got = *hit->cold[1].digests;
    ASSERT_EQ(got.size(), kLayers * kExtentPages * dh);
    if (round == 0) recomputed = got;
    EXPECT_EQ(got, recomputed) << "round 1 reads round 0's record";
    for (int l = 0; l < kLayers; ++l) {
      for (int p = 0; p < kExtentPages; ++p) {
        const uint16_t* d = got.data() + (static_cast<size_t>(l) * kExtentPages + p) * dh;
        const uint16_t* want = digests[l].data() + (4 + p) * dh;
        for (int i = 0; i < kDim; ++i) {  // the min row: q8 of N(0,1) keys is within 0.05
          ASSERT_NEAR(kernels::F16ToF32(d[i]), kernels::F16ToF32(want[i]), 0.05) << l << p << i;
        }
      }
      // The other extents' records were fine: their digests are the originals.
      EXPECT_EQ(0, std::memcmp(hit->cold[2].digests->data() + l * kExtentPages * dh,
                               digests[l].data() + 8 * dh, kExtentPages * dh * 2));
    }
  }
}

TEST_F(TierPromotionTest, WholeIfFitsFallsBackToColdWhenThePrefixDoesNotFit) {
  {
    auto tiers = Tiers(64 << 20, 8);
    PublishRandom(*tiers);
  }
  auto tiers = Tiers(64 << 20, 8);
  // 4 extents x 2 layers x 4 pages = 32 pages fit in 200 with a short sequence...
  auto fits = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kWholeIfFits, kTokens + 16);
  ASSERT_TRUE(fits.ok());
  EXPECT_TRUE(fits->cold.empty());
  EXPECT_EQ(fits->tokens_cold, 0);
  fits->lease.Release();
  ASSERT_TRUE(tiers->Evict("ns", "device").ok());
  // ... but not with a sequence of 200 pages per layer.
  auto cold = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kWholeIfFits, 200 * 16);
  ASSERT_TRUE(cold.ok());
  EXPECT_EQ(cold->cold.size(), 4u);
  EXPECT_EQ(cold->tokens_cold, kTokens);
}

}  // namespace
}  // namespace kvtier::cache
