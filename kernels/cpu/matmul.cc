// MatMul, GetRow and the run-time choice of SIMD level. The kernels themselves live in
// kernels/cpu/internal/matmul_{scalar,avx2,avx512}.cc.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/status.h"
#include "kernels/cpu/internal/matmul_kernels.h"
#include "kernels/cpu/ops.h"
#include "kernels/fp16.h"

namespace kvtier::kernels {
namespace internal {
namespace {

CpuLevel LevelFromEnv(CpuLevel detected) {
  const char* env = std::getenv("KVTIER_CPU_LEVEL");
  if (env == nullptr || *env == '\0') return detected;
  CpuLevel wanted = detected;
  if (std::strcmp(env, "scalar") == 0) {
    wanted = CpuLevel::kScalar;
  } else if (std::strcmp(env, "avx2") == 0) {
    wanted = CpuLevel::kAvx2;
  } else if (std::strcmp(env, "avx512") == 0) {
    wanted = CpuLevel::kAvx512;
  }
  return std::min(wanted, detected);
}

std::atomic<int>& ActiveLevelSlot() {
  static std::atomic<int> slot{static_cast<int>(LevelFromEnv(DetectCpuLevel()))};
  return slot;
}

// Per calling thread: the quantized activations of the current MatMul (grows, never shrinks).
struct ActScratch {
  std::vector<int8_t> q;
  std::vector<float> d, s, d_exp;
  std::vector<int16_t> bsum16;
};

template <typename T>
T* Grow(std::vector<T>& v, int64_t n) {
  if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  return v.data();
}

KernelChoice Choose(CpuLevel level, DType type, MatMulActs acts) {
  const bool float_weights = type == DType::kF32 || type == DType::kF16 || type == DType::kBF16;
  if (acts == MatMulActs::kF32 && !float_weights) {
    if (level >= CpuLevel::kAvx2) {
      const KernelChoice k =
          level == CpuLevel::kAvx512 ? Avx512FloatActsKernel(type) : Avx2FloatActsKernel(type);
      if (k.kernel != nullptr) return k;
    }
    KernelChoice k;
    k.kernel = ScalarRows;  // dequantized rows, float dot products
    return k;
  }
  switch (level) {
    case CpuLevel::kAvx512:
      return Avx512Kernel(type);
    case CpuLevel::kAvx2:
      return Avx2Kernel(type);
    case CpuLevel::kScalar:
      break;
  }
  KernelChoice c;
  c.kernel = ScalarRows;
  return c;
}

}  // namespace

CpuLevel DetectCpuLevel() {
  static const CpuLevel level = [] {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      return CpuLevel::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
      return CpuLevel::kAvx2;
    }
#endif
    return CpuLevel::kScalar;
  }();
  return level;
}

CpuLevel ActiveCpuLevel() {
  return static_cast<CpuLevel>(ActiveLevelSlot().load(std::memory_order_relaxed));
}

void SetCpuLevelForTesting(CpuLevel level) {
  ActiveLevelSlot().store(static_cast<int>(std::min(level, DetectCpuLevel())),
                          std::memory_order_relaxed);
}

const char* CpuLevelName(CpuLevel level) {
  switch (level) {
    case CpuLevel::kAvx512:
      return "avx512";
    case CpuLevel::kAvx2:
      return "avx2";
    case CpuLevel::kScalar:
      break;
  }
  return "scalar";
}

}  // namespace internal

void MatMulMany(std::span<const WeightView> ws, const float* x, int64_t n_tokens,
                std::span<float* const> ys, ThreadPool& pool, MatMulActs acts_mode) {
  using internal::QuantizedActs;
  KVTIER_CHECK(ws.size() == ys.size());
  if (ws.empty() || n_tokens == 0) return;
  const WeightView& w = ws[0];
  int64_t total_rows = 0;
  for (const WeightView& v : ws) {
    KVTIER_CHECK(n_tokens >= 0 && v.rows >= 0);
    KVTIER_CHECK(v.cols % GetDTypeInfo(v.type).block_elems == 0);
    KVTIER_CHECK(v.row_bytes == RowBytes(v.type, v.cols));
    KVTIER_CHECK(v.cols == w.cols);
    if (v.type != w.type) {  // different kernels: one call each
      for (size_t i = 0; i < ws.size(); ++i)
        MatMulMany(ws.subspan(i, 1), x, n_tokens, ys.subspan(i, 1), pool, acts_mode);
      return;
    }
    total_rows += v.rows;
  }
  if (total_rows == 0) return;

  const internal::KernelChoice k = internal::Choose(internal::ActiveCpuLevel(), w.type, acts_mode);
  QuantizedActs acts;
  acts.n_tokens = n_tokens;
  acts.cols = w.cols;
  if (k.act_block > 0) {
    thread_local internal::ActScratch scratch;
    const int64_t nblk = w.cols / k.act_block;
    acts.block = k.act_block;
    acts.offset_u8 = k.offset_u8;
    int8_t* q = internal::Grow(scratch.q, n_tokens * w.cols);
    float* d = internal::Grow(scratch.d, n_tokens * nblk);
    float* s = internal::Grow(scratch.s, n_tokens * nblk);
    int16_t* bsum16 = internal::Grow(scratch.bsum16, n_tokens * w.cols / 16);
    k.quantize(x, n_tokens, w.cols, k.act_block, k.offset_u8, q, d, s, bsum16);
    if (k.act_block == 32) {
      // Blocks of 32 keep their scale in f16 as ggml's Q8_0/Q8_1 activation blocks do, and for
      // Q4_1 weights (Q8_1 activations) the scaled sum too: the same rounding as llama.cpp, so
      // the two stay as close as float order allows (BENCHMARKS.md, logits agreement).
      const bool round_sums = w.type == DType::kQ4_1;
      for (int64_t i = 0; i < n_tokens * nblk; ++i) {
        const float d32 = d[i];
        const float sum = d32 > 0.0f ? std::nearbyint(s[i] / d32) : 0.0f;  // an exact integer
        d[i] = F16ToF32(F32ToF16(d32));
        s[i] = round_sums ? F16ToF32(F32ToF16(d32 * sum)) : d[i] * sum;
      }
    }
    acts.q = q;
    acts.d = d;
    acts.s = s;
    acts.bsum16 = bsum16;
    if (k.needs_d_exp) {
      const int64_t npairs = (nblk + 1) / 2;
      float* de = internal::Grow(scratch.d_exp, n_tokens * npairs * 16);
      for (int64_t t = 0; t < n_tokens; ++t) {
        for (int64_t p = 0; p < npairs; ++p) {
          float* lanes = de + (t * npairs + p) * 16;
          const float d0 = d[t * nblk + 2 * p];
          const float d1 = 2 * p + 1 < nblk ? d[t * nblk + 2 * p + 1] : 0.0f;
          for (int l = 0; l < 8; ++l) {
            lanes[l] = d0;
            lanes[l + 8] = d1;
          }
        }
      }
      acts.d_exp = de;
    }
  }
  // Rows per thread: enough work to be worth a wake-up (about 64K multiply-adds). The rows of
  // all matrices form one range, so one fork-join covers them all.
  const int64_t grain = std::max<int64_t>(8, 65536 / std::max<int64_t>(1, w.cols * n_tokens));
  pool.ParallelFor(total_rows, grain, [&](int64_t begin, int64_t end) {
    int64_t offset = 0;
    for (size_t i = 0; i < ws.size() && offset < end; offset += ws[i].rows, ++i) {
      const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + ws[i].rows);
      if (lo < hi) k.kernel(ws[i], x, acts, lo - offset, hi - offset, ys[i]);
    }
  });
}

void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatMulActs acts) {
  float* const ys[1] = {y};
  MatMulMany(std::span<const WeightView>(&w, 1), x, n_tokens, ys, pool, acts);
}

void GetRow(const WeightView& w, int64_t row, float* out) {
  KVTIER_CHECK(row >= 0 && row < w.rows);
  DequantizeRow(w.type,
                static_cast<const uint8_t*>(w.data) + static_cast<size_t>(row) * w.row_bytes, out,
                w.cols);
}

const char* CpuKernelLevel() { return internal::CpuLevelName(internal::ActiveCpuLevel()); }

}  // namespace kvtier::kernels
