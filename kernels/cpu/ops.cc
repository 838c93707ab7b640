// kernels/cpu/ops.cc — elementwise ops, RoPE, KV writes and the paged-attention driver.
//
// The vector kernels live in internal/ops_impl.h, instantiated once per SIMD level; this file
// picks the level's table per call (internal::CurrentOpsTable) and splits attention into work
// items for the thread pool. MatMul, GetRow and CpuKernelLevel are in matmul.cc.
#include "kernels/cpu/ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <vector>

#include "base/status.h"
#include "kernels/cpu/internal/ops_level.h"
#include "kernels/cpu/internal/ops_table.h"
#include "kernels/cpu/internal/retrieval_table.h"
#include "kernels/fp16.h"

namespace kvtier::kernels {
namespace internal {

const OpsTable& CurrentOpsTable() {
  switch (CurrentOpsLevel()) {
    case OpsLevel::kAvx512:
      return Avx512OpsTable();
    case OpsLevel::kAvx2:
      return Avx2OpsTable();
    case OpsLevel::kScalar:
      break;
  }
  return ScalarOpsTable();
}

}  // namespace internal

namespace {

using internal::AttnItem;
using internal::AttnPartial;
using internal::AttnProblem;
using internal::CurrentOpsTable;
using internal::OpsTable;

// Attention work split (see kernels/README.md): a query block holds at most kRowBudget rows
// (tokens x group), so its transposed Q, scores and output stay in L1/L2. When there are fewer
// than kItemsPerThread (KV head, query block) items per thread, each one's pages are split into
// ranges of at least kMinPagesPerSplit pages, merged afterwards (split-k online softmax).
constexpr int kRowBudget = 64;
constexpr int kItemsPerThread = 8;
constexpr int kMinPagesPerSplit = 4;

struct AttnPlan {
  AttnProblem problem;
  const OpsTable* table = nullptr;
  float* out = nullptr;
  int head_dim = 0;
  int n_kv_heads = 0;
  int block_tokens = 0;  // query tokens per block
  int n_splits = 1;
  int64_t n_items = 0;
  size_t item_floats = 0;          // o, m, l of one item
  // Per query block and KV head ([block][kv_head]): pages visible to the block's last position.
  const int* block_end = nullptr;
  float* partials = nullptr;       // n_items * item_floats when n_splits > 1
  std::atomic<int64_t> next{0};
};

AttnItem ItemAt(const AttnPlan& plan, int64_t index, int* split) {
  // Largest first: the last query blocks of a causal prefill see the most pages.
  const int64_t i = plan.n_items - 1 - index;
  *split = static_cast<int>(i % plan.n_splits);
  const int64_t rest = i / plan.n_splits;
  const int64_t qb = rest / plan.n_kv_heads;
  AttnItem item;
  item.kv_head = static_cast<int>(rest % plan.n_kv_heads);
  item.t_begin = qb * plan.block_tokens;
  item.t_end = std::min<int64_t>(item.t_begin + plan.block_tokens, plan.problem.n_tokens);
  const int64_t end = plan.block_end[qb * plan.n_kv_heads + item.kv_head];
  item.p_begin = static_cast<int>(end * *split / plan.n_splits);
  item.p_end = static_cast<int>(end * (*split + 1) / plan.n_splits);
  return item;
}

AttnPartial PartialAt(float* base, int rows, int head_dim) {
  AttnPartial p;
  p.o = base;
  p.m = base + static_cast<size_t>(rows) * head_dim;
  p.l = p.m + rows;
  return p;
}

// Writes o / l of each row of `item` to its place in `out`.
void Finish(const AttnPlan& plan, const AttnItem& item, const AttnPartial& part) {
  const int group = plan.problem.group;
  const int d_dim = plan.head_dim;
  const int rows = static_cast<int>(item.t_end - item.t_begin) * group;
  for (int r = 0; r < rows; ++r) {
    const int64_t t = item.t_begin + r / group;
    const int h = item.kv_head * group + r % group;
    float* dst = plan.out + (t * plan.problem.n_heads + h) * d_dim;
    const float inv = part.l[r] > 0.0f ? 1.0f / part.l[r] : 0.0f;
    const float* o = part.o + static_cast<size_t>(r) * d_dim;
    for (int d = 0; d < d_dim; ++d) dst[d] = o[d] * inv;
  }
}

void AttnWorker(AttnPlan* plan) {
  thread_local std::vector<float> own;
  if (plan->n_splits == 1 && own.size() < plan->item_floats) own.resize(plan->item_floats);
  const int rows_max = plan->block_tokens * plan->problem.group;
  for (;;) {
    const int64_t index = plan->next.fetch_add(1, std::memory_order_relaxed);
    if (index >= plan->n_items) return;
    int split = 0;
    const AttnItem item = ItemAt(*plan, index, &split);
    const int64_t slot = plan->n_items - 1 - index;
    float* base = plan->n_splits == 1 ? own.data() : plan->partials + slot * plan->item_floats;
    const AttnPartial part = PartialAt(base, rows_max, plan->head_dim);
    plan->table->attend(plan->problem, item, part);
    if (plan->n_splits == 1) Finish(*plan, item, part);
  }
}

// Combines the n_splits partial results of every (query block, KV head) into `out`.
void MergeSplits(const AttnPlan& plan) {
  const int group = plan.problem.group;
  const int d_dim = plan.head_dim;
  const int rows_max = plan.block_tokens * group;
  thread_local std::vector<float> acc;
  acc.resize(static_cast<size_t>(d_dim));
  for (int64_t base = 0; base < plan.n_items; base += plan.n_splits) {
    int split = 0;
    const AttnItem item = ItemAt(plan, plan.n_items - 1 - base, &split);
    const int rows = static_cast<int>(item.t_end - item.t_begin) * group;
    for (int r = 0; r < rows; ++r) {
      float m = -std::numeric_limits<float>::infinity();
      for (int s = 0; s < plan.n_splits; ++s) {
        m = std::max(
            m, PartialAt(plan.partials + (base + s) * plan.item_floats, rows_max, d_dim).m[r]);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      float l = 0.0f;
      if (m != -std::numeric_limits<float>::infinity()) {
        for (int s = 0; s < plan.n_splits; ++s) {
          const AttnPartial p =
              PartialAt(plan.partials + (base + s) * plan.item_floats, rows_max, d_dim);
          if (p.l[r] == 0.0f) continue;
          const float w = std::exp(p.m[r] - m);
          l += p.l[r] * w;
          const float* o = p.o + static_cast<size_t>(r) * d_dim;
          for (int d = 0; d < d_dim; ++d) acc[d] += o[d] * w;
        }
      }
      const int64_t t = item.t_begin + r / group;
      const int h = item.kv_head * group + r % group;
      float* dst = plan.out + (t * plan.problem.n_heads + h) * d_dim;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      for (int d = 0; d < d_dim; ++d) dst[d] = acc[d] * inv;
    }
  }
}

}  // namespace

void RmsNorm(const float* x, const float* weight, int64_t n_tokens, int64_t dim, float eps,
             float* out) {
  CurrentOpsTable().rms_norm(x, weight, n_tokens, dim, eps, out);
}

// The angle is computed in double: theta_i = pos * freq_scale * freq_base^(-2i/head_dim), then
// reduced modulo 2*pi in double and its sine and cosine taken in float. Its error is below
// 1e-6 rad at any position. llama.cpp instead multiplies theta *= freq_base^(-2/head_dim) in
// float, whose error grows with the position (about 1e-2 rad near position 100000); the exact
// angle is what the model was trained to see, what the CUDA kernel reproduces, and what a
// double-precision reference can check tightly.
void RopeInPlace(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* positions,
                 float freq_base, float freq_scale) {
  const int half = head_dim / 2;
  thread_local std::vector<double> inv_freq;
  thread_local std::vector<float> cos_sin;
  thread_local double cached_base = 0.0;
  thread_local int cached_dim = 0;
  if (cached_base != freq_base || cached_dim != head_dim) {
    inv_freq.resize(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
      inv_freq[i] = std::pow(static_cast<double>(freq_base), -2.0 * i / head_dim);
    }
    cached_base = freq_base;
    cached_dim = head_dim;
  }
  if (cos_sin.size() < static_cast<size_t>(2 * half)) cos_sin.resize(2 * half);
  constexpr double kTwoPi = 2.0 * std::numbers::pi;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const double p = static_cast<double>(positions[t]) * static_cast<double>(freq_scale);
    for (int i = 0; i < half; ++i) {
      const double a = std::remainder(p * inv_freq[i], kTwoPi);
      const float af = static_cast<float>(a);
      cos_sin[2 * i] = std::cos(af);
      cos_sin[2 * i + 1] = std::sin(af);
    }
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
        const float x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * c - x1 * s;
        v[2 * i + 1] = x0 * s + x1 * c;
      }
    }
  }
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  CurrentOpsTable().swiglu(gate, up, n, out);
}

void AddInPlace(float* y, const float* x, int64_t n) { CurrentOpsTable().add(y, x, n); }

void SoftmaxInPlace(float* x, int64_t n) { CurrentOpsTable().softmax(x, n); }

void KvPool::UpdateCentroid(uint16_t* head_digest, int slot, const uint16_t* key) const {
  uint16_t* c = Centroid(head_digest);
  const int n = CentroidDims();
  if (slot == 0) {
    std::copy(key, key + n, c);
    return;
  }
  const float inv = 1.0f / static_cast<float>(slot + 1);
  for (int d = 0; d < n; ++d) {
    const float m = F16ToF32(c[d]);
    c[d] = F32ToF16(m + (F16ToF32(key[d]) - m) * inv);
  }
}

void WriteKv(const KvPool& pool, std::span<const PageRef> slots, const float* k, const float* v,
             int64_t n_tokens) {
  KVTIER_CHECK(static_cast<int64_t>(slots.size()) >= n_tokens);
  const OpsTable& table = CurrentOpsTable();
  const internal::RetrievalTable& digest = internal::CurrentRetrievalTable();
  const int d_dim = pool.head_dim;
  const int64_t row = static_cast<int64_t>(pool.n_kv_heads) * d_dim;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const PageRef& slot = slots[t];
    KVTIER_CHECK(slot.first_pos >= 0 && slot.first_pos < pool.page_tokens);
    for (int h = 0; h < pool.n_kv_heads; ++h) {
      const size_t off = (static_cast<size_t>(h) * pool.page_tokens + slot.first_pos) * d_dim;
      table.to_f16(k + t * row + h * d_dim, d_dim, pool.K(slot.page) + off);
      table.to_f16(v + t * row + h * d_dim, d_dim, pool.V(slot.page) + off);
      if (pool.digests != nullptr) {
        uint16_t* dg = pool.DigestHead(slot.page, h);
        const uint16_t* key = pool.K(slot.page) + off;
        digest.digest_update(key, d_dim, dg, slot.first_pos == 0);
        pool.SetSketch(dg, slot.first_pos, key);
        pool.UpdateCentroid(dg, slot.first_pos, key);
      }
    }
  }
}

namespace {

// PagedAttention and PagedAttentionPerKvHead: KV head g reads the `per_head` pages at
// pages + g * head_stride (head_stride 0: one shared list).
void RunPagedAttention(const KvPool& pool, const PageRef* pages_base, int per_head,
                       int64_t head_stride, const float* q, const int32_t* q_pos, int64_t n_tokens,
                       int n_heads, float scale, float* out, ThreadPool& threads) {
  if (n_tokens <= 0) return;
  KVTIER_CHECK(pool.n_kv_heads > 0 && n_heads > 0 && n_heads % pool.n_kv_heads == 0);
  KVTIER_CHECK(pool.head_dim > 0 && pool.page_tokens > 0);
  AttnPlan plan;
  plan.problem.pool = &pool;
  plan.problem.pages = pages_base;
  plan.problem.n_pages = per_head;
  plan.problem.head_pages_stride = head_stride;
  plan.problem.q = q;
  plan.problem.q_pos = q_pos;
  plan.problem.n_tokens = n_tokens;
  plan.problem.n_heads = n_heads;
  plan.problem.group = n_heads / pool.n_kv_heads;
  plan.problem.scale = scale;
  plan.table = &CurrentOpsTable();
  plan.out = out;
  plan.head_dim = pool.head_dim;
  plan.n_kv_heads = pool.n_kv_heads;
  plan.block_tokens = std::max(1, kRowBudget / plan.problem.group);
  const int64_t n_blocks = (n_tokens + plan.block_tokens - 1) / plan.block_tokens;

  // Pages visible to each query block: those whose first position <= the block's last query.
  thread_local std::vector<int> block_end;
  block_end.resize(static_cast<size_t>(n_blocks * plan.n_kv_heads));
  int max_end = 0;
  for (int64_t b = 0; b < n_blocks; ++b) {
    int32_t hi = std::numeric_limits<int32_t>::min();
    const int64_t t_end = std::min<int64_t>((b + 1) * plan.block_tokens, n_tokens);
    for (int64_t t = b * plan.block_tokens; t < t_end; ++t) hi = std::max(hi, q_pos[t]);
    for (int g = 0; g < plan.n_kv_heads; ++g) {
      const PageRef* first = pages_base + g * head_stride;
      const PageRef* it =
          std::upper_bound(first, first + per_head, hi,
                           [](int32_t pos, const PageRef& p) { return pos < p.first_pos; });
      block_end[b * plan.n_kv_heads + g] = static_cast<int>(it - first);
      max_end = std::max(max_end, block_end[b * plan.n_kv_heads + g]);
    }
  }
  plan.block_end = block_end.data();

  const int64_t base_items = n_blocks * plan.n_kv_heads;
  const int64_t want_items = static_cast<int64_t>(kItemsPerThread) * threads.size();
  if (threads.size() > 1 && base_items < want_items) {
    const int64_t by_work = (want_items + base_items - 1) / base_items;
    plan.n_splits = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>(by_work, max_end / kMinPagesPerSplit)));
  }
  plan.n_items = base_items * plan.n_splits;
  const int rows_max = plan.block_tokens * plan.problem.group;
  plan.item_floats = static_cast<size_t>(rows_max) * (pool.head_dim + 2);
  thread_local std::vector<float> partials;
  if (plan.n_splits > 1) {
    const size_t need = static_cast<size_t>(plan.n_items) * plan.item_floats;
    if (partials.size() < need) partials.resize(need);
    plan.partials = partials.data();
  }

  AttnPlan* p = &plan;
  threads.Run([p](int, int) { AttnWorker(p); });
  if (plan.n_splits > 1) MergeSplits(plan);
}

}  // namespace

void PagedAttention(const KvPool& pool, std::span<const PageRef> pages, const float* q,
                    const int32_t* q_pos, int64_t n_tokens, int n_heads, float scale, float* out,
                    ThreadPool& threads) {
  RunPagedAttention(pool, pages.data(), static_cast<int>(pages.size()), 0, q, q_pos, n_tokens,
                    n_heads, scale, out, threads);
}

void PagedAttentionPerKvHead(const KvPool& pool, std::span<const PageRef> pages, int pages_per_head,
                             const float* q, const int32_t* q_pos, int64_t n_tokens, int n_heads,
                             float scale, float* out, ThreadPool& threads) {
  KVTIER_CHECK(pages_per_head >= 0 &&
               pages.size() == static_cast<size_t>(pool.n_kv_heads) * pages_per_head);
  RunPagedAttention(pool, pages.data(), pages_per_head, pages_per_head, q, q_pos, n_tokens, n_heads,
                    scale, out, threads);
}

}  // namespace kvtier::kernels
