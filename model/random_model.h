// model/random_model.h — writes llama-architecture GGUF files with random weights, for tests
// and benchmarks that need a model of a given shape but not its quality (e.g. the CUDA check on
// a machine the real model file cannot be carried to).
//
// Thread safety: stateless.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "kernels/dtype.h"

namespace kvtier::model {

struct RandomModelShape {
  int n_layers = 2;
  int dim = 64;
  int n_heads = 4;
  int n_kv_heads = 2;
  int ffn_dim = 128;
  int vocab_size = 257;  // at least 257: the 256 byte tokens and <|endoftext|>
  int context_length = 4096;
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;
  kernels::DType weight_type = kernels::DType::kQ8_0;  // block matrices
  kernels::DType embd_type = kernels::DType::kQ8_0;    // token_embd (tied output)
};

// SmolLM2-135M's shape (DESIGN §3) with Q4_1 blocks and a Q8_0 embedding.
RandomModelShape SmolLm2Shape();

// Writes a GGUF with a byte-level gpt2 vocabulary (256 byte tokens, <|endoftext|>, then filler
// tokens up to vocab_size) and normal random weights scaled like a trained model's (unit-ish
// activations), deterministic in `seed`.
Status WriteRandomLlamaGguf(const RandomModelShape& shape, uint32_t seed, const std::string& path);

}  // namespace kvtier::model
