// model/internal/unicode.cc — see unicode.h.
#include "model/internal/unicode.h"

#include <algorithm>

namespace kvtier::model::internal {

uint16_t CodepointFlags(uint32_t cpt) {
  if (cpt >= 0x110000) return kUndefined;
  // Last range whose first <= cpt.
  const CodepointRange* end = kCodepointRanges + kNumCodepointRanges;
  const CodepointRange* it =
      std::upper_bound(kCodepointRanges, end, cpt,
                       [](uint32_t value, const CodepointRange& r) { return value < r.first; });
  return (it - 1)->flags;
}

size_t Utf8SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

std::vector<uint32_t> DecodeUtf8Lenient(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  auto is_cont = [&](size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    const uint8_t b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      i += 1;
    } else if ((b & 0x40) == 0) {  // stray continuation byte
      out.push_back(0xFFFD);
      i += 1;
    } else if ((b & 0x20) == 0) {
      if (is_cont(i + 1)) {
        out.push_back((uint32_t{b} & 0x1F) << 6 | (s[i + 1] & 0x3F));
        i += 2;
      } else {
        out.push_back(0xFFFD);
        i += 1;
      }
    } else if ((b & 0x10) == 0) {
      if (is_cont(i + 1) && is_cont(i + 2)) {
        out.push_back((uint32_t{b} & 0x0F) << 12 | (uint32_t{s[i + 1]} & 0x3F) << 6 |
                      (s[i + 2] & 0x3F));
        i += 3;
      } else {
        out.push_back(0xFFFD);
        i += 1;
      }
    } else if ((b & 0x08) == 0) {
      if (is_cont(i + 1) && is_cont(i + 2) && is_cont(i + 3)) {
        out.push_back((uint32_t{b} & 0x07) << 18 | (uint32_t{s[i + 1]} & 0x3F) << 12 |
                      (uint32_t{s[i + 2]} & 0x3F) << 6 | (s[i + 3] & 0x3F));
        i += 4;
      } else {
        out.push_back(0xFFFD);
        i += 1;
      }
    } else {  // F8..FF
      out.push_back(0xFFFD);
      i += 1;
    }
  }
  return out;
}

void AppendUtf8(uint32_t cpt, std::string* out) {
  if (cpt < 0x80) {
    out->push_back(static_cast<char>(cpt));
  } else if (cpt < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | ((cpt >> 18) & 0x07)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

namespace {

ByteMapping BuildByteMapping() {
  ByteMapping m;
  m.cpt_to_byte.fill(-1);
  auto printable = [](int b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    uint32_t cpt;
    if (printable(b)) {
      cpt = static_cast<uint32_t>(b);
    } else {
      cpt = 0x100 + static_cast<uint32_t>(next++);
    }
    AppendUtf8(cpt, &m.byte_to_utf8[b]);
    m.cpt_to_byte[cpt] = static_cast<int16_t>(b);
  }
  return m;
}

}  // namespace

const ByteMapping& GetByteMapping() {
  static const ByteMapping kMapping = BuildByteMapping();
  return kMapping;
}

}  // namespace kvtier::model::internal
