// kernels/cpu/internal/quant_blocks.h — the GGUF (ggml) quantized block layouts, byte for byte.
//
// Private to kernels/. Thread safety: plain data and pure functions.
//
// Every struct here is exactly the on-disk block: no padding, little-endian fields, f16 stored
// as its IEEE bit pattern. The static_asserts pin the sizes GGUF files use.
#pragma once

#include <cstdint>

namespace kvtier::kernels::internal {

constexpr int kQK = 32;    // elements per block of Q8_0, Q4_0, Q4_1
constexpr int kQKK = 256;  // elements per super-block of the K-quants

// x[i] = d * qs[i]
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Nibble j of byte i: element i (low nibble) or i + 16 (high nibble). x = (q - 8) * d.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// Same nibble order as Q4_0. x = q * d + m.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

// 8 sub-blocks of 32 elements. Sub-block j has a 6-bit scale sc_j and a 6-bit min m_j packed
// in `scales` (see UnpackQ4KScales); x = d * sc_j * q - dmin * m_j. The 256 nibbles: bytes
// qs[32c .. 32c+31] hold sub-block 2c in their low nibbles and sub-block 2c+1 in their high
// nibbles (c = 0..3).
struct BlockQ4K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ4K) == 144);

// 16 groups of 16 elements, each with a signed 8-bit scale; 6-bit quants q in [0, 63],
// x = d * scales[g] * (q - 32). Two halves of 128 elements; in half h, for l in [0, 32):
//   element l      : low nibble of ql[64h + l]      | bits 0-1 of qh[32h + l] << 4
//   element l + 32 : low nibble of ql[64h + l + 32] | bits 2-3 of qh[32h + l] << 4
//   element l + 64 : high nibble of ql[64h + l]     | bits 4-5 of qh[32h + l] << 4
//   element l + 96 : high nibble of ql[64h + l + 32]| bits 6-7 of qh[32h + l] << 4
// and element e of half h uses scales[8h + e / 16].
struct BlockQ6K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6K) == 210);

// Unpacks the 12 bytes of Q4_K scales into 8 scales and 8 mins (each 0..63).
//   j < 4: sc = s[j] & 63,                          m = s[j + 4] & 63
//   j >= 4: sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4, m = (s[j + 4] >> 4) | (s[j] >> 6) << 4
inline void UnpackQ4KScales(const uint8_t* s, uint8_t* sc, uint8_t* m) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    m[j] = s[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
    m[j] = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// The inverse of UnpackQ4KScales (every value must be < 64).
inline void PackQ4KScales(const uint8_t* sc, const uint8_t* m, uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

}  // namespace kvtier::kernels::internal
