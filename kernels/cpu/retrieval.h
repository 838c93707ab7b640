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
// Scoring, for candidate page i, query head h (KV head g = h / group) and query token t, in one
// of these ways (ScoringMode):
//   kSketch (the default): e[t][h][i] = logsumexp over page i's slots j of
//     scale * sum_{d >= head_dim - sd} q[t][h][d] * k_j[d], the logits of the page's keys
//     restricted to their sd = head_dim / 4 lowest-frequency dimensions (the sketch rows of the
//     digest, KvPool), plus scale * sum_{d < head_dim - sd} q[t][h][d] * c_i[d], q against the
//     page's centroid of the other dimensions (KvPool::Centroid): each slot's logit with its
//     high-frequency part replaced by the page mean's. Each row (t, h) is normalised as a softmax
//     over the candidates (p = exp(e - logsumexp_i e): the page's estimated share of that head's
//     attention) and score[g][i] = sum over the query heads of g and the query tokens of
//     p[t][h][i] — the estimated attention mass the page would receive from the group.
//   kSketchOnly: as kSketch without the centroid term (the previous default, for comparison).
//   kBound (DESIGN §5 as written, Quest): bound[t][h][i] = scale * sum_d max(q[t][h][d] *
//     min_i[g][d], q[t][h][d] * max_i[g][d]), an upper bound of scale * q.k over the page's keys,
//     normalised per row as a log-softmax over the candidates, and score[g][i] = the max over
//     the query heads of g and the query tokens. This is exactly CudaScorePages.
// On the default model the bound ranks pages poorly (the needle's pages are often not even in
// the bound's top 3k): passkey 4K at budget 1024, 20 cases, sparse÷dense 0.79 with the bound,
// 0.95 with the sketch, 1.00 with exact per-page attention mass (BENCHMARKS.md).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"

namespace kvtier::kernels {

// Recomputes the digest (min/max rows and sketch rows) of each page in `pages` from the keys of
// its tokens [0, n_tokens) (for pages filled by a copy, e.g. decoded from the host tier). A page
// with n_tokens 0 gets min = +inf, max = -inf. pool.digests must be set.
void UpdateDigests(const KvPool& pool, std::span<const PageRef> pages);

// kExact is a reference for the benchmarks, computed from the keys themselves (it reads every
// key, as dense attention does): as kSketch with every dimension in the sketch, i.e. each page's
// exact share of attention.
enum class ScoringMode { kSketch, kSketchOnly, kBound, kExact };

// score[g * cand.size() + i] as above (higher is better in both modes). q: [n_tokens][n_heads]
// [head_dim] f32 (unscaled). pool.digests must be set; head_dim <= 256, page_tokens <= 64.
void ScorePages(const KvPool& pool, std::span<const PageRef> cand, const float* q, int64_t n_tokens,
                int n_heads, float scale, float* scores, ThreadPool& threads,
                ScoringMode mode = ScoringMode::kSketch);

// The indices of the k largest scores[0, n) in increasing index order into index[0, k). Ties at
// the k-th value go to the lowest indices; NaN ranks below everything. 0 <= k <= n.
void TopK(const float* scores, int n, int k, int32_t* index);

// How a page list of n_pages splits: the first `sink` pages and the last `recent` pages always,
// and `k` of the `cand` pages between them by score per KV head — exactly k each
// (BudgetSplit::kPerHead), or n_kv_heads * k in all, shared among the heads by score
// (kShared), each head's list then padded to the longest: k_max candidates. selected() is the
// length of each head's list, padding included; `attended` counts the pages of all the heads'
// lists without the padding (SelectPages sets it; ShapeSelection leaves it 0).
struct SelectShape {
  int sink = 0, recent = 0, cand = 0, k = 0;
  int k_max = 0;
  int attended = 0;
  int selected() const { return sink + k_max + recent; }
  bool all() const { return k == cand; }  // nothing to choose: every page is selected
};
SelectShape ShapeSelection(int n_pages, int n_sink, int n_recent, int k_pages);

// How SelectPages divides a layer's candidate budget among its KV heads.
//   kPerHead: each head takes its own top k.
//   kShared (an engine option, not its default): the layer's n_kv_heads * k candidates go to the highest
//     (head, page) scores over all heads, each head's scores normalised over all its pages
//     (sink and recent included) so that they compare across heads: a head whose attention is
//     spread gets more pages, one that looks only at its sinks and recent window fewer. The
//     pages attended per layer are the same; lists are padded with empty refs (n_tokens 0,
//     first_pos INT32_MAX, the page of the list's first entry) that attention skips.
enum class BudgetSplit { kPerHead, kShared };

// Time spent in the last SelectPages call's stages, ms.
struct SelectProfile {
  double score_ms = 0;
  double select_ms = 0;  // top-k and assembling the lists
};

// The whole selection for one layer: for each KV head g, selected[g * n_sel, (g + 1) * n_sel)
// = the sink pages, its candidates chosen by ScorePages as `split` says, and the recent pages
// of `pages` (in position order), then any padding; n_sel = shape.selected(). Returns the shape.
SelectShape SelectPages(const KvPool& pool, std::span<const PageRef> pages, int n_sink,
                        int n_recent, int k_pages, const float* q, int64_t n_tokens, int n_heads,
                        float scale, std::vector<PageRef>* selected, ThreadPool& threads,
                        SelectProfile* profile = nullptr, ScoringMode mode = ScoringMode::kSketch,
                        BudgetSplit split = BudgetSplit::kPerHead);

}  // namespace kvtier::kernels
