// model/internal/unicode.h — code point classes, lenient UTF-8 and the GPT-2 byte mapping, as the
// byte-level BPE tokenizer needs them.
//
// Thread safety: all functions are pure or read immutable tables; safe from any thread.
//
// Behaviour follows llama.cpp (src/unicode.cpp) so that tokenization matches it exactly:
// invalid UTF-8 bytes decode to U+FFFD one byte at a time, and the category tables are the
// Unicode version llama.cpp uses (see scripts/gen-unicode-tables).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvtier::model::internal {

// Flag bits of a code point (kept in sync with scripts/gen-unicode-tables).
enum CodepointFlag : uint16_t {
  kUndefined = 0x0001,    // general category Cn
  kNumber = 0x0002,       // \p{N}
  kLetter = 0x0004,       // \p{L}
  kSeparator = 0x0008,    // \p{Z}
  kMark = 0x0010,         // \p{M}
  kPunctuation = 0x0020,  // \p{P}
  kSymbol = 0x0040,       // \p{S}
  kControl = 0x0080,      // \p{C} other than Cn
  kWhitespace = 0x0100,   // White_Space property (\s)
};

struct CodepointRange {
  uint32_t first;  // first code point of the run
  uint16_t flags;  // flags of every code point up to the next entry's first
};

// Generated (model/internal/unicode_tables.cc).
extern const char kUnicodeVersion[];
extern const CodepointRange kCodepointRanges[];
extern const size_t kNumCodepointRanges;

// Flags of a code point; code points past U+10FFFF are kUndefined (as in llama.cpp).
uint16_t CodepointFlags(uint32_t cpt);

inline bool IsLetter(uint16_t f) { return (f & kLetter) != 0; }
inline bool IsNumber(uint16_t f) { return (f & kNumber) != 0; }
inline bool IsWhitespace(uint16_t f) { return (f & kWhitespace) != 0; }

// Decodes UTF-8 leniently, exactly as llama.cpp does: a byte that does not start a complete
// sequence (bad lead byte, missing or bad continuation) yields U+FFFD and decoding resumes at the
// next byte. Overlong forms and surrogates are accepted as they come; lead bytes F5..F7 give code
// points past U+10FFFF.
std::vector<uint32_t> DecodeUtf8Lenient(std::string_view text);

// Appends the UTF-8 encoding of cpt (cpt <= 0x1FFFFF; 4 bytes for anything past U+FFFF).
void AppendUtf8(uint32_t cpt, std::string* out);

// Length of the UTF-8 sequence that starts with this lead byte (1 for continuation bytes).
size_t Utf8SequenceLength(uint8_t lead);

// GPT-2 byte-level mapping: each byte is shown as a printable code point (printable Latin-1 as
// themselves, the rest as U+0100 + n).
struct ByteMapping {
  std::array<std::string, 256> byte_to_utf8;  // byte -> UTF-8 of its code point
  // code point -> byte, for code points < 0x200; -1 if the code point stands for no byte.
  std::array<int16_t, 0x200> cpt_to_byte;
};
const ByteMapping& GetByteMapping();

}  // namespace kvtier::model::internal
