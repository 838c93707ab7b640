// kernels/cpu/internal/matmul_kernels.h — the per-SIMD-level pieces behind MatMul.
//
// Private to kernels/ (and its tests). Thread safety: the kernels are pure functions of their
// arguments; SetCpuLevelForTesting is not synchronised with running MatMuls.
//
// MatMul (kernels/cpu/matmul.cc) quantizes the activation rows once per call into a
// QuantizedActs, then runs one RowsKernel per thread over a contiguous range of output rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/ops.h"
#include "kernels/dtype.h"

namespace kvtier::kernels::internal {

enum class CpuLevel : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The best level this CPU supports (AVX-512 needs F, BW, VL and VNNI; AVX2 needs FMA and F16C).
CpuLevel DetectCpuLevel();
// The level MatMul uses: DetectCpuLevel(), lowered by $KVTIER_CPU_LEVEL (read once) or by
// SetCpuLevelForTesting.
CpuLevel ActiveCpuLevel();
// Forces a level (clamped to what the CPU supports). For tests and benchmarks.
void SetCpuLevelForTesting(CpuLevel level);
const char* CpuLevelName(CpuLevel level);

// Activation rows quantized to 8 bits, as the integer kernels read them. Per token t:
//   q[t * cols + i]        int8 quants (stored as q + 128, i.e. q ^ 0x80, when `offset_u8`)
//   d[t * nblk + b]        float scale of block b (block = 32 or 256 elements)
//   s[t * nblk + b]        d * sum of the block's quants (the signed ones)
//   bsum16[t * cols/16 + g] sum of the signed quants of 16-element group g
//   d_exp[(t * npairs + p) * 16 + l]  (block == 32 only) d of block 2p for l < 8, of block
//                          2p + 1 for l >= 8 (0 past the end): the AVX-512 kernels' lane layout.
struct QuantizedActs {
  int64_t n_tokens = 0;
  int64_t cols = 0;
  int block = 32;
  bool offset_u8 = false;
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const float* s = nullptr;
  const int16_t* bsum16 = nullptr;
  const float* d_exp = nullptr;
};

// Computes y[t * w.rows + r] for r in [row_begin, row_end) and every token.
// `x` is the float activation matrix ([n_tokens][cols]); `acts` its quantized form (only
// filled for the integer kernels).
using RowsKernel = void (*)(const WeightView& w, const float* x, const QuantizedActs& acts,
                            int64_t row_begin, int64_t row_end, float* y);

// Quantizes activations into the caller's buffers (see QuantizedActs for the layout; q has
// n_tokens * cols bytes, d and s n_tokens * cols / block floats, bsum16 n_tokens * cols / 16).
using QuantizeActsFn = void (*)(const float* x, int64_t n_tokens, int64_t cols, int block,
                                bool offset_u8, int8_t* q, float* d, float* s, int16_t* bsum16);

// A level's kernel for one weight type. act_block == 0: the kernel reads float activations.
struct KernelChoice {
  RowsKernel kernel = nullptr;
  QuantizeActsFn quantize = nullptr;
  int act_block = 0;
  bool offset_u8 = false;
  bool needs_d_exp = false;
};

// Scalar: dequantizes each weight row to float and takes float dot products. Every type.
void ScalarRows(const WeightView& w, const float* x, const QuantizedActs& acts, int64_t row_begin,
                int64_t row_end, float* y);
void QuantizeActsScalar(const float* x, int64_t n_tokens, int64_t cols, int block, bool offset_u8,
                        int8_t* q, float* d, float* s, int16_t* bsum16);

// AVX2 (+FMA, F16C): every type. Defined in matmul_avx2.cc; call only when the CPU has AVX2.
KernelChoice Avx2Kernel(DType type);
// AVX2 kernels that read float activations (MatMulActs::kF32) for Q8_0, Q4_0 and Q4_1; for
// other types the returned choice has no kernel.
KernelChoice Avx2FloatActsKernel(DType type);
// AVX-512 (F, BW, VL, VNNI): Q8_0, Q4_0 and Q4_1; other types fall back to Avx2Kernel.
KernelChoice Avx512Kernel(DType type);
// AVX-512 float-activation kernels for Q8_0, Q4_0 and Q4_1 (else Avx2FloatActsKernel's).
KernelChoice Avx512FloatActsKernel(DType type);

// Calls f(std::integral_constant<int, n>{}) for a run-time n in [1, kMax] (n > kMax: kMax).
template <int kMax, typename F>
inline void WithConstant(int n, F&& f) {
  if constexpr (kMax > 1) {
    if (n < kMax) return WithConstant<kMax - 1>(n, f);
  }
  f(std::integral_constant<int, kMax>{});
}

// The row x token tiling of a rows kernel whose tiles take up to kR rows and kMaxT tokens:
// tile(rows, tokens, wrow, t0, out), rows and tokens std::integral_constant<int, ...> (kR, or 1
// for the rows left over; 1..kMaxT), computes those rows x tokens from token t0,
// out[t * rows + r] = row r . token (t0 + t); this writes them into y.
template <int kR, int kMaxT, typename Tile>
inline void ForEachRowTile(const WeightView& w, int64_t n_tokens, int64_t row_begin,
                           int64_t row_end, float* y, Tile tile) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  float out[kR * kMaxT];
  for (int64_t r = row_begin; r < row_end; r += kR) {
    const int rr = static_cast<int>(std::min<int64_t>(kR, row_end - r));
    const uint8_t* wrow[kR];
    for (int i = 0; i < rr; ++i) wrow[i] = base + static_cast<size_t>(r + i) * w.row_bytes;
    for (int64_t t = 0; t < n_tokens; t += kMaxT) {
      const int tt = static_cast<int>(std::min<int64_t>(kMaxT, n_tokens - t));
      const int step = rr == kR ? kR : 1;
      for (int i = 0; i < rr; i += step) {
        WithConstant<kMaxT>(tt, [&](auto tokens) {
          if (step == kR) {
            tile(std::integral_constant<int, kR>{}, tokens, wrow + i, t, out);
          } else {
            tile(std::integral_constant<int, 1>{}, tokens, wrow + i, t, out);
          }
        });
        for (int j = 0; j < tt; ++j) {
          for (int k = 0; k < step; ++k) y[(t + j) * w.rows + r + i + k] = out[j * step + k];
        }
      }
    }
  }
}

}  // namespace kvtier::kernels::internal
