// model/internal/pretokenize.cc — see pretokenize.h.
#include "model/internal/pretokenize.h"

#include "model/internal/unicode.h"

namespace kvtier::model::internal {
namespace {

constexpr uint32_t kNone = 0xFFFFFFFF;  // "no code point": outside the current segment

// A view of one segment [begin, end) of the code points, answering "outside" past its ends.
class SegmentView {
 public:
  SegmentView(std::span<const uint32_t> cpts, size_t begin, size_t end)
      : cpts_(cpts), begin_(begin), end_(end) {}
  uint32_t Cpt(size_t pos) const { return Inside(pos) ? cpts_[pos] : kNone; }
  // 0 (no flag at all) outside the segment; never 0 inside it.
  uint16_t Flags(size_t pos) const { return Inside(pos) ? CodepointFlags(cpts_[pos]) : 0; }
  bool Inside(size_t pos) const { return pos >= begin_ && pos < end_; }

 private:
  std::span<const uint32_t> cpts_;
  size_t begin_;
  size_t end_;
};

// [^\s\p{L}\p{N}] for a code point inside the segment.
bool IsOther(uint16_t flags) {
  return flags != 0 && (flags & (kWhitespace | kLetter | kNumber)) == 0;
}

uint32_t AsciiLower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c; }

// Length of the contraction ('s 't 'm 'd 're 've 'll) at pos, or 0. `fold` lowers ASCII.
size_t MatchContraction(const SegmentView& v, size_t pos, bool fold) {
  if (v.Cpt(pos) != '\'' || !v.Inside(pos + 1)) return 0;
  auto at = [&](size_t p) { return fold ? AsciiLower(v.Cpt(p)) : v.Cpt(p); };
  const uint32_t c1 = at(pos + 1);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (!v.Inside(pos + 2)) return 0;
  const uint32_t c2 = at(pos + 2);
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// Calls cut(end) for each word end inside [begin, end) of the GPT-2 pattern.
template <typename Cut>
void Gpt2Segment(const SegmentView& v, size_t begin, size_t end, Cut cut) {
  size_t pos = begin;
  while (pos < end) {
    const uint32_t c = v.Cpt(pos);
    if (size_t n = MatchContraction(v, pos, /*fold=*/false); n > 0) {
      pos += n;
      cut(pos);
      continue;
    }
    // An optional leading space, then a run of one class.
    const size_t run_start = pos + (c == ' ' ? 1 : 0);
    const uint16_t head = v.Flags(run_start);
    if (IsLetter(head) || IsNumber(head) || IsOther(head)) {
      auto same_class = [&](uint16_t f) {
        if (IsLetter(head)) return IsLetter(f);
        if (IsNumber(head)) return IsNumber(f);
        return IsOther(f);
      };
      size_t p = run_start + 1;
      while (same_class(v.Flags(p))) ++p;
      pos = p;
      cut(pos);
      continue;
    }
    size_t spaces = 0;
    while (IsWhitespace(v.Flags(pos + spaces))) ++spaces;
    if (spaces > 1 && v.Inside(pos + spaces)) {
      pos += spaces - 1;  // \s+(?!\S): leave the last space to the next word
    } else if (spaces > 0) {
      pos += spaces;  // \s+
    } else {
      pos += 1;  // matches nothing: the code point stands alone
    }
    cut(pos);
  }
}

template <typename Cut>
void Llama3Segment(const SegmentView& v, size_t begin, size_t end, Cut cut) {
  size_t pos = begin;
  while (pos < end) {
    const uint32_t c = v.Cpt(pos);
    const uint16_t f = v.Flags(pos);
    if (size_t n = MatchContraction(v, pos, /*fold=*/true); n > 0) {
      pos += n;
      cut(pos);
      continue;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c != '\r' && c != '\n' && !IsNumber(f) && (IsLetter(f) || IsLetter(v.Flags(pos + 1)))) {
      ++pos;
      while (IsLetter(v.Flags(pos))) ++pos;
      cut(pos);
      continue;
    }
    // \p{N}{1,3}
    if (IsNumber(f)) {
      size_t run = 0;
      while (IsNumber(v.Flags(pos))) {
        ++pos;
        if (++run == 3) {
          cut(pos);
          run = 0;
        }
      }
      if (run > 0) cut(pos);
      continue;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*   (llama.cpp tests the head with the space's own flags when the
    // space ends the segment, so a lone trailing space is taken here; same result as \s+.)
    const uint16_t f2 = (c == ' ') ? v.Flags(pos + 1) : f;
    if ((f2 & (kWhitespace | kLetter | kNumber)) == 0 && f != 0) {
      pos += (c == ' ' ? 1 : 0);
      while (IsOther(v.Flags(pos))) ++pos;
      while (v.Cpt(pos) == '\r' || v.Cpt(pos) == '\n') ++pos;
      cut(pos);
      continue;
    }
    size_t spaces = 0;
    size_t last_newline_end = 0;
    while (IsWhitespace(v.Flags(pos + spaces))) {
      const uint32_t s = v.Cpt(pos + spaces);
      if (s == '\r' || s == '\n') last_newline_end = pos + spaces + 1;
      ++spaces;
    }
    if (last_newline_end > 0) {
      pos = last_newline_end;  // \s*[\r\n]+
    } else if (spaces > 1 && v.Inside(pos + spaces)) {
      pos += spaces - 1;  // \s+(?!\S)
    } else if (spaces > 0) {
      pos += spaces;  // \s+
    } else {
      pos += 1;
    }
    cut(pos);
  }
}

template <typename SegmentFn>
Segments Refine(std::span<const uint32_t> cpts, const Segments& in, SegmentFn fn) {
  Segments out;
  out.reserve(in.size());
  size_t begin = 0;
  for (size_t len : in) {
    const size_t end = begin + len;
    size_t prev = begin;
    auto cut = [&](size_t at) {
      if (at > prev) out.push_back(at - prev);
      prev = at;
    };
    fn(SegmentView(cpts, begin, end), begin, end, cut);
    begin = end;
  }
  return out;
}

}  // namespace

Segments SplitEachNumber(std::span<const uint32_t> cpts, const Segments& in) {
  return Refine(cpts, in, [](const SegmentView& v, size_t begin, size_t end, auto cut) {
    for (size_t pos = begin; pos < end; ++pos) {
      if (IsNumber(v.Flags(pos))) {
        cut(pos);
        cut(pos + 1);
      }
    }
    cut(end);
  });
}

Segments SplitGpt2(std::span<const uint32_t> cpts, const Segments& in) {
  return Refine(cpts, in, [](const SegmentView& v, size_t begin, size_t end, auto cut) {
    Gpt2Segment(v, begin, end, cut);
  });
}

Segments SplitLlama3(std::span<const uint32_t> cpts, const Segments& in) {
  return Refine(cpts, in, [](const SegmentView& v, size_t begin, size_t end, auto cut) {
    Llama3Segment(v, begin, end, cut);
  });
}

std::vector<std::string> PreTokenize(std::string_view text, PreTokenizerKind kind) {
  const std::vector<uint32_t> cpts = DecodeUtf8Lenient(text);
  Segments segs{cpts.size()};
  switch (kind) {
    case PreTokenizerKind::kGpt2:
      segs = SplitGpt2(cpts, segs);
      break;
    case PreTokenizerKind::kSmolLm:
      segs = SplitGpt2(cpts, SplitEachNumber(cpts, segs));
      break;
    case PreTokenizerKind::kLlama3:
      segs = SplitLlama3(cpts, segs);
      break;
  }
  std::vector<std::string> words;
  words.reserve(segs.size());
  size_t begin = 0;
  for (size_t len : segs) {
    std::string w;
    for (size_t i = begin; i < begin + len; ++i) AppendUtf8(cpts[i], &w);
    words.push_back(std::move(w));
    begin += len;
  }
  return words;
}

}  // namespace kvtier::model::internal
