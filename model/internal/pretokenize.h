// model/internal/pretokenize.h — the pre-tokenizers: split text into words before BPE.
//
// Thread safety: pure functions; safe from any thread.
//
// The regular expressions are implemented as hand-written matchers over code points that
// reproduce llama.cpp's splitting (src/unicode.cpp) exactly, including its quirks:
//   - each pattern is applied inside the segments left by the previous pattern, so a
//     look-ahead (\s+(?!\S)) never sees past a segment end;
//   - `smollm` first cuts every \p{N} code point into its own segment;
//   - input is decoded with DecodeUtf8Lenient (invalid bytes become U+FFFD).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvtier::model::internal {

enum class PreTokenizerKind {
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kSmolLm,  // \p{N} (each number code point alone), then the GPT-2 pattern
  kLlama3,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
            //   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
};

// Segment lengths (in code points) of `cpts`, refined by each step. Every step keeps the
// segmentation it is given and only cuts segments further.
using Segments = std::vector<size_t>;

Segments SplitEachNumber(std::span<const uint32_t> cpts, const Segments& in);
Segments SplitGpt2(std::span<const uint32_t> cpts, const Segments& in);
Segments SplitLlama3(std::span<const uint32_t> cpts, const Segments& in);

// The words of `text` (UTF-8, re-encoded from the decoded code points).
std::vector<std::string> PreTokenize(std::string_view text, PreTokenizerKind kind);

}  // namespace kvtier::model::internal
