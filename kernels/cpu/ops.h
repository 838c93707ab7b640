// kernels/cpu/ops.h — the CPU reference backend's operations.
//
// Thread safety: every function is safe to call concurrently on disjoint outputs. Functions
// taking a ThreadPool use it for the duration of the call (the pool itself is single-caller).
//
// Layouts: activations are row-major float32, one row per token. Weights are ggml-layout
// matrices: `rows` output features, each row `cols` input elements quantized in blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/cpu/thread_pool.h"
#include "kernels/dtype.h"

namespace kvtier::kernels {

// A weight matrix as stored in the model file (borrowed; the file mapping outlives it).
struct WeightView {
  DType type = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;       // output features
  int64_t cols = 0;       // input features (multiple of the type's block size)
  size_t row_bytes = 0;   // RowBytes(type, cols)
};

// How MatMul treats the activations of quantized weights.
//   kQ8: quantized to 8 bits per block and multiplied in integers, as llama.cpp does (fastest;
//     rounds every activation to 1/254 of its block's largest).
//   kF32: kept in float; weight blocks are dequantized and multiplied in float (Q8_0, Q4_0 and
//     Q4_1 at AVX2 speed; other quantized types with the scalar kernel). Float-weight types
//     always use float activations.
enum class MatMulActs { kQ8, kF32 };

// y[t][r] = sum_c W[r][c] * x[t][c]  for t in [0, n_tokens), r in [0, rows).
// x: [n_tokens][cols], y: [n_tokens][rows]. Works on the quantized data directly (activations
// as `acts` says). Uses AVX-512 or AVX2/FMA when the CPU has them (chosen at run time), scalar
// code otherwise.
void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatMulActs acts = MatMulActs::kQ8);

// Several matrices applied to the same activations (e.g. Q, K and V): the activations are
// quantized once and all rows are split across the threads in one fork-join. ys[i] receives
// [n_tokens][ws[i].rows]. All ws must have the same cols; differing types fall back to one
// MatMul each.
void MatMulMany(std::span<const WeightView> ws, const float* x, int64_t n_tokens,
                std::span<float* const> ys, ThreadPool& pool, MatMulActs acts = MatMulActs::kQ8);

// Copies row `row` of `w` dequantized into `out` (cols floats): the embedding lookup.
void GetRow(const WeightView& w, int64_t row, float* out);

// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight   (x, out: [n_tokens][dim]; may alias).
void RmsNorm(const float* x, const float* weight, int64_t n_tokens, int64_t dim, float eps,
             float* out);

// Rotary embedding in place, "normal" (adjacent-pair) mode as llama-architecture GGUFs need:
// for each token t, head h, and i in [0, head_dim/2): the pair (x[2i], x[2i+1]) is rotated by
// angle positions[t] * freq_scale * freq_base^(-2i/head_dim).
// x: [n_tokens][n_heads][head_dim].
void RopeInPlace(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* positions,
                 float freq_base, float freq_scale);

// out[i] = silu(gate[i]) * up[i]; may alias gate.
void SwiGlu(const float* gate, const float* up, int64_t n, float* out);

// y[i] += x[i]
void AddInPlace(float* y, const float* x, int64_t n);

// Numerically stable softmax in place.
void SoftmaxInPlace(float* x, int64_t n);

// ---- Paged KV -----------------------------------------------------------------------------
//
// KV lives in fixed-size pages of a pool. One page holds `page_tokens` tokens of one layer for
// all KV heads: first the keys, then the values, each laid out [kv_head][token][head_dim] in
// IEEE f16. Keys are stored after RoPE. Page p starts at base + p * PageBytes().
//
// Digests (DESIGN §4, retrieval attention): when `digests` is set, page p's digest is at
// digests + p * DigestHalfs(), per KV head g at DigestHead(p, g) (DigestHeadHalfs() f16):
//   [0, head_dim)              the element-wise min of the keys in the page's filled slots,
//   [head_dim, 2 * head_dim)   their max (rows 0 and 1: the layout of kernels/cuda/cuda_paged.h),
//   then SketchDims() x page_tokens f16 (dimension-major, see Sketch()): the key *sketch*, each
//   slot's key restricted to its last SketchDims() dimensions — the lowest RoPE frequencies
//   (rotation pairs (2i, 2i+1) with frequency base^(-2i/head_dim)), which carry the
//   position-independent part of q.k that long-range retrieval depends on;
//   then CentroidDims() f16 (see Centroid()): the mean over the filled slots of the keys' other,
//   higher-frequency dimensions [0, CentroidDims()), which scoring adds as q . centroid.
//   Scoring pages from sketch + centroid estimates each page's share of attention far better
//   than the min/max bound on this model (BENCHMARKS.md, retrieval).
// Min and max of f16 keys are f16 values, so they are exact; the centroid is a running mean
// rounded to f16 after each slot (UpdateCentroid). WriteKv keeps the digest current;
// kernels/cpu/retrieval.h recomputes it for pages filled by a copy (bit for bit the same) and
// scores it.
struct KvPool {
  uint16_t* base = nullptr;
  int page_tokens = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
  uint16_t* digests = nullptr;  // optional, indexed by page id like base
  // Optional, for scoring only: page p's digest is at digest_table[p] instead of in `digests`
  // (the forward pass scores hot and cold pages alike through it, without gathering copies).
  // The digests it points to are only read.
  uint16_t* const* digest_table = nullptr;

  size_t HalfElems() const {  // elements of K (or of V) in one page
    return static_cast<size_t>(page_tokens) * n_kv_heads * head_dim;
  }
  size_t PageBytes() const { return 2 * HalfElems() * sizeof(uint16_t); }
  uint16_t* K(int32_t page) const { return base + static_cast<size_t>(page) * 2 * HalfElems(); }
  uint16_t* V(int32_t page) const { return K(page) + HalfElems(); }
  int SketchDims() const { return head_dim / 4; }
  int CentroidDims() const { return head_dim - SketchDims(); }
  size_t DigestHeadHalfs() const {
    return 2 * static_cast<size_t>(head_dim) + static_cast<size_t>(page_tokens) * SketchDims() +
           static_cast<size_t>(CentroidDims());
  }
  size_t DigestHalfs() const { return static_cast<size_t>(n_kv_heads) * DigestHeadHalfs(); }
  uint16_t* Digest(int32_t page) const {
    return digest_table != nullptr ? digest_table[page]
                                   : digests + static_cast<size_t>(page) * DigestHalfs();
  }
  uint16_t* DigestHead(int32_t page, int kv_head) const {
    return Digest(page) + static_cast<size_t>(kv_head) * DigestHeadHalfs();
  }
  // The key sketch of a head digest, dimension-major: slot j's value of sketch dimension d
  // (key dimension head_dim - SketchDims() + d) is at Sketch(hd)[d * page_tokens + j], so one
  // vector load reads a dimension for consecutive slots.
  uint16_t* Sketch(uint16_t* head_digest) const {
    return head_digest + 2 * static_cast<size_t>(head_dim);
  }
  // Writes slot `slot`'s sketch from its f16 key row (head_dim values).
  void SetSketch(uint16_t* head_digest, int slot, const uint16_t* key) const {
    uint16_t* sk = Sketch(head_digest) + slot;
    const uint16_t* src = key + head_dim - SketchDims();
    for (int d = 0; d < SketchDims(); ++d) sk[static_cast<size_t>(d) * page_tokens] = src[d];
  }
  // The centroid of a head digest: CentroidDims() f16, the mean of dims [0, CentroidDims()) of
  // the keys in the page's filled slots.
  uint16_t* Centroid(uint16_t* head_digest) const {
    return Sketch(head_digest) + static_cast<size_t>(page_tokens) * SketchDims();
  }
  // Folds slot `slot`'s f16 key row into the centroid as the (slot + 1)-th value of a running
  // mean: c = f16(c + (key - c) / (slot + 1)) per dimension; slot 0 restarts it (c = key). Pages
  // fill in slot order, so the same sequence of calls (WriteKv, UpdateDigests) gives the same
  // bits.
  void UpdateCentroid(uint16_t* head_digest, int slot, const uint16_t* key) const;
};

// One page of a sequence as attention sees it: tokens [0, n_tokens) of `page` hold positions
// first_pos .. first_pos + n_tokens - 1.
struct PageRef {
  int32_t page = 0;
  int32_t first_pos = 0;
  int32_t n_tokens = 0;
};

// Stores k, v ([n_tokens][n_kv_heads*head_dim], f32) as f16 into the pool: token t goes to page
// slots[t].page at slot index slots[t].first_pos (slots[t].n_tokens is ignored).
// With pool.digests set, each written key also updates its page's digest: a write to slot 0
// restarts the digest from that key, a write to slot s > 0 widens it (pages fill in slot order;
// a slot rewritten without rewriting slot 0 leaves a looser, still valid, bound).
void WriteKv(const KvPool& pool, std::span<const PageRef> slots, const float* k, const float* v,
             int64_t n_tokens);

// Causal attention over pages. q: [n_tokens][n_heads][head_dim]; query t attends to every key
// in `pages` whose position is <= q_pos[t]. Query head h uses KV head h / (n_heads/n_kv_heads).
// out: [n_tokens][n_heads][head_dim]. scale is usually 1/sqrt(head_dim). `pages` are in
// position order and the same for every head (sparse per-head page lists come later).
void PagedAttention(const KvPool& pool, std::span<const PageRef> pages, const float* q,
                    const int32_t* q_pos, int64_t n_tokens, int n_heads, float scale, float* out,
                    ThreadPool& threads);

// Sparse attention (DESIGN §5): as PagedAttention, but KV head g (with its query heads) attends
// over its own list pages[g * pages_per_head, (g + 1) * pages_per_head), in position order
// (kernels/cpu/retrieval.h SelectPages writes such lists). pages.size() must be
// n_kv_heads * pages_per_head.
void PagedAttentionPerKvHead(const KvPool& pool, std::span<const PageRef> pages, int pages_per_head,
                             const float* q, const int32_t* q_pos, int64_t n_tokens, int n_heads,
                             float scale, float* out, ThreadPool& threads);

// Which SIMD level the kernels run with on this CPU: "avx512", "avx2" or "scalar".
const char* CpuKernelLevel();

}  // namespace kvtier::kernels
