#include "cache/extent_key.h"

#include <cstring>

#include "base/sha256.h"
#include "base/status.h"

namespace kvtier::cache {

bool ExtentKey::IsRoot() const {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

std::string ExtentKey::Hex() const { return ToHex(bytes); }

size_t ExtentKeyHash::operator()(const ExtentKey& k) const {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(k.bytes[i]) << (8 * i);
  return static_cast<size_t>(v);
}

std::string LayoutId(const CodecSpec& spec, const ExtentShape& shape) {
  return std::string(CodecName(spec.codec)) + "/pt" + std::to_string(shape.page_tokens) + "/ep" +
         std::to_string(shape.extent_pages) + "/L" + std::to_string(shape.n_layers) + "/H" +
         std::to_string(shape.n_kv_heads) + "/D" + std::to_string(shape.head_dim);
}

ExtentKey ComputeExtentKey(const KeyScheme& scheme, std::string_view ns, const ExtentKey& parent,
                           std::span<const int32_t> extent_tokens) {
  KVTIER_CHECK(static_cast<int>(extent_tokens.size()) == scheme.extent_tokens);
  Sha256 sha;
  sha.UpdateField("kvtier/extent-key");
  sha.UpdateU64(scheme.format_version);
  sha.UpdateField(scheme.model_fingerprint);
  sha.UpdateField(scheme.layout);
  sha.UpdateField(ns);
  sha.UpdateField(
      std::string_view(reinterpret_cast<const char*>(parent.bytes.data()), parent.bytes.size()));
  std::string ids(extent_tokens.size() * 4, '\0');
  for (size_t i = 0; i < extent_tokens.size(); ++i) {
    const uint32_t v = static_cast<uint32_t>(extent_tokens[i]);
    for (int b = 0; b < 4; ++b) ids[i * 4 + b] = static_cast<char>(v >> (8 * b));
  }
  sha.UpdateField(ids);
  ExtentKey key;
  key.bytes = sha.Finish();
  return key;
}

std::vector<ExtentKey> ComputeKeyChain(const KeyScheme& scheme, std::string_view ns,
                                       std::span<const int32_t> tokens) {
  KVTIER_CHECK(scheme.extent_tokens > 0);
  const size_t n = tokens.size() / scheme.extent_tokens;
  std::vector<ExtentKey> keys;
  keys.reserve(n);
  ExtentKey parent;
  for (size_t i = 0; i < n; ++i) {
    parent = ComputeExtentKey(scheme, ns, parent,
                              tokens.subspan(i * scheme.extent_tokens, scheme.extent_tokens));
    keys.push_back(parent);
  }
  return keys;
}

}  // namespace kvtier::cache
