// libFuzzer target for the wire protocol: the input is a byte stream as a client would send it.
// Checked, never just "no crash":
//   - LineDecoder, fed in input-dependent chunks, yields exactly the lines, too_large verdict and
//     unterminated tail that a naive reference splitter gives;
//   - every line either parses as a request whose re-encoding parses back to the same request
//     (and re-encodes to the same bytes), or yields bad_request/unknown_op with a one-line
//     message whose error frame the client parser reads back exactly;
//   - every line that parses as an event re-encodes and parses back to the same event.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/framing.h"
#include "protocol/messages.h"

namespace {

using kvtier::protocol::ErrorCode;
using kvtier::protocol::ErrorEvent;
using kvtier::protocol::Event;
using kvtier::protocol::LineDecoder;
using kvtier::protocol::Request;
using kvtier::protocol::RequestError;

constexpr size_t kMaxLineBytes = 4096;

void Check(bool ok) {
  if (!ok) std::abort();
}

std::string_view Unframe(const std::string& frame) {
  Check(!frame.empty() && frame.back() == '\n' && frame.find('\n') == frame.size() - 1);
  return std::string_view(frame).substr(0, frame.size() - 1);
}

void CheckRequestLine(std::string_view line) {
  RequestError error;
  kvtier::Result<Request> r = kvtier::protocol::ParseRequest(line, &error);
  if (r.ok()) {
    Check(!r->id.is_null());
    const std::string encoded = kvtier::protocol::EncodeRequest(*r);
    RequestError again_error;
    kvtier::Result<Request> again = kvtier::protocol::ParseRequest(Unframe(encoded), &again_error);
    Check(again.ok());
    Check(*again == *r);
    Check(kvtier::protocol::EncodeRequest(*again) == encoded);
    return;
  }
  Check(error.code == ErrorCode::kBadRequest || error.code == ErrorCode::kUnknownOp);
  Check(!error.message.empty() && error.message.find('\n') == std::string::npos);
  Check(r.status().message() == error.message);
  const std::string frame = error.Encode();
  kvtier::Result<Event> event = kvtier::protocol::ParseEvent(Unframe(frame));
  Check(event.ok());
  Check(event->id == error.id);
  // Exact equality also proves the message was valid UTF-8 (no U+FFFD substitution).
  Check(event->body == Event::Body(ErrorEvent{error.code, error.message}));
}

void CheckEventLine(std::string_view line) {
  kvtier::Result<Event> e = kvtier::protocol::ParseEvent(line);
  if (!e.ok()) return;
  const std::string encoded = kvtier::protocol::EncodeEvent(*e);
  kvtier::Result<Event> again = kvtier::protocol::ParseEvent(Unframe(encoded));
  Check(again.ok());
  Check(*again == *e);
}

struct Split {
  std::vector<std::string> lines;
  bool too_large = false;
  std::optional<std::string> tail;
};

// The framing rules of protocol/framing.h, written the obvious way.
Split ReferenceSplit(std::string_view input) {
  Split s;
  while (true) {
    const size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    if (line.size() > kMaxLineBytes) {
      s.too_large = true;
      return s;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool blank = kvtier::protocol::IsBlankLine(line);
    if (nl == std::string_view::npos) {
      if (!blank) s.tail = std::string(line);
      return s;
    }
    if (!blank) s.lines.emplace_back(line);
    input.remove_prefix(nl + 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // Chunk sizes drawn from a tiny generator seeded by the input, so one input exercises one
  // fixed but arbitrary chunking.
  uint32_t state = 2166136261u;
  for (size_t i = 0; i < size && i < 16; ++i) state = (state ^ data[i]) * 16777619u;
  LineDecoder decoder(kMaxLineBytes);
  Split got;
  size_t offset = 0;
  while (offset < size && decoder.state() == LineDecoder::State::kOk) {
    state = state * 1103515245u + 12345u;
    const size_t chunk = 1 + (state >> 16) % 64;
    const auto result = decoder.Feed(input.substr(offset, chunk), [&](std::string_view line) {
      Check(line.size() <= kMaxLineBytes);
      got.lines.emplace_back(line);
    });
    Check(decoder.buffered_bytes() <= kMaxLineBytes);
    got.too_large = result == LineDecoder::State::kTooLarge;
    offset += chunk;
  }
  got.tail = decoder.Finish();

  const Split want = ReferenceSplit(input);
  Check(got.lines == want.lines);
  Check(got.too_large == want.too_large);
  Check(got.tail == want.tail);

  for (const std::string& line : got.lines) {
    CheckRequestLine(line);
    CheckEventLine(line);
  }
  if (got.tail) {
    CheckRequestLine(*got.tail);
    CheckEventLine(*got.tail);
  }
  // The whole input as one line too (newlines inside are JSON whitespace or errors).
  if (size <= kMaxLineBytes) {
    CheckRequestLine(input);
    CheckEventLine(input);
  }
  return 0;
}
