#include "cache/tier_manager.h"

#include <algorithm>
#include <cstdio>

namespace kvtier::cache {
namespace {

storage::ExtentKey StorageKey(const ExtentKey& k) { return k.bytes; }

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
}

TierManager::~TierManager() {
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
                                             int64_t max_tokens) {
  PrefixHit hit;
  hit.page_tables.resize(shape_.n_layers);
  const int64_t extent_tokens = shape_.tokens();
  const int64_t usable = std::clamp<int64_t>(max_tokens, 0, static_cast<int64_t>(tokens.size()));
  const std::vector<TierProbe> probes = Probes();
  PrefixMatch match = index_.Lookup(ns, tokens.first(usable), probes);
  if (match.matched_extents < static_cast<int64_t>(match.keys.size())) ++device_.misses;

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
    for (int64_t j = begin; j < end; ++j) {
      promotions[j].status = DecodeExtent(promotions[j].bytes, View(promotions[j].pages));
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
    auto dev = device_map_.find(match.keys[i]);
    ++device_.hits;
    device_lru_.splice(device_lru_.begin(), device_lru_, dev->second.lru);
    for (int l = 0; l < shape_.n_layers; ++l) {
      const auto first =
          dev->second.pages.begin() + static_cast<ptrdiff_t>(l) * shape_.extent_pages;
      hit.page_tables[l].insert(hit.page_tables[l].end(), first, first + shape_.extent_pages);
    }
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
    auto next = std::next(it);
    DropDevice(entry);
    ++device_.evictions;
    it = next;
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
    if (options_.disk != nullptr && (all || tier == "disk")) {
      uint64_t removed = 0;
      if (options_.disk->Remove(StorageKey(key), &removed).ok()) freed += removed;
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
    s.disk_io_engine = std::string(options_.disk->io_engine_name());
  }
  s.disk_write_errors = write_errors_;
  return s;
}

}  // namespace kvtier::cache
