// kernels/cpu/internal/simd.h — a tiny vector abstraction so each op's kernel is written once
// and instantiated for scalar, AVX2 (+FMA, F16C) and AVX-512F.
//
// Thread safety: pure functions.
//
// Every function of AvxNIsa carries its target attribute, so it can only be inlined into code
// compiled for that target: the per-level translation units (ops_avx2.cc, ops_avx512.cc) wrap
// the kernel templates in a matching `#pragma GCC target` region. Nothing here is called unless
// internal::CurrentOpsLevel() says the CPU has the instructions.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/fp16.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define KVTIER_HAVE_X86_SIMD 1
#else
#define KVTIER_HAVE_X86_SIMD 0
#endif

namespace kvtier::kernels::internal {

// Constants of the vector exp: x = n*ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor
// polynomial (truncation error < 3e-9 relative), 2^n put into the exponent bits.
inline constexpr float kExpHi = 88.0f;
inline constexpr float kExpLo = -88.0f;  // below about -87.3 the result flushes to 0
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693359375f;  // ln 2 split so n*kLn2Hi is exact
inline constexpr float kLn2Lo = -2.12194440e-4f;
inline constexpr float kExpC[8] = {1.0f,         1.0f,          0.5f,          1.0f / 6.0f,
                                   1.0f / 24.0f, 1.0f / 120.0f, 1.0f / 720.0f, 1.0f / 5040.0f};

struct ScalarIsa {
  using V = float;
  static constexpr int kW = 1;
  static V Zero() { return 0.0f; }
  static V Set1(float x) { return x; }
  static V Load(const float* p) { return *p; }
  static void Store(float* p, V v) { *p = v; }
  static V LoadH(const uint16_t* p) { return F16ToF32(*p); }
  static void StoreH(uint16_t* p, V v) { *p = F32ToF16(v); }
  static V Add(V a, V b) { return a + b; }
  static V Sub(V a, V b) { return a - b; }
  static V Mul(V a, V b) { return a * b; }
  static V Div(V a, V b) { return a / b; }
  static V Fma(V a, V b, V c) { return std::fma(a, b, c); }
  static V Max(V a, V b) { return a > b ? a : b; }
  // a < b ? x : y
  static V SelectLt(V a, V b, V x, V y) { return a < b ? x : y; }
  static float ReduceAdd(V v) { return v; }
  static float ReduceMax(V v) { return v; }
  static V Exp(V x) { return std::exp(x); }
};

#if KVTIER_HAVE_X86_SIMD

#define KVTIER_AVX2_TARGET "avx2,fma,f16c"
#define KVTIER_AVX512_TARGET "avx512f,avx2,fma,f16c"
#define KVTIER_AVX2_FN __attribute__((target(KVTIER_AVX2_TARGET), always_inline)) static inline
#define KVTIER_AVX512_FN __attribute__((target(KVTIER_AVX512_TARGET), always_inline)) static inline

struct Avx2Isa {
  using V = __m256;
  static constexpr int kW = 8;
  KVTIER_AVX2_FN V Zero() { return _mm256_setzero_ps(); }
  KVTIER_AVX2_FN V Set1(float x) { return _mm256_set1_ps(x); }
  KVTIER_AVX2_FN V Load(const float* p) { return _mm256_loadu_ps(p); }
  KVTIER_AVX2_FN void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  KVTIER_AVX2_FN V LoadH(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  KVTIER_AVX2_FN void StoreH(uint16_t* p, V v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  KVTIER_AVX2_FN V Add(V a, V b) { return _mm256_add_ps(a, b); }
  KVTIER_AVX2_FN V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
  KVTIER_AVX2_FN V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  KVTIER_AVX2_FN V Div(V a, V b) { return _mm256_div_ps(a, b); }
  KVTIER_AVX2_FN V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  KVTIER_AVX2_FN V Max(V a, V b) { return _mm256_max_ps(a, b); }
  KVTIER_AVX2_FN V SelectLt(V a, V b, V x, V y) {
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
  }
  KVTIER_AVX2_FN float ReduceAdd(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  KVTIER_AVX2_FN float ReduceMax(V v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  KVTIER_AVX2_FN V Exp(V x) {
    x = _mm256_min_ps(_mm256_max_ps(x, Set1(kExpLo)), Set1(kExpHi));
    const V n =
        _mm256_round_ps(Mul(x, Set1(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm256_fnmadd_ps(n, Set1(kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, Set1(kLn2Lo), r);
    V p = Set1(kExpC[7]);
    for (int i = 6; i >= 0; --i) p = Fma(p, r, Set1(kExpC[i]));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return Mul(p, _mm256_castsi256_ps(e));
  }
};

struct Avx512Isa {
  using V = __m512;
  static constexpr int kW = 16;
  KVTIER_AVX512_FN V Zero() { return _mm512_setzero_ps(); }
  KVTIER_AVX512_FN V Set1(float x) { return _mm512_set1_ps(x); }
  KVTIER_AVX512_FN V Load(const float* p) { return _mm512_loadu_ps(p); }
  KVTIER_AVX512_FN void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  KVTIER_AVX512_FN V LoadH(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  KVTIER_AVX512_FN void StoreH(uint16_t* p, V v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  KVTIER_AVX512_FN V Add(V a, V b) { return _mm512_add_ps(a, b); }
  KVTIER_AVX512_FN V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  KVTIER_AVX512_FN V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  KVTIER_AVX512_FN V Div(V a, V b) { return _mm512_div_ps(a, b); }
  KVTIER_AVX512_FN V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  KVTIER_AVX512_FN V Max(V a, V b) { return _mm512_max_ps(a, b); }
  KVTIER_AVX512_FN V SelectLt(V a, V b, V x, V y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
  }
  KVTIER_AVX512_FN float ReduceAdd(V v) {
    const __m256 h =
        _mm256_add_ps(_mm512_castps512_ps256(v),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return Avx2Isa::ReduceAdd(h);
  }
  KVTIER_AVX512_FN float ReduceMax(V v) {
    const __m256 h =
        _mm256_max_ps(_mm512_castps512_ps256(v),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return Avx2Isa::ReduceMax(h);
  }
  KVTIER_AVX512_FN V Exp(V x) {
    x = _mm512_min_ps(_mm512_max_ps(x, Set1(kExpLo)), Set1(kExpHi));
    const V n =
        _mm512_roundscale_ps(Mul(x, Set1(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm512_fnmadd_ps(n, Set1(kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, Set1(kLn2Lo), r);
    V p = Set1(kExpC[7]);
    for (int i = 6; i >= 0; --i) p = Fma(p, r, Set1(kExpC[i]));
    const __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return Mul(p, _mm512_castsi512_ps(e));
  }
};

#endif  // KVTIER_HAVE_X86_SIMD

}  // namespace kvtier::kernels::internal
