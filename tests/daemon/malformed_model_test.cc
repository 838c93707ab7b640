// Bad input against a real kvtierd: each malformed request gets its documented error (or the
// documented close), the daemon stays up, and a bystander client is never disturbed.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/daemon/daemon_test_util.h"

namespace kvtier::testing {
namespace {

constexpr size_t kMaxLine = 4096;

struct Case {
  const char* name;
  std::string bytes;  // sent as is (a '\n' is appended unless `raw`)
  const char* code;   // expected error code; "close" when the daemon closes without a reply
  bool raw = false;
};

std::string Nested(int depth) {
  return "{\"id\":1,\"op\":\"health\",\"x\":" + std::string(depth, '[') + std::string(depth, ']') +
         "}";
}

std::vector<Case> Cases() {
  return {
      {"not_json", "hello daemon", "bad_request"},
      {"open_brace", "{", "bad_request"},
      {"array", "[1,2,3]", "bad_request"},
      {"string", "\"health\"", "bad_request"},
      {"number", "42", "bad_request"},
      {"null", "null", "bad_request"},
      {"trailing_garbage", R"({"id":1,"op":"health"} x)", "bad_request"},
      {"missing_id", R"({"op":"health"})", "bad_request"},
      {"missing_op", R"({"id":1})", "bad_request"},
      {"unknown_op", R"({"id":1,"op":"launch_missiles"})", "unknown_op"},
      {"op_not_string", R"({"id":1,"op":42})", "bad_request"},
      {"id_bool", R"({"id":true,"op":"health"})", "bad_request"},
      {"id_float", R"({"id":1.5,"op":"health"})", "bad_request"},
      {"id_array", R"({"id":[1],"op":"health"})", "bad_request"},
      {"id_too_long", "{\"id\":\"" + std::string(300, 'i') + "\",\"op\":\"health\"}",
       "bad_request"},
      {"duplicate_key", R"({"id":1,"id":2,"op":"health"})", "bad_request"},
      {"unknown_field", R"({"id":1,"op":"health","verbose":true})", "bad_request"},
      {"tokenize_no_text", R"({"id":1,"op":"tokenize"})", "bad_request"},
      {"tokenize_text_number", R"({"id":1,"op":"tokenize","text":5})", "bad_request"},
      {"detokenize_string", R"({"id":1,"op":"detokenize","tokens":"abc"})", "bad_request"},
      {"detokenize_negative", R"({"id":1,"op":"detokenize","tokens":[-1]})", "bad_request"},
      {"detokenize_out_of_vocab", R"({"id":1,"op":"detokenize","tokens":[99999999]})",
       "bad_request"},
      {"generate_no_prompt", R"({"id":1,"op":"generate"})", "bad_request"},
      {"generate_empty_prompt", R"({"id":1,"op":"generate","prompt":""})", "bad_request"},
      {"generate_prompt_and_messages",
       R"({"id":1,"op":"generate","prompt":"x","messages":[{"role":"user","content":"y"}]})",
       "bad_request"},
      {"generate_bad_role",
       R"({"id":1,"op":"generate","messages":[{"role":"wizard","content":"y"}]})", "bad_request"},
      {"max_tokens_negative", R"({"id":1,"op":"generate","prompt":"x","max_tokens":-1})",
       "bad_request"},
      {"max_tokens_huge",
       R"({"id":1,"op":"generate","prompt":"x","max_tokens":99999999999999999999})", "bad_request"},
      {"max_tokens_float", R"({"id":1,"op":"generate","prompt":"x","max_tokens":1e30})",
       "bad_request"},
      {"max_tokens_over_context", R"({"id":1,"op":"generate","prompt":"x","max_tokens":16777216})",
       "context_overflow"},
      {"temperature_string", R"({"id":1,"op":"generate","prompt":"x","temperature":"hot"})",
       "bad_request"},
      {"temperature_negative", R"({"id":1,"op":"generate","prompt":"x","temperature":-1})",
       "bad_request"},
      {"top_p_zero", R"({"id":1,"op":"generate","prompt":"x","top_p":0})", "bad_request"},
      {"seed_negative", R"({"id":1,"op":"generate","prompt":"x","seed":-5})", "bad_request"},
      {"stream_string", R"({"id":1,"op":"generate","prompt":"x","stream":"yes"})", "bad_request"},
      {"cancel_no_target", R"({"id":1,"op":"cancel"})", "bad_request"},
      {"evict_bad_tier", R"({"id":1,"op":"evict","tier":"moon"})", "bad_request"},
      {"pin_bad_name", R"({"id":1,"op":"prefill","prompt":"x","pin":"bad name!"})", "bad_request"},
      {"deep_nesting", Nested(200), "bad_request"},
      {"binary_garbage", std::string("\x00\xff\xfe\x01\x80garbage\x7f", 13), "bad_request"},
      {"invalid_utf8", "{\"id\":1,\"op\":\"tokenize\",\"text\":\"\xff\xfe\"}", "bad_request"},
      {"line_over_limit",
       "{\"id\":1,\"op\":\"tokenize\",\"text\":\"" + std::string(kMaxLine, 'a') + "\"}",
       "too_large"},
      {"over_limit_without_newline", std::string(kMaxLine + 10, 'z'), "too_large", true},
  };
}

TEST(DaemonMalformedTest, EachBadRequestGetsItsDocumentedAnswer) {
  Daemon d({"--max-line-bytes", std::to_string(kMaxLine)});
  Client bystander(d.socket_path());
  ASSERT_TRUE(bystander.connected());
  const std::vector<Case> cases = Cases();
  ASSERT_GE(cases.size(), 30u);
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Client client(d.socket_path());
    ASSERT_TRUE(client.connected());
    ASSERT_TRUE(client.SendRaw(c.raw ? c.bytes : c.bytes + "\n"));
    std::optional<json> e = client.ReadEvent(30000);
    ASSERT_TRUE(e) << "no answer";
    EXPECT_EQ((*e)["event"], "error") << e->dump();
    EXPECT_EQ((*e)["code"], c.code) << e->dump();
    EXPECT_TRUE((*e)["message"].is_string());
    if (std::string(c.code) == "too_large") {
      EXPECT_TRUE((*e)["id"].is_null());
      EXPECT_TRUE(client.WaitClosed()) << "too_large closes the connection";
    } else {
      // The connection is still good.
      std::optional<json> ok = client.Call({{"id", "next"}, {"op", "health"}}, nullptr, 10000);
      ASSERT_TRUE(ok);
      EXPECT_EQ((*ok)["event"], "result");
    }
    std::optional<json> b = bystander.Call({{"id", ++n}, {"op", "health"}}, nullptr, 10000);
    ASSERT_TRUE(b) << "the bystander lost its connection";
    EXPECT_EQ((*b)["event"], "result");
  }
  EXPECT_TRUE(d.alive());
}

TEST(DaemonMalformedTest, HalfALineThenDisconnect) {
  Daemon d({"--max-line-bytes", std::to_string(kMaxLine)});
  Client bystander(d.socket_path());
  for (int i = 0; i < 5; ++i) {
    Client c(d.socket_path());
    ASSERT_TRUE(c.SendRaw(R"({"id":1,"op":"generate","prompt":"half a req)"));
    c.Close();
  }
  std::optional<json> b = bystander.Call({{"id", 1}, {"op", "stats"}});
  ASSERT_TRUE(b);
  EXPECT_EQ((*b)["requests"]["active"], 0);
  EXPECT_TRUE(d.alive());
}

TEST(DaemonMalformedTest, GarbagePipelinedBetweenValidRequests) {
  Daemon d({"--max-line-bytes", std::to_string(kMaxLine)});
  Client c(d.socket_path());
  std::string batch = R"({"id":1,"op":"health"})"
                      "\n"
                      "garbage here\n"
                      R"({"id":2,"op":"tokenize","text":"abc"})"
                      "\n"
                      "\x01\x02\x03\n"
                      "\r\n\n   \n"  // blank lines are skipped, not answered
                      R"({"id":3,"op":"nope"})"
                      "\n"
                      R"({"id":4,"op":"detokenize","tokens":[1]})"
                      "\r\n";
  ASSERT_TRUE(c.SendRaw(batch));
  // Lines are answered in order here: health and the errors on the connection's strand, the
  // tokenizer work on a helper; so collect by id.
  std::vector<json> lines;
  for (int i = 0; i < 6; ++i) {
    std::optional<json> e = c.ReadEvent(10000);
    ASSERT_TRUE(e);
    lines.push_back(*e);
  }
  int nulls = 0;
  for (const json& e : lines) {
    if (e["id"].is_null()) {
      EXPECT_EQ(e["code"], "bad_request");
      ++nulls;
    } else if (e["id"] == 3) {
      EXPECT_EQ(e["code"], "unknown_op");
    } else {
      EXPECT_EQ(e["event"], "result") << e.dump();
    }
  }
  EXPECT_EQ(nulls, 2);
  // Nothing more: the blank lines got no answer.
  EXPECT_FALSE(c.ReadLine(300));
  EXPECT_TRUE(c.timed_out());
}

}  // namespace
}  // namespace kvtier::testing
