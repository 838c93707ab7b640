#include "cache/internal/f16_rows.h"

#include <atomic>

#include "kernels/fp16.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvtier::cache::internal {
namespace {

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) void F16RowToF32F16C(const uint16_t* src, float* dst, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = kernels::F16ToF32(src[i]);
}

__attribute__((target("avx2,f16c"))) void F32RowToF16F16C(const float* src, uint16_t* dst, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = kernels::F32ToF16(src[i]);
}

bool CpuHasF16C() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return has;
}
#else
bool CpuHasF16C() { return false; }
#endif

std::atomic<bool> g_simd_enabled{true};

bool UseSimd() { return CpuHasF16C() && g_simd_enabled.load(std::memory_order_relaxed); }

}  // namespace

void F16RowToF32(const uint16_t* src, float* dst, int n) {
#if defined(__x86_64__)
  if (UseSimd()) return F16RowToF32F16C(src, dst, n);
#endif
  for (int i = 0; i < n; ++i) dst[i] = kernels::F16ToF32(src[i]);
}

void F32RowToF16(const float* src, uint16_t* dst, int n) {
#if defined(__x86_64__)
  if (UseSimd()) return F32RowToF16F16C(src, dst, n);
#endif
  for (int i = 0; i < n; ++i) dst[i] = kernels::F32ToF16(src[i]);
}

bool SetF16RowsSimd(bool enabled) { return g_simd_enabled.exchange(enabled); }

}  // namespace kvtier::cache::internal
