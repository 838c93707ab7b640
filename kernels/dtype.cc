#include "kernels/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/status.h"
#include "kernels/cpu/internal/quant_blocks.h"
#include "kernels/fp16.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvtier::kernels {
namespace {

using internal::BlockQ4_0;
using internal::BlockQ4_1;
using internal::BlockQ4K;
using internal::BlockQ6K;
using internal::BlockQ8_0;
using internal::kQK;
using internal::kQKK;

constexpr DTypeInfo kInfos[] = {
    {"f32", 1, 4},
    {"f16", 1, 2},
    {"bf16", 1, 2},
    {"q8_0", kQK, sizeof(BlockQ8_0)},
    {"q4_0", kQK, sizeof(BlockQ4_0)},
    {"q4_1", kQK, sizeof(BlockQ4_1)},
    {"q6_k", kQKK, sizeof(BlockQ6K)},
    {"q4_k", kQKK, sizeof(BlockQ4K)},
};

int RoundToInt(float x) { return static_cast<int>(std::lrintf(x)); }

// ---- F16 with F16C ------------------------------------------------------------------------
#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) void F16ToF32RowF16C(const uint16_t* src, float* dst,
                                                          int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

bool HasF16C() {
  static const bool has = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
  return has;
}
#endif

void DequantF16(const uint16_t* src, float* dst, int64_t n) {
#if defined(__x86_64__)
  if (HasF16C()) {
    F16ToF32RowF16C(src, dst, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(src[i]);
}

// ---- Dequantization -----------------------------------------------------------------------
void DequantQ8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = F16ToF32(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = d * b[i].qs[j];
  }
}

void DequantQ4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = F16ToF32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * ((b[i].qs[j] & 15) - 8);
      y[j + 16] = d * ((b[i].qs[j] >> 4) - 8);
    }
  }
}

void DequantQ4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = F16ToF32(b[i].d);
    const float m = F16ToF32(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * (b[i].qs[j] & 15) + m;
      y[j + 16] = d * (b[i].qs[j] >> 4) + m;
    }
  }
}

void DequantQ4K(const BlockQ4K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(b[i].d);
    const float dmin = F16ToF32(b[i].dmin);
    uint8_t sc[8], m[8];
    internal::UnpackQ4KScales(b[i].scales, sc, m);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b[i].qs + 32 * c;
      const float d_lo = d * sc[2 * c], m_lo = dmin * m[2 * c];
      const float d_hi = d * sc[2 * c + 1], m_hi = dmin * m[2 * c + 1];
      for (int l = 0; l < 32; ++l) {
        y[l] = d_lo * (q[l] & 15) - m_lo;
        y[l + 32] = d_hi * (q[l] >> 4) - m_hi;
      }
      y += 64;
    }
  }
}

void DequantQ6K(const BlockQ6K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int q0 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[l / 16] * q0;
        y[l + 32] = d * sc[2 + l / 16] * q1;
        y[l + 64] = d * sc[4 + l / 16] * q2;
        y[l + 96] = d * sc[6 + l / 16] * q3;
      }
      y += 128;
    }
  }
}

// ---- Quantization (round to nearest) -------------------------------------------------------
void QuantQ8_0(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    b[i].d = F32ToF16(amax / 127.0f);
    const float d = F16ToF32(b[i].d);
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK; ++j) {
      b[i].qs[j] = static_cast<int8_t>(std::clamp(RoundToInt(x[j] * inv), -127, 127));
    }
  }
}

void QuantQ4_0(const float* x, BlockQ4_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    // The value of largest magnitude maps to -8 (the end of the range with more room).
    float max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (std::fabs(x[j]) > std::fabs(max)) max = x[j];
    }
    b[i].d = F32ToF16(max / -8.0f);
    const float d = F16ToF32(b[i].d);
    const float inv = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::clamp(RoundToInt(x[j] * inv) + 8, 0, 15);
      const int hi = std::clamp(RoundToInt(x[j + 16] * inv) + 8, 0, 15);
      b[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void QuantQ4_1(const float* x, BlockQ4_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < kQK; ++j) {
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
    b[i].d = F32ToF16((hi - lo) / 15.0f);
    b[i].m = F32ToF16(lo);
    const float d = F16ToF32(b[i].d);
    const float m = F16ToF32(b[i].m);
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::clamp(RoundToInt((x[j] - m) * inv), 0, 15);
      const int q1 = std::clamp(RoundToInt((x[j + 16] - m) * inv), 0, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void QuantQ4K(const float* x, BlockQ4K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float scale[8], min[8];  // per sub-block: x ~ scale * q - min, min >= 0
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
      float lo = x[32 * j], hi = x[32 * j];
      for (int l = 1; l < 32; ++l) {
        lo = std::min(lo, x[32 * j + l]);
        hi = std::max(hi, x[32 * j + l]);
      }
      lo = std::min(lo, 0.0f);
      scale[j] = (hi - lo) / 15.0f;
      min[j] = -lo;
      max_scale = std::max(max_scale, scale[j]);
      max_min = std::max(max_min, min[j]);
    }
    b[i].d = F32ToF16(max_scale / 63.0f);
    b[i].dmin = F32ToF16(max_min / 63.0f);
    const float d = F16ToF32(b[i].d);
    const float dmin = F16ToF32(b[i].dmin);
    uint8_t sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = static_cast<uint8_t>(d > 0.0f ? std::clamp(RoundToInt(scale[j] / d), 0, 63) : 0);
      // Round the min up so that x + min stays >= 0 where possible.
      m[j] = static_cast<uint8_t>(
          dmin > 0.0f ? std::clamp(static_cast<int>(std::ceil(min[j] / dmin)), 0, 63) : 0);
    }
    internal::PackQ4KScales(sc, m, b[i].scales);
    for (int c = 0; c < 4; ++c) {
      for (int half = 0; half < 2; ++half) {
        const int j = 2 * c + half;
        const float ds = d * sc[j];
        const float dm = dmin * m[j];
        const float inv = ds > 0.0f ? 1.0f / ds : 0.0f;
        for (int l = 0; l < 32; ++l) {
          const int q = std::clamp(RoundToInt((x[32 * j + l] + dm) * inv), 0, 15);
          uint8_t& byte = b[i].qs[32 * c + l];
          byte = static_cast<uint8_t>(half == 0 ? (byte & 0xf0) | q : (byte & 0x0f) | (q << 4));
        }
      }
    }
  }
}

void QuantQ6K(const float* x, BlockQ6K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float scale[16];
    float max_scale = 0.0f;
    for (int g = 0; g < 16; ++g) {
      float amax = 0.0f;
      for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * g + l]));
      scale[g] = amax / 31.0f;
      max_scale = std::max(max_scale, scale[g]);
    }
    b[i].d = F32ToF16(max_scale / 127.0f);
    const float d = F16ToF32(b[i].d);
    int q[kQKK];
    for (int g = 0; g < 16; ++g) {
      const int sc = d > 0.0f ? std::clamp(RoundToInt(scale[g] / d), 0, 127) : 0;
      b[i].scales[g] = static_cast<int8_t>(sc);
      const float ds = d * sc;
      const float inv = ds > 0.0f ? 1.0f / ds : 0.0f;
      for (int l = 0; l < 16; ++l) {
        q[16 * g + l] = std::clamp(RoundToInt(x[16 * g + l] * inv), -32, 31) + 32;
      }
    }
    for (int h = 0; h < 2; ++h) {
      const int* qq = q + 128 * h;
      uint8_t* ql = b[i].ql + 64 * h;
      uint8_t* qh = b[i].qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((qq[l] & 15) | ((qq[l + 64] & 15) << 4));
        ql[l + 32] = static_cast<uint8_t>((qq[l + 32] & 15) | ((qq[l + 96] & 15) << 4));
        qh[l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) |
                                     ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
      }
    }
  }
}

}  // namespace

const DTypeInfo& GetDTypeInfo(DType type) {
  const auto index = static_cast<size_t>(type);
  KVTIER_CHECK(index < std::size(kInfos));
  return kInfos[index];
}

size_t RowBytes(DType type, int64_t n_elems) {
  const DTypeInfo& info = GetDTypeInfo(type);
  KVTIER_CHECK(n_elems >= 0 && n_elems % info.block_elems == 0);
  return static_cast<size_t>(n_elems / info.block_elems) * info.block_bytes;
}

void DequantizeRow(DType type, const void* src, float* dst, int64_t n) {
  const int64_t nb = n / GetDTypeInfo(type).block_elems;
  KVTIER_CHECK(n % GetDTypeInfo(type).block_elems == 0);
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16:
      DequantF16(static_cast<const uint16_t*>(src), dst, n);
      return;
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = BF16ToF32(s[i]);
      return;
    }
    case DType::kQ8_0:
      return DequantQ8_0(static_cast<const BlockQ8_0*>(src), dst, nb);
    case DType::kQ4_0:
      return DequantQ4_0(static_cast<const BlockQ4_0*>(src), dst, nb);
    case DType::kQ4_1:
      return DequantQ4_1(static_cast<const BlockQ4_1*>(src), dst, nb);
    case DType::kQ6_K:
      return DequantQ6K(static_cast<const BlockQ6K*>(src), dst, nb);
    case DType::kQ4_K:
      return DequantQ4K(static_cast<const BlockQ4K*>(src), dst, nb);
  }
  KVTIER_CHECK(false);
}

void QuantizeRow(DType type, const float* src, void* dst, int64_t n) {
  const int64_t nb = n / GetDTypeInfo(type).block_elems;
  KVTIER_CHECK(n % GetDTypeInfo(type).block_elems == 0);
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = F32ToF16(src[i]);
      return;
    }
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = F32ToBF16(src[i]);
      return;
    }
    case DType::kQ8_0:
      return QuantQ8_0(src, static_cast<BlockQ8_0*>(dst), nb);
    case DType::kQ4_0:
      return QuantQ4_0(src, static_cast<BlockQ4_0*>(dst), nb);
    case DType::kQ4_1:
      return QuantQ4_1(src, static_cast<BlockQ4_1*>(dst), nb);
    case DType::kQ6_K:
      return QuantQ6K(src, static_cast<BlockQ6K*>(dst), nb);
    case DType::kQ4_K:
      return QuantQ4K(src, static_cast<BlockQ4K*>(dst), nb);
  }
  KVTIER_CHECK(false);
}

}  // namespace kvtier::kernels
