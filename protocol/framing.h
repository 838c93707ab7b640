// protocol/framing.h — NDJSON framing (DESIGN §6): one JSON object per '\n'-terminated line.
//
// Thread safety: LineDecoder holds per-connection state and is not synchronized; use one per
// connection from one thread (or one Asio strand) at a time. The free functions are pure.
//
// Line rules (protocol/README.md "Framing"):
//   - A line is the bytes before a '\n'. One trailing '\r' is stripped (CRLF senders work).
//   - The limit counts every byte of a line except its '\n' (a CRLF line's '\r' counts): a line
//     of exactly max_line_bytes is accepted, one byte more is too_large.
//   - Blank lines (empty, or only spaces, tabs and '\r') are skipped: they are not requests.
//   - Any other bytes, binary garbage included, are passed through; validation is
//     ParseRequest's job.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace kvtier::protocol {

// DESIGN §6: the default longest line, in bytes (16 MiB).
inline constexpr size_t kDefaultMaxLineBytes = size_t{16} << 20;

// True for a line the decoder skips: empty or only ' ', '\t', '\r'.
bool IsBlankLine(std::string_view line);

// Splits a byte stream, fed in chunks of any size as they arrive, into lines.
//
// Memory: only the unfinished tail line is buffered, and never more than max_line_bytes of it:
// a line that exceeds the limit is reported as soon as the limit is passed, before its end
// arrives, and the rest of the stream is then ignored (the daemon answers too_large and closes
// the connection, DESIGN §6).
class LineDecoder {
 public:
  enum class State {
    kOk,        // keep feeding
    kTooLarge,  // a line exceeded max_line_bytes; sticky: Feed does nothing afterwards
  };

  explicit LineDecoder(size_t max_line_bytes = kDefaultMaxLineBytes);

  // Splits `bytes` (the next chunk of the stream) and calls `on_line(std::string_view line)` for
  // every completed non-blank line, in order, without its '\n' and trailing '\r'. The view is
  // valid only during the call. Returns kTooLarge as soon as the current line passes the limit
  // (lines completed earlier in the same chunk have been delivered), else kOk.
  template <typename OnLine>
  State Feed(std::string_view bytes, OnLine&& on_line);

  // End of input: returns the final line if the stream ended without its '\n' and that line is
  // not blank (trailing '\r' stripped), and clears the buffer. Returns nullopt otherwise, and
  // always after kTooLarge. The caller decides what an unterminated line means (the daemon
  // treats it as a request: a truncated object never parses, so this is safe).
  std::optional<std::string> Finish();

  State state() const { return state_; }
  size_t max_line_bytes() const { return max_line_bytes_; }
  // Bytes of the unfinished line held right now (≤ max_line_bytes).
  size_t buffered_bytes() const { return partial_.size(); }

 private:
  // Strips one trailing '\r'; false for a blank line.
  static bool Trim(std::string_view* line);
  State Fail();
  void ReleaseBigBuffer();

  size_t max_line_bytes_;
  State state_ = State::kOk;
  std::string partial_;  // the unfinished line (no '\n' inside)
};

// Appends one frame to *out: `json_object` (a single-line JSON text) and '\n'. A '\n' inside
// `json_object` is a programmer error (JSON encoders escape it) and aborts.
void AppendLine(std::string_view json_object, std::string* out);

// --- implementation ---

template <typename OnLine>
LineDecoder::State LineDecoder::Feed(std::string_view bytes, OnLine&& on_line) {
  if (state_ != State::kOk) return state_;
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    const size_t line_bytes = nl == std::string_view::npos ? bytes.size() : nl;
    if (line_bytes > max_line_bytes_ - partial_.size()) return Fail();
    if (nl == std::string_view::npos) {
      partial_.append(bytes);
      return State::kOk;
    }
    std::string_view line;
    if (partial_.empty()) {
      line = bytes.substr(0, nl);  // the whole line is in this chunk: no copy
    } else {
      partial_.append(bytes.data(), nl);
      line = partial_;
    }
    if (Trim(&line)) on_line(line);
    partial_.clear();
    ReleaseBigBuffer();
    bytes.remove_prefix(nl + 1);
  }
  return State::kOk;
}

}  // namespace kvtier::protocol
