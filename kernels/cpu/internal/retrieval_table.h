// kernels/cpu/internal/retrieval_table.h — the per-SIMD-level entry points of the retrieval
// attention kernels (page digests and digest bounds), instantiated from retrieval_impl.h.
//
// Thread safety: pure functions; each writes only the output it is given.
#pragma once

#include <cstdint>

#include "kernels/cpu/ops.h"

namespace kvtier::kernels::internal {

struct RetrievalTable {
  // digest: [2][head_dim] f16 (min row, max row) of one page and KV head; key: one f16 key row.
  // first: the digest becomes (key, key); otherwise it is widened to include key.
  void (*digest_update)(const uint16_t* key, int head_dim, uint16_t* digest, bool first);
  // For pages[0, n_pages) and KV head kv_head of `pool` (pool.digests set), and query rows
  // q[r * head_dim ..] (r < n_rows, already scaled):
  //   out[r * out_stride + i] = sum_d max(q[r][d] * min_i[d], q[r][d] * max_i[d]).
  void (*bounds)(const KvPool& pool, const PageRef* pages, int n_pages, int kv_head, const float* q,
                 int n_rows, float* out, int64_t out_stride);
  // scores[i] = max(scores[i], b[i] - logsumexp(b[0, n))) for i < n (one head's normalised
  // bounds folded into its KV head's scores).
  void (*fold_log_softmax)(const float* b, int n, float* scores);
  // As bounds, from the key sketches (KvPool::Sketch): out[r * out_stride + i] = logsumexp
  // over page i's filled slots j of sum_d q[r][head_dim - sd + d] * sketch_i[j][d] (-inf for an
  // empty page), plus, with `centroid`, sum_d q[r][d] * centroid_i[d] (KvPool::Centroid).
  void (*sketch_lse)(const KvPool& pool, const PageRef* pages, int n_pages, int kv_head,
                     const float* q, int n_rows, float* out, int64_t out_stride, bool centroid);
  // scores[i] += exp(b[i] - logsumexp(b[0, n))) for i < n.
  void (*fold_softmax_sum)(const float* b, int n, float* scores);
};

const RetrievalTable& ScalarRetrievalTable();
const RetrievalTable& Avx2RetrievalTable();
const RetrievalTable& Avx512RetrievalTable();

// The table for CurrentOpsLevel() (the ops' level: one switch for all CPU kernels).
const RetrievalTable& CurrentRetrievalTable();

}  // namespace kvtier::kernels::internal
