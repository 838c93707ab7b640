#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>

#include "kernels/cpu/retrieval.h"

namespace kvtier::engine {
namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Length of the longest prefix of s that is whole UTF-8 characters (an incomplete trailing
// sequence is held back; invalid bytes are passed through rather than held forever).
size_t CompleteUtf8Prefix(std::string_view s) {
  size_t i = s.size();
  // Look back at most 3 bytes for the start of a multi-byte sequence.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    if (need > back) i = s.size() - back;
    break;
  }
  return i;
}

// ---- Retrieval attention (DESIGN §5) ----
bool ValidAttention(const std::string& m) { return m == "auto" || m == "dense" || m == "sparse"; }

// "exact" is a benchmark reference that reads every key (kernels/cpu/retrieval.h); the forward
// pass falls back to "sketch" in layers with cold pages.
bool ValidScoring(const std::string& m) {
  return m == "sketch" || m == "sketch-only" || m == "bound" || m == "exact";
}

// The per-request retrieval settings (attention mode, budget: 0 = the engine's, scoring).
Status ValidateSparse(const std::string& attention, int budget, const std::string& scoring) {
  if (!ValidAttention(attention)) {
    return InvalidArgumentError("attention must be auto, dense or sparse, not '" + attention + "'");
  }
  if (budget != 0 && budget < 16) return InvalidArgumentError("budget_tokens must be >= 16");
  if (!ValidScoring(scoring)) {
    return InvalidArgumentError(
        "sparse_scoring must be sketch, sketch-only or bound (or the benchmark reference "
        "exact), not '" + scoring + "'");
  }
  return Status::Ok();
}

// Leaves the shared forward pass dense when a request (or a measurement) ends.
struct DenseAtEnd {
  model::ForwardPass* f;
  ~DenseAtEnd() { f->set_sparse({}); }
};

// Pages per attention list between two counter snapshots (0 when no list ran).
double PagesPerList(const model::RetrievalCounters& before, const model::RetrievalCounters& now) {
  const int64_t lists = now.lists - before.lists;
  return lists > 0 ? static_cast<double>(now.pages_attended - before.pages_attended) / lists : 0.0;
}

// Time per stage between two profile snapshots.
model::ForwardPass::Profile ProfileSince(const model::ForwardPass::Profile& before,
                                         const model::ForwardPass::Profile& now) {
  model::ForwardPass::Profile d;
  d.matmul_ms = now.matmul_ms - before.matmul_ms;
  d.attention_ms = now.attention_ms - before.attention_ms;
  d.other_ms = now.other_ms - before.other_ms;
  d.score_ms = now.score_ms - before.score_ms;
  d.select_ms = now.select_ms - before.select_ms;
  d.promote_ms = now.promote_ms - before.promote_ms;
  return d;
}

// The forward pass's attention for a step after the cached context whose context (after the
// step) is context_tokens.
model::SparseAttention SparseFor(const EngineOptions& o, const std::string& mode, int budget,
                                 const std::string& scoring, int64_t context_tokens) {
  model::SparseAttention s;
  s.enabled = mode == "sparse" || (mode == "auto" && context_tokens > o.sparse_min_tokens);
  s.dense_layers = o.dense_layers;
  s.scoring = ScoringModeOf(scoring);
  s.budget_tokens = budget;
  s.sink_tokens = o.sink_tokens;
  s.recent_tokens = o.recent_tokens;
  s.split = BudgetSplitOf(o.sparse_split);
  return s;
}

// The cold pages of one sequence (model::PageResolver over the tier manager's hot cache).
class ColdPages final : public model::PageResolver {
 public:
  ColdPages(cache::TierManager& tiers, const std::vector<cache::ColdExtent>& cold,
            const kernels::KvPool& pool)
      : tiers_(tiers), cold_(cold), digest_halfs_(pool.DigestHalfs()) {}

  const uint16_t* ColdDigest(int layer, int32_t entry) override {
    const cache::ColdExtent& e = cold_[cache::ColdIndexOf(entry)];
    return e.digests->data() +
           (static_cast<size_t>(layer) * cache::kExtentPages + cache::ColdPageOf(entry)) *
               digest_halfs_;
  }

  // Promotes the layer's selection, remembers it as this layer's prediction for the next step,
  // and asks for the next layer's previous selection to be prefetched while this layer computes.
  Status Promote(int layer, std::span<const int32_t> cold, std::span<int32_t> pages) override {
    if (static_cast<size_t>(layer) >= last_.size()) last_.resize(layer + 1);
    std::vector<cache::ColdPageRef>& refs = last_[layer];
    refs.resize(cold.size());
    for (size_t i = 0; i < cold.size(); ++i) {
      refs[i] = cache::ColdPageRef{&cold_[cache::ColdIndexOf(cold[i])].key, layer,
                                   cache::ColdPageOf(cold[i])};
    }
    RETURN_IF_ERROR(tiers_.PromotePages(refs, pages));
    if (static_cast<size_t>(layer) + 1 < last_.size()) tiers_.PrefetchPages(last_[layer + 1]);
    return Status::Ok();
  }

  // The next step starts at the first layer: prefetch its selection of this step.
  void EndStep() override {
    for (const std::vector<cache::ColdPageRef>& refs : last_) {
      if (refs.empty()) continue;
      tiers_.PrefetchPages(refs);
      break;
    }
  }

 private:
  cache::TierManager& tiers_;
  const std::vector<cache::ColdExtent>& cold_;
  const size_t digest_halfs_;
  // Per layer, the cold pages promoted at its last Promote call (this step's or the previous
  // step's selection): the prediction of what the layer promotes next.
  std::vector<std::vector<cache::ColdPageRef>> last_;
};

}  // namespace

kernels::ScoringMode ScoringModeOf(const std::string& name) {
  return name == "bound"         ? kernels::ScoringMode::kBound
         : name == "exact"       ? kernels::ScoringMode::kExact
         : name == "sketch-only" ? kernels::ScoringMode::kSketchOnly
                                 : kernels::ScoringMode::kSketch;
}

kernels::BudgetSplit BudgetSplitOf(const std::string& name) {
  return name == "shared" ? kernels::BudgetSplit::kShared : kernels::BudgetSplit::kPerHead;
}

kernels::MatMulActs MatMulActsOf(const std::string& name) {
  return name == "q8" ? kernels::MatMulActs::kQ8 : kernels::MatMulActs::kF32;
}

Engine::~Engine() = default;

Status Engine::ReserveTokens(cache::SequenceKv& seq, int64_t n_tokens) {
  const int64_t page_tokens = pages_->view().page_tokens;
  const int64_t have = seq.capacity_tokens() / page_tokens;
  const int64_t want = (n_tokens + page_tokens - 1) / page_tokens;
  if (want > have) {
    RETURN_IF_ERROR(tiers_->EnsureFreePages((want - have) * model_->config().n_layers));
  }
  return seq.Reserve(n_tokens);
}

cache::TierStatsSnapshot Engine::TierStats() {
  std::lock_guard<std::mutex> lock(compute_mu_);
  return tiers_->Stats();
}

Result<uint64_t> Engine::Evict(const std::string& ns, const std::string& tier) {
  std::lock_guard<std::mutex> lock(compute_mu_);
  return tiers_->Evict(ns, tier);
}

Status Engine::Pin(const std::string& ns, const std::string& name, const GenerateRequest& prompt) {
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens, PromptTokens(prompt));
  std::lock_guard<std::mutex> lock(compute_mu_);
  return tiers_->Pin(ns, name, tokens);
}

Status Engine::Unpin(const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> lock(compute_mu_);
  return tiers_->Unpin(ns, name);
}

std::vector<cache::PinInfo> Engine::Pins(const std::string& ns) {
  std::lock_guard<std::mutex> lock(compute_mu_);
  return tiers_->Pins(ns);
}

Result<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  if (options.budget_tokens == 0) return InvalidArgumentError("budget_tokens must be >= 16");
  RETURN_IF_ERROR(ValidateSparse(options.attention, options.budget_tokens, options.sparse_scoring));
  if (options.sparse_split != "shared" && options.sparse_split != "per-head") {
    return InvalidArgumentError("sparse_split must be shared or per-head, not '" +
                                options.sparse_split + "'");
  }
  if (options.matmul_activations != "q8" && options.matmul_activations != "f32") {
    return InvalidArgumentError("matmul_activations must be q8 or f32, not '" +
                                options.matmul_activations + "'");
  }
  ASSIGN_OR_RETURN(e->model_, model::Model::Load(options.model_path));
  const model::ModelConfig& c = e->model_->config();
  if (e->options_.context_tokens <= 0) e->options_.context_tokens = c.context_length;
  e->threads_ = std::make_unique<kernels::ThreadPool>(
      kernels::ThreadPool::DefaultThreads(options.threads));
  cache::PageShape shape{16, c.n_kv_heads, c.head_dim};
  uint64_t capacity = options.kv_capacity_bytes;
  if (capacity == 0) {
    const uint64_t pages_per_layer = (e->options_.context_tokens + 15) / 16 + 1;
    capacity = pages_per_layer * c.n_layers * 2ull * 16 * c.n_kv_heads * c.head_dim * 2;
  }
  ASSIGN_OR_RETURN(e->pages_, cache::PagePool::Create(shape, capacity));
  const cache::ExtentShape extent_shape = cache::ExtentShapeOf(e->pages_->view(), c.n_layers);
  cache::KeyScheme scheme;
  scheme.model_fingerprint = e->model_->fingerprint();
  // Keys name the lossy form the lower tiers keep (q8), so an extent means the same KV
  // whichever tier serves it.
  scheme.layout = cache::LayoutId(cache::CodecSpec{cache::Codec::kQ8, false}, extent_shape);
  scheme.extent_tokens = extent_shape.tokens();
  cache::TierOptions tier_options;
  tier_options.host_capacity_bytes = options.host_cache_bytes;
  ASSIGN_OR_RETURN(tier_options.host_codec, cache::ParseCodecSpec(options.host_codec));
  ASSIGN_OR_RETURN(tier_options.disk_codec, cache::ParseCodecSpec(options.disk_codec));
  tier_options.threads = e->threads_.get();
  tier_options.prefetch_bytes = options.prefetch_bytes;
  if (options.hot_cache_bytes > 0) {
    tier_options.hot_cache_pages =
        static_cast<int64_t>(options.hot_cache_bytes / e->pages_->page_bytes());
  } else {
    // One sparse step's working set: every page of the dense layers, and in each sparse layer
    // the union of the KV heads' selections (up to n_kv_heads x budget/16 pages: promotion is
    // per page, selection per head). Smaller, and every step promotes its pages again (the
    // hit rate fell to 0 in the tiered benchmark with 2 x budget/16 x n_layers at budget 2048).
    const int64_t per_layer = static_cast<int64_t>(options.budget_tokens / 16) * c.n_kv_heads;
    const int64_t dense = std::min(options.dense_layers, c.n_layers);
    const int64_t working_set = dense * ((e->options_.context_tokens + 15) / 16) +
                                (c.n_layers - dense) * per_layer;
    tier_options.hot_cache_pages =
        std::min<int64_t>(working_set, e->pages_->capacity_pages() * 3 / 4);
  }
  if (!options.cache_dir.empty() && options.prefix_cache) {
    storage::SegmentStoreOptions so;
    so.dir = options.cache_dir + "/kv";
    so.index_dir = (options.state_dir.empty() ? options.cache_dir : options.state_dir) + "/kv-index";
    so.disk_budget_bytes = options.disk_cache_bytes;
    std::error_code ec;
    std::filesystem::create_directories(so.dir, ec);
    std::filesystem::create_directories(so.index_dir, ec);
    auto store = storage::SegmentStore::Open(so);
    if (!store.ok()) return store.status().WithContext("disk tier");
    e->disk_ = std::move(store).value();
    tier_options.disk = e->disk_.get();
  }
  e->tiers_ = std::make_unique<cache::TierManager>(*e->pages_, extent_shape, std::move(scheme),
                                                   tier_options);
  e->forward_ = std::make_unique<model::ForwardPass>(*e->model_, *e->threads_,
                                                     std::max(1, options.batch_tokens));
  e->forward_->set_matmul_acts(MatMulActsOf(options.matmul_activations));
  return e;
}

Result<std::vector<int32_t>> Engine::PromptTokens(const GenerateRequest& request) const {
  const model::Tokenizer& tok = model_->tokenizer();
  std::string text;
  if (!request.messages.empty()) {
    ASSIGN_OR_RETURN(text, tok.ApplyChatTemplate(request.messages, true));
  } else if (request.raw) {
    text = request.prompt;
  } else {
    ASSIGN_OR_RETURN(text, tok.ApplyChatTemplate({{"user", request.prompt}}, true));
  }
  std::vector<int32_t> ids = tok.Encode(text, /*parse_special=*/true, /*add_bos=*/true);
  if (ids.empty()) return InvalidArgumentError("the prompt is empty");
  return ids;
}

Result<GenerateResult> Engine::Generate(const GenerateRequest& request,
                                        const TokenCallback& on_token,
                                        const ProgressCallback& on_progress) {
  const Clock::time_point start = Clock::now();
  if (request.max_tokens < 0) return InvalidArgumentError("max_tokens must be >= 0");
  const std::string attention = request.attention.empty() ? options_.attention : request.attention;
  const std::string& scoring =
      request.sparse_scoring.empty() ? options_.sparse_scoring : request.sparse_scoring;
  RETURN_IF_ERROR(ValidateSparse(attention, request.budget_tokens, scoring));
  const int budget = request.budget_tokens > 0 ? request.budget_tokens : options_.budget_tokens;
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptTokens(request));
  const int64_t limit = options_.context_tokens;
  if (static_cast<int64_t>(prompt.size()) + std::max(1, request.max_tokens) > limit) {
    return ResourceExhaustedError("context_overflow: prompt of " + std::to_string(prompt.size()) +
                                  " tokens + max_tokens " + std::to_string(request.max_tokens) +
                                  " exceeds the context of " + std::to_string(limit) + " tokens");
  }

  GenerateResult result;
  result.usage.prompt_tokens = static_cast<int64_t>(prompt.size());
  SamplingParams sp = request.sampling;
  if (!request.seed_given) sp.seed = std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
  result.seed = sp.seed;
  Sampler sampler(sp);
  const model::Tokenizer& tok = model_->tokenizer();
  const int vocab = model_->config().vocab_size;

  std::lock_guard<std::mutex> lock(compute_mu_);
  const int n_layers = model_->config().n_layers;
  cache::SequenceKv seq(*pages_, n_layers);
  cache::ExtentLease lease;  // the cached prefix in use: not evictable until we finish
  // Lower tiers get the extents this request published once it is answered (or fails).
  struct WriteThroughAtEnd {
    cache::TierManager* tiers;
    ~WriteThroughAtEnd() { tiers->WriteThrough(); }
  } write_through{tiers_.get()};
  const Clock::time_point prefill_start = Clock::now();
  int64_t cached = 0;
  std::vector<cache::ColdExtent> cold;  // the prefix's extents left in the lower tiers
  const cache::PromotionCounters promotion_before = tiers_->promotion_counters();
  if (options_.prefix_cache) {
    // A sparse request promotes only the pages attention selects; any request whose prefix does
    // not fit on the device does too (dense steps then promote each layer's pages in turn).
    const bool sparse_request =
        attention == "sparse" ||
        (attention == "auto" && static_cast<int64_t>(prompt.size()) > options_.sparse_min_tokens);
    // At least the last prompt token is computed: its logits start the generation.
    ASSIGN_OR_RETURN(
        cache::PrefixHit hit,
        tiers_->AcquirePrefix(request.cache_namespace, prompt,
                              static_cast<int64_t>(prompt.size()) - 1,
                              sparse_request ? cache::PromoteMode::kSelected
                                             : cache::PromoteMode::kWholeIfFits,
                              static_cast<int64_t>(prompt.size()) + request.max_tokens));
    RETURN_IF_ERROR(seq.AdoptPrefix(hit.page_tables));
    // (Pages decoded from a lower tier got their digests from the tier manager.)
    const int pt = pages_->view().page_tokens;
    result.retrieval.pages_promoted =
        (hit.tokens_from_host + hit.tokens_from_disk - hit.tokens_cold) / pt * n_layers;
    result.retrieval.cold_tokens = hit.tokens_cold;
    cold = std::move(hit.cold);
    result.timing.cache_ms = MsSince(prefill_start);
    cached = hit.tokens;
    result.usage.cached_by_tier.device = hit.tokens_from_device;
    result.usage.cached_by_tier.host = hit.tokens_from_host;
    result.usage.cached_by_tier.disk = hit.tokens_from_disk;
    result.bytes_promoted = hit.bytes_promoted;
    lease = std::move(hit.lease);
  }
  ColdPages cold_pages(*tiers_, cold, pages_->view());
  result.usage.cached_tokens = cached;
  RETURN_IF_ERROR(ReserveTokens(seq, static_cast<int64_t>(prompt.size())));
  model::KvView kv{pages_->view(), seq.page_tables(), cold.empty() ? nullptr : &cold_pages};
  std::vector<float> logits;
  // Retrieval attention applies after a cached context; the pass goes back to dense after.
  result.retrieval.attention = attention;
  DenseAtEnd dense_at_end{forward_.get()};
  // Counted over the steps after the cached context only (re-taken below when there is none).
  model::RetrievalCounters counters_before = forward_->retrieval_counters();
  model::ForwardPass::Profile profile_before = forward_->profile();
  auto set_attention = [&](bool after_cache, int64_t context_tokens) {
    model::SparseAttention s;
    if (after_cache) {
      s = SparseFor(options_, attention, budget, scoring, context_tokens);
      ++(s.enabled ? result.retrieval.sparse_steps : result.retrieval.dense_steps);
    }
    forward_->set_sparse(s);
  };
  // The uncached suffix, in batches, reporting progress (and honouring cancellation) between
  // them. Only the last batch needs logits.
  const int64_t total = static_cast<int64_t>(prompt.size());
  const int64_t step = std::max(1, options_.batch_tokens);
  if (on_progress && !on_progress(cached, total)) return CancelledError("cancelled");
  for (int64_t done = cached; done < total; done += step) {
    const int64_t n = std::min(step, total - done);
    const bool last = done + n == total;
    set_attention(cached > 0, done + n);
    RETURN_IF_ERROR(forward_->Run(std::span<const int32_t>(prompt).subspan(done, n),
                                  static_cast<int32_t>(done), kv,
                                  last ? model::LogitsMode::kLast : model::LogitsMode::kNone,
                                  last ? &logits : nullptr));
    if (on_progress && !on_progress(done + n, total)) {
      if (options_.prefix_cache) {  // what was computed stays useful
        RETURN_IF_ERROR(tiers_->Publish(request.cache_namespace, prompt, seq.page_tables(),
                                        done + n));
      }
      return CancelledError("cancelled");
    }
  }
  if (options_.prefix_cache) {
    RETURN_IF_ERROR(tiers_->Publish(request.cache_namespace, prompt, seq.page_tables(),
                                    static_cast<int64_t>(prompt.size())));
  }
  result.timing.prefill_ms = MsSince(prefill_start);
  if (cached == 0) {
    counters_before = forward_->retrieval_counters();
    profile_before = forward_->profile();
  }

  std::string pending;  // decoded bytes not yet emitted (incomplete UTF-8 or a possible stop)
  size_t max_stop = 0;
  for (const auto& s : request.stop) max_stop = std::max(max_stop, s.size());
  int32_t n_past = static_cast<int32_t>(prompt.size());
  result.finish_reason = "length";
  Clock::time_point decode_start = Clock::now();
  for (int step = 0; step < request.max_tokens; ++step) {
    const int32_t token = sampler.Sample(std::span<const float>(logits.data(), vocab));
    if (step == 0) {
      result.timing.ttft_ms = MsSince(start);
      decode_start = Clock::now();
    }
    if (tok.IsEndOfGeneration(token)) {
      result.finish_reason = "stop";
      break;
    }
    result.tokens.push_back(token);
    pending += tok.TokenPiece(token);
    // Stop strings: cut at the first occurrence.
    bool stopped = false;
    for (const auto& s : request.stop) {
      if (s.empty()) continue;
      const size_t at = pending.find(s);
      if (at != std::string::npos) {
        pending.resize(at);
        stopped = true;
      }
    }
    size_t emit = CompleteUtf8Prefix(pending);
    if (!stopped && max_stop > 1) {
      // Hold back a tail that could still become a stop string.
      emit = std::min(emit, pending.size() >= max_stop - 1 ? pending.size() - (max_stop - 1) : 0);
      emit = CompleteUtf8Prefix(std::string_view(pending).substr(0, emit));
    }
    if (stopped) emit = pending.size();
    const std::string out = pending.substr(0, emit);
    pending.erase(0, emit);
    result.text += out;
    if (on_token && !on_token(token, out)) {
      result.finish_reason = "cancelled";
      break;
    }
    if (stopped) {
      result.finish_reason = "stop";
      break;
    }
    if (step + 1 == request.max_tokens) break;
    // Feed the token back.
    RETURN_IF_ERROR(ReserveTokens(seq, n_past + 1));
    kv.page_tables = seq.page_tables();
    const int32_t one[1] = {token};
    set_attention(true, n_past + 1);
    RETURN_IF_ERROR(forward_->Run(one, n_past, kv, model::LogitsMode::kLast, &logits));
    ++n_past;
  }
  if (result.finish_reason != "cancelled" && !pending.empty()) {
    result.text += pending;
    if (on_token) on_token(-1, pending);
  }
  result.usage.completion_tokens = static_cast<int64_t>(result.tokens.size());
  {
    const cache::PromotionCounters p = tiers_->promotion_counters();
    RetrievalUsage& r = result.retrieval;
    r.pages_promoted_host = p.pages_from_host - promotion_before.pages_from_host;
    r.pages_promoted_disk = p.pages_from_disk - promotion_before.pages_from_disk;
    r.prefetch_hits = p.prefetch_hits - promotion_before.prefetch_hits;
    r.pages_promoted += r.pages_promoted_host + r.pages_promoted_disk + r.prefetch_hits;
    r.disk_reads = p.disk_reads - promotion_before.disk_reads;
    r.records_prefetched = p.records_prefetched - promotion_before.records_prefetched;
    r.prefetch_waits = p.prefetch_waits - promotion_before.prefetch_waits;
    r.prefetch_wasted = p.prefetch_wasted - promotion_before.prefetch_wasted;
    r.bytes_decompressed = p.bytes_decompressed - promotion_before.bytes_decompressed;
    r.hot_hits = p.hot_hits - promotion_before.hot_hits;
    r.hot_misses = p.hot_misses - promotion_before.hot_misses;
    r.promote_ms = p.promote_ms - promotion_before.promote_ms;
  }
  {
    result.retrieval.pages_attended_avg =
        PagesPerList(counters_before, forward_->retrieval_counters());
    const model::ForwardPass::Profile d = ProfileSince(profile_before, forward_->profile());
    RetrievalUsage& r = result.retrieval;
    r.matmul_ms = d.matmul_ms;
    r.attention_ms = d.attention_ms;
    r.score_ms = d.score_ms;
    r.select_ms = d.select_ms;
    r.other_ms = d.other_ms;
  }
  if (options_.prefix_cache && n_past > static_cast<int32_t>(prompt.size())) {
    // The conversation so far (prompt + the generated tokens whose KV exists) becomes a
    // reusable prefix too: a follow-up turn starts from it.
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), result.tokens.begin(), result.tokens.end());
    RETURN_IF_ERROR(tiers_->Publish(request.cache_namespace, all, seq.page_tables(), n_past));
  }
  if (result.timing.ttft_ms == 0) result.timing.ttft_ms = MsSince(start);
  result.timing.decode_ms = MsSince(decode_start);
  if (result.usage.completion_tokens > 1 && result.timing.decode_ms > 0) {
    result.timing.decode_tokens_per_s =
        (result.usage.completion_tokens - 1) * 1000.0 / result.timing.decode_ms;
  }
  return result;
}

Result<std::vector<float>> Engine::AllLogits(const std::vector<int32_t>& tokens) {
  if (tokens.empty()) return InvalidArgumentError("no tokens");
  std::lock_guard<std::mutex> lock(compute_mu_);
  cache::SequenceKv seq(*pages_, model_->config().n_layers);
  RETURN_IF_ERROR(ReserveTokens(seq, static_cast<int64_t>(tokens.size())));
  model::KvView kv{pages_->view(), seq.page_tables()};
  std::vector<float> logits;
  RETURN_IF_ERROR(forward_->Run(tokens, 0, kv, model::LogitsMode::kAll, &logits));
  return logits;
}

Result<Engine::SpeedResult> Engine::MeasureSpeed(const std::vector<int32_t>& prompt, int n_gen,
                                                 const std::string& attention, int budget,
                                                 const std::string& scoring) {
  if (prompt.empty()) return InvalidArgumentError("no tokens");
  const std::string& scoring_used = scoring.empty() ? options_.sparse_scoring : scoring;
  RETURN_IF_ERROR(ValidateSparse(attention, budget, scoring_used));
  std::lock_guard<std::mutex> lock(compute_mu_);
  cache::SequenceKv seq(*pages_, model_->config().n_layers);
  RETURN_IF_ERROR(ReserveTokens(seq, static_cast<int64_t>(prompt.size()) + n_gen));
  model::KvView kv{pages_->view(), seq.page_tables()};
  std::vector<float> logits;
  SpeedResult r;
  Clock::time_point t0 = Clock::now();
  RETURN_IF_ERROR(forward_->Run(prompt, 0, kv, model::LogitsMode::kLast, &logits));
  r.prefill_ms = MsSince(t0);
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  const model::ForwardPass::Profile mid = forward_->profile();
  int32_t n_past = static_cast<int32_t>(prompt.size());
  DenseAtEnd dense_at_end{forward_.get()};
  const model::RetrievalCounters c0 = forward_->retrieval_counters();
  t0 = Clock::now();
  for (int i = 0; i < n_gen; ++i) {
    forward_->set_sparse(SparseFor(options_, attention, budget > 0 ? budget : options_.budget_tokens,
                                   scoring_used, n_past + 1));
    const int32_t one[1] = {Sampler::Argmax(logits)};
    RETURN_IF_ERROR(forward_->Run(one, n_past++, kv, model::LogitsMode::kLast, &logits));
  }
  r.decode_ms = MsSince(t0);
  r.pages_attended_avg = PagesPerList(c0, forward_->retrieval_counters());
  r.decode_tokens = n_gen;
  r.profile = ProfileSince(mid, forward_->profile());
  return r;
}

}  // namespace kvtier::engine
