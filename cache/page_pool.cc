#include "cache/page_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace kvtier::cache {

Result<std::unique_ptr<PagePool>> PagePool::Create(const PageShape& shape,
                                                   uint64_t capacity_bytes) {
  if (shape.page_tokens <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0) {
    return InvalidArgumentError("page pool: page shape must be positive");
  }
  std::unique_ptr<PagePool> p(new PagePool());
  p->view_.page_tokens = shape.page_tokens;
  p->view_.n_kv_heads = shape.n_kv_heads;
  p->view_.head_dim = shape.head_dim;
  const size_t page_bytes = p->view_.PageBytes();
  const uint64_t pages = capacity_bytes / page_bytes;
  if (pages == 0) {
    return InvalidArgumentError("page pool: capacity " + std::to_string(capacity_bytes) +
                                " bytes is smaller than one page (" + std::to_string(page_bytes) +
                                " bytes)");
  }
  if (pages > static_cast<uint64_t>(INT32_MAX)) {
    return InvalidArgumentError("page pool: capacity exceeds 2^31 pages");
  }
  p->capacity_pages_ = static_cast<int64_t>(pages);
  p->arena_bytes_ = pages * page_bytes;
  void* mem = mmap(nullptr, p->arena_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    return ResourceExhaustedError("page pool: cannot reserve " + std::to_string(p->arena_bytes_) +
                                  " bytes: " + std::strerror(errno));
  }
  p->arena_ = mem;
  p->view_.base = static_cast<uint16_t*>(mem);
  // Page digests (retrieval attention, DESIGN §4): resident for every page, next to the arena.
  p->digest_bytes_ = pages * p->view_.DigestHalfs() * sizeof(uint16_t);
  void* dig = mmap(nullptr, p->digest_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (dig == MAP_FAILED) {
    return ResourceExhaustedError("page pool: cannot reserve " +
                                  std::to_string(p->digest_bytes_) +
                                  " bytes of page digests: " + std::strerror(errno));
  }
  p->digests_ = dig;
  p->view_.digests = static_cast<uint16_t*>(dig);
  p->refs_.assign(static_cast<size_t>(pages), 0);
  return p;
}

PagePool::~PagePool() {
  if (arena_ != nullptr) munmap(arena_, arena_bytes_);
  if (digests_ != nullptr) munmap(digests_, digest_bytes_);
}

Result<int32_t> PagePool::Allocate() {
  int32_t page;
  if (!free_list_.empty()) {
    page = free_list_.back();
    free_list_.pop_back();
  } else if (next_fresh_ < capacity_pages_) {
    page = next_fresh_++;
  } else {
    return ResourceExhaustedError("KV page pool full (" + std::to_string(capacity_pages_) +
                                  " pages of " + std::to_string(page_bytes()) + " bytes)");
  }
  ++used_pages_;
  refs_[page] = 1;
  return page;
}

void PagePool::Ref(int32_t page) {
  KVTIER_CHECK(page >= 0 && page < next_fresh_ && refs_[page] > 0);
  ++refs_[page];
}

void PagePool::Free(int32_t page) {
  KVTIER_CHECK(page >= 0 && page < next_fresh_ && refs_[page] > 0);
  if (--refs_[page] > 0) return;
  free_list_.push_back(page);
  --used_pages_;
}

SequenceKv::SequenceKv(PagePool& pool, int n_layers) : pool_(pool), tables_(n_layers) {}

SequenceKv::~SequenceKv() { Truncate(0); }

int64_t SequenceKv::capacity_tokens() const {
  return tables_.empty() ? 0
                         : static_cast<int64_t>(tables_[0].size()) * pool_.view().page_tokens;
}

Status SequenceKv::Reserve(int64_t n_tokens) {
  const int page_tokens = pool_.view().page_tokens;
  const size_t pages = static_cast<size_t>((n_tokens + page_tokens - 1) / page_tokens);
  if (!tables_.empty() && tables_[0].size() >= pages) return Status::Ok();
  const size_t have = tables_.empty() ? 0 : tables_[0].size();
  const int64_t need = static_cast<int64_t>((pages - have) * tables_.size());
  if (need > pool_.free_pages()) {
    return ResourceExhaustedError("KV page pool full: " + std::to_string(n_tokens) +
                                  " tokens need " + std::to_string(need) + " more pages, " +
                                  std::to_string(pool_.free_pages()) + " free");
  }
  for (auto& table : tables_) {
    while (table.size() < pages) {
      ASSIGN_OR_RETURN(int32_t page, pool_.Allocate());
      table.push_back(page);
    }
  }
  return Status::Ok();
}

Status SequenceKv::AdoptPrefix(std::span<const std::vector<int32_t>> tables) {
  if (tables.size() != tables_.size()) {
    return InvalidArgumentError("adopt prefix: " + std::to_string(tables.size()) +
                                " layers given, sequence has " + std::to_string(tables_.size()));
  }
  for (size_t l = 0; l < tables.size(); ++l) {
    if (!tables_[l].empty()) return InvalidArgumentError("adopt prefix: sequence is not empty");
    if (tables[l].size() != tables[0].size()) {
      return InvalidArgumentError("adopt prefix: layers have different page counts");
    }
  }
  for (size_t l = 0; l < tables.size(); ++l) {
    for (int32_t page : tables[l]) {
      if (page >= 0) pool_.Ref(page);  // < 0: a cold page (not on the device)
      tables_[l].push_back(page);
    }
  }
  return Status::Ok();
}

void SequenceKv::Truncate(int64_t n_tokens) {
  const int page_tokens = pool_.view().page_tokens;
  const size_t keep = static_cast<size_t>((n_tokens + page_tokens - 1) / page_tokens);
  for (auto& table : tables_) {
    while (table.size() > keep) {
      if (table.back() >= 0) pool_.Free(table.back());
      table.pop_back();
    }
  }
}

}  // namespace kvtier::cache
