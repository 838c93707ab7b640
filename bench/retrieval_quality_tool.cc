// retrieval_quality_tool — quality and speed of retrieval (sparse) attention, DESIGN §5.
//
//   retrieval_quality_tool cases [--kind passkey|needle|both] [--contexts 4096,8192]
//                                [--cases 50] [--budgets 1024,2048] [--seed S]
//   retrieval_quality_tool agree [--text F,F,...] [--prefix 4096] [--eval 4000]
//                                [--budgets 1024,2048]
//   retrieval_quality_tool speed [--contexts 8192,16384] [--steps 8] [--rounds 3]
//                                [--budget 2048]
//   retrieval_quality_tool tiered [--context 8192] [--cases 10] [--budget 2048]
//                                 [--device-frac 0.5] [--host-frac 0.25] [--hot-frac 0.9]
//                                 [--kind passkey|needle] [--disk-codec q8+zstd]
//   every subcommand: [--dense-layers 2] [--sink 64] [--recent 256] (the sparse layout)
//   common: [--model M] [--threads T] [--scoring sketch,sketch-only,bound] (page scoring of the
//   sparse runs, kernels/cpu/retrieval.h; each listed mode is run; also `exact`, a reference
//   computed from the keys, for agree and speed) [--split shared|per-head] (how a layer's
//   budget is divided among its KV heads) [--acts q8|f32] (the matmuls' activations, for
//   every run: kernels::MatMulActs)
//
// cases: seeded passkey / needle-in-a-haystack cases (bench/retrieval_cases.h), needle depths
//   spread evenly over 0..100%. Per case the haystack is prefilled densely and cached, then the
//   question is asked (the new part of the prompt) densely and sparsely at each budget, greedy;
//   exact match of the first number of the answer.
// agree: natural text (default: license texts under /usr/share/common-licenses). Prefills
//   `prefix` tokens, then feeds the next `eval` tokens teacher-forced: dense in batches (logits
//   of every position), dense one token at a time (the floating-point noise floor of the
//   comparison: only the summation order differs), and sparse one token at a time per budget.
//   Reports top-1 agreement with the dense batch, agreement where its top-1 margin is >= 1
//   logit, the mean and 99th percentile of KL(dense || other) per position, and top-1
//   agreement and mean KL against dense one token at a time (the same kernels as the sparse
//   runs: only the attention differs, so this comparison has no noise floor).
// tiered: the haystacks are prefilled by an engine with a disk cache (written through to the
//   host and disk tiers); a fresh engine whose device pool and host tier are capped to the given
//   fractions of the context's KV answers sparsely, promoting only selected pages. Reports
//   accuracy against dense and sparse with everything on the device, the promotion and prefetch
//   counters and where the capped requests' time goes.
// speed: prefills `context` tokens of the text, then decodes from the same position in
//   interleaved rounds (dense `steps` tokens, then sparse `steps` tokens, rewriting the same
//   positions), and reports tokens/s and where the time goes.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/retrieval_cases.h"
#include "cache/page_pool.h"
#include "engine/engine.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"
#include "model/model.h"

namespace {

namespace bench = kvtier::bench;
namespace cache = kvtier::cache;
namespace engine = kvtier::engine;
namespace kernels = kvtier::kernels;
namespace model = kvtier::model;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& m) {
  std::fprintf(stderr, "retrieval_quality_tool: %s\n", m.c_str());
  return 1;
}

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::vector<int> IntList(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(std::atoi(item.c_str()));
  }
  return out;
}

std::vector<std::string> StrList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

struct Args {
  std::map<std::string, std::string> v;
  std::string Get(const std::string& k, const std::string& def) const {
    auto it = v.find(k);
    return it == v.end() ? def : it->second;
  }
};

// The engine settings every subcommand takes from the command line: --model, --threads, the
// sparse layout (--dense-layers, --sink, --recent), --split and --acts; defaults as
// engine::EngineOptions.
engine::EngineOptions OptionsOf(const Args& a) {
  engine::EngineOptions o;
  o.model_path = a.Get("model", "");
  o.threads = std::atoi(a.Get("threads", "2").c_str());
  o.dense_layers = std::atoi(a.Get("dense-layers", std::to_string(o.dense_layers)).c_str());
  o.sink_tokens = std::atoi(a.Get("sink", std::to_string(o.sink_tokens)).c_str());
  o.recent_tokens = std::atoi(a.Get("recent", std::to_string(o.recent_tokens)).c_str());
  o.sparse_split = a.Get("split", o.sparse_split);
  o.matmul_activations = a.Get("acts", o.matmul_activations);
  return o;
}

// ---- cases ------------------------------------------------------------------------------------

int RunCases(const Args& a) {
  const std::vector<int> contexts = IntList(a.Get("contexts", "4096,8192"));
  // Each (scoring, budget) pair is one sparse column.
  const std::vector<std::string> scorings = StrList(a.Get("scoring", "sketch"));
  std::vector<int> budgets;
  std::vector<std::string> scoring_of;
  for (const std::string& sc : scorings) {
    for (int b : IntList(a.Get("budgets", "1024,2048"))) {
      budgets.push_back(b);
      scoring_of.push_back(sc);
    }
  }
  const int n_cases = std::atoi(a.Get("cases", "50").c_str());
  const uint64_t seed = std::strtoull(a.Get("seed", "1").c_str(), nullptr, 10);
  const std::string kinds = a.Get("kind", "both");
  int max_ctx = 0;
  for (int c : contexts) max_ctx = std::max(max_ctx, c);
  engine::EngineOptions o = OptionsOf(a);
  o.context_tokens = max_ctx + 256;
  o.host_cache_bytes = 0;  // device tier only: no write-through encoding in the loop
  // Room for two sequences and the cached haystacks of the previous case.
  o.kv_capacity_bytes = 4ull * (max_ctx + 256) / 16 * 30 * 12288;
  auto e = engine::Engine::Create(o);
  if (!e.ok()) return Fail(e.status().ToString());
  engine::Engine& eng = **e;

  std::printf("| task | context | cases | dense | ");
  for (size_t b = 0; b < budgets.size(); ++b) {
    std::printf("sparse %d %s | ratio | pages/step |", budgets[b], scoring_of[b].c_str());
  }
  std::printf(" s/case |\n|---|---|---|---|");
  for (size_t i = 0; i < budgets.size(); ++i) std::printf("---|---|---|");
  std::printf("---|\n");
  for (int kind_i = 0; kind_i < 2; ++kind_i) {
    const bench::CaseKind kind = kind_i == 0 ? bench::CaseKind::kPasskey : bench::CaseKind::kNeedle;
    const char* name = kind_i == 0 ? "passkey" : "needle";
    if (kinds != "both" && kinds != name) continue;
    for (int ctx : contexts) {
      int dense_ok = 0;
      std::vector<int> sparse_ok(budgets.size(), 0);
      std::vector<double> pages(budgets.size(), 0.0);
      const Clock::time_point t0 = Clock::now();
      const int only = std::atoi(a.Get("only", "-1").c_str());  // debugging: one case
      for (int i = 0; i < n_cases; ++i) {
        if (only >= 0 && i != only) continue;
        const double depth = n_cases > 1 ? static_cast<double>(i) / (n_cases - 1) : 0.5;
        // Deepest needle first: later cases reuse the longest shared prefix.
        const double d = 1.0 - depth;
        const bench::RetrievalCase c =
            bench::MakeCase(eng, kind, ctx, d, seed * 1000 + ctx, seed * 1000003 + i * 7919 + ctx);
        if (auto s = bench::PrefillHaystack(eng, c); !s.ok()) return Fail(s.ToString());
        auto dense = bench::AskQuestion(eng, c, "dense", 0);
        if (!dense.ok()) return Fail(dense.status().ToString());
        dense_ok += dense->correct;
        std::string line = std::string(name) + " ctx " + std::to_string(ctx) + " depth " +
                           std::to_string(d).substr(0, 4) + " answer " + c.answer + " dense '" +
                           dense->output + "'";
        for (size_t b = 0; b < budgets.size(); ++b) {
          auto sp = bench::AskQuestion(eng, c, "sparse", budgets[b], scoring_of[b]);
          if (!sp.ok()) return Fail(sp.status().ToString());
          sparse_ok[b] += sp->correct;
          pages[b] += sp->result.retrieval.pages_attended_avg;
          line += " sparse" + std::to_string(budgets[b]) + scoring_of[b] + " '" + sp->output + "'";
        }
        std::fprintf(stderr, "%s\n", line.c_str());
      }
      const double secs = MsSince(t0) / 1000.0;
      std::printf("| %s | %d | %d | %d/%d = %.2f |", name, ctx, n_cases, dense_ok, n_cases,
                  static_cast<double>(dense_ok) / n_cases);
      for (size_t b = 0; b < budgets.size(); ++b) {
        std::printf(" %d/%d = %.2f | %.3f | %.1f |", sparse_ok[b], n_cases,
                    static_cast<double>(sparse_ok[b]) / n_cases,
                    dense_ok > 0 ? static_cast<double>(sparse_ok[b]) / dense_ok : 0.0,
                    pages[b] / n_cases);
      }
      std::printf(" %.1f |\n", secs / n_cases);
      std::fflush(stdout);
    }
  }
  return 0;
}

// ---- shared by agree and speed: a forward pass over a page pool ------------------------------

struct Rig {
  std::unique_ptr<model::Model> m;
  std::unique_ptr<kernels::ThreadPool> threads;
  std::unique_ptr<cache::PagePool> pool;
  std::unique_ptr<cache::SequenceKv> seq;
  std::unique_ptr<model::ForwardPass> fwd;
  model::KvView kv;
};

kvtier::Status MakeRig(const Args& a, int64_t tokens, Rig* r) {
  const engine::EngineOptions o = OptionsOf(a);
  ASSIGN_OR_RETURN(r->m, model::Model::Load(o.model_path));
  const model::ModelConfig& c = r->m->config();
  r->threads = std::make_unique<kernels::ThreadPool>(o.threads);
  cache::PageShape shape{16, c.n_kv_heads, c.head_dim};
  const uint64_t pages = static_cast<uint64_t>((tokens + 15) / 16 + 1) * c.n_layers;
  ASSIGN_OR_RETURN(
      r->pool, cache::PagePool::Create(shape, pages * 2ull * 16 * c.n_kv_heads * c.head_dim * 2));
  r->seq = std::make_unique<cache::SequenceKv>(*r->pool, c.n_layers);
  RETURN_IF_ERROR(r->seq->Reserve(tokens));
  r->fwd = std::make_unique<model::ForwardPass>(*r->m, *r->threads, 512);
  if (o.matmul_activations != "q8" && o.matmul_activations != "f32") {
    return kvtier::InvalidArgumentError("--acts: q8 or f32");
  }
  r->fwd->set_matmul_acts(engine::MatMulActsOf(o.matmul_activations));
  r->kv = model::KvView{r->pool->view(), r->seq->page_tables()};
  return kvtier::Status::Ok();
}

kvtier::Result<std::vector<int32_t>> TextTokens(const Args& a, const model::Model& m,
                                                int64_t need) {
  const std::string files =
      a.Get("text",
            "/usr/share/common-licenses/GPL-3,/usr/share/common-licenses/GPL-2,"
            "/usr/share/common-licenses/MPL-2.0,/usr/share/common-licenses/Apache-2.0,"
            "/usr/share/common-licenses/LGPL-2.1,/usr/share/common-licenses/GFDL-1.3");
  std::string text;
  std::stringstream ss(files);
  std::string f;
  while (std::getline(ss, f, ',')) {
    std::ifstream in(f);
    if (!in) return kvtier::InvalidArgumentError("cannot read " + f);
    std::stringstream buf;
    buf << in.rdbuf();
    text += buf.str() + "\n\n";
  }
  std::vector<int32_t> t = m.tokenizer().Encode(text, false, false);
  if (t.empty()) return kvtier::InvalidArgumentError("empty text");
  while (static_cast<int64_t>(t.size()) < need) {  // repeat (speed runs past the text)
    const size_t n = t.size();
    for (size_t i = 0; i < n && static_cast<int64_t>(t.size()) < need; ++i) t.push_back(t[i]);
  }
  t.resize(need);
  return t;
}

kvtier::Status Prefill(Rig& r, const std::vector<int32_t>& tokens, int64_t n) {
  r.fwd->set_sparse({});
  return r.fwd->Run(std::span<const int32_t>(tokens).first(n), 0, r.kv, model::LogitsMode::kNone,
                    nullptr);
}

// The sparse settings of agree and speed: the budget and scoring of the run, the layout and
// split flags shared by every run (OptionsOf).
model::SparseAttention SparseOf(const Args& a, int budget, const std::string& scoring) {
  model::SparseAttention s;
  s.enabled = true;
  s.budget_tokens = budget;
  const engine::EngineOptions o = OptionsOf(a);
  s.dense_layers = o.dense_layers;
  s.sink_tokens = o.sink_tokens;
  s.recent_tokens = o.recent_tokens;
  s.scoring = engine::ScoringModeOf(scoring);
  s.split = engine::BudgetSplitOf(o.sparse_split);
  return s;
}

// ---- agree ------------------------------------------------------------------------------------

struct Agreement {
  int64_t n = 0, same = 0, margin_n = 0, margin_same = 0;
  std::vector<double> kl;
};

void Compare(const float* ref, const float* got, int vocab, Agreement* a) {
  const int r1 = static_cast<int>(std::max_element(ref, ref + vocab) - ref);
  const int g1 = static_cast<int>(std::max_element(got, got + vocab) - got);
  float second = -INFINITY;
  for (int i = 0; i < vocab; ++i) {
    if (i != r1) second = std::max(second, ref[i]);
  }
  ++a->n;
  a->same += r1 == g1;
  if (ref[r1] - second >= 1.0f) {
    ++a->margin_n;
    a->margin_same += r1 == g1;
  }
  // KL(p_ref || p_got) from log-softmax in double.
  double mr = ref[r1], mg = got[g1], zr = 0, zg = 0;
  for (int i = 0; i < vocab; ++i) {
    zr += std::exp(ref[i] - mr);
    zg += std::exp(got[i] - mg);
  }
  const double lzr = mr + std::log(zr), lzg = mg + std::log(zg);
  double kl = 0;
  for (int i = 0; i < vocab; ++i) {
    const double lp = ref[i] - lzr, lq = got[i] - lzg;
    kl += std::exp(lp) * (lp - lq);
  }
  a->kl.push_back(std::max(0.0, kl));
}

int RunAgree(const Args& a) {
  const int64_t prefix = std::atoll(a.Get("prefix", "4096").c_str());
  const int64_t eval = std::atoll(a.Get("eval", "4000").c_str());
  const std::vector<int> budgets = IntList(a.Get("budgets", "1024,2048"));
  Rig r;
  if (auto s = MakeRig(a, prefix + eval, &r); !s.ok()) return Fail(s.ToString());
  auto tokens = TextTokens(a, *r.m, prefix + eval);
  if (!tokens.ok()) return Fail(tokens.status().ToString());
  const int vocab = r.m->config().vocab_size;
  Clock::time_point t0 = Clock::now();
  if (auto s = Prefill(r, *tokens, prefix); !s.ok()) return Fail(s.ToString());
  std::fprintf(stderr, "prefill %lld tokens: %.1f s\n", static_cast<long long>(prefix),
               MsSince(t0) / 1000);
  // Dense, in batches: the reference.
  std::vector<float> ref;
  t0 = Clock::now();
  if (auto s = r.fwd->Run(std::span<const int32_t>(*tokens).subspan(prefix, eval),
                          static_cast<int32_t>(prefix), r.kv, model::LogitsMode::kAll, &ref);
      !s.ok()) {
    return Fail(s.ToString());
  }
  std::fprintf(stderr, "dense batch over %lld positions: %.1f s\n", static_cast<long long>(eval),
               MsSince(t0) / 1000);
  std::vector<std::pair<std::string, model::SparseAttention>> runs;
  runs.push_back({"dense, one token at a time (noise floor)", model::SparseAttention{}});
  for (const std::string& sc : StrList(a.Get("scoring", "sketch"))) {
    for (int b : budgets) {
      runs.push_back({"sparse " + std::to_string(b) + " (" + sc + ")", SparseOf(a, b, sc)});
    }
  }
  std::printf("prefix %lld tokens, %lld positions (context %lld..%lld)\n\n",
              static_cast<long long>(prefix), static_cast<long long>(eval),
              static_cast<long long>(prefix + 1), static_cast<long long>(prefix + eval));
  std::printf(
      "| run | top-1 agreement | where margin >= 1 | mean KL | p99 KL | top-1 vs dense one at a "
      "time | its mean KL | pages/step | s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  std::vector<float> single;  // the first run's logits: dense one token at a time
  for (const auto& [name, sparse] : runs) {
    Agreement ag, ag1;
    const bool first = single.empty();
    std::vector<float> logits;
    r.fwd->set_sparse(sparse);
    const model::RetrievalCounters before = r.fwd->retrieval_counters();
    t0 = Clock::now();
    for (int64_t i = 0; i < eval; ++i) {
      const int32_t one[1] = {(*tokens)[prefix + i]};
      if (auto s = r.fwd->Run(one, static_cast<int32_t>(prefix + i), r.kv, model::LogitsMode::kLast,
                              &logits);
          !s.ok()) {
        return Fail(s.ToString());
      }
      Compare(ref.data() + i * vocab, logits.data(), vocab, &ag);
      if (first) {
        single.insert(single.end(), logits.begin(), logits.begin() + vocab);
      } else {
        Compare(single.data() + i * vocab, logits.data(), vocab, &ag1);
      }
    }
    const double secs = MsSince(t0) / 1000;
    const model::RetrievalCounters& after = r.fwd->retrieval_counters();
    std::vector<double> kl = ag.kl;
    std::sort(kl.begin(), kl.end());
    double mean = 0;
    for (double x : kl) mean += x;
    mean /= std::max<size_t>(1, kl.size());
    double mean1 = 0;
    for (double x : ag1.kl) mean1 += x;
    mean1 /= std::max<size_t>(1, ag1.kl.size());
    const std::string vs_single =
        first ? std::string("(itself) | 0") : [&] {
          char b[96];
          std::snprintf(b, sizeof b, "%lld/%lld = %.2f%% | %.5f", static_cast<long long>(ag1.same),
                        static_cast<long long>(ag1.n), 100.0 * ag1.same / ag1.n, mean1);
          return std::string(b);
        }();
    std::printf("| %s | %lld/%lld = %.2f%% | %lld/%lld = %.2f%% | %.5f | %.4f | %s | %.1f | %.0f |\n",
                name.c_str(), static_cast<long long>(ag.same), static_cast<long long>(ag.n),
                100.0 * ag.same / ag.n, static_cast<long long>(ag.margin_same),
                static_cast<long long>(ag.margin_n), 100.0 * ag.margin_same / ag.margin_n, mean,
                kl[kl.size() * 99 / 100], vs_single.c_str(),
                static_cast<double>(after.pages_attended - before.pages_attended) /
                    std::max<int64_t>(1, after.lists - before.lists),
                secs);
    std::fflush(stdout);
  }
  return 0;
}

// ---- speed ------------------------------------------------------------------------------------

int RunSpeed(const Args& a) {
  const std::vector<int> contexts = IntList(a.Get("contexts", "8192,16384"));
  const int steps = std::atoi(a.Get("steps", "8").c_str());
  const int rounds = std::atoi(a.Get("rounds", "3").c_str());
  const int budget = std::atoi(a.Get("budget", "2048").c_str());
  // Mode 0 is dense, then one sparse mode per scoring.
  std::vector<std::pair<std::string, model::SparseAttention>> modes = {
      {"dense", model::SparseAttention{}}};
  for (const std::string& sc : StrList(a.Get("scoring", "sketch"))) {
    modes.push_back({"sparse " + std::to_string(budget) + " (" + sc + ")", SparseOf(a, budget, sc)});
  }
  const int n_modes = static_cast<int>(modes.size());
  std::printf(
      "| context | mode | tok/s | ms/token | matmul | attention | scoring | selection | "
      "other | pages/step |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (int ctx : contexts) {
    Rig r;
    if (auto s = MakeRig(a, ctx + steps, &r); !s.ok()) return Fail(s.ToString());
    auto tokens = TextTokens(a, *r.m, ctx + steps);
    if (!tokens.ok()) return Fail(tokens.status().ToString());
    const Clock::time_point t0 = Clock::now();
    if (auto s = Prefill(r, *tokens, ctx); !s.ok()) return Fail(s.ToString());
    std::fprintf(stderr, "prefill %d: %.1f s\n", ctx, MsSince(t0) / 1000);
    struct Acc {
      double ms = 0;
      model::ForwardPass::Profile p;
      int64_t pages = 0, lists = 0, tokens = 0;
    };
    std::vector<Acc> acc(modes.size());
    std::vector<float> logits;
    for (int round = 0; round < rounds; ++round) {
      for (int mode = 0; mode < n_modes; ++mode) {
        r.fwd->set_sparse(modes[mode].second);
        const model::ForwardPass::Profile p0 = r.fwd->profile();
        const model::RetrievalCounters c0 = r.fwd->retrieval_counters();
        const Clock::time_point s0 = Clock::now();
        for (int i = 0; i < steps; ++i) {
          const int32_t one[1] = {(*tokens)[ctx + i]};
          if (auto s = r.fwd->Run(one, ctx + i, r.kv, model::LogitsMode::kLast, &logits); !s.ok()) {
            return Fail(s.ToString());
          }
        }
        Acc& x = acc[mode];
        x.ms += MsSince(s0);
        const model::ForwardPass::Profile& p1 = r.fwd->profile();
        x.p.matmul_ms += p1.matmul_ms - p0.matmul_ms;
        x.p.attention_ms += p1.attention_ms - p0.attention_ms;
        x.p.score_ms += p1.score_ms - p0.score_ms;
        x.p.select_ms += p1.select_ms - p0.select_ms;
        x.p.other_ms += p1.other_ms - p0.other_ms;
        x.pages += r.fwd->retrieval_counters().pages_attended - c0.pages_attended;
        x.lists += r.fwd->retrieval_counters().lists - c0.lists;
        x.tokens += steps;
      }
    }
    for (int mode = 0; mode < n_modes; ++mode) {
      const Acc& x = acc[mode];
      const double per = x.ms / x.tokens;
      std::printf("| %d | %s | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.1f | %.0f |\n", ctx,
                  modes[mode].first.c_str(), 1000.0 / per,
                  per, x.p.matmul_ms / x.tokens, x.p.attention_ms / x.tokens,
                  x.p.score_ms / x.tokens, x.p.select_ms / x.tokens, x.p.other_ms / x.tokens,
                  static_cast<double>(x.pages) / std::max<int64_t>(1, x.lists));
      std::fflush(stdout);
    }
  }
  return 0;
}

// ---- tiered: sparse decoding with the KV in the lower tiers ----------------------------------

// Per case: an uncapped engine with a disk cache prefills the haystack (written through to the
// host and disk tiers) and answers densely and sparsely with everything on the device; then a
// fresh engine over the same cache, whose device pool and host tier are capped to fractions of
// the context's KV, answers sparsely, promoting only the selected pages. --host-frac, --hot-frac
// and --prefetch-bytes (default 67108864; 0: no prefetch of the previous selection) take lists:
// one fresh capped engine per combination, over the same prefilled cache.
int RunTiered(const Args& a) {
  const int ctx = std::atoi(a.Get("context", "8192").c_str());
  const int n_cases = std::atoi(a.Get("cases", "10").c_str());
  const int budget = std::atoi(a.Get("budget", "2048").c_str());
  const double device_frac = std::atof(a.Get("device-frac", "0.5").c_str());
  std::vector<double> host_fracs, hot_fracs;
  for (const std::string& f : StrList(a.Get("host-frac", "0.25"))) host_fracs.push_back(std::atof(f.c_str()));
  // Of the device pool.
  for (const std::string& f : StrList(a.Get("hot-frac", "0.9"))) hot_fracs.push_back(std::atof(f.c_str()));
  std::vector<uint64_t> prefetch_list;
  for (const std::string& f : StrList(a.Get("prefetch-bytes", std::to_string(64ull << 20)))) {
    prefetch_list.push_back(std::strtoull(f.c_str(), nullptr, 10));
  }
  const std::string scoring = a.Get("scoring", "sketch");
  const bench::CaseKind kind =
      a.Get("kind", "passkey") == "needle" ? bench::CaseKind::kNeedle : bench::CaseKind::kPasskey;
  char tmpl[] = "/tmp/kvtier_tiered_XXXXXX";
  const std::string dir = a.Get("dir", "").empty() ? std::string(mkdtemp(tmpl)) : a.Get("dir", "");
  engine::EngineOptions o = OptionsOf(a);
  o.context_tokens = ctx + 256;
  o.cache_dir = dir + "/cache";
  o.state_dir = dir + "/state";
  o.host_cache_bytes = 4ull << 30;
  o.disk_codec = a.Get("disk-codec", o.disk_codec);  // the records' codec on disk
  std::vector<bench::RetrievalCase> cases;
  int dense_ok = 0, uncapped_ok = 0;
  double uncapped_ms = 0;
  {
    auto e = engine::Engine::Create(o);
    if (!e.ok()) return Fail(e.status().ToString());
    for (int i = 0; i < n_cases; ++i) {
      const double d = n_cases > 1 ? 1.0 - static_cast<double>(i) / (n_cases - 1) : 0.5;
      cases.push_back(bench::MakeCase(**e, kind, ctx, d, 77 + ctx, 1000003ull * i + 7919 + ctx));
      if (auto st = bench::PrefillHaystack(**e, cases.back()); !st.ok()) return Fail(st.ToString());
      auto dense = bench::AskQuestion(**e, cases.back(), "dense", 0);
      if (!dense.ok()) return Fail(dense.status().ToString());
      const Clock::time_point t0 = Clock::now();
      auto sp = bench::AskQuestion(**e, cases.back(), "sparse", budget, scoring);
      if (!sp.ok()) return Fail(sp.status().ToString());
      uncapped_ms += MsSince(t0);
      dense_ok += dense->correct;
      uncapped_ok += sp->correct;
      std::fprintf(stderr, "depth %.2f answer %s dense '%s' sparse (device) '%s'\n", d,
                   cases.back().answer.c_str(), dense->output.c_str(), sp->output.c_str());
    }
  }
  // The capped engine. Page: 16 tokens x 3 KV heads x 64 dims x K,V x f16; a q8 extent holds
  // 64 tokens of every layer.
  const model::ModelConfig cfg = [&] {
    auto m = model::Model::Load(o.model_path);
    return m.ok() ? (*m)->config() : model::ModelConfig{};
  }();
  const uint64_t page_bytes = 2ull * 16 * cfg.n_kv_heads * cfg.head_dim * 2;
  const uint64_t ctx_pages = static_cast<uint64_t>((ctx + 15) / 16) * cfg.n_layers;
  const uint64_t extent_q8 =
      4ull * cfg.n_layers * (2 * 16 * cfg.n_kv_heads * cfg.head_dim + 2 * 16 * cfg.n_kv_heads * 2);
  std::printf("%s, context %d, %d cases, budget %d (%s), disk records %s; device pool %.0f%% of "
              "the context's %llu KV pages (%.1f MB); dense (device) %d/%d, sparse (device) "
              "%d/%d, uncapped sparse request %.0f ms\n\n",
              kind == bench::CaseKind::kPasskey ? "passkey" : "needle", ctx, n_cases, budget,
              scoring.c_str(), o.disk_codec.c_str(), 100 * device_frac,
              static_cast<unsigned long long>(ctx_pages),
              static_cast<double>(static_cast<uint64_t>(device_frac * ctx_pages) * page_bytes) / 1e6,
              dense_ok, n_cases, uncapped_ok, n_cases, uncapped_ms / std::max(1, n_cases));
  struct Row {
    double host_frac = 0, hot_frac = 0;
    uint64_t prefetch_bytes = 0, host_bytes = 0;
    int ok = 0;
    engine::RetrievalUsage sum;
    int64_t steps = 0;
    double total_ms = 0;
  };
  std::vector<Row> rows;
  for (double host_frac : host_fracs) {
    for (double hot_frac : hot_fracs) {
      for (uint64_t prefetch_bytes : prefetch_list) {
        Row row;
        row.host_frac = host_frac;
        row.hot_frac = hot_frac;
        row.prefetch_bytes = prefetch_bytes;
        engine::EngineOptions capped = o;
        capped.kv_capacity_bytes = static_cast<uint64_t>(device_frac * ctx_pages) * page_bytes;
        capped.host_cache_bytes = static_cast<uint64_t>(host_frac * (ctx / 64)) * extent_q8;
        row.host_bytes = capped.host_cache_bytes;
        // The hot cache must hold one step's working set (the dense layers' pages and the union
        // of the KV heads' selections in every sparse layer), or every step promotes everything
        // again.
        capped.hot_cache_bytes = static_cast<uint64_t>(hot_frac * capped.kv_capacity_bytes);
        capped.prefetch_bytes = prefetch_bytes;
        auto e = engine::Engine::Create(capped);
        if (!e.ok()) return Fail(e.status().ToString());
        for (const bench::RetrievalCase& c : cases) {
          const Clock::time_point t0 = Clock::now();
          auto sp = bench::AskQuestion(**e, c, "sparse", budget, scoring);
          if (!sp.ok()) return Fail(sp.status().ToString());
          row.total_ms += MsSince(t0);
          row.ok += sp->correct;
          const engine::RetrievalUsage& r = sp->result.retrieval;
          using RU = engine::RetrievalUsage;
          for (int64_t RU::*f :
               {&RU::cold_tokens, &RU::pages_promoted_host, &RU::pages_promoted_disk, &RU::hot_hits,
                &RU::hot_misses, &RU::disk_reads, &RU::records_prefetched, &RU::prefetch_hits,
                &RU::prefetch_waits, &RU::prefetch_wasted}) {
            row.sum.*f += r.*f;
          }
          for (double RU::*f : {&RU::promote_ms, &RU::matmul_ms, &RU::attention_ms, &RU::score_ms,
                                &RU::select_ms, &RU::other_ms, &RU::pages_attended_avg}) {
            row.sum.*f += r.*f;
          }
          row.sum.bytes_decompressed += r.bytes_decompressed;
          row.steps += r.sparse_steps + r.dense_steps;
          std::fprintf(stderr,
                       "host %.2f hot %.2f prefetch %llu: depth %.2f capped sparse '%s' (cold %lld "
                       "tokens, promoted host %lld disk %lld prefetched %lld, disk reads %lld)\n",
                       host_frac, hot_frac, static_cast<unsigned long long>(prefetch_bytes),
                       c.depth, sp->output.c_str(), static_cast<long long>(r.cold_tokens),
                       static_cast<long long>(r.pages_promoted_host),
                       static_cast<long long>(r.pages_promoted_disk),
                       static_cast<long long>(r.prefetch_hits),
                       static_cast<long long>(r.disk_reads));
        }
        // Prefetch counters of the background thread may lag the last request: take the totals.
        const cache::PromotionCounters p = (*e)->TierStats().promotion;
        row.sum.records_prefetched = p.records_prefetched;
        row.sum.prefetch_wasted = p.prefetch_wasted;
        rows.push_back(row);
      }
    }
  }
  const double n = static_cast<double>(cases.size());
  std::printf("Capped runs, per case (request) unless noted; promotion = ms per forward step; disk "
              "reads = records read on the compute thread (the critical path):\n\n");
  std::printf("| host tier | hot cache | prefetch | sparse (capped) | ÷ dense | pages promoted "
              "host / disk / prefetched | hot-cache hit rate | disk reads | records prefetched | "
              "prefetch waits | prefetched unused | promotion ms/step | request ms |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& row : rows) {
    const engine::RetrievalUsage& sum = row.sum;
    const double st = static_cast<double>(std::max<int64_t>(1, row.steps));
    std::printf("| %.0f%% (%.0f MB) | %.0f%% of pool | %.0f MiB | %d/%d | %.2f | %.0f / %.0f / %.0f "
                "| %.2f | %.0f | %.0f | %.0f | %.0f | %.1f | %.0f |\n",
                100 * row.host_frac, row.host_bytes / 1e6, 100 * row.hot_frac,
                row.prefetch_bytes / 1048576.0, row.ok, n_cases,
                dense_ok > 0 ? static_cast<double>(row.ok) / dense_ok : 0.0,
                sum.pages_promoted_host / n, sum.pages_promoted_disk / n, sum.prefetch_hits / n,
                static_cast<double>(sum.hot_hits) /
                    std::max<int64_t>(1, sum.hot_hits + sum.hot_misses),
                sum.disk_reads / n, sum.records_prefetched / n, sum.prefetch_waits / n,
                sum.prefetch_wasted / n, sum.promote_ms / st, row.total_ms / n);
  }
  std::printf("\nCapped request time by stage, ms per forward step (the question batch and each "
              "generated token):\n\n");
  std::printf("| host tier | hot cache | prefetch | steps | pages attended | matmul | attention | "
              "scoring | selection | promotion | other |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& row : rows) {
    const engine::RetrievalUsage& sum = row.sum;
    const double st = static_cast<double>(std::max<int64_t>(1, row.steps));
    std::printf("| %.0f%% | %.0f%% | %.0f MiB | %lld | %.1f | %.1f | %.1f | %.1f | %.2f | %.1f | "
                "%.1f |\n",
                100 * row.host_frac, 100 * row.hot_frac, row.prefetch_bytes / 1048576.0,
                static_cast<long long>(row.steps), sum.pages_attended_avg / n, sum.matmul_ms / st,
                sum.attention_ms / st, sum.score_ms / st, sum.select_ms / st, sum.promote_ms / st,
                sum.other_ms / st);
  }
  if (a.Get("dir", "").empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    return Fail("usage: retrieval_quality_tool cases|agree|speed|tiered [--flag value ...]");
  }
  const std::string cmd = argv[1];
  Args a;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0) return Fail("unexpected argument " + k);
    a.v[k.substr(2)] = argv[i + 1];
  }
  if (a.v.count("model") == 0) {
    const char* home = std::getenv("HOME");
    a.v["model"] = std::string(home ? home : "/root") +
                   "/.cache/kvtier/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  }
  if (cmd == "cases") return RunCases(a);
  if (cmd == "agree") return RunAgree(a);
  if (cmd == "speed") return RunSpeed(a);
  if (cmd == "tiered") return RunTiered(a);
  return Fail("unknown command " + cmd);
}
