// protocol/messages.h — the wire messages of DESIGN §6: typed requests and events, strict
// request validation, and the encoders and parsers both sides use.
//
// Thread safety: every function here is pure (no shared state); the types are plain values.
//
// Contract (protocol/README.md is the full catalogue):
//   - ParseRequest is strict: valid UTF-8 JSON object, no duplicate keys (at any depth), nesting
//     ≤ kMaxJsonDepth, `id` and `op` required, every field of the op type- and range-checked,
//     and an unknown field is a bad_request naming it, for every op alike. A failure says which
//     field is wrong and carries the request's id when the id itself was readable.
//   - ParseEvent (client side) is strict on the fields it knows and ignores fields it does not,
//     so the daemon may add result fields without breaking older clients.
//   - Every Encode* function returns one complete frame: a JSON object and its '\n'. Text that
//     is not valid UTF-8 is encoded with U+FFFD replacements; encoders never fail.
//   - No exception leaves this module.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/status.h"

namespace kvtier::protocol {

// ---------------------------------------------------------------------------------------------
// Limits (protocol/README.md explains each).

inline constexpr size_t kMaxIdBytes = 256;
inline constexpr size_t kMaxCacheSaltBytes = 256;
inline constexpr size_t kMaxPinNameBytes = 128;
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 1024;
inline constexpr int64_t kMaxMaxTokens = int64_t{1} << 24;
inline constexpr int64_t kMaxBudgetTokens = int64_t{1} << 24;
inline constexpr int64_t kMinBudgetTokens = 16;
inline constexpr double kMaxTemperature = 100.0;
inline constexpr int kMaxJsonDepth = 16;

// Defaults of optional request fields.
inline constexpr int32_t kDefaultMaxTokens = 256;
inline constexpr double kDefaultTemperature = 0.8;
inline constexpr double kDefaultTopP = 0.95;
inline constexpr int32_t kDefaultTopK = 40;

// ---------------------------------------------------------------------------------------------
// Ids, ops, codes.

// A client-chosen request id: a string of at most 256 bytes or a signed 64-bit integer, echoed
// on every line answering the request. The string "1" and the integer 1 are different ids.
// The null id appears only on errors for lines whose id could not be read.
class RequestId {
 public:
  RequestId() = default;                   // null
  RequestId(int64_t value) : v_(value) {}  // NOLINT(google-explicit-constructor)
  explicit RequestId(std::string value) : v_(std::move(value)) {}

  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  int64_t int_value() const { return std::get<int64_t>(v_); }
  const std::string& string_value() const { return std::get<std::string>(v_); }

  // The id as JSON text (42, "abc", null), for logs.
  std::string ToJson() const;
  size_t Hash() const;

  bool operator==(const RequestId&) const = default;

 private:
  std::variant<std::monostate, int64_t, std::string> v_;
};

struct RequestIdHash {
  size_t operator()(const RequestId& id) const { return id.Hash(); }
};

// The ops of DESIGN §6. The order is the order of the Request::Body and OpResult alternatives.
enum class Op {
  kHealth,
  kTokenize,
  kDetokenize,
  kGenerate,
  kPrefill,
  kPins,
  kUnpin,
  kCancel,
  kStats,
  kEvict,
};
inline constexpr int kNumOps = 10;
std::string_view OpName(Op op);
std::optional<Op> OpFromName(std::string_view name);

// Error codes of DESIGN §6 (protocol/README.md says when each is used).
enum class ErrorCode {
  kBadRequest,
  kUnknownOp,
  kTooLarge,
  kContextOverflow,
  kBusy,
  kCancelled,
  kForbidden,
  kUnavailable,
  kInternal,
};
std::string_view ErrorCodeName(ErrorCode code);
std::optional<ErrorCode> ErrorCodeFromName(std::string_view name);

enum class Role { kSystem, kUser, kAssistant };
std::string_view RoleName(Role role);

enum class Attention { kAuto, kDense, kSparse };
std::string_view AttentionName(Attention attention);

enum class EvictTier { kDevice, kHost, kDisk, kAll };
std::string_view EvictTierName(EvictTier tier);

enum class FinishReason { kStop, kLength, kCancelled };
std::string_view FinishReasonName(FinishReason reason);

// ---------------------------------------------------------------------------------------------
// Requests.

struct ChatMessage {
  Role role = Role::kUser;
  std::string content;
  bool operator==(const ChatMessage&) const = default;
};

// The input of generate and prefill: exactly one of `prompt` (raw text, fed as is) and
// `messages` (formatted with the model's chat template) is given on the wire. `messages` is
// never empty when given, so `messages.empty()` means the prompt form (whose text is non-empty).
struct PromptInput {
  std::string prompt;
  std::vector<ChatMessage> messages;
  bool is_chat() const { return !messages.empty(); }
  bool operator==(const PromptInput&) const = default;
};

struct HealthRequest {
  bool operator==(const HealthRequest&) const = default;
};

struct TokenizeRequest {
  std::string text;
  bool special = false;  // parse special-token text (e.g. "<|im_start|>") as those tokens
  bool operator==(const TokenizeRequest&) const = default;
};

struct DetokenizeRequest {
  std::vector<int32_t> tokens;  // each ≥ 0; the daemon checks them against the vocabulary
  bool operator==(const DetokenizeRequest&) const = default;
};

struct GenerateRequest {
  PromptInput input;
  int32_t max_tokens = kDefaultMaxTokens;    // [0, 2^24]
  double temperature = kDefaultTemperature;  // [0, 100], 0 = greedy
  double top_p = kDefaultTopP;               // (0, 1]
  int32_t top_k = kDefaultTopK;              // ≥ 0, 0 = all tokens
  std::optional<int64_t> seed;               // [0, 2^63-1]; absent: the daemon draws one
  std::vector<std::string> stop;             // ≤ 16 non-empty strings of ≤ 1024 bytes
  bool stream = false;                       // send a token event per token
  Attention attention = Attention::kAuto;
  std::optional<int32_t> budget_tokens;  // [16, 2^24]; absent: the daemon's configuration
  std::string cache_salt;                // ≤ 256 bytes; empty = no salt
  bool operator==(const GenerateRequest&) const = default;
};

struct PrefillRequest {
  PromptInput input;
  std::string pin;         // empty: not pinned; else [A-Za-z0-9._-]{1,128}
  std::string cache_salt;  // ≤ 256 bytes; empty = no salt
  bool operator==(const PrefillRequest&) const = default;
};

struct PinsRequest {
  bool operator==(const PinsRequest&) const = default;
};

struct UnpinRequest {
  std::string name;  // [A-Za-z0-9._-]{1,128}
  bool operator==(const UnpinRequest&) const = default;
};

struct CancelRequest {
  RequestId target;  // never null
  bool operator==(const CancelRequest&) const = default;
};

struct StatsRequest {
  bool operator==(const StatsRequest&) const = default;
};

struct EvictRequest {
  EvictTier tier = EvictTier::kAll;
  bool operator==(const EvictRequest&) const = default;
};

struct Request {
  // Alternative i is the body of Op(i).
  using Body = std::variant<HealthRequest, TokenizeRequest, DetokenizeRequest, GenerateRequest,
                            PrefillRequest, PinsRequest, UnpinRequest, CancelRequest, StatsRequest,
                            EvictRequest>;
  RequestId id;  // never null
  Body body;

  Op op() const { return static_cast<Op>(body.index()); }
  bool operator==(const Request&) const = default;
};

// Why a request line was refused: what the daemon answers with (Encode()).
struct RequestError {
  RequestId id;                             // null when the line's id could not be read
  ErrorCode code = ErrorCode::kBadRequest;  // kBadRequest or kUnknownOp
  std::string message;                      // valid UTF-8, one line, names the offending field
  std::string Encode() const;
};

// Parses and validates one request line (without its '\n'). On failure the Status is
// InvalidArgument (bad_request) or Unimplemented (unknown_op) with the same message, and
// *error, when given, receives the id (if readable), the code and the message.
Result<Request> ParseRequest(std::string_view line, RequestError* error = nullptr);

// The client side: one request frame. ParseRequest(EncodeRequest(r)) == r for every valid r.
std::string EncodeRequest(const Request& request);

// ---------------------------------------------------------------------------------------------
// Results (the final line of a successful request), one struct per op.

struct HealthResult {
  std::string version;  // kvtier version
  std::string model;    // model name (or file name)
  std::string backend;  // "cpu", "cuda"
  std::string device;   // e.g. "NVIDIA H100 80GB HBM3" or the CPU model
  double uptime_s = 0;
  bool operator==(const HealthResult&) const = default;
};

struct TokenizeResult {
  std::vector<int32_t> tokens;
  bool operator==(const TokenizeResult&) const = default;
};

struct DetokenizeResult {
  std::string text;
  bool operator==(const DetokenizeResult&) const = default;
};

struct CachedByTier {
  int64_t device = 0, host = 0, disk = 0, remote = 0;  // tokens
  bool operator==(const CachedByTier&) const = default;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  CachedByTier cached_by_tier;
  int64_t completion_tokens = 0;
  bool operator==(const Usage&) const = default;
};

struct Timing {
  double ttft_ms = 0, prefill_ms = 0, decode_ms = 0, decode_tokens_per_s = 0;
  bool operator==(const Timing&) const = default;
};

struct Retrieval {
  double pages_attended_avg = 0;
  int64_t bytes_promoted = 0;
  // Selected-page promotion (optional on read: older daemons do not send them).
  int64_t pages_promoted = 0;       // pages decoded from host/disk onto the device
  int64_t pages_promoted_host = 0;  // of those promoted one by one: from a record in RAM
  int64_t pages_promoted_disk = 0;  //   ... whose record had to be read from disk
  int64_t bytes_decompressed = 0;   // f16 KV bytes written by single-page decodes
  int64_t hot_hits = 0, hot_misses = 0;
  // Prefetch of the previous step's selection: page misses served from a record read ahead,
  // misses that waited for such a read, records read ahead, and those dropped unused; disk
  // records read on the critical path.
  int64_t prefetch_hits = 0, prefetch_waits = 0, records_prefetched = 0, prefetch_wasted = 0;
  int64_t disk_reads = 0;
  bool operator==(const Retrieval&) const = default;
};

struct GenerateResult {
  std::string text;
  FinishReason finish_reason = FinishReason::kStop;
  Usage usage;
  Timing timing;
  Retrieval retrieval;
  uint64_t seed = 0;  // the sampler's seed (given or drawn), so a run can be repeated
  bool operator==(const GenerateResult&) const = default;
};

struct PrefillResult {
  int64_t tokens = 0;         // prompt length in tokens
  int64_t cached_tokens = 0;  // of which were already cached
  bool operator==(const PrefillResult&) const = default;
};

struct PinInfo {
  std::string name;
  int64_t tokens = 0;
  bool operator==(const PinInfo&) const = default;
};

struct PinsResult {
  std::vector<PinInfo> pins;
  bool operator==(const PinsResult&) const = default;
};

struct UnpinResult {
  bool unpinned = false;  // false: no pin of that name in the caller's namespace
  bool operator==(const UnpinResult&) const = default;
};

struct CancelResult {
  bool cancelled = false;  // false: the target was not in flight
  bool operator==(const CancelResult&) const = default;
};

struct TierStats {
  std::string tier;  // "device", "host", "disk", "remote"
  int64_t capacity_bytes = 0, used_bytes = 0;
  int64_t entries = 0;  // pages on "device", extents on the other tiers (the JSON key says which)
  int64_t hits = 0, misses = 0;
  int64_t bytes_in = 0, bytes_out = 0;
  bool operator==(const TierStats&) const = default;
};

struct CodecStats {
  std::string codec;  // "f16", "q8", "q4", optionally "+zstd"
  double ratio = 0;   // uncompressed bytes / stored bytes
  bool operator==(const CodecStats&) const = default;
};

struct RetrievalStats {
  int64_t steps = 0;  // decode steps that used sparse attention
  double pages_attended_avg = 0;
  int64_t pages_promoted = 0, bytes_promoted = 0;
  bool operator==(const RetrievalStats&) const = default;
};

struct RequestStats {
  int64_t total = 0, active = 0, queued = 0, errors = 0;
  bool operator==(const RequestStats&) const = default;
};

struct StatsResult {
  std::vector<TierStats> tiers;    // JSON: object keyed by tier name, tiers present only
  std::vector<CodecStats> codecs;  // JSON: object codec -> ratio
  RetrievalStats retrieval;
  RequestStats requests;
  bool operator==(const StatsResult&) const = default;
};

struct EvictResult {
  int64_t freed_bytes = 0;
  bool operator==(const EvictResult&) const = default;
};

// Alternative i is the result of Op(i).
using OpResult =
    std::variant<HealthResult, TokenizeResult, DetokenizeResult, GenerateResult, PrefillResult,
                 PinsResult, UnpinResult, CancelResult, StatsResult, EvictResult>;

// ---------------------------------------------------------------------------------------------
// Events: every line the daemon sends.

struct TokenEvent {
  int32_t token = 0;
  std::string text;  // whole UTF-8 characters completed by this token (may be empty)
  bool operator==(const TokenEvent&) const = default;
};

struct ProgressEvent {
  int64_t done = 0, total = 0;  // tokens
  bool operator==(const ProgressEvent&) const = default;
};

struct ErrorEvent {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  bool operator==(const ErrorEvent&) const = default;
};

struct Event {
  using Body = std::variant<TokenEvent, ProgressEvent, ErrorEvent, OpResult>;
  RequestId id;  // null only on errors about unreadable lines
  Body body;

  // True for the one line that ends a request (an error or a result).
  bool is_final() const { return body.index() >= 2; }
  bool operator==(const Event&) const = default;
};

// Encoders: one frame each ("...}\n"). A result line is {"id","event":"result","op",...} — the
// "op" tells a client which result it is without remembering its requests.
std::string EncodeResult(const RequestId& id, const HealthResult& result);
std::string EncodeResult(const RequestId& id, const TokenizeResult& result);
std::string EncodeResult(const RequestId& id, const DetokenizeResult& result);
std::string EncodeResult(const RequestId& id, const GenerateResult& result);
std::string EncodeResult(const RequestId& id, const PrefillResult& result);
std::string EncodeResult(const RequestId& id, const PinsResult& result);
std::string EncodeResult(const RequestId& id, const UnpinResult& result);
std::string EncodeResult(const RequestId& id, const CancelResult& result);
std::string EncodeResult(const RequestId& id, const StatsResult& result);
std::string EncodeResult(const RequestId& id, const EvictResult& result);
std::string EncodeResult(const RequestId& id, const OpResult& result);
std::string EncodeToken(const RequestId& id, int32_t token, std::string_view text);
std::string EncodeProgress(const RequestId& id, int64_t done, int64_t total);
std::string EncodeError(const RequestId& id, ErrorCode code, std::string_view message);
// The too_large answer for a line over the limit (id null; the daemon then closes).
std::string EncodeLineTooLarge(size_t max_line_bytes);
std::string EncodeEvent(const Event& event);

// The client side: parses one line from the daemon (without its '\n'). Duplicate keys, wrong
// types, missing fields and non-finite numbers are errors (InvalidArgument); unknown fields are
// ignored. ParseEvent(EncodeEvent(e)) == e for every e whose text is valid UTF-8.
Result<Event> ParseEvent(std::string_view line);

}  // namespace kvtier::protocol
