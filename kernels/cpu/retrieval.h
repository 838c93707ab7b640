// kernels/cpu/retrieval.h — retrieval (sparse) attention on the CPU, DESIGN §5: page digests,
// page scoring by the Quest bound, top-k selection, and the per-KV-head page lists that
// PagedAttentionPerKvHead (kernels/cpu/ops.h) attends over.
//
// Thread safety: every function is safe to call concurrently on disjoint outputs; functions
// taking a ThreadPool use it for the duration of the call (the pool is single-caller).
//
// Digests live next to the pages (KvPool::digests, layout in ops.h): per page and KV head the
// element-wise min and max of its post-RoPE keys, f16 (exact: min/max of f16 values). The same
// layout and scoring as kernels/cuda/cuda_paged.h, so either backend is the other's reference.
//
// Scoring, for candidate page i, query head h (KV head g = h / group) and query token t:
//   bound[t][h][i] = scale * sum_d max(q[t][h][d] * min_i[g][d], q[t][h][d] * max_i[g][d]),
// an upper bound of scale * q.k over the page's keys. Each head's bounds are normalised as a
// log-softmax over the candidates, nb = bound - logsumexp_i(bound) (so heads with sharp and flat
// score distributions are comparable: nb is the log of the share of attention mass the page
// would get if every key reached its bound), and
//   score[g][i] = max over the query heads of g and over the query tokens of nb[t][h][i].
// For one decode token this is exactly CudaScorePages; for a batch of new prompt tokens the max
// over tokens selects one page set that serves the whole batch.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"

namespace kvtier::kernels {

// Recomputes the digest of each page in `pages` from the keys of its tokens [0, n_tokens) (for
// pages filled by a copy, e.g. decoded from the host tier). A page with n_tokens 0 gets
// min = +inf, max = -inf. pool.digests must be set.
void UpdateDigests(const KvPool& pool, std::span<const PageRef> pages);

// score[g * cand.size() + i] as above. q: [n_tokens][n_heads][head_dim] f32 (unscaled).
// pool.digests must be set; head_dim <= 256.
void ScorePages(const KvPool& pool, std::span<const PageRef> cand, const float* q, int64_t n_tokens,
                int n_heads, float scale, float* scores, ThreadPool& threads);

// The indices of the k largest scores[0, n) in increasing index order into index[0, k). Ties at
// the k-th value go to the lowest indices; NaN ranks below everything. 0 <= k <= n.
void TopK(const float* scores, int n, int k, int32_t* index);

// How a page list of n_pages splits: the first `sink` pages and the last `recent` pages always,
// `k` of the `cand` pages between them by score. selected() pages per KV head.
struct SelectShape {
  int sink = 0, recent = 0, cand = 0, k = 0;
  int selected() const { return sink + k + recent; }
  bool all() const { return k == cand; }  // nothing to choose: every page is selected
};
SelectShape ShapeSelection(int n_pages, int n_sink, int n_recent, int k_pages);

// Time spent in the last SelectPages call's stages, ms.
struct SelectProfile {
  double score_ms = 0;
  double select_ms = 0;  // top-k and assembling the lists
};

// The whole selection for one layer: for each KV head g, selected[g * n_sel, (g + 1) * n_sel)
// = the sink pages, the top shape.k candidates by ScorePages, and the recent pages of `pages`
// (in position order), n_sel = shape.selected(). Returns the shape.
SelectShape SelectPages(const KvPool& pool, std::span<const PageRef> pages, int n_sink,
                        int n_recent, int k_pages, const float* q, int64_t n_tokens, int n_heads,
                        float scale, std::vector<PageRef>* selected, ThreadPool& threads,
                        SelectProfile* profile = nullptr);

}  // namespace kvtier::kernels
