// Table-driven: every malformed request line gets the documented code, id and message.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/messages.h"

namespace kvtier::protocol {
namespace {

struct Case {
  std::string name;
  std::string line;
  ErrorCode code;
  RequestId id;         // the id the error must carry (null when unreadable)
  std::string message;  // a substring of the error message
};

constexpr ErrorCode kBad = ErrorCode::kBadRequest;

std::string Gen(const std::string& fields) {
  return R"({"id":7,"op":"generate","prompt":"hi",)" + fields + "}";
}

std::vector<Case> Cases() {
  const RequestId null_id;
  const RequestId seven(7);
  const RequestId one(1);
  std::string depth_bomb = R"({"id":1,"op":"health","x":)";
  for (int i = 0; i < 100000; ++i) depth_bomb += "[";
  std::string nested_17 = R"({"id":1,"op":"health","x":)";
  for (int i = 0; i < 16; ++i) nested_17 += "[";  // the object is level 1
  for (int i = 0; i < 16; ++i) nested_17 += "]";
  nested_17 += "}";
  return {
      // --- JSON syntax and encoding ---
      {"empty", "", kBad, null_id, "invalid JSON at byte 1"},
      {"not json", "hello", kBad, null_id, "invalid JSON"},
      {"truncated", R"({"id":1,"op":"health")", kBad, null_id, "invalid JSON"},
      {"trailing garbage", R"({"id":1,"op":"health"} x)", kBad, null_id, "invalid JSON"},
      {"two objects", R"({"id":1,"op":"health"}{"id":2,"op":"health"})", kBad, null_id,
       "invalid JSON"},
      {"trailing comma", R"({"id":1,"op":"health",})", kBad, null_id, "invalid JSON"},
      {"single quotes", R"({'id':1,'op':'health'})", kBad, null_id, "invalid JSON"},
      {"comment", R"({"id":1,/*x*/"op":"health"})", kBad, null_id, "invalid JSON"},
      {"NaN literal", R"({"id":1,"op":"generate","prompt":"x","temperature":NaN})", kBad, null_id,
       "invalid JSON"},
      {"Infinity literal", R"({"id":1,"op":"generate","prompt":"x","top_p":Infinity})", kBad,
       null_id, "invalid JSON"},
      {"invalid UTF-8 in string", "{\"id\":1,\"op\":\"tokenize\",\"text\":\"\xC3\x28\"}", kBad,
       null_id, "UTF-8"},
      {"overlong UTF-8", "{\"id\":1,\"op\":\"tokenize\",\"text\":\"\xC0\xAF\"}", kBad, null_id,
       "UTF-8"},
      {"lone surrogate escape", R"({"id":1,"op":"tokenize","text":"\ud800"})", kBad, null_id,
       "surrogate"},
      {"raw control char", "{\"id\":1,\"op\":\"tokenize\",\"text\":\"a\x01\"}", kBad, null_id,
       "invalid JSON"},
      {"binary garbage", std::string("\x00\xff\xfe{\x80", 5), kBad, null_id, "invalid JSON"},
      {"depth bomb", depth_bomb, kBad, null_id, "nesting deeper than 16 levels"},
      {"17 levels", nested_17, kBad, null_id, "nesting deeper than 16"},
      // --- top level ---
      {"array", R"([{"id":1,"op":"health"}])", kBad, null_id, "must be a JSON object"},
      {"string", R"("health")", kBad, null_id, "must be a JSON object"},
      {"null", "null", kBad, null_id, "must be a JSON object"},
      // --- id ---
      {"missing id", R"({"op":"health"})", kBad, null_id, "missing required field 'id'"},
      {"id object", R"({"id":{},"op":"health"})", kBad, null_id, "field 'id' must be a string"},
      {"id float", R"({"id":1.5,"op":"health"})", kBad, null_id, "field 'id' must be"},
      {"id integral float", R"({"id":1.0,"op":"health"})", kBad, null_id, "field 'id' must be"},
      {"id bool", R"({"id":true,"op":"health"})", kBad, null_id, "field 'id' must be"},
      {"id null", R"({"id":null,"op":"health"})", kBad, null_id, "field 'id' must be"},
      {"id array", R"({"id":[1],"op":"health"})", kBad, null_id, "field 'id' must be"},
      {"id above int64", R"({"id":9223372036854775808,"op":"health"})", kBad, null_id,
       "[-9223372036854775808, 9223372036854775807]"},
      {"id below int64", R"({"id":-9223372036854775809,"op":"health"})", kBad, null_id,
       "field 'id' must be"},
      {"id string 257 bytes", R"({"id":")" + std::string(257, 'i') + R"(","op":"health"})", kBad,
       null_id, "at most 256 bytes"},
      {"duplicate id", R"({"id":1,"id":2,"op":"health"})", kBad, null_id, "duplicate key 'id'"},
      // --- op ---
      {"missing op", R"({"id":1})", kBad, one, "missing required field 'op'"},
      {"op number", R"({"id":1,"op":5})", kBad, one, "field 'op' must be a string"},
      {"unknown op", R"({"id":1,"op":"launch"})", ErrorCode::kUnknownOp, one,
       "unknown op 'launch'"},
      {"op wrong case", R"({"id":"x","op":"Health"})", ErrorCode::kUnknownOp, RequestId("x"),
       "unknown op 'Health'"},
      {"duplicate op", R"({"id":1,"op":"health","op":"stats"})", kBad, one, "duplicate key 'op'"},
      // --- unknown fields and duplicates ---
      {"unknown field", R"({"id":1,"op":"health","verbose":true})", kBad, one,
       "unknown field 'verbose' for op 'health'"},
      // Found by protocol_fuzz: a decoded control character must not break the one-line message.
      {"unknown field with a newline", R"({"id":1,"op":"health","a\nb\u0001":true})", kBad, one,
       "unknown field 'a\\nb\\x01' for op 'health'"},
      {"field of another op", R"({"id":1,"op":"tokenize","text":"a","max_tokens":3})", kBad, one,
       "unknown field 'max_tokens' for op 'tokenize'"},
      {"unknown field in message",
       R"({"id":1,"op":"generate","messages":[{"role":"user","content":"a","name":"b"}]})", kBad,
       one, "unknown field 'messages[0].name'"},
      {"duplicate field", Gen(R"("max_tokens":1,"max_tokens":2)"), kBad, seven,
       "duplicate key 'max_tokens'"},
      {"duplicate nested key",
       R"({"id":1,"op":"generate","messages":[{"role":"user","role":"system","content":""}]})",
       kBad, one, "duplicate key 'role'"},
      // --- numbers ---
      {"max_tokens string", Gen(R"("max_tokens":"5")"), kBad, seven,
       "field 'max_tokens' must be an integer in [0, 16777216]"},
      {"max_tokens negative", Gen(R"("max_tokens":-1)"), kBad, seven,
       "field 'max_tokens' must be an integer in [0, 16777216]"},
      {"max_tokens 2^24+1", Gen(R"("max_tokens":16777217)"), kBad, seven,
       "field 'max_tokens' must be an integer in [0, 16777216]"},
      {"max_tokens huge", Gen(R"("max_tokens":99999999999999999999999)"), kBad, seven,
       "field 'max_tokens' must be an integer"},
      {"max_tokens float", Gen(R"("max_tokens":5.0)"), kBad, seven,
       "field 'max_tokens' must be an integer"},
      {"max_tokens exponent", Gen(R"("max_tokens":1e3)"), kBad, seven,
       "field 'max_tokens' must be an integer"},
      {"max_tokens array", Gen(R"("max_tokens":[5])"), kBad, seven,
       "field 'max_tokens' must be an integer"},
      // Out-of-range literals stop the JSON parser itself, before the id is read.
      {"temperature 1e400", Gen(R"("temperature":1e400)"), kBad, null_id,
       "number overflow parsing '1e400'"},
      {"temperature -1e400", Gen(R"("temperature":-1e400)"), kBad, null_id, "number overflow"},
      {"temperature negative", Gen(R"("temperature":-0.1)"), kBad, seven,
       "field 'temperature' must be a finite number in [0, 100]"},
      {"temperature too high", Gen(R"("temperature":100.5)"), kBad, seven,
       "field 'temperature' must be"},
      {"temperature string", Gen(R"("temperature":"0.7")"), kBad, seven,
       "field 'temperature' must be"},
      {"top_p zero", Gen(R"("top_p":0)"), kBad, seven,
       "field 'top_p' must be a finite number in (0, 1]"},
      {"top_p above one", Gen(R"("top_p":1.01)"), kBad, seven, "field 'top_p' must be"},
      {"top_k negative", Gen(R"("top_k":-1)"), kBad, seven,
       "field 'top_k' must be an integer in [0, 2147483647]"},
      {"seed negative", Gen(R"("seed":-1)"), kBad, seven,
       "field 'seed' must be an integer in [0, 9223372036854775807]"},
      {"seed 2^63", Gen(R"("seed":9223372036854775808)"), kBad, seven, "field 'seed' must be"},
      {"seed float", Gen(R"("seed":4.2)"), kBad, seven, "field 'seed' must be an integer"},
      {"budget below 16", Gen(R"("budget_tokens":15)"), kBad, seven,
       "field 'budget_tokens' must be an integer in [16, 16777216]"},
      // --- strings, enums, booleans ---
      {"stream string", Gen(R"("stream":"true")"), kBad, seven, "field 'stream' must be a boolean"},
      {"stream number", Gen(R"("stream":1)"), kBad, seven, "field 'stream' must be a boolean"},
      {"attention unknown", Gen(R"("attention":"fast")"), kBad, seven,
       "field 'attention' must be one of auto, dense, sparse"},
      {"attention wrong case", Gen(R"("attention":"Dense")"), kBad, seven,
       "field 'attention' must be one of"},
      {"stop number", Gen(R"("stop":5)"), kBad, seven,
       "field 'stop' must be a string or an array of at most 16 strings"},
      {"stop 17 strings",
       Gen(R"("stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"])"), kBad,
       seven, "at most 16 strings"},
      {"stop empty string", Gen(R"("stop":["a",""])"), kBad, seven,
       "field 'stop[1]' must be a non-empty string"},
      {"stop nested array", Gen(R"("stop":[["a"]])"), kBad, seven, "field 'stop[0]' must be"},
      {"cache_salt too long", Gen(R"("cache_salt":")" + std::string(257, 's') + "\""), kBad, seven,
       "field 'cache_salt' must be a string of at most 256 bytes"},
      {"cache_salt number", Gen(R"("cache_salt":1)"), kBad, seven, "field 'cache_salt' must be"},
      // --- prompt / messages ---
      {"prompt and messages",
       R"({"id":1,"op":"generate","prompt":"a","messages":[{"role":"user","content":"b"}]})", kBad,
       one, "mutually exclusive"},
      {"neither prompt nor messages", R"({"id":1,"op":"prefill"})", kBad, one,
       "missing required field 'prompt' or 'messages'"},
      {"prompt empty", R"({"id":1,"op":"generate","prompt":""})", kBad, one,
       "field 'prompt' must be a non-empty string"},
      {"prompt array", R"({"id":1,"op":"generate","prompt":["a"]})", kBad, one,
       "field 'prompt' must be a non-empty string"},
      {"messages empty", R"({"id":1,"op":"generate","messages":[]})", kBad, one,
       "field 'messages' must be a non-empty array"},
      {"messages object", R"({"id":1,"op":"generate","messages":{"role":"user"}})", kBad, one,
       "field 'messages' must be a non-empty array"},
      {"message not object", R"({"id":1,"op":"generate","messages":["hi"]})", kBad, one,
       "field 'messages[0]' must be an object"},
      {"bad role", R"({"id":1,"op":"generate","messages":[{"role":"tool","content":"x"}]})", kBad,
       one, "field 'messages[0].role' must be one of system, user, assistant"},
      {"missing role", R"({"id":1,"op":"generate","messages":[{"content":"x"}]})", kBad, one,
       "missing required field 'messages[0].role'"},
      {"content not string",
       R"({"id":1,"op":"generate","messages":[{"role":"user","content":"a"},)"
       R"({"role":"user","content":null}]})",
       kBad, one, "field 'messages[1].content' must be a string"},
      // --- other ops ---
      {"tokenize missing text", R"({"id":1,"op":"tokenize"})", kBad, one,
       "missing required field 'text'"},
      {"tokenize special string", R"({"id":1,"op":"tokenize","text":"a","special":"yes"})", kBad,
       one, "field 'special' must be a boolean"},
      {"detokenize not array", R"({"id":1,"op":"detokenize","tokens":5})", kBad, one,
       "field 'tokens' must be an array"},
      {"detokenize negative", R"({"id":1,"op":"detokenize","tokens":[1,-2]})", kBad, one,
       "field 'tokens[1]' must be an integer in [0, 2147483647]"},
      {"detokenize above int32", R"({"id":1,"op":"detokenize","tokens":[2147483648]})", kBad, one,
       "field 'tokens[0]' must be an integer"},
      {"detokenize float", R"({"id":1,"op":"detokenize","tokens":[1.5]})", kBad, one,
       "field 'tokens[0]' must be an integer"},
      {"pin with slash", R"({"id":1,"op":"prefill","prompt":"x","pin":"a/b"})", kBad, one,
       "field 'pin' must be a pin name matching [A-Za-z0-9._-]{1,128}"},
      {"pin dot dot", R"({"id":1,"op":"prefill","prompt":"x","pin":".."})", kBad, one,
       "field 'pin' must be a pin name"},
      {"pin empty", R"({"id":1,"op":"prefill","prompt":"x","pin":""})", kBad, one,
       "field 'pin' must be a pin name"},
      {"pin 129 bytes",
       R"({"id":1,"op":"prefill","prompt":"x","pin":")" + std::string(129, 'p') + "\"}", kBad, one,
       "field 'pin' must be a pin name"},
      {"pin non-ASCII", R"({"id":1,"op":"prefill","prompt":"x","pin":"caf\u00e9"})", kBad, one,
       "field 'pin' must be a pin name"},
      {"unpin missing name", R"({"id":1,"op":"unpin"})", kBad, one,
       "missing required field 'name'"},
      {"unpin name space", R"({"id":1,"op":"unpin","name":"my pin"})", kBad, one,
       "field 'name' must be a pin name"},
      {"cancel missing target", R"({"id":1,"op":"cancel"})", kBad, one,
       "missing required field 'target'"},
      {"cancel target float", R"({"id":1,"op":"cancel","target":2.5})", kBad, one,
       "field 'target' must be a string of at most 256 bytes or an integer"},
      {"evict bad tier", R"({"id":1,"op":"evict","tier":"remote"})", kBad, one,
       "field 'tier' must be one of device, host, disk, all"},
      {"evict tier array", R"({"id":1,"op":"evict","tier":["disk"]})", kBad, one,
       "field 'tier' must be one of"},
  };
}

TEST(MalformedRequestTest, EachGetsTheDocumentedError) {
  const std::vector<Case> cases = Cases();
  ASSERT_GE(cases.size(), 40u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    RequestError error;
    Result<Request> r = ParseRequest(c.line, &error);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(ErrorCodeName(error.code), ErrorCodeName(c.code));
    EXPECT_EQ(error.id, c.id) << error.id.ToJson();
    EXPECT_NE(error.message.find(c.message), std::string::npos) << error.message;
    EXPECT_EQ(r.status().message(), error.message);
    EXPECT_EQ(r.status().code(), c.code == ErrorCode::kUnknownOp ? StatusCode::kUnimplemented
                                                                 : StatusCode::kInvalidArgument);
    // The answer is one well-formed error line a client can parse back.
    const std::string frame = error.Encode();
    ASSERT_EQ(frame.find('\n'), frame.size() - 1);
    Result<Event> event = ParseEvent(std::string_view(frame).substr(0, frame.size() - 1));
    ASSERT_TRUE(event.ok()) << frame;
    EXPECT_EQ(event->id, c.id);
    EXPECT_EQ(std::get<ErrorEvent>(event->body), (ErrorEvent{c.code, error.message}));
    // The message does not echo client bytes it does not need to: no raw control characters.
    for (char ch : error.message) EXPECT_GE(static_cast<unsigned char>(ch), 0x20u);
  }
}

TEST(MalformedRequestTest, ErrorPrecedence) {
  RequestError error;
  // Unknown fields are reported before a missing required one, in sorted key order.
  EXPECT_FALSE(ParseRequest(R"({"id":1,"op":"tokenize","zz":1,"aa":2})", &error).ok());
  EXPECT_EQ(error.message, "unknown field 'aa' for op 'tokenize'");
  // A duplicate key beats an unknown op: the line is ambiguous.
  EXPECT_FALSE(ParseRequest(R"({"id":1,"op":"nope","x":1,"x":2})", &error).ok());
  EXPECT_EQ(error.message, "duplicate key 'x'");
  // Fields are checked in the op's order: prompt before max_tokens before temperature.
  EXPECT_FALSE(
      ParseRequest(R"({"id":1,"op":"generate","temperature":-1,"max_tokens":-1})", &error).ok());
  EXPECT_NE(error.message.find("'prompt'"), std::string::npos);
  EXPECT_FALSE(
      ParseRequest(R"({"id":1,"op":"generate","prompt":"a","temperature":-1,"max_tokens":-1})",
                   &error)
          .ok());
  EXPECT_NE(error.message.find("'max_tokens'"), std::string::npos);
  // 16 levels of nesting are valid JSON; the field is then refused as unknown.
  std::string nested_16 =
      R"({"id":1,"op":"health","x":)" + std::string(15, '[') + std::string(15, ']') + "}";
  EXPECT_FALSE(ParseRequest(nested_16, &error).ok());
  EXPECT_EQ(error.message, "unknown field 'x' for op 'health'");
}

}  // namespace
}  // namespace kvtier::protocol
