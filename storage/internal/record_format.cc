#include "storage/internal/record_format.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>

namespace kvtier::storage::internal {

namespace {

static_assert(std::endian::native == std::endian::little, "on-disk format is little-endian");

template <typename T>
void Store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

bool AllZero(const uint8_t* p, size_t n) {
  // Word-at-a-time scan; the padding is at most 4 KiB.
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    if (Load<uint64_t>(p + i) != 0) return false;
  }
  for (; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

}  // namespace

std::string SegmentFileName(uint64_t segment_id) {
  char name[32];
  std::snprintf(name, sizeof(name), "seg-%016llx.kvs", static_cast<unsigned long long>(segment_id));
  return name;
}

bool ParseSegmentFileName(std::string_view name, uint64_t* segment_id) {
  if (name.size() != 24 || name.substr(0, 4) != "seg-" || name.substr(20) != ".kvs") return false;
  uint64_t id = 0;
  for (char c : name.substr(4, 16)) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return false;
    }
    id = id << 4 | static_cast<uint64_t>(d);
  }
  *segment_id = id;
  return true;
}

AlignedBuffer EncodeSegmentHeader(uint64_t segment_id, uint64_t created_ms) {
  AlignedBuffer b(kSegmentHeaderBytes);
  uint8_t* p = b.data();
  Store<uint32_t>(p, kSegmentMagic);
  Store<uint16_t>(p + 4, kFormatVersion);
  Store<uint64_t>(p + 8, segment_id);
  Store<uint64_t>(p + 16, created_ms);
  Store<uint64_t>(p + 24, XXH3_64bits(p, 24));
  return b;
}

Status CheckSegmentHeader(std::span<const uint8_t> block, uint64_t segment_id) {
  if (block.size() < kSegmentHeaderBytes) return CorruptionError("segment header: short file");
  const uint8_t* p = block.data();
  if (Load<uint32_t>(p) != kSegmentMagic) return CorruptionError("segment header: not a segment");
  if (Load<uint16_t>(p + 4) != kFormatVersion) {
    return CorruptionError("segment header: format version " +
                           std::to_string(Load<uint16_t>(p + 4)) + ", expected " +
                           std::to_string(kFormatVersion));
  }
  if (Load<uint64_t>(p + 24) != XXH3_64bits(p, 24)) {
    return CorruptionError("segment header: checksum mismatch");
  }
  if (Load<uint64_t>(p + 8) != segment_id) {
    return CorruptionError("segment header: id does not match the file name");
  }
  return Status::Ok();
}

AlignedBuffer EncodeRecord(const Key& key, uint8_t codec, uint64_t uncompressed_bytes,
                           std::span<const uint8_t> payload, uint64_t* checksum) {
  AlignedBuffer b(RecordBytes(payload.size()));  // zero-filled: padding and reserved fields
  uint8_t* p = b.data();
  Store<uint32_t>(p, kRecordMagic);
  Store<uint16_t>(p + 4, kFormatVersion);
  std::memcpy(p + 8, key.data(), key.size());
  p[40] = codec;
  Store<uint32_t>(p + 44, static_cast<uint32_t>(payload.size()));
  Store<uint64_t>(p + 48, uncompressed_bytes);
  if (!payload.empty()) std::memcpy(p + kRecordHeaderBytes, payload.data(), payload.size());
  size_t covered = kRecordHeaderBytes + payload.size();
  uint64_t sum = XXH3_64bits(p, covered);
  Store<uint64_t>(p + covered, sum);
  if (checksum != nullptr) *checksum = sum;
  return b;
}

Result<RecordInfo> DecodeRecord(std::span<const uint8_t> record, const Key& key) {
  if (record.size() < kDirectIoAlignment || record.size() % kDirectIoAlignment != 0) {
    return CorruptionError("record: torn (" + std::to_string(record.size()) + " bytes)");
  }
  const uint8_t* p = record.data();
  if (Load<uint32_t>(p) != kRecordMagic) return CorruptionError("record: bad magic");
  if (Load<uint16_t>(p + 4) != kFormatVersion) return CorruptionError("record: format version");
  if (Load<uint16_t>(p + 6) != 0 || p[41] != 0 || p[42] != 0 || p[43] != 0 ||
      Load<uint64_t>(p + 56) != 0) {
    return CorruptionError("record: reserved fields set");
  }
  if (std::memcmp(p + 8, key.data(), key.size()) != 0) return CorruptionError("record: wrong key");
  RecordInfo info;
  info.codec = p[40];
  info.stored_bytes = Load<uint32_t>(p + 44);
  info.uncompressed_bytes = Load<uint64_t>(p + 48);
  if (RecordBytes(info.stored_bytes) != record.size()) {
    return CorruptionError("record: length does not match its size on disk");
  }
  size_t covered = kRecordHeaderBytes + info.stored_bytes;
  info.checksum = Load<uint64_t>(p + covered);
  if (XXH3_64bits(p, covered) != info.checksum) return CorruptionError("record: checksum mismatch");
  size_t end = covered + kChecksumBytes;
  if (!AllZero(p + end, record.size() - end)) return CorruptionError("record: padding not zero");
  return info;
}

std::string EncodeIndexValue(const IndexValue& v) {
  std::string out(kIndexValueBytes, '\0');
  auto* p = reinterpret_cast<uint8_t*>(out.data());
  p[0] = kIndexVersion;
  p[1] = v.codec;
  Store<uint32_t>(p + 4, v.stored_bytes);
  Store<uint64_t>(p + 8, v.segment_id);
  Store<uint64_t>(p + 16, v.offset);
  Store<uint32_t>(p + 24, v.record_bytes);
  Store<uint64_t>(p + 32, v.uncompressed_bytes);
  Store<uint64_t>(p + 40, v.checksum);
  Store<uint64_t>(p + 48, v.last_access_ms);
  return out;
}

Result<IndexValue> DecodeIndexValue(std::string_view bytes) {
  if (bytes.size() != kIndexValueBytes) return CorruptionError("index value: wrong size");
  auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (p[0] != kIndexVersion) return CorruptionError("index value: unknown version");
  IndexValue v;
  v.codec = p[1];
  v.stored_bytes = Load<uint32_t>(p + 4);
  v.segment_id = Load<uint64_t>(p + 8);
  v.offset = Load<uint64_t>(p + 16);
  v.record_bytes = Load<uint32_t>(p + 24);
  v.uncompressed_bytes = Load<uint64_t>(p + 32);
  v.checksum = Load<uint64_t>(p + 40);
  v.last_access_ms = Load<uint64_t>(p + 48);
  if (v.record_bytes != RecordBytes(v.stored_bytes) || v.offset % kDirectIoAlignment != 0 ||
      v.offset < kSegmentHeaderBytes) {
    return CorruptionError("index value: inconsistent lengths");
  }
  return v;
}

}  // namespace kvtier::storage::internal
