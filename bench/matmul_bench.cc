// MatMul on the default model's shapes (SmolLM2-135M: Q4_1 block weights, Q8_0 tied output).
//   build-k1/bench/matmul_bench --benchmark_min_time=0.2
// Counters (wall time): GB/s of weight bytes streamed, tokens/s, GMAC/s. The *_f32acts rows run
// the same shapes with float activations (MatMulActs::kF32).
// KVTIER_CPU_LEVEL=avx2|scalar compares levels.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/dtype.h"

namespace kvtier::kernels {
namespace {

// Args: {n_tokens, threads}.
void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tokens", "threads"});
  for (int64_t tokens : {1, 64}) {
    for (int64_t threads : {2, 1}) b->Args({tokens, threads});
  }
  b->UseRealTime();
}

void BM_MatMul(benchmark::State& state, DType type, int64_t rows, int64_t cols,
               MatMulActs acts = MatMulActs::kQ8) {
  const int64_t n_tokens = state.range(0);
  const size_t rb = RowBytes(type, cols);
  std::vector<uint8_t> w(rb * rows);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = dist(rng);
    QuantizeRow(type, row.data(), w.data() + r * rb, cols);
  }
  std::vector<float> x(n_tokens * cols), y(n_tokens * rows);
  for (auto& v : x) v = dist(rng);
  const WeightView view{type, w.data(), rows, cols, rb};
  ThreadPool pool(static_cast<int>(state.range(1)));
  for (auto _ : state) {
    MatMul(view, x.data(), n_tokens, y.data(), pool, acts);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(w.size()),
                                              benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(n_tokens),
                                               benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GMAC/s"] = benchmark::Counter(static_cast<double>(rows * cols * n_tokens) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(CpuKernelLevel());
}

BENCHMARK_CAPTURE(BM_MatMul, q4_1_576x576, DType::kQ4_1, 576, 576)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_MatMul, q4_1_1536x576, DType::kQ4_1, 1536, 576)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_MatMul, q4_1_576x1536, DType::kQ4_1, 576, 1536)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_MatMul, q8_0_49152x576, DType::kQ8_0, 49152, 576)->Apply(Shapes);
// Float activations (MatMulActs::kF32, the engine's matmul_activations = f32).
BENCHMARK_CAPTURE(BM_MatMul, q4_1_1536x576_f32acts, DType::kQ4_1, 1536, 576, MatMulActs::kF32)
    ->Apply(Shapes);
BENCHMARK_CAPTURE(BM_MatMul, q8_0_49152x576_f32acts, DType::kQ8_0, 49152, 576, MatMulActs::kF32)
    ->Apply(Shapes);
BENCHMARK_CAPTURE(BM_MatMul, q4_k_1536x768, DType::kQ4_K, 1536, 768)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_MatMul, q6_k_1536x768, DType::kQ6_K, 1536, 768)->Apply(Shapes);

}  // namespace
}  // namespace kvtier::kernels
