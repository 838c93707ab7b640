// MatMul against a double-precision reference computed from DequantizeRow, for every weight
// type and every SIMD level this CPU supports.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/internal/matmul_kernels.h"
#include "kernels/cpu/ops.h"
#include "kernels/fp16.h"
#include "kernels/dtype.h"

namespace kvtier::kernels {
namespace {

using internal::CpuLevel;

constexpr DType kAllTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                               DType::kQ4_0, DType::kQ4_1, DType::kQ6_K, DType::kQ4_K};

bool IsFloatType(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

struct Matrix {
  DType type;
  int64_t rows, cols;
  std::vector<uint8_t> data;
  std::vector<float> dequant;  // [rows][cols]
  WeightView View() const {
    return WeightView{type, data.data(), rows, cols, RowBytes(type, cols)};
  }
};

Matrix MakeMatrix(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  Matrix m{type, rows, cols, std::vector<uint8_t>(RowBytes(type, cols) * rows),
           std::vector<float>(rows * cols)};
  std::normal_distribution<float> dist(0.2f, 1.0f);  // an offset exercises the mins
  std::vector<float> row(cols);
  const size_t rb = RowBytes(type, cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = 0.05f * (1 + r % 7);
    for (auto& v : row) v = row_scale * dist(rng);
    QuantizeRow(type, row.data(), m.data.data() + r * rb, cols);
    DequantizeRow(type, m.data.data() + r * rb, m.dequant.data() + r * cols, cols);
  }
  return m;
}

std::vector<float> RandomActs(int64_t n_tokens, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n_tokens * cols);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float scale = 0.5f + static_cast<float>(t % 5);
    for (int64_t c = 0; c < cols; ++c) x[t * cols + c] = scale * dist(rng);
  }
  return x;
}

// x with every `block` elements of each token rounded to 8 bits as the integer kernels do:
// scale amax / 127, round to nearest even; blocks of 32 keep their scale in f16 (as llama.cpp's
// Q8_0/Q8_1 activation blocks do).
std::vector<float> FakeQuantize8(const std::vector<float>& x, int64_t block) {
  std::vector<float> out(x.size());
  for (size_t b = 0; b < x.size(); b += block) {
    float amax = 0.0f;
    for (int64_t i = 0; i < block; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    const float d = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    const float d_stored = block == 32 ? F16ToF32(F32ToF16(d)) : d;
    for (int64_t i = 0; i < block; ++i) out[b + i] = d_stored * std::nearbyint(x[b + i] * inv);
  }
  return out;
}

// ||y - ref|| / ||ref|| over the whole output.
double RelativeL2(const Matrix& m, const std::vector<float>& x, int64_t n_tokens,
                  const std::vector<float>& y) {
  double err = 0, norm = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t r = 0; r < m.rows; ++r) {
      double ref = 0;
      for (int64_t c = 0; c < m.cols; ++c) {
        ref += static_cast<double>(m.dequant[r * m.cols + c]) * x[t * m.cols + c];
      }
      const double diff = y[t * m.rows + r] - ref;
      err += diff * diff;
      norm += ref * ref;
    }
  }
  return std::sqrt(err / norm);
}

std::vector<CpuLevel> AvailableLevels() {
  std::vector<CpuLevel> levels;
  for (int l = 0; l <= static_cast<int>(internal::DetectCpuLevel()); ++l) {
    levels.push_back(static_cast<CpuLevel>(l));
  }
  return levels;
}

class LevelGuard {
 public:
  explicit LevelGuard(CpuLevel level) : saved_(internal::ActiveCpuLevel()) {
    internal::SetCpuLevelForTesting(level);
  }
  ~LevelGuard() { internal::SetCpuLevelForTesting(saved_); }

 private:
  CpuLevel saved_;
};

class MatMulTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatMulTest, MatchesDequantizedReference) {
  const DType type = GetParam();
  const int64_t block = GetDTypeInfo(type).block_elems;
  // Odd block counts (3, 5 blocks of 32) and float widths that are not multiples of 8.
  const int64_t cols = block == 256 ? 512 : block == 32 ? 160 : 100;
  const int64_t rows = 37;
  std::mt19937 rng(static_cast<unsigned>(type) + 1);
  const Matrix m = MakeMatrix(type, rows, cols, rng);
  ThreadPool pool1(1), pool2(2);
  for (CpuLevel level : AvailableLevels()) {
    LevelGuard guard(level);
    ASSERT_EQ(std::string(CpuKernelLevel()), internal::CpuLevelName(level));
    // Float activations (scalar level, float weights) are near-exact; 8-bit activations cost
    // about 0.5-0.9% relative error on these Gaussian inputs.
    const double bound = (level == CpuLevel::kScalar || IsFloatType(type)) ? 1e-5 : 1.5e-2;
    for (int64_t n_tokens : {1, 2, 3, 5, 8, 17, 64}) {
      const std::vector<float> x = RandomActs(n_tokens, cols, rng);
      for (ThreadPool* pool : {&pool1, &pool2}) {
        std::vector<float> y(n_tokens * rows, NAN);
        MatMul(m.View(), x.data(), n_tokens, y.data(), *pool);
        const double err = RelativeL2(m, x, n_tokens, y);
        EXPECT_LT(err, bound) << GetDTypeInfo(type).name << " level " << CpuKernelLevel()
                              << " tokens " << n_tokens << " threads " << pool->size();
        if (bound > 1e-5) {
          // The integer paths are exact up to float rounding once the activations are rounded
          // the documented way (blocks of 32, or of 256 for the K-quants).
          // Q4_1's offset term uses the block's scaled sum, itself stored in f16: allow that.
          const double qerr =
              RelativeL2(m, FakeQuantize8(x, std::max<int64_t>(32, block)), n_tokens, y);
          EXPECT_LT(qerr, type == DType::kQ4_1 ? 1e-3 : 1e-5) << GetDTypeInfo(type).name << " level " << CpuKernelLevel()
                                << " tokens " << n_tokens << " threads " << pool->size();
        }
      }
    }
  }
}

TEST_P(MatMulTest, LargeShapeAllLevels) {
  // The model's shapes: 576 columns (18 blocks of 32), several row tiles per thread.
  const DType type = GetParam();
  const int64_t cols = GetDTypeInfo(type).block_elems == 256 ? 1536 : 576;
  const int64_t rows = 203;
  std::mt19937 rng(99);
  const Matrix m = MakeMatrix(type, rows, cols, rng);
  ThreadPool pool(2);
  for (CpuLevel level : AvailableLevels()) {
    LevelGuard guard(level);
    const double bound = (level == CpuLevel::kScalar || IsFloatType(type)) ? 1e-5 : 1.5e-2;
    for (int64_t n_tokens : {1, 9}) {
      const std::vector<float> x = RandomActs(n_tokens, cols, rng);
      std::vector<float> y(n_tokens * rows, NAN);
      MatMul(m.View(), x.data(), n_tokens, y.data(), pool);
      EXPECT_LT(RelativeL2(m, x, n_tokens, y), bound)
          << GetDTypeInfo(type).name << " level " << CpuKernelLevel() << " tokens " << n_tokens;
    }
  }
}

// MatMulActs::kF32: no 8-bit rounding of the activations at any level, so every type is within
// float rounding of the dequantized reference (the kQ8 paths are ~1e-2 away on these inputs),
// including row counts that are not a multiple of the kernels' row tile and token tails.
TEST_P(MatMulTest, FloatActivationsMatchTheDequantizedReference) {
  const DType type = GetParam();
  const int64_t block = GetDTypeInfo(type).block_elems;
  std::mt19937 rng(static_cast<unsigned>(type) + 11);
  ThreadPool pool(2);
  for (const int64_t cols : {block == 256 ? int64_t{512} : block == 32 ? int64_t{160} : int64_t{100},
                             block == 256 ? int64_t{1536} : int64_t{576}}) {
    for (const int64_t rows : {int64_t{37}, int64_t{203}}) {
      const Matrix m = MakeMatrix(type, rows, cols, rng);
      for (CpuLevel level : AvailableLevels()) {
        LevelGuard guard(level);
        for (int64_t n_tokens : {1, 2, 3, 4, 5, 9, 17}) {
          const std::vector<float> x = RandomActs(n_tokens, cols, rng);
          std::vector<float> y(n_tokens * rows, NAN);
          MatMul(m.View(), x.data(), n_tokens, y.data(), pool, MatMulActs::kF32);
          const double err = RelativeL2(m, x, n_tokens, y);
          EXPECT_LT(err, 1e-5) << GetDTypeInfo(type).name << " level " << CpuKernelLevel()
                               << " rows " << rows << " cols " << cols << " tokens " << n_tokens;
          if (level != CpuLevel::kScalar && !IsFloatType(type)) {
            std::vector<float> y8(n_tokens * rows, NAN);
            MatMul(m.View(), x.data(), n_tokens, y8.data(), pool, MatMulActs::kQ8);
            EXPECT_GT(RelativeL2(m, x, n_tokens, y8), 100 * err) << GetDTypeInfo(type).name;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulTest, ::testing::ValuesIn(kAllTypes),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(GetDTypeInfo(info.param).name);
                         });

TEST(MatMulTest, ZeroTokensWritesNothing) {
  std::mt19937 rng(1);
  const Matrix m = MakeMatrix(DType::kQ4_1, 4, 64, rng);
  ThreadPool pool(1);
  float y = 42.0f;
  MatMul(m.View(), nullptr, 0, &y, pool);
  EXPECT_EQ(y, 42.0f);
}

TEST(MatMulTest, GetRowMatchesDequantize) {
  std::mt19937 rng(5);
  for (DType type : kAllTypes) {
    const int64_t cols = GetDTypeInfo(type).block_elems == 256 ? 256 : 64;
    const Matrix m = MakeMatrix(type, 5, cols, rng);
    std::vector<float> out(cols);
    GetRow(m.View(), 3, out.data());
    for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(out[c], m.dequant[3 * cols + c]);
  }
}

TEST(MatMulTest, LevelIsReported) {
  const std::string level = CpuKernelLevel();
  EXPECT_TRUE(level == "avx512" || level == "avx2" || level == "scalar") << level;
}

}  // namespace
}  // namespace kvtier::kernels

namespace kvtier::kernels {
namespace {

// MatMulMany must give exactly what one MatMul per matrix gives, for every level, including
// row splits that straddle two matrices and a mixed-type fallback.
TEST(MatMulManyTest, EqualsSeparateMatMuls) {
  std::mt19937 rng(77);
  ThreadPool pool(2);
  for (CpuLevel level : AvailableLevels()) {
    LevelGuard guard(level);
    for (bool mixed : {false, true}) {
      std::vector<Matrix> ms;
      ms.push_back(MakeMatrix(DType::kQ4_1, 37, 96, rng));
      ms.push_back(MakeMatrix(mixed ? DType::kQ8_0 : DType::kQ4_1, 11, 96, rng));
      ms.push_back(MakeMatrix(DType::kQ4_1, 64, 96, rng));
      for (int64_t n_tokens : {1, 3, 9}) {
        std::normal_distribution<float> dist(0.0f, 1.0f);
        std::vector<float> x(n_tokens * 96);
        for (auto& v : x) v = dist(rng);
        std::vector<WeightView> views;
        std::vector<std::vector<float>> got(ms.size()), want(ms.size());
        std::vector<float*> outs;
        for (size_t i = 0; i < ms.size(); ++i) {
          views.push_back(ms[i].View());
          got[i].assign(n_tokens * ms[i].rows, NAN);
          want[i].assign(n_tokens * ms[i].rows, NAN);
          outs.push_back(got[i].data());
          MatMul(ms[i].View(), x.data(), n_tokens, want[i].data(), pool);
        }
        MatMulMany(views, x.data(), n_tokens, outs, pool);
        for (size_t i = 0; i < ms.size(); ++i) {
          EXPECT_EQ(got[i], want[i]) << "matrix " << i << " level " << CpuKernelLevel()
                                     << " tokens " << n_tokens << " mixed " << mixed;
        }
        // The same with float activations.
        for (size_t i = 0; i < ms.size(); ++i) {
          MatMul(ms[i].View(), x.data(), n_tokens, want[i].data(), pool, MatMulActs::kF32);
        }
        MatMulMany(views, x.data(), n_tokens, outs, pool, MatMulActs::kF32);
        for (size_t i = 0; i < ms.size(); ++i) {
          EXPECT_EQ(got[i], want[i]) << "f32 acts, matrix " << i << " level " << CpuKernelLevel()
                                     << " tokens " << n_tokens << " mixed " << mixed;
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvtier::kernels
