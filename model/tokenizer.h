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
#include <span>
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
  // The vocabulary as a GGUF stores it (tokenizer.ggml.*), for building a tokenizer without a
  // file (tests, tools).
  struct Vocab {
    std::vector<std::string> tokens;
    // GGUF token types, one per token: 1 normal, 2 unknown, 3 control, 4 user-defined,
    // 5 unused, 6 byte. Empty: all normal.
    std::vector<int32_t> token_types;
    std::vector<std::string> merges;  // "left right"; the rank of a merge is its index
    std::string pre = "gpt2";         // tokenizer.ggml.pre
    int32_t bos_id = -1;
    int32_t eos_id = -1;
    bool add_bos = false;
    std::string chat_template;  // tokenizer.chat_template ("" if none)
  };

  // Reads tokenizer.ggml.{model,pre,tokens,token_type,merges,bos_token_id,eos_token_id,...}
  // and tokenizer.chat_template. Unsupported tokenizer model or pre-tokenizer -> error.
  static Result<std::unique_ptr<Tokenizer>> Create(const GgufFile& file);
  // Builds from an in-memory vocabulary; same validation as Create().
  static Result<std::unique_ptr<Tokenizer>> CreateFromVocab(Vocab vocab);
  ~Tokenizer();

  // Text -> ids. parse_special: recognise special/control token strings (e.g. "<|im_start|>")
  // in the text; otherwise they are tokenized as plain text. add_bos: prepend BOS if the
  // model's metadata says to add it (tokenizer.ggml.add_bos_token).
  std::vector<int32_t> Encode(std::string_view text, bool parse_special,
                              bool add_bos = false) const;

  // Ids -> text. Special/control tokens render as their text when render_special is set,
  // otherwise as nothing. Ids out of range -> error.
  Result<std::string> Decode(std::span<const int32_t> ids, bool render_special = false) const;
  // The bytes of one token (for streaming; may be a partial UTF-8 sequence).
  std::string TokenPiece(int32_t id, bool render_special = false) const;

  // The chat template applied to messages, ending with the assistant turn's opening when
  // add_generation_prompt is set. Templates recognised: ChatML (the default model's, including
  // its default system message when none is given) and llama-3 (as llama.cpp formats it: no
  // BOS in the text, contents trimmed). InvalidArgument if the file's template is unrecognised,
  // NotFound if the file has none.
  Result<std::string> ApplyChatTemplate(const std::vector<ChatMessage>& messages,
                                        bool add_generation_prompt = true) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none
  // True for ids that end generation (eos, eot, <|im_end|> and other end-of-generation tokens).
  bool IsEndOfGeneration(int32_t id) const;
  std::string_view pre_tokenizer() const;
  // The text of a token (as stored in the vocabulary), "" if out of range.
  std::string_view TokenText(int32_t id) const;

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvtier::model
