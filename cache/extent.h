// cache/extent.h — extents: 4 consecutive pages (64 tokens) of every layer of one sequence, the
// unit that codecs compress, tiers store and the prefix index addresses (DESIGN §4).
//
// Thread safety: ExtentShape and ExtentView are values. An ExtentView borrows the pages of a
// PagePool; reading or writing through it follows the pool's rule (the engine's compute thread
// owns the pool), and two views of disjoint pages may be used from different threads.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "cache/page_pool.h"
#include "kernels/cpu/ops.h"

namespace kvtier::cache {

inline constexpr int kExtentPages = 4;

struct ExtentShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int page_tokens = 16;
  int extent_pages = kExtentPages;

  int tokens() const { return page_tokens * extent_pages; }
  // Elements of K (or of V) of one layer: [kv_head][tokens][head_dim].
  size_t HalfElemsPerLayer() const { return static_cast<size_t>(n_kv_heads) * tokens() * head_dim; }
  // The extent's K and V of all layers in f16: what codec f16 stores (its payload size).
  size_t RawBytes() const { return static_cast<size_t>(n_layers) * 2 * HalfElemsPerLayer() * 2; }
  // Positive fields, head_dim even (q4 packs pairs) and sizes that fit the codec header.
  Status Validate() const;
  bool operator==(const ExtentShape&) const = default;
};

// The extent shape a pool's pages give for a model of n_layers layers.
ExtentShape ExtentShapeOf(const kernels::KvPool& pool, int n_layers);

// Borrowed view of one extent's pages: page `i` (0..extent_pages-1) of layer `l` is
// pages[l * extent_pages + i]. Token t (0..tokens-1) of the extent lives in page t / page_tokens,
// slot t % page_tokens. The pool's pages must stay allocated while the view is used.
struct ExtentView {
  kernels::KvPool pool;
  ExtentShape shape;
  std::span<const int32_t> pages;  // n_layers * extent_pages page ids

  // Row of head_dim f16 keys (values) of `token` of kv head `head` in `layer`.
  uint16_t* KRow(int layer, int head, int token) const { return Row(layer, head, token, false); }
  uint16_t* VRow(int layer, int head, int token) const { return Row(layer, head, token, true); }
  uint16_t* Row(int layer, int head, int token, bool value) const {
    const int32_t page =
        pages[static_cast<size_t>(layer) * shape.extent_pages + token / shape.page_tokens];
    uint16_t* base = value ? pool.V(page) : pool.K(page);
    return base + (static_cast<size_t>(head) * shape.page_tokens + token % shape.page_tokens) *
                      shape.head_dim;
  }
  // The view's shape matches its pool and it lists the right number of pages, all >= 0.
  Status Validate() const;
};

// The page ids of extent `extent_index` (tokens [64*i, 64*i+64)) of a sequence, layer-major as
// ExtentView wants them. InvalidArgument when a layer's table does not cover the whole extent.
Result<std::vector<int32_t>> ExtentPageIds(std::span<const std::vector<int32_t>> page_tables,
                                           int64_t extent_index, int extent_pages = kExtentPages);

// Number of whole extents in n_tokens tokens.
inline int64_t WholeExtents(int64_t n_tokens, int extent_tokens = kExtentPages * 16) {
  return n_tokens / extent_tokens;
}

// Copies the extent's K/V into `out` (RawBytes()/2 halves), laid out
// [layer][K, V][kv_head][token][head_dim] f16 — the f16 codec's payload layout.
Status GatherExtent(const ExtentView& src, std::span<uint16_t> out);
// The inverse: writes `in` (same layout) into the view's pages, and nothing else.
Status ScatterExtent(std::span<const uint16_t> in, const ExtentView& dst);

// Fresh pages for one extent of n_layers layers from `pool` (layer-major page ids). All or
// nothing: on ResourceExhausted no page stays allocated.
Result<std::vector<int32_t>> AllocateExtentPages(PagePool& pool, int n_layers,
                                                 int extent_pages = kExtentPages);

}  // namespace kvtier::cache
