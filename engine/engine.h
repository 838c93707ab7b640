// engine/engine.h — runs requests against one loaded model: prompt building, prefill into paged
// KV, the decode loop, sampling, stop conditions, per-request statistics.
//
// Thread safety: all public methods are safe to call from any thread; Generate() calls are
// serialised internally (one compute thread pool), later issues add a scheduler.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cache/page_pool.h"
#include "cache/tier_manager.h"
#include "storage/segment_store.h"
#include "engine/sampler.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/retrieval.h"
#include "model/model.h"

namespace kvtier::engine {

struct EngineOptions {
  std::string model_path;
  int threads = 0;              // <= 0: one per hardware thread
  int context_tokens = 0;       // longest sequence (prompt + output); 0: the model's trained context
  uint64_t kv_capacity_bytes = 0;  // device-tier KV pool; 0: enough for one context_tokens sequence
  // Hot cache of single pages promoted from the host/disk tiers for sparse attention (and for
  // dense steps over a prefix that does not fit on the device), drawn from the device pool.
  // 0: one sparse step's working set — dense_layers x context pages + the other layers x
  // n_kv_heads x budget_tokens / 16 — at most 3/4 of the pool.
  uint64_t hot_cache_bytes = 0;
  // Prefetch of the previous step's selection (engine/README.md): a background thread reads the
  // disk records of the next layer's previously selected cold pages into a RAM buffer of this
  // size. 0: off.
  uint64_t prefetch_bytes = 64ull << 20;
  int batch_tokens = 512;       // prompt tokens per forward batch
  bool prefix_cache = true;     // reuse the KV of cached prompt prefixes (DESIGN §4)
  uint64_t host_cache_bytes = 1ull << 30;  // host tier (q8 extents in RAM); 0: none
  // Disk tier: segment files under <cache_dir>/kv, the RocksDB index under <state_dir>/kv-index.
  // Empty cache_dir: no disk tier (the cache then does not survive the process).
  std::string cache_dir;
  std::string state_dir;
  uint64_t disk_cache_bytes = 16ull << 30;
  // Codec of the disk tier's records (cache/codec.h names): plain q8, see TierOptions.
  std::string disk_codec = "q8";
  std::string host_codec = "q8";       // codec of the host tier's extents
  // Retrieval attention (DESIGN §5) for tokens processed after a cached context (the uncached
  // rest of a prompt whose prefix was cached, and every generated token): "dense", "sparse",
  // or "auto" (sparse once the context exceeds sparse_min_tokens). Requests may override
  // attention and budget_tokens.
  std::string attention = "auto";
  int budget_tokens = 2048;
  int dense_layers = 2;
  int sink_tokens = 64;
  int recent_tokens = 256;
  // How sparse steps rank pages (kernels/cpu/retrieval.h): "sketch" (estimated attention mass
  // from the digests' key sketches and centroids, the default), "sketch-only" (without the
  // centroid) or "bound" (DESIGN §5's min/max bound); the benchmark reference "exact" reads
  // every key (pages on the device).
  std::string sparse_scoring = "sketch";
  // How a sparse layer's budget is divided among its KV heads (kernels::BudgetSplit):
  // "per-head" (the default: exactly budget_tokens each) or "shared" (n_kv_heads x
  // budget_tokens per layer go to the best-scoring pages of any head; budget_tokens is then
  // the per-head average). On the default model shared is no better (4000 positions: the same
  // top-1 agreement, 7-9% higher KL; passkey/needle within a case or two either way) and
  // widens the union of pages promotion sees by 7-11% (BENCHMARKS.md).
  std::string sparse_split = "per-head";
  // auto goes sparse once the context exceeds this (DESIGN §5's 4096): with the sketch scoring
  // sparse answers passkey/needle cases within two cases in 50 of dense, decodes 1.6x (8K) to
  // 2.3x (16K) faster on the CPU, and its top-1 agreement with dense on natural text is 97.4%
  // at budget 2048 with matmul_activations = f32 (floor 99.9%), 95.4% with q8 (floor 96.6%)
  // (BENCHMARKS.md, "Retrieval attention").
  // Set attention = "dense" (config or request) for exact dense decoding.
  int sparse_min_tokens = 4096;
  // How the CPU matmuls treat activations (kernels::MatMulActs): "f32" (the default) keeps
  // them in float; "q8" rounds them to 8 bits per block of 32 as llama.cpp does. On the
  // default model the rounding flips the top-1 token at ~3% of positions whenever anything
  // upstream changes slightly (dense one token at a time vs the same tokens in one batch: 96.6%
  // agreement with q8, 99.9% with f32), while f32 costs 2-4% of decode speed and nothing in
  // prompt processing on the 2-core VM (BENCHMARKS.md, "Float activations").
  std::string matmul_activations = "f32";
};

// The page scoring named by EngineOptions::sparse_scoring ("sketch", "sketch-only", "bound", or
// the benchmark reference "exact"); any other name is "sketch".
kernels::ScoringMode ScoringModeOf(const std::string& name);
// The split named by EngineOptions::sparse_split ("shared"; any other name is per-head) and
// the activations named by EngineOptions::matmul_activations ("q8"; any other name is f32).
kernels::BudgetSplit BudgetSplitOf(const std::string& name);
kernels::MatMulActs MatMulActsOf(const std::string& name);

struct GenerateRequest {
  std::string prompt;                        // used when messages is empty
  std::vector<model::ChatMessage> messages;  // chat form (template applied)
  bool raw = false;                          // prompt fed as is, without the chat template
  int max_tokens = 256;
  SamplingParams sampling;
  bool seed_given = false;                   // else a random seed is drawn (and reported)
  std::vector<std::string> stop;             // stop strings (not included in the output)
  // The cache namespace (the daemon derives it from the peer's uid; cache_salt narrows it).
  // Sequences share cached prefixes only within one namespace.
  std::string cache_namespace = "local";
  std::string attention;  // "auto", "dense", "sparse"; empty: EngineOptions::attention
  int budget_tokens = 0;  // sparse budget; 0: EngineOptions::budget_tokens
  std::string sparse_scoring;  // as EngineOptions::sparse_scoring; empty: that default
};

struct CachedByTier {
  int64_t device = 0, host = 0, disk = 0, remote = 0;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose KV came from the cache
  CachedByTier cached_by_tier;
  int64_t completion_tokens = 0;
};

struct Timing {
  double ttft_ms = 0;
  double cache_ms = 0;    // finding the cached prefix and promoting it onto the device
  double prefill_ms = 0;  // cache_ms + computing the uncached rest of the prompt
  double decode_ms = 0;
  double decode_tokens_per_s = 0;
};

// Retrieval attention of one request (DESIGN §5).
struct RetrievalUsage {
  std::string attention;          // the mode used: "auto", "dense" or "sparse"
  int64_t sparse_steps = 0;       // forward steps (batches or tokens) that ran sparse layers
  int64_t dense_steps = 0;        // forward steps after the cached context that ran dense
  double pages_attended_avg = 0;  // pages per layer, KV head and step (sparse and dense steps)
  int64_t pages_promoted = 0;     // pages decoded from the host/disk tiers onto the device
  // Selected-page promotion (engine/README.md): a sparse request (or one whose prefix does not
  // fit on the device) leaves the cached extents that are not on the device cold and promotes
  // single pages of single layers as attention selects them.
  int64_t cold_tokens = 0;          // cached prompt tokens left cold (not promoted up front)
  int64_t pages_promoted_host = 0;  // pages decoded from a record in RAM (the host tier)
  int64_t pages_promoted_disk = 0;  // pages whose record had to be read from disk first
  uint64_t bytes_decompressed = 0;  // f16 KV bytes written by page decodes
  int64_t hot_hits = 0, hot_misses = 0;  // selected cold pages already hot / decoded now
  double promote_ms = 0;                 // time spent promoting cold pages
  // Disk records read on the compute thread (the critical path) for page misses.
  int64_t disk_reads = 0;
  // Prefetch (cache::PromotionCounters): records read ahead by the background thread, page
  // misses served from them (first page per record and call, like pages_promoted_disk), misses
  // that waited for a read in progress, records dropped unused.
  int64_t records_prefetched = 0, prefetch_hits = 0, prefetch_waits = 0, prefetch_wasted = 0;
  // Where the forward steps after the cached context spent their time (ForwardPass::Profile;
  // promotion is not in these: it is promote_ms; gathering cold pages' digests is in score_ms).
  double matmul_ms = 0, attention_ms = 0, score_ms = 0, select_ms = 0, other_ms = 0;
};

struct GenerateResult {
  std::string text;
  std::string finish_reason;  // "stop", "length", "cancelled"
  std::vector<int32_t> tokens;
  Usage usage;
  uint64_t bytes_promoted = 0;  // encoded bytes of cached extents decoded onto the device
  RetrievalUsage retrieval;
  Timing timing;
  uint64_t seed = 0;
};

// Called with each generated token and the text it completes (whole UTF-8 characters; may be
// empty while a multi-byte character is incomplete). Return false to cancel.
using TokenCallback = std::function<bool(int32_t token, std::string_view text)>;

// Called during the prompt's prefill with the prompt tokens done so far (cached ones count as
// done) and the total, before the first batch and after each. Return false to cancel: the
// request then ends with Cancelled, and the extents already computed stay cached.
using ProgressCallback = std::function<bool(int64_t done_tokens, int64_t total_tokens)>;

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  ~Engine();

  const model::Model& model() const { return *model_; }
  const EngineOptions& options() const { return options_; }
  int threads() const { return threads_->size(); }

  // Builds the prompt's token ids as Generate would.
  Result<std::vector<int32_t>> PromptTokens(const GenerateRequest& request) const;

  // max_tokens 0 is a prefill: the prompt's KV is computed and cached, nothing is generated.
  Result<GenerateResult> Generate(const GenerateRequest& request, const TokenCallback& on_token,
                                  const ProgressCallback& on_progress = nullptr);

  // Logits for every position of `tokens` (for comparisons with a reference implementation).
  Result<std::vector<float>> AllLogits(const std::vector<int32_t>& tokens);

  // Timed prefill of n_prompt tokens followed by n_gen greedy decode steps (benchmarks).
  struct SpeedResult {
    double prefill_ms = 0, decode_ms = 0;
    int64_t prompt_tokens = 0, decode_tokens = 0;
    model::ForwardPass::Profile profile;  // of the decode steps
    double pages_attended_avg = 0;        // per layer, KV head and decode step
  };
  // The decode steps attend as a request with this `attention` ("dense", "sparse" or "auto"),
  // budget (0: the engine's) and page scoring (empty: the engine's) would after its prompt.
  Result<SpeedResult> MeasureSpeed(const std::vector<int32_t>& prompt, int n_gen,
                                   const std::string& attention = "dense", int budget = 0,
                                   const std::string& scoring = "");

  // Counters of every tier.
  cache::TierStatsSnapshot TierStats();
  // Drops namespace `ns`'s unpinned cached extents from a tier ("device", "host", "disk", "all").
  Result<uint64_t> Evict(const std::string& ns, const std::string& tier);
  // Named pins over the cached prefix of a prompt (after a prefill of it), per namespace.
  Status Pin(const std::string& ns, const std::string& name, const GenerateRequest& prompt);
  Status Unpin(const std::string& ns, const std::string& name);
  std::vector<cache::PinInfo> Pins(const std::string& ns);

 private:
  Engine() = default;
  // Reserves pages for n_tokens, evicting unused cached extents when the pool is short.
  Status ReserveTokens(cache::SequenceKv& seq, int64_t n_tokens);

  EngineOptions options_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<kernels::ThreadPool> threads_;
  std::unique_ptr<cache::PagePool> pages_;
  std::unique_ptr<storage::SegmentStore> disk_;  // before tiers_: outlives it
  std::unique_ptr<cache::TierManager> tiers_;
  std::unique_ptr<model::ForwardPass> forward_;
  std::mutex compute_mu_;  // guards threads_, pages_, tiers_, forward_ (the compute resources)
};

}  // namespace kvtier::engine
