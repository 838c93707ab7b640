// model/tokenizer.h — byte-level BPE tokenizer built from a GGUF's vocabulary and merges, and
// the chat template.
//
// Thread safety: a Tokenizer is immutable after Create() and safe for concurrent use.
//
// Matches llama.cpp token for token on the same file: pre-tokenizers `smollm` (every digit
// alone, then the GPT-2 pattern), `gpt2`, `llama-bpe`; special/control tokens are matched in
// the text when `parse_special` is set; Decode is exact (bytes out = bytes in for any text that
// was encoded without special parsing).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "model/gguf.h"

namespace kvtier::model {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model,pre,tokens,token_type,merges,bos_token_id,eos_token_id,...}
  // and tokenizer.chat_template. Unsupported tokenizer model or pre-tokenizer -> error.
  static Result<std::unique_ptr<Tokenizer>> Create(const GgufFile& file);
  ~Tokenizer();

  // Text -> ids. parse_special: recognise special/control token strings (e.g. "<|im_start|>")
  // in the text; otherwise they are tokenized as plain text. add_bos: prepend BOS if the
  // model's metadata says to add it (tokenizer.ggml.add_bos_token).
  std::vector<int32_t> Encode(std::string_view text, bool parse_special, bool add_bos = false) const;

  // Ids -> text. Special/control tokens render as their text when render_special is set,
  // otherwise as nothing. Ids out of range -> error.
  Result<std::string> Decode(std::span<const int32_t> ids, bool render_special = false) const;
  // The bytes of one token (for streaming; may be a partial UTF-8 sequence).
  std::string TokenPiece(int32_t id, bool render_special = false) const;

  // The chat template applied to messages, ending with the assistant turn's opening when
  // add_generation_prompt is set. Templates recognised: ChatML (the default model's, including
  // its default system message when none is given), llama-3, and a plain fallback. Error if
  // the file's template is unrecognised and no fallback applies.
  Result<std::string> ApplyChatTemplate(const std::vector<ChatMessage>& messages,
                                        bool add_generation_prompt = true) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;   // -1 if none
  int32_t eos_id() const;   // -1 if none
  // True for ids that end generation (eos, eot, <|im_end|> and other end-of-generation tokens).
  bool IsEndOfGeneration(int32_t id) const;
  std::string_view pre_tokenizer() const;

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvtier::model
