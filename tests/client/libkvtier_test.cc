// libkvtier against a FAKE daemon (tests/client/client_test_util.h FakeDaemon), for failure
// modes and orderings the real kvtierd does not produce on demand: a close in the middle of a
// stream, a garbage line, answers to ids nobody asked, answers out of order, silence. Everything
// the real daemon does is tested against the real kvtierd in libkvtier_model_test.cc.
#include "client/libkvtier.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "protocol/messages.h"
#include "tests/client/client_test_util.h"

namespace kvtier::client {
namespace {

using protocol::RequestId;
using testing::FakeDaemon;
using Conn = FakeDaemon::Conn;

std::unique_ptr<Client> MustConnect(const std::string& path, ConnectOptions o = {}) {
  o.socket_path = path;
  auto c = Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

protocol::GenerateResult SomeResult(protocol::FinishReason reason, std::string text) {
  protocol::GenerateResult r;
  r.text = std::move(text);
  r.finish_reason = reason;
  r.usage.prompt_tokens = 5;
  r.usage.completion_tokens = 2;
  return r;
}

GenerateRequest Prompt(std::string text) {
  GenerateRequest g;
  g.input.prompt = std::move(text);
  return g;
}

TEST(LibkvtierTest, MissingSocketIsUnavailableAndSaysWhatToCheck) {
  const std::string path = testing::MakeTempDir("kvtier_no_daemon_") + "/kvtier.sock";
  auto c = Client::Connect(path, std::chrono::milliseconds(500));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(c.status().message().find("is kvtierd running? (socket " + path + ")"),
            std::string::npos)
      << c.status().message();
  EXPECT_FALSE(DaemonErrorCode(c.status()).has_value());
}

TEST(LibkvtierTest, SocketPathTooLongIsInvalidArgument) {
  auto c = Client::Connect("/tmp/" + std::string(200, 'x'), std::chrono::milliseconds(100));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
}

TEST(LibkvtierTest, DefaultSocketPathHonoursKvtierSocket) {
  const char* old = std::getenv("KVTIER_SOCKET");
  const std::string saved = old ? old : "";
  setenv("KVTIER_SOCKET", "/some/where/k.sock", 1);
  EXPECT_EQ(DefaultSocketPath(), "/some/where/k.sock");
  unsetenv("KVTIER_SOCKET");
  EXPECT_NE(DefaultSocketPath().find("kvtier.sock"), std::string::npos);
  if (old) setenv("KVTIER_SOCKET", saved.c_str(), 1);
}

TEST(LibkvtierTest, ServerClosesMidStream) {
  FakeDaemon fake({[](Conn& conn) {
    auto r = conn.ReadRequest();
    ASSERT_TRUE(r);
    EXPECT_TRUE(std::get<protocol::GenerateRequest>(r->body).stream);
    conn.Write(protocol::EncodeToken(r->id, 11, "Hel"));
    conn.Write(protocol::EncodeToken(r->id, 12, "lo"));
    conn.Close();
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  std::string seen;
  auto result = client->Generate(Prompt("hi"), [&](int32_t, std::string_view text) {
    seen += text;
    return true;
  });
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(result.status().message().find("kvtierd closed the connection"), std::string::npos)
      << result.status().message();
  EXPECT_EQ(seen, "Hello");
}

TEST(LibkvtierTest, GarbageLineFailsEveryRequestInFlight) {
  FakeDaemon fake({[](Conn& conn) {
    ASSERT_TRUE(conn.ReadRequest());
    ASSERT_TRUE(conn.ReadRequest());
    conn.Write("this is not json\n");
    conn.ReadLine();  // until the client hangs up
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  Status other;
  std::thread t([&] { other = client->Stats().status(); });
  auto health = client->Health();
  t.join();
  ASSERT_FALSE(health.ok());
  EXPECT_EQ(health.status().code(), StatusCode::kInternal);
  EXPECT_NE(health.status().message().find("not a valid event"), std::string::npos);
  EXPECT_EQ(other.code(), StatusCode::kInternal) << other.ToString();
}

TEST(LibkvtierTest, LinesForUnknownIdsAreIgnoredAndCounted) {
  FakeDaemon fake({[](Conn& conn) {
    auto r = conn.ReadRequest();
    ASSERT_TRUE(r);
    conn.Write(protocol::EncodeToken(RequestId(987654), 1, "x"));
    conn.Write(protocol::EncodeResult(RequestId(std::string("nobody")), protocol::EvictResult{1}));
    protocol::HealthResult h;
    h.version = "9.9";
    conn.Write(protocol::EncodeResult(r->id, h));
    conn.ReadLine();
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  auto health = client->Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->version, "9.9");
  EXPECT_EQ(client->stray_lines(), 2);
}

TEST(LibkvtierTest, AnswersOutOfOrderReachTheirCallers) {
  FakeDaemon fake({[](Conn& conn) {
    auto a = conn.ReadRequest();
    auto b = conn.ReadRequest();
    ASSERT_TRUE(a && b);
    // Answer the later request first, and interleave the token streams.
    for (const auto* r : {&*b, &*a}) {
      conn.Write(protocol::EncodeToken(r->id, 1, r == &*a ? "a" : "b"));
    }
    for (const auto* r : {&*b, &*a}) {
      const std::string name =
          std::get<protocol::GenerateRequest>(r->body).input.prompt == "A" ? "A" : "B";
      conn.Write(protocol::EncodeResult(r->id, SomeResult(protocol::FinishReason::kLength, name)));
    }
    conn.ReadLine();
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  std::string tokens_a, tokens_b;
  Result<GenerateResult> result_a = InternalError("unset");
  std::thread t([&] {
    result_a = client->Generate(Prompt("A"), [&](int32_t, std::string_view s) {
      tokens_a += s;
      return true;
    });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // A is most likely sent first
  auto result_b = client->Generate(Prompt("B"), [&](int32_t, std::string_view s) {
    tokens_b += s;
    return true;
  });
  t.join();
  ASSERT_TRUE(result_a.ok()) << result_a.status().ToString();
  ASSERT_TRUE(result_b.ok()) << result_b.status().ToString();
  EXPECT_EQ(result_a->text, "A");
  EXPECT_EQ(result_b->text, "B");
  // Whichever request the fake read first got "a": each caller saw only its own stream.
  EXPECT_EQ(tokens_a.size(), 1u);
  EXPECT_EQ(tokens_b.size(), 1u);
  EXPECT_NE(tokens_a, tokens_b);
}

TEST(LibkvtierTest, CallbackFalseSendsCancelForThatRequest) {
  std::atomic<bool> cancel_seen{false};
  FakeDaemon fake({[&](Conn& conn) {
    auto r = conn.ReadRequest();
    ASSERT_TRUE(r);
    conn.Write(protocol::EncodeToken(r->id, 1, "one"));
    conn.Write(protocol::EncodeToken(r->id, 2, "two"));  // sent before the cancel arrives
    auto cancel = conn.ReadRequest();
    ASSERT_TRUE(cancel);
    ASSERT_EQ(cancel->op(), protocol::Op::kCancel);
    EXPECT_EQ(std::get<protocol::CancelRequest>(cancel->body).target, r->id);
    cancel_seen = true;
    conn.Write(protocol::EncodeResult(cancel->id, protocol::CancelResult{true}));
    conn.Write(
        protocol::EncodeResult(r->id, SomeResult(protocol::FinishReason::kCancelled, "one")));
    conn.ReadLine();
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  int calls = 0;
  auto result = client->Generate(Prompt("x"), [&](int32_t, std::string_view) {
    ++calls;
    return false;
  });
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->finish_reason, protocol::FinishReason::kCancelled);
  EXPECT_EQ(calls, 1) << "no callback after it asked to stop";
  EXPECT_TRUE(cancel_seen);
}

TEST(LibkvtierTest, DaemonErrorsMapToStatusAndKeepTheirCode) {
  FakeDaemon fake({[](Conn& conn) {
    using protocol::ErrorCode;
    for (ErrorCode code : {ErrorCode::kContextOverflow, ErrorCode::kBusy, ErrorCode::kForbidden,
                           ErrorCode::kCancelled, ErrorCode::kUnknownOp}) {
      auto r = conn.ReadRequest();
      ASSERT_TRUE(r);
      conn.Write(protocol::EncodeError(r->id, code, "details here"));
    }
    conn.ReadLine();
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  struct Want {
    protocol::ErrorCode code;
    StatusCode status;
    const char* prefix;
  };
  for (const Want& w :
       {Want{protocol::ErrorCode::kContextOverflow, StatusCode::kResourceExhausted,
             "context_overflow: details here"},
        Want{protocol::ErrorCode::kBusy, StatusCode::kResourceExhausted, "busy: details here"},
        Want{protocol::ErrorCode::kForbidden, StatusCode::kUnavailable, "forbidden: details here"},
        Want{protocol::ErrorCode::kCancelled, StatusCode::kCancelled, "cancelled: details here"},
        Want{protocol::ErrorCode::kUnknownOp, StatusCode::kUnimplemented,
             "unknown_op: details here"}}) {
    auto r = client->Pins();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), w.status);
    EXPECT_EQ(r.status().message(), w.prefix);
    EXPECT_EQ(DaemonErrorCode(r.status()), w.code);
  }
}

TEST(LibkvtierTest, RefusalWithNullIdExplainsTheClose) {
  // What kvtierd does over max_connections: one error line with a null id, then close.
  auto refuse = [](Conn& conn) {
    conn.Write(protocol::EncodeError(RequestId(), protocol::ErrorCode::kBusy,
                                     "too many connections (max 1); retry later"));
    conn.Close();
  };
  FakeDaemon fake({refuse, refuse});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the refusal has arrived
  // The call reconnects once (the first connection is gone), and is refused again.
  auto r = client->Health();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(DaemonErrorCode(r.status()), protocol::ErrorCode::kBusy) << r.status().message();
  EXPECT_NE(r.status().message().find("too many connections"), std::string::npos);
}

TEST(LibkvtierTest, RefusalWhileARequestIsInFlight) {
  FakeDaemon fake({[](Conn& conn) {
    ASSERT_TRUE(conn.ReadRequest());
    conn.Write(protocol::EncodeError(RequestId(), protocol::ErrorCode::kBusy,
                                     "too many connections (max 1); retry later"));
    conn.Close();
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  auto r = client->Health();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(DaemonErrorCode(r.status()), protocol::ErrorCode::kBusy) << r.status().message();
  EXPECT_NE(r.status().message().find("too many connections"), std::string::npos);
}

TEST(LibkvtierTest, ResultOfTheWrongOpIsInternal) {
  FakeDaemon fake({[](Conn& conn) {
    auto r = conn.ReadRequest();
    ASSERT_TRUE(r);
    conn.Write(protocol::EncodeResult(r->id, protocol::EvictResult{5}));
    conn.ReadLine();
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  auto r = client->Health();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_NE(r.status().message().find("health request with a evict result"), std::string::npos)
      << r.status().message();
}

TEST(LibkvtierTest, SilentDaemonTimesOutAndTheRequestIsCancelled) {
  std::atomic<bool> cancel_seen{false};
  FakeDaemon fake({[&](Conn& conn) {
    auto r = conn.ReadRequest();
    ASSERT_TRUE(r);
    auto cancel = conn.ReadRequest();
    ASSERT_TRUE(cancel);
    cancel_seen = cancel->op() == protocol::Op::kCancel &&
                  std::get<protocol::CancelRequest>(cancel->body).target == r->id;
    conn.ReadLine();
  }});
  ConnectOptions o;
  o.request_timeout = std::chrono::milliseconds(200);
  auto client = MustConnect(fake.socket_path(), o);
  ASSERT_TRUE(client);
  const auto start = std::chrono::steady_clock::now();
  auto r = client->Stats();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("no answer from kvtierd"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  client.reset();  // the fake's ReadLine returns at EOF
  // The fake's handler runs on its own thread: give it time to read the cancel under load.
  for (int i = 0; i < 500 && !cancel_seen; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(cancel_seen);
}

TEST(LibkvtierTest, ReconnectsAfterAnIdleClose) {
  FakeDaemon fake({[](Conn& conn) { conn.Close(); },  // like kvtierd's idle timeout
                   [](Conn& conn) {
                     auto r = conn.ReadRequest();
                     ASSERT_TRUE(r);
                     conn.Write(protocol::EncodeResult(r->id, protocol::UnpinResult{true}));
                     conn.ReadLine();
                   }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the close has arrived
  auto r = client->Unpin("x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(*r);
}

TEST(LibkvtierTest, DuplicateCallerIdIsRefused) {
  FakeDaemon fake({[](Conn& conn) {
    auto r = conn.ReadRequest();
    ASSERT_TRUE(r);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    conn.Write(protocol::EncodeResult(r->id, SomeResult(protocol::FinishReason::kStop, "ok")));
    conn.ReadLine();
  }});
  auto client = MustConnect(fake.socket_path());
  ASSERT_TRUE(client);
  const RequestId id = client->NewId();
  Result<GenerateResult> first = InternalError("unset");
  std::thread t([&] { first = client->Generate(Prompt("x"), nullptr, id); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto second = client->Generate(Prompt("y"), nullptr, id);
  t.join();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(second.status().message().find("already in flight"), std::string::npos);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->text, "ok");
}

}  // namespace
}  // namespace kvtier::client
