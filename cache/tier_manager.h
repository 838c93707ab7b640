// cache/tier_manager.h — the KV tiers behind the prefix cache (DESIGN §4): which extents are
// where, promotion on a hit, demotion and eviction under byte budgets.
//
// Thread safety: not thread-safe. The TierManager belongs to the engine's compute thread, like
// the PagePool it draws on.
//
// Tiers:
//   device — the pages themselves: a published extent keeps a reference on its 4 × n_layers
//            pages, so a later sequence adopts them without a copy. Bounded by the page pool;
//            EnsureFreePages evicts least-recently-used extents that no live sequence holds.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "cache/extent.h"
#include "cache/extent_key.h"
#include "cache/page_pool.h"

namespace kvtier::cache {

struct TierCounters {
  int64_t extents = 0;
  uint64_t bytes = 0;
  int64_t hits = 0;    // extents found here by a lookup
  int64_t misses = 0;  // extents looked for here and not found
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  int64_t evictions = 0;
};

// What a prefix lookup brought onto the device.
struct PrefixHit {
  int64_t tokens = 0;  // cached tokens (a multiple of the extent size)
  int64_t tokens_from_device = 0;
  // Per layer, the pages of positions [0, tokens): ready for SequenceKv::AdoptPrefix.
  std::vector<std::vector<int32_t>> page_tables;
};

class TierManager {
 public:
  TierManager(PagePool& pool, const ExtentShape& shape, KeyScheme scheme);
  ~TierManager();
  TierManager(const TierManager&) = delete;
  TierManager& operator=(const TierManager&) = delete;

  // The longest prefix of `tokens` made of whole cached extents of namespace `ns`, at most
  // max_tokens long, brought onto the device. The returned pages stay valid while the caller
  // holds them (adopt them into a SequenceKv before calling anything else here).
  Result<PrefixHit> AcquirePrefix(std::string_view ns, std::span<const int32_t> tokens,
                                  int64_t max_tokens);

  // Publishes the whole extents of a sequence's first n_tokens tokens: the device tier takes a
  // reference on their pages. Extents already cached are only touched (LRU).
  Status Publish(std::string_view ns, std::span<const int32_t> tokens,
                 std::span<const std::vector<int32_t>> page_tables, int64_t n_tokens);

  // Evicts least-recently-used device extents no sequence holds until `pages` pages are free
  // in the pool. ResourceExhausted when that is impossible.
  Status EnsureFreePages(int64_t pages);

  // Drops every unpinned device extent (what `evict` does for the device tier).
  uint64_t EvictDevice();

  const TierCounters& device_counters() const { return device_; }
  const KeyScheme& scheme() const { return scheme_; }

 private:
  struct DeviceExtent {
    std::vector<int32_t> pages;  // layer-major, shape_.extent_pages per layer
    std::list<ExtentKey>::iterator lru;
  };
  bool HeldOnlyByCache(const DeviceExtent& e) const;
  void DropDevice(std::unordered_map<ExtentKey, DeviceExtent, ExtentKeyHash>::iterator it);

  PagePool& pool_;
  const ExtentShape shape_;
  const KeyScheme scheme_;
  std::unordered_map<ExtentKey, DeviceExtent, ExtentKeyHash> device_map_;
  std::list<ExtentKey> device_lru_;  // front: most recently used
  TierCounters device_;
};

}  // namespace kvtier::cache
