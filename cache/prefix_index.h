// cache/prefix_index.h — the prefix index (longest cached prefix of a token sequence, by the
// extent key chain), reference counts and named pins; and HostTier, the in-RAM tier of encoded
// extents (DESIGN §4).
//
// Thread safety: PrefixIndex, HostTier, ExtentLease and PinHandle are safe for concurrent use
// from multiple threads without external synchronization (each guards its state with one
// mutex). Lock order: HostTier's mutex may be held while it asks the PrefixIndex whether an
// extent is evictable; the PrefixIndex never calls out (tier probes included) while holding its
// own mutex, so there is no cycle.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "cache/codec.h"
#include "cache/extent.h"
#include "cache/extent_key.h"

namespace kvtier::cache {

namespace internal {
struct PrefixIndexState;
}  // namespace internal

// A tier the index asks whether it holds an extent (the tier manager plugs its tiers in).
struct TierProbe {
  std::string name;  // "device", "host", "disk", "remote"
  std::function<bool(const ExtentKey&)> contains;
};

// A reference on extents used by a live sequence: while any lease holds a key, the key is not
// evictable from any tier that consults the index. Move-only; released on destruction. Safe to
// outlive its PrefixIndex.
class ExtentLease {
 public:
  ExtentLease() = default;
  ~ExtentLease() { Release(); }
  ExtentLease(ExtentLease&& other) noexcept;
  ExtentLease& operator=(ExtentLease&& other) noexcept;
  ExtentLease(const ExtentLease&) = delete;
  ExtentLease& operator=(const ExtentLease&) = delete;

  std::span<const ExtentKey> keys() const { return keys_; }
  // Also leases `more` (e.g. the extents a sequence adds after its prefix).
  void Extend(std::span<const ExtentKey> more);
  void Release();

 private:
  friend class PrefixIndex;
  std::shared_ptr<internal::PrefixIndexState> state_;
  std::vector<ExtentKey> keys_;
};

// A named pin (pin names are per namespace). The pin holds while the handle lives and until
// PrefixIndex::Unpin names it; whichever comes first releases it. Move-only; safe to outlive
// its PrefixIndex.
class PinHandle {
 public:
  PinHandle() = default;
  ~PinHandle() { Release(); }
  PinHandle(PinHandle&& other) noexcept;
  PinHandle& operator=(PinHandle&& other) noexcept;
  PinHandle(const PinHandle&) = delete;
  PinHandle& operator=(const PinHandle&) = delete;

  const std::string& ns() const { return ns_; }
  const std::string& name() const { return name_; }
  // False once released here or through Unpin.
  bool active() const;
  void Release();

 private:
  friend class PrefixIndex;
  std::shared_ptr<internal::PrefixIndexState> state_;
  std::string ns_, name_;
  uint64_t id_ = 0;
};

struct PrefixMatch {
  std::vector<ExtentKey> keys;  // the key of every whole extent of the tokens
  int64_t matched_extents = 0;  // keys[0, matched_extents) are present in some tier
  int64_t matched_tokens = 0;   // matched_extents * extent tokens
  std::vector<int> tier_of;     // per matched extent: index of the first probe that has it
  ExtentLease lease;            // holds keys[0, matched_extents)
};

struct PinInfo {
  std::string name;
  int64_t extents = 0;
};

class PrefixIndex {
 public:
  explicit PrefixIndex(KeyScheme scheme);
  ~PrefixIndex();
  PrefixIndex(const PrefixIndex&) = delete;
  PrefixIndex& operator=(const PrefixIndex&) = delete;

  const KeyScheme& scheme() const { return scheme_; }

  // The key chain of every whole extent of `tokens` in namespace `ns`.
  std::vector<ExtentKey> KeyChain(std::string_view ns, std::span<const int32_t> tokens) const;

  // The longest prefix of whole extents of which every extent is held by some tier (probes are
  // asked in order; the first that has an extent is its source). The matched extents are leased
  // before the probes are asked, so a tier that honours the index cannot evict them between the
  // answer and their use.
  PrefixMatch Lookup(std::string_view ns, std::span<const int32_t> tokens,
                     std::span<const TierProbe> tiers) const;

  // Leases `keys` (reference count +1 each; a key may appear several times).
  ExtentLease Acquire(std::span<const ExtentKey> keys) const;

  // Pins `keys` under `name` in `ns`. InvalidArgument if the name is empty or already pinned in
  // that namespace (Unpin it first).
  Result<PinHandle> Pin(std::string_view ns, std::string_view name,
                        std::span<const ExtentKey> keys);
  // Releases the named pin. NotFound when the namespace has no such pin.
  Status Unpin(std::string_view ns, std::string_view name);
  // The namespace's pins, by name.
  std::vector<PinInfo> Pins(std::string_view ns) const;

  // Neither leased nor pinned.
  bool IsEvictable(const ExtentKey& key) const;
  int64_t RefCount(const ExtentKey& key) const;
  int64_t PinCount(const ExtentKey& key) const;

 private:
  const KeyScheme scheme_;
  std::shared_ptr<internal::PrefixIndexState> state_;
};

struct HostTierOptions {
  uint64_t capacity_bytes = 0;
  CodecSpec codec{Codec::kQ8, /*zstd=*/false};
};

struct TierStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;  // encoded bytes of the stored extents
  int64_t extents = 0;
  int64_t hits = 0;
  int64_t misses = 0;
  uint64_t bytes_in = 0;   // bytes stored by Put
  uint64_t bytes_out = 0;  // bytes handed out by Get
  int64_t evictions = 0;
  int64_t rejected = 0;  // Puts refused for lack of evictable room
};

// Encoded extents in RAM under a byte capacity, least recently used evicted first; extents that
// the PrefixIndex reports leased or pinned are never evicted. used_bytes <= capacity_bytes at
// all times. Thread-safe (see the file comment).
class HostTier {
 public:
  // `index` (may be null: everything evictable) must outlive the tier.
  explicit HostTier(HostTierOptions options, const PrefixIndex* index = nullptr);

  const HostTierOptions& options() const { return options_; }

  // Stores an encoded extent, evicting LRU evictable extents to make room. A key already
  // present is only marked recently used (keys are content addresses). ResourceExhausted, with
  // nothing evicted, when the extent cannot fit even after evicting everything evictable.
  // Corruption when `encoded` is not a well-formed encoded extent (header and length).
  Status Put(const ExtentKey& key, std::vector<uint8_t> encoded);
  // Encodes the extent with options().codec and stores it.
  Status PutExtent(const ExtentKey& key, const ExtentView& src);

  // The encoded bytes (nullptr on a miss); counts a hit or a miss and marks it recently used.
  // The bytes stay valid for the caller even if the extent is evicted meanwhile.
  std::shared_ptr<const std::vector<uint8_t>> Get(const ExtentKey& key);
  // Get and decode into `dst`. NotFound on a miss.
  Status GetExtent(const ExtentKey& key, const ExtentView& dst);

  // Presence only: no counters, no LRU change.
  bool Contains(const ExtentKey& key) const;
  // Removes the extent even if leased or pinned (its bytes are gone from this tier only).
  bool Erase(const ExtentKey& key);
  // Evicts every evictable extent (the `evict` op); returns the bytes freed.
  uint64_t EvictUnpinned();

  TierStats stats() const;
  // A probe for PrefixIndex::Lookup. The tier must outlive the probe.
  TierProbe Probe(std::string name = "host") const;

 private:
  struct Entry {
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    std::list<ExtentKey>::iterator lru;  // position in lru_ (front = most recent)
  };
  bool EvictableLocked(const ExtentKey& key) const;
  void EraseLocked(std::unordered_map<ExtentKey, Entry, ExtentKeyHash>::iterator it);

  const HostTierOptions options_;
  const PrefixIndex* const index_;
  mutable std::mutex mu_;
  // Guarded by mu_:
  std::unordered_map<ExtentKey, Entry, ExtentKeyHash> entries_;
  std::list<ExtentKey> lru_;
  TierStats stats_;
};

}  // namespace kvtier::cache
