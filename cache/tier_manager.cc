#include "cache/tier_manager.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "base/sha256.h"
#include "cache/internal/record_prefetcher.h"
#include "kernels/cpu/retrieval.h"

namespace kvtier::cache {
namespace {

storage::ExtentKey StorageKey(const ExtentKey& k) { return k.bytes; }

// SegmentStore codec byte of a digest record (extent records use their Codec id, 1..3).
constexpr uint8_t kDigestRecordCodec = 0xD1;

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string PinKey(std::string_view ns, std::string_view name) {
  std::string k(ns);
  k.push_back('\0');
  k.append(name);
  return k;
}

}  // namespace

TierManager::TierManager(PagePool& pool, const ExtentShape& shape, KeyScheme scheme,
                         TierOptions options)
    : pool_(pool), shape_(shape), options_(options), index_(std::move(scheme)) {
  if (options_.host_capacity_bytes > 0) {
    host_ = std::make_unique<HostTier>(
        HostTierOptions{options_.host_capacity_bytes, options_.host_codec}, &index_);
  }
  if (options_.disk != nullptr && options_.prefetch_bytes > 0) {
    prefetch_ = std::make_unique<internal::RecordPrefetcher>(*options_.disk,
                                                             options_.prefetch_bytes);
  }
}

TierManager::~TierManager() {
  prefetch_.reset();  // joins the background thread first
  while (!hot_.empty()) DropHot(hot_.begin());
  pins_.clear();
  while (!device_map_.empty()) DropDevice(device_map_.begin());
}

ExtentView TierManager::View(std::span<const int32_t> pages) const {
  return ExtentView{pool_.view(), shape_, pages};
}

bool TierManager::DeviceEvictable(const ExtentKey& key, const DeviceExtent& e) const {
  if (!index_.IsEvictable(key)) return false;
  // A live sequence may hold the pages without a lease (it published them itself).
  return std::all_of(e.pages.begin(), e.pages.end(),
                     [&](int32_t p) { return pool_.refs(p) == 1; });
}

void TierManager::DropDevice(DeviceMap::iterator it) {
  for (int32_t p : it->second.pages) pool_.Free(p);
  device_lru_.erase(it->second.lru);
  device_.extents -= 1;
  device_.bytes -= it->second.pages.size() * pool_.page_bytes();
  device_map_.erase(it);
}

void TierManager::InsertDevice(const ExtentKey& key, std::vector<int32_t> pages) {
  device_lru_.push_front(key);
  device_.bytes += pages.size() * pool_.page_bytes();
  device_.bytes_in += pages.size() * pool_.page_bytes();
  device_.extents += 1;
  device_map_.emplace(key, DeviceExtent{std::move(pages), device_lru_.begin()});
}

std::vector<TierProbe> TierManager::Probes() const {
  std::vector<TierProbe> probes;
  probes.push_back({"device", [this](const ExtentKey& k) { return device_map_.count(k) > 0; }});
  if (host_) probes.push_back(host_->Probe("host"));
  if (options_.disk != nullptr) {
    storage::SegmentStore* disk = options_.disk;
    probes.push_back({"disk", [disk](const ExtentKey& k) { return disk->Contains(k.bytes); }});
  }
  return probes;
}

Result<PrefixHit> TierManager::AcquirePrefix(std::string_view ns, std::span<const int32_t> tokens,
                                             int64_t max_tokens, PromoteMode mode,
                                             int64_t sequence_tokens) {
  const int64_t usable = std::clamp<int64_t>(max_tokens, 0, static_cast<int64_t>(tokens.size()));
  const std::vector<TierProbe> probes = Probes();
  PrefixMatch match = index_.Lookup(ns, tokens.first(usable), probes);
  if (match.matched_extents < static_cast<int64_t>(match.keys.size())) ++device_.misses;
  if (mode == PromoteMode::kWholeIfFits) {
    // Pages the sequence will need beyond the extents already on the device.
    int64_t on_device = 0;
    for (int64_t i = 0; i < match.matched_extents; ++i) {
      on_device += device_map_.count(match.keys[i]);
    }
    const int64_t lower = match.matched_extents - on_device;
    const int64_t seq_pages =
        std::max(sequence_tokens, match.matched_tokens) / shape_.page_tokens + 1;
    const int64_t need = (seq_pages - on_device * shape_.extent_pages) * shape_.n_layers;
    mode = lower == 0 || EnsureFreePages(need).ok() ? PromoteMode::kWhole : PromoteMode::kSelected;
  }
  if (mode == PromoteMode::kSelected) return AcquireSelected(ns, match, probes);
  return AcquireWhole(ns, match, probes);
}

void TierManager::ServeFromDevice(DeviceExtent& dev, PrefixHit* hit) {
  ++device_.hits;
  device_lru_.splice(device_lru_.begin(), device_lru_, dev.lru);
  for (int l = 0; l < shape_.n_layers; ++l) {
    const auto first = dev.pages.begin() + static_cast<ptrdiff_t>(l) * shape_.extent_pages;
    hit->page_tables[l].insert(hit->page_tables[l].end(), first, first + shape_.extent_pages);
  }
}

Result<PrefixHit> TierManager::AcquireWhole(std::string_view ns, PrefixMatch& match,
                                            const std::vector<TierProbe>& probes) {
  PrefixHit hit;
  hit.page_tables.resize(shape_.n_layers);
  const int64_t extent_tokens = shape_.tokens();

  // Extents only on disk are read all at once (many I/Os in flight).
  std::vector<storage::ExtentKey> disk_keys;
  for (int64_t i = 0; i < match.matched_extents; ++i) {
    if (probes[match.tier_of[i]].name == "disk" && device_map_.count(match.keys[i]) == 0) {
      disk_keys.push_back(StorageKey(match.keys[i]));
    }
  }
  std::vector<Result<storage::StoredExtent>> disk_reads;
  if (!disk_keys.empty()) disk_reads = options_.disk->MultiGet(disk_keys);

  // 1. In order: where each extent comes from, and fresh pages for those to be decoded. Stops
  //    at the first extent that is not available after all.
  struct Promotion {
    int64_t index = 0;
    bool from_disk = false;
    std::shared_ptr<const std::vector<uint8_t>> host_bytes;
    Result<storage::StoredExtent>* disk_read = nullptr;
    std::span<const uint8_t> bytes;
    std::vector<int32_t> pages;
    Status status;
  };
  std::vector<Promotion> promotions;
  int64_t available = 0;
  size_t next_disk = 0;
  for (int64_t i = 0; i < match.matched_extents; ++i, ++available) {
    const ExtentKey& key = match.keys[i];
    if (device_map_.count(key) != 0) continue;
    Promotion p;
    p.index = i;
    if (probes[match.tier_of[i]].name == "host") {
      p.host_bytes = host_->Get(key);
      if (!p.host_bytes) break;  // evicted since the lookup
      p.bytes = *p.host_bytes;
    } else {
      p.from_disk = true;
      p.disk_read = &disk_reads[next_disk++];
      if (!p.disk_read->ok()) {
        std::fprintf(stderr, "kvtier: cached extent %s not read from disk: %s\n",
                     key.Hex().substr(0, 16).c_str(), p.disk_read->status().ToString().c_str());
        break;
      }
      p.bytes = (*p.disk_read)->bytes();
    }
    if (!EnsureFreePages(static_cast<int64_t>(shape_.n_layers) * shape_.extent_pages).ok()) break;
    auto pages = AllocateExtentPages(pool_, shape_.n_layers, shape_.extent_pages);
    if (!pages.ok()) break;
    p.pages = std::move(pages).value();
    promotions.push_back(std::move(p));
  }

  // 2. Decode into the pages, extents in parallel (each writes only its own pages).
  auto decode = [&](int64_t begin, int64_t end) {
    std::vector<kernels::PageRef> refs;
    for (int64_t j = begin; j < end; ++j) {
      promotions[j].status = DecodeExtent(promotions[j].bytes, View(promotions[j].pages));
      if (!promotions[j].status.ok()) continue;
      refs.clear();  // pages filled by a copy get their digests here
      for (int32_t page : promotions[j].pages) refs.push_back({page, 0, shape_.page_tokens});
      kernels::UpdateDigests(pool_.view(), refs);
    }
  };
  if (options_.threads != nullptr && promotions.size() > 1) {
    options_.threads->ParallelFor(static_cast<int64_t>(promotions.size()), 1, decode);
  } else {
    decode(0, static_cast<int64_t>(promotions.size()));
  }

  // 3. In order again: the prefix ends at the first extent that failed to decode (it is dropped
  //    from its tier: bad bytes are recomputed, never served); the others join the device tier.
  int64_t served = available;
  for (Promotion& p : promotions) {
    const ExtentKey& key = match.keys[p.index];
    if (served < available || !p.status.ok()) {
      if (served == available) {
        served = p.index;
        std::fprintf(stderr, "kvtier: cached extent %s from %s not used: %s\n",
                     key.Hex().substr(0, 16).c_str(), p.from_disk ? "disk" : "host",
                     p.status.ToString().c_str());
        if (p.from_disk) {
          (void)options_.disk->Remove(StorageKey(key));
        } else {
          host_->Erase(key);
        }
      }
      for (int32_t page : p.pages) pool_.Free(page);
      continue;
    }
    hit.bytes_promoted += p.bytes.size();
    (p.from_disk ? hit.tokens_from_disk : hit.tokens_from_host) += extent_tokens;
    if (p.from_disk && host_) {  // promotion: keep a RAM copy too (as stored; decode handles zstd)
      (void)host_->Put(key, std::vector<uint8_t>(p.bytes.begin(), p.bytes.end()));
    }
    InsertDevice(key, std::move(p.pages));
    owner_ns_.emplace(key, std::string(ns));
  }
  for (int64_t i = 0; i < served; ++i) {
    ServeFromDevice(device_map_.find(match.keys[i])->second, &hit);
  }
  hit.tokens_from_device = served * extent_tokens - hit.tokens_from_host - hit.tokens_from_disk;
  hit.tokens = served * extent_tokens;
  hit.lease = index_.Acquire(std::span<const ExtentKey>(match.keys).first(served));
  return hit;
}

Status TierManager::Publish(std::string_view ns, std::span<const int32_t> tokens,
                            std::span<const std::vector<int32_t>> page_tables, int64_t n_tokens) {
  if (static_cast<int>(page_tables.size()) != shape_.n_layers) {
    return InvalidArgumentError("publish: page tables do not match the extent shape");
  }
  n_tokens = std::clamp<int64_t>(n_tokens, 0, static_cast<int64_t>(tokens.size()));
  const std::vector<ExtentKey> keys = index_.KeyChain(ns, tokens.first(n_tokens));
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = device_map_.find(keys[i]);
    if (it != device_map_.end()) {
      device_lru_.splice(device_lru_.begin(), device_lru_, it->second.lru);
      continue;
    }
    ASSIGN_OR_RETURN(std::vector<int32_t> pages,
                     ExtentPageIds(page_tables, static_cast<int64_t>(i), shape_.extent_pages));
    // A cold extent (PromoteMode::kSelected) is cached in a lower tier already.
    if (std::any_of(pages.begin(), pages.end(), [](int32_t p) { return p < 0; })) continue;
    for (int32_t p : pages) pool_.Ref(p);
    InsertDevice(keys[i], std::move(pages));
    owner_ns_.emplace(keys[i], std::string(ns));
    pending_write_through_.push_back(keys[i]);
  }
  return Status::Ok();
}

void TierManager::WriteThrough() {
  if (pending_write_through_.empty()) return;
  std::vector<ExtentKey> keys;
  keys.swap(pending_write_through_);
  if (!host_ && options_.disk == nullptr) return;
  std::vector<uint8_t> encoded;
  bool wrote_disk = false;
  for (const ExtentKey& key : keys) {
    auto it = device_map_.find(key);
    if (it == device_map_.end()) continue;  // evicted meanwhile
    const ExtentView view = View(it->second.pages);
    std::shared_ptr<const std::vector<uint16_t>> digests = FindDigests(key);
    if (!digests) {
      digests = DigestsOfPages(it->second.pages);
      RememberDigests(key, digests);
    }
    if (StoreDigestRecord(key, *digests)) wrote_disk = true;
    if (host_ && !host_->Contains(key)) {
      Status s = host_->PutExtent(key, view);
      if (!s.ok() && s.code() != StatusCode::kResourceExhausted) ++write_errors_;
    }
    if (options_.disk != nullptr && !options_.disk->Contains(StorageKey(key))) {
      Status s = EncodeExtent(view, options_.disk_codec, &encoded);
      if (s.ok()) {
        s = options_.disk->Put(StorageKey(key), static_cast<uint8_t>(options_.disk_codec.codec),
                               CodecPayloadBytes(options_.disk_codec.codec, shape_), encoded);
      }
      if (s.ok()) {
        wrote_disk = true;
      } else {
        ++write_errors_;
        std::fprintf(stderr, "kvtier: disk tier write failed: %s\n", s.ToString().c_str());
        if (s.code() == StatusCode::kResourceExhausted || s.code() == StatusCode::kIOError) break;
      }
    }
  }
  if (wrote_disk) {
    Status s = options_.disk->Sync();
    if (!s.ok()) {
      ++write_errors_;
      std::fprintf(stderr, "kvtier: disk tier sync failed: %s\n", s.ToString().c_str());
    }
  }
}

Status TierManager::EnsureFreePages(int64_t pages) {
  auto it = device_lru_.end();
  while (pool_.free_pages() < pages && it != device_lru_.begin()) {
    --it;
    auto entry = device_map_.find(*it);
    if (!DeviceEvictable(entry->first, entry->second)) continue;
    // Demotion: make sure a lower tier keeps the extent before its pages go.
    if (host_ && !host_->Contains(entry->first)) {
      (void)host_->PutExtent(entry->first, View(entry->second.pages));
    }
    if (!FindDigests(entry->first)) {
      RememberDigests(entry->first, DigestsOfPages(entry->second.pages));
    }
    auto next = std::next(it);
    DropDevice(entry);
    ++device_.evictions;
    it = next;
  }
  while (pool_.free_pages() < pages && EvictOneHot()) {
  }
  if (pool_.free_pages() < pages) {
    return ResourceExhaustedError("KV page pool full: " + std::to_string(pages) +
                                  " pages needed, " + std::to_string(pool_.free_pages()) +
                                  " free after evicting every unused cached extent");
  }
  return Status::Ok();
}

Status TierManager::Pin(std::string_view ns, std::string_view name,
                        std::span<const int32_t> tokens) {
  const std::vector<ExtentKey> keys = index_.KeyChain(ns, tokens);
  ASSIGN_OR_RETURN(PinHandle handle, index_.Pin(ns, name, keys));
  pins_[PinKey(ns, name)] = std::move(handle);
  return Status::Ok();
}

Status TierManager::Unpin(std::string_view ns, std::string_view name) {
  RETURN_IF_ERROR(index_.Unpin(ns, name));
  pins_.erase(PinKey(ns, name));
  return Status::Ok();
}

Result<uint64_t> TierManager::Evict(std::string_view ns, std::string_view tier) {
  const bool all = tier == "all";
  if (!all && tier != "device" && tier != "host" && tier != "disk") {
    return InvalidArgumentError("evict: unknown tier '" + std::string(tier) + "'");
  }
  uint64_t freed = 0;
  std::vector<ExtentKey> owned;
  for (const auto& [key, owner] : owner_ns_) {
    if (owner == ns && index_.IsEvictable(key)) owned.push_back(key);
  }
  for (const ExtentKey& key : owned) {
    if (all || tier == "device") {
      auto it = device_map_.find(key);
      if (it != device_map_.end() && DeviceEvictable(key, it->second)) {
        freed += it->second.pages.size() * pool_.page_bytes();
        DropDevice(it);
        ++device_.evictions;
      }
    }
    if (host_ && (all || tier == "host")) {
      const uint64_t before = host_->stats().used_bytes;  // (Get would count a hit)
      if (host_->Erase(key)) freed += before - host_->stats().used_bytes;
    }
    // The prefetch buffer holds RAM copies of disk records: they go with the host or disk copy.
    if (prefetch_ && tier != "device") prefetch_->Erase(key);
    if (options_.disk != nullptr && (all || tier == "disk")) {
      uint64_t removed = 0;
      if (options_.disk->Remove(StorageKey(key), &removed).ok()) freed += removed;
      if (options_.disk->Remove(DigestRecordKey(key), &removed).ok()) freed += removed;
    }
  }
  if (all || tier == "device") {  // hot pages of the namespace's extents
    std::unordered_map<ExtentKey, bool, ExtentKeyHash> mine;
    for (const ExtentKey& key : owned) mine.emplace(key, true);
    for (auto it = hot_.begin(); it != hot_.end();) {
      auto next = std::next(it);
      if (mine.count(it->first.key) != 0 && pool_.refs(it->second.page) == 1) {
        freed += pool_.page_bytes();
        DropHot(it);
      }
      it = next;
    }
  }
  return freed;
}

TierStatsSnapshot TierManager::Stats() const {
  TierStatsSnapshot s;
  s.device = device_;
  if (host_) {
    s.has_host = true;
    s.host = host_->stats();
  }
  if (options_.disk != nullptr) {
    s.has_disk = true;
    s.disk = options_.disk->stats();
    // Digest records ride along with the extents: `records` counts extents only.
    s.disk_digest_records = s.disk.records_by_codec[kDigestRecordCodec];
    s.disk.records -= s.disk_digest_records;
    s.disk_io_engine = std::string(options_.disk->io_engine_name());
  }
  s.disk_write_errors = write_errors_;
  s.promotion = promotion_counters();
  s.hot_capacity_pages = options_.hot_cache_pages;
  return s;
}

storage::ExtentKey TierManager::DigestRecordKey(const ExtentKey& key) {
  Sha256 h;
  h.UpdateField("kvtier-extent-digests-v1");
  h.Update(key.bytes.data(), key.bytes.size());
  const auto d = h.Finish();
  storage::ExtentKey out;
  std::memcpy(out.data(), d.data(), out.size());
  return out;
}

// ---- Selected-page promotion --------------------------------------------------------------

bool TierManager::StoreDigestRecord(const ExtentKey& key, const std::vector<uint16_t>& digests) {
  if (options_.disk == nullptr || options_.disk->Contains(DigestRecordKey(key))) return false;
  const auto* d = reinterpret_cast<const uint8_t*>(digests.data());
  return options_.disk
      ->Put(DigestRecordKey(key), kDigestRecordCodec, digests.size() * sizeof(uint16_t),
            std::span<const uint8_t>(d, digests.size() * 2))
      .ok();
}

size_t TierManager::ExtentDigestHalfs() const {
  return static_cast<size_t>(shape_.n_layers) * shape_.extent_pages * pool_.view().DigestHalfs();
}

std::shared_ptr<const std::vector<uint16_t>> TierManager::DigestsOfPages(
    std::span<const int32_t> pages) const {
  const size_t dh = pool_.view().DigestHalfs();
  auto d = std::make_shared<std::vector<uint16_t>>(pages.size() * dh);
  for (size_t i = 0; i < pages.size(); ++i) {
    std::memcpy(d->data() + i * dh, pool_.view().Digest(pages[i]), dh * sizeof(uint16_t));
  }
  return d;
}

void TierManager::RememberDigests(const ExtentKey& key,
                                  std::shared_ptr<const std::vector<uint16_t>> d) {
  if (!d || digests_.count(key) != 0) return;
  const uint64_t bytes = d->size() * sizeof(uint16_t);
  while (!digest_lru_.empty() && digest_bytes_ + bytes > options_.digest_cache_bytes) {
    auto it = digests_.find(digest_lru_.back());
    digest_bytes_ -= it->second.digests->size() * sizeof(uint16_t);
    digests_.erase(it);
    digest_lru_.pop_back();
  }
  if (bytes > options_.digest_cache_bytes) return;
  digest_lru_.push_front(key);
  digests_.emplace(key, DigestEntry{std::move(d), digest_lru_.begin()});
  digest_bytes_ += bytes;
}

std::shared_ptr<const std::vector<uint16_t>> TierManager::FindDigests(const ExtentKey& key) {
  auto it = digests_.find(key);
  if (it == digests_.end()) return nullptr;
  digest_lru_.splice(digest_lru_.begin(), digest_lru_, it->second.lru);
  return it->second.digests;
}

Result<std::shared_ptr<const std::vector<uint16_t>>> TierManager::ComputeDigests(
    std::span<const uint8_t> encoded) {
  const kernels::KvPool& v = pool_.view();
  const int n_pages = shape_.n_layers * shape_.extent_pages;
  std::vector<uint16_t> kv(static_cast<size_t>(n_pages) * v.PageBytes() / 2);
  auto digests = std::make_shared<std::vector<uint16_t>>(ExtentDigestHalfs());
  kernels::KvPool scratch = v;
  scratch.base = kv.data();
  scratch.digests = digests->data();
  std::vector<int32_t> ids(n_pages);
  std::vector<kernels::PageRef> refs(n_pages);
  for (int i = 0; i < n_pages; ++i) {
    ids[i] = i;
    refs[i] = kernels::PageRef{i, 0, shape_.page_tokens};
  }
  RETURN_IF_ERROR(DecodeExtent(encoded, ExtentView{scratch, shape_, ids}));
  kernels::UpdateDigests(scratch, refs);
  return std::shared_ptr<const std::vector<uint16_t>>(std::move(digests));
}

Result<std::shared_ptr<const std::vector<uint8_t>>> TierManager::RecordForPages(
    const ExtentKey& key, RecordSource* source) {
  if (last_disk_ && last_disk_key_ == key) {  // read from disk before, kept in RAM
    *source = RecordSource::kRam;
    return last_disk_;
  }
  if (host_) {
    if (auto bytes = host_->Get(key)) {
      *source = RecordSource::kRam;
      return bytes;
    }
  }
  if (options_.disk == nullptr) return NotFoundError("cold extent is in no tier");
  std::shared_ptr<const std::vector<uint8_t>> bytes;
  if (prefetch_) {
    bool waited = false, prefetched = false;
    bytes = prefetch_->Take(key, &waited, &prefetched);
    if (waited) ++promotion_.prefetch_waits;
    // A record read ahead, or one this thread read before and kept there (RAM, like the host).
    if (bytes) *source = prefetched ? RecordSource::kPrefetch : RecordSource::kRam;
  }
  if (!bytes) {
    auto read = options_.disk->Get(StorageKey(key));
    if (!read.ok()) return read.status();
    ++promotion_.disk_reads;
    promotion_.disk_bytes_read += read->bytes().size();
    auto plain = DecompressExtent(read->bytes());
    if (!plain.ok()) {
      (void)options_.disk->Remove(StorageKey(key));
      return plain.status();
    }
    bytes = std::make_shared<const std::vector<uint8_t>>(std::move(plain).value());
    *source = RecordSource::kDisk;
    // The prefetch buffer's RAM also keeps records read on demand: with a host tier smaller than
    // a step's extents, the next layers find them there instead of reading the disk again.
    if (prefetch_) prefetch_->Keep(key, bytes);
  }
  // Later misses of other pages and layers of this extent decode from RAM.
  if (host_) (void)host_->Put(key, *bytes);
  last_disk_key_ = key;
  last_disk_ = bytes;
  return bytes;
}

void TierManager::DropBadRecord(const ExtentKey& key) {
  if (host_) host_->Erase(key);
  if (options_.disk != nullptr) (void)options_.disk->Remove(StorageKey(key));
  if (prefetch_) prefetch_->Erase(key);
  if (last_disk_ && last_disk_key_ == key) last_disk_.reset();
}

Result<PrefixHit> TierManager::AcquireSelected(std::string_view ns, PrefixMatch& match,
                                               const std::vector<TierProbe>& probes) {
  PrefixHit hit;
  hit.page_tables.resize(shape_.n_layers);
  const int64_t extent_tokens = shape_.tokens();
  const int64_t matched = match.matched_extents;
  // 1. Digests of every extent that stays cold: RAM, else the disk's digest records (all reads
  //    in flight at once), else decoded from the extent itself.
  std::vector<std::shared_ptr<const std::vector<uint16_t>>> digests(matched);
  std::vector<int64_t> from_disk;
  std::vector<storage::ExtentKey> disk_keys;
  for (int64_t i = 0; i < matched; ++i) {
    if (device_map_.count(match.keys[i]) != 0) continue;
    digests[i] = FindDigests(match.keys[i]);
    if (!digests[i] && options_.disk != nullptr) {
      from_disk.push_back(i);
      disk_keys.push_back(DigestRecordKey(match.keys[i]));
    }
  }
  if (!disk_keys.empty()) {
    std::vector<Result<storage::StoredExtent>> reads = options_.disk->MultiGet(disk_keys);
    for (size_t j = 0; j < reads.size(); ++j) {
      if (!reads[j].ok()) continue;
      if (reads[j]->bytes().size() != ExtentDigestHalfs() * 2) {
        // Another digest layout (an older kvtier): recomputed below and stored anew.
        (void)options_.disk->Remove(disk_keys[j]);
        continue;
      }
      auto d = std::make_shared<std::vector<uint16_t>>(ExtentDigestHalfs());
      std::memcpy(d->data(), reads[j]->bytes().data(), d->size() * 2);
      digests[from_disk[j]] = d;
      RememberDigests(match.keys[from_disk[j]], digests[from_disk[j]]);
      ++promotion_.digests_from_disk;
    }
  }
  int64_t served = matched;
  bool stored_digests = false;
  for (int64_t i = 0; i < matched; ++i) {
    if (device_map_.count(match.keys[i]) != 0 || digests[i]) continue;
    RecordSource source = RecordSource::kRam;
    auto record = RecordForPages(match.keys[i], &source);
    Result<std::shared_ptr<const std::vector<uint16_t>>> d =
        record.ok() ? ComputeDigests(**record) : Result<std::shared_ptr<const std::vector<uint16_t>>>(record.status());
    if (!d.ok()) {
      std::fprintf(stderr, "kvtier: cached extent %s not used: %s\n",
                   match.keys[i].Hex().substr(0, 16).c_str(), d.status().ToString().c_str());
      if (record.ok()) DropBadRecord(match.keys[i]);
      served = i;
      break;
    }
    digests[i] = *d;
    RememberDigests(match.keys[i], digests[i]);
    stored_digests |= StoreDigestRecord(match.keys[i], *digests[i]);
    ++promotion_.digests_recomputed;
  }
  if (stored_digests) (void)options_.disk->Sync();
  // 2. The page tables: device extents as they are, the others cold.
  for (int64_t i = 0; i < served; ++i) {
    const ExtentKey& key = match.keys[i];
    auto dev = device_map_.find(key);
    if (dev != device_map_.end()) {
      ServeFromDevice(dev->second, &hit);
      hit.tokens_from_device += extent_tokens;
      continue;
    }
    const int64_t c = static_cast<int64_t>(hit.cold.size());
    hit.cold.push_back(ColdExtent{key, digests[i]});
    for (int l = 0; l < shape_.n_layers; ++l) {
      for (int p = 0; p < shape_.extent_pages; ++p) {
        hit.page_tables[l].push_back(ColdEntry(c, p, shape_.extent_pages));
      }
    }
    (probes[match.tier_of[i]].name == "host" ? hit.tokens_from_host : hit.tokens_from_disk) +=
        extent_tokens;
    hit.tokens_cold += extent_tokens;
    owner_ns_.emplace(key, std::string(ns));
  }
  hit.tokens = served * extent_tokens;
  hit.lease = index_.Acquire(std::span<const ExtentKey>(match.keys).first(served));
  return hit;
}

void TierManager::DropHot(HotMap::iterator it) {
  pool_.Free(it->second.page);
  hot_lru_.erase(it->second.lru);
  hot_.erase(it);
}

bool TierManager::EvictOneHot() {
  for (auto it = hot_lru_.end(); it != hot_lru_.begin();) {
    --it;
    auto entry = hot_.find(*it);
    if (entry->second.stamp == hot_stamp_) continue;  // in use by the current call
    DropHot(entry);
    return true;
  }
  return false;
}

Result<int32_t> TierManager::HotPage() {
  while (static_cast<int64_t>(hot_.size()) >= options_.hot_cache_pages && EvictOneHot()) {
  }
  if (pool_.free_pages() == 0) RETURN_IF_ERROR(EnsureFreePages(1));
  return pool_.Allocate();
}

Status TierManager::PromotePages(std::span<const ColdPageRef> refs, std::span<int32_t> pages) {
  const auto t0 = std::chrono::steady_clock::now();
  ++hot_stamp_;
  std::vector<size_t> misses;
  for (size_t i = 0; i < refs.size(); ++i) {
    auto it = hot_.find(HotKey{*refs[i].key, refs[i].layer, refs[i].page_in_extent});
    if (it == hot_.end()) {
      misses.push_back(i);
      continue;
    }
    it->second.stamp = hot_stamp_;
    hot_lru_.splice(hot_lru_.begin(), hot_lru_, it->second.lru);
    pages[i] = it->second.page;
    ++promotion_.hot_hits;
  }
  // Misses grouped by extent: each record is fetched once per call.
  std::stable_sort(misses.begin(), misses.end(), [&](size_t a, size_t b) {
    return refs[a].key->bytes < refs[b].key->bytes;
  });
  std::shared_ptr<const std::vector<uint8_t>> record;
  const ExtentKey* record_key = nullptr;
  RecordSource record_source = RecordSource::kRam;
  Status status;
  for (size_t i : misses) {
    const ColdPageRef& r = refs[i];
    const HotKey hk{*r.key, r.layer, r.page_in_extent};
    if (auto it = hot_.find(hk); it != hot_.end()) {  // a duplicate in refs
      pages[i] = it->second.page;
      continue;
    }
    if (record_key == nullptr || !(*record_key == *r.key)) {
      auto got = RecordForPages(*r.key, &record_source);
      if (!got.ok()) {
        status = got.status().WithContext("promoting a cold page");
        break;
      }
      record = std::move(got).value();
      record_key = r.key;
    } else {
      record_source = RecordSource::kRam;  // the record is in RAM now: later pages count as host
    }
    auto page = HotPage();
    if (!page.ok()) {
      status = page.status().WithContext("promoting a cold page");
      break;
    }
    Status s = DecodeExtentPage(*record, r.layer, r.page_in_extent, pool_.view(), *page);
    if (!s.ok()) {
      pool_.Free(*page);
      std::fprintf(stderr, "kvtier: cached extent %s not decodable: %s\n",
                   r.key->Hex().substr(0, 16).c_str(), s.ToString().c_str());
      DropBadRecord(*r.key);
      status = s;
      break;
    }
    hot_lru_.push_front(hk);
    hot_.emplace(hk, HotEntry{*page, hot_stamp_, hot_lru_.begin()});
    pages[i] = *page;
    ++promotion_.hot_misses;
    ++(record_source == RecordSource::kDisk       ? promotion_.pages_from_disk
       : record_source == RecordSource::kPrefetch ? promotion_.prefetch_hits
                                                  : promotion_.pages_from_host);
    promotion_.bytes_decompressed += pool_.page_bytes();
  }
  promotion_.promote_ms += MsSince(t0);
  return status;
}

void TierManager::PrefetchPages(std::span<const ColdPageRef> refs) {
  if (!prefetch_ || refs.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  prefetch_keys_.clear();
  for (const ColdPageRef& r : refs) {
    if (hot_.count(HotKey{*r.key, r.layer, r.page_in_extent}) != 0) continue;
    if (!prefetch_keys_.empty() && prefetch_keys_.back() == *r.key) continue;
    prefetch_keys_.push_back(*r.key);
  }
  // In the order PromotePages will want them (its misses are sorted by key).
  std::sort(prefetch_keys_.begin(), prefetch_keys_.end(),
            [](const ExtentKey& a, const ExtentKey& b) { return a.bytes < b.bytes; });
  prefetch_keys_.erase(std::unique(prefetch_keys_.begin(), prefetch_keys_.end()),
                       prefetch_keys_.end());
  std::erase_if(prefetch_keys_, [&](const ExtentKey& k) {
    return (last_disk_ && last_disk_key_ == k) || (host_ && host_->Contains(k));
  });
  prefetch_->Enqueue(prefetch_keys_);
  promotion_.promote_ms += MsSince(t0);
}

void TierManager::WaitForPrefetches() {
  if (prefetch_) prefetch_->WaitIdle();
}

PromotionCounters TierManager::promotion_counters() const {
  PromotionCounters c = promotion_;
  c.hot_pages = static_cast<int64_t>(hot_.size());
  if (prefetch_) {
    const internal::RecordPrefetcher::Counters p = prefetch_->counters();
    c.records_prefetched = p.records_prefetched;
    c.prefetch_wasted = p.wasted;
    c.prefetch_disk_bytes = p.disk_bytes_read;
    c.records_kept = p.records_kept;
    c.prefetch_buffered_bytes = p.buffered_bytes;
  }
  return c;
}

}  // namespace kvtier::cache
