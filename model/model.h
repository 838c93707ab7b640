// model/model.h — a llama-architecture model loaded from GGUF, and its forward pass over paged KV.
//
// Thread safety: a Model is immutable after Load() and may be shared by any number of threads.
// A ForwardPass holds scratch buffers and a thread pool reference: one per compute thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/retrieval.h"
#include "kernels/cpu/thread_pool.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace kvtier::model {

struct ModelConfig {
  std::string architecture;  // "llama"
  std::string name;          // general.name, if present
  int n_layers = 0;
  int dim = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_dim = 0;
  int vocab_size = 0;
  int context_length = 0;  // trained context
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  float rms_eps = 1e-5f;
  bool tied_embeddings = false;

  int kv_dim() const { return n_kv_heads * head_dim; }
};

struct LayerWeights {
  std::vector<float> attn_norm;
  kernels::WeightView wq, wk, wv, wo;
  std::vector<float> ffn_norm;
  kernels::WeightView w_gate, w_up, w_down;
};

class Model {
 public:
  // Maps the file, validates architecture, shapes and tensor types, builds the tokenizer.
  // Any problem -> one-line error naming it ("model: tensor 'blk.3.ffn_up.weight' ...").
  static Result<std::unique_ptr<Model>> Load(const std::string& path);

  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const GgufFile& file() const { return *file_; }
  const LayerWeights& layer(int i) const { return layers_[i]; }
  const kernels::WeightView& token_embd() const { return token_embd_; }
  const kernels::WeightView& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  // Hex SHA-256 over the file's tensor names, types, shapes and data sizes plus the
  // architecture metadata: identifies the KV a model produces (DESIGN §4 extent keys).
  const std::string& fingerprint() const { return fingerprint_; }
  uint64_t weight_bytes() const { return weight_bytes_; }

 private:
  Model() = default;
  Status Init();

  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelConfig config_;
  kernels::WeightView token_embd_;
  kernels::WeightView output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  std::string fingerprint_;
  uint64_t weight_bytes_ = 0;
};

// Pages of a sequence that are not on the device (DESIGN §5: only the selected pages are
// promoted). A page-table entry < 0 is a *cold* page: its KV is in a lower tier (host or disk),
// only its digest is resident. The engine implements this over cache::TierManager; the forward
// pass asks it for the digests of cold candidates and for device copies of the cold pages a
// layer attends to.
//
// Thread safety: called from the forward pass's thread only.
class PageResolver {
 public:
  virtual ~PageResolver() = default;
  // The digest (kernels::KvPool::Digest layout) of cold entry `cold` (< 0) of `layer`'s table.
  // Valid for the whole Run call.
  virtual const uint16_t* ColdDigest(int layer, int32_t cold) = 0;
  // Device page ids holding the cold entries `cold` (distinct, < 0) of `layer`, in order, into
  // `pages`. They stay valid until the next Promote call. ResourceExhausted when the device
  // cannot hold them; Corruption/IOError when a lower tier cannot serve them.
  virtual Status Promote(int layer, std::span<const int32_t> cold, std::span<int32_t> pages) = 0;
  // Called after each forward step (batch) with no promoted page in use (prefetch point).
  virtual void EndStep() {}
};

// The KV of one sequence as the forward pass sees it: a page pool shared by all layers and, per
// layer, the pages holding positions [0, 16), [16, 32), ... in order. The caller (engine/cache)
// owns the pages and must have allocated them for every position the pass will write. Entries
// < 0 are cold pages (see PageResolver), allowed only with a resolver and never where the pass
// writes; the CUDA pass does not take them.
struct KvView {
  kernels::KvPool pool;
  std::span<const std::vector<int32_t>> page_tables;  // [n_layers][logical page] -> page id
  PageResolver* resolver = nullptr;  // borrowed; required when any entry is < 0
};

enum class LogitsMode { kNone, kLast, kAll };

// ---- Retrieval attention (DESIGN §5; kernels/cpu/retrieval.h) ----------------------------
// How the next Run calls attend. With `enabled`, layers >= dense_layers attend, per KV head, to
// the sink pages (first sink_tokens), the recent window (the last recent_tokens before the
// batch, and the batch itself) and the top pages by digest score until budget_tokens; the
// selection is made once per batch (over the batch's tokens' scores). A layer whose selection
// would be every page runs dense. The engine decides when to enable it (DESIGN §5 modes).
struct SparseAttention {
  bool enabled = false;
  int dense_layers = 2;
  int budget_tokens = 2048;
  int sink_tokens = 64;
  int recent_tokens = 256;
  kernels::ScoringMode scoring = kernels::ScoringMode::kSketch;
  // How a layer's budget is divided among its KV heads (kernels/cpu/retrieval.h): kPerHead, the
  // default, gives each head exactly its budget; kShared gives n_kv_heads * (budget - sinks -
  // window) candidate pages to the best-scoring (head, page) pairs, so budget_tokens is the
  // per-KV-head average.
  kernels::BudgetSplit split = kernels::BudgetSplit::kPerHead;
};

// Counters since construction: attention lists run (one per layer, KV head and batch) and the
// pages in them; sparse_lists counts those that were a sparse selection.
struct RetrievalCounters {
  int64_t lists = 0, sparse_lists = 0;
  int64_t pages_attended = 0;
};

// Runs the transformer over new tokens of one sequence, writing their K/V into pages.
class ForwardPass {
 public:
  ForwardPass(const Model& model, kernels::ThreadPool& threads, int max_batch_tokens = 512);

  // Processes `tokens` at positions n_past .. n_past + size - 1, in batches of at most
  // max_batch_tokens. logits receives [vocab] (kLast) or [size][vocab] (kAll) floats.
  Status Run(std::span<const int32_t> tokens, int32_t n_past, const KvView& kv, LogitsMode mode,
             std::vector<float>* logits);

  // Time spent in each stage since construction (for the benchmark breakdown), in ms.
  struct Profile {
    double matmul_ms = 0, attention_ms = 0, other_ms = 0;
    double score_ms = 0, select_ms = 0;  // sparse attention: page scoring, top-k + lists
    double promote_ms = 0;  // waiting for cold pages to be promoted (PageResolver::Promote)
  };
  const Profile& profile() const { return profile_; }

  // Retrieval attention for the following Run calls (see SparseAttention).
  void set_sparse(const SparseAttention& sparse) { sparse_ = sparse; }
  const SparseAttention& sparse() const { return sparse_; }
  const RetrievalCounters& retrieval_counters() const { return counters_; }

  // How the following Run calls' matmuls treat activations (kernels::MatMulActs; default kQ8).
  void set_matmul_acts(kernels::MatMulActs acts) { acts_ = acts; }
  kernels::MatMulActs matmul_acts() const { return acts_; }

 private:
  Status RunBatch(std::span<const int32_t> tokens, int32_t n_past, const KvView& kv,
                  LogitsMode mode, float* logits_out);
  // refs[i].page are logical page indices of `table`: replaces each by its device page,
  // promoting the cold ones through kv.resolver.
  Status ResolveCold(const KvView& kv, int layer, const std::vector<int32_t>& table,
                     std::span<kernels::PageRef> refs);

  const Model& model_;
  kernels::ThreadPool& threads_;
  const int max_batch_tokens_;
  // Scratch, sized for max_batch_tokens_.
  std::vector<float> x_, h_, q_, k_, v_, attn_, gate_, up_;
  std::vector<int32_t> positions_;
  std::vector<kernels::PageRef> slots_, pages_;
  Profile profile_;
  SparseAttention sparse_;
  kernels::MatMulActs acts_ = kernels::MatMulActs::kQ8;
  RetrievalCounters counters_;
  std::vector<kernels::PageRef> selected_;  // [n_kv_heads][selected pages]
  // Sequences with cold pages: where each page's digest is, for scoring (KvPool::digest_table),
  // and the cold pages being promoted (logical page -> device page in resolved_).
  std::vector<uint16_t*> digest_table_;
  std::vector<int32_t> cold_ids_, cold_pages_, cold_logical_, resolved_;
};

}  // namespace kvtier::model
