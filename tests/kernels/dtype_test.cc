// Tests of kernels/dtype.h: block layouts against references written here from the GGUF
// format definitions (independently of kernels/dtype.cc), round trips, and row sizes.
#include "kernels/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/fp16.h"

namespace kvtier::kernels {
namespace {

constexpr DType kAllTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                               DType::kQ4_0, DType::kQ4_1, DType::kQ6_K, DType::kQ4_K};

uint16_t Half(float f) { return F32ToF16(f); }
float HalfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}
void PutHalf(uint8_t* p, float f) {
  const uint16_t h = Half(f);
  std::memcpy(p, &h, 2);
}

// ---- Reference decoders: element e of one block, straight from the format definitions. ----
float RefQ8_0(const uint8_t* b, int e) { return HalfAt(b) * static_cast<int8_t>(b[2 + e]); }

int Nibble32(const uint8_t* qs, int e) { return e < 16 ? (qs[e] & 0xf) : (qs[e - 16] >> 4); }

float RefQ4_0(const uint8_t* b, int e) { return HalfAt(b) * (Nibble32(b + 2, e) - 8); }

float RefQ4_1(const uint8_t* b, int e) { return HalfAt(b) * Nibble32(b + 4, e) + HalfAt(b + 2); }

// Q4_K: d, dmin (f16), 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
void RefQ4KScaleMin(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 0x3f;
    *m = s[4 + j] & 0x3f;
  } else {
    *sc = (s[8 + (j - 4)] & 0x0f) + 16 * (s[j - 4] >> 6);
    *m = (s[8 + (j - 4)] >> 4) + 16 * (s[j] >> 6);
  }
}
float RefQ4K(const uint8_t* b, int e) {
  const int j = e / 32;  // sub-block
  int sc, m;
  RefQ4KScaleMin(b + 4, j, &sc, &m);
  const uint8_t byte = b[16 + 32 * (j / 2) + e % 32];
  const int q = (j % 2 == 0) ? (byte & 0x0f) : (byte >> 4);
  return HalfAt(b) * sc * q - HalfAt(b + 2) * m;
}

// Q6_K: ql[128], qh[64], int8 scales[16], f16 d.
float RefQ6K(const uint8_t* b, int e) {
  const int half = e / 128, r = e % 128, l = r % 32, quarter = r / 32;
  const uint8_t lbyte = b[64 * half + l + 32 * (quarter % 2)];
  const int low = quarter < 2 ? (lbyte & 0x0f) : (lbyte >> 4);
  const int high = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
  const int scale = static_cast<int8_t>(b[192 + 8 * half + r / 16]);
  return HalfAt(b + 208) * scale * ((low | (high << 4)) - 32);
}

float RefElem(DType type, const uint8_t* row, int64_t e) {
  const DTypeInfo& info = GetDTypeInfo(type);
  const uint8_t* b = row + (e / info.block_elems) * info.block_bytes;
  const int i = static_cast<int>(e % info.block_elems);
  switch (type) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, b, 4);
      return f;
    }
    case DType::kF16:
      return HalfAt(b);
    case DType::kBF16: {
      uint32_t bits = static_cast<uint32_t>(b[0] | (b[1] << 8)) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case DType::kQ8_0:
      return RefQ8_0(b, i);
    case DType::kQ4_0:
      return RefQ4_0(b, i);
    case DType::kQ4_1:
      return RefQ4_1(b, i);
    case DType::kQ6_K:
      return RefQ6K(b, i);
    case DType::kQ4_K:
      return RefQ4K(b, i);
  }
  return NAN;
}

// Random bytes with every f16 scale field set to a sane value.
std::vector<uint8_t> RandomBlocks(DType type, int64_t n_elems, std::mt19937& rng) {
  std::vector<uint8_t> data(RowBytes(type, n_elems));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(-0.2f, 0.2f);
  for (auto& v : data) v = static_cast<uint8_t>(byte(rng));
  const DTypeInfo& info = GetDTypeInfo(type);
  for (size_t off = 0; off < data.size(); off += info.block_bytes) {
    uint8_t* b = data.data() + off;
    switch (type) {
      case DType::kF32: {
        const float f = scale(rng);
        std::memcpy(b, &f, 4);
        break;
      }
      case DType::kF16:
      case DType::kQ8_0:
      case DType::kQ4_0:
        PutHalf(b, scale(rng));
        break;
      case DType::kBF16: {
        const uint16_t h = F32ToBF16(scale(rng));
        std::memcpy(b, &h, 2);
        break;
      }
      case DType::kQ4_1:
      case DType::kQ4_K:
        PutHalf(b, scale(rng));
        PutHalf(b + 2, scale(rng));
        break;
      case DType::kQ6_K:
        PutHalf(b + 208, scale(rng));
        break;
    }
  }
  return data;
}

TEST(DTypeTest, InfoAndRowBytes) {
  EXPECT_EQ(GetDTypeInfo(DType::kQ4_1).name, "q4_1");
  EXPECT_EQ(GetDTypeInfo(DType::kQ6_K).block_elems, 256);
  EXPECT_EQ(RowBytes(DType::kF32, 3), 12u);
  EXPECT_EQ(RowBytes(DType::kF16, 3), 6u);
  EXPECT_EQ(RowBytes(DType::kBF16, 5), 10u);
  EXPECT_EQ(RowBytes(DType::kQ8_0, 576), 18u * 34u);
  EXPECT_EQ(RowBytes(DType::kQ4_0, 64), 36u);
  EXPECT_EQ(RowBytes(DType::kQ4_1, 576), 18u * 20u);
  EXPECT_EQ(RowBytes(DType::kQ6_K, 512), 420u);
  EXPECT_EQ(RowBytes(DType::kQ4_K, 256), 144u);
  EXPECT_EQ(RowBytes(DType::kQ4_K, 0), 0u);
}

TEST(DTypeTest, HandBuiltQ4_0AndQ4_1) {
  uint8_t q40[18];
  PutHalf(q40, 0.5f);
  for (int i = 0; i < 16; ++i) q40[2 + i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  float y[32];
  DequantizeRow(DType::kQ4_0, q40, y, 32);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], 0.5f * (i - 8)) << i;
    EXPECT_EQ(y[16 + i], 0.5f * (7 - i)) << i;
  }
  uint8_t q41[20];
  PutHalf(q41, 2.0f);
  PutHalf(q41 + 2, -1.0f);
  for (int i = 0; i < 16; ++i) q41[4 + i] = static_cast<uint8_t>(i | (3 << 4));
  DequantizeRow(DType::kQ4_1, q41, y, 32);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], 2.0f * i - 1.0f) << i;
    EXPECT_EQ(y[16 + i], 5.0f) << i;
  }
}

TEST(DTypeTest, HandBuiltQ8_0) {
  uint8_t b[34];
  PutHalf(b, 0.25f);
  for (int i = 0; i < 32; ++i) b[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i * 8 - 128));
  float y[32];
  DequantizeRow(DType::kQ8_0, b, y, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.25f * (i * 8 - 128)) << i;
}

TEST(DTypeTest, HandBuiltQ4K) {
  // Scales and mins with values >= 16 so the packed high bits matter.
  const int sc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
  const int mn[8] = {0, 5, 10, 20, 31, 40, 48, 60};
  uint8_t b[144] = {};
  PutHalf(b, 0.5f);
  PutHalf(b + 2, 0.25f);
  uint8_t* s = b + 4;
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  // Sub-block j holds quant (j + e) % 16 at its element e.
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32, q = (j + e) % 16;
    uint8_t& byte = b[16 + 32 * (j / 2) + e % 32];
    byte = static_cast<uint8_t>(j % 2 == 0 ? (byte | q) : (byte | (q << 4)));
  }
  std::vector<float> y(256);
  DequantizeRow(DType::kQ4_K, b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32;
    EXPECT_FLOAT_EQ(y[e], 0.5f * sc[j] * ((j + e) % 16) - 0.25f * mn[j]) << e;
  }
}

TEST(DTypeTest, HandBuiltQ6K) {
  uint8_t b[210] = {};
  for (int g = 0; g < 16; ++g) b[192 + g] = static_cast<uint8_t>(static_cast<int8_t>(g - 8));
  PutHalf(b + 208, 0.125f);
  // Element e holds quant e % 64.
  for (int e = 0; e < 256; ++e) {
    const int q = e % 64, half = e / 128, r = e % 128, l = r % 32, quarter = r / 32;
    uint8_t& lb = b[64 * half + l + 32 * (quarter % 2)];
    lb = static_cast<uint8_t>(lb | (quarter < 2 ? (q & 15) : ((q & 15) << 4)));
    b[128 + 32 * half + l] |= static_cast<uint8_t>((q >> 4) << (2 * quarter));
  }
  std::vector<float> y(256);
  DequantizeRow(DType::kQ6_K, b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    EXPECT_FLOAT_EQ(y[e], 0.125f * (e / 16 - 8) * (e % 64 - 32)) << e;
  }
}

TEST(DTypeTest, RandomBlocksMatchReference) {
  std::mt19937 rng(7);
  for (DType type : kAllTypes) {
    const int64_t n = 3 * 256;
    const std::vector<uint8_t> data = RandomBlocks(type, n, rng);
    std::vector<float> y(n);
    DequantizeRow(type, data.data(), y.data(), n);
    for (int64_t e = 0; e < n; ++e) {
      const float want = RefElem(type, data.data(), e);
      ASSERT_NEAR(y[e], want, 1e-5f * (1.0f + std::fabs(want)))
          << GetDTypeInfo(type).name << " element " << e;
    }
  }
}

TEST(DTypeTest, QuantizeRoundTrip) {
  struct Bound {
    DType type;
    double max_rel_rms;
  };
  const Bound bounds[] = {{DType::kF32, 0.0},   {DType::kF16, 1e-3},  {DType::kBF16, 5e-3},
                          {DType::kQ8_0, 0.01}, {DType::kQ4_0, 0.12}, {DType::kQ4_1, 0.1},
                          {DType::kQ6_K, 0.04}, {DType::kQ4_K, 0.12}};
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.3f, 1.0f);
  const int64_t n = 1024;
  std::vector<float> x(n), y(n);
  for (auto& v : x) v = dist(rng);
  x[5] = 0.0f;
  for (int i = 64; i < 96; ++i) x[i] = 0.0f;  // an all-zero block must round-trip to zero
  for (const Bound& b : bounds) {
    std::vector<uint8_t> q(RowBytes(b.type, n));
    QuantizeRow(b.type, x.data(), q.data(), n);
    DequantizeRow(b.type, q.data(), y.data(), n);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(std::isfinite(y[i])) << GetDTypeInfo(b.type).name;
      err += (y[i] - x[i]) * static_cast<double>(y[i] - x[i]);
      ref += x[i] * static_cast<double>(x[i]);
    }
    EXPECT_LE(std::sqrt(err / ref), b.max_rel_rms) << GetDTypeInfo(b.type).name;
    for (int i = 64; i < 96; ++i) EXPECT_EQ(y[i], 0.0f) << GetDTypeInfo(b.type).name;
  }
}

TEST(DTypeTest, Q8_0AndQ4_1ErrorWithinHalfStep) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-4.0f, 9.0f);
  std::vector<float> x(256), y(256);
  for (auto& v : x) v = dist(rng);
  std::vector<uint8_t> q(RowBytes(DType::kQ8_0, 256));
  QuantizeRow(DType::kQ8_0, x.data(), q.data(), 256);
  DequantizeRow(DType::kQ8_0, q.data(), y.data(), 256);
  for (int i = 0; i < 256; ++i) {
    const float d = HalfAt(q.data() + 34 * (i / 32));
    EXPECT_LE(std::fabs(y[i] - x[i]), 0.5f * d * 1.01f + 1e-6f) << i;
  }
  q.assign(RowBytes(DType::kQ4_1, 256), 0);
  QuantizeRow(DType::kQ4_1, x.data(), q.data(), 256);
  DequantizeRow(DType::kQ4_1, q.data(), y.data(), 256);
  for (int i = 0; i < 256; ++i) {
    const float d = HalfAt(q.data() + 20 * (i / 32));
    // Half a step plus the f16 rounding of the minimum.
    EXPECT_LE(std::fabs(y[i] - x[i]), 0.5f * d + 0.01f) << i;
  }
}

}  // namespace
}  // namespace kvtier::kernels
