// The scalar MatMul path: the portable fallback and the most accurate one (float activations).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/internal/matmul_kernels.h"

namespace kvtier::kernels::internal {

void ScalarRows(const WeightView& w, const float* x, const QuantizedActs& acts, int64_t row_begin,
                int64_t row_end, float* y) {
  thread_local std::vector<float> row;
  if (row.size() < static_cast<size_t>(w.cols)) row.resize(static_cast<size_t>(w.cols));
  const int64_t n_tokens = acts.n_tokens;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    DequantizeRow(w.type, base + static_cast<size_t>(r) * w.row_bytes, row.data(), w.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.cols;
      float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      int64_t c = 0;
      for (; c + 4 <= w.cols; c += 4) {
        for (int k = 0; k < 4; ++k) sum[k] += row[c + k] * xt[c + k];
      }
      for (; c < w.cols; ++c) sum[0] += row[c] * xt[c];
      y[t * w.rows + r] = (sum[0] + sum[1]) + (sum[2] + sum[3]);
    }
  }
}

void QuantizeActsScalar(const float* x, int64_t n_tokens, int64_t cols, int block, bool offset_u8,
                        int8_t* q, float* d, float* s, int16_t* bsum16) {
  const int64_t nblk = cols / block;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t b = 0; b < nblk; ++b) {
      const float* xb = x + t * cols + b * block;
      int8_t* qb = q + t * cols + b * block;
      float amax = 0.0f;
      for (int i = 0; i < block; ++i) amax = std::max(amax, std::fabs(xb[i]));
      const float db = amax / 127.0f;
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      int sum = 0;
      for (int g = 0; g < block / 16; ++g) {
        int gsum = 0;
        for (int i = 16 * g; i < 16 * g + 16; ++i) {
          const int v = std::clamp(static_cast<int>(std::nearbyint(xb[i] * inv)), -127, 127);
          gsum += v;
          qb[i] = static_cast<int8_t>(offset_u8 ? (v ^ 0x80) : v);
        }
        bsum16[(t * cols + b * block) / 16 + g] = static_cast<int16_t>(gsum);
        sum += gsum;
      }
      d[t * nblk + b] = db;
      s[t * nblk + b] = db * static_cast<float>(sum);
    }
  }
}

}  // namespace kvtier::kernels::internal
