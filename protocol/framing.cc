#include "protocol/framing.h"

#include "base/status.h"

namespace kvtier::protocol {
namespace {

// A connection that once received a big line gives the memory back instead of keeping a
// 16 MiB buffer for its lifetime.
constexpr size_t kKeptBufferBytes = size_t{64} << 10;

}  // namespace

bool IsBlankLine(std::string_view line) {
  for (char c : line) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}

LineDecoder::LineDecoder(size_t max_line_bytes) : max_line_bytes_(max_line_bytes) {}

bool LineDecoder::Trim(std::string_view* line) {
  if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
  return !IsBlankLine(*line);
}

LineDecoder::State LineDecoder::Fail() {
  state_ = State::kTooLarge;
  partial_ = std::string();
  return state_;
}

void LineDecoder::ReleaseBigBuffer() {
  if (partial_.capacity() > kKeptBufferBytes) partial_ = std::string();
}

std::optional<std::string> LineDecoder::Finish() {
  if (state_ != State::kOk || partial_.empty()) {
    partial_ = std::string();
    return std::nullopt;
  }
  std::string line = std::move(partial_);
  partial_ = std::string();
  std::string_view view = line;
  if (!Trim(&view)) return std::nullopt;
  line.resize(view.size());
  return line;
}

void AppendLine(std::string_view json_object, std::string* out) {
  KVTIER_CHECK(json_object.find('\n') == std::string_view::npos);
  out->reserve(out->size() + json_object.size() + 1);
  out->append(json_object);
  out->push_back('\n');
}

}  // namespace kvtier::protocol
