// kernels/cuda/cuda_paged.h — paged-KV operations on CUDA: KV writes, page lists, blockwise
// (flash-style) prefill attention, Quest page digests, page scoring and top-k selection.
//
// Thread safety and conventions as kernels/cuda/cuda_ops.h: d_* are device pointers, `stream`
// is a cudaStream_t, launchers enqueue without synchronizing and never allocate (workspaces are
// sized by the *WorkspaceBytes planning functions and passed in).
//
// Layouts (all device memory):
//   pool:      KvPool (kernels/cpu/ops.h): page p at base + p * PageBytes(); K then V, each
//              [kv_head][token][head_dim] f16.
//   page table: [n_pages] int32 page ids of one layer for positions [0, 16), [16, 32), ...
//   PageRef lists: [n] PageRef in position order.
//   digests:   per pool page p at d_digests + p * DigestHalfs(pool): [kv_head][2][head_dim] f16,
//              the element-wise min (row 0) and max (row 1) of the page's keys (DESIGN §4). Min
//              and max of f16 keys are f16 values, so the digest is exact.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/status.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_ops.h"  // DecodeStep

namespace kvtier::kernels::cuda {

// f16 elements of one page's digest: n_kv_heads * 2 * head_dim.
inline size_t DigestHalfs(const KvPool& pool) {
  return static_cast<size_t>(pool.n_kv_heads) * 2 * pool.head_dim;
}

// refs[l * refs_stride + p] = {tables[l * table_stride + p], p * page_tokens,
//                              min(page_tokens, total_tokens - p * page_tokens)}
// for l < n_layers, p < ceil(total_tokens / page_tokens): the PageRef lists attention reads,
// built on the device from the page tables.
Status CudaBuildPageRefs(const int32_t* d_tables, int64_t table_stride, int n_layers,
                         int32_t total_tokens, int page_tokens, PageRef* d_refs,
                         int64_t refs_stride, void* stream);

// Stores k, v ([n_tokens][n_kv_heads * head_dim] f32) as f16 into the pool, as WriteKv: token t
// at position positions[t] goes to page table[positions[t] / page_tokens], slot
// positions[t] % page_tokens.
Status CudaWriteKv(const KvPool& pool, const int32_t* d_table, const int32_t* d_positions,
                   const float* d_k, const float* d_v, int64_t n_tokens, void* stream);

// Recomputes the digest of each page in d_pages[0, n_pages) from its keys in the pool (tokens
// [0, n_tokens) of the PageRef). Pages with n_tokens 0 get min = +inf, max = -inf.
Status CudaUpdateDigests(const KvPool& pool, const PageRef* d_pages, int n_pages,
                         uint16_t* d_digests, void* stream);

// Causal attention of many query tokens over pages, computed blockwise with an online softmax
// (flash-attention style): memory use is independent of the context length, no score matrix is
// formed. Same contract as PagedAttention (kernels/cpu/ops.h):
//   d_q: [n_tokens][n_heads][head_dim] f32; d_q_pos: [n_tokens] int32; d_out like d_q.
// Query head h uses KV head h / (n_heads / n_kv_heads); a query sees keys with position <= its
// own. head_dim <= 256. No workspace.
Status CudaPagedAttentionPrefill(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                 const float* d_q, const int32_t* d_q_pos, int64_t n_tokens,
                                 int n_heads, float scale, float* d_out, void* stream);

// ---- Decode steps with the context length on the device (CUDA graph replay) ----------------
// refs[l * refs_stride + n - 1] for every layer l < n_layers, n = d_step->n_pages: the ref of
// the page the step's token goes to, as CudaBuildPageRefs(total = d_step->total) would write
// it. The refs of the earlier pages must already be in place.
Status CudaAppendPageRef(const int32_t* d_tables, int64_t table_stride, int n_layers,
                         const DecodeStep* d_step, int page_tokens, PageRef* d_refs,
                         int64_t refs_stride, void* stream);
// CudaUpdateDigests of the step's page, d_refs[l * refs_stride + d_step->n_pages - 1], in every
// layer l < n_layers: one launch after the step's K/V writes (a dense step reads no digest).
Status CudaUpdateStepDigests(const KvPool& pool, const PageRef* d_refs, int64_t refs_stride,
                             int n_layers, const DecodeStep* d_step, uint16_t* d_digests,
                             void* stream);

// ---- Sparse attention: page scoring and selection (DESIGN §5) ------------------------------
//
// For one decode query q ([n_heads][head_dim] f32) and candidate pages d_pages[0, n_cand):
//   bound[h][i] = scale * sum_d max(q[h][d] * min_i[g][d], q[h][d] * max_i[g][d]),  g = KV head
//   of h: an upper bound of scale * q.k for every key of page i (Quest);
//   normalised per head as a log-softmax over the candidates:
//   nb[h][i] = bound[h][i] - logsumexp_i(bound[h][i]);
//   score[g][i] = max over the query heads h of KV head g of nb[h][i].
// d_scores: [n_kv_heads][n_cand] f32. Workspace: CudaScorePagesWorkspaceBytes. head_dim must be
// a multiple of 8 and d_digests 16-byte aligned (the digest is read with 16-byte loads, once per
// KV head for all its query heads).
size_t CudaScorePagesWorkspaceBytes(int n_heads, int n_cand);
Status CudaScorePages(const KvPool& pool, const uint16_t* d_digests, const PageRef* d_pages,
                      int n_cand, const float* d_q, int n_heads, float scale, float* d_scores,
                      void* d_workspace, void* stream);

// Per KV head g: the indices of the k largest d_scores[g][0, n) in increasing index order, into
// d_index[g * k, (g + 1) * k). Ties at the k-th value go to the lowest indices. 0 < k <= n.
// Long lists (n >= 16384, k <= 8192) run in two stages (per 8192-score tile, then over the
// tiles' winners) and need CudaTopKWorkspaceBytes(n_kv_heads, n, k) bytes of d_workspace
// (0 otherwise, when d_workspace may be null).
size_t CudaTopKWorkspaceBytes(int n_kv_heads, int n, int k);
Status CudaTopK(const float* d_scores, int n_kv_heads, int n, int k, int32_t* d_index,
                void* d_workspace, void* stream);

// The whole selection for one layer: the first n_sink pages and the last n_recent pages of
// d_pages[0, n_pages) always, plus the top k_pages of the pages between them by score. Writes
// d_selected[g * n_sel, (g + 1) * n_sel) for each KV head g, in position order, with
// n_sel = CudaSelectedPages(...); feed it to CudaPagedAttentionDecodePerKvHead.
// Workspace: CudaSelectPagesWorkspaceBytes(n_heads, n_kv_heads, n_pages).
int CudaSelectedPages(int n_pages, int n_sink, int n_recent, int k_pages);
size_t CudaSelectPagesWorkspaceBytes(int n_heads, int n_kv_heads, int n_pages);
Status CudaSelectPages(const KvPool& pool, const uint16_t* d_digests, const PageRef* d_pages,
                       int n_pages, int n_sink, int n_recent, int k_pages, const float* d_q,
                       int n_heads, float scale, PageRef* d_selected, void* d_workspace,
                       void* stream);

}  // namespace kvtier::kernels::cuda
