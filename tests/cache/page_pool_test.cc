#include "cache/page_pool.h"

#include <gtest/gtest.h>

#include <set>

namespace kvtier::cache {
namespace {

PageShape Shape() { return PageShape{16, 3, 64}; }

TEST(PagePoolTest, GeometryAndCapacity) {
  auto pool = PagePool::Create(Shape(), 10 * 12288 + 100);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  EXPECT_EQ((*pool)->page_bytes(), 2u * 16 * 3 * 64 * 2);  // K and V, f16
  EXPECT_EQ((*pool)->capacity_pages(), 10);
  const kernels::KvPool& v = (*pool)->view();
  EXPECT_EQ(v.V(0) - v.K(0), static_cast<ptrdiff_t>(16 * 3 * 64));
  EXPECT_EQ(v.K(1) - v.K(0), static_cast<ptrdiff_t>(2 * 16 * 3 * 64));
}

TEST(PagePoolTest, RejectsTooSmallOrBadShape) {
  EXPECT_FALSE(PagePool::Create(Shape(), 100).ok());
  EXPECT_FALSE(PagePool::Create(PageShape{0, 3, 64}, 1 << 20).ok());
}

TEST(PagePoolTest, AllocateFreeReuseAndExhaustion) {
  auto pool = std::move(PagePool::Create(Shape(), 4 * 12288)).value();
  std::set<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    auto p = pool->Allocate();
    ASSERT_TRUE(p.ok());
    got.insert(*p);
  }
  EXPECT_EQ(got.size(), 4u);
  EXPECT_EQ(pool->free_pages(), 0);
  auto full = pool->Allocate();
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  pool->Free(2);
  auto again = pool->Allocate();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 2);
}

TEST(PagePoolTest, PagesAreWritableAndDistinct) {
  auto pool = std::move(PagePool::Create(Shape(), 3 * 12288)).value();
  const kernels::KvPool& v = pool->view();
  for (int32_t p = 0; p < 3; ++p) {
    for (size_t i = 0; i < v.HalfElems(); ++i) {
      v.K(p)[i] = static_cast<uint16_t>(p * 7 + 1);
      v.V(p)[i] = static_cast<uint16_t>(p * 7 + 2);
    }
  }
  for (int32_t p = 0; p < 3; ++p) {
    EXPECT_EQ(v.K(p)[0], p * 7 + 1);
    EXPECT_EQ(v.V(p)[v.HalfElems() - 1], p * 7 + 2);
  }
}

TEST(SequenceKvTest, ReservePerLayerAndTruncate) {
  auto pool = std::move(PagePool::Create(Shape(), 100 * 12288)).value();
  {
    SequenceKv seq(*pool, 3);
    ASSERT_TRUE(seq.Reserve(17).ok());  // 2 pages per layer
    EXPECT_EQ(seq.capacity_tokens(), 32);
    EXPECT_EQ(pool->used_pages(), 6);
    for (const auto& t : seq.page_tables()) EXPECT_EQ(t.size(), 2u);
    std::set<int32_t> all;
    for (const auto& t : seq.page_tables()) all.insert(t.begin(), t.end());
    EXPECT_EQ(all.size(), 6u);  // no page shared between layers
    ASSERT_TRUE(seq.Reserve(32).ok());
    EXPECT_EQ(pool->used_pages(), 6);  // already covered
    ASSERT_TRUE(seq.Reserve(33).ok());
    EXPECT_EQ(pool->used_pages(), 9);
    seq.Truncate(16);
    EXPECT_EQ(pool->used_pages(), 3);
    EXPECT_EQ(seq.capacity_tokens(), 16);
  }
  EXPECT_EQ(pool->used_pages(), 0);  // destructor frees
}

TEST(SequenceKvTest, ReserveBeyondCapacityFailsWithoutLosingPages) {
  auto pool = std::move(PagePool::Create(Shape(), 5 * 12288)).value();
  SequenceKv seq(*pool, 2);
  ASSERT_TRUE(seq.Reserve(16).ok());
  EXPECT_EQ(pool->used_pages(), 2);
  Status s = seq.Reserve(16 * 4);  // needs 6 more, 3 free
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->used_pages(), 2);
  EXPECT_EQ(seq.capacity_tokens(), 16);
}

}  // namespace
}  // namespace kvtier::cache

namespace kvtier::cache {
namespace {

TEST(PagePoolTest, ReferenceCountsKeepSharedPagesAlive) {
  auto pool = std::move(PagePool::Create(Shape(), 4 * 12288)).value();
  const int32_t p = *pool->Allocate();
  EXPECT_EQ(pool->refs(p), 1);
  pool->Ref(p);
  pool->Free(p);
  EXPECT_EQ(pool->used_pages(), 1);  // still held once
  EXPECT_EQ(pool->refs(p), 1);
  pool->Free(p);
  EXPECT_EQ(pool->used_pages(), 0);
}

TEST(SequenceKvTest, AdoptPrefixSharesPagesUntilTheLastHolderLeaves) {
  auto pool = std::move(PagePool::Create(Shape(), 64 * 12288)).value();
  std::vector<std::vector<int32_t>> cached(2);
  {
    SequenceKv first(*pool, 2);
    ASSERT_TRUE(first.Reserve(64).ok());  // 4 pages per layer
    for (int l = 0; l < 2; ++l) cached[l] = first.page_tables()[l];
    for (auto& t : cached) {
      for (int32_t p : t) pool->Ref(p);  // a cache keeps the prefix
    }
  }
  EXPECT_EQ(pool->used_pages(), 8);  // the first sequence is gone, the cache holds its pages
  {
    SequenceKv second(*pool, 2);
    ASSERT_TRUE(second.AdoptPrefix(cached).ok());
    EXPECT_EQ(second.capacity_tokens(), 64);
    EXPECT_EQ(second.page_tables()[1], cached[1]);
    ASSERT_TRUE(second.Reserve(80).ok());  // new pages only beyond the prefix
    EXPECT_EQ(pool->used_pages(), 10);
    EXPECT_FALSE(second.AdoptPrefix(cached).ok());  // not empty any more
  }
  EXPECT_EQ(pool->used_pages(), 8);
  for (auto& t : cached) {
    for (int32_t p : t) pool->Free(p);
  }
  EXPECT_EQ(pool->used_pages(), 0);
  SequenceKv bad(*pool, 3);
  EXPECT_FALSE(bad.AdoptPrefix(cached).ok());  // wrong layer count
}

}  // namespace
}  // namespace kvtier::cache
