#include "cache/prefix_index.h"

#include <utility>

namespace kvtier::cache {
namespace internal {

struct PrefixIndexState {
  struct Counts {
    int64_t refs = 0;
    int64_t pins = 0;
  };
  struct PinRecord {
    uint64_t id = 0;
    std::vector<ExtentKey> keys;
  };

  std::mutex mu;
  // Guarded by mu. An entry exists only while refs > 0 or pins > 0.
  std::unordered_map<ExtentKey, Counts, ExtentKeyHash> counts;
  std::map<std::string, std::map<std::string, PinRecord, std::less<>>, std::less<>> pins;
  uint64_t next_pin_id = 1;

  void AddRefsLocked(std::span<const ExtentKey> keys) {
    for (const ExtentKey& k : keys) ++counts[k].refs;
  }
  void DropRefsLocked(std::span<const ExtentKey> keys) {
    for (const ExtentKey& k : keys) {
      auto it = counts.find(k);
      KVTIER_CHECK(it != counts.end() && it->second.refs > 0);
      if (--it->second.refs == 0 && it->second.pins == 0) counts.erase(it);
    }
  }
  void DropPinsLocked(std::span<const ExtentKey> keys) {
    for (const ExtentKey& k : keys) {
      auto it = counts.find(k);
      KVTIER_CHECK(it != counts.end() && it->second.pins > 0);
      if (--it->second.pins == 0 && it->second.refs == 0) counts.erase(it);
    }
  }
  // Removes pin (ns, name) if it exists and (id == 0 or its id is `id`).
  bool UnpinLocked(std::string_view ns, std::string_view name, uint64_t id) {
    auto ns_it = pins.find(ns);
    if (ns_it == pins.end()) return false;
    auto it = ns_it->second.find(name);
    if (it == ns_it->second.end() || (id != 0 && it->second.id != id)) return false;
    DropPinsLocked(it->second.keys);
    ns_it->second.erase(it);
    if (ns_it->second.empty()) pins.erase(ns_it);
    return true;
  }
};

}  // namespace internal

// ---- ExtentLease -------------------------------------------------------------------------------

ExtentLease::ExtentLease(ExtentLease&& other) noexcept
    : state_(std::move(other.state_)), keys_(std::move(other.keys_)) {
  other.state_.reset();
  other.keys_.clear();
}

ExtentLease& ExtentLease::operator=(ExtentLease&& other) noexcept {
  if (this != &other) {
    Release();
    state_ = std::move(other.state_);
    keys_ = std::move(other.keys_);
    other.state_.reset();
    other.keys_.clear();
  }
  return *this;
}

void ExtentLease::Extend(std::span<const ExtentKey> more) {
  KVTIER_CHECK(state_ != nullptr || more.empty());
  if (more.empty()) return;
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->AddRefsLocked(more);
  keys_.insert(keys_.end(), more.begin(), more.end());
}

void ExtentLease::Release() {
  if (state_ != nullptr) {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->DropRefsLocked(keys_);
  }
  state_.reset();
  keys_.clear();
}

// ---- PinHandle ---------------------------------------------------------------------------------

PinHandle::PinHandle(PinHandle&& other) noexcept
    : state_(std::move(other.state_)),
      ns_(std::move(other.ns_)),
      name_(std::move(other.name_)),
      id_(other.id_) {
  other.state_.reset();
  other.id_ = 0;
}

PinHandle& PinHandle::operator=(PinHandle&& other) noexcept {
  if (this != &other) {
    Release();
    state_ = std::move(other.state_);
    ns_ = std::move(other.ns_);
    name_ = std::move(other.name_);
    id_ = other.id_;
    other.state_.reset();
    other.id_ = 0;
  }
  return *this;
}

bool PinHandle::active() const {
  if (state_ == nullptr) return false;
  std::lock_guard<std::mutex> lock(state_->mu);
  auto ns_it = state_->pins.find(ns_);
  if (ns_it == state_->pins.end()) return false;
  auto it = ns_it->second.find(name_);
  return it != ns_it->second.end() && it->second.id == id_;
}

void PinHandle::Release() {
  if (state_ != nullptr) {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->UnpinLocked(ns_, name_, id_);
  }
  state_.reset();
  id_ = 0;
}

// ---- PrefixIndex -------------------------------------------------------------------------------

PrefixIndex::PrefixIndex(KeyScheme scheme)
    : scheme_(std::move(scheme)), state_(std::make_shared<internal::PrefixIndexState>()) {
  KVTIER_CHECK(scheme_.extent_tokens > 0);
}

PrefixIndex::~PrefixIndex() = default;

std::vector<ExtentKey> PrefixIndex::KeyChain(std::string_view ns,
                                             std::span<const int32_t> tokens) const {
  return ComputeKeyChain(scheme_, ns, tokens);
}

PrefixMatch PrefixIndex::Lookup(std::string_view ns, std::span<const int32_t> tokens,
                                std::span<const TierProbe> tiers) const {
  PrefixMatch m;
  m.keys = KeyChain(ns, tokens);
  // Lease first, then ask the tiers without holding the index's mutex, then drop the tail.
  m.lease = Acquire(m.keys);
  for (const ExtentKey& key : m.keys) {
    int found = -1;
    for (size_t t = 0; t < tiers.size(); ++t) {
      if (tiers[t].contains && tiers[t].contains(key)) {
        found = static_cast<int>(t);
        break;
      }
    }
    if (found < 0) break;
    m.tier_of.push_back(found);
    ++m.matched_extents;
  }
  m.matched_tokens = m.matched_extents * scheme_.extent_tokens;
  if (m.matched_extents < static_cast<int64_t>(m.keys.size())) {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->DropRefsLocked(std::span<const ExtentKey>(m.lease.keys_).subspan(m.matched_extents));
    m.lease.keys_.resize(m.matched_extents);
  }
  return m;
}

ExtentLease PrefixIndex::Acquire(std::span<const ExtentKey> keys) const {
  ExtentLease lease;
  lease.state_ = state_;
  lease.keys_.assign(keys.begin(), keys.end());
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->AddRefsLocked(keys);
  return lease;
}

Result<PinHandle> PrefixIndex::Pin(std::string_view ns, std::string_view name,
                                   std::span<const ExtentKey> keys) {
  if (name.empty()) return InvalidArgumentError("pin: empty name");
  PinHandle handle;
  std::lock_guard<std::mutex> lock(state_->mu);
  auto& by_name = state_->pins[std::string(ns)];
  if (by_name.find(name) != by_name.end()) {
    return InvalidArgumentError("pin '" + std::string(name) + "' already exists");
  }
  internal::PrefixIndexState::PinRecord rec;
  rec.id = state_->next_pin_id++;
  rec.keys.assign(keys.begin(), keys.end());
  for (const ExtentKey& k : rec.keys) ++state_->counts[k].pins;
  handle.state_ = state_;
  handle.ns_ = std::string(ns);
  handle.name_ = std::string(name);
  handle.id_ = rec.id;
  by_name.emplace(std::string(name), std::move(rec));
  return handle;
}

Status PrefixIndex::Unpin(std::string_view ns, std::string_view name) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->UnpinLocked(ns, name, 0)) {
    return NotFoundError("no pin named '" + std::string(name) + "'");
  }
  return Status::Ok();
}

std::vector<PinInfo> PrefixIndex::Pins(std::string_view ns) const {
  std::vector<PinInfo> out;
  std::lock_guard<std::mutex> lock(state_->mu);
  auto ns_it = state_->pins.find(ns);
  if (ns_it == state_->pins.end()) return out;
  for (const auto& [name, rec] : ns_it->second) {
    out.push_back({name, static_cast<int64_t>(rec.keys.size())});
  }
  return out;
}

bool PrefixIndex::IsEvictable(const ExtentKey& key) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->counts.find(key) == state_->counts.end();
}

int64_t PrefixIndex::RefCount(const ExtentKey& key) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->counts.find(key);
  return it == state_->counts.end() ? 0 : it->second.refs;
}

int64_t PrefixIndex::PinCount(const ExtentKey& key) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->counts.find(key);
  return it == state_->counts.end() ? 0 : it->second.pins;
}

// ---- HostTier ----------------------------------------------------------------------------------

HostTier::HostTier(HostTierOptions options, const PrefixIndex* index)
    : options_(options), index_(index) {
  stats_.capacity_bytes = options_.capacity_bytes;
}

bool HostTier::EvictableLocked(const ExtentKey& key) const {
  return index_ == nullptr || index_->IsEvictable(key);
}

void HostTier::EraseLocked(std::unordered_map<ExtentKey, Entry, ExtentKeyHash>::iterator it) {
  stats_.used_bytes -= it->second.bytes->size();
  --stats_.extents;
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

Status HostTier::Put(const ExtentKey& key, std::vector<uint8_t> encoded) {
  RETURN_IF_ERROR(ParseExtentHeader(encoded));
  const uint64_t size = encoded.size();
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = entries_.find(key); it != entries_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return Status::Ok();
  }
  if (size > options_.capacity_bytes) {
    ++stats_.rejected;
    return ResourceExhaustedError("host tier: an extent of " + std::to_string(size) +
                                  " bytes exceeds the capacity of " +
                                  std::to_string(options_.capacity_bytes));
  }
  // Pick victims from the least recently used end; evict only if they make enough room.
  const uint64_t need = stats_.used_bytes + size > options_.capacity_bytes
                            ? stats_.used_bytes + size - options_.capacity_bytes
                            : 0;
  std::vector<ExtentKey> victims;
  uint64_t freed = 0;
  for (auto it = lru_.rbegin(); it != lru_.rend() && freed < need; ++it) {
    if (!EvictableLocked(*it)) continue;
    victims.push_back(*it);
    freed += entries_.at(*it).bytes->size();
  }
  if (freed < need) {
    ++stats_.rejected;
    return ResourceExhaustedError("host tier full: " + std::to_string(need) +
                                  " bytes needed, only " + std::to_string(freed) +
                                  " evictable (the rest is leased or pinned)");
  }
  for (const ExtentKey& v : victims) {
    EraseLocked(entries_.find(v));
    ++stats_.evictions;
  }
  lru_.push_front(key);
  entries_.emplace(
      key, Entry{std::make_shared<const std::vector<uint8_t>>(std::move(encoded)), lru_.begin()});
  stats_.used_bytes += size;
  stats_.bytes_in += size;
  ++stats_.extents;
  KVTIER_CHECK(stats_.used_bytes <= options_.capacity_bytes);
  return Status::Ok();
}

Status HostTier::PutExtent(const ExtentKey& key, const ExtentView& src) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {  // only mark it recently used
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return Status::Ok();
    }
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, EncodeExtent(src, options_.codec));
  return Put(key, std::move(bytes));
}

std::shared_ptr<const std::vector<uint8_t>> HostTier::Get(const ExtentKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  ++stats_.hits;
  stats_.bytes_out += it->second.bytes->size();
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.bytes;
}

Status HostTier::GetExtent(const ExtentKey& key, const ExtentView& dst) {
  std::shared_ptr<const std::vector<uint8_t>> bytes = Get(key);
  if (bytes == nullptr) return NotFoundError("host tier: extent " + key.Hex() + " not present");
  return DecodeExtent(*bytes, dst);
}

bool HostTier::Contains(const ExtentKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.find(key) != entries_.end();
}

bool HostTier::Erase(const ExtentKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  EraseLocked(it);
  return true;
}

uint64_t HostTier::EvictUnpinned() {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t freed = 0;
  for (auto it = lru_.begin(); it != lru_.end();) {
    const ExtentKey key = *it++;
    if (!EvictableLocked(key)) continue;
    auto e = entries_.find(key);
    freed += e->second.bytes->size();
    EraseLocked(e);
    ++stats_.evictions;
  }
  return freed;
}

TierStats HostTier::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

TierProbe HostTier::Probe(std::string name) const {
  return TierProbe{std::move(name), [this](const ExtentKey& k) { return Contains(k); }};
}

}  // namespace kvtier::cache
