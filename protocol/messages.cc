// Names, ids, event encoders and the client-side event parser.
#include "protocol/messages.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <utility>

#include "protocol/internal/json.h"

namespace kvtier::protocol {
namespace {

using internal::FieldReader;
using internal::Json;
using internal::OutJson;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

constexpr std::array<std::string_view, kNumOps> kOpNames{
    "health", "tokenize", "detokenize", "generate", "prefill",
    "pins",   "unpin",    "cancel",     "stats",    "evict"};
constexpr std::array<std::string_view, 9> kErrorCodeNames{
    "bad_request", "unknown_op", "too_large",   "context_overflow", "busy",
    "cancelled",   "forbidden",  "unavailable", "internal"};
constexpr std::array<std::string_view, 3> kFinishReasonNames{"stop", "length", "cancelled"};

template <size_t N>
std::optional<size_t> IndexOf(const std::array<std::string_view, N>& names, std::string_view name) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == name) return i;
  }
  return std::nullopt;
}

OutJson IdToJson(const RequestId& id) {
  if (id.is_int()) return id.int_value();
  if (id.is_string()) return id.string_value();
  return nullptr;
}

// Non-finite numbers have no JSON form (nlohmann would write null, which clients refuse): an
// encoder writes 0 instead, e.g. for tokens/s over a zero duration.
double Finite(double x) { return std::isfinite(x) ? x : 0.0; }

OutJson Header(const RequestId& id, std::string_view event) {
  OutJson j = OutJson::object();
  j["id"] = IdToJson(id);
  j["event"] = event;
  return j;
}

// --- result fields, encode ---

void Put(const HealthResult& r, OutJson* j) {
  (*j)["version"] = r.version;
  (*j)["model"] = r.model;
  (*j)["backend"] = r.backend;
  (*j)["device"] = r.device;
  (*j)["uptime_s"] = Finite(r.uptime_s);
}
void Put(const TokenizeResult& r, OutJson* j) { (*j)["tokens"] = r.tokens; }
void Put(const DetokenizeResult& r, OutJson* j) { (*j)["text"] = r.text; }
void Put(const GenerateResult& r, OutJson* j) {
  (*j)["text"] = r.text;
  (*j)["finish_reason"] = FinishReasonName(r.finish_reason);
  const CachedByTier& c = r.usage.cached_by_tier;
  (*j)["usage"] = {
      {"prompt_tokens", r.usage.prompt_tokens},
      {"cached_tokens", r.usage.cached_tokens},
      {"cached_by_tier",
       {{"device", c.device}, {"host", c.host}, {"disk", c.disk}, {"remote", c.remote}}},
      {"completion_tokens", r.usage.completion_tokens}};
  (*j)["timing"] = {{"ttft_ms", Finite(r.timing.ttft_ms)},
                    {"prefill_ms", Finite(r.timing.prefill_ms)},
                    {"decode_ms", Finite(r.timing.decode_ms)},
                    {"decode_tokens_per_s", Finite(r.timing.decode_tokens_per_s)}};
  (*j)["retrieval"] = {{"pages_attended_avg", Finite(r.retrieval.pages_attended_avg)},
                       {"bytes_promoted", r.retrieval.bytes_promoted},
                       {"pages_promoted", r.retrieval.pages_promoted},
                       {"pages_promoted_by_tier",
                        {{"host", r.retrieval.pages_promoted_host},
                         {"disk", r.retrieval.pages_promoted_disk}}},
                       {"bytes_decompressed", r.retrieval.bytes_decompressed},
                       {"hot_hits", r.retrieval.hot_hits},
                       {"hot_misses", r.retrieval.hot_misses},
                       {"disk_reads", r.retrieval.disk_reads},
                       {"prefetch",
                        {{"records", r.retrieval.records_prefetched},
                         {"hits", r.retrieval.prefetch_hits},
                         {"waits", r.retrieval.prefetch_waits},
                         {"wasted", r.retrieval.prefetch_wasted}}}};
  (*j)["seed"] = r.seed;
}
void Put(const PrefillResult& r, OutJson* j) {
  (*j)["tokens"] = r.tokens;
  (*j)["cached_tokens"] = r.cached_tokens;
}
void Put(const PinsResult& r, OutJson* j) {
  OutJson pins = OutJson::array();
  for (const PinInfo& p : r.pins) pins.push_back({{"name", p.name}, {"tokens", p.tokens}});
  (*j)["pins"] = std::move(pins);
}
void Put(const UnpinResult& r, OutJson* j) { (*j)["unpinned"] = r.unpinned; }
void Put(const CancelResult& r, OutJson* j) { (*j)["cancelled"] = r.cancelled; }
void Put(const StatsResult& r, OutJson* j) {
  OutJson tiers = OutJson::object();
  for (const TierStats& t : r.tiers) {
    tiers[t.tier] = {{"capacity_bytes", t.capacity_bytes},
                     {"used_bytes", t.used_bytes},
                     {t.tier == "device" ? "pages" : "extents", t.entries},
                     {"hits", t.hits},
                     {"misses", t.misses},
                     {"bytes_in", t.bytes_in},
                     {"bytes_out", t.bytes_out}};
  }
  OutJson codecs = OutJson::object();
  for (const CodecStats& c : r.codecs) codecs[c.codec] = Finite(c.ratio);
  (*j)["tiers"] = std::move(tiers);
  (*j)["codecs"] = std::move(codecs);
  (*j)["retrieval"] = {{"steps", r.retrieval.steps},
                       {"pages_attended_avg", Finite(r.retrieval.pages_attended_avg)},
                       {"pages_promoted", r.retrieval.pages_promoted},
                       {"bytes_promoted", r.retrieval.bytes_promoted}};
  (*j)["requests"] = {{"total", r.requests.total},
                      {"active", r.requests.active},
                      {"queued", r.requests.queued},
                      {"errors", r.requests.errors}};
}
void Put(const EvictResult& r, OutJson* j) { (*j)["freed_bytes"] = r.freed_bytes; }

template <typename R>
std::string EncodeResultOf(const RequestId& id, Op op, const R& result) {
  OutJson j = Header(id, "result");
  j["op"] = OpName(op);
  Put(result, &j);
  return internal::EncodeFrame(j);
}

// --- result fields, parse ---

Result<FieldReader> Object(const FieldReader& f, std::string_view key) {
  const Json* v = f.Find(key);
  if (v == nullptr) return f.Missing(key);
  if (!v->is_object()) return f.MustBe(key, "an object");
  return FieldReader(*v, f.Name(key) + ".");
}

Status ReadCount(const FieldReader& f, std::string_view key, int64_t* out) {
  return f.ReadInt(key, /*required=*/true, 0, kInt64Max, out);
}
Status ReadDouble(const FieldReader& f, std::string_view key, double* out) {
  return f.ReadNumber(key, /*required=*/true, -std::numeric_limits<double>::max(),
                      std::numeric_limits<double>::max(), false, out);
}

Status Get(const FieldReader& f, HealthResult* r) {
  RETURN_IF_ERROR(f.ReadString("version", true, &r->version));
  RETURN_IF_ERROR(f.ReadString("model", true, &r->model));
  RETURN_IF_ERROR(f.ReadString("backend", true, &r->backend));
  RETURN_IF_ERROR(f.ReadString("device", true, &r->device));
  return ReadDouble(f, "uptime_s", &r->uptime_s);
}
Status ReadTokenArray(const FieldReader& f, std::string_view key, std::vector<int32_t>* out) {
  const Json* v = f.Find(key);
  if (v == nullptr) return f.Missing(key);
  if (!v->is_array()) return f.MustBe(key, "an array of token ids");
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
Status Get(const FieldReader& f, TokenizeResult* r) {
  return ReadTokenArray(f, "tokens", &r->tokens);
}
Status Get(const FieldReader& f, DetokenizeResult* r) {
  return f.ReadString("text", true, &r->text);
}
Status Get(const FieldReader& f, GenerateResult* r) {
  RETURN_IF_ERROR(f.ReadString("text", true, &r->text));
  std::string reason;
  RETURN_IF_ERROR(f.ReadString("finish_reason", true, &reason));
  std::optional<size_t> reason_index = IndexOf(kFinishReasonNames, reason);
  if (!reason_index) return f.MustBe("finish_reason", "one of stop, length, cancelled");
  r->finish_reason = static_cast<FinishReason>(*reason_index);
  ASSIGN_OR_RETURN(FieldReader usage, Object(f, "usage"));
  RETURN_IF_ERROR(ReadCount(usage, "prompt_tokens", &r->usage.prompt_tokens));
  RETURN_IF_ERROR(ReadCount(usage, "cached_tokens", &r->usage.cached_tokens));
  ASSIGN_OR_RETURN(FieldReader tiers, Object(usage, "cached_by_tier"));
  RETURN_IF_ERROR(ReadCount(tiers, "device", &r->usage.cached_by_tier.device));
  RETURN_IF_ERROR(ReadCount(tiers, "host", &r->usage.cached_by_tier.host));
  RETURN_IF_ERROR(ReadCount(tiers, "disk", &r->usage.cached_by_tier.disk));
  RETURN_IF_ERROR(ReadCount(tiers, "remote", &r->usage.cached_by_tier.remote));
  RETURN_IF_ERROR(ReadCount(usage, "completion_tokens", &r->usage.completion_tokens));
  ASSIGN_OR_RETURN(FieldReader timing, Object(f, "timing"));
  RETURN_IF_ERROR(ReadDouble(timing, "ttft_ms", &r->timing.ttft_ms));
  RETURN_IF_ERROR(ReadDouble(timing, "prefill_ms", &r->timing.prefill_ms));
  RETURN_IF_ERROR(ReadDouble(timing, "decode_ms", &r->timing.decode_ms));
  RETURN_IF_ERROR(ReadDouble(timing, "decode_tokens_per_s", &r->timing.decode_tokens_per_s));
  ASSIGN_OR_RETURN(FieldReader retrieval, Object(f, "retrieval"));
  RETURN_IF_ERROR(ReadDouble(retrieval, "pages_attended_avg", &r->retrieval.pages_attended_avg));
  RETURN_IF_ERROR(ReadCount(retrieval, "bytes_promoted", &r->retrieval.bytes_promoted));
  auto optional_count = [](const FieldReader& from, std::string_view key, int64_t* out) {
    return from.ReadInt(key, /*required=*/false, 0, kInt64Max, out);
  };
  RETURN_IF_ERROR(optional_count(retrieval, "pages_promoted", &r->retrieval.pages_promoted));
  if (retrieval.Find("pages_promoted_by_tier") != nullptr) {
    ASSIGN_OR_RETURN(FieldReader by_tier, Object(retrieval, "pages_promoted_by_tier"));
    RETURN_IF_ERROR(optional_count(by_tier, "host", &r->retrieval.pages_promoted_host));
    RETURN_IF_ERROR(optional_count(by_tier, "disk", &r->retrieval.pages_promoted_disk));
  }
  RETURN_IF_ERROR(
      optional_count(retrieval, "bytes_decompressed", &r->retrieval.bytes_decompressed));
  RETURN_IF_ERROR(optional_count(retrieval, "hot_hits", &r->retrieval.hot_hits));
  RETURN_IF_ERROR(optional_count(retrieval, "hot_misses", &r->retrieval.hot_misses));
  RETURN_IF_ERROR(optional_count(retrieval, "disk_reads", &r->retrieval.disk_reads));
  if (retrieval.Find("prefetch") != nullptr) {
    ASSIGN_OR_RETURN(FieldReader prefetch, Object(retrieval, "prefetch"));
    RETURN_IF_ERROR(optional_count(prefetch, "records", &r->retrieval.records_prefetched));
    RETURN_IF_ERROR(optional_count(prefetch, "hits", &r->retrieval.prefetch_hits));
    RETURN_IF_ERROR(optional_count(prefetch, "waits", &r->retrieval.prefetch_waits));
    RETURN_IF_ERROR(optional_count(prefetch, "wasted", &r->retrieval.prefetch_wasted));
  }
  return f.ReadUint64("seed", true, &r->seed);
}
Status Get(const FieldReader& f, PrefillResult* r) {
  RETURN_IF_ERROR(ReadCount(f, "tokens", &r->tokens));
  return ReadCount(f, "cached_tokens", &r->cached_tokens);
}
Status Get(const FieldReader& f, PinsResult* r) {
  const Json* v = f.Find("pins");
  if (v == nullptr) return f.Missing("pins");
  if (!v->is_array()) return f.MustBe("pins", "an array of {\"name\", \"tokens\"} objects");
  r->pins.resize(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    const std::string path = "pins[" + std::to_string(i) + "]";
    if (!(*v)[i].is_object()) return f.MustBe(path, "an object");
    FieldReader p((*v)[i], path + ".");
    RETURN_IF_ERROR(p.ReadString("name", true, &r->pins[i].name));
    RETURN_IF_ERROR(ReadCount(p, "tokens", &r->pins[i].tokens));
  }
  return Status::Ok();
}
Status Get(const FieldReader& f, UnpinResult* r) {
  return f.ReadBool("unpinned", true, &r->unpinned);
}
Status Get(const FieldReader& f, CancelResult* r) {
  return f.ReadBool("cancelled", true, &r->cancelled);
}
Status Get(const FieldReader& f, StatsResult* r) {
  ASSIGN_OR_RETURN(FieldReader tiers_reader, Object(f, "tiers"));
  const Json& tiers = *f.Find("tiers");
  for (const auto& [name, value] : tiers.items()) {
    if (!value.is_object()) return tiers_reader.MustBe(name, "an object");
    FieldReader t(value, tiers_reader.Name(name) + ".");
    TierStats s;
    s.tier = name;
    RETURN_IF_ERROR(ReadCount(t, "capacity_bytes", &s.capacity_bytes));
    RETURN_IF_ERROR(ReadCount(t, "used_bytes", &s.used_bytes));
    RETURN_IF_ERROR(ReadCount(t, name == "device" ? "pages" : "extents", &s.entries));
    RETURN_IF_ERROR(ReadCount(t, "hits", &s.hits));
    RETURN_IF_ERROR(ReadCount(t, "misses", &s.misses));
    RETURN_IF_ERROR(ReadCount(t, "bytes_in", &s.bytes_in));
    RETURN_IF_ERROR(ReadCount(t, "bytes_out", &s.bytes_out));
    r->tiers.push_back(std::move(s));
  }
  ASSIGN_OR_RETURN(FieldReader codecs_reader, Object(f, "codecs"));
  const Json& codecs = *f.Find("codecs");
  for (const auto& [name, value] : codecs.items()) {
    CodecStats c;
    c.codec = name;
    RETURN_IF_ERROR(ReadDouble(codecs_reader, name, &c.ratio));
    r->codecs.push_back(std::move(c));
  }
  // JSON objects come back sorted by key: put tiers in tier order, codecs stay by name.
  auto rank = [](const TierStats& t) {
    static constexpr std::array<std::string_view, 4> kOrder{"device", "host", "disk", "remote"};
    std::optional<size_t> i = IndexOf(kOrder, t.tier);
    return i ? *i : kOrder.size();
  };
  std::stable_sort(r->tiers.begin(), r->tiers.end(),
                   [&](const TierStats& a, const TierStats& b) { return rank(a) < rank(b); });
  ASSIGN_OR_RETURN(FieldReader retrieval, Object(f, "retrieval"));
  RETURN_IF_ERROR(ReadCount(retrieval, "steps", &r->retrieval.steps));
  RETURN_IF_ERROR(ReadDouble(retrieval, "pages_attended_avg", &r->retrieval.pages_attended_avg));
  RETURN_IF_ERROR(ReadCount(retrieval, "pages_promoted", &r->retrieval.pages_promoted));
  RETURN_IF_ERROR(ReadCount(retrieval, "bytes_promoted", &r->retrieval.bytes_promoted));
  ASSIGN_OR_RETURN(FieldReader requests, Object(f, "requests"));
  RETURN_IF_ERROR(ReadCount(requests, "total", &r->requests.total));
  RETURN_IF_ERROR(ReadCount(requests, "active", &r->requests.active));
  RETURN_IF_ERROR(ReadCount(requests, "queued", &r->requests.queued));
  return ReadCount(requests, "errors", &r->requests.errors);
}
Status Get(const FieldReader& f, EvictResult* r) {
  return ReadCount(f, "freed_bytes", &r->freed_bytes);
}

// OpResult alternative `I` parsed from `f`.
template <size_t I>
Result<OpResult> GetResultAt(const FieldReader& f) {
  std::variant_alternative_t<I, OpResult> r;
  RETURN_IF_ERROR(Get(f, &r));
  return OpResult(std::in_place_index<I>, std::move(r));
}

template <size_t... I>
Result<OpResult> GetResult(Op op, const FieldReader& f, std::index_sequence<I...>) {
  using Parser = Result<OpResult> (*)(const FieldReader&);
  static constexpr Parser kParsers[] = {&GetResultAt<I>...};
  return kParsers[static_cast<size_t>(op)](f);
}

Result<Event> ParseEventImpl(std::string_view line) {
  internal::StrictJson doc;
  RETURN_IF_ERROR(internal::ParseStrictJson(line, kMaxJsonDepth, &doc));
  if (!doc.value.is_object()) return InvalidArgumentError("an event must be a JSON object");
  if (!doc.duplicate_key.empty()) {
    return InvalidArgumentError("duplicate key '" + internal::Excerpt(doc.duplicate_key) + "'");
  }
  FieldReader f(doc.value);
  Event event;
  const Json* id = f.Find("id");
  if (id == nullptr) return f.Missing("id");
  int64_t int_id = 0;
  if (id->is_string() && id->get_ref<const std::string&>().size() <= kMaxIdBytes) {
    event.id = RequestId(id->get<std::string>());
  } else if (internal::IntegerIn(*id, std::numeric_limits<int64_t>::min(), kInt64Max, &int_id)) {
    event.id = RequestId(int_id);
  } else if (!id->is_null()) {
    return f.MustBe("id", "a string, an integer or null");
  }
  std::string kind;
  RETURN_IF_ERROR(f.ReadString("event", true, &kind));
  if (kind == "error") {
    ErrorEvent e;
    std::string code;
    RETURN_IF_ERROR(f.ReadString("code", true, &code));
    std::optional<ErrorCode> c = ErrorCodeFromName(code);
    if (!c) return f.MustBe("code", "a known error code");
    e.code = *c;
    RETURN_IF_ERROR(f.ReadString("message", true, &e.message));
    event.body = std::move(e);
    return event;
  }
  if (event.id.is_null()) return f.MustBe("id", "a string or an integer (null only on errors)");
  if (kind == "token") {
    TokenEvent t;
    RETURN_IF_ERROR(f.ReadInt("token", true, 0, kInt32Max, &t.token));
    RETURN_IF_ERROR(f.ReadString("text", true, &t.text));
    event.body = std::move(t);
  } else if (kind == "progress") {
    ProgressEvent p;
    RETURN_IF_ERROR(ReadCount(f, "done", &p.done));
    RETURN_IF_ERROR(ReadCount(f, "total", &p.total));
    event.body = p;
  } else if (kind == "result") {
    std::string op_name;
    RETURN_IF_ERROR(f.ReadString("op", true, &op_name));
    std::optional<Op> op = OpFromName(op_name);
    if (!op) return f.MustBe("op", "a known op");
    ASSIGN_OR_RETURN(OpResult r, GetResult(*op, f, std::make_index_sequence<kNumOps>()));
    event.body = std::move(r);
  } else {
    return f.MustBe("event", "one of token, progress, result, error");
  }
  return event;
}

}  // namespace

std::string_view OpName(Op op) { return kOpNames[static_cast<size_t>(op)]; }

std::optional<Op> OpFromName(std::string_view name) {
  std::optional<size_t> i = IndexOf(kOpNames, name);
  if (!i) return std::nullopt;
  return static_cast<Op>(*i);
}

std::string_view ErrorCodeName(ErrorCode code) {
  return kErrorCodeNames[static_cast<size_t>(code)];
}

std::optional<ErrorCode> ErrorCodeFromName(std::string_view name) {
  std::optional<size_t> i = IndexOf(kErrorCodeNames, name);
  if (!i) return std::nullopt;
  return static_cast<ErrorCode>(*i);
}

std::string_view RoleName(Role role) {
  static constexpr std::array<std::string_view, 3> kNames{"system", "user", "assistant"};
  return kNames[static_cast<size_t>(role)];
}

std::string_view AttentionName(Attention attention) {
  static constexpr std::array<std::string_view, 3> kNames{"auto", "dense", "sparse"};
  return kNames[static_cast<size_t>(attention)];
}

std::string_view EvictTierName(EvictTier tier) {
  static constexpr std::array<std::string_view, 4> kNames{"device", "host", "disk", "all"};
  return kNames[static_cast<size_t>(tier)];
}

std::string_view FinishReasonName(FinishReason reason) {
  return kFinishReasonNames[static_cast<size_t>(reason)];
}

std::string RequestId::ToJson() const {
  if (is_int()) return std::to_string(int_value());
  if (is_null()) return "null";
  std::string line = internal::EncodeFrame(OutJson(string_value()));
  line.pop_back();  // the frame's '\n'
  return line;
}

size_t RequestId::Hash() const {
  if (is_int()) return std::hash<int64_t>()(int_value()) * 3 + 1;
  if (is_string()) return std::hash<std::string>()(string_value()) * 3 + 2;
  return 0;
}

std::string EncodeResult(const RequestId& id, const HealthResult& r) {
  return EncodeResultOf(id, Op::kHealth, r);
}
std::string EncodeResult(const RequestId& id, const TokenizeResult& r) {
  return EncodeResultOf(id, Op::kTokenize, r);
}
std::string EncodeResult(const RequestId& id, const DetokenizeResult& r) {
  return EncodeResultOf(id, Op::kDetokenize, r);
}
std::string EncodeResult(const RequestId& id, const GenerateResult& r) {
  return EncodeResultOf(id, Op::kGenerate, r);
}
std::string EncodeResult(const RequestId& id, const PrefillResult& r) {
  return EncodeResultOf(id, Op::kPrefill, r);
}
std::string EncodeResult(const RequestId& id, const PinsResult& r) {
  return EncodeResultOf(id, Op::kPins, r);
}
std::string EncodeResult(const RequestId& id, const UnpinResult& r) {
  return EncodeResultOf(id, Op::kUnpin, r);
}
std::string EncodeResult(const RequestId& id, const CancelResult& r) {
  return EncodeResultOf(id, Op::kCancel, r);
}
std::string EncodeResult(const RequestId& id, const StatsResult& r) {
  return EncodeResultOf(id, Op::kStats, r);
}
std::string EncodeResult(const RequestId& id, const EvictResult& r) {
  return EncodeResultOf(id, Op::kEvict, r);
}
std::string EncodeResult(const RequestId& id, const OpResult& r) {
  return std::visit([&id](const auto& result) { return EncodeResult(id, result); }, r);
}

std::string EncodeToken(const RequestId& id, int32_t token, std::string_view text) {
  OutJson j = Header(id, "token");
  j["token"] = token;
  j["text"] = text;
  return internal::EncodeFrame(j);
}

std::string EncodeProgress(const RequestId& id, int64_t done, int64_t total) {
  OutJson j = Header(id, "progress");
  j["done"] = done;
  j["total"] = total;
  return internal::EncodeFrame(j);
}

std::string EncodeError(const RequestId& id, ErrorCode code, std::string_view message) {
  OutJson j = Header(id, "error");
  j["code"] = ErrorCodeName(code);
  j["message"] = message;
  return internal::EncodeFrame(j);
}

std::string EncodeLineTooLarge(size_t max_line_bytes) {
  return EncodeError(RequestId(), ErrorCode::kTooLarge,
                     "line exceeds max_line_bytes (" + std::to_string(max_line_bytes) +
                         "); closing the connection");
}

std::string EncodeEvent(const Event& event) {
  struct Visitor {
    const RequestId& id;
    std::string operator()(const TokenEvent& e) const { return EncodeToken(id, e.token, e.text); }
    std::string operator()(const ProgressEvent& e) const {
      return EncodeProgress(id, e.done, e.total);
    }
    std::string operator()(const ErrorEvent& e) const { return EncodeError(id, e.code, e.message); }
    std::string operator()(const OpResult& r) const { return EncodeResult(id, r); }
  };
  return std::visit(Visitor{event.id}, event.body);
}

Result<Event> ParseEvent(std::string_view line) {
  try {
    return ParseEventImpl(line);
  } catch (const std::exception&) {
    return InternalError("internal error while parsing an event");
  }
}

}  // namespace kvtier::protocol
