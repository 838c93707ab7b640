// Selected-page promotion in the TierManager (cache/tier_manager.h), on a small random KV with a
// real SegmentStore: cold prefixes with resident digests (RAM and the disk's digest records),
// single pages decoded equal to whole-extent promotion, hot-cache hits, counters, and the
// background prefetch of records (PrefetchPages): hits, the buffer's budget, corrupt records.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>
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
// A q8 extent without zstd: layers x 4 pages x (K and V: int8 values + an f16 scale per token
// and head) + the header = 50,720 bytes.
constexpr uint64_t kPlainRecordBytes =
    uint64_t{kLayers} * 4 * (2 * 16 * kHeads * kDim + 2 * 16 * kHeads * 2) + 32;

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
  std::unique_ptr<TierManager> Tiers(uint64_t host_bytes, int64_t hot_pages,
                                     uint64_t prefetch_bytes = 64 << 20,
                                     std::optional<CodecSpec> disk_codec = std::nullopt) {
    TierOptions o;
    if (disk_codec) o.disk_codec = *disk_codec;
    o.host_capacity_bytes = host_bytes;
    o.disk = disk_.get();
    o.hot_cache_pages = hot_pages;
    o.prefetch_bytes = prefetch_bytes;
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

// Disk records are plain q8 by default (BENCHMARKS.md, "zstd on disk"); records an earlier
// default wrote with zstd still serve whole and single-page promotion, bit for bit alike.
TEST_F(TierPromotionTest, RecordsWrittenWithZstdStillServeUnderThePlainDefault) {
  EXPECT_EQ(TierOptions{}.disk_codec, (CodecSpec{Codec::kQ8, false}));
  {
    auto old_tiers = Tiers(64 << 20, 8, 64 << 20, CodecSpec{Codec::kQ8, true});
    PublishRandom(*old_tiers);
  }
  std::vector<uint8_t> whole_page;
  {
    auto tiers = Tiers(64 << 20, 8);
    auto whole = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kWhole);
    ASSERT_TRUE(whole.ok()) << whole.status().ToString();
    ASSERT_EQ(whole->tokens, kTokens);
    EXPECT_EQ(whole->tokens_from_disk, kTokens);
    const auto* p = reinterpret_cast<const uint8_t*>(pool_->view().K(whole->page_tables[1][9]));
    whole_page.assign(p, p + pool_->page_bytes());
  }
  auto tiers = Tiers(64 << 20, 8);
  auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  ASSERT_EQ(hit->tokens_cold, kTokens);
  const ColdPageRef ref{&hit->cold[2].key, 1, 1};  // layer 1, logical page 9
  int32_t page = -1;
  ASSERT_TRUE(tiers->PromotePages(std::span(&ref, 1), std::span(&page, 1)).ok());
  EXPECT_EQ(tiers->promotion_counters().pages_from_disk, 1);
  EXPECT_EQ(0, std::memcmp(pool_->view().K(page), whole_page.data(), whole_page.size()));
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

// Page bytes (K and V) of the device pages `pages`, concatenated.
std::vector<uint8_t> PageBytes(const PagePool& pool, std::span<const int32_t> pages) {
  std::vector<uint8_t> out;
  for (int32_t page : pages) {
    const auto* p = reinterpret_cast<const uint8_t*>(pool.view().K(page));
    out.insert(out.end(), p, p + pool.page_bytes());
  }
  return out;
}

// Pages of two extents, not in order; no host tier, so every record comes from disk (or the
// prefetch buffer).
TEST_F(TierPromotionTest, PrefetchedRecordIsServedWithoutADiskReadOnTheComputePath) {
  {
    auto tiers = Tiers(64 << 20, 8);
    PublishRandom(*tiers);
  }
  // Without prefetching (prefetch_bytes 0): the reference pages, read from disk on the call.
  std::vector<uint8_t> reference;
  {
    auto tiers = Tiers(0, 8, /*prefetch_bytes=*/0);
    auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
    ASSERT_TRUE(hit.ok()) << hit.status().ToString();
    const ColdPageRef refs[3] = {
        {&hit->cold[2].key, 1, 1}, {&hit->cold[1].key, 0, 3}, {&hit->cold[2].key, 0, 0}};
    tiers->PrefetchPages(refs);  // a no-op
    tiers->WaitForPrefetches();
    int32_t pages[3] = {-1, -1, -1};
    ASSERT_TRUE(tiers->PromotePages(refs, pages).ok());
    reference = PageBytes(*pool_, pages);
    const PromotionCounters c = tiers->promotion_counters();
    EXPECT_EQ(c.disk_reads, 2);
    EXPECT_EQ(c.pages_from_disk, 2);
    EXPECT_EQ(c.pages_from_host, 1);  // the second page of extent 2: its record is in RAM
    EXPECT_EQ(c.records_prefetched, 0);
    EXPECT_EQ(c.prefetch_hits, 0);
    EXPECT_EQ(c.prefetch_waits, 0);
    EXPECT_EQ(c.prefetch_wasted, 0);
    EXPECT_EQ(tiers->Stats().promotion.prefetch_buffered_bytes, 0u);
  }
  // With prefetching: the records are read by the background thread; the promotion reads none.
  auto tiers = Tiers(0, 8);
  auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  const ColdPageRef refs[3] = {
      {&hit->cold[2].key, 1, 1}, {&hit->cold[1].key, 0, 3}, {&hit->cold[2].key, 0, 0}};
  const uint64_t disk_hits_before = disk_->stats().hits;
  const uint64_t disk_bytes_before = disk_->stats().bytes_out;
  tiers->PrefetchPages(refs);
  tiers->WaitForPrefetches();
  PromotionCounters c = tiers->promotion_counters();
  EXPECT_EQ(c.records_prefetched, 2);  // one per extent
  EXPECT_EQ(c.disk_reads, 0);
  EXPECT_EQ(disk_->stats().hits, disk_hits_before + 2);
  EXPECT_EQ(c.prefetch_buffered_bytes, 2 * kPlainRecordBytes);
  EXPECT_EQ(c.prefetch_disk_bytes, disk_->stats().bytes_out - disk_bytes_before);
  EXPECT_EQ(c.prefetch_disk_bytes, 2 * kPlainRecordBytes);  // plain q8 on disk (the default)
  // Asking again changes nothing: both records are buffered.
  tiers->PrefetchPages(refs);
  tiers->WaitForPrefetches();
  EXPECT_EQ(tiers->promotion_counters().records_prefetched, 2);
  int32_t pages[3] = {-1, -1, -1};
  ASSERT_TRUE(tiers->PromotePages(refs, pages).ok());
  EXPECT_EQ(PageBytes(*pool_, pages), reference);
  c = tiers->promotion_counters();
  EXPECT_EQ(c.disk_reads, 0);
  EXPECT_EQ(c.disk_bytes_read, 0u);
  EXPECT_EQ(c.pages_from_disk, 0);
  EXPECT_EQ(c.prefetch_hits, 2);
  EXPECT_EQ(c.pages_from_host, 1);
  EXPECT_EQ(c.hot_misses, 3);
  EXPECT_EQ(c.prefetch_waits, 0);
  EXPECT_EQ(c.prefetch_wasted, 0);
  EXPECT_EQ(disk_->stats().hits, disk_hits_before + 2);  // nothing read since
  // Hot pages are not prefetched again; a page of another extent is.
  const ColdPageRef next[2] = {refs[0], {&hit->cold[3].key, 1, 2}};
  tiers->PrefetchPages(next);
  tiers->WaitForPrefetches();
  EXPECT_EQ(tiers->promotion_counters().records_prefetched, 3);
}

// With no host tier, a record the compute thread had to read itself is kept in the prefetch
// buffer's RAM: the next miss of that extent (after another extent's record was read) decodes
// from there instead of reading the disk again; without a buffer it reads again.
TEST_F(TierPromotionTest, RecordsReadOnDemandAreKeptInThePrefetchBuffer) {
  {
    auto tiers = Tiers(64 << 20, 8);
    PublishRandom(*tiers);
  }
  for (const uint64_t prefetch_bytes : {uint64_t{0}, uint64_t{64} << 20}) {
    SCOPED_TRACE(prefetch_bytes);
    auto tiers = Tiers(0, 8, prefetch_bytes);
    auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
    ASSERT_TRUE(hit.ok()) << hit.status().ToString();
    const ColdPageRef refs[3] = {
        {&hit->cold[2].key, 1, 1}, {&hit->cold[1].key, 0, 3}, {&hit->cold[2].key, 0, 0}};
    std::vector<int32_t> pages;
    for (const ColdPageRef& r : refs) {  // one call each: extent 2, extent 1, extent 2 again
      int32_t page = -1;
      ASSERT_TRUE(tiers->PromotePages(std::span(&r, 1), std::span(&page, 1)).ok());
      pages.push_back(page);
    }
    const PromotionCounters c = tiers->promotion_counters();
    EXPECT_EQ(c.hot_misses, 3);
    EXPECT_EQ(c.prefetch_hits, 0);
    EXPECT_EQ(c.records_prefetched, 0);
    if (prefetch_bytes == 0) {
      EXPECT_EQ(c.disk_reads, 3);
      EXPECT_EQ(c.pages_from_disk, 3);
      EXPECT_EQ(c.pages_from_host, 0);
      EXPECT_EQ(c.records_kept, 0);
    } else {
      EXPECT_EQ(c.disk_reads, 2);
      EXPECT_EQ(c.pages_from_disk, 2);
      EXPECT_EQ(c.pages_from_host, 1);
      EXPECT_EQ(c.records_kept, 2);
      EXPECT_EQ(c.prefetch_wasted, 0);
      EXPECT_EQ(c.prefetch_buffered_bytes, 2 * kPlainRecordBytes);
    }
  }
}

TEST_F(TierPromotionTest, PrefetchSkipsRecordsInTheHostTier) {
  {
    auto tiers = Tiers(64 << 20, 8);
    PublishRandom(*tiers);
  }
  auto tiers = Tiers(64 << 20, 8);
  auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  const ColdPageRef first[1] = {{&hit->cold[1].key, 0, 0}};
  int32_t page = -1;
  ASSERT_TRUE(tiers->PromotePages(first, std::span(&page, 1)).ok());  // read, kept in host
  EXPECT_EQ(tiers->promotion_counters().disk_reads, 1);
  const ColdPageRef more[2] = {{&hit->cold[1].key, 1, 2}, {&hit->cold[0].key, 1, 2}};
  tiers->PrefetchPages(more);
  tiers->WaitForPrefetches();
  EXPECT_EQ(tiers->promotion_counters().records_prefetched, 1);  // extent 0 only
}

TEST_F(TierPromotionTest, PrefetchBufferStaysWithinItsBudget) {
  {
    auto tiers = Tiers(64 << 20, 8);
    PublishRandom(*tiers);
  }
  const uint64_t record_bytes = kPlainRecordBytes;
  auto tiers = Tiers(0, 8, record_bytes + record_bytes / 2);
  auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  const ColdPageRef refs[3] = {
      {&hit->cold[0].key, 1, 0}, {&hit->cold[1].key, 1, 0}, {&hit->cold[2].key, 1, 0}};
  tiers->PrefetchPages(refs);
  tiers->WaitForPrefetches();
  PromotionCounters c = tiers->promotion_counters();
  EXPECT_EQ(c.records_prefetched, 3);
  EXPECT_EQ(c.prefetch_wasted, 2);  // each pushed out, unused, by the next
  EXPECT_EQ(c.prefetch_buffered_bytes, record_bytes);
  // The one left is the last read: records are read in key order.
  const ExtentKey last = std::max({hit->cold[0].key, hit->cold[1].key, hit->cold[2].key});
  int32_t pages[3] = {-1, -1, -1};
  ASSERT_TRUE(tiers->PromotePages(refs, pages).ok());
  c = tiers->promotion_counters();
  EXPECT_EQ(c.prefetch_hits, 1);
  EXPECT_EQ(c.disk_reads, 2);
  // Promoting the same pages of that extent again from a fresh manager without prefetch gives
  // the same bytes (the buffered record is the disk's).
  const int i = last == hit->cold[0].key ? 0 : last == hit->cold[1].key ? 1 : 2;
  const std::vector<uint8_t> got = PageBytes(*pool_, std::span(pages + i, 1));
  auto plain = Tiers(0, 8, 0);
  auto hit2 = plain->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
  ASSERT_TRUE(hit2.ok());
  const ColdPageRef again[1] = {{&hit2->cold[i].key, 1, 0}};
  int32_t page = -1;
  ASSERT_TRUE(plain->PromotePages(again, std::span(&page, 1)).ok());
  EXPECT_EQ(PageBytes(*pool_, std::span(&page, 1)), got);
}

// A record that passes the disk's checksum and zstd but does not decode (its scales are NaN):
// prefetched, then refused exactly like the same record read on the compute thread, and dropped
// from every tier and the prefetch buffer, so it is never served.
TEST_F(TierPromotionTest, CorruptPrefetchedRecordIsNeverServed) {
  {
    auto tiers = Tiers(64 << 20, 8);
    PublishRandom(*tiers);
  }
  auto tiers = Tiers(0, 8);
  auto hit = tiers->AcquirePrefix("ns", tokens_, kTokens, PromoteMode::kSelected);
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  const storage::ExtentKey bad_key = hit->cold[2].key.bytes;
  {
    auto stored = disk_->Get(bad_key);
    ASSERT_TRUE(stored.ok());
    auto plain = DecompressExtent(stored->bytes());
    ASSERT_TRUE(plain.ok());
    std::fill(plain->begin() + kExtentHeaderBytes, plain->end(), uint8_t{0xFF});  // NaN scales
    ASSERT_TRUE(disk_->Remove(bad_key).ok());
    ASSERT_TRUE(disk_->Put(bad_key, stored->codec(), plain->size(), *plain).ok());
  }
  const ColdPageRef refs[2] = {{&hit->cold[1].key, 0, 1}, {&hit->cold[2].key, 0, 1}};
  tiers->PrefetchPages(refs);
  tiers->WaitForPrefetches();
  EXPECT_EQ(tiers->promotion_counters().records_prefetched, 2);
  int32_t pages[2] = {-1, -1};
  const Status s = tiers->PromotePages(refs, pages);
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
  PromotionCounters c = tiers->promotion_counters();
  EXPECT_EQ(c.disk_reads, 0);
  EXPECT_EQ(c.hot_misses, c.prefetch_hits);  // only the good extent's page (if it came first)
  EXPECT_FALSE(disk_->Contains(bad_key));    // dropped from disk ...
  EXPECT_EQ(c.prefetch_buffered_bytes, kPlainRecordBytes);  // the good extent's only
  // ... and from the prefetch buffer: asked again, nothing serves it (NotFound, not Corruption).
  const Status again = tiers->PromotePages(std::span(refs + 1, 1), std::span(pages + 1, 1));
  EXPECT_EQ(again.code(), StatusCode::kNotFound) << again.ToString();
  EXPECT_EQ(tiers->promotion_counters().disk_reads, 0);  // the disk had nothing to read
  // The good extent is still served from its prefetched record.
  ASSERT_TRUE(tiers->PromotePages(std::span(refs, 1), std::span(pages, 1)).ok());
  EXPECT_EQ(tiers->promotion_counters().prefetch_hits, 1);
  EXPECT_EQ(tiers->promotion_counters().disk_reads, 0);
}

}  // namespace
}  // namespace kvtier::cache
