// cache/tier_manager.h — the KV tiers behind the prefix cache (DESIGN §4): where each extent
// is, promotion on a hit, write-through to the lower tiers, eviction under byte budgets, pins.
//
// Thread safety: not thread-safe. The TierManager belongs to the engine's compute thread, like
// the PagePool it draws on: every method must be called from one thread at a time. (The
// HostTier, PrefixIndex and SegmentStore it uses are themselves thread-safe, so stats may be read
// from them concurrently.) Internally it owns one background thread, the record prefetcher (see
// PrefetchPages), which only reads the SegmentStore and fills its own mutex-protected buffer; it
// never touches the pool, the page tables, the hot cache or the host tier, and is joined by the
// destructor.
//
// Tiers:
//   device — the pages themselves: a published extent keeps a reference on its 4 × n_layers
//            pages, so a later sequence adopts them without a copy. Bounded by the page pool;
//            EnsureFreePages evicts least-recently-used extents that no live sequence holds.
//   host   — encoded extents in RAM (q8 by default), LRU under host_capacity_bytes.
//   disk   — encoded extents (plain q8 by default, zstd optional) in the SegmentStore (segment
//            files + RocksDB index), surviving restarts, LRU by segment under its disk budget.
// Publishing writes an extent through to host and disk; a hit in a lower tier is decoded into
// fresh device pages (and copied up into host when it came from disk).
//
// Selected-page promotion (DESIGN §5, engine/README.md): AcquirePrefix with
// PromoteMode::kSelected (or kWholeIfFits when the whole prefix does not fit on the device)
// leaves extents that are not on the device *cold*: their page-table entries are negative
// (ColdEntry) and only their digests come back (ColdExtent). PromotePages then brings single
// pages of single layers onto the device, decoded from the host tier's record (a disk miss reads
// the record once and keeps it, zstd stripped, in the host tier), into a *hot cache*: an LRU of
// (extent, layer, page) -> device page under hot_cache_pages. Digests of every published extent
// are kept in RAM (DigestStore, LRU under digest_cache_bytes) and on disk next to the extent
// (a separate record under DigestRecordKey), so a cold extent is scored without decoding it.
//
// Prefetch (DESIGN §5, engine/README.md): PrefetchPages names pages the caller expects to
// promote soon (the engine: the previous step's selection of the next layer). Those not hot and
// whose extent record is neither in the host tier nor already prefetched are queued to a
// background thread that reads the record from disk and strips zstd into a small buffer (LRU
// under TierOptions::prefetch_bytes); a later page miss takes the record from there instead of
// reading the disk on the compute thread, waiting when the read is in progress.
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
namespace internal {
class RecordPrefetcher;
}

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
  // Plain q8 by default: zstd saves ~10% of the bytes after q8 but a promoted page from a disk
  // record must then un-zstd the whole record first; without it selected-page promotion is ~2x
  // faster and warm TTFT from disk the same (BENCHMARKS.md, "zstd on disk"). "+zstd" for space.
  CodecSpec disk_codec{Codec::kQ8, /*zstd=*/false};
  kernels::ThreadPool* threads = nullptr;  // borrowed: decodes promoted extents in parallel
  int64_t hot_cache_pages = 0;              // hot cache of promoted single pages (see above)
  uint64_t digest_cache_bytes = 256ull << 20;  // resident digests of cold extents
  // Buffer of disk records read ahead by PrefetchPages' background thread (plain, zstd
  // stripped). 0, or no disk tier: no prefetching and no thread.
  uint64_t prefetch_bytes = 64ull << 20;
};

// How AcquirePrefix brings extents that are not on the device.
enum class PromoteMode {
  kWhole,        // every page of every extent is decoded onto the device (dense requests)
  kSelected,     // none: they stay cold; PromotePages brings single pages (sparse requests)
  kWholeIfFits,  // kWhole when the whole sequence fits on the device, else kSelected
};

// A cold extent of a sequence: its KV is in the host or disk tier; its digests are resident,
// [layer][page in extent][kv_head][2][head_dim] f16 (kernels::KvPool digest layout per page).
struct ColdExtent {
  ExtentKey key;
  std::shared_ptr<const std::vector<uint16_t>> digests;
};

// Page-table entry of page `page_in_extent` of cold extent `cold_index` (negative), and back.
inline int32_t ColdEntry(int64_t cold_index, int page_in_extent, int extent_pages = kExtentPages) {
  return -1 - static_cast<int32_t>(cold_index * extent_pages + page_in_extent);
}
inline int64_t ColdIndexOf(int32_t entry, int extent_pages = kExtentPages) {
  return (-1 - static_cast<int64_t>(entry)) / extent_pages;
}
inline int ColdPageOf(int32_t entry, int extent_pages = kExtentPages) {
  return static_cast<int>((-1 - static_cast<int64_t>(entry)) % extent_pages);
}

// One page of one layer of a cold extent, to promote.
struct ColdPageRef {
  const ExtentKey* key = nullptr;
  int layer = 0;
  int page_in_extent = 0;
};

// Selected-page promotion counters, cumulative since construction.
struct PromotionCounters {
  int64_t hot_hits = 0;         // requested pages already in the hot cache
  int64_t hot_misses = 0;       // pages decoded into the hot cache
  // Misses decoded from a record in RAM: the host tier's, or a record read on demand earlier and
  // kept in the prefetch buffer (RecordPrefetcher::Keep).
  int64_t pages_from_host = 0;
  // Of the misses decoded from one record in one call, the first counts where the record came
  // from and the others as host (the record is in RAM by then):
  int64_t pages_from_disk = 0;  // misses whose record was read from disk (on the compute thread)
  int64_t prefetch_hits = 0;    // misses whose record came from the prefetch buffer
  uint64_t bytes_decompressed = 0;  // f16 KV bytes written by page decodes (misses x page bytes)
  uint64_t disk_bytes_read = 0;     // extent records read from disk for page misses
  int64_t disk_reads = 0;           // ... by the compute thread (on the critical path)
  // Prefetch (PrefetchPages): records the background thread read and decompressed; page misses
  // that found their record being read and waited for it; prefetched records dropped from the
  // buffer without serving any page; disk bytes the background thread read.
  int64_t records_prefetched = 0;
  int64_t prefetch_waits = 0;
  int64_t prefetch_wasted = 0;
  uint64_t prefetch_disk_bytes = 0;
  int64_t records_kept = 0;  // records read on demand and kept in the prefetch buffer
  int64_t digests_from_disk = 0;     // cold extents whose digests were read from disk
  int64_t digests_recomputed = 0;    // cold extents whose digests had to be computed by decoding
  double promote_ms = 0;             // time in PromotePages (decode, disk reads) and PrefetchPages
  int64_t hot_pages = 0;             // now in the hot cache
  uint64_t prefetch_buffered_bytes = 0;  // now in the prefetch buffer
};

// What a prefix lookup brought onto the device.
struct PrefixHit {
  int64_t tokens = 0;  // cached tokens (a multiple of the extent size)
  int64_t tokens_from_device = 0, tokens_from_host = 0, tokens_from_disk = 0;
  uint64_t bytes_promoted = 0;  // encoded bytes decoded into device pages
  // Per layer, the pages of positions [0, tokens): ready for SequenceKv::AdoptPrefix. Entries
  // < 0 are cold (ColdEntry into `cold`), only with PromoteMode kSelected.
  std::vector<std::vector<int32_t>> page_tables;
  std::vector<ColdExtent> cold;
  int64_t tokens_cold = 0;  // of tokens_from_host/disk: left cold (not promoted)
  ExtentLease lease;  // keeps the matched extents from being evicted while the sequence lives
};

struct TierStatsSnapshot {
  TierCounters device;
  TierStats host;
  storage::SegmentStoreStats disk;
  bool has_host = false, has_disk = false;
  std::string disk_io_engine;  // "io_uring" or "threads"
  PromotionCounters promotion;  // selected-page promotion and the hot cache
  int64_t hot_capacity_pages = 0;
  int64_t disk_write_errors = 0;  // write-through failures (the request still succeeds)
  uint64_t disk_digest_records = 0;  // digest records (not in disk.records, in its bytes)
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
  // With PromoteMode::kSelected the extents not on the device stay cold (see the file comment);
  // kWholeIfFits picks kWhole when the promoted extents and the rest of a sequence of
  // `sequence_tokens` tokens fit on the device (evicting unused device extents to check).
  Result<PrefixHit> AcquirePrefix(std::string_view ns, std::span<const int32_t> tokens,
                                  int64_t max_tokens, PromoteMode mode = PromoteMode::kWhole,
                                  int64_t sequence_tokens = 0);

  // Device pages holding the cold pages `refs` (keys of extents the caller leases), in order,
  // into `pages`: hot-cache hits, or decoded now. The pages stay valid until the next
  // PromotePages or EnsureFreePages call. ResourceExhausted when the device cannot hold them
  // (the hot cache may exceed hot_cache_pages during one call, not the pool); NotFound/Corruption
  // when no tier can serve a record (it is dropped from the tier that served it).
  Status PromotePages(std::span<const ColdPageRef> refs, std::span<int32_t> pages);
  // Hints that the cold pages `refs` are likely to be promoted soon: the records of the extents
  // of those not in the hot cache, unless in the host tier or already prefetched (or being
  // read), are queued for the background thread. Cheap (hash lookups, no I/O); a no-op without
  // prefetching. The keys are copied: `refs` need not outlive the call.
  void PrefetchPages(std::span<const ColdPageRef> refs);
  // Blocks until the prefetch queue is empty and no read is in progress (tests, benchmarks).
  void WaitForPrefetches();
  PromotionCounters promotion_counters() const;

  // Publishes the whole extents of a sequence's first n_tokens tokens: the device tier takes a
  // reference on their pages. Extents already cached are only touched (LRU).
  Status Publish(std::string_view ns, std::span<const int32_t> tokens,
                 std::span<const std::vector<int32_t>> page_tables, int64_t n_tokens);

  // Writes the extents published since the last call through to the host and disk tiers (and
  // syncs the disk tier). Cheap when there are no lower tiers. Failures of the lower tiers are
  // counted and logged, not returned: the device tier keeps serving.
  void WriteThrough();

  // Evicts least-recently-used device extents no sequence holds, then hot-cache pages not in
  // use by the current PromotePages call, until `pages` pages are free in the pool.
  // ResourceExhausted when that is impossible.
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
  // Disk key of the digest record of the extent `key` (SHA-256 of a label and the key).
  static storage::ExtentKey DigestRecordKey(const ExtentKey& key);
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
  // A device hit: counts it, marks the extent recently used, appends its pages to hit's tables.
  void ServeFromDevice(DeviceExtent& dev, PrefixHit* hit);
  Result<PrefixHit> AcquireWhole(std::string_view ns, PrefixMatch& match,
                                 const std::vector<TierProbe>& probes);
  Result<PrefixHit> AcquireSelected(std::string_view ns, PrefixMatch& match,
                                    const std::vector<TierProbe>& probes);

  // Digests: [layer][page][DigestHalfs] f16 of an extent.
  size_t ExtentDigestHalfs() const;
  std::shared_ptr<const std::vector<uint16_t>> DigestsOfPages(std::span<const int32_t> pages) const;
  void RememberDigests(const ExtentKey& key, std::shared_ptr<const std::vector<uint16_t>> d);
  std::shared_ptr<const std::vector<uint16_t>> FindDigests(const ExtentKey& key);
  // Writes the extent's digest record to the disk tier unless it has one; true if written.
  bool StoreDigestRecord(const ExtentKey& key, const std::vector<uint16_t>& digests);
  // Decodes a whole encoded extent into scratch pages to compute its digests (the fallback when
  // neither RAM nor disk has them).
  Result<std::shared_ptr<const std::vector<uint16_t>>> ComputeDigests(
      std::span<const uint8_t> encoded);
  // Where RecordForPages found a record.
  enum class RecordSource { kRam, kDisk, kPrefetch };
  // The encoded record of a cold extent for page decodes: the last record read, the host tier,
  // the prefetch buffer (waiting for a read in progress), else disk. A record read from disk or
  // taken from the prefetch buffer is kept in the host tier without zstd (if it has room) and in
  // last_disk_.
  Result<std::shared_ptr<const std::vector<uint8_t>>> RecordForPages(const ExtentKey& key,
                                                                     RecordSource* source);
  // Forgets a record that failed to decode: host tier, disk, prefetch buffer, last_disk_.
  void DropBadRecord(const ExtentKey& key);

  struct HotKey {
    ExtentKey key;
    int32_t layer = 0;
    int32_t page = 0;
    bool operator==(const HotKey&) const = default;
  };
  struct HotKeyHash {
    size_t operator()(const HotKey& k) const {
      return ExtentKeyHash()(k.key) ^ (static_cast<size_t>(k.layer) * 131 + k.page) * 0x9E3779B9u;
    }
  };
  struct HotEntry {
    int32_t page = 0;
    uint64_t stamp = 0;       // the PromotePages call that last used it
    std::list<HotKey>::iterator lru;
  };
  using HotMap = std::unordered_map<HotKey, HotEntry, HotKeyHash>;
  // Drops the least recently used hot page not used by the current call; false if none.
  bool EvictOneHot();
  void DropHot(HotMap::iterator it);
  // A free device page for the hot cache (evicting as needed).
  Result<int32_t> HotPage();

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

  // Resident digests (RAM), LRU under options_.digest_cache_bytes.
  struct DigestEntry {
    std::shared_ptr<const std::vector<uint16_t>> digests;
    std::list<ExtentKey>::iterator lru;
  };
  std::unordered_map<ExtentKey, DigestEntry, ExtentKeyHash> digests_;
  std::list<ExtentKey> digest_lru_;
  uint64_t digest_bytes_ = 0;

  // Hot cache of promoted single pages.
  HotMap hot_;
  std::list<HotKey> hot_lru_;  // front: most recently used
  uint64_t hot_stamp_ = 0;     // the current PromotePages call
  PromotionCounters promotion_;
  // The last disk record read for page decodes (plain), reused while one call walks its pages.
  ExtentKey last_disk_key_;
  std::shared_ptr<const std::vector<uint8_t>> last_disk_;
  // Background reads of records for PrefetchPages; null when prefetching is off.
  std::unique_ptr<internal::RecordPrefetcher> prefetch_;
  std::vector<ExtentKey> prefetch_keys_;  // PrefetchPages scratch
};

}  // namespace kvtier::cache
