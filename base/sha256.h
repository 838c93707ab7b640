// base/sha256.h — SHA-256 (OpenSSL's libcrypto) for content addresses and fingerprints.
// Thread safety: a Sha256 object is single-threaded; the free function is thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace kvtier {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // Length-prefixed string: unambiguous concatenation of fields.
  void UpdateField(std::string_view s);
  void UpdateU64(uint64_t v);
  std::array<uint8_t, 32> Finish();

 private:
  void* ctx_;  // EVP_MD_CTX
};

std::string ToHex(std::span<const uint8_t> bytes);

}  // namespace kvtier
