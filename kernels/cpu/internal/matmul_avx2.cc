// AVX2/FMA/F16C MatMul kernels for every weight type. Compiled with target attributes (the
// build sets no -march), so only call them after DetectCpuLevel() says AVX2 is there.
//
// Integer types: activations are 8-bit (QuantizedActs); weights are unpacked to bytes and
// multiplied with _mm256_maddubs_epi16 (u8 x s8 -> pairs of int16) and _mm256_madd_epi16.
// Tiles of R rows x T tokens reuse every unpacked weight block across T tokens. With float
// activations (Avx2FloatActsKernel) Q8_0/Q4_0/Q4_1 blocks are dequantized to floats instead.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/internal/matmul_kernels.h"
#include "kernels/cpu/internal/quant_blocks.h"

#define KVTIER_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KVTIER_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

namespace kvtier::kernels::internal {
namespace {

constexpr int kMaxT = 4;  // tokens per tile

KVTIER_AVX2_INLINE float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

KVTIER_AVX2_INLINE int HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

KVTIER_AVX2_INLINE float LoadHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// ---- Activation quantization ---------------------------------------------------------------
KVTIER_AVX2 void QuantizeActsAvx2(const float* x, int64_t n_tokens, int64_t cols, int block,
                                  bool offset_u8, int8_t* q, float* d, float* s, int16_t* bsum16) {
  const int64_t nblk = cols / block;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(offset_u8 ? 0x80 : 0));
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t b = 0; b < nblk; ++b) {
      const float* xb = x + t * cols + b * block;
      int8_t* qb = q + t * cols + b * block;
      __m256 vmax = _mm256_setzero_ps();
      for (int i = 0; i < block; i += 8) {
        vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + i)));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float amax = _mm_cvtss_f32(m4);
      const float db = amax / 127.0f;
      const __m256 inv = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
      int sum = 0;
      for (int i = 0; i < block; i += 32) {
        const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i), inv));
        const __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8), inv));
        const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 16), inv));
        const __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 24), inv));
        const int g0 = HsumI32(_mm256_add_epi32(i0, i1));
        const int g1 = HsumI32(_mm256_add_epi32(i2, i3));
        const int64_t g = (t * cols + b * block + i) / 16;
        bsum16[g] = static_cast<int16_t>(g0);
        bsum16[g + 1] = static_cast<int16_t>(g1);
        sum += g0 + g1;
        const __m256i p16 =
            _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        const __m256i bytes = _mm256_permutevar8x32_epi32(p16, perm);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb + i), _mm256_xor_si256(bytes, flip));
      }
      d[t * nblk + b] = db;
      s[t * nblk + b] = db * static_cast<float>(sum);
    }
  }
}

// ---- Q8_0 / Q4_0 / Q4_1 (blocks of 32, activations in blocks of 32) -----------------------
template <DType kType>
constexpr int BlockBytes() {
  return kType == DType::kQ8_0 ? 34 : kType == DType::kQ4_0 ? 18 : 20;
}

template <DType kType>
KVTIER_AVX2_INLINE __m256i LoadWeights32(const uint8_t* blk) {
  if constexpr (kType == DType::kQ8_0) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
  } else {
    constexpr int kOff = kType == DType::kQ4_1 ? 4 : 2;
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kOff));
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
  }
}

// out[t * R + r] = row r . token (t0 + t)
template <DType kType, int R, int T>
KVTIER_AVX2 void TileQ32(const uint8_t* const* wrow, int64_t nb, const QuantizedActs& a, int64_t t0,
                         float* out) {
  constexpr int kBB = BlockBytes<kType>();
  const int64_t cols = a.cols;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R][T];
  float extra[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      acc[r][t] = _mm256_setzero_ps();
      extra[r][t] = 0.0f;
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    __m256i w[R], wabs[R];
    float dw[R], mw[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = wrow[r] + b * kBB;
      w[r] = LoadWeights32<kType>(blk);
      dw[r] = LoadHalf(blk);
      if constexpr (kType == DType::kQ4_1) mw[r] = LoadHalf(blk + 2);
      if constexpr (kType == DType::kQ4_0) mw[r] = -8.0f * dw[r];
      if constexpr (kType == DType::kQ8_0) wabs[r] = _mm256_abs_epi8(w[r]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256i av =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + (t0 + t) * cols + b * 32));
      const float dx = a.d[(t0 + t) * nb + b];
      const float sx = a.s[(t0 + t) * nb + b];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        __m256i p;
        if constexpr (kType == DType::kQ8_0) {
          p = _mm256_maddubs_epi16(wabs[r], _mm256_sign_epi8(av, w[r]));
        } else {
          p = _mm256_maddubs_epi16(w[r], av);
          extra[r][t] += mw[r] * sx;
        }
        const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
        acc[r][t] = _mm256_fmadd_ps(f, _mm256_set1_ps(dw[r] * dx), acc[r][t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) out[t * R + r] = Hsum(acc[r][t]) + extra[r][t];
  }
}

template <DType kType>
KVTIER_AVX2 void RowsQ32(const WeightView& w, const float* x, const QuantizedActs& a,
                         int64_t row_begin, int64_t row_end, float* y) {
  const int64_t nb = w.cols / 32;
  ForEachRowTile<2, kMaxT>(
      w, a.n_tokens, row_begin, row_end, y,
      [&](auto rows, auto tokens, const uint8_t* const* wrow, int64_t t, float* out) {
        TileQ32<kType, decltype(rows)::value, decltype(tokens)::value>(wrow, nb, a, t, out);
      });
}

// ---- Q4_K (activations in blocks of 256) ---------------------------------------------------
template <int T>
KVTIER_AVX2 void TileQ4K(const uint8_t* wrow, int64_t nsb, const QuantizedActs& a, int64_t t0,
                         float* out) {
  const int64_t cols = a.cols;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  __m256 acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nsb; ++i) {
    const uint8_t* blk = wrow + i * sizeof(BlockQ4K);
    const float d = LoadHalf(blk);
    const float dmin = LoadHalf(blk + 2);
    uint8_t sc[8], m[8];
    UnpackQ4KScales(blk + 4, sc, m);
    const uint8_t* qs = blk + 16;
    __m256i isum[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c));
      const __m256i lo = _mm256_and_si256(q, low4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      const __m256i s_lo = _mm256_set1_epi16(sc[2 * c]);
      const __m256i s_hi = _mm256_set1_epi16(sc[2 * c + 1]);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const int8_t* aq = a.q + (t0 + t) * cols + i * 256 + 64 * c;
        const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq));
        const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 32));
        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), s_lo));
        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), s_hi));
      }
    }
    // Mins: group g (16 elements) belongs to sub-block g / 2.
    const __m256i m16 = _mm256_setr_epi16(m[0], m[0], m[1], m[1], m[2], m[2], m[3], m[3], m[4],
                                          m[4], m[5], m[5], m[6], m[6], m[7], m[7]);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256i bs = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(a.bsum16 + ((t0 + t) * cols + i * 256) / 16));
      const __m256i mins = _mm256_madd_epi16(bs, m16);
      const float dx = a.d[(t0 + t) * nsb + i];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(dmin * dx), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
}

// ---- Q6_K (activations in blocks of 256) ---------------------------------------------------
template <int T>
KVTIER_AVX2 void TileQ6K(const uint8_t* wrow, int64_t nsb, const QuantizedActs& a, int64_t t0,
                         float* out) {
  const int64_t cols = a.cols;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i bits45 = _mm256_set1_epi8(0x30);
  __m256 acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nsb; ++i) {
    const auto* blk = reinterpret_cast<const BlockQ6K*>(wrow + i * sizeof(BlockQ6K));
    const float d = LoadHalf(reinterpret_cast<const uint8_t*>(&blk->d));
    __m256i isum[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->ql + 64 * h));
      const __m256i ql1 =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qh + 32 * h));
      __m256i qv[4];
      qv[0] = _mm256_or_si256(_mm256_and_si256(ql0, low4),
                              _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45));
      qv[1] = _mm256_or_si256(_mm256_and_si256(ql1, low4),
                              _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45));
      qv[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                              _mm256_and_si256(qh, bits45));
      qv[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                              _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45));
      for (int k = 0; k < 4; ++k) {
        const int8_t* sc = blk->scales + 8 * h + 2 * k;
        const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const __m256i av = _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(a.q + (t0 + t) * cols + i * 256 + 128 * h + 32 * k));
          isum[t] =
              _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(qv[k], av), scv));
        }
      }
    }
    // The -32 offset of every quant: 32 * sum_g scale_g * bsum16_g.
    const __m256i sc16 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->scales)));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256i bs = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(a.bsum16 + ((t0 + t) * cols + i * 256) / 16));
      const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
      const float dx = a.d[(t0 + t) * nsb + i];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum[t], off)),
                               _mm256_set1_ps(d * dx), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
}

// ---- F32 / F16 / BF16 (float activations) --------------------------------------------------
template <DType kType>
KVTIER_AVX2_INLINE __m256 LoadF8(const uint8_t* row, int64_t c) {
  if constexpr (kType == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
  } else if constexpr (kType == DType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c)));
  } else {
    const __m256i v =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
}

template <DType kType>
float LoadF1(const uint8_t* row, int64_t c) {
  float v[1];
  DequantizeRow(kType, row + c * (kType == DType::kF32 ? 4 : 2), v, 1);
  return v[0];
}

template <DType kType, int T>
KVTIER_AVX2 void TileFloat(const uint8_t* wrow, int64_t cols, const float* x, int64_t t0,
                           float* out) {
  __m256 acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    const __m256 wv = LoadF8<kType>(wrow, c);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      acc[t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (t0 + t) * cols + c), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
  for (; c < cols; ++c) {
    const float wv = LoadF1<kType>(wrow, c);
    for (int t = 0; t < T; ++t) out[t] += wv * x[(t0 + t) * cols + c];
  }
}

// Tiles of one row x up to 4 tokens, for kernels whose weight unpacking is per row.
template <typename Tile1, typename Tile2, typename Tile3, typename Tile4>
KVTIER_AVX2_INLINE void RunRowTiles(const WeightView& w, int64_t row_begin, int64_t row_end,
                                    int64_t n_tokens, float* y, Tile1 t1, Tile2 t2, Tile3 t3,
                                    Tile4 t4) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  float out[kMaxT];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* wrow = base + static_cast<size_t>(r) * w.row_bytes;
    for (int64_t t = 0; t < n_tokens; t += kMaxT) {
      const int tt = static_cast<int>(std::min<int64_t>(kMaxT, n_tokens - t));
      switch (tt) {
        case 1:
          t1(wrow, t, out);
          break;
        case 2:
          t2(wrow, t, out);
          break;
        case 3:
          t3(wrow, t, out);
          break;
        default:
          t4(wrow, t, out);
          break;
      }
      for (int j = 0; j < tt; ++j) y[(t + j) * w.rows + r] = out[j];
    }
  }
}

template <int T>
struct Q4KTile {
  const QuantizedActs* a;
  int64_t nsb;
  void operator()(const uint8_t* wrow, int64_t t0, float* out) const {
    TileQ4K<T>(wrow, nsb, *a, t0, out);
  }
};
template <int T>
struct Q6KTile {
  const QuantizedActs* a;
  int64_t nsb;
  void operator()(const uint8_t* wrow, int64_t t0, float* out) const {
    TileQ6K<T>(wrow, nsb, *a, t0, out);
  }
};
template <DType kType, int T>
struct FloatTile {
  const float* x;
  int64_t cols;
  void operator()(const uint8_t* wrow, int64_t t0, float* out) const {
    TileFloat<kType, T>(wrow, cols, x, t0, out);
  }
};

KVTIER_AVX2 void RowsQ4K(const WeightView& w, const float* x, const QuantizedActs& a,
                         int64_t row_begin, int64_t row_end, float* y) {
  const int64_t nsb = w.cols / 256;
  RunRowTiles(w, row_begin, row_end, a.n_tokens, y, Q4KTile<1>{&a, nsb}, Q4KTile<2>{&a, nsb},
              Q4KTile<3>{&a, nsb}, Q4KTile<4>{&a, nsb});
}

KVTIER_AVX2 void RowsQ6K(const WeightView& w, const float* x, const QuantizedActs& a,
                         int64_t row_begin, int64_t row_end, float* y) {
  const int64_t nsb = w.cols / 256;
  RunRowTiles(w, row_begin, row_end, a.n_tokens, y, Q6KTile<1>{&a, nsb}, Q6KTile<2>{&a, nsb},
              Q6KTile<3>{&a, nsb}, Q6KTile<4>{&a, nsb});
}

template <DType kType>
KVTIER_AVX2 void RowsFloat(const WeightView& w, const float* x, const QuantizedActs& a,
                           int64_t row_begin, int64_t row_end, float* y) {
  RunRowTiles(w, row_begin, row_end, a.n_tokens, y, FloatTile<kType, 1>{x, w.cols},
              FloatTile<kType, 2>{x, w.cols}, FloatTile<kType, 3>{x, w.cols},
              FloatTile<kType, 4>{x, w.cols});
}

// ---- Q8_0 / Q4_0 / Q4_1 with float activations (MatMulActs::kF32) ---------------------------
// Each weight block is dequantized to 32 floats exactly as DequantizeRow does (q * d, or q * d
// + m for Q4_1, with -8 * d as Q4_0's m) and multiplied with the unquantized activations: no
// 8-bit rounding of the activations, at the cost of float multiply-adds instead of integer ones.
template <DType kType>
KVTIER_AVX2_INLINE void DequantBlock32(const uint8_t* blk, __m256 out[4]) {
  const __m256 d = _mm256_set1_ps(LoadHalf(blk));
  if constexpr (kType == DType::kQ8_0) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    out[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d);
    out[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d);
    out[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d);
    out[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d);
  } else {
    constexpr int kOff = kType == DType::kQ4_1 ? 4 : 2;
    const __m256 m = kType == DType::kQ4_1 ? _mm256_set1_ps(LoadHalf(blk + 2))
                                           : _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kOff));
    const __m128i nib = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(q, nib);                     // elements 0..15
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), nib);  // elements 16..31
    out[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), d, m);
    out[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), d, m);
    out[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), d, m);
    out[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), d, m);
  }
}

// out[t * R + r] = row r . token (t0 + t). One token (decode) keeps two accumulators per row so
// that enough independent FMA chains are in flight.
template <DType kType, int R, int T>
KVTIER_AVX2 void TileQ32FloatActs(const uint8_t* const* wrow, int64_t nb, const float* x,
                                  int64_t cols, int64_t t0, float* out) {
  constexpr int kBB = BlockBytes<kType>();
  constexpr int S = T == 1 ? 2 : 1;
  __m256 acc[R][T][S];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 2
      for (int s = 0; s < S; ++s) acc[r][t][s] = _mm256_setzero_ps();
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    __m256 xv[T][4];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const float* xb = x + (t0 + t) * cols + b * 32;
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) xv[t][i] = _mm256_loadu_ps(xb + 8 * i);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m256 w[4];
      DequantBlock32<kType>(wrow[r] + b * kBB, w);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          acc[r][t][i % S] = _mm256_fmadd_ps(w[i], xv[t][i], acc[r][t][i % S]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      __m256 v = acc[r][t][0];
      if constexpr (S == 2) v = _mm256_add_ps(v, acc[r][t][S - 1]);
      out[t * R + r] = Hsum(v);
    }
  }
}

template <DType kType>
KVTIER_AVX2 void RowsQ32FloatActs(const WeightView& w, const float* x, const QuantizedActs& a,
                                  int64_t row_begin, int64_t row_end, float* y) {
  const int64_t nb = w.cols / 32;
  ForEachRowTile<4, kMaxT>(
      w, a.n_tokens, row_begin, row_end, y,
      [&](auto rows, auto tokens, const uint8_t* const* wrow, int64_t t, float* out) {
        TileQ32FloatActs<kType, decltype(rows)::value, decltype(tokens)::value>(wrow, nb, x, w.cols,
                                                                                t, out);
      });
}

}  // namespace

KernelChoice Avx2FloatActsKernel(DType type) {
  KernelChoice k;
  switch (type) {
    case DType::kQ8_0:
      k.kernel = RowsQ32FloatActs<DType::kQ8_0>;
      return k;
    case DType::kQ4_0:
      k.kernel = RowsQ32FloatActs<DType::kQ4_0>;
      return k;
    case DType::kQ4_1:
      k.kernel = RowsQ32FloatActs<DType::kQ4_1>;
      return k;
    default:
      break;
  }
  return k;  // no kernel: the caller picks one
}

KernelChoice Avx2Kernel(DType type) {
  KernelChoice k;
  k.quantize = QuantizeActsAvx2;
  switch (type) {
    case DType::kF32:
      k.kernel = RowsFloat<DType::kF32>;
      break;
    case DType::kF16:
      k.kernel = RowsFloat<DType::kF16>;
      break;
    case DType::kBF16:
      k.kernel = RowsFloat<DType::kBF16>;
      break;
    case DType::kQ8_0:
      k.kernel = RowsQ32<DType::kQ8_0>;
      k.act_block = 32;
      break;
    case DType::kQ4_0:
      k.kernel = RowsQ32<DType::kQ4_0>;
      k.act_block = 32;
      break;
    case DType::kQ4_1:
      k.kernel = RowsQ32<DType::kQ4_1>;
      k.act_block = 32;
      break;
    case DType::kQ4_K:
      k.kernel = RowsQ4K;
      k.act_block = 256;
      break;
    case DType::kQ6_K:
      k.kernel = RowsQ6K;
      k.act_block = 256;
      break;
  }
  return k;
}

}  // namespace kvtier::kernels::internal
