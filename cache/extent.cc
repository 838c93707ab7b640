#include "cache/extent.h"

#include <cstring>
#include <string>

namespace kvtier::cache {

Status ExtentShape::Validate() const {
  if (n_layers <= 0 || n_kv_heads <= 0 || head_dim <= 0 || page_tokens <= 0 || extent_pages <= 0) {
    return InvalidArgumentError("extent shape: every dimension must be positive");
  }
  if (n_layers > 65535 || n_kv_heads > 65535 || head_dim > 65535 || page_tokens > 65535 ||
      extent_pages > 65535 || tokens() > 65535) {
    return InvalidArgumentError("extent shape: a dimension exceeds 65535");
  }
  if (head_dim % 2 != 0) return InvalidArgumentError("extent shape: head_dim must be even");
  // Header lengths are 32-bit; keep generous headroom for codec scales.
  if (RawBytes() > (uint64_t{1} << 30)) {
    return InvalidArgumentError("extent shape: an extent over 1 GiB is not supported");
  }
  return Status::Ok();
}

ExtentShape ExtentShapeOf(const kernels::KvPool& pool, int n_layers) {
  ExtentShape s;
  s.n_layers = n_layers;
  s.n_kv_heads = pool.n_kv_heads;
  s.head_dim = pool.head_dim;
  s.page_tokens = pool.page_tokens;
  s.extent_pages = kExtentPages;
  return s;
}

Status ExtentView::Validate() const {
  RETURN_IF_ERROR(shape.Validate());
  if (pool.base == nullptr || pool.n_kv_heads != shape.n_kv_heads ||
      pool.head_dim != shape.head_dim || pool.page_tokens != shape.page_tokens) {
    return InvalidArgumentError("extent view: shape does not match the page pool");
  }
  if (pages.size() != static_cast<size_t>(shape.n_layers) * shape.extent_pages) {
    return InvalidArgumentError("extent view: expected " +
                                std::to_string(shape.n_layers * shape.extent_pages) +
                                " pages, got " + std::to_string(pages.size()));
  }
  for (int32_t p : pages) {
    if (p < 0) return InvalidArgumentError("extent view: negative page id");
  }
  return Status::Ok();
}

Result<std::vector<int32_t>> ExtentPageIds(std::span<const std::vector<int32_t>> page_tables,
                                           int64_t extent_index, int extent_pages) {
  if (extent_index < 0 || extent_pages <= 0) {
    return InvalidArgumentError("extent pages: negative extent index");
  }
  std::vector<int32_t> ids;
  ids.reserve(page_tables.size() * extent_pages);
  const size_t first = static_cast<size_t>(extent_index) * extent_pages;
  for (size_t l = 0; l < page_tables.size(); ++l) {
    if (page_tables[l].size() < first + extent_pages) {
      return InvalidArgumentError("extent pages: layer " + std::to_string(l) + " has " +
                                  std::to_string(page_tables[l].size()) + " pages, extent " +
                                  std::to_string(extent_index) + " needs " +
                                  std::to_string(first + extent_pages));
    }
    for (int i = 0; i < extent_pages; ++i) ids.push_back(page_tables[l][first + i]);
  }
  return ids;
}

Status GatherExtent(const ExtentView& src, std::span<uint16_t> out) {
  RETURN_IF_ERROR(src.Validate());
  const ExtentShape& s = src.shape;
  if (out.size() * 2 != s.RawBytes()) return InvalidArgumentError("gather: wrong output size");
  uint16_t* o = out.data();
  const size_t row_bytes = static_cast<size_t>(s.head_dim) * 2;
  for (int l = 0; l < s.n_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < s.n_kv_heads; ++h) {
        for (int t = 0; t < s.tokens(); ++t, o += s.head_dim) {
          std::memcpy(o, src.Row(l, h, t, kv == 1), row_bytes);
        }
      }
    }
  }
  return Status::Ok();
}

Status ScatterExtent(std::span<const uint16_t> in, const ExtentView& dst) {
  RETURN_IF_ERROR(dst.Validate());
  const ExtentShape& s = dst.shape;
  if (in.size() * 2 != s.RawBytes()) return InvalidArgumentError("scatter: wrong input size");
  const uint16_t* i = in.data();
  const size_t row_bytes = static_cast<size_t>(s.head_dim) * 2;
  for (int l = 0; l < s.n_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < s.n_kv_heads; ++h) {
        for (int t = 0; t < s.tokens(); ++t, i += s.head_dim) {
          std::memcpy(dst.Row(l, h, t, kv == 1), i, row_bytes);
        }
      }
    }
  }
  return Status::Ok();
}

Result<std::vector<int32_t>> AllocateExtentPages(PagePool& pool, int n_layers, int extent_pages) {
  const int64_t need = static_cast<int64_t>(n_layers) * extent_pages;
  if (n_layers <= 0 || extent_pages <= 0) {
    return InvalidArgumentError("extent pages: n_layers and extent_pages must be positive");
  }
  if (need > pool.free_pages()) {
    return ResourceExhaustedError("KV page pool full: an extent needs " + std::to_string(need) +
                                  " pages, " + std::to_string(pool.free_pages()) + " free");
  }
  std::vector<int32_t> ids;
  ids.reserve(need);
  for (int64_t i = 0; i < need; ++i) {
    Result<int32_t> p = pool.Allocate();
    if (!p.ok()) {
      for (int32_t got : ids) pool.Free(got);
      return p.status();
    }
    ids.push_back(*p);
  }
  return ids;
}

}  // namespace kvtier::cache
