// protocol/internal/json.h — strict JSON reading and safe writing shared by the request and
// event code (nlohmann::json underneath; its exceptions never leave these functions).
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "base/status.h"

namespace kvtier::protocol::internal {

using Json = nlohmann::json;             // parsed input (object keys sorted)
using OutJson = nlohmann::ordered_json;  // encoded output (keys in insertion order)

struct StrictJson {
  Json value;
  // The first key that appeared twice in one object, at any depth (the first value is kept so
  // the rest can still be read); empty when none.
  std::string duplicate_key;
  // True when the top-level object has "id" more than once (the id is then unreadable).
  bool duplicate_id = false;
};

// Parses `text` as exactly one JSON value: RFC 8259 syntax, valid UTF-8 in strings, nothing but
// whitespace after the value, nesting at most `max_depth` arrays/objects. Returns
// InvalidArgument "invalid JSON at byte N: ..." or "JSON nesting deeper than N levels".
Status ParseStrictJson(std::string_view text, int max_depth, StrictJson* out);

// `s` cut to at most `max_bytes` at a UTF-8 character boundary, "..." appended when cut; for
// quoting client-supplied names in error messages.
std::string Excerpt(std::string_view s, size_t max_bytes = 64);

// Reads typed members of one JSON object for the request and event parsers, naming a member by
// its path in error messages ("field 'usage.prompt_tokens' must be an integer in [0, ...]").
// Each Read* leaves *out untouched when the member is absent and `required` is false; an absent
// required member is "missing required field '...'". Integer readers refuse numbers written
// with a fraction or exponent (1.0, 1e3); number readers refuse non-finite values (1e400).
class FieldReader {
 public:
  // `object` must be a JSON object and outlive the reader; `path` is "" or ends in '.'.
  explicit FieldReader(const Json& object, std::string path = "")
      : object_(object), path_(std::move(path)) {}

  const Json* Find(std::string_view key) const;
  // path + key, for messages.
  std::string Name(std::string_view key) const;
  // "field '<path+key>' must be <what>".
  Status MustBe(std::string_view key, std::string_view what) const;
  Status Missing(std::string_view key) const;

  Status ReadString(std::string_view key, bool required, std::string* out,
                    size_t max_bytes = std::numeric_limits<size_t>::max(),
                    bool non_empty = false) const;
  Status ReadInt(std::string_view key, bool required, int64_t lo, int64_t hi, int64_t* out) const;
  Status ReadUint64(std::string_view key, bool required, uint64_t* out) const;
  // A finite number in [lo, hi], or (lo, hi] when lo_open.
  Status ReadNumber(std::string_view key, bool required, double lo, double hi, bool lo_open,
                    double* out) const;
  Status ReadBool(std::string_view key, bool required, bool* out) const;

  template <typename T>
  Status ReadInt(std::string_view key, bool required, int64_t lo, int64_t hi, T* out) const {
    int64_t v = 0;
    const Json* present = Find(key);
    RETURN_IF_ERROR(ReadInt(key, required, lo, hi, &v));
    if (present != nullptr) *out = static_cast<T>(v);
    return Status::Ok();
  }

 private:
  const Json& object_;
  std::string path_;
};

// Reads an integer JSON value in [lo, hi] (integer syntax only, signed or unsigned storage).
bool IntegerIn(const Json& v, int64_t lo, int64_t hi, int64_t* out);
// "an integer in [lo, hi]".
std::string IntegerRange(int64_t lo, int64_t hi);

// One frame: `j` on one line (invalid UTF-8 replaced by U+FFFD) followed by '\n'.
std::string EncodeFrame(const OutJson& j);

}  // namespace kvtier::protocol::internal
