#include "model/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "base/sha256.h"
#include "model/internal/batching.h"
#include "kernels/cpu/retrieval.h"

namespace kvtier::model {
namespace {

using kernels::DType;
using kernels::WeightView;

Status ModelError(const std::string& m) { return InvalidArgumentError("model: " + m); }

// Reads "<arch>.<key>" as an integer in [lo, hi].
Result<int> ArchInt(const GgufFile& f, const std::string& arch, const std::string& key, int lo,
                    int hi) {
  auto v = f.GetInt(arch + "." + key);
  if (!v.ok()) return ModelError("metadata " + arch + "." + key + ": " + v.status().message());
  if (*v < lo || *v > hi) {
    return ModelError("metadata " + arch + "." + key + " = " + std::to_string(*v) +
                      " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int>(*v);
}

// A matrix tensor of shape [cols, rows] in a supported type.
Result<WeightView> Matrix(const GgufFile& f, const std::string& name, int64_t cols, int64_t rows) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr) return ModelError("missing tensor '" + name + "'");
  if (!t->supported) {
    return ModelError("tensor '" + name + "' has unsupported type " + GgmlTypeName(t->ggml_type));
  }
  if (t->dims.size() != 2 || t->dims[0] != cols || t->dims[1] != rows) {
    std::string got;
    for (size_t i = 0; i < t->dims.size(); ++i) got += (i ? "," : "") + std::to_string(t->dims[i]);
    return ModelError("tensor '" + name + "' has shape [" + got + "], expected [" +
                      std::to_string(cols) + "," + std::to_string(rows) + "]");
  }
  const auto& info = kernels::GetDTypeInfo(t->dtype);
  if (cols % info.block_elems != 0) {
    return ModelError("tensor '" + name + "': row length " + std::to_string(cols) +
                      " is not a multiple of the " + std::string(info.name) + " block size");
  }
  WeightView w;
  w.type = t->dtype;
  w.data = t->data;
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = kernels::RowBytes(t->dtype, cols);
  return w;
}

// A vector tensor (norm weights) of n elements, converted to f32.
Result<std::vector<float>> Vector(const GgufFile& f, const std::string& name, int64_t n) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr) return ModelError("missing tensor '" + name + "'");
  if (!t->supported) {
    return ModelError("tensor '" + name + "' has unsupported type " + GgmlTypeName(t->ggml_type));
  }
  if (t->NumElements() != n || t->dims[0] != n) {
    return ModelError("tensor '" + name + "' has " + std::to_string(t->NumElements()) +
                      " elements, expected " + std::to_string(n));
  }
  if (n % kernels::GetDTypeInfo(t->dtype).block_elems != 0) {
    return ModelError("tensor '" + name + "': length not a multiple of its block size");
  }
  std::vector<float> out(n);
  kernels::DequantizeRow(t->dtype, t->data, out.data(), n);
  return out;
}

std::string ComputeFingerprint(const GgufFile& f, const ModelConfig& c) {
  Sha256 h;
  h.UpdateField("kvtier-model-fingerprint-v1");
  h.UpdateField(c.architecture);
  for (int v : {c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size}) {
    h.UpdateU64(static_cast<uint64_t>(v));
  }
  h.UpdateU64(static_cast<uint64_t>(std::llround(c.rope_freq_base * 1000.0)));
  h.UpdateU64(static_cast<uint64_t>(std::llround(c.rope_freq_scale * 1e6)));
  // Tensor names, types, shapes and a sample of every tensor's bytes (4 chunks of 4 KiB, evenly
  // spaced): cheap at load even for large models, and different weights of the same shape
  // differ in practice in the sampled bytes.
  for (const auto& t : f.tensors()) {
    h.UpdateField(t.name);
    h.UpdateU64(t.ggml_type);
    for (int64_t d : t.dims) h.UpdateU64(static_cast<uint64_t>(d));
    h.UpdateU64(t.size_bytes);
    constexpr uint64_t kChunk = 4096;
    if (t.size_bytes <= 4 * kChunk) {
      h.Update(t.data, t.size_bytes);
    } else {
      for (int i = 0; i < 4; ++i) {
        const uint64_t off = (t.size_bytes - kChunk) * i / 3;
        h.Update(t.data + off, kChunk);
      }
    }
  }
  auto digest = h.Finish();
  return ToHex(digest);
}

}  // namespace

Result<std::unique_ptr<Model>> Model::Load(const std::string& path) {
  std::unique_ptr<Model> m(new Model());
  ASSIGN_OR_RETURN(m->file_, GgufFile::Open(path));
  RETURN_IF_ERROR(m->Init());
  return m;
}

Status Model::Init() {
  const GgufFile& f = *file_;
  auto arch = f.GetString("general.architecture");
  if (!arch.ok()) return ModelError("general.architecture: " + arch.status().message());
  config_.architecture = *arch;
  if (config_.architecture != "llama") {
    return ModelError("architecture '" + config_.architecture +
                      "' is not supported (kvtier runs llama-architecture models)");
  }
  const std::string& a = config_.architecture;
  if (auto n = f.GetString("general.name"); n.ok()) config_.name = *n;
  ASSIGN_OR_RETURN(config_.n_layers, ArchInt(f, a, "block_count", 1, 1024));
  ASSIGN_OR_RETURN(config_.dim, ArchInt(f, a, "embedding_length", 1, 1 << 16));
  ASSIGN_OR_RETURN(config_.n_heads, ArchInt(f, a, "attention.head_count", 1, 1024));
  if (f.Find(a + ".attention.head_count_kv") != nullptr) {
    ASSIGN_OR_RETURN(config_.n_kv_heads,
                     ArchInt(f, a, "attention.head_count_kv", 1, config_.n_heads));
  } else {
    config_.n_kv_heads = config_.n_heads;
  }
  ASSIGN_OR_RETURN(config_.ffn_dim, ArchInt(f, a, "feed_forward_length", 1, 1 << 20));
  if (f.Find(a + ".context_length") != nullptr) {
    ASSIGN_OR_RETURN(config_.context_length, ArchInt(f, a, "context_length", 1, 1 << 24));
  } else {
    config_.context_length = 2048;
  }
  if (config_.dim % config_.n_heads != 0) {
    return ModelError("embedding_length " + std::to_string(config_.dim) +
                      " is not a multiple of head_count " + std::to_string(config_.n_heads));
  }
  if (config_.n_heads % config_.n_kv_heads != 0) {
    return ModelError("head_count is not a multiple of head_count_kv");
  }
  config_.head_dim = config_.dim / config_.n_heads;
  if (config_.head_dim % 2 != 0) return ModelError("head dimension must be even for RoPE");
  if (f.Find(a + ".rope.dimension_count") != nullptr) {
    ASSIGN_OR_RETURN(int rope_dims, ArchInt(f, a, "rope.dimension_count", 1, 1 << 16));
    if (rope_dims != config_.head_dim) {
      return ModelError("partial RoPE (rope.dimension_count " + std::to_string(rope_dims) +
                        " != head dim " + std::to_string(config_.head_dim) + ") is not supported");
    }
  }
  if (auto v = f.GetFloat(a + ".rope.freq_base"); v.ok()) {
    config_.rope_freq_base = static_cast<float>(*v);
  }
  if (auto v = f.GetFloat(a + ".attention.layer_norm_rms_epsilon"); v.ok()) {
    config_.rms_eps = static_cast<float>(*v);
  }
  if (auto t = f.GetString(a + ".rope.scaling.type"); t.ok() && *t != "none") {
    if (*t != "linear") return ModelError("rope scaling '" + *t + "' is not supported");
    auto factor = f.GetFloat(a + ".rope.scaling.factor");
    if (factor.ok() && *factor > 0) config_.rope_freq_scale = static_cast<float>(1.0 / *factor);
  }
  if (!(config_.rope_freq_base > 0) || !(config_.rms_eps > 0)) {
    return ModelError("rope.freq_base and layer_norm_rms_epsilon must be positive");
  }

  ASSIGN_OR_RETURN(tokenizer_, Tokenizer::Create(f));
  config_.vocab_size = tokenizer_->vocab_size();

  const int64_t dim = config_.dim, kv_dim = config_.kv_dim(), ffn = config_.ffn_dim;
  ASSIGN_OR_RETURN(token_embd_, Matrix(f, "token_embd.weight", dim, config_.vocab_size));
  ASSIGN_OR_RETURN(output_norm_, Vector(f, "output_norm.weight", dim));
  if (f.FindTensor("output.weight") != nullptr) {
    ASSIGN_OR_RETURN(output_, Matrix(f, "output.weight", dim, config_.vocab_size));
  } else {
    output_ = token_embd_;
    config_.tied_embeddings = true;
  }
  layers_.resize(config_.n_layers);
  for (int i = 0; i < config_.n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LayerWeights& l = layers_[i];
    ASSIGN_OR_RETURN(l.attn_norm, Vector(f, p + "attn_norm.weight", dim));
    ASSIGN_OR_RETURN(l.wq, Matrix(f, p + "attn_q.weight", dim, dim));
    ASSIGN_OR_RETURN(l.wk, Matrix(f, p + "attn_k.weight", dim, kv_dim));
    ASSIGN_OR_RETURN(l.wv, Matrix(f, p + "attn_v.weight", dim, kv_dim));
    ASSIGN_OR_RETURN(l.wo, Matrix(f, p + "attn_output.weight", dim, dim));
    ASSIGN_OR_RETURN(l.ffn_norm, Vector(f, p + "ffn_norm.weight", dim));
    ASSIGN_OR_RETURN(l.w_gate, Matrix(f, p + "ffn_gate.weight", dim, ffn));
    ASSIGN_OR_RETURN(l.w_up, Matrix(f, p + "ffn_up.weight", dim, ffn));
    ASSIGN_OR_RETURN(l.w_down, Matrix(f, p + "ffn_down.weight", ffn, dim));
  }
  for (const auto& t : f.tensors()) weight_bytes_ += t.size_bytes;
  fingerprint_ = ComputeFingerprint(f, config_);
  return Status::Ok();
}

// ---- Forward pass -------------------------------------------------------------------------

namespace {
using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
}  // namespace

ForwardPass::ForwardPass(const Model& model, kernels::ThreadPool& threads, int max_batch_tokens)
    : model_(model), threads_(threads), max_batch_tokens_(std::max(1, max_batch_tokens)) {
  const ModelConfig& c = model.config();
  const size_t n = static_cast<size_t>(max_batch_tokens_);
  x_.resize(n * c.dim);
  h_.resize(n * c.dim);
  q_.resize(n * c.dim);
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  attn_.resize(n * c.dim);
  gate_.resize(n * c.ffn_dim);
  up_.resize(n * c.ffn_dim);
  positions_.resize(n);
  slots_.resize(n);
}

Status ForwardPass::Run(std::span<const int32_t> tokens, int32_t n_past, const KvView& kv,
                        LogitsMode mode, std::vector<float>* logits) {
  const ModelConfig& c = model_.config();
  if (tokens.empty()) return InvalidArgumentError("forward: no tokens");
  if (n_past < 0) return InvalidArgumentError("forward: negative position");
  if (static_cast<int>(kv.page_tables.size()) != c.n_layers) {
    return InvalidArgumentError("forward: page tables for " +
                                std::to_string(kv.page_tables.size()) + " layers, model has " +
                                std::to_string(c.n_layers));
  }
  const int64_t end_pos = static_cast<int64_t>(n_past) + static_cast<int64_t>(tokens.size());
  const int64_t pages_needed = (end_pos + kv.pool.page_tokens - 1) / kv.pool.page_tokens;
  for (const auto& table : kv.page_tables) {
    if (static_cast<int64_t>(table.size()) < pages_needed) {
      return InvalidArgumentError("forward: page table covers " +
                                  std::to_string(table.size() * kv.pool.page_tokens) +
                                  " positions, need " + std::to_string(end_pos));
    }
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return InvalidArgumentError("forward: token id " + std::to_string(t) + " out of range");
    }
  }
  return internal::ForEachBatch(
      tokens, n_past, static_cast<size_t>(max_batch_tokens_), c.vocab_size, mode, logits,
      [&](std::span<const int32_t> batch, int32_t batch_past, LogitsMode batch_mode, float* out) {
        return RunBatch(batch, batch_past, kv, batch_mode, out);
      });
}

Status ForwardPass::RunBatch(std::span<const int32_t> tokens, int32_t n_past, const KvView& kv,
                             LogitsMode mode, float* logits_out) {
  const ModelConfig& c = model_.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int dim = c.dim, ffn = c.ffn_dim;
  const int page_tokens = kv.pool.page_tokens;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const int32_t total = n_past + static_cast<int32_t>(n);
  Clock::time_point t0 = Clock::now();

  for (int64_t t = 0; t < n; ++t) {
    kernels::GetRow(model_.token_embd(), tokens[t], x_.data() + t * dim);
    positions_[t] = n_past + static_cast<int32_t>(t);
  }
  const int64_t n_pages = (total + page_tokens - 1) / page_tokens;
  pages_.resize(n_pages);
  profile_.other_ms += MsSince(t0);

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_.layer(l);
    const std::vector<int32_t>& table = kv.page_tables[l];

    t0 = Clock::now();
    kernels::RmsNorm(x_.data(), w.attn_norm.data(), n, dim, c.rms_eps, h_.data());
    profile_.other_ms += MsSince(t0);
    t0 = Clock::now();
    const kernels::WeightView qkv[3] = {w.wq, w.wk, w.wv};
    float* const qkv_out[3] = {q_.data(), k_.data(), v_.data()};
    kernels::MatMulMany(qkv, h_.data(), n, qkv_out, threads_, acts_);
    profile_.matmul_ms += MsSince(t0);

    t0 = Clock::now();
    kernels::RopeInPlace(q_.data(), n, c.n_heads, c.head_dim, positions_.data(), c.rope_freq_base,
                         c.rope_freq_scale);
    kernels::RopeInPlace(k_.data(), n, c.n_kv_heads, c.head_dim, positions_.data(),
                         c.rope_freq_base, c.rope_freq_scale);
    for (int64_t t = 0; t < n; ++t) {
      const int32_t pos = positions_[t];
      if (table[pos / page_tokens] < 0) {
        return InvalidArgumentError("forward: position " + std::to_string(pos) +
                                    " is in a cold page");
      }
      slots_[t] = kernels::PageRef{table[pos / page_tokens], pos % page_tokens, 1};
    }
    kernels::WriteKv(kv.pool, std::span(slots_.data(), n), k_.data(), v_.data(), n);
    for (int64_t p = 0; p < n_pages; ++p) {
      const int32_t first = static_cast<int32_t>(p * page_tokens);
      pages_[p] = kernels::PageRef{table[p], first, std::min(page_tokens, total - first)};
    }
    const bool has_cold =
        kv.resolver != nullptr &&
        std::any_of(table.begin(), table.begin() + n_pages, [](int32_t p) { return p < 0; });
    if (has_cold) {
      for (int64_t p = 0; p < n_pages; ++p) pages_[p].page = static_cast<int32_t>(p);
    }
    profile_.other_ms += MsSince(t0);

    // Retrieval attention (DESIGN §5): sinks + recent window + top pages per KV head.
    bool sparse_done = false;
    if (sparse_.enabled && l >= sparse_.dense_layers && kv.pool.digests != nullptr) {
      const int sink_pages = (sparse_.sink_tokens + page_tokens - 1) / page_tokens;
      const int window_pages = (sparse_.recent_tokens + page_tokens - 1) / page_tokens;
      const int32_t recent_from = std::max(0, n_past - sparse_.recent_tokens);
      const int recent_pages = static_cast<int>(n_pages) - recent_from / page_tokens;
      const int k_pages =
          std::max(0, sparse_.budget_tokens / page_tokens - sink_pages - window_pages);
      kernels::SelectProfile sel;
      kernels::KvPool score_pool = kv.pool;
      if (has_cold) {
        // pages_ holds logical page indices: score hot and cold pages alike through a table of
        // their digests (cold pages keep theirs resident; scoring only reads them).
        t0 = Clock::now();
        digest_table_.resize(static_cast<size_t>(n_pages));
        for (int64_t p = 0; p < n_pages; ++p) {
          digest_table_[p] = table[p] >= 0
                                 ? kv.pool.Digest(table[p])
                                 : const_cast<uint16_t*>(kv.resolver->ColdDigest(l, table[p]));
        }
        score_pool.digest_table = digest_table_.data();
        profile_.score_ms += MsSince(t0);
      }
      // The benchmark reference reads the pages' keys: with cold pages only digests exist.
      const kernels::ScoringMode scoring =
          has_cold && sparse_.scoring == kernels::ScoringMode::kExact ? kernels::ScoringMode::kSketch
                                                                      : sparse_.scoring;
      const kernels::SelectShape shape =
          kernels::SelectPages(score_pool, pages_, sink_pages, recent_pages, k_pages, q_.data(),
                               n, c.n_heads, scale, &selected_, threads_, &sel, scoring,
                               sparse_.split);
      profile_.score_ms += sel.score_ms;
      profile_.select_ms += sel.select_ms;
      if (!shape.all() && has_cold) {
        RETURN_IF_ERROR(ResolveCold(kv, l, table, selected_));
      }
      if (!shape.all()) {
        t0 = Clock::now();
        kernels::PagedAttentionPerKvHead(kv.pool, selected_, shape.selected(), q_.data(),
                                         positions_.data(), n, c.n_heads, scale, attn_.data(),
                                         threads_);
        profile_.attention_ms += MsSince(t0);
        counters_.sparse_lists += c.n_kv_heads;
        counters_.pages_attended += shape.attended;
        sparse_done = true;
      }
    }
    if (!sparse_done) {
      if (has_cold) {
        RETURN_IF_ERROR(ResolveCold(kv, l, table, std::span(pages_.data(), n_pages)));
      }
      t0 = Clock::now();
      kernels::PagedAttention(kv.pool, pages_, q_.data(), positions_.data(), n, c.n_heads, scale,
                              attn_.data(), threads_);
      profile_.attention_ms += MsSince(t0);
      counters_.pages_attended += n_pages * c.n_kv_heads;
    }
    counters_.lists += c.n_kv_heads;

    t0 = Clock::now();
    kernels::MatMul(w.wo, attn_.data(), n, h_.data(), threads_, acts_);
    profile_.matmul_ms += MsSince(t0);
    t0 = Clock::now();
    kernels::AddInPlace(x_.data(), h_.data(), n * dim);
    kernels::RmsNorm(x_.data(), w.ffn_norm.data(), n, dim, c.rms_eps, h_.data());
    profile_.other_ms += MsSince(t0);

    t0 = Clock::now();
    const kernels::WeightView gate_up[2] = {w.w_gate, w.w_up};
    float* const gate_up_out[2] = {gate_.data(), up_.data()};
    kernels::MatMulMany(gate_up, h_.data(), n, gate_up_out, threads_, acts_);
    profile_.matmul_ms += MsSince(t0);
    t0 = Clock::now();
    kernels::SwiGlu(gate_.data(), up_.data(), n * ffn, gate_.data());
    profile_.other_ms += MsSince(t0);
    t0 = Clock::now();
    kernels::MatMul(w.w_down, gate_.data(), n, h_.data(), threads_, acts_);
    profile_.matmul_ms += MsSince(t0);
    t0 = Clock::now();
    kernels::AddInPlace(x_.data(), h_.data(), n * dim);
    profile_.other_ms += MsSince(t0);
  }

  if (kv.resolver != nullptr) kv.resolver->EndStep();
  if (mode == LogitsMode::kNone) return Status::Ok();
  t0 = Clock::now();
  const int64_t first_row = mode == LogitsMode::kLast ? n - 1 : 0;
  const int64_t rows = n - first_row;
  kernels::RmsNorm(x_.data() + first_row * dim, model_.output_norm().data(), rows, dim, c.rms_eps,
                   h_.data());
  profile_.other_ms += MsSince(t0);
  t0 = Clock::now();
  kernels::MatMul(model_.output(), h_.data(), rows, logits_out, threads_, acts_);
  profile_.matmul_ms += MsSince(t0);
  return Status::Ok();
}

Status ForwardPass::ResolveCold(const KvView& kv, int layer, const std::vector<int32_t>& table,
                                std::span<kernels::PageRef> refs) {
  const Clock::time_point t0 = Clock::now();
  // Logical page -> device page; each cold page among refs is promoted once.
  resolved_.assign(table.size(), -1);
  cold_ids_.clear();
  cold_logical_.clear();
  for (const kernels::PageRef& r : refs) {
    if (table[r.page] >= 0 || resolved_[r.page] != -1) continue;
    resolved_[r.page] = -2;  // queued
    cold_ids_.push_back(table[r.page]);
    cold_logical_.push_back(r.page);
  }
  cold_pages_.resize(cold_ids_.size());
  if (!cold_ids_.empty()) RETURN_IF_ERROR(kv.resolver->Promote(layer, cold_ids_, cold_pages_));
  for (size_t i = 0; i < cold_logical_.size(); ++i) resolved_[cold_logical_[i]] = cold_pages_[i];
  for (kernels::PageRef& r : refs) {
    r.page = table[r.page] >= 0 ? table[r.page] : resolved_[r.page];
  }
  profile_.promote_ms += MsSince(t0);
  return Status::Ok();
}

}  // namespace kvtier::model
