#include "protocol/messages.h"

#include <gtest/gtest.h>

#include <string>
#include <unordered_set>
#include <vector>

namespace kvtier::protocol {
namespace {

std::string Line(std::string frame) {  // a frame without its '\n'
  EXPECT_FALSE(frame.empty());
  EXPECT_EQ(frame.back(), '\n');
  EXPECT_EQ(frame.find('\n'), frame.size() - 1) << "one frame is one line";
  frame.pop_back();
  return frame;
}

Request MustParse(std::string_view line) {
  RequestError error;
  Result<Request> r = ParseRequest(line, &error);
  EXPECT_TRUE(r.ok()) << line << " -> " << error.message;
  return r.ok() ? *r : Request{};
}

// --- requests ---

std::vector<Request> AllRequests() {
  GenerateRequest full;
  full.input.messages = {
      {Role::kSystem, "be brief"}, {Role::kUser, "héllo \"there\"\n"}, {Role::kAssistant, ""}};
  full.max_tokens = 1 << 24;
  full.temperature = 0.0;
  full.top_p = 0.5;
  full.top_k = 0;
  full.seed = 9223372036854775807;
  full.stop = {"\n\n", "</s>"};
  full.stream = true;
  full.attention = Attention::kSparse;
  full.budget_tokens = 16;
  full.cache_salt = std::string(256, 's');
  GenerateRequest minimal;
  minimal.input.prompt = "Once upon a time";
  PrefillRequest prefill;
  prefill.input.prompt = std::string(5000, 'p');
  prefill.pin = "repo.v1_main-2";
  prefill.cache_salt = "team-a";
  PrefillRequest prefill_chat;
  prefill_chat.input.messages = {{Role::kUser, "x"}};
  return {
      {RequestId(1), HealthRequest{}},
      {RequestId(-9223372036854775807 - 1), TokenizeRequest{"hello world", true}},
      {RequestId(std::string(256, 'i')), TokenizeRequest{"", false}},
      {RequestId("d"), DetokenizeRequest{{0, 1, 2147483647}}},
      {RequestId("d0"), DetokenizeRequest{}},
      {RequestId("g"), full},
      {RequestId(9223372036854775807), minimal},
      {RequestId(""), prefill},
      {RequestId(5), prefill_chat},
      {RequestId(6), PinsRequest{}},
      {RequestId(7), UnpinRequest{"repo.v1"}},
      {RequestId(8), CancelRequest{RequestId("g")}},
      {RequestId(9), CancelRequest{RequestId(-3)}},
      {RequestId(10), StatsRequest{}},
      {RequestId(11), EvictRequest{EvictTier::kDisk}},
      {RequestId(12), EvictRequest{}},
  };
}

TEST(RequestTest, EveryRequestRoundTrips) {
  for (const Request& r : AllRequests()) {
    const std::string line = Line(EncodeRequest(r));
    Request back = MustParse(line);
    EXPECT_EQ(back, r) << line;
    EXPECT_EQ(back.op(), r.op());
  }
}

TEST(RequestTest, EveryOpIsCovered) {
  std::unordered_set<int> ops;
  for (const Request& r : AllRequests()) ops.insert(static_cast<int>(r.op()));
  EXPECT_EQ(ops.size(), static_cast<size_t>(kNumOps));
}

TEST(RequestTest, HandWrittenLinesParse) {
  Request r = MustParse(R"({"op":"generate","id":"a1","prompt":"Hi","max_tokens":8,)"
                        R"("temperature":1,"stop":"END","seed":42,"attention":"dense"})");
  ASSERT_EQ(r.op(), Op::kGenerate);
  EXPECT_EQ(r.id, RequestId("a1"));
  const auto& g = std::get<GenerateRequest>(r.body);
  EXPECT_EQ(g.input.prompt, "Hi");
  EXPECT_FALSE(g.input.is_chat());
  EXPECT_EQ(g.max_tokens, 8);
  EXPECT_EQ(g.temperature, 1.0);                       // an integer is a valid number
  EXPECT_EQ(g.stop, std::vector<std::string>{"END"});  // a single string is one stop string
  EXPECT_EQ(g.seed, std::optional<int64_t>(42));
  EXPECT_EQ(g.attention, Attention::kDense);

  // Whitespace and key order do not matter.
  r = MustParse(" { \"id\" : 3 , \"op\" : \"health\" } ");
  EXPECT_EQ(r.op(), Op::kHealth);
  EXPECT_EQ(r.id, RequestId(3));
}

TEST(RequestTest, Defaults) {
  Request r = MustParse(R"({"id":1,"op":"generate","messages":[{"role":"user","content":"q"}]})");
  const auto& g = std::get<GenerateRequest>(r.body);
  EXPECT_TRUE(g.input.is_chat());
  EXPECT_EQ(g.max_tokens, 256);
  EXPECT_DOUBLE_EQ(g.temperature, 0.8);
  EXPECT_DOUBLE_EQ(g.top_p, 0.95);
  EXPECT_EQ(g.top_k, 40);
  EXPECT_FALSE(g.seed.has_value());
  EXPECT_TRUE(g.stop.empty());
  EXPECT_FALSE(g.stream);
  EXPECT_EQ(g.attention, Attention::kAuto);
  EXPECT_FALSE(g.budget_tokens.has_value());
  EXPECT_EQ(g.cache_salt, "");

  r = MustParse(R"({"id":1,"op":"evict"})");
  EXPECT_EQ(std::get<EvictRequest>(r.body).tier, EvictTier::kAll);
  r = MustParse(R"({"id":1,"op":"tokenize","text":"x"})");
  EXPECT_FALSE(std::get<TokenizeRequest>(r.body).special);
}

TEST(RequestTest, BoundaryValuesAreAccepted) {
  for (const char* line : {
           R"({"id":1,"op":"generate","prompt":"x","max_tokens":0})",
           R"({"id":1,"op":"generate","prompt":"x","max_tokens":16777216})",
           R"({"id":1,"op":"generate","prompt":"x","temperature":100})",
           R"({"id":1,"op":"generate","prompt":"x","temperature":0.0})",
           R"({"id":1,"op":"generate","prompt":"x","top_p":1})",
           R"({"id":1,"op":"generate","prompt":"x","top_p":1e-300})",
           R"({"id":1,"op":"generate","prompt":"x","seed":0})",
           R"({"id":1,"op":"generate","prompt":"x","budget_tokens":16777216})",
           R"({"id":1,"op":"generate","prompt":"x","stop":[]})",
           R"({"id":1,"op":"unpin","name":"a"})",
           R"({"id":1,"op":"tokenize","text":"\u0000 \ud83d\ude00"})",
           "\xEF\xBB\xBF{\"id\":1,\"op\":\"health\"}",  // a UTF-8 byte order mark is skipped
       }) {
    MustParse(line);
  }
  Request r = MustParse(R"({"id":1,"op":"unpin","name":")" + std::string(128, 'n') + "\"}");
  EXPECT_EQ(std::get<UnpinRequest>(r.body).name.size(), 128u);
  r = MustParse(R"({"id":1,"op":"tokenize","text":"\ud83d\ude00"})");
  EXPECT_EQ(std::get<TokenizeRequest>(r.body).text, "\xF0\x9F\x98\x80");
}

TEST(RequestTest, ErrorCarriesTheIdWhenReadable) {
  RequestError error;
  EXPECT_FALSE(ParseRequest(R"({"id":"abc","op":"generate"})", &error).ok());
  EXPECT_EQ(error.id, RequestId("abc"));
  EXPECT_EQ(error.code, ErrorCode::kBadRequest);
  EXPECT_EQ(Line(error.Encode()),
            R"({"id":"abc","event":"error","code":"bad_request",)"
            R"x("message":"missing required field 'prompt' or 'messages' (exactly one)"})x");

  EXPECT_FALSE(ParseRequest(R"({"op":"health","id":{}})", &error).ok());
  EXPECT_TRUE(error.id.is_null());
  EXPECT_EQ(Line(error.Encode()).rfind(R"({"id":null,"event":"error","code":"bad_request",)", 0),
            0u);

  Result<Request> r = ParseRequest(R"({"id":2,"op":"nope"})", &error);
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(error.code, ErrorCode::kUnknownOp);
  EXPECT_EQ(error.id, RequestId(2));
  EXPECT_EQ(r.status().message(), error.message);
}

TEST(RequestTest, ErrorMessagesQuoteLongNamesShortly) {
  RequestError error;
  const std::string key(10000, 'k');
  EXPECT_FALSE(ParseRequest(R"({"id":1,"op":"health",")" + key + R"(":1})", &error).ok());
  EXPECT_LT(error.message.size(), 120u);
  EXPECT_NE(error.message.find("kkk..."), std::string::npos);
  // A cut never splits a UTF-8 character: the message stays valid UTF-8.
  const std::string euro_key = std::string(63, 'x') + "\xE2\x82\xAC";
  EXPECT_FALSE(ParseRequest(R"({"id":1,"op":"health",")" + euro_key + R"(":1})", &error).ok());
  EXPECT_NE(error.message.find(std::string(63, 'x') + "...'"), std::string::npos);
}

// --- events ---

GenerateResult SampleGenerateResult() {
  GenerateResult g;
  g.text = "Paris.";
  g.finish_reason = FinishReason::kLength;
  g.usage = {1200, 1024, {512, 256, 192, 64}, 7};
  g.timing = {12.5, 80.25, 140, 50};
  g.retrieval = {33.5, 1048576, 96, 40, 8, 589824, 300, 48, 5, 2, 7, 1, 3};
  g.seed = 18446744073709551615u;
  return g;
}

std::vector<Event> AllEvents() {
  StatsResult stats;
  stats.tiers = {{"device", 1 << 30, 1 << 20, 64, 10, 2, 5, 6},
                 {"disk", int64_t{1} << 40, 4096, 3, 1, 0, 8192, 4096}};
  stats.codecs = {{"q4+zstd", 3.5}, {"q8", 1.88}};  // ParseEvent sorts codecs by name
  stats.retrieval = {100, 40.5, 300, 1 << 22};
  stats.requests = {50, 2, 1, 3};
  return {
      {RequestId(1), TokenEvent{42, " the"}},
      {RequestId("s"), TokenEvent{0, ""}},
      {RequestId(2), ProgressEvent{512, 4096}},
      {RequestId(3), ErrorEvent{ErrorCode::kContextOverflow, "prompt is 9000 tokens"}},
      {RequestId(), ErrorEvent{ErrorCode::kTooLarge, "line exceeds"}},
      {RequestId(4), OpResult(HealthResult{"0.1.0", "SmolLM2", "cpu", "x86-64", 12.5})},
      {RequestId(5), OpResult(TokenizeResult{{1, 2, 3}})},
      {RequestId(6), OpResult(DetokenizeResult{"héllo"})},
      {RequestId(7), OpResult(SampleGenerateResult())},
      {RequestId(8), OpResult(PrefillResult{4096, 1024})},
      {RequestId(9), OpResult(PinsResult{{{"repo", 100}, {"book.v2", 200000}}})},
      {RequestId(10), OpResult(UnpinResult{true})},
      {RequestId(11), OpResult(CancelResult{false})},
      {RequestId(12), OpResult(stats)},
      {RequestId(13), OpResult(EvictResult{123456789})},
      {RequestId(14), OpResult(PinsResult{})},
  };
}

TEST(EventTest, EveryEventRoundTrips) {
  for (ErrorCode code : {ErrorCode::kBadRequest, ErrorCode::kUnknownOp, ErrorCode::kTooLarge,
                         ErrorCode::kContextOverflow, ErrorCode::kBusy, ErrorCode::kCancelled,
                         ErrorCode::kForbidden, ErrorCode::kUnavailable, ErrorCode::kInternal}) {
    Result<Event> e = ParseEvent(Line(EncodeError(RequestId(1), code, "m")));
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(std::get<ErrorEvent>(e->body).code, code);
  }
  std::unordered_set<size_t> results;
  for (const Event& event : AllEvents()) {
    const std::string line = Line(EncodeEvent(event));
    Result<Event> back = ParseEvent(line);
    ASSERT_TRUE(back.ok()) << line << " -> " << back.status().ToString();
    EXPECT_EQ(*back, event) << line;
    EXPECT_EQ(back->is_final(), event.body.index() >= 2);
    if (const auto* r = std::get_if<OpResult>(&event.body)) results.insert(r->index());
  }
  EXPECT_EQ(results.size(), static_cast<size_t>(kNumOps));
}

TEST(EventTest, StatsTiersComeBackInTierOrder) {
  StatsResult stats;
  for (const char* tier : {"remote", "disk", "host", "device"}) stats.tiers.push_back({tier});
  Result<Event> e = ParseEvent(Line(EncodeResult(RequestId(1), stats)));
  ASSERT_TRUE(e.ok());
  const auto& back = std::get<StatsResult>(std::get<OpResult>(e->body));
  ASSERT_EQ(back.tiers.size(), 4u);
  EXPECT_EQ(back.tiers[0].tier, "device");
  EXPECT_EQ(back.tiers[1].tier, "host");
  EXPECT_EQ(back.tiers[2].tier, "disk");
  EXPECT_EQ(back.tiers[3].tier, "remote");
}

TEST(EventTest, GenerateResultHasDesignFieldNames) {
  EXPECT_EQ(Line(EncodeResult(RequestId("q"), SampleGenerateResult())),
            R"({"id":"q","event":"result","op":"generate","text":"Paris.",)"
            R"("finish_reason":"length","usage":{"prompt_tokens":1200,"cached_tokens":1024,)"
            R"("cached_by_tier":{"device":512,"host":256,"disk":192,"remote":64},)"
            R"("completion_tokens":7},"timing":{"ttft_ms":12.5,"prefill_ms":80.25,)"
            R"("decode_ms":140.0,"decode_tokens_per_s":50.0},)"
            R"("retrieval":{"pages_attended_avg":33.5,"bytes_promoted":1048576,)"
            R"("pages_promoted":96,"pages_promoted_by_tier":{"host":40,"disk":8},)"
            R"("bytes_decompressed":589824,"hot_hits":300,"hot_misses":48,"disk_reads":3,)"
            R"("prefetch":{"records":7,"hits":5,"waits":2,"wasted":1}},)"
            R"("seed":18446744073709551615})");
}

TEST(EventTest, StreamingLines) {
  EXPECT_EQ(EncodeToken(RequestId(3), 17, "\xC3\xA9"),
            "{\"id\":3,\"event\":\"token\",\"token\":17,\"text\":\"\xC3\xA9\"}\n");
  EXPECT_EQ(EncodeProgress(RequestId("p"), 5, 10),
            "{\"id\":\"p\",\"event\":\"progress\",\"done\":5,\"total\":10}\n");
  EXPECT_EQ(EncodeError(RequestId(), ErrorCode::kBusy, "queue full"),
            "{\"id\":null,\"event\":\"error\",\"code\":\"busy\",\"message\":\"queue full\"}\n");
  EXPECT_EQ(Line(EncodeLineTooLarge(16 << 20)),
            R"({"id":null,"event":"error","code":"too_large",)"
            R"("message":"line exceeds max_line_bytes (16777216); closing the connection"})");
  EXPECT_EQ(Line(EncodeResult(RequestId(1), CancelResult{true})),
            R"({"id":1,"event":"result","op":"cancel","cancelled":true})");
}

TEST(EventTest, EncodersNeverFail) {
  // Invalid UTF-8 becomes U+FFFD; control characters are escaped; the frame stays one line.
  std::string line = Line(EncodeToken(RequestId(1), 5,
                                      "a\xE2\x82"
                                      "b\n\x01"));
  EXPECT_EQ(line,
            "{\"id\":1,\"event\":\"token\",\"token\":5,\"text\":\"a\xEF\xBF\xBD"
            "b\\n\\u0001\"}");
  Result<Event> e = ParseEvent(line);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(std::get<TokenEvent>(e->body).text,
            "a\xEF\xBF\xBD"
            "b\n\x01");

  // Non-finite numbers are written as 0 (JSON has no inf/NaN).
  GenerateResult g;
  g.timing.decode_tokens_per_s = 1.0 / 0.0;
  line = Line(EncodeResult(RequestId(1), g));
  EXPECT_NE(line.find(R"("decode_tokens_per_s":0.0)"), std::string::npos) << line;
  EXPECT_TRUE(ParseEvent(line).ok());
}

TEST(EventTest, UnknownFieldsAreIgnoredButKnownOnesChecked) {
  Result<Event> e = ParseEvent(
      R"({"id":1,"event":"result","op":"evict","freed_bytes":5,"new_field":[1,{"x":2}]})");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(std::get<EvictResult>(std::get<OpResult>(e->body)).freed_bytes, 5);

  struct Case {
    const char* line;
    const char* message;
  } cases[] = {
      {R"({"id":1,"event":"result","op":"evict"})", "missing required field 'freed_bytes'"},
      {R"({"id":1,"event":"result","op":"evict","freed_bytes":-1})", "'freed_bytes' must be"},
      {R"({"id":1,"event":"result","op":"evict","freed_bytes":1,"freed_bytes":2})",
       "duplicate key 'freed_bytes'"},
      {R"({"id":1,"event":"result","op":"fly"})", "field 'op' must be a known op"},
      {R"({"id":1,"event":"result"})", "missing required field 'op'"},
      {R"({"id":1,"event":"resolve"})", "field 'event' must be one of"},
      {R"({"id":null,"event":"token","token":1,"text":""})", "null only on errors"},
      {R"({"id":1,"event":"error","code":"oops","message":""})", "known error code"},
      {R"({"id":1,"event":"progress","done":1,"total":1e400})", "number overflow"},
      {R"({"id":1,"event":"progress","done":1,"total":1.5})", "field 'total' must be"},
      {R"({"id":1,"event":"result","op":"health","version":"v","model":"m","backend":"cpu",)"
       R"("device":"d","uptime_s":"1"})",
       "field 'uptime_s' must be a finite number"},
      {R"({"id":1,"event":"result","op":"generate","text":"","finish_reason":"stop",)"
       R"("usage":{"prompt_tokens":1,"cached_tokens":0,"cached_by_tier":{"device":0},)"
       R"("completion_tokens":0}})",
       "missing required field 'usage.cached_by_tier.host'"},
      {R"([1,2])", "an event must be a JSON object"},
      {R"({"id":1,"event":"token")", "invalid JSON"},
  };
  for (const Case& c : cases) {
    Result<Event> r = ParseEvent(c.line);
    ASSERT_FALSE(r.ok()) << c.line;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.line;
    EXPECT_NE(r.status().message().find(c.message), std::string::npos)
        << c.line << " -> " << r.status().message();
  }
}

// --- names and ids ---

TEST(NamesTest, RoundTrip) {
  for (int i = 0; i < kNumOps; ++i) {
    EXPECT_EQ(OpFromName(OpName(static_cast<Op>(i))), std::optional<Op>(static_cast<Op>(i)));
  }
  EXPECT_FALSE(OpFromName("HEALTH").has_value());
  for (int i = 0; i <= static_cast<int>(ErrorCode::kInternal); ++i) {
    auto code = static_cast<ErrorCode>(i);
    EXPECT_EQ(ErrorCodeFromName(ErrorCodeName(code)), std::optional<ErrorCode>(code));
  }
  EXPECT_EQ(ErrorCodeName(ErrorCode::kContextOverflow), "context_overflow");
}

TEST(RequestIdTest, StringAndIntegerIdsDiffer) {
  EXPECT_NE(RequestId(1), RequestId("1"));
  EXPECT_EQ(RequestId("a"), RequestId(std::string("a")));
  EXPECT_TRUE(RequestId().is_null());
  std::unordered_set<RequestId, RequestIdHash> ids = {RequestId(1), RequestId("1"), RequestId()};
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(RequestId(-5).ToJson(), "-5");
  EXPECT_EQ(RequestId("a\"b").ToJson(), R"("a\"b")");
  EXPECT_EQ(RequestId().ToJson(), "null");
}

}  // namespace
}  // namespace kvtier::protocol
