// model::CudaForwardPass against the CPU forward pass (model::ForwardPass): greedy decoding of
// the same prompts, teacher-forced (both passes are fed the CPU's token at every step, so one
// disagreement does not derail the rest), on a tiny random-weight model written here and on the
// real model. Labelled `cuda` by its file name; skips itself when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "bench/retrieval_cases.h"
#include "cache/page_pool.h"
#include "engine/sampler.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_paged.h"
#include "model/cuda_forward.h"
#include "model/model.h"
#include "model/random_model.h"
#include "tests/support/test_support.h"

namespace kvtier::model {
namespace {

#if KVTIER_HAVE_CUDA

constexpr int kSteps = 64;
constexpr int kMinAgree = 60;

struct Agreement {
  int matches = 0;
  int first_mismatch = -1;
  double prompt_logits_error = 0;  // ||gpu - cpu|| / ||cpu|| over every prompt position
};

class CudaForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::cuda::CudaDeviceAvailable()) {
      GTEST_SKIP() << "no CUDA device available; skipping the CUDA forward pass tests";
    }
  }

  // Runs prompt + kSteps teacher-forced greedy steps on both passes.
  static Agreement Compare(const Model& m, const std::vector<int32_t>& prompt, int cpu_batch_tokens,
                           int cuda_batch_tokens) {
    Agreement a;
    const ModelConfig& c = m.config();
    const int64_t max_tokens = static_cast<int64_t>(prompt.size()) + kSteps + 16;
    cache::PageShape shape{16, c.n_kv_heads, c.head_dim};
    const uint64_t capacity =
        static_cast<uint64_t>((max_tokens + 15) / 16 + 2) * c.n_layers * 2 * 16 * c.kv_dim() * 2;
    auto pages = cache::PagePool::Create(shape, capacity);
    EXPECT_TRUE(pages.ok()) << pages.status().ToString();
    if (!pages.ok()) return a;
    kernels::ThreadPool threads(2);
    ForwardPass cpu(m, threads, cpu_batch_tokens);
    // The reference is the CPU pass with float activations (the engine's default,
    // EngineOptions::matmul_activations): the CUDA pass rounds activations to f16, not to the
    // 8 bits per block of kQ8, so q8 on the CPU side would measure the CPU's rounding instead.
    cpu.set_matmul_acts(kernels::MatMulActs::kF32);
    CudaForwardOptions opts;
    opts.max_batch_tokens = cuda_batch_tokens;
    opts.pool_pages = (*pages)->capacity_pages();
    opts.max_context_tokens = static_cast<int>(max_tokens);
    auto gpu = CudaForwardPass::Create(m, opts);
    EXPECT_TRUE(gpu.ok()) << gpu.status().ToString();
    if (!gpu.ok()) return a;

    cache::SequenceKv seq(**pages, c.n_layers);
    EXPECT_TRUE(seq.Reserve(static_cast<int64_t>(prompt.size())).ok());
    KvView kv{(*pages)->view(), seq.page_tables()};

    // Prompt logits at every position (kAll), then the first token.
    std::vector<float> cpu_logits, gpu_logits;
    EXPECT_TRUE(cpu.Run(prompt, 0, kv, LogitsMode::kAll, &cpu_logits).ok());
    const Status st = (*gpu)->Run(prompt, 0, kv, LogitsMode::kAll, &gpu_logits);
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (!st.ok() || gpu_logits.size() != cpu_logits.size()) return a;
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < cpu_logits.size(); ++i) {
      num += (gpu_logits[i] - cpu_logits[i]) * (gpu_logits[i] - cpu_logits[i]);
      den += static_cast<double>(cpu_logits[i]) * cpu_logits[i];
    }
    a.prompt_logits_error = std::sqrt(num / den);
    const size_t vocab = c.vocab_size;
    const std::span<const float> last(cpu_logits.data() + cpu_logits.size() - vocab, vocab);
    int32_t cpu_next = engine::Sampler::Argmax(last);
    // The GPU's own argmax (RunGreedy) for the first token: rerun the prompt's last token.
    auto gpu_first =
        (*gpu)->RunGreedy(std::span(prompt).last(1), static_cast<int32_t>(prompt.size()) - 1, kv);
    EXPECT_TRUE(gpu_first.ok()) << gpu_first.status().ToString();
    if (!gpu_first.ok()) return a;
    auto record = [&](int step, int32_t gpu_tok) {
      if (gpu_tok == cpu_next) {
        ++a.matches;
      } else if (a.first_mismatch < 0) {
        a.first_mismatch = step;
      }
    };
    record(0, *gpu_first);
    int32_t n_past = static_cast<int32_t>(prompt.size());
    std::vector<float> logits;
    for (int step = 1; step < kSteps; ++step) {
      const int32_t tok = cpu_next;
      EXPECT_TRUE(seq.Reserve(n_past + 1).ok());
      kv = KvView{(*pages)->view(), seq.page_tables()};
      const std::vector<int32_t> one = {tok};
      EXPECT_TRUE(cpu.Run(one, n_past, kv, LogitsMode::kLast, &logits).ok());
      cpu_next = engine::Sampler::Argmax(logits);
      auto g = (*gpu)->RunGreedy(one, n_past, kv);
      EXPECT_TRUE(g.ok()) << g.status().ToString();
      if (!g.ok()) return a;
      record(step, *g);
      ++n_past;
    }
    return a;
  }
};

// A tiny random-weight model written for the test (3 layers, dim 128, 4/2 heads, vocab 300).
// F16 weights: the CPU multiplies them with float activations (no 8-bit activation rounding),
// so CPU and GPU passes are close to exact and near-ties of random logits rarely flip.
Result<std::unique_ptr<Model>> TinyModel(uint64_t seed, RandomModelShape* shape_out = nullptr) {
  RandomModelShape shape;
  shape.n_layers = 3;
  shape.dim = 128;
  shape.n_heads = 4;
  shape.n_kv_heads = 2;
  shape.ffn_dim = 256;
  shape.vocab_size = 300;
  shape.weight_type = kernels::DType::kF16;
  shape.embd_type = kernels::DType::kF16;
  if (shape_out != nullptr) *shape_out = shape;
  const std::string path = testing::MakeTempDir("kvtier_cuda_tiny_") + "/tiny.gguf";
  RETURN_IF_ERROR(WriteRandomLlamaGguf(shape, seed, path));
  return Model::Load(path);
}

TEST_F(CudaForwardTest, TinyRandomModelGreedyMatchesCpu) {
  RandomModelShape shape;
  auto m = TinyModel(7, &shape);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  std::mt19937 rng(11);
  for (int p = 0; p < 10; ++p) {
    std::uniform_int_distribution<int> len(1 + 10 * p, 20 + 20 * p);
    std::uniform_int_distribution<int32_t> id(0, shape.vocab_size - 1);
    std::vector<int32_t> prompt(len(rng));
    for (auto& t : prompt) t = id(rng);
    // Uneven batch sizes on both sides: several prefill batches, partial pages.
    const Agreement a = Compare(**m, prompt, 48, 40);
    EXPECT_GE(a.matches, kMinAgree) << "prompt " << p << " (" << prompt.size()
                                    << " tokens): first mismatch at step " << a.first_mismatch;
    EXPECT_LT(a.prompt_logits_error, 2e-2) << "prompt " << p;
    std::printf("tiny prompt %d: %zu tokens, %d/%d greedy steps agree, logits error %.2e\n", p,
                prompt.size(), a.matches, kSteps, a.prompt_logits_error);
  }
}

TEST_F(CudaForwardTest, RealModelGreedyMatchesCpu) {
  auto m = Model::Load(testing::ModelPath());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const char* prompts[] = {
      "What is the capital of France?",
      "Write a haiku about the sea.",
      "Explain how a hash table works in two sentences.",
      "List three prime numbers greater than 100.",
      "Translate 'good morning' into Spanish and German.",
      "Why is the sky blue?",
      "Give me a recipe for pancakes.",
      "What does a CPU cache do?",
      "Tell me a short story about a robot who learns to paint.",
      "Summarise the plot of Romeo and Juliet.",
  };
  const Tokenizer& tok = (*m)->tokenizer();
  int p = 0;
  for (const char* text : prompts) {
    auto chat = tok.ApplyChatTemplate({{"user", text}}, true);
    ASSERT_TRUE(chat.ok()) << chat.status().ToString();
    const std::vector<int32_t> prompt = tok.Encode(*chat, true, true);
    const Agreement a = Compare(**m, prompt, 512, 512);
    EXPECT_GE(a.matches, kMinAgree)
        << "prompt '" << text << "': first mismatch at step " << a.first_mismatch;
    // Q4_1 weights dequantized to f16, f16 inputs to the products and to the prefill attention's
    // tensor cores: ~2e-3 measured on an H200 (BENCHMARKS.md); 5x that as the bound.
    EXPECT_LT(a.prompt_logits_error, 1e-2) << "prompt '" << text << "'";
    std::printf("real prompt %d: %zu tokens, %d/%d greedy steps agree, logits error %.2e\n", p++,
                prompt.size(), a.matches, kSteps, a.prompt_logits_error);
  }
}

// The sparse decode path end to end on the real model: passkey cases of ~3,000 tokens (the
// seeded generator of bench/retrieval_cases.h), the prompt prefilled densely, then the answer
// decoded greedily with sparse steps (budget 1024 tokens: 64 of ~190 pages per layer and KV
// head, from layer 2 on) and, on a second sequence, with dense steps. Selecting the wrong pages
// loses the pass key; a near-tie may flip one case either way.
TEST_F(CudaForwardTest, RealModelSparseDecodeFindsPasskey) {
  auto m = Model::Load(testing::ModelPath());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const ModelConfig& c = (*m)->config();
  const Tokenizer& tok = (*m)->tokenizer();
  constexpr int kContext = 3000;
  cache::PageShape shape{16, c.n_kv_heads, c.head_dim};
  auto pages = cache::PagePool::Create(
      shape, uint64_t{2} * ((kContext + 64) / 16 + 2) * c.n_layers * 2 * 16 * c.kv_dim() * 2);
  ASSERT_TRUE(pages.ok()) << pages.status().ToString();
  CudaForwardOptions opts;
  opts.pool_pages = (*pages)->capacity_pages();
  opts.max_context_tokens = kContext + 64;
  auto gpu = CudaForwardPass::Create(**m, opts);
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();

  // Greedy answer (up to answer length + 3 tokens) after the prompt, sparse or dense steps.
  auto answer = [&](const std::vector<int32_t>& prompt, size_t n_answer, bool sparse) {
    CudaSparseOptions sp;
    sp.enabled = sparse;
    sp.min_context_tokens = 0;
    sp.budget_tokens = 1024;
    (*gpu)->set_sparse(sp);
    cache::SequenceKv seq(**pages, c.n_layers);
    const int32_t n = static_cast<int32_t>(prompt.size());
    EXPECT_TRUE(seq.Reserve(n + static_cast<int64_t>(n_answer) + 3).ok());
    const KvView kv{(*pages)->view(), seq.page_tables()};
    std::vector<float> logits;
    EXPECT_TRUE((*gpu)->Run(std::span(prompt).first(n - 1), 0, kv, LogitsMode::kNone, &logits).ok());
    std::vector<int32_t> out;
    int32_t next = prompt.back();
    for (size_t i = 0; i < n_answer + 3; ++i) {
      auto r = (*gpu)->RunGreedy(std::span(&next, 1), n - 1 + static_cast<int32_t>(i), kv);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      if (!r.ok()) break;
      next = *r;
      out.push_back(next);
    }
    auto text = tok.Decode(out);
    return text.ok() ? *text : std::string();
  };
  int dense_ok = 0, sparse_ok = 0;
  const double depths[] = {0.05, 0.25, 0.45, 0.65, 0.85, 0.95};
  for (int i = 0; i < 6; ++i) {
    const bench::RetrievalCase rc =
        bench::MakeCase(tok, bench::CaseKind::kPasskey, kContext, depths[i], 31, 101 + i);
    const std::vector<int32_t> prompt = tok.Encode(rc.haystack + rc.question, true, true);
    const std::string d = answer(prompt, rc.answer.size(), false);
    const std::string sp = answer(prompt, rc.answer.size(), true);
    dense_ok += bench::FirstNumber(d) == rc.answer;
    sparse_ok += bench::FirstNumber(sp) == rc.answer;
    std::printf("passkey %zu tokens, depth %.2f: key %s, dense '%s', sparse '%s'\n",
                prompt.size(), depths[i], rc.answer.c_str(), d.c_str(), sp.c_str());
  }
  EXPECT_GE(dense_ok, 5) << "the cases should be answerable with dense attention";
  EXPECT_GE(sparse_ok, dense_ok - 1);
}

// Dense greedy decode steps replay a CUDA graph (CudaForwardOptions::cuda_graphs): the same
// kernels as direct launches, so free-running greedy decoding must give exactly the same tokens
// either way, across page boundaries and while two sequences take turns on one pass (each
// switch changes the page tables and the position the graph's step block carries).
TEST_F(CudaForwardTest, GraphReplayMatchesDirectLaunches) {
  auto m = TinyModel(9);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const ModelConfig& c = (*m)->config();

  auto decode = [&](bool graphs) {
    std::vector<int32_t> out;
    cache::PageShape ps{16, c.n_kv_heads, c.head_dim};
    auto pages = cache::PagePool::Create(ps, uint64_t{64} * c.n_layers * 2 * 16 * c.kv_dim() * 2);
    EXPECT_TRUE(pages.ok());
    if (!pages.ok()) return out;
    CudaForwardOptions opts;
    opts.pool_pages = (*pages)->capacity_pages();
    opts.max_context_tokens = 512;
    opts.cuda_graphs = graphs;
    auto gpu = CudaForwardPass::Create(**m, opts);
    EXPECT_TRUE(gpu.ok()) << gpu.status().ToString();
    if (!gpu.ok()) return out;
    cache::SequenceKv a(**pages, c.n_layers), b(**pages, c.n_layers);
    std::vector<int32_t> pa = {5, 17, 250, 3, 99, 42, 7}, pb = {11, 12, 13};
    int32_t na = 0, nb = 0, ta = 0, tb = 0;
    // Feeds `tokens` to sequence `seq` at n_past and returns the greedy next token.
    auto feed = [&](cache::SequenceKv& seq, std::vector<int32_t> tokens, int32_t& n_past) {
      EXPECT_TRUE(seq.Reserve(n_past + static_cast<int64_t>(tokens.size())).ok());
      const KvView kv{(*pages)->view(), seq.page_tables()};
      auto r = (*gpu)->RunGreedy(tokens, n_past, kv);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      n_past += static_cast<int32_t>(tokens.size());
      out.push_back(r.ok() ? *r : -1);
      return r.ok() ? *r : 0;
    };
    ta = feed(a, pa, na);
    for (int i = 0; i < 40; ++i) ta = feed(a, {ta}, na);
    tb = feed(b, pb, nb);
    for (int i = 0; i < 30; ++i) tb = feed(b, {tb}, nb);
    for (int i = 0; i < 30; ++i) ta = feed(a, {ta}, na);

    // The digests the steps kept up to date equal digests recomputed from the pages.
    const size_t per_page = kernels::cuda::DigestHalfs((*gpu)->pool());
    const size_t bytes = static_cast<size_t>((*gpu)->pool_pages()) * per_page * sizeof(uint16_t);
    std::vector<uint16_t> kept(bytes / 2), fresh(bytes / 2);
    EXPECT_TRUE(kernels::cuda::CudaCopyToHost(kept.data(), (*gpu)->digests(), bytes).ok());
    const KvView kv_a{(*pages)->view(), a.page_tables()};
    EXPECT_TRUE((*gpu)->RecomputeDigests(kv_a, na).ok());
    EXPECT_TRUE(kernels::cuda::CudaCopyToHost(fresh.data(), (*gpu)->digests(), bytes).ok());
    int compared = 0;
    for (const auto& table : a.page_tables()) {
      for (int p = 0; p < (na + 15) / 16; ++p) {
        const size_t off = static_cast<size_t>(table[p]) * per_page;
        EXPECT_TRUE(std::equal(kept.begin() + off, kept.begin() + off + per_page,
                               fresh.begin() + off))
            << "graphs " << graphs << " page " << table[p];
        ++compared;
      }
    }
    EXPECT_EQ(compared, c.n_layers * ((na + 15) / 16));
    return out;
  };
  const std::vector<int32_t> direct = decode(false), graph = decode(true);
  ASSERT_EQ(direct.size(), 102u);  // 1 + 40, 1 + 30, 30
  EXPECT_EQ(graph, direct);
}

TEST_F(CudaForwardTest, RejectsBadArguments) {
  RandomModelShape shape;
  const std::string path = testing::MakeTempDir("kvtier_cuda_bad_") + "/tiny.gguf";
  ASSERT_TRUE(WriteRandomLlamaGguf(shape, 3, path).ok());
  auto m = Model::Load(path);
  ASSERT_TRUE(m.ok());
  CudaForwardOptions opts;
  EXPECT_EQ(CudaForwardPass::Create(**m, opts).status().code(), StatusCode::kInvalidArgument);
  opts.pool_pages = 8;
  opts.max_context_tokens = 64;
  auto f = CudaForwardPass::Create(**m, opts);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const ModelConfig& c = (*m)->config();
  kernels::KvPool pool = (*f)->pool();
  std::vector<std::vector<int32_t>> tables(c.n_layers, std::vector<int32_t>{0, 1, 2, 3, 4});
  KvView kv{pool, tables};
  std::vector<float> logits;
  const std::vector<int32_t> toks = {1, 2, 3};
  // Beyond max_context_tokens.
  EXPECT_FALSE((*f)->Run(toks, 63, kv, LogitsMode::kLast, &logits).ok());
  // A page id outside the device pool.
  tables[1][0] = 8;
  KvView bad{pool, tables};
  EXPECT_EQ((*f)->Run(toks, 0, bad, LogitsMode::kLast, &logits).code(),
            StatusCode::kInvalidArgument);
  tables[1][0] = 0;
  const std::vector<int32_t> out_of_vocab = {c.vocab_size};
  EXPECT_FALSE((*f)->Run(out_of_vocab, 0, kv, LogitsMode::kLast, &logits).ok());
  EXPECT_TRUE((*f)->Run(toks, 0, kv, LogitsMode::kLast, &logits).ok());
  EXPECT_EQ(logits.size(), static_cast<size_t>(c.vocab_size));
}

#else  // !KVTIER_HAVE_CUDA

TEST(CudaForwardTest, BuiltWithoutCuda) { GTEST_SKIP() << "this build has no CUDA backend"; }

#endif

}  // namespace
}  // namespace kvtier::model
