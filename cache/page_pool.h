// cache/page_pool.h — fixed-size KV pages in one reserved arena, and per-sequence page tables.
//
// Thread safety: not thread-safe. A PagePool and the SequenceKv objects drawing on it belong to
// the engine's compute thread.
//
// The arena is reserved once (virtual address space, MAP_NORESERVE) for the configured
// capacity, so page addresses never move and memory is only committed for pages that are used.
// A second reservation holds every page's key digest (kernels::KvPool::digests, 768 bytes per
// page for the default model, 6% of a page): view().digests is always set, WriteKv keeps the
// digests of written pages current, and pages filled by a copy (promoted from a lower tier)
// need kernels::UpdateDigests.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "kernels/cpu/ops.h"

namespace kvtier::cache {

struct PageShape {
  int page_tokens = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
};

class PagePool {
 public:
  // capacity_bytes is rounded down to whole pages; at least one page.
  static Result<std::unique_ptr<PagePool>> Create(const PageShape& shape, uint64_t capacity_bytes);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  const kernels::KvPool& view() const { return view_; }
  size_t page_bytes() const { return view_.PageBytes(); }
  int64_t capacity_pages() const { return capacity_pages_; }
  int64_t used_pages() const { return used_pages_; }
  int64_t free_pages() const { return capacity_pages_ - used_pages_; }

  // A free page id holding one reference, or ResourceExhausted when the pool is full.
  Result<int32_t> Allocate();
  // Pages are reference counted so a cached prefix can be shared by several sequences and the
  // device tier without copies: Ref adds a holder, Free drops one and returns the page to the
  // pool when none is left.
  void Ref(int32_t page);
  void Free(int32_t page);
  int32_t refs(int32_t page) const { return refs_[page]; }

 private:
  PagePool() = default;
  kernels::KvPool view_;
  void* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  void* digests_ = nullptr;  // view_.digests: DigestHalfs() f16 per page
  size_t digest_bytes_ = 0;
  int64_t capacity_pages_ = 0;
  int64_t used_pages_ = 0;
  int32_t next_fresh_ = 0;          // pages [next_fresh_, capacity) were never handed out
  std::vector<int32_t> free_list_;  // returned pages, reused first (LIFO: warm in cache)
  std::vector<int32_t> refs_;       // holders of each page handed out
};

// The page tables of one sequence: for each layer, the pages holding positions
// [0, page_tokens), [page_tokens, 2*page_tokens), ... Frees its pages on destruction.
class SequenceKv {
 public:
  SequenceKv(PagePool& pool, int n_layers);
  ~SequenceKv();
  SequenceKv(const SequenceKv&) = delete;
  SequenceKv& operator=(const SequenceKv&) = delete;

  // Makes sure every layer has pages for positions [0, n_tokens). On ResourceExhausted nothing
  // that was already reserved is lost.
  Status Reserve(int64_t n_tokens);
  // Drops pages wholly beyond n_tokens (the tokens after n_tokens are forgotten).
  void Truncate(int64_t n_tokens);
  // Starts an empty sequence with shared pages (a cached prefix): tables[l] are layer l's
  // pages for positions [0, 16 * tables[l].size()). Each page gains a reference; those pages
  // must not be written (their tokens are already computed). Entries < 0 are cold pages (a
  // lower tier holds them, cache/tier_manager.h ColdEntry): kept as they are, never freed.
  // InvalidArgument unless the
  // sequence is empty and every layer gets the same number of pages.
  Status AdoptPrefix(std::span<const std::vector<int32_t>> tables);

  int64_t capacity_tokens() const;
  std::span<const std::vector<int32_t>> page_tables() const { return tables_; }
  PagePool& pool() { return pool_; }

 private:
  PagePool& pool_;
  std::vector<std::vector<int32_t>> tables_;
};

}  // namespace kvtier::cache
