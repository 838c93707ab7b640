// End to end on the real SmolLM2-135M-Instruct Q4_1 GGUF (label: model).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/engine.h"
#include "tests/support/test_support.h"

namespace kvtier::engine {
namespace {

class EngineModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    EngineOptions opt;
    opt.model_path = testing::ModelPath();
    opt.threads = 2;
    auto e = Engine::Create(opt);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value().release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }
  static GenerateRequest Greedy(const std::string& prompt, int n, bool raw) {
    GenerateRequest r;
    r.prompt = prompt;
    r.raw = raw;
    r.max_tokens = n;
    r.sampling.temperature = 0;
    r.seed_given = true;
    return r;
  }
  static Engine* engine_;
};
Engine* EngineModelTest::engine_ = nullptr;

TEST_F(EngineModelTest, GreedyContinuationMatchesLlamaCpp) {
  ASSERT_NE(engine_, nullptr);
  // Reference ids: llama.cpp (llama-cpp-python 0.3.36) on the same file, greedy, raw prompt.
  auto prompt = engine_->PromptTokens(Greedy("The capital of France is", 0, true));
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(*prompt, (std::vector<int32_t>{504, 3575, 282, 4649, 314}));
  auto r = engine_->Generate(Greedy("The capital of France is", 24, true), nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::vector<int32_t> want = {7042, 30,  198, 198, 504, 1797, 1918, 553,
                                     253,  2155, 282, 4723, 216, 35,  33,  33,
                                     2215, 701, 30,  198, 198, 504, 1797, 1918};
  EXPECT_EQ(r->tokens, want);
  EXPECT_EQ(r->text.rfind(" Paris.\n\nThe United States", 0), 0u) << r->text;
  EXPECT_EQ(r->finish_reason, "length");
  EXPECT_EQ(r->usage.prompt_tokens, 5);
  EXPECT_EQ(r->usage.completion_tokens, 24);

  auto code = engine_->Generate(Greedy("def fibonacci(n):\n", 24, true), nullptr);
  ASSERT_TRUE(code.ok());
  const std::vector<int32_t> want_code = {198, 1604, 3987, 46477, 24,  94,  727, 472,
                                          585, 304,  10204, 216,  33,  42,  448, 1003,
                                          304, 472,  1745, 42,    448, 1003, 3987, 46477};
  EXPECT_EQ(code->tokens, want_code);
}

TEST_F(EngineModelTest, ChatAnswersAndStopsAtEndOfTurn) {
  ASSERT_NE(engine_, nullptr);
  std::string streamed;
  auto r = engine_->Generate(Greedy("What is the capital of France?", 128, false),
                             [&](int32_t, std::string_view t) {
                               streamed += t;
                               return true;
                             });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->finish_reason, "stop");
  EXPECT_NE(r->text.find("Paris"), std::string::npos) << r->text;
  EXPECT_EQ(streamed, r->text);
  EXPECT_GT(r->usage.prompt_tokens, 20);  // the template adds a system message
  EXPECT_GT(r->timing.ttft_ms, 0);
}

TEST_F(EngineModelTest, SeededSamplingIsReproducible) {
  ASSERT_NE(engine_, nullptr);
  GenerateRequest r = Greedy("Write a sentence about the sea.", 32, false);
  r.sampling.temperature = 0.9f;
  r.sampling.seed = 1234;
  auto a = engine_->Generate(r, nullptr);
  auto b = engine_->Generate(r, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(a->seed, 1234u);
  r.sampling.seed = 99;
  auto c = engine_->Generate(r, nullptr);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->tokens, c->tokens);
}

TEST_F(EngineModelTest, StopStringsCancellationAndOverflow) {
  ASSERT_NE(engine_, nullptr);
  GenerateRequest r = Greedy("The capital of France is", 24, true);
  r.stop = {"\n"};
  auto s = engine_->Generate(r, nullptr);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->text, " Paris.");
  EXPECT_EQ(s->finish_reason, "stop");

  int calls = 0;
  auto c = engine_->Generate(Greedy("The capital of France is", 24, true),
                             [&](int32_t, std::string_view) { return ++calls < 3; });
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->finish_reason, "cancelled");
  EXPECT_EQ(c->usage.completion_tokens, 3);

  auto big = engine_->Generate(Greedy("hello", 1 << 20, true), nullptr);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("context_overflow"), std::string::npos);
}

}  // namespace
}  // namespace kvtier::engine
