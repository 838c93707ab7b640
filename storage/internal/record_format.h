// storage/internal/record_format.h — bytes on disk and in the index: segment headers, records,
// index values. Private to storage/.
//
// Thread safety: pure functions.
//
// All integers are little-endian.
//
// Segment file "seg-<16 hex digits>.kvs", first kSegmentHeaderBytes:
//   0  u32 magic 'KVSG'   4 u16 format version   6 u16 reserved (0)
//   8  u64 segment id    16 u64 created (unix ms) 24 u64 xxh3-64 of bytes [0, 24)
//   32 zeros up to 4096
// then records back to back, each starting at a multiple of 4096.
//
// Record:
//   0  u32 magic 'KVTR'   4 u16 format version   6 u16 flags (0)
//   8  key[32]           40 u8 codec            41 u8[3] reserved (0)
//   44 u32 stored length (payload bytes)         48 u64 uncompressed length
//   56 u64 reserved (0)
//   64 payload (stored length bytes)
//   then u64 xxh3-64 over header + payload, then zeros up to a multiple of 4096.
// A record is valid only if every field checks, the checksum matches and the padding is zero:
// a flipped bit anywhere in the record's 4 KiB blocks makes it invalid.
//
// Index value (RocksDB, key = the 32 key bytes), 56 bytes:
//   0 u8 index format version   1 u8 codec   2 u16 reserved   4 u32 stored length
//   8 u64 segment id   16 u64 offset   24 u32 record bytes   28 u32 reserved
//   32 u64 uncompressed length   40 u64 checksum   48 u64 last access (unix ms)
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "storage/io_engine.h"

namespace kvtier::storage::internal {

using Key = std::array<uint8_t, 32>;

inline constexpr uint32_t kSegmentMagic = 0x4753564B;  // "KVSG"
inline constexpr uint32_t kRecordMagic = 0x5254564B;   // "KVTR"
inline constexpr uint16_t kFormatVersion = 1;
inline constexpr uint8_t kIndexVersion = 1;
inline constexpr size_t kSegmentHeaderBytes = 4096;
inline constexpr size_t kRecordHeaderBytes = 64;
inline constexpr size_t kChecksumBytes = 8;
inline constexpr size_t kIndexValueBytes = 56;

// Bytes a record with `stored_bytes` of payload takes on disk (padded to 4 KiB).
inline uint64_t RecordBytes(uint64_t stored_bytes) {
  uint64_t raw = kRecordHeaderBytes + stored_bytes + kChecksumBytes;
  return (raw + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
}

std::string SegmentFileName(uint64_t segment_id);
// Parses "seg-<16 hex>.kvs"; false for any other name.
bool ParseSegmentFileName(std::string_view name, uint64_t* segment_id);

AlignedBuffer EncodeSegmentHeader(uint64_t segment_id, uint64_t created_ms);
// OK when `block` (at least kSegmentHeaderBytes) is a header of this format for `segment_id`.
Status CheckSegmentHeader(std::span<const uint8_t> block, uint64_t segment_id);

struct RecordInfo {
  uint8_t codec = 0;
  uint32_t stored_bytes = 0;
  uint64_t uncompressed_bytes = 0;
  uint64_t checksum = 0;
};

// The record as written to disk: RecordBytes(payload.size()) bytes, aligned.
AlignedBuffer EncodeRecord(const Key& key, uint8_t codec, uint64_t uncompressed_bytes,
                           std::span<const uint8_t> payload, uint64_t* checksum);
// Validates a whole record read back from disk against the key it must hold. Corruption on any
// mismatch (torn, flipped bits, wrong key, foreign version).
Result<RecordInfo> DecodeRecord(std::span<const uint8_t> record, const Key& key);

struct IndexValue {
  uint8_t codec = 0;
  uint32_t stored_bytes = 0;
  uint64_t segment_id = 0;
  uint64_t offset = 0;
  uint32_t record_bytes = 0;
  uint64_t uncompressed_bytes = 0;
  uint64_t checksum = 0;
  uint64_t last_access_ms = 0;
};

std::string EncodeIndexValue(const IndexValue& v);
// Corruption for a wrong size, an unknown index version or inconsistent lengths.
Result<IndexValue> DecodeIndexValue(std::string_view bytes);

}  // namespace kvtier::storage::internal
