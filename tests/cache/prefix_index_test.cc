#include "cache/prefix_index.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "cache/page_pool.h"
#include "kernels/fp16.h"

namespace kvtier::cache {
namespace {

KeyScheme Scheme() {
  KeyScheme s;
  s.model_fingerprint = "fp";
  s.layout = "q8/pt16/ep4/L2/H1/D8";
  return s;
}

std::vector<int32_t> Tokens(int n, int32_t start = 1) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

TierProbe SetProbe(std::string name, const std::set<ExtentKey>* set) {
  return TierProbe{std::move(name), [set](const ExtentKey& k) { return set->count(k) > 0; }};
}

TEST(PrefixIndexTest, LongestPrefixAcrossTiers) {
  PrefixIndex index(Scheme());
  const std::vector<int32_t> t = Tokens(64 * 5 + 30);
  const std::vector<ExtentKey> keys = index.KeyChain("a", t);
  ASSERT_EQ(keys.size(), 5u);
  std::set<ExtentKey> host, disk;
  host.insert(keys[0]);
  disk.insert(keys[0]);
  disk.insert(keys[1]);
  host.insert(keys[2]);
  host.insert(keys[4]);  // beyond the gap at 3: not part of the prefix
  const TierProbe tiers[] = {SetProbe("host", &host), SetProbe("disk", &disk)};
  PrefixMatch m = index.Lookup("a", t, tiers);
  EXPECT_EQ(m.keys, keys);
  EXPECT_EQ(m.matched_extents, 3);
  EXPECT_EQ(m.matched_tokens, 192);
  EXPECT_EQ(m.tier_of, (std::vector<int>{0, 1, 0}));  // first probe that has it wins
  EXPECT_EQ(m.lease.keys().size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(index.RefCount(keys[i]), 1);
  for (int i = 3; i < 5; ++i) EXPECT_EQ(index.RefCount(keys[i]), 0);  // tail released
  // A shorter query (a different sequence sharing the prefix) shares the extents.
  PrefixMatch m2 = index.Lookup("a", std::span<const int32_t>(t).first(130), tiers);
  EXPECT_EQ(m2.matched_extents, 2);
  EXPECT_EQ(index.RefCount(keys[0]), 2);
  m.lease.Release();
  EXPECT_EQ(index.RefCount(keys[0]), 1);
  EXPECT_EQ(index.RefCount(keys[2]), 0);
  // Nothing present, or no tiers: no match.
  EXPECT_EQ(index.Lookup("a", t, {}).matched_extents, 0);
  std::set<ExtentKey> none;
  const TierProbe empty[] = {SetProbe("host", &none)};
  EXPECT_EQ(index.Lookup("a", t, empty).matched_extents, 0);
}

TEST(PrefixIndexTest, NamespacesAreIsolated) {
  PrefixIndex index(Scheme());
  const std::vector<int32_t> t = Tokens(64 * 2);
  std::set<ExtentKey> host;
  for (const ExtentKey& k : index.KeyChain("alice", t)) host.insert(k);
  const TierProbe tiers[] = {SetProbe("host", &host)};
  EXPECT_EQ(index.Lookup("alice", t, tiers).matched_extents, 2);
  EXPECT_EQ(index.Lookup("bob", t, tiers).matched_extents, 0);
  EXPECT_EQ(index.Lookup("alice/salt", t, tiers).matched_extents, 0);
}

TEST(PrefixIndexTest, PinsAreNamedPerNamespaceAndRaii) {
  PrefixIndex index(Scheme());
  const std::vector<ExtentKey> keys = index.KeyChain("a", Tokens(64 * 3));
  {
    auto pin = index.Pin("a", "book", keys);
    ASSERT_TRUE(pin.ok());
    EXPECT_TRUE(pin->active());
    EXPECT_FALSE(index.IsEvictable(keys[1]));
    EXPECT_EQ(index.PinCount(keys[1]), 1);
    EXPECT_EQ(index.Pin("a", "book", keys).status().code(), StatusCode::kInvalidArgument);
    EXPECT_FALSE(index.Pin("a", "", keys).ok());
    auto other_ns = index.Pin("b", "book", std::span<const ExtentKey>(keys).first(1));
    ASSERT_TRUE(other_ns.ok());  // same name, other namespace
    EXPECT_EQ(index.PinCount(keys[0]), 2);
    ASSERT_EQ(index.Pins("a").size(), 1u);
    EXPECT_EQ(index.Pins("a")[0].name, "book");
    EXPECT_EQ(index.Pins("a")[0].extents, 3);
    EXPECT_EQ(index.Pins("b")[0].extents, 1);
    EXPECT_TRUE(index.Pins("c").empty());
    // Unpin by name (the `unpin` op): the handle becomes inert.
    EXPECT_TRUE(index.Unpin("b", "book").ok());
    EXPECT_FALSE(other_ns->active());
    EXPECT_EQ(index.Unpin("b", "book").code(), StatusCode::kNotFound);
    EXPECT_EQ(index.PinCount(keys[0]), 1);
    // A new pin of the same name is not released by the stale handle.
    auto again = index.Pin("b", "book", keys);
    ASSERT_TRUE(again.ok());
    other_ns->Release();
    EXPECT_TRUE(again->active());
    PinHandle moved = std::move(*again);
    EXPECT_TRUE(moved.active());
  }  // handles destroyed: pins released
  for (const ExtentKey& k : keys) {
    EXPECT_TRUE(index.IsEvictable(k));
    EXPECT_EQ(index.PinCount(k), 0);
  }
  EXPECT_TRUE(index.Pins("a").empty());
}

TEST(PrefixIndexTest, HandlesMayOutliveTheIndex) {
  ExtentLease lease;
  PinHandle pin;
  {
    PrefixIndex index(Scheme());
    const std::vector<ExtentKey> keys = index.KeyChain("a", Tokens(64));
    lease = index.Acquire(keys);
    pin = std::move(index.Pin("a", "p", keys)).value();
  }
  lease.Release();
  pin.Release();
  EXPECT_FALSE(pin.active());
}

// ---- HostTier ---------------------------------------------------------------------------------

class HostTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = std::move(PagePool::Create(PageShape{16, 1, 8}, 64 * 2 * 16 * 8 * 2)).value();
    for (int i = 0; i < 8; ++i) pages_.push_back(*pool_->Allocate());
    std::mt19937 rng(1);
    std::normal_distribution<float> n;
    uint16_t* base = pool_->view().base;
    for (size_t i = 0; i < 8 * pool_->view().PageBytes() / 2; ++i) {
      base[i] = kernels::F32ToF16(n(rng));
    }
  }
  ExtentView View() const { return ExtentView{pool_->view(), ExtentShape{2, 1, 8, 16, 4}, pages_}; }
  std::vector<uint8_t> Encoded(Codec c) const { return *EncodeExtent(View(), CodecSpec{c}); }
  static ExtentKey Key(int i) {
    ExtentKey k;
    k.bytes[0] = static_cast<uint8_t>(i);
    k.bytes[1] = static_cast<uint8_t>(i >> 8);
    k.bytes[31] = 1;
    return k;
  }
  std::unique_ptr<PagePool> pool_;
  std::vector<int32_t> pages_;
};

TEST_F(HostTierTest, LruEvictionAndCounters) {
  const size_t sz = Encoded(Codec::kQ8).size();
  HostTier tier(HostTierOptions{3 * sz + sz / 2});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(tier.Put(Key(i), Encoded(Codec::kQ8)).ok());
  EXPECT_EQ(tier.stats().extents, 3);
  ASSERT_NE(tier.Get(Key(0)), nullptr);  // 0 becomes most recent; 1 is the LRU now
  ASSERT_TRUE(tier.Put(Key(3), Encoded(Codec::kQ8)).ok());
  EXPECT_FALSE(tier.Contains(Key(1)));
  EXPECT_TRUE(tier.Contains(Key(0)));
  EXPECT_EQ(tier.Get(Key(1)), nullptr);
  const TierStats st = tier.stats();
  EXPECT_EQ(st.extents, 3);
  EXPECT_EQ(st.used_bytes, 3 * sz);
  EXPECT_EQ(st.hits, 1);
  EXPECT_EQ(st.misses, 1);
  EXPECT_EQ(st.evictions, 1);
  EXPECT_EQ(st.bytes_in, 4 * sz);
  EXPECT_EQ(st.bytes_out, sz);
  // Re-putting a present key stores nothing new.
  ASSERT_TRUE(tier.Put(Key(3), Encoded(Codec::kQ8)).ok());
  EXPECT_EQ(tier.stats().bytes_in, 4 * sz);
  // Garbage is refused.
  EXPECT_EQ(tier.Put(Key(9), std::vector<uint8_t>(100, 1)).code(), StatusCode::kCorruption);
  EXPECT_EQ(tier.Put(Key(9), {}).code(), StatusCode::kCorruption);
}

TEST_F(HostTierTest, LeasesAndPinsBlockEviction) {
  PrefixIndex index(Scheme());
  const size_t sz = Encoded(Codec::kQ8).size();
  HostTier tier(HostTierOptions{2 * sz}, &index);
  ASSERT_TRUE(tier.Put(Key(0), Encoded(Codec::kQ8)).ok());
  ASSERT_TRUE(tier.Put(Key(1), Encoded(Codec::kQ8)).ok());
  const ExtentKey k0 = Key(0), k1 = Key(1);
  ExtentLease lease = index.Acquire(std::span<const ExtentKey>(&k0, 1));
  auto pin = index.Pin("a", "p", std::span<const ExtentKey>(&k1, 1));
  ASSERT_TRUE(pin.ok());
  const Status full = tier.Put(Key(2), Encoded(Codec::kQ8));
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(tier.Contains(Key(0)) && tier.Contains(Key(1)));
  EXPECT_EQ(tier.stats().rejected, 1);
  EXPECT_EQ(tier.EvictUnpinned(), 0u);
  lease.Release();  // 0 is evictable again, 1 still pinned
  ASSERT_TRUE(tier.Put(Key(2), Encoded(Codec::kQ8)).ok());
  EXPECT_FALSE(tier.Contains(Key(0)));
  EXPECT_TRUE(tier.Contains(Key(1)));
  EXPECT_TRUE(index.Unpin("a", "p").ok());
  EXPECT_EQ(tier.EvictUnpinned(), 2 * sz);
  EXPECT_EQ(tier.stats().used_bytes, 0u);
  // Larger than the whole capacity.
  HostTier tiny(HostTierOptions{sz - 1});
  EXPECT_EQ(tiny.Put(Key(0), Encoded(Codec::kQ8)).code(), StatusCode::kResourceExhausted);
}

TEST_F(HostTierTest, PutExtentGetExtentRoundTrip) {
  HostTier tier(HostTierOptions{1 << 20});
  ASSERT_TRUE(tier.PutExtent(Key(5), View()).ok());
  std::vector<uint16_t> before(View().shape.RawBytes() / 2), after(before.size());
  ASSERT_TRUE(GatherExtent(View(), before).ok());
  std::vector<int32_t> fresh;
  for (int i = 0; i < 8; ++i) fresh.push_back(*pool_->Allocate());
  const ExtentView dst{pool_->view(), View().shape, fresh};
  ASSERT_TRUE(tier.GetExtent(Key(5), dst).ok());
  ASSERT_TRUE(GatherExtent(dst, after).ok());
  double max_err = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    max_err = std::max<double>(
        max_err, std::fabs(kernels::F16ToF32(before[i]) - kernels::F16ToF32(after[i])));
  }
  EXPECT_GT(max_err, 0.0);   // q8 by default: lossy
  EXPECT_LT(max_err, 0.03);  // N(0,1) rows: amax ~3, step ~0.024
  EXPECT_EQ(tier.GetExtent(Key(6), dst).code(), StatusCode::kNotFound);
  // The probe plugs into Lookup.
  PrefixIndex index(Scheme());
  const std::vector<int32_t> t = Tokens(128);
  const std::vector<ExtentKey> keys = index.KeyChain("a", t);
  ASSERT_TRUE(tier.PutExtent(keys[0], View()).ok());
  const TierProbe tiers[] = {tier.Probe()};
  EXPECT_EQ(index.Lookup("a", t, tiers).matched_extents, 1);
}

TEST_F(HostTierTest, BudgetHoldsUnderChurn) {
  PrefixIndex index(Scheme());
  const std::vector<uint8_t> blobs[] = {Encoded(Codec::kF16), Encoded(Codec::kQ8),
                                        Encoded(Codec::kQ4)};
  const uint64_t capacity = 5 * blobs[0].size() + 123;
  HostTier tier(HostTierOptions{capacity}, &index);
  std::mt19937 rng(42);
  std::map<int, ExtentLease> leases;
  std::map<int, PinHandle> pins;
  std::map<int, size_t> model;  // key -> size of what the tier should hold
  int64_t evictions_seen = 0;
  for (int step = 0; step < 20000; ++step) {
    const int k = static_cast<int>(rng() % 40);
    const ExtentKey key = Key(k);
    switch (rng() % 8) {
      case 0:
      case 1:
      case 2: {
        const std::vector<uint8_t>& b = blobs[k % 3];
        const Status st = tier.Put(key, b);
        if (st.ok()) {
          model[k] = b.size();
        } else {
          ASSERT_EQ(st.code(), StatusCode::kResourceExhausted);
        }
        break;
      }
      case 3:
        if (tier.Get(key) == nullptr) {
          ASSERT_EQ(model.count(k), 0u);
        }
        break;
      case 4:
        if (leases.count(k)) {
          leases.erase(k);
        } else {
          leases[k] = index.Acquire(std::span<const ExtentKey>(&key, 1));
        }
        break;
      case 5:
        if (pins.count(k)) {
          pins.erase(k);
        } else {
          pins[k] = std::move(index.Pin("ns", "pin" + std::to_string(k),
                                        std::span<const ExtentKey>(&key, 1)))
                        .value();
        }
        break;
      case 6:
        if (rng() % 50 == 0) tier.EvictUnpinned();
        break;
      case 7:
        if (rng() % 10 == 0 && tier.Erase(key)) model.erase(k);
        break;
    }
    const TierStats st = tier.stats();
    ASSERT_LE(st.used_bytes, capacity) << "step " << step;
    // Whatever disappeared was evictable: leased or pinned extents stay.
    for (auto it = model.begin(); it != model.end();) {
      if (!tier.Contains(Key(it->first))) {
        ASSERT_EQ(leases.count(it->first), 0u) << "leased extent evicted at step " << step;
        ASSERT_EQ(pins.count(it->first), 0u) << "pinned extent evicted at step " << step;
        ++evictions_seen;
        it = model.erase(it);
      } else {
        ++it;
      }
    }
    uint64_t sum = 0;
    for (const auto& [mk, sz] : model) sum += sz;
    ASSERT_EQ(st.used_bytes, sum);
    ASSERT_EQ(st.extents, static_cast<int64_t>(model.size()));
  }
  EXPECT_GT(evictions_seen, 100);
  EXPECT_GT(tier.stats().rejected, 0);
}

TEST_F(HostTierTest, ConcurrentUseKeepsTheBudget) {
  PrefixIndex index(Scheme());
  const std::vector<uint8_t> blob = Encoded(Codec::kQ8);
  const uint64_t capacity = 8 * blob.size();
  HostTier tier(HostTierOptions{capacity}, &index);
  std::atomic<bool> over{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(w);
      for (int i = 0; i < 3000; ++i) {
        const ExtentKey key = Key(static_cast<int>(rng() % 64));
        ExtentLease lease = index.Acquire(std::span<const ExtentKey>(&key, 1));
        if (rng() % 2) {
          (void)tier.Put(key, blob);
        } else {
          auto b = tier.Get(key);
          if (b != nullptr && b->size() != blob.size()) over = true;
        }
        if (tier.stats().used_bytes > capacity) over = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(over.load());
  EXPECT_LE(tier.stats().used_bytes, capacity);
  // Everything is evictable once the leases are gone.
  const uint64_t used = tier.stats().used_bytes;
  EXPECT_GT(used, 0u);
  EXPECT_EQ(tier.EvictUnpinned(), used);
  EXPECT_EQ(tier.stats().used_bytes, 0u);
}

}  // namespace
}  // namespace kvtier::cache
