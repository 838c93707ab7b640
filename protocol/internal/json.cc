#include "protocol/internal/json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <utility>
#include <vector>

namespace kvtier::protocol::internal {
namespace {

// Builds a Json document from nlohmann's SAX events, with the checks nlohmann's own DOM builder
// does not make: duplicate keys are noticed (not silently overwritten) and nesting is bounded,
// stopping the parse at once so a depth bomb costs nothing.
class StrictBuilder {
 public:
  StrictBuilder(StrictJson* out, int max_depth) : out_(out), max_depth_(max_depth) {}

  bool null() { return Put(Json(nullptr)); }
  bool boolean(bool v) { return Put(Json(v)); }
  bool number_integer(Json::number_integer_t v) { return Put(Json(v)); }
  bool number_unsigned(Json::number_unsigned_t v) { return Put(Json(v)); }
  bool number_float(Json::number_float_t v, const Json::string_t& /*text*/) { return Put(Json(v)); }
  bool string(Json::string_t& v) { return Put(Json(std::move(v))); }
  bool binary(Json::binary_t& /*v*/) {
    error_ = "invalid JSON: binary value";  // unreachable for JSON text
    return false;
  }
  bool start_object(std::size_t /*elements*/) { return Open(Json::object()); }
  bool start_array(std::size_t /*elements*/) { return Open(Json::array()); }
  bool end_object() {
    stack_.pop_back();
    return true;
  }
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  bool key(Json::string_t& k) {
    auto& object = stack_.back()->get_ref<Json::object_t&>();
    auto [it, inserted] = object.try_emplace(k);
    if (inserted) {
      member_ = &it->second;
      return true;
    }
    if (out_->duplicate_key.empty()) out_->duplicate_key = k;
    if (stack_.size() == 1 && k == "id") out_->duplicate_id = true;
    scratch_ = Json();
    member_ = &scratch_;  // keep the first value
    return true;
  }
  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::json::exception& ex) {
    error_ = "invalid JSON at byte " + std::to_string(position) + ": " + Describe(ex.what());
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  // nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1,
  // column N: " prefix and without the "; last read: '...'" suffix, which would echo client
  // bytes (maybe prompt text, maybe invalid UTF-8) back into logs and error lines.
  static std::string Describe(std::string_view what) {
    if (what.substr(0, 1) == "[") {
      if (size_t end = what.find("] "); end != std::string_view::npos) what.remove_prefix(end + 2);
    }
    if (what.substr(0, 12) == "parse error ") {
      if (size_t colon = what.find(": "); colon != std::string_view::npos) {
        what.remove_prefix(colon + 2);
      }
    }
    if (size_t last = what.find("; last read"); last != std::string_view::npos) {
      what = what.substr(0, last);
    }
    return Excerpt(what, 160);
  }

  Json* Place(Json&& v) {
    if (stack_.empty()) {
      out_->value = std::move(v);
      return &out_->value;
    }
    Json* top = stack_.back();
    if (top->is_array()) {
      auto& array = top->get_ref<Json::array_t&>();
      array.push_back(std::move(v));
      return &array.back();
    }
    *member_ = std::move(v);
    return member_;
  }
  bool Put(Json&& v) {
    Place(std::move(v));
    return true;
  }
  bool Open(Json&& container) {
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      error_ = "JSON nesting deeper than " + std::to_string(max_depth_) + " levels";
      return false;
    }
    // Pointers on the stack stay valid: only the innermost open container is ever modified.
    stack_.push_back(Place(std::move(container)));
    return true;
  }

  StrictJson* out_;
  int max_depth_;
  std::vector<Json*> stack_;  // the open containers, outermost first
  Json* member_ = nullptr;    // where the next value of the innermost object goes
  Json scratch_;              // sink for the values of duplicate keys
  std::string error_;
};

}  // namespace

Status ParseStrictJson(std::string_view text, int max_depth, StrictJson* out) {
  *out = StrictJson();
  StrictBuilder builder(out, max_depth);
  try {
    const bool ok = Json::sax_parse(text.begin(), text.end(), &builder, Json::input_format_t::json,
                                    /*strict=*/true, /*ignore_comments=*/false);
    if (ok) return Status::Ok();
    return InvalidArgumentError(builder.error().empty() ? "invalid JSON" : builder.error());
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory while parsing JSON");
  } catch (const std::exception&) {
    return InvalidArgumentError("invalid JSON");
  }
}

std::string Excerpt(std::string_view s, size_t max_bytes) {
  // Control characters are written as escapes so an error message stays one line whatever the
  // client sent (a field name may contain "\n" once its JSON escape is decoded).
  std::string out;
  out.reserve(std::min(s.size(), max_bytes) + 8);
  size_t i = 0;
  for (; i < s.size() && out.size() < max_bytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i == s.size()) return out;
  // Back up over UTF-8 continuation bytes so a character is never split.
  size_t cut = out.size();
  while (cut > 0 && (static_cast<unsigned char>(out[cut - 1]) & 0xC0) == 0x80) --cut;
  if (cut > 0 && (static_cast<unsigned char>(out[cut - 1]) & 0xC0) == 0xC0) --cut;  // its lead
  out.resize(cut);
  return out + "...";
}

bool IntegerIn(const Json& v, int64_t lo, int64_t hi, int64_t* out) {
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    return false;
  }
  if (x < lo || x > hi) return false;
  *out = x;
  return true;
}

std::string IntegerRange(int64_t lo, int64_t hi) {
  return "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

const Json* FieldReader::Find(std::string_view key) const {
  auto it = object_.find(key);
  return it == object_.end() ? nullptr : &*it;
}

std::string FieldReader::Name(std::string_view key) const {
  std::string name = path_;
  name.append(key);
  return name;
}

Status FieldReader::MustBe(std::string_view key, std::string_view what) const {
  return InvalidArgumentError("field '" + Name(key) + "' must be " + std::string(what));
}

Status FieldReader::Missing(std::string_view key) const {
  return InvalidArgumentError("missing required field '" + Name(key) + "'");
}

Status FieldReader::ReadString(std::string_view key, bool required, std::string* out,
                               size_t max_bytes, bool non_empty) const {
  const Json* v = Find(key);
  if (v == nullptr) return required ? Missing(key) : Status::Ok();
  if (!v->is_string() || v->get_ref<const std::string&>().size() > max_bytes ||
      (non_empty && v->get_ref<const std::string&>().empty())) {
    std::string what = non_empty ? "a non-empty string" : "a string";
    if (max_bytes != std::numeric_limits<size_t>::max()) {
      what += " of at most " + std::to_string(max_bytes) + " bytes";
    }
    return MustBe(key, what);
  }
  *out = v->get_ref<const std::string&>();
  return Status::Ok();
}

Status FieldReader::ReadInt(std::string_view key, bool required, int64_t lo, int64_t hi,
                            int64_t* out) const {
  const Json* v = Find(key);
  if (v == nullptr) return required ? Missing(key) : Status::Ok();
  if (!IntegerIn(*v, lo, hi, out)) return MustBe(key, IntegerRange(lo, hi));
  return Status::Ok();
}

Status FieldReader::ReadUint64(std::string_view key, bool required, uint64_t* out) const {
  const Json* v = Find(key);
  if (v == nullptr) return required ? Missing(key) : Status::Ok();
  if (!v->is_number_unsigned()) {
    return MustBe(
        key, "an integer in [0, " + std::to_string(std::numeric_limits<uint64_t>::max()) + "]");
  }
  *out = v->get<uint64_t>();
  return Status::Ok();
}

namespace {
std::string FormatNumber(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", x);
  return buf;
}
}  // namespace

Status FieldReader::ReadNumber(std::string_view key, bool required, double lo, double hi,
                               bool lo_open, double* out) const {
  const Json* v = Find(key);
  if (v == nullptr) return required ? Missing(key) : Status::Ok();
  const double x = v->is_number() ? v->get<double>() : std::nan("");
  const bool in_range = std::isfinite(x) && (lo_open ? x > lo : x >= lo) && x <= hi;
  if (!in_range) {
    return MustBe(key, "a finite number in " + std::string(lo_open ? "(" : "[") + FormatNumber(lo) +
                           ", " + FormatNumber(hi) + "]");
  }
  *out = x;
  return Status::Ok();
}

Status FieldReader::ReadBool(std::string_view key, bool required, bool* out) const {
  const Json* v = Find(key);
  if (v == nullptr) return required ? Missing(key) : Status::Ok();
  if (!v->is_boolean()) return MustBe(key, "a boolean");
  *out = v->get<bool>();
  return Status::Ok();
}

std::string EncodeFrame(const OutJson& j) {
  std::string line;
  try {
    line = j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::detail::error_handler_t::replace);
  } catch (const std::exception&) {
    // dump with the replace handler only throws on allocation failure; say so in-band.
    line = R"({"id":null,"event":"error","code":"internal","message":"encoding failed"})";
  }
  line.push_back('\n');
  return line;
}

}  // namespace kvtier::protocol::internal
