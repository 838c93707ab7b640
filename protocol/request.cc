// Request parsing (strict validation) and encoding. The rules are catalogued in
// protocol/README.md; a change here is a change of the wire contract.
#include <array>
#include <cstdint>
#include <exception>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "protocol/internal/json.h"
#include "protocol/messages.h"

namespace kvtier::protocol {
namespace {

using internal::FieldReader;
using internal::Json;
using internal::OutJson;

constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

Status Bad(std::string message) { return InvalidArgumentError(std::move(message)); }

// The fields each op accepts besides "id" and "op"; anything else is an unknown field.
constexpr std::array<std::string_view, 0> kNoFields{};
constexpr std::array<std::string_view, 2> kTokenizeFields{"special", "text"};
constexpr std::array<std::string_view, 1> kDetokenizeFields{"tokens"};
constexpr std::array<std::string_view, 12> kGenerateFields{
    "attention", "budget_tokens", "cache_salt", "max_tokens",  "messages", "prompt",
    "seed",      "stop",          "stream",     "temperature", "top_k",    "top_p"};
constexpr std::array<std::string_view, 4> kPrefillFields{"cache_salt", "messages", "pin", "prompt"};
constexpr std::array<std::string_view, 1> kUnpinFields{"name"};
constexpr std::array<std::string_view, 1> kCancelFields{"target"};
constexpr std::array<std::string_view, 1> kEvictFields{"tier"};

template <size_t N>
Status CheckKnownFields(const Json& object, Op op, const std::array<std::string_view, N>& known) {
  // Keys iterate sorted, so the field named is the same whatever order the client used.
  for (const auto& [key, value] : object.items()) {
    if (key == "id" || key == "op") continue;
    bool found = false;
    for (std::string_view k : known) found = found || k == key;
    if (!found) {
      return Bad("unknown field '" + internal::Excerpt(key) + "' for op '" +
                 std::string(OpName(op)) + "'");
    }
  }
  return Status::Ok();
}

// An id value: a string of at most kMaxIdBytes bytes or an integer in int64 range.
bool ReadIdValue(const Json& v, RequestId* out) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > kMaxIdBytes) return false;
    *out = RequestId(s);
    return true;
  }
  int64_t i = 0;
  if (!internal::IntegerIn(v, kInt64Min, kInt64Max, &i)) return false;
  *out = RequestId(i);
  return true;
}

std::string IdRule() {
  return "a string of at most " + std::to_string(kMaxIdBytes) + " bytes or " +
         internal::IntegerRange(kInt64Min, kInt64Max);
}

// A pin name: [A-Za-z0-9._-]{1,128}, and not "." or "..", so it is safe as a file name.
bool ValidPinName(std::string_view name) {
  if (name.empty() || name.size() > kMaxPinNameBytes || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status ReadPinName(const FieldReader& f, std::string_view key, bool required, std::string* out) {
  const Json* v = f.Find(key);
  if (v == nullptr) return required ? f.Missing(key) : Status::Ok();
  if (!v->is_string() || !ValidPinName(v->get_ref<const std::string&>())) {
    return f.MustBe(key, "a pin name matching [A-Za-z0-9._-]{1,128} (not '.' or '..')");
  }
  *out = v->get_ref<const std::string&>();
  return Status::Ok();
}

// Reads a string field whose value is one of `names` (indexed like the enum E).
template <typename E, size_t N>
Status ReadEnum(const FieldReader& f, std::string_view key,
                const std::array<std::string_view, N>& names, E* out) {
  const Json* v = f.Find(key);
  if (v == nullptr) return Status::Ok();
  if (v->is_string()) {
    const auto& s = v->get_ref<const std::string&>();
    for (size_t i = 0; i < N; ++i) {
      if (s == names[i]) {
        *out = static_cast<E>(i);
        return Status::Ok();
      }
    }
  }
  std::string what = "one of ";
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) what += ", ";
    what += names[i];
  }
  return f.MustBe(key, what);
}

constexpr std::array<std::string_view, 3> kRoleNames{"system", "user", "assistant"};
constexpr std::array<std::string_view, 3> kAttentionNames{"auto", "dense", "sparse"};
constexpr std::array<std::string_view, 4> kTierNames{"device", "host", "disk", "all"};

Status ReadMessage(const Json& v, size_t index, ChatMessage* out) {
  const std::string path = "messages[" + std::to_string(index) + "]";
  if (!v.is_object()) {
    return Bad("field '" + path + "' must be an object {\"role\", \"content\"}");
  }
  for (const auto& [key, value] : v.items()) {
    if (key != "role" && key != "content") {
      return Bad("unknown field '" + path + "." + internal::Excerpt(key) + "'");
    }
  }
  FieldReader f(v, path + ".");
  if (f.Find("role") == nullptr) return f.Missing("role");
  RETURN_IF_ERROR(ReadEnum(f, "role", kRoleNames, &out->role));
  return f.ReadString("content", /*required=*/true, &out->content);
}

// prompt XOR messages.
Status ReadPromptInput(const FieldReader& f, PromptInput* out) {
  const Json* prompt = f.Find("prompt");
  const Json* messages = f.Find("messages");
  if (prompt != nullptr && messages != nullptr) {
    return Bad("fields 'prompt' and 'messages' are mutually exclusive: give exactly one");
  }
  if (prompt == nullptr && messages == nullptr) {
    return Bad("missing required field 'prompt' or 'messages' (exactly one)");
  }
  if (prompt != nullptr) {
    return f.ReadString("prompt", /*required=*/true, &out->prompt, /*max_bytes=*/SIZE_MAX,
                        /*non_empty=*/true);
  }
  if (!messages->is_array() || messages->empty()) {
    return f.MustBe("messages", "a non-empty array of {\"role\", \"content\"} objects");
  }
  out->messages.resize(messages->size());
  for (size_t i = 0; i < messages->size(); ++i) {
    RETURN_IF_ERROR(ReadMessage((*messages)[i], i, &out->messages[i]));
  }
  return Status::Ok();
}

Status ReadTokens(const FieldReader& f, std::string_view key, std::vector<int32_t>* out) {
  const Json* v = f.Find(key);
  if (v == nullptr) return f.Missing(key);
  if (!v->is_array())
    return f.MustBe(key, "an array of token ids (" + internal::IntegerRange(0, kInt32Max) + ")");
  out->resize(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    int64_t t = 0;
    if (!internal::IntegerIn((*v)[i], 0, kInt32Max, &t)) {
      return f.MustBe(std::string(key) + "[" + std::to_string(i) + "]",
                      internal::IntegerRange(0, kInt32Max));
    }
    (*out)[i] = static_cast<int32_t>(t);
  }
  return Status::Ok();
}

Status ReadStop(const FieldReader& f, std::vector<std::string>* out) {
  const Json* v = f.Find("stop");
  if (v == nullptr) return Status::Ok();
  const std::string rule =
      "a non-empty string of at most " + std::to_string(kMaxStopStringBytes) + " bytes";
  auto valid = [](const Json& s) {
    return s.is_string() && !s.get_ref<const std::string&>().empty() &&
           s.get_ref<const std::string&>().size() <= kMaxStopStringBytes;
  };
  if (v->is_string()) {
    if (!valid(*v)) return f.MustBe("stop", rule);
    out->assign(1, v->get<std::string>());
    return Status::Ok();
  }
  if (!v->is_array() || v->size() > kMaxStopStrings) {
    return f.MustBe(
        "stop", "a string or an array of at most " + std::to_string(kMaxStopStrings) + " strings");
  }
  out->clear();
  for (size_t i = 0; i < v->size(); ++i) {
    if (!valid((*v)[i])) return f.MustBe("stop[" + std::to_string(i) + "]", rule);
    out->push_back((*v)[i].get<std::string>());
  }
  return Status::Ok();
}

Status ReadCacheSalt(const FieldReader& f, std::string* out) {
  return f.ReadString("cache_salt", /*required=*/false, out, kMaxCacheSaltBytes);
}

Result<Request::Body> ReadBody(Op op, const Json& object) {
  FieldReader f(object);
  switch (op) {
    case Op::kHealth:
      RETURN_IF_ERROR(CheckKnownFields(object, op, kNoFields));
      return Request::Body(HealthRequest{});
    case Op::kTokenize: {
      RETURN_IF_ERROR(CheckKnownFields(object, op, kTokenizeFields));
      TokenizeRequest r;
      RETURN_IF_ERROR(f.ReadString("text", /*required=*/true, &r.text));
      RETURN_IF_ERROR(f.ReadBool("special", /*required=*/false, &r.special));
      return Request::Body(std::move(r));
    }
    case Op::kDetokenize: {
      RETURN_IF_ERROR(CheckKnownFields(object, op, kDetokenizeFields));
      DetokenizeRequest r;
      RETURN_IF_ERROR(ReadTokens(f, "tokens", &r.tokens));
      return Request::Body(std::move(r));
    }
    case Op::kGenerate: {
      RETURN_IF_ERROR(CheckKnownFields(object, op, kGenerateFields));
      GenerateRequest r;
      RETURN_IF_ERROR(ReadPromptInput(f, &r.input));
      RETURN_IF_ERROR(f.ReadInt("max_tokens", false, 0, kMaxMaxTokens, &r.max_tokens));
      RETURN_IF_ERROR(
          f.ReadNumber("temperature", false, 0, kMaxTemperature, false, &r.temperature));
      RETURN_IF_ERROR(f.ReadNumber("top_p", false, 0, 1, /*lo_open=*/true, &r.top_p));
      RETURN_IF_ERROR(f.ReadInt("top_k", false, 0, kInt32Max, &r.top_k));
      if (f.Find("seed") != nullptr) {
        int64_t seed = 0;
        RETURN_IF_ERROR(f.ReadInt("seed", false, 0, kInt64Max, &seed));
        r.seed = seed;
      }
      RETURN_IF_ERROR(ReadStop(f, &r.stop));
      RETURN_IF_ERROR(f.ReadBool("stream", false, &r.stream));
      RETURN_IF_ERROR(ReadEnum(f, "attention", kAttentionNames, &r.attention));
      if (f.Find("budget_tokens") != nullptr) {
        int32_t budget = 0;
        RETURN_IF_ERROR(
            f.ReadInt("budget_tokens", false, kMinBudgetTokens, kMaxBudgetTokens, &budget));
        r.budget_tokens = budget;
      }
      RETURN_IF_ERROR(ReadCacheSalt(f, &r.cache_salt));
      return Request::Body(std::move(r));
    }
    case Op::kPrefill: {
      RETURN_IF_ERROR(CheckKnownFields(object, op, kPrefillFields));
      PrefillRequest r;
      RETURN_IF_ERROR(ReadPromptInput(f, &r.input));
      RETURN_IF_ERROR(ReadPinName(f, "pin", /*required=*/false, &r.pin));
      RETURN_IF_ERROR(ReadCacheSalt(f, &r.cache_salt));
      return Request::Body(std::move(r));
    }
    case Op::kPins:
      RETURN_IF_ERROR(CheckKnownFields(object, op, kNoFields));
      return Request::Body(PinsRequest{});
    case Op::kUnpin: {
      RETURN_IF_ERROR(CheckKnownFields(object, op, kUnpinFields));
      UnpinRequest r;
      RETURN_IF_ERROR(ReadPinName(f, "name", /*required=*/true, &r.name));
      return Request::Body(std::move(r));
    }
    case Op::kCancel: {
      RETURN_IF_ERROR(CheckKnownFields(object, op, kCancelFields));
      CancelRequest r;
      const Json* target = f.Find("target");
      if (target == nullptr) return f.Missing("target");
      if (!ReadIdValue(*target, &r.target)) return f.MustBe("target", IdRule());
      return Request::Body(std::move(r));
    }
    case Op::kStats:
      RETURN_IF_ERROR(CheckKnownFields(object, op, kNoFields));
      return Request::Body(StatsRequest{});
    case Op::kEvict: {
      RETURN_IF_ERROR(CheckKnownFields(object, op, kEvictFields));
      EvictRequest r;
      RETURN_IF_ERROR(ReadEnum(f, "tier", kTierNames, &r.tier));
      return Request::Body(std::move(r));
    }
  }
  return InternalError("unhandled op");
}

// Validation order (protocol/README.md): JSON syntax and UTF-8, nesting, object, id, duplicate
// keys, op, unknown fields, then the op's fields in a fixed order. *id is set as soon as read.
Result<Request> ParseImpl(std::string_view line, RequestId* id) {
  internal::StrictJson doc;
  RETURN_IF_ERROR(internal::ParseStrictJson(line, kMaxJsonDepth, &doc));
  const Json& object = doc.value;
  if (!object.is_object()) return Bad("a request must be a JSON object");
  if (doc.duplicate_id) return Bad("duplicate key 'id'");
  FieldReader f(object);
  const Json* id_value = f.Find("id");
  if (id_value == nullptr) return f.Missing("id");
  RequestId request_id;
  if (!ReadIdValue(*id_value, &request_id)) return f.MustBe("id", IdRule());
  *id = request_id;
  if (!doc.duplicate_key.empty()) {
    return Bad("duplicate key '" + internal::Excerpt(doc.duplicate_key) + "'");
  }
  const Json* op_value = f.Find("op");
  if (op_value == nullptr) return f.Missing("op");
  if (!op_value->is_string()) return f.MustBe("op", "a string");
  const auto& op_name = op_value->get_ref<const std::string&>();
  std::optional<Op> op = OpFromName(op_name);
  if (!op) return UnimplementedError("unknown op '" + internal::Excerpt(op_name) + "'");
  ASSIGN_OR_RETURN(Request::Body body, ReadBody(*op, object));
  return Request{std::move(request_id), std::move(body)};
}

OutJson IdToJson(const RequestId& id) {
  if (id.is_int()) return id.int_value();
  if (id.is_string()) return id.string_value();
  return nullptr;
}

void PutPromptInput(const PromptInput& in, OutJson* j) {
  if (!in.is_chat()) {
    (*j)["prompt"] = in.prompt;
    return;
  }
  OutJson messages = OutJson::array();
  for (const ChatMessage& m : in.messages) {
    messages.push_back({{"role", RoleName(m.role)}, {"content", m.content}});
  }
  (*j)["messages"] = std::move(messages);
}

void PutFields(const HealthRequest&, OutJson*) {}
void PutFields(const PinsRequest&, OutJson*) {}
void PutFields(const StatsRequest&, OutJson*) {}
void PutFields(const TokenizeRequest& r, OutJson* j) {
  (*j)["text"] = r.text;
  (*j)["special"] = r.special;
}
void PutFields(const DetokenizeRequest& r, OutJson* j) { (*j)["tokens"] = r.tokens; }
void PutFields(const GenerateRequest& r, OutJson* j) {
  PutPromptInput(r.input, j);
  (*j)["max_tokens"] = r.max_tokens;
  (*j)["temperature"] = r.temperature;
  (*j)["top_p"] = r.top_p;
  (*j)["top_k"] = r.top_k;
  if (r.seed) (*j)["seed"] = *r.seed;
  if (!r.stop.empty()) (*j)["stop"] = r.stop;
  (*j)["stream"] = r.stream;
  (*j)["attention"] = AttentionName(r.attention);
  if (r.budget_tokens) (*j)["budget_tokens"] = *r.budget_tokens;
  if (!r.cache_salt.empty()) (*j)["cache_salt"] = r.cache_salt;
}
void PutFields(const PrefillRequest& r, OutJson* j) {
  PutPromptInput(r.input, j);
  if (!r.pin.empty()) (*j)["pin"] = r.pin;
  if (!r.cache_salt.empty()) (*j)["cache_salt"] = r.cache_salt;
}
void PutFields(const UnpinRequest& r, OutJson* j) { (*j)["name"] = r.name; }
void PutFields(const CancelRequest& r, OutJson* j) { (*j)["target"] = IdToJson(r.target); }
void PutFields(const EvictRequest& r, OutJson* j) { (*j)["tier"] = EvictTierName(r.tier); }

}  // namespace

std::string RequestError::Encode() const { return EncodeError(id, code, message); }

Result<Request> ParseRequest(std::string_view line, RequestError* error) {
  RequestId id;
  Status status;
  try {
    Result<Request> r = ParseImpl(line, &id);
    if (r.ok()) return r;
    status = r.status();
  } catch (const std::exception&) {
    // Unreachable by design (every access is type-checked first); kept so that no exception
    // can leave the module even if a check is missed.
    status = InternalError("internal error while parsing the request");
  }
  if (error != nullptr) {
    error->id = std::move(id);
    error->code = status.code() == StatusCode::kUnimplemented     ? ErrorCode::kUnknownOp
                  : status.code() == StatusCode::kInvalidArgument ? ErrorCode::kBadRequest
                                                                  : ErrorCode::kInternal;
    error->message = status.message();
  }
  return status;
}

std::string EncodeRequest(const Request& request) {
  OutJson j = OutJson::object();
  j["id"] = IdToJson(request.id);
  j["op"] = OpName(request.op());
  std::visit([&j](const auto& body) { PutFields(body, &j); }, request.body);
  return internal::EncodeFrame(j);
}

}  // namespace kvtier::protocol
