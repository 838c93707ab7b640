#include "cache/tier_manager.h"

#include <algorithm>

namespace kvtier::cache {

TierManager::TierManager(PagePool& pool, const ExtentShape& shape, KeyScheme scheme)
    : pool_(pool), shape_(shape), scheme_(std::move(scheme)) {}

TierManager::~TierManager() {
  while (!device_map_.empty()) DropDevice(device_map_.begin());
}

bool TierManager::HeldOnlyByCache(const DeviceExtent& e) const {
  return std::all_of(e.pages.begin(), e.pages.end(),
                     [&](int32_t p) { return pool_.refs(p) == 1; });
}

void TierManager::DropDevice(
    std::unordered_map<ExtentKey, DeviceExtent, ExtentKeyHash>::iterator it) {
  for (int32_t p : it->second.pages) pool_.Free(p);
  device_lru_.erase(it->second.lru);
  device_.extents -= 1;
  device_.bytes -= it->second.pages.size() * pool_.page_bytes();
  device_map_.erase(it);
}

Result<PrefixHit> TierManager::AcquirePrefix(std::string_view ns, std::span<const int32_t> tokens,
                                             int64_t max_tokens) {
  PrefixHit hit;
  hit.page_tables.resize(shape_.n_layers);
  const int64_t extent_tokens = shape_.tokens();
  const int64_t usable = std::min<int64_t>(static_cast<int64_t>(tokens.size()), max_tokens);
  const std::vector<ExtentKey> keys = ComputeKeyChain(scheme_, ns, tokens.first(usable));
  for (const ExtentKey& key : keys) {
    auto it = device_map_.find(key);
    if (it == device_map_.end()) {
      ++device_.misses;
      break;
    }
    ++device_.hits;
    device_lru_.splice(device_lru_.begin(), device_lru_, it->second.lru);
    for (int l = 0; l < shape_.n_layers; ++l) {
      const auto first = it->second.pages.begin() + static_cast<ptrdiff_t>(l) * shape_.extent_pages;
      hit.page_tables[l].insert(hit.page_tables[l].end(), first, first + shape_.extent_pages);
    }
    hit.tokens += extent_tokens;
    hit.tokens_from_device += extent_tokens;
  }
  return hit;
}

Status TierManager::Publish(std::string_view ns, std::span<const int32_t> tokens,
                            std::span<const std::vector<int32_t>> page_tables, int64_t n_tokens) {
  if (static_cast<int>(page_tables.size()) != shape_.n_layers) {
    return InvalidArgumentError("publish: page tables do not match the extent shape");
  }
  n_tokens = std::min<int64_t>(n_tokens, static_cast<int64_t>(tokens.size()));
  const std::vector<ExtentKey> keys = ComputeKeyChain(scheme_, ns, tokens.first(n_tokens));
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = device_map_.find(keys[i]);
    if (it != device_map_.end()) {
      device_lru_.splice(device_lru_.begin(), device_lru_, it->second.lru);
      continue;
    }
    ASSIGN_OR_RETURN(std::vector<int32_t> pages,
                     ExtentPageIds(page_tables, static_cast<int64_t>(i), shape_.extent_pages));
    for (int32_t p : pages) pool_.Ref(p);
    device_lru_.push_front(keys[i]);
    device_.bytes += pages.size() * pool_.page_bytes();
    device_.bytes_in += pages.size() * pool_.page_bytes();
    device_.extents += 1;
    device_map_.emplace(keys[i], DeviceExtent{std::move(pages), device_lru_.begin()});
  }
  return Status::Ok();
}

Status TierManager::EnsureFreePages(int64_t pages) {
  auto it = device_lru_.end();
  while (pool_.free_pages() < pages && it != device_lru_.begin()) {
    --it;
    auto entry = device_map_.find(*it);
    if (!HeldOnlyByCache(entry->second)) continue;
    auto next = it;  // DropDevice erases `it`; continue from its successor's predecessor
    ++next;
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

uint64_t TierManager::EvictDevice() {
  uint64_t freed = 0;
  for (auto it = device_map_.begin(); it != device_map_.end();) {
    auto next = std::next(it);
    if (HeldOnlyByCache(it->second)) {
      freed += it->second.pages.size() * pool_.page_bytes();
      DropDevice(it);
      ++device_.evictions;
    }
    it = next;
  }
  return freed;
}

}  // namespace kvtier::cache
