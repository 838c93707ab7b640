// engine/sampler.h — turning logits into the next token: greedy, temperature, top-k, top-p.
//
// Thread safety: a Sampler holds its random state; one per sequence, used from one thread.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace kvtier::engine {

struct SamplingParams {
  float temperature = 0.8f;  // 0 = greedy (argmax, lowest id on ties)
  int top_k = 40;            // <= 0: all tokens
  float top_p = 0.95f;       // 1 = off
  uint64_t seed = 0;         // the generator's seed (the engine picks one when none is given)
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Chooses the next token from logits (not modified).
  int32_t Sample(std::span<const float> logits);

  static int32_t Argmax(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace kvtier::engine
