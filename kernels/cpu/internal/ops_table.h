// kernels/cpu/internal/ops_table.h — the per-SIMD-level entry points of the elementwise ops and
// of the attention block kernel, and the work description the attention driver hands them.
//
// Thread safety: the table functions are pure; the attention kernel writes only the output
// buffers it is given and uses thread_local scratch.
#pragma once

#include <cstdint>

#include "kernels/cpu/internal/ops_level.h"
#include "kernels/cpu/ops.h"

namespace kvtier::kernels::internal {

// What PagedAttention was asked (see ops.h), with the group size resolved.
struct AttnProblem {
  const KvPool* pool = nullptr;
  const PageRef* pages = nullptr;
  int n_pages = 0;
  // KV head g reads pages + g * head_pages_stride (0: one list shared by every head).
  int64_t head_pages_stride = 0;
  const float* q = nullptr;        // [n_tokens][n_heads][head_dim]
  const int32_t* q_pos = nullptr;  // [n_tokens]
  int64_t n_tokens = 0;
  int n_heads = 0;
  int group = 1;  // query heads per KV head
  float scale = 1.0f;
};

// One unit of attention work: KV head `kv_head` (all `group` query heads that use it), query
// tokens [t_begin, t_end), pages [p_begin, p_end) of AttnProblem::pages. Its rows are ordered
// row = (t - t_begin) * group + g for query head kv_head * group + g.
struct AttnItem {
  int kv_head = 0;
  int64_t t_begin = 0;
  int64_t t_end = 0;
  int p_begin = 0;
  int p_end = 0;
};

// Output of one item, per row: the running max m (of scaled scores), the sum l of exp(s - m),
// and o = sum exp(s - m) * v, unnormalised ([rows][head_dim]). A row that saw no visible key
// has m = -inf, l = 0, o = 0.
struct AttnPartial {
  float* o = nullptr;
  float* m = nullptr;
  float* l = nullptr;
};

struct OpsTable {
  void (*rms_norm)(const float* x, const float* weight, int64_t n_tokens, int64_t dim, float eps,
                   float* out);
  void (*swiglu)(const float* gate, const float* up, int64_t n, float* out);
  void (*add)(float* y, const float* x, int64_t n);
  void (*softmax)(float* x, int64_t n);
  // Converts n floats to f16 (round to nearest even).
  void (*to_f16)(const float* x, int64_t n, uint16_t* out);
  void (*attend)(const AttnProblem& problem, const AttnItem& item, const AttnPartial& out);
};

const OpsTable& ScalarOpsTable();
const OpsTable& Avx2OpsTable();
const OpsTable& Avx512OpsTable();

// The table for CurrentOpsLevel().
const OpsTable& CurrentOpsTable();

}  // namespace kvtier::kernels::internal
