// AVX-512 VNNI MatMul kernels for the 32-element block types (Q8_0, Q4_0, Q4_1): the default
// model's weights. Other types use the AVX2 kernels. Compiled with target attributes; only
// called after DetectCpuLevel() reports AVX-512 F/BW/VL/VNNI.
//
// One zmm holds a pair of weight blocks (64 quants): lanes 0-7 block 2p, lanes 8-15 block 2p+1.
//   Q4_0/Q4_1: nibbles unpacked to bytes (u8), activations s8 -> _mm512_dpbusd_epi32.
//   Q8_0: weights s8, activations stored as q + 128 (u8); dpbusd starts from -128 * sum(w),
//         computed once per weight pair, so the per-token work is one dpbusd.
// Per (row, token, pair): dpbusd, cvt, one multiply by the lane scales (d_w * d_x), one fma.
// The Q4_0/Q4_1 offset terms (-8 d_w s_x, m_w s_x) are dot products over blocks, done 16
// blocks at a time from gathered block scales. A tile is R rows x T tokens (R=2, T<=8): each
// unpacked weight pair is reused for T tokens, each activation load for R rows.
// With float activations (Avx512FloatActsKernel) a block is dequantized to two zmm instead.
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/internal/matmul_kernels.h"

// GCC 12's AVX-512 headers trip -W(maybe-)uninitialized on their own cast/reduce helpers
// (GCC bug 105593); nothing in this file reads uninitialised data.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define KVTIER_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define KVTIER_AVX512_INLINE                                                   \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"), \
                 always_inline)) inline

namespace kvtier::kernels::internal {
namespace {

constexpr int kMaxT = 8;  // tokens per tile

template <DType kType>
constexpr int BlockBytes() {
  return kType == DType::kQ8_0 ? 34 : kType == DType::kQ4_0 ? 18 : 20;
}

// The quants of blocks b and b + 1 (only b when !kPair; the upper half is then zero).
template <DType kType, bool kPair>
KVTIER_AVX512_INLINE __m512i LoadPair(const uint8_t* blk) {
  constexpr int kBB = BlockBytes<kType>();
  if constexpr (kType == DType::kQ8_0) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i hi = kPair ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kBB + 2))
                             : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  } else {
    constexpr int kOff = kType == DType::kQ4_1 ? 4 : 2;
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kOff));
    const __m128i q1 = kPair ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kBB + kOff))
                             : _mm_setzero_si128();
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
    // [q0, q1, q0 >> 4, q1 >> 4] -> [q0, q0 >> 4, q1, q1 >> 4]: elements in order.
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
    return _mm512_and_si512(_mm512_shuffle_i64x2(z, z, 0xd8), _mm512_set1_epi8(0x0f));
  }
}

template <DType kType, int R, int T, bool kPair>
KVTIER_AVX512_INLINE void PairStep(const uint8_t* const* wrow, int64_t b, const QuantizedActs& a,
                                   int64_t t0, const __m512* dblk, __m512i pidx,
                                   __m512 (&acc)[R][T]) {
  constexpr int kBB = BlockBytes<kType>();
  const int64_t cols = a.cols;
  const int64_t npairs = (cols / 32 + 1) / 2;
  __m512i w[R], init[R];
  __m512 dw[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    w[r] = LoadPair<kType, kPair>(wrow[r] + b * kBB);
    dw[r] = _mm512_permutexvar_ps(pidx, dblk[r]);
    if constexpr (kType == DType::kQ8_0) {
      // dpbusd(u8 = q + 128, s8 = w) = dot + 128 * sum(w): start from -128 * sum(w).
      const __m512i corr = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                               _mm512_set1_epi8(static_cast<char>(0x80)), w[r]);
      init[r] = _mm512_sub_epi32(_mm512_setzero_si512(), corr);
    } else {
      init[r] = _mm512_setzero_si512();
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    const int8_t* aq = a.q + (t0 + t) * cols + b * 32;
    const __m512i av = kPair ? _mm512_loadu_si512(aq) : _mm512_maskz_loadu_epi8(0xffffffffull, aq);
    const __m512 dx = _mm512_loadu_ps(a.d_exp + ((t0 + t) * npairs + b / 2) * 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m512i dot;
      if constexpr (kType == DType::kQ8_0) {
        dot = _mm512_dpbusd_epi32(init[r], av, w[r]);
      } else {
        dot = _mm512_dpbusd_epi32(init[r], w[r], av);
      }
      acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[r], dx), acc[r][t]);
    }
  }
}

// out[t * R + r] = row r . token (t0 + t)
template <DType kType, int R, int T>
KVTIER_AVX512 void TileQ32(const uint8_t* const* wrow, int64_t nb, const QuantizedActs& a,
                           int64_t t0, float* out) {
  constexpr int kBB = BlockBytes<kType>();
  const __m512i gidx =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(kBB));
  __m512 acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  for (int64_t c0 = 0; c0 < nb; c0 += 16) {
    const int nbc = static_cast<int>(std::min<int64_t>(16, nb - c0));
    const __mmask16 bmask = static_cast<__mmask16>((1u << nbc) - 1);
    // Block scales (and Q4_1 mins) of 16 blocks per row: the first 4 bytes of each block.
    __m512 dblk[R], mblk[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i g =
          _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), bmask, gidx, wrow[r] + c0 * kBB, 1);
      dblk[r] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
      if constexpr (kType == DType::kQ4_1) {
        mblk[r] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16)));
      } else if constexpr (kType == DType::kQ4_0) {
        mblk[r] = _mm512_mul_ps(dblk[r], _mm512_set1_ps(-8.0f));
      } else {
        mblk[r] = _mm512_setzero_ps();
      }
    }
    if constexpr (kType != DType::kQ8_0) {
      // Offset terms: sum_b mblk_b * s_b, where s_b = d_x * sum(quants of x in block b).
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 s = _mm512_maskz_loadu_ps(bmask, a.s + (t0 + t) * nb + c0);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(mblk[r], s, acc[r][t]);
      }
    }
    __m512i pidx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i two = _mm512_set1_epi32(2);
    int64_t b = c0;
    for (; b + 2 <= c0 + nbc; b += 2, pidx = _mm512_add_epi32(pidx, two)) {
      PairStep<kType, R, T, true>(wrow, b, a, t0, dblk, pidx, acc);
    }
    if (b < c0 + nbc) PairStep<kType, R, T, false>(wrow, b, a, t0, dblk, pidx, acc);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) out[t * R + r] = _mm512_reduce_add_ps(acc[r][t]);
  }
}

template <DType kType, int kR>
KVTIER_AVX512 void RowsQ32Tiled(const WeightView& w, const QuantizedActs& a, int64_t row_begin,
                                int64_t row_end, float* y) {
  const int64_t nb = w.cols / 32;
  ForEachRowTile<kR, kMaxT>(
      w, a.n_tokens, row_begin, row_end, y,
      [&](auto rows, auto tokens, const uint8_t* const* wrow, int64_t t, float* out) {
        TileQ32<kType, decltype(rows)::value, decltype(tokens)::value>(wrow, nb, a, t, out);
      });
}

// Decode-sized batches (1-2 tokens) take 4 rows per tile: more independent weight streams and
// the activation loads shared by 4 rows. Larger batches take 2 rows x 8 tokens.
template <DType kType>
KVTIER_AVX512 void RowsQ32(const WeightView& w, const float* x, const QuantizedActs& a,
                           int64_t row_begin, int64_t row_end, float* y) {
  if (a.n_tokens <= 2) {
    RowsQ32Tiled<kType, 4>(w, a, row_begin, row_end, y);
  } else {
    RowsQ32Tiled<kType, 2>(w, a, row_begin, row_end, y);
  }
}

// ---- Float activations (MatMulActs::kF32) --------------------------------------------------
// A weight block dequantized to two zmm (elements 0-15, 16-31) exactly as DequantizeRow does,
// multiplied with the float activations; the AVX2 version's layout with twice the width.
template <DType kType>
KVTIER_AVX512_INLINE void DequantBlock32F(const uint8_t* blk, __m512* w0, __m512* w1) {
  uint16_t hd;
  __builtin_memcpy(&hd, blk, 2);
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(hd));
  if constexpr (kType == DType::kQ8_0) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18));
    *w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), d);
    *w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), d);
  } else {
    constexpr int kOff = kType == DType::kQ4_1 ? 4 : 2;
    __m512 m;
    if constexpr (kType == DType::kQ4_1) {
      uint16_t hm;
      __builtin_memcpy(&hm, blk + 2, 2);
      m = _mm512_set1_ps(_cvtsh_ss(hm));
    } else {
      m = _mm512_mul_ps(d, _mm512_set1_ps(-8.0f));
    }
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kOff));
    const __m128i nib = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(q, nib);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), nib);
    *w0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), d, m);
    *w1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), d, m);
  }
}

constexpr int kMaxTF = 4;  // tokens per float-activation tile

// out[t * R + r] = row r . token (t0 + t); one token keeps two accumulators per row.
template <DType kType, int R, int T>
KVTIER_AVX512 void TileQ32F(const uint8_t* const* wrow, int64_t nb, const float* x, int64_t cols,
                            int64_t t0, float* out) {
  constexpr int kBB = BlockBytes<kType>();
  constexpr int S = T == 1 ? 2 : 1;
  __m512 acc[R][T][S];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 2
      for (int s = 0; s < S; ++s) acc[r][t][s] = _mm512_setzero_ps();
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    __m512 x0[T], x1[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const float* xb = x + (t0 + t) * cols + b * 32;
      x0[t] = _mm512_loadu_ps(xb);
      x1[t] = _mm512_loadu_ps(xb + 16);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      __m512 w0, w1;
      DequantBlock32F<kType>(wrow[r] + b * kBB, &w0, &w1);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        acc[r][t][0] = _mm512_fmadd_ps(w0, x0[t], acc[r][t][0]);
        acc[r][t][S - 1] = _mm512_fmadd_ps(w1, x1[t], acc[r][t][S - 1]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      __m512 v = acc[r][t][0];
      if constexpr (S == 2) v = _mm512_add_ps(v, acc[r][t][S - 1]);
      out[t * R + r] = _mm512_reduce_add_ps(v);
    }
  }
}

template <DType kType>
KVTIER_AVX512 void RowsQ32F(const WeightView& w, const float* x, const QuantizedActs& a,
                            int64_t row_begin, int64_t row_end, float* y) {
  const int64_t nb = w.cols / 32;
  ForEachRowTile<4, kMaxTF>(
      w, a.n_tokens, row_begin, row_end, y,
      [&](auto rows, auto tokens, const uint8_t* const* wrow, int64_t t, float* out) {
        TileQ32F<kType, decltype(rows)::value, decltype(tokens)::value>(wrow, nb, x, w.cols, t,
                                                                        out);
      });
}

}  // namespace

KernelChoice Avx512FloatActsKernel(DType type) {
  KernelChoice k;
  switch (type) {
    case DType::kQ8_0:
      k.kernel = RowsQ32F<DType::kQ8_0>;
      return k;
    case DType::kQ4_0:
      k.kernel = RowsQ32F<DType::kQ4_0>;
      return k;
    case DType::kQ4_1:
      k.kernel = RowsQ32F<DType::kQ4_1>;
      return k;
    default:
      break;
  }
  return Avx2FloatActsKernel(type);
}

KernelChoice Avx512Kernel(DType type) {
  KernelChoice k = Avx2Kernel(type);
  switch (type) {
    case DType::kQ8_0:
      k.kernel = RowsQ32<DType::kQ8_0>;
      k.offset_u8 = true;
      k.needs_d_exp = true;
      break;
    case DType::kQ4_0:
      k.kernel = RowsQ32<DType::kQ4_0>;
      k.needs_d_exp = true;
      break;
    case DType::kQ4_1:
      k.kernel = RowsQ32<DType::kQ4_1>;
      k.needs_d_exp = true;
      break;
    default:
      break;
  }
  return k;
}

}  // namespace kvtier::kernels::internal
