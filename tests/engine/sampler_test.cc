#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

namespace kvtier::engine {
namespace {

TEST(SamplerTest, GreedyPicksArgmaxLowestOnTies) {
  Sampler s(SamplingParams{0.0f, 40, 0.95f, 1});
  std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.Sample(logits), 1);
  EXPECT_EQ(Sampler::Argmax(logits), 1);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  Sampler s(SamplingParams{1.5f, 1, 1.0f, 42});
  std::vector<float> logits = {0.1f, 0.2f, 2.0f, 0.3f};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.Sample(logits), 2);
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedDiffers) {
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = 0.01f * i;
  auto draw = [&](uint64_t seed) {
    Sampler s(SamplingParams{1.0f, 0, 1.0f, seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.Sample(logits));
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(SamplerTest, FrequenciesFollowSoftmaxWithTemperature) {
  // p ∝ exp(l / T): logits {0, ln 3} at T = 1 -> 1:3.
  std::vector<float> logits = {0.0f, std::log(3.0f)};
  Sampler s(SamplingParams{1.0f, 0, 1.0f, 123});
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += s.Sample(logits) == 1;
  EXPECT_NEAR(ones / static_cast<double>(n), 0.75, 0.015);
  // At T = 0.5 the ratio becomes 1:9.
  Sampler cold(SamplingParams{0.5f, 0, 1.0f, 123});
  ones = 0;
  for (int i = 0; i < n; ++i) ones += cold.Sample(logits) == 1;
  EXPECT_NEAR(ones / static_cast<double>(n), 0.9, 0.01);
}

TEST(SamplerTest, TopPKeepsSmallestNucleus) {
  // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps the first two only.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  Sampler s(SamplingParams{1.0f, 0, 0.7f, 5});
  std::map<int32_t, int> seen;
  for (int i = 0; i < 5000; ++i) ++seen[s.Sample(logits)];
  EXPECT_EQ(seen.count(2), 0u);
  EXPECT_EQ(seen.count(3), 0u);
  EXPECT_NEAR(seen[0] / 5000.0, 0.625, 0.03);  // 0.5 / 0.8
}

}  // namespace
}  // namespace kvtier::engine
