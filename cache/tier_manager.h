// cache/tier_manager.h — the KV tiers behind the prefix cache (DESIGN §4): where each extent
// is, promotion on a hit, write-through to the lower tiers, eviction under byte budgets, pins.
//
// Thread safety: not thread-safe. The TierManager belongs to the engine's compute thread, like
// the PagePool it draws on. (The HostTier, PrefixIndex and SegmentStore it uses are themselves
// thread-safe, so stats may be read from them concurrently.)
//
// Tiers:
//   device — the pages themselves: a published extent keeps a reference on its 4 × n_layers
//            pages, so a later sequence adopts them without a copy. Bounded by the page pool;
//            EnsureFreePages evicts least-recently-used extents that no live sequence holds.
//   host   — encoded extents in RAM (q8 by default), LRU under host_capacity_bytes.
//   disk   — encoded + zstd extents in the SegmentStore (segment files + RocksDB index),
//            surviving restarts, LRU by segment under its disk budget.
// Publishing writes an extent through to host and disk; a hit in a lower tier is decoded into
// fresh device pages (and copied up into host when it came from disk).
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
#include "cache/codec.h"
#include "cache/extent.h"
#include "cache/extent_key.h"
#include "cache/page_pool.h"
#include "cache/prefix_index.h"
#include "kernels/cpu/thread_pool.h"
#include "storage/segment_store.h"

namespace kvtier::cache {

struct TierCounters {
  int64_t extents = 0;
  uint64_t bytes = 0;
  int64_t hits = 0;    // extents served from this tier by a lookup
  int64_t misses = 0;  // lookups that stopped at an extent no tier had
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  int64_t evictions = 0;
};

struct TierOptions {
  uint64_t host_capacity_bytes = 0;  // 0: no host tier
  CodecSpec host_codec{Codec::kQ8, /*zstd=*/false};
  storage::SegmentStore* disk = nullptr;  // borrowed; null: no disk tier
  CodecSpec disk_codec{Codec::kQ8, /*zstd=*/true};
  kernels::ThreadPool* threads = nullptr;  // borrowed: decodes promoted extents in parallel
};

// What a prefix lookup brought onto the device.
struct PrefixHit {
  int64_t tokens = 0;  // cached tokens (a multiple of the extent size)
  int64_t tokens_from_device = 0, tokens_from_host = 0, tokens_from_disk = 0;
  uint64_t bytes_promoted = 0;  // encoded bytes decoded into device pages
  // Per layer, the pages of positions [0, tokens): ready for SequenceKv::AdoptPrefix.
  std::vector<std::vector<int32_t>> page_tables;
  ExtentLease lease;  // keeps the matched extents from being evicted while the sequence lives
};

struct TierStatsSnapshot {
  TierCounters device;
  TierStats host;
  storage::SegmentStoreStats disk;
  bool has_host = false, has_disk = false;
  std::string disk_io_engine;  // "io_uring" or "threads"
  int64_t disk_write_errors = 0;  // write-through failures (the request still succeeds)
};

class TierManager {
 public:
  TierManager(PagePool& pool, const ExtentShape& shape, KeyScheme scheme, TierOptions options);
  ~TierManager();
  TierManager(const TierManager&) = delete;
  TierManager& operator=(const TierManager&) = delete;

  // The longest prefix of `tokens` made of whole cached extents of namespace `ns`, at most
  // max_tokens long, brought onto the device (promoted from host or disk as needed). The pages
  // stay valid while the caller holds them (adopt them into a SequenceKv before calling
  // anything else here). An extent that fails to decode ends the prefix there (it is dropped
  // from its tier and counted), so bad data is recomputed, never served.
  Result<PrefixHit> AcquirePrefix(std::string_view ns, std::span<const int32_t> tokens,
                                  int64_t max_tokens);

  // Publishes the whole extents of a sequence's first n_tokens tokens: the device tier takes a
  // reference on their pages. Extents already cached are only touched (LRU).
  Status Publish(std::string_view ns, std::span<const int32_t> tokens,
                 std::span<const std::vector<int32_t>> page_tables, int64_t n_tokens);

  // Writes the extents published since the last call through to the host and disk tiers (and
  // syncs the disk tier). Cheap when there are no lower tiers. Failures of the lower tiers are
  // counted and logged, not returned: the device tier keeps serving.
  void WriteThrough();

  // Evicts least-recently-used device extents no sequence holds until `pages` pages are free
  // in the pool. ResourceExhausted when that is impossible.
  Status EnsureFreePages(int64_t pages);

  // Pins the whole extents of `tokens` in `ns` under `name` (they must be cached: call after
  // Publish). Pinned extents are never evicted from any tier until Unpin.
  Status Pin(std::string_view ns, std::string_view name, std::span<const int32_t> tokens);
  Status Unpin(std::string_view ns, std::string_view name);
  std::vector<PinInfo> Pins(std::string_view ns) const { return index_.Pins(ns); }

  // Drops the unpinned, unleased extents of namespace `ns` known to this process from `tier`
  // ("device", "host", "disk" or "all"). Returns the bytes freed.
  Result<uint64_t> Evict(std::string_view ns, std::string_view tier);

  TierStatsSnapshot Stats() const;
  const KeyScheme& scheme() const { return index_.scheme(); }

 private:
  struct DeviceExtent {
    std::vector<int32_t> pages;  // layer-major, shape_.extent_pages per layer
    std::list<ExtentKey>::iterator lru;
  };
  using DeviceMap = std::unordered_map<ExtentKey, DeviceExtent, ExtentKeyHash>;

  bool DeviceEvictable(const ExtentKey& key, const DeviceExtent& e) const;
  void DropDevice(DeviceMap::iterator it);
  void InsertDevice(const ExtentKey& key, std::vector<int32_t> pages);
  std::vector<TierProbe> Probes() const;
  ExtentView View(std::span<const int32_t> pages) const;

  PagePool& pool_;
  const ExtentShape shape_;
  const TierOptions options_;
  PrefixIndex index_;
  std::unique_ptr<HostTier> host_;
  DeviceMap device_map_;
  std::list<ExtentKey> device_lru_;  // front: most recently used
  TierCounters device_;
  // The namespace of every extent this process published or promoted (for per-namespace
  // eviction; the key itself does not reveal it).
  std::unordered_map<ExtentKey, std::string, ExtentKeyHash> owner_ns_;
  std::vector<ExtentKey> pending_write_through_;
  std::unordered_map<std::string, PinHandle> pins_;  // by ns + '\0' + name
  int64_t write_errors_ = 0;
};

}  // namespace kvtier::cache
