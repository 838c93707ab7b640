// cache/extent_key.h — content addresses of extents (DESIGN §4).
//
// Thread safety: KeyScheme and ExtentKey are values; the functions are pure and thread-safe.
//
// key_i = SHA-256 of, in order (UpdateField = u64 little-endian length + bytes,
// UpdateU64 = 8 bytes little-endian):
//   UpdateField("kvtier/extent-key")        domain tag
//   UpdateU64(scheme.format_version)
//   UpdateField(scheme.model_fingerprint)
//   UpdateField(scheme.layout)               codec and page/extent geometry, see LayoutId
//   UpdateField(namespace)
//   UpdateField(parent key: 32 bytes; the all-zero key for the first extent)
//   UpdateField(token ids: n x u32 little-endian), n = the extent's tokens (64)
// so key_i depends on every token before it through the chain of parents, on the namespace
// (a namespace never sees another's keys) and on everything that changes the stored bytes.
// Nothing here is seeded or process-random: keys are stable across processes and machines.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cache/codec.h"
#include "cache/extent.h"

namespace kvtier::cache {

inline constexpr uint64_t kExtentKeyFormatVersion = 1;

struct ExtentKey {
  std::array<uint8_t, 32> bytes{};

  bool IsRoot() const;  // all zero: the parent of a sequence's first extent
  std::string Hex() const;
  auto operator<=>(const ExtentKey&) const = default;
};

// Hash-map hasher: the key is already uniformly distributed, so its first 8 bytes serve.
struct ExtentKeyHash {
  size_t operator()(const ExtentKey& k) const;
};

// "q8/pt16/ep4/L30/H3/D64": the codec (not zstd, which is lossless) and the geometry.
std::string LayoutId(const CodecSpec& spec, const ExtentShape& shape);

struct KeyScheme {
  uint64_t format_version = kExtentKeyFormatVersion;
  std::string model_fingerprint;
  std::string layout;  // LayoutId(...)
  int extent_tokens = kExtentPages * 16;
};

// The key of one extent given its parent's key and exactly scheme.extent_tokens token ids.
ExtentKey ComputeExtentKey(const KeyScheme& scheme, std::string_view ns, const ExtentKey& parent,
                           std::span<const int32_t> extent_tokens);

// Keys of every whole extent of `tokens` (a trailing partial extent has no key), chained from
// the root.
std::vector<ExtentKey> ComputeKeyChain(const KeyScheme& scheme, std::string_view ns,
                                       std::span<const int32_t> tokens);

}  // namespace kvtier::cache
