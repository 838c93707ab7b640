// Retrieval attention end to end on the real model (label: model): the smoke version of
// bench/retrieval_quality_tool — a few small passkey/needle cases whose question goes through
// the sparse path, and the engine's mode switches and counters.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "bench/retrieval_cases.h"
#include "engine/engine.h"
#include "tests/support/test_support.h"

namespace kvtier::engine {
namespace {

class RetrievalModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    EngineOptions opt;
    opt.model_path = testing::ModelPath();
    opt.threads = 2;
    opt.context_tokens = 2048;
    opt.host_cache_bytes = 0;
    opt.kv_capacity_bytes = 4ull * 2048 / 16 * 30 * 12288;
    // Small budgets so that a 1.5K-token context is really sparse: sinks 4 pages, window 8,
    // 20 top pages of the ~75 candidates.
    opt.recent_tokens = 128;
    opt.budget_tokens = 512;
    auto e = Engine::Create(opt);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value().release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }
  static Engine* engine_;
};
Engine* RetrievalModelTest::engine_ = nullptr;

TEST_F(RetrievalModelTest, SparseAnswersPasskeyAndNeedleLikeDense) {
  int dense_ok = 0, sparse_ok = 0;
  for (auto kind : {bench::CaseKind::kPasskey, bench::CaseKind::kNeedle}) {
    for (double depth : {0.15, 0.6}) {
      const bench::RetrievalCase c = bench::MakeCase(*engine_, kind, 1500, depth, 11, 17);
      ASSERT_TRUE(bench::PrefillHaystack(*engine_, c).ok());
      auto dense = bench::AskQuestion(*engine_, c, "dense", 0);
      ASSERT_TRUE(dense.ok()) << dense.status().ToString();
      auto sparse = bench::AskQuestion(*engine_, c, "sparse", 0);
      ASSERT_TRUE(sparse.ok()) << sparse.status().ToString();
      dense_ok += dense->correct;
      sparse_ok += sparse->correct;
      EXPECT_EQ(dense->correct, sparse->correct)
          << "depth " << depth << " answer " << c.answer << " dense '" << dense->output
          << "' sparse '" << sparse->output << "'";
      // The question really went through the sparse path, after the cached haystack.
      const RetrievalUsage& r = sparse->result.retrieval;
      EXPECT_GT(sparse->result.usage.cached_tokens, 1200);
      EXPECT_GT(r.sparse_steps, 1);
      EXPECT_EQ(r.dense_steps, 0);
      EXPECT_LT(r.pages_attended_avg, 45.0);  // dense: ~87 pages
      EXPECT_EQ(dense->result.retrieval.sparse_steps, 0);
      EXPECT_GT(dense->result.retrieval.pages_attended_avg, 80.0);
    }
  }
  EXPECT_EQ(dense_ok, 4);
  EXPECT_EQ(sparse_ok, 4);
}

TEST_F(RetrievalModelTest, BudgetCoveringTheContextIsExactlyDense) {
  const bench::RetrievalCase c =
      bench::MakeCase(*engine_, bench::CaseKind::kNeedle, 900, 0.3, 5, 6);
  ASSERT_TRUE(bench::PrefillHaystack(*engine_, c).ok());
  auto dense = bench::AskQuestion(*engine_, c, "dense", 0);
  auto all = bench::AskQuestion(*engine_, c, "sparse", 4096);
  ASSERT_TRUE(dense.ok() && all.ok());
  EXPECT_EQ(dense->result.tokens, all->result.tokens);
  EXPECT_EQ(dense->result.retrieval.pages_attended_avg, all->result.retrieval.pages_attended_avg);
}

TEST_F(RetrievalModelTest, AutoStaysDenseBelowTheThresholdAndModesAreValidated) {
  GenerateRequest r;
  r.prompt = "The capital of France is";
  r.raw = true;
  r.max_tokens = 3;
  r.sampling.temperature = 0;
  r.seed_given = true;
  auto res = engine_->Generate(r, nullptr);  // auto, context far below 4096
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->retrieval.attention, "auto");
  EXPECT_EQ(res->retrieval.sparse_steps, 0);
  EXPECT_EQ(res->retrieval.dense_steps, 2);  // the two tokens fed back
  r.attention = "fast";
  EXPECT_EQ(engine_->Generate(r, nullptr).status().code(), StatusCode::kInvalidArgument);
  r.attention = "sparse";
  r.budget_tokens = 8;
  EXPECT_EQ(engine_->Generate(r, nullptr).status().code(), StatusCode::kInvalidArgument);
  r.budget_tokens = 0;
  r.sparse_scoring = "best";
  EXPECT_EQ(engine_->Generate(r, nullptr).status().code(), StatusCode::kInvalidArgument);
  EngineOptions bad;
  bad.model_path = testing::ModelPath();
  bad.sparse_scoring = "oracle";
  EXPECT_EQ(Engine::Create(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RetrievalModelTest, AutoGoesSparseAboveTheThreshold) {
  EngineOptions opt;
  opt.model_path = testing::ModelPath();
  opt.threads = 2;
  opt.context_tokens = 2048;
  opt.host_cache_bytes = 0;
  opt.recent_tokens = 128;
  opt.budget_tokens = 512;
  opt.sparse_min_tokens = 1000;
  auto e = Engine::Create(opt);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  const bench::RetrievalCase c = bench::MakeCase(**e, bench::CaseKind::kNeedle, 1400, 0.4, 9, 10);
  ASSERT_TRUE(bench::PrefillHaystack(**e, c).ok());
  auto res = bench::AskQuestion(**e, c, "", 0);  // the engine's mode: auto
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->result.retrieval.attention, "auto");
  EXPECT_GT(res->result.retrieval.sparse_steps, 1);
  EXPECT_EQ(res->result.retrieval.dense_steps, 0);
  EXPECT_LT(res->result.retrieval.pages_attended_avg, 45.0);  // dense: ~90 pages
}

// The page scoring matters: on the same cases the sketch scoring (the default) answers like
// dense where DESIGN's min/max bound, at this small budget, loses the needle.
TEST_F(RetrievalModelTest, SketchScoringFindsWhatTheBoundMisses) {
  int dense_ok = 0, sketch_ok = 0, bound_ok = 0;
  for (double depth : {0.1, 0.35, 0.6, 0.85}) {
    const bench::RetrievalCase c =
        bench::MakeCase(*engine_, bench::CaseKind::kNeedle, 1800, depth, 21, 23 + depth * 100);
    ASSERT_TRUE(bench::PrefillHaystack(*engine_, c).ok());
    auto dense = bench::AskQuestion(*engine_, c, "dense", 0);
    auto sketch = bench::AskQuestion(*engine_, c, "sparse", 256, "sketch");
    auto bound = bench::AskQuestion(*engine_, c, "sparse", 256, "bound");
    ASSERT_TRUE(dense.ok() && sketch.ok() && bound.ok());
    std::printf("depth %.2f answer %s: dense '%s' sketch '%s' bound '%s'\n", depth,
                c.answer.c_str(), dense->output.c_str(), sketch->output.c_str(),
                bound->output.c_str());
    dense_ok += dense->correct;
    sketch_ok += sketch->correct;
    bound_ok += bound->correct;
    // Same budget, same page count: only the choice of pages differs.
    EXPECT_EQ(sketch->result.retrieval.pages_attended_avg,
              bound->result.retrieval.pages_attended_avg);
  }
  EXPECT_EQ(dense_ok, 4);
  EXPECT_EQ(sketch_ok, dense_ok);
  EXPECT_LT(bound_ok, sketch_ok);
}

}  // namespace
}  // namespace kvtier::engine
