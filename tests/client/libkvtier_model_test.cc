// libkvtier against the REAL kvtierd (the built binary, started as a child on a temporary socket
// with the real model): every op, streaming, cancellation both ways, many requests in flight on
// one Client, prefix reuse, daemon errors, and the daemon going away mid-stream.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "client/libkvtier.h"
#include "protocol/messages.h"
#include "tests/client/client_test_util.h"

namespace kvtier::client {
namespace {

using protocol::FinishReason;

GenerateRequest Greedy(std::string prompt, int max_tokens) {
  GenerateRequest g;
  g.input.prompt = std::move(prompt);
  g.max_tokens = max_tokens;
  g.temperature = 0;
  return g;
}

// Waits (at most 60 s) until `tokens` reaches n.
bool WaitForTokens(const std::atomic<int>& tokens, int n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (tokens.load() < n) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string LongText(int sentences) {
  std::string s;
  for (int i = 0; i < sentences; ++i) {
    s += "Sentence " + std::to_string(i) + " of the long document talks about tiered caches. ";
  }
  return s;
}

class LibkvtierModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // No shutdown grace: the last test stops the daemon in the middle of a stream.
    daemon_ = new testing::DaemonProcess({"--shutdown-grace-s", "0"});
    ready_ = daemon_->WaitReady();
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(ready_) << "kvtierd did not start";
    auto c = Client::Connect(daemon_->socket_path(), std::chrono::seconds(5));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(*c);
  }

  static testing::DaemonProcess* daemon_;
  static bool ready_;
  std::unique_ptr<Client> client_;
};
testing::DaemonProcess* LibkvtierModelTest::daemon_ = nullptr;
bool LibkvtierModelTest::ready_ = false;

TEST_F(LibkvtierModelTest, Health) {
  auto h = client_->Health();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_FALSE(h->version.empty());
  EXPECT_NE(h->model.find("SmolLM2"), std::string::npos) << h->model;
  EXPECT_EQ(h->backend, "cpu");
  EXPECT_GE(h->uptime_s, 0);
}

TEST_F(LibkvtierModelTest, TokenizeAndDetokenizeRoundTrip) {
  auto ids = client_->Tokenize("Hello, world");
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(*ids, (std::vector<int32_t>{19556, 28, 905}));
  auto text = client_->Detokenize(*ids);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "Hello, world");
  // special: the ChatML marker is one token only when asked for.
  auto special = client_->Tokenize("<|im_start|>", true);
  auto plain = client_->Tokenize("<|im_start|>", false);
  ASSERT_TRUE(special.ok() && plain.ok());
  EXPECT_EQ(special->size(), 1u);
  EXPECT_GT(plain->size(), 1u);
}

TEST_F(LibkvtierModelTest, DaemonErrorKeepsItsCode) {
  auto text = client_->Detokenize({1000000000});
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DaemonErrorCode(text.status()), protocol::ErrorCode::kBadRequest);
  EXPECT_EQ(text.status().message().rfind("bad_request: ", 0), 0u) << text.status().message();
  // The connection is still fine afterwards.
  EXPECT_TRUE(client_->Health().ok());
}

TEST_F(LibkvtierModelTest, GenerateStreamsTheTokensOfTheResult) {
  std::string streamed;
  int tokens = 0;
  auto r = client_->Generate(Greedy("The capital of France is", 12),
                             [&](int32_t token, std::string_view text) {
                               EXPECT_GE(token, 0);
                               streamed += text;
                               ++tokens;
                               return true;
                             });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
  EXPECT_EQ(r->usage.completion_tokens, 12);
  EXPECT_GE(tokens, 12);  // one event per token (plus held-back stop text, if any)
  EXPECT_EQ(streamed, r->text);
  EXPECT_GT(r->usage.prompt_tokens, 0);
  EXPECT_GT(r->timing.ttft_ms, 0);
  // Greedy decoding is repeatable, streamed or not.
  auto again = client_->Generate(Greedy("The capital of France is", 12), nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->text, r->text);
}

TEST_F(LibkvtierModelTest, ChatMessagesAndStopStrings) {
  GenerateRequest g;
  g.input.messages = {{protocol::Role::kUser, "Count: 1, 2, 3, 4, 5, 6, 7, 8"}};
  g.max_tokens = 40;
  g.temperature = 0;
  auto r = client_->Generate(g, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->usage.completion_tokens, 0);
}

TEST_F(LibkvtierModelTest, CallbackFalseCancels) {
  int calls = 0;
  auto r = client_->Generate(Greedy("Once upon a time", 400),
                             [&](int32_t, std::string_view) { return ++calls < 3; });
  ASSERT_TRUE(r.ok() || r.status().code() == StatusCode::kCancelled) << r.status().ToString();
  if (r.ok()) {
    EXPECT_EQ(r->finish_reason, FinishReason::kCancelled);
    EXPECT_LT(r->usage.completion_tokens, 400);
  }
  EXPECT_EQ(calls, 3);
  EXPECT_TRUE(client_->Health().ok());
}

TEST_F(LibkvtierModelTest, CancelFromAnotherThread) {
  const RequestId id = client_->NewId();
  std::atomic<int> tokens{0};
  Result<GenerateResult> r = InternalError("unset");
  std::thread t([&] {
    GenerateRequest g = Greedy("", 2000);
    g.input.messages = {{protocol::Role::kUser, "Write a very long story about a dragon."}};
    r = client_->Generate(
        g,
        [&](int32_t, std::string_view) {
          ++tokens;
          return true;
        },
        id);
  });
  if (!WaitForTokens(tokens, 2)) {
    t.join();
    FAIL() << "no 2 tokens within 60 s: " << (r.ok() ? "finished" : r.status().ToString());
  }
  auto cancelled = client_->Cancel(id);
  t.join();
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  EXPECT_TRUE(*cancelled);
  ASSERT_TRUE(r.ok() || r.status().code() == StatusCode::kCancelled) << r.status().ToString();
  if (r.ok()) {
    EXPECT_EQ(r->finish_reason, FinishReason::kCancelled);
  }
  // Nothing to cancel any more.
  auto again = client_->Cancel(id);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

TEST_F(LibkvtierModelTest, PrefillReportsProgressPinsAndIsReused) {
  PrefillRequest p;
  p.input.prompt = LongText(60);
  p.pin = "client-test";
  std::vector<std::pair<int64_t, int64_t>> progress;
  auto r = client_->Prefill(p, [&](int64_t done, int64_t total) {
    progress.emplace_back(done, total);
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->tokens, 600);
  ASSERT_FALSE(progress.empty());
  for (size_t i = 1; i < progress.size(); ++i) {
    EXPECT_GE(progress[i].first, progress[i - 1].first);
  }
  EXPECT_EQ(progress.back().first, r->tokens);
  EXPECT_EQ(progress.back().second, r->tokens);

  auto pins = client_->Pins();
  ASSERT_TRUE(pins.ok()) << pins.status().ToString();
  bool found = false;
  for (const PinInfo& pin : *pins) found |= pin.name == "client-test" && pin.tokens > 0;
  EXPECT_TRUE(found);

  // A prompt that starts with the prefilled text reuses its cached extents.
  auto g = client_->Generate(Greedy(p.input.prompt + " Question: what is it about?", 4), nullptr);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_GE(g->usage.cached_tokens, 512) << "the prefix was not reused";

  // The same name again is refused; the same text unpinned is all cached.
  auto dup = client_->Prefill(p, nullptr);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(DaemonErrorCode(dup.status()), protocol::ErrorCode::kBadRequest);
  p.pin.clear();
  auto second = client_->Prefill(p, nullptr);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_GE(second->cached_tokens, 512);

  auto unpinned = client_->Unpin("client-test");
  ASSERT_TRUE(unpinned.ok()) << unpinned.status().ToString();
  EXPECT_TRUE(*unpinned);
  auto again = client_->Unpin("client-test");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

TEST_F(LibkvtierModelTest, StatsAndEvict) {
  ASSERT_TRUE(client_->Generate(Greedy(LongText(20), 2), nullptr).ok());
  auto s = client_->Stats();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_FALSE(s->tiers.empty());
  EXPECT_EQ(s->tiers[0].tier, "device");
  EXPECT_GT(s->requests.total, 0);
  auto freed = client_->Evict(EvictTier::kAll);
  ASSERT_TRUE(freed.ok()) << freed.status().ToString();
  EXPECT_GE(*freed, 0);
  // The raw line carries the daemon's extra counters too.
  protocol::Request req;
  req.body = protocol::StatsRequest{};
  auto raw = client_->Send(req);
  ASSERT_TRUE(raw.ok());
  EXPECT_NE(raw->json.find("\"op\":\"stats\""), std::string::npos);
}

TEST_F(LibkvtierModelTest, ManyRequestsInFlightOnOneClient) {
  constexpr int kThreads = 8;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        bool ok = false;
        switch ((t + i) % 4) {
          case 0: {
            std::string streamed;
            auto r = client_->Generate(Greedy("Number " + std::to_string(t), 4),
                                       [&](int32_t, std::string_view s) {
                                         streamed += s;
                                         return true;
                                       });
            ok = r.ok() && r->text == streamed && r->usage.completion_tokens == 4;
            break;
          }
          case 1: {
            auto r = client_->Tokenize("thread " + std::to_string(t));
            ok = r.ok() && !r->empty();
            break;
          }
          case 2:
            ok = client_->Health().ok();
            break;
          default:
            ok = client_->Stats().ok();
        }
        if (!ok) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(client_->stray_lines(), 0);
}

// Last: stops the shared daemon. A stream in progress ends with Unavailable, not a hang.
TEST_F(LibkvtierModelTest, ZzDaemonStoppingMidStream) {
  std::atomic<int> tokens{0};
  Result<GenerateResult> r = InternalError("unset");
  std::thread t([&] {
    r = client_->Generate(Greedy("Once upon a time", 5000), [&](int32_t, std::string_view) {
      ++tokens;
      return true;
    });
  });
  if (!WaitForTokens(tokens, 2)) {
    t.join();
    FAIL() << "no 2 tokens within 60 s: " << (r.ok() ? "finished" : r.status().ToString());
  }
  daemon_->Stop();
  t.join();
  // kvtierd cancels in-flight work (grace 0), or closes: either way, an answer.
  if (r.ok()) {
    EXPECT_NE(r->finish_reason, FinishReason::kLength);
    EXPECT_LT(r->usage.completion_tokens, 5000);
  } else {
    EXPECT_TRUE(r.status().code() == StatusCode::kUnavailable ||
                r.status().code() == StatusCode::kCancelled)
        << r.status().ToString();
  }
  auto after = client_->Health();
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(after.status().message().find("is kvtierd running?"), std::string::npos)
      << after.status().message();
}

}  // namespace
}  // namespace kvtier::client
