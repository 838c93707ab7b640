// cache/codec.h — KV extent codecs: f16 (raw), q8 (int8, one f16 scale per token per KV head),
// q4 (int4, KIVI-style: keys per channel over the extent, values per token), each optionally
// followed by zstd (DESIGN §4).
//
// Thread safety: every function is safe to call concurrently (zstd contexts are per thread);
// concurrent calls must not write the same pages.
//
// Encoded extent = a 32-byte header followed by the payload (all little-endian):
//   0  magic "KVX1"            4  u16 format version (kCodecFormatVersion)
//   6  u8 codec id             7  u8 flags (bit 0: payload is one zstd frame; others zero)
//   8  u16 n_layers           10  u16 n_kv_heads      12  u16 head_dim
//  14  u16 page_tokens        16  u16 extent_pages    18  u16 zero
//  20  u32 payload bytes stored after the header
//  24  u32 payload bytes before zstd (must equal what codec and shape imply)
//  28  u32 FNV-1a of bytes [0, 28)
// Payload, per layer, in layer order (T = extent tokens, H = KV heads, D = head dim):
//   f16: K [H][T][D] f16, V [H][T][D] f16
//   q8:  K scales [H][T] f16, K [H][T][D] i8, then the same for V. x = q * scale.
//   q4:  K scales [H][D] f16, K mins [H][D] f16, K [H][T][D/2] nibbles,
//        V scales [H][T] f16, V mins [H][T] f16, V [H][T][D/2] nibbles. x = q * scale + min;
//        byte j of a row holds element 2j in its low nibble and 2j+1 in its high nibble.
// Decoding validates the header against the destination and writes straight into its pages.
// Truncated, corrupt or mismatched input gives Corruption or InvalidArgument and never writes
// outside the destination's pages. (Payload bytes themselves carry no checksum: the disk and
// remote tiers check their records; a flipped quantized value decodes to a wrong but finite
// number, a flipped scale to a non-finite one is rejected.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cache/extent.h"

namespace kvtier::cache {

enum class Codec : uint8_t { kF16 = 1, kQ8 = 2, kQ4 = 3 };

inline constexpr uint16_t kCodecFormatVersion = 1;
inline constexpr size_t kExtentHeaderBytes = 32;

struct CodecSpec {
  Codec codec = Codec::kQ8;
  bool zstd = false;
  int zstd_level = 3;

  // "f16", "q8", "q4", with "+zstd" appended when zstd is on.
  std::string Name() const;
  bool operator==(const CodecSpec&) const = default;
};

std::string_view CodecName(Codec codec);
// Parses "f16" | "q8" | "q4", optionally followed by "+zstd" (default level).
Result<CodecSpec> ParseCodecSpec(std::string_view name);

// Payload bytes before zstd for a codec and extent shape (the shape must be valid).
size_t CodecPayloadBytes(Codec codec, const ExtentShape& shape);

struct ExtentHeader {
  uint16_t version = kCodecFormatVersion;
  Codec codec = Codec::kQ8;
  bool zstd = false;
  ExtentShape shape;
  uint32_t payload_bytes = 0;      // stored after the header
  uint32_t raw_payload_bytes = 0;  // before zstd
};

// Parses and validates the header of an encoded extent, including that `bytes` holds exactly
// header + payload. Corruption for anything malformed.
Result<ExtentHeader> ParseExtentHeader(std::span<const uint8_t> bytes);

// Encodes the extent's pages. InvalidArgument for an invalid view or non-finite K/V.
Status EncodeExtent(const ExtentView& src, const CodecSpec& spec, std::vector<uint8_t>* out);
Result<std::vector<uint8_t>> EncodeExtent(const ExtentView& src, const CodecSpec& spec);

// Decodes into the destination pages (only they are written). Corruption for malformed input,
// InvalidArgument when the header's shape differs from the destination's. Everything is
// validated before the first write, so on error the destination pages are untouched.
Status DecodeExtent(std::span<const uint8_t> bytes, const ExtentView& dst);

// Decodes one page of one layer of an encoded extent — page `page_in_extent` (tokens
// [page_in_extent * page_tokens, +page_tokens) of the extent) of layer `layer` — into page
// `dst_page` of `pool` (K and V of every KV head), writing nothing else. Bit-exact with the same
// slice of DecodeExtent. The codecs are per token per head (q8, f16) or per layer (q4 keys), so a
// page decodes on its own; a zstd payload is decompressed whole first (keep hot records plain:
// DecompressExtent). Only the scales the page uses are validated; Corruption for malformed
// input, InvalidArgument when the pool's page geometry differs from the extent's or the page or
// layer is out of range. On error nothing is written.
Status DecodeExtentPage(std::span<const uint8_t> bytes, int layer, int page_in_extent,
                        const kernels::KvPool& pool, int32_t dst_page);

// The same extent without zstd (header flag cleared, payload decompressed); a plain extent is
// copied. Corruption for malformed input.
Result<std::vector<uint8_t>> DecompressExtent(std::span<const uint8_t> bytes);

// For tests and benchmarks: turns the F16C row conversions off (true) or back on (false).
// Returns the previous setting. Not for concurrent use with running codecs.
bool SetCodecScalarOnlyForTesting(bool scalar_only);

}  // namespace kvtier::cache
