// Paged attention on the CPU for the default model shape (9 query heads, 3 KV heads, head_dim
// 64, 16-token pages), with 2 threads (and 1, for a steadier per-core figure): decode (1 query
// token) over 512/4096/16384 tokens of context and causal prefill of 512/4096 tokens.
//
//   build/bench/attention_bench                       # the CPU's best SIMD level
//   KVTIER_CPU_LEVEL=avx2 build/bench/attention_bench # force a lower level
//
// Counters: tokens/s = query tokens per second; bytes_per_second = f16 K+V bytes of the
// context read per second (decode reads every page once per step; prefill is counted the same
// way, once per call, so its figure is the effective rate, not DRAM traffic).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"

namespace kvtier::kernels {
namespace {

constexpr int kHeads = 9;
constexpr int kKvHeads = 3;
constexpr int kHeadDim = 64;
constexpr int kPageTokens = 16;

struct Setup {
  KvPool pool;
  std::vector<uint16_t> storage;
  std::vector<PageRef> pages;
  std::vector<float> q;
  std::vector<int32_t> q_pos;
  std::vector<float> out;

  Setup(int n_ctx, int n_q) {
    pool.page_tokens = kPageTokens;
    pool.n_kv_heads = kKvHeads;
    pool.head_dim = kHeadDim;
    const int n_pages = (n_ctx + kPageTokens - 1) / kPageTokens;
    storage.resize(n_pages * pool.PageBytes() / sizeof(uint16_t));
    pool.base = storage.data();
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<int32_t> order(n_pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);  // pages scattered in the pool
    std::vector<float> k(static_cast<size_t>(kPageTokens) * kKvHeads * kHeadDim);
    std::vector<float> v(k.size());
    for (int p = 0; p < n_pages; ++p) {
      const int n = std::min(kPageTokens, n_ctx - p * kPageTokens);
      pages.push_back(PageRef{order[p], p * kPageTokens, n});
      std::vector<PageRef> slots(n);
      for (int j = 0; j < n; ++j) slots[j] = PageRef{order[p], j, 1};
      for (auto& x : k) x = dist(rng);
      for (auto& x : v) x = dist(rng);
      WriteKv(pool, slots, k.data(), v.data(), n);
    }
    q.resize(static_cast<size_t>(n_q) * kHeads * kHeadDim);
    for (auto& x : q) x = dist(rng);
    for (int t = 0; t < n_q; ++t) q_pos.push_back(n_ctx - n_q + t);
    out.resize(q.size());
  }
};

void Run(benchmark::State& state, int n_ctx, int n_q, int n_threads) {
  Setup s(n_ctx, n_q);
  ThreadPool threads(n_threads);
  const float scale = 0.125f;
  for (auto _ : state) {
    PagedAttention(s.pool, s.pages, s.q.data(), s.q_pos.data(), n_q, kHeads, scale, s.out.data(),
                   threads);
    benchmark::DoNotOptimize(s.out.data());
    benchmark::ClobberMemory();
  }
  const int64_t kv_bytes = static_cast<int64_t>(n_ctx) * kKvHeads * kHeadDim * 2 * 2;
  state.SetBytesProcessed(state.iterations() * kv_bytes);
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(n_q), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = n_threads;
}

void BM_AttentionDecode(benchmark::State& state) {
  Run(state, static_cast<int>(state.range(0)), 1, static_cast<int>(state.range(1)));
}
// Args: context tokens, threads (2 is the target; 1 is steadier on a shared machine).
BENCHMARK(BM_AttentionDecode)
    ->ArgsProduct({{512, 4096, 16384}, {2, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void BM_AttentionPrefill(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Run(state, n, n, static_cast<int>(state.range(1)));
}
BENCHMARK(BM_AttentionPrefill)
    ->ArgsProduct({{512, 4096}, {2, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvtier::kernels
