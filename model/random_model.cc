#include "model/random_model.h"

#include <cmath>
#include <random>
#include <vector>

#include "model/gguf_writer.h"

namespace kvtier::model {
namespace {

// GPT-2's byte -> printable code point mapping, as UTF-8 strings: the 256 base tokens.
std::vector<std::string> ByteTokens() {
  std::vector<std::string> out(256);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const uint32_t cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    out[b] = s;
  }
  return out;
}

}  // namespace

RandomModelShape SmolLm2Shape() {
  RandomModelShape s;
  s.n_layers = 30;
  s.dim = 576;
  s.n_heads = 9;
  s.n_kv_heads = 3;
  s.ffn_dim = 1536;
  s.vocab_size = 49152;
  s.context_length = 8192;
  s.rope_freq_base = 100000.0f;
  s.weight_type = kernels::DType::kQ4_1;
  s.embd_type = kernels::DType::kQ8_0;
  return s;
}

Status WriteRandomLlamaGguf(const RandomModelShape& s, uint32_t seed, const std::string& path) {
  if (s.vocab_size < 257 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.dim % s.n_heads != 0 ||
      s.n_heads % s.n_kv_heads != 0 || s.n_layers <= 0 || s.ffn_dim <= 0) {
    return InvalidArgumentError("random model: bad shape");
  }
  GgufWriter w;
  std::vector<std::string> tokens = ByteTokens();
  tokens.push_back("<|endoftext|>");
  while (static_cast<int>(tokens.size()) < s.vocab_size) {
    tokens.push_back("<filler" + std::to_string(tokens.size()) + ">");
  }
  std::vector<int32_t> types(tokens.size(), 1);
  types[256] = 3;  // control
  const int head_dim = s.dim / s.n_heads;
  w.SetString("general.architecture", "llama");
  w.SetString("general.name", "kvtier-random");
  w.SetUint32("llama.block_count", s.n_layers);
  w.SetUint32("llama.embedding_length", s.dim);
  w.SetUint32("llama.attention.head_count", s.n_heads);
  w.SetUint32("llama.attention.head_count_kv", s.n_kv_heads);
  w.SetUint32("llama.feed_forward_length", s.ffn_dim);
  w.SetUint32("llama.context_length", s.context_length);
  w.SetUint32("llama.rope.dimension_count", head_dim);
  w.SetFloat32("llama.rope.freq_base", s.rope_freq_base);
  w.SetFloat32("llama.attention.layer_norm_rms_epsilon", s.rms_eps);
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetString("tokenizer.ggml.pre", "gpt2");
  w.SetStringArray("tokenizer.ggml.tokens", tokens);
  w.SetInt32Array("tokenizer.ggml.token_type", types);
  w.SetStringArray("tokenizer.ggml.merges", {});
  w.SetUint32("tokenizer.ggml.eos_token_id", 256);

  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto randn = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng) * scale;
    return v;
  };
  auto norm_weights = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = 1.0f + 0.1f * normal(rng);
    return v;
  };
  const int64_t vocab = s.vocab_size, dim = s.dim, ffn = s.ffn_dim;
  const int64_t kv_dim = static_cast<int64_t>(head_dim) * s.n_kv_heads;
  w.AddTensor("token_embd.weight", {dim, vocab}, s.embd_type, randn(dim * vocab, 1.0f));
  w.AddTensor("output_norm.weight", {dim}, kernels::DType::kF32, norm_weights(dim));
  const float ws = 1.0f / std::sqrt(static_cast<float>(dim));
  for (int l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    w.AddTensor(p + "attn_norm.weight", {dim}, kernels::DType::kF32, norm_weights(dim));
    w.AddTensor(p + "attn_q.weight", {dim, dim}, s.weight_type, randn(dim * dim, 2 * ws));
    w.AddTensor(p + "attn_k.weight", {dim, kv_dim}, s.weight_type, randn(dim * kv_dim, 2 * ws));
    w.AddTensor(p + "attn_v.weight", {dim, kv_dim}, s.weight_type, randn(dim * kv_dim, ws));
    w.AddTensor(p + "attn_output.weight", {dim, dim}, s.weight_type, randn(dim * dim, ws));
    w.AddTensor(p + "ffn_norm.weight", {dim}, kernels::DType::kF32, norm_weights(dim));
    w.AddTensor(p + "ffn_gate.weight", {dim, ffn}, s.weight_type, randn(dim * ffn, ws));
    w.AddTensor(p + "ffn_up.weight", {dim, ffn}, s.weight_type, randn(dim * ffn, ws));
    w.AddTensor(p + "ffn_down.weight", {ffn, dim}, s.weight_type,
                randn(ffn * dim, 1.0f / std::sqrt(static_cast<float>(ffn))));
  }
  return w.WriteFile(path);
}

}  // namespace kvtier::model
