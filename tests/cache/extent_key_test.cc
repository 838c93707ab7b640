#include "cache/extent_key.h"

#include <gtest/gtest.h>

#include <numeric>
#include <set>
#include <vector>

namespace kvtier::cache {
namespace {

KeyScheme Scheme() {
  KeyScheme s;
  s.model_fingerprint = "fp-smollm2";
  s.layout = LayoutId(CodecSpec{Codec::kQ8, false}, ExtentShape{30, 3, 64, 16, 4});
  return s;
}

std::vector<int32_t> Tokens(int n, int32_t start = 1000) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

TEST(ExtentKeyTest, LayoutId) {
  EXPECT_EQ(Scheme().layout, "q8/pt16/ep4/L30/H3/D64");
  // zstd is lossless: the same layout.
  EXPECT_EQ(LayoutId(CodecSpec{Codec::kQ8, true}, ExtentShape{30, 3, 64, 16, 4}), Scheme().layout);
}

TEST(ExtentKeyTest, DeterministicAndKnownValue) {
  const std::vector<int32_t> t = Tokens(64);
  const ExtentKey a = ComputeExtentKey(Scheme(), "uid:1000", ExtentKey{}, t);
  const ExtentKey b = ComputeExtentKey(Scheme(), "uid:1000", ExtentKey{}, t);
  EXPECT_EQ(a, b);
  EXPECT_FALSE(a.IsRoot());
  EXPECT_TRUE(ExtentKey{}.IsRoot());
  EXPECT_EQ(a.Hex().size(), 64u);
  // Pinned value, computed independently (Python hashlib over the encoding documented in
  // extent_key.h): keys are persistent (disk and remote tiers), so a change of the encoding
  // must be deliberate and come with a new format version.
  EXPECT_EQ(a.Hex(), "673db0b051cc7bc021475dc6af49d5a09e53e3987b39b0162853030b03cf4d98");
}

TEST(ExtentKeyTest, EveryInputMatters) {
  const std::vector<int32_t> t = Tokens(64);
  const KeyScheme base = Scheme();
  const ExtentKey parent = ComputeExtentKey(base, "ns", ExtentKey{}, Tokens(64, 5));
  std::set<ExtentKey> keys;
  keys.insert(ComputeExtentKey(base, "ns", parent, t));
  keys.insert(ComputeExtentKey(base, "ns2", parent, t));      // namespace
  keys.insert(ComputeExtentKey(base, "ns", ExtentKey{}, t));  // parent
  std::vector<int32_t> t2 = t;
  t2[63] += 1;
  keys.insert(ComputeExtentKey(base, "ns", parent, t2));  // last token
  t2 = t;
  t2[0] = -1;
  keys.insert(ComputeExtentKey(base, "ns", parent, t2));  // first token
  KeyScheme s = base;
  s.layout = LayoutId(CodecSpec{Codec::kQ4, false}, ExtentShape{30, 3, 64, 16, 4});
  keys.insert(ComputeExtentKey(s, "ns", parent, t));  // codec
  s = base;
  s.model_fingerprint = "fp-other";
  keys.insert(ComputeExtentKey(s, "ns", parent, t));  // model
  s = base;
  s.format_version = 2;
  keys.insert(ComputeExtentKey(s, "ns", parent, t));  // format version
  EXPECT_EQ(keys.size(), 8u);
  // Field boundaries are unambiguous: moving a character between fields changes the key.
  KeyScheme x = base, y = base;
  x.model_fingerprint = "ab";
  x.layout = "c";
  y.model_fingerprint = "a";
  y.layout = "bc";
  EXPECT_NE(ComputeExtentKey(x, "", ExtentKey{}, t), ComputeExtentKey(y, "", ExtentKey{}, t));
}

TEST(ExtentKeyTest, ChainProperty) {
  const KeyScheme s = Scheme();
  const std::vector<int32_t> t = Tokens(64 * 3 + 17);
  const std::vector<ExtentKey> chain = ComputeKeyChain(s, "ns", t);
  ASSERT_EQ(chain.size(), 3u);  // the trailing 17 tokens have no key
  ExtentKey parent;
  for (size_t i = 0; i < chain.size(); ++i) {
    EXPECT_EQ(chain[i],
              ComputeExtentKey(s, "ns", parent, std::span<const int32_t>(t).subspan(i * 64, 64)));
    parent = chain[i];
  }
  // A prefix's chain is a prefix of the chain.
  const std::vector<ExtentKey> shorter =
      ComputeKeyChain(s, "ns", std::span<const int32_t>(t).first(128));
  EXPECT_EQ(shorter, std::vector<ExtentKey>(chain.begin(), chain.begin() + 2));
  // Changing a token of extent 0 changes every later key even though their tokens are equal.
  std::vector<int32_t> u = t;
  u[10] = 7;
  const std::vector<ExtentKey> other = ComputeKeyChain(s, "ns", u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NE(other[i], chain[i]);
  // Changing a token of extent 2 leaves extents 0 and 1 alone.
  u = t;
  u[150] = 7;
  const std::vector<ExtentKey> tail = ComputeKeyChain(s, "ns", u);
  EXPECT_EQ(tail[0], chain[0]);
  EXPECT_EQ(tail[1], chain[1]);
  EXPECT_NE(tail[2], chain[2]);
  EXPECT_TRUE(ComputeKeyChain(s, "ns", Tokens(63)).empty());
}

}  // namespace
}  // namespace kvtier::cache
