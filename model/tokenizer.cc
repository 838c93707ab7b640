// model/tokenizer.cc — byte-level BPE as llama.cpp does it (see tokenizer.h and model/README.md).
#include "model/tokenizer.h"

#include <algorithm>
#include <queue>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "model/internal/pretokenize.h"
#include "model/internal/unicode.h"

namespace kvtier::model {
namespace {

using internal::PreTokenizerKind;

// Token attributes (llama.cpp's llama_token_attr subset that matters for BPE).
enum TokenAttr : uint16_t {
  kAttrUndefined = 0,
  kAttrUnknown = 1 << 0,
  kAttrUnused = 1 << 1,
  kAttrNormal = 1 << 2,
  kAttrControl = 1 << 3,
  kAttrUserDefined = 1 << 4,
  kAttrByte = 1 << 5,
};

uint16_t AttrFromGgufType(int64_t type) {
  switch (type) {
    case 1:
      return kAttrNormal;
    case 2:
      return kAttrUnknown;
    case 3:
      return kAttrControl;
    case 4:
      return kAttrUserDefined;
    case 5:
      return kAttrUnused;
    case 6:
      return kAttrByte;
    default:
      return kAttrUndefined;
  }
}

// Texts llama.cpp recognises as end-of-turn / end-of-generation / fill-in-the-middle tokens and
// forces to control type when the file says otherwise.
constexpr std::string_view kEotTexts[] = {"<|eot_id|>",
                                          "<|im_end|>",
                                          "<|end|>",
                                          "<end_of_turn>",
                                          "<|endoftext|>",
                                          "<|end_of_text|>",
                                          "<EOT>",
                                          "_<EOT>",
                                          "<\xef\xbd\x9c"
                                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                          "<end_of_utterance>"};
constexpr std::string_view kEomTexts[] = {"<|eom_id|>"};
constexpr std::string_view kEogTexts[] = {"<|eot_id|>",    "<|im_end|>",      "<|end|>",
                                          "<|return|>",    "<|call|>",        "<end_of_turn>",
                                          "<|endoftext|>", "<|eom_id|>",      "<EOT>",
                                          "_<EOT>",        "<|end_of_text|>", "<end_of_utterance>"};
constexpr std::string_view kFimTexts[] = {"<|fim_prefix|>", "<fim-prefix>",      "<fim_prefix>",
                                          "<PRE>",          "\xe2\x96\x81<PRE>", "<|code_prefix|>",
                                          "<|fim_suffix|>", "<fim-suffix>",      "<fim_suffix>",
                                          "<SUF>",          "\xe2\x96\x81<SUF>", "<|code_suffix|>",
                                          "<|fim_middle|>", "<fim-middle>",      "<fim_middle>",
                                          "<MID>",          "\xe2\x96\x81<MID>", "<|code_middle|>"};
// Fill-in-the-middle pad / repository / file separator tokens also end generation.
constexpr std::string_view kFimEogTexts[] = {
    "<|fim_pad|>",   "<fim-pad>",  "<fim_pad>", "<PAD>",      "<|fim_repo|>",
    "<|repo_name|>", "<fim-repo>", "<REPO>",    "<reponame>", "<|file_sep|>"};

template <size_t N>
bool OneOf(std::string_view s, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

enum class ChatFormat { kNone, kChatMl, kLlama3, kUnknown };

// Reads a Jinja string literal whose opening quote is at text[open]; nullopt if unterminated.
std::optional<std::string> JinjaStringLiteral(std::string_view text, size_t open) {
  const char quote = text[open];
  std::string out;
  for (size_t i = open + 1; i < text.size(); ++i) {
    const char c = text[i];
    if (c == quote) return out;
    if (c == '\\' && i + 1 < text.size()) {
      const char e = text[++i];
      switch (e) {
        case 'n':
          out.push_back('\n');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'r':
          out.push_back('\r');
          break;
        default:
          out.push_back(e);
          break;
      }
      continue;
    }
    out.push_back(c);
  }
  return std::nullopt;
}

// The default system message a ChatML template inserts when the conversation has none, as in
// `{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n...' }}`.
std::optional<std::string> ChatMlDefaultSystem(std::string_view tmpl) {
  if (tmpl.find("!= 'system'") == std::string_view::npos &&
      tmpl.find("!= \"system\"") == std::string_view::npos) {
    return std::nullopt;
  }
  constexpr std::string_view kOpen = "<|im_start|>system";
  for (size_t at = tmpl.find(kOpen); at != std::string_view::npos; at = tmpl.find(kOpen, at + 1)) {
    if (at == 0 || (tmpl[at - 1] != '\'' && tmpl[at - 1] != '"')) continue;
    std::optional<std::string> lit = JinjaStringLiteral(tmpl, at - 1);
    if (!lit) continue;
    constexpr std::string_view kHead = "<|im_start|>system\n";
    constexpr std::string_view kTail = "<|im_end|>\n";
    const std::string_view s = *lit;
    if (s.size() >= kHead.size() + kTail.size() && s.substr(0, kHead.size()) == kHead &&
        s.substr(s.size() - kTail.size()) == kTail) {
      return std::string(s.substr(kHead.size(), s.size() - kHead.size() - kTail.size()));
    }
  }
  return std::nullopt;
}

std::string_view Trim(std::string_view s) {
  auto space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
  };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> tokens;
  std::vector<uint16_t> attrs;
  std::unordered_map<std::string, int32_t> token_to_id;

  // BPE pieces: every vocabulary text, merge side and merge result gets a piece id. A piece id
  // below tokens.size() is the id of the vocabulary token with that text.
  std::unordered_map<std::string, int32_t> piece_ids;
  std::array<int32_t, 256> byte_piece{};  // piece of the byte-level character of each byte
  struct Merge {
    int32_t rank;
    int32_t result;  // piece id of left+right
  };
  std::unordered_map<uint64_t, Merge> merges;  // (left piece << 32 | right piece) -> merge

  PreTokenizerKind pre_kind = PreTokenizerKind::kGpt2;
  std::string pre_name;
  bool ignore_merges = false;
  bool add_bos = false;
  int32_t bos = -1;
  int32_t eos = -1;
  std::unordered_set<int32_t> eog;
  // Control, user-defined and unknown tokens, longest text first (llama.cpp's order).
  std::vector<int32_t> special_tokens;

  ChatFormat chat_format = ChatFormat::kNone;
  std::string chat_template;
  std::optional<std::string> chatml_default_system;

  int32_t FindToken(std::string_view text) const {
    auto it = token_to_id.find(std::string(text));
    return it == token_to_id.end() ? -1 : it->second;
  }

  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeText(std::string_view text, std::vector<int32_t>* out) const;
};

// One word through the BPE merges: repeatedly merge the adjacent pair of lowest rank (leftmost
// first on ties), as llama.cpp's llm_tokenizer_bpe_session does.
void Tokenizer::Impl::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  const auto& bytes = internal::GetByteMapping();
  if (ignore_merges) {
    std::string encoded;
    for (unsigned char b : word) encoded += bytes.byte_to_utf8[b];
    if (int32_t id = FindToken(encoded); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  struct Symbol {
    int32_t piece;
    uint32_t begin;  // byte offset in word
    uint32_t size;   // bytes; 0 once merged into its left neighbour
    int32_t prev;
    int32_t next;
  };
  const int32_t n = static_cast<int32_t>(word.size());
  std::vector<Symbol> syms(n);
  for (int32_t i = 0; i < n; ++i) {
    syms[i] = {byte_piece[static_cast<unsigned char>(word[i])], static_cast<uint32_t>(i), 1, i - 1,
               i + 1 < n ? i + 1 : -1};
  }
  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t right;
    int32_t left_piece;
    int32_t right_piece;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint64_t key = (uint64_t{static_cast<uint32_t>(syms[left].piece)} << 32) |
                         static_cast<uint32_t>(syms[right].piece);
    auto it = merges.find(key);
    if (it == merges.end()) return;
    queue.push({it->second.rank, left, right, syms[left].piece, syms[right].piece});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i, i + 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = syms[c.left];
    Symbol& r = syms[c.right];
    // Stale: one side was merged away or has grown since the candidate was queued.
    if (l.size == 0 || r.size == 0 || l.piece != c.left_piece || r.piece != c.right_piece) continue;
    const uint64_t key =
        (uint64_t{static_cast<uint32_t>(l.piece)} << 32) | static_cast<uint32_t>(r.piece);
    l.piece = merges.at(key).result;
    l.size += r.size;
    r.size = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    consider(l.prev, c.left);
    consider(c.left, l.next);
  }
  const int32_t n_tokens = static_cast<int32_t>(tokens.size());
  for (int32_t i = 0; i >= 0 && i < n; i = syms[i].next) {
    const Symbol& s = syms[i];
    if (s.piece >= 0 && s.piece < n_tokens) {
      out->push_back(s.piece);
      continue;
    }
    // Not a vocabulary token: llama.cpp falls back to the single bytes of the byte-level text.
    std::string encoded;
    for (uint32_t k = s.begin; k < s.begin + s.size; ++k) {
      encoded += bytes.byte_to_utf8[static_cast<unsigned char>(word[k])];
    }
    for (char ch : encoded) {
      if (int32_t id = FindToken(std::string_view(&ch, 1)); id >= 0) out->push_back(id);
    }
  }
}

void Tokenizer::Impl::EncodeText(std::string_view text, std::vector<int32_t>* out) const {
  for (const std::string& word : internal::PreTokenize(text, pre_kind)) EncodeWord(word, out);
}

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::Create(const GgufFile& file) {
  auto context = [](const Status& s) { return s.WithContext("tokenizer"); };
  Vocab v;
  ASSIGN_OR_RETURN(std::string model, file.GetString("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return UnimplementedError("tokenizer: model '" + model +
                              "' is not supported (only byte-level BPE, 'gpt2')");
  }
  auto tokens = file.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return context(tokens.status());
  v.tokens = std::move(tokens).value();
  if (file.Find("tokenizer.ggml.token_type") != nullptr) {
    auto types = file.GetIntArray("tokenizer.ggml.token_type");
    if (!types.ok()) return context(types.status());
    v.token_types.assign(types->begin(), types->end());
  }
  auto merges = file.GetStringArray("tokenizer.ggml.merges");
  if (!merges.ok()) return context(merges.status());
  v.merges = std::move(merges).value();
  auto pre = file.GetString("tokenizer.ggml.pre");
  v.pre = pre.ok() ? *pre : "default";
  // llama.cpp's defaults for a 'gpt2' vocabulary, overridden by the metadata.
  v.bos_id = v.eos_id = 11;
  if (auto bos = file.GetInt("tokenizer.ggml.bos_token_id"); bos.ok()) {
    v.bos_id = static_cast<int32_t>(*bos);
  }
  if (auto eos = file.GetInt("tokenizer.ggml.eos_token_id"); eos.ok()) {
    v.eos_id = static_cast<int32_t>(*eos);
  }
  const auto n = static_cast<int64_t>(v.tokens.size());
  if (v.bos_id >= n) v.bos_id = -1;
  if (v.eos_id >= n) v.eos_id = -1;
  v.add_bos = v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "llama-v3";
  if (const GgufValue* add = file.Find("tokenizer.ggml.add_bos_token")) {
    if (auto b = add->AsBool()) v.add_bos = *b;
  }
  if (auto tmpl = file.GetString("tokenizer.chat_template"); tmpl.ok()) {
    v.chat_template = std::move(tmpl).value();
  }
  return CreateFromVocab(std::move(v));
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::CreateFromVocab(Vocab v) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  Impl& im = *t->impl_;
  const size_t n = v.tokens.size();
  if (n == 0) return InvalidArgumentError("tokenizer: empty vocabulary");
  if (n > 0x7FFFFFFF) return InvalidArgumentError("tokenizer: vocabulary too large");
  if (!v.token_types.empty() && v.token_types.size() != n) {
    return InvalidArgumentError("tokenizer: " + std::to_string(v.token_types.size()) +
                                " token types for " + std::to_string(n) + " tokens");
  }
  if (v.pre == "smollm") {
    im.pre_kind = PreTokenizerKind::kSmolLm;
  } else if (v.pre == "gpt2" || v.pre == "gpt-2") {
    im.pre_kind = PreTokenizerKind::kGpt2;
  } else if (v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "llama-v3") {
    im.pre_kind = PreTokenizerKind::kLlama3;
    im.ignore_merges = true;
  } else {
    return UnimplementedError("tokenizer: pre-tokenizer '" + v.pre +
                              "' is not supported (smollm, gpt2, llama-bpe)");
  }
  im.pre_name = v.pre;
  im.add_bos = v.add_bos;
  const auto in_range = [n](int32_t id) { return id >= 0 && static_cast<size_t>(id) < n; };
  im.bos = in_range(v.bos_id) ? v.bos_id : -1;
  im.eos = in_range(v.eos_id) ? v.eos_id : -1;

  im.tokens = std::move(v.tokens);
  im.attrs.resize(n, kAttrNormal);
  for (size_t i = 0; i < n; ++i) {
    if (!v.token_types.empty()) im.attrs[i] = AttrFromGgufType(v.token_types[i]);
    // llama.cpp renames empty tokens; the last of equal texts wins the text -> id lookup.
    if (im.tokens[i].empty()) im.tokens[i] = "[EMPTY_" + std::to_string(i) + "]";
    im.token_to_id[im.tokens[i]] = static_cast<int32_t>(i);
  }
  // Vocabulary texts take their token id as piece id; then merge sides and results follow.
  for (const auto& [text, id] : im.token_to_id) im.piece_ids.emplace(text, id);
  // Piece ids must not collide with token ids: shift extra pieces past n.
  int32_t next_piece = static_cast<int32_t>(n);
  auto piece = [&](const std::string& text) {
    auto [it, inserted] = im.piece_ids.try_emplace(text, next_piece);
    if (inserted) ++next_piece;
    return it->second;
  };
  const auto& bytes = internal::GetByteMapping();
  for (int b = 0; b < 256; ++b) im.byte_piece[b] = piece(bytes.byte_to_utf8[b]);
  for (size_t rank = 0; rank < v.merges.size(); ++rank) {
    const std::string& m = v.merges[rank];
    const size_t space = m.find(' ', 1);
    if (space == std::string::npos) continue;  // llama.cpp files it under ("", ""): never used
    const std::string left = m.substr(0, space);
    const std::string right = m.substr(space + 1);
    const int32_t lp = piece(left);
    const int32_t rp = piece(right);
    const int32_t result = piece(left + right);
    const uint64_t key = (uint64_t{static_cast<uint32_t>(lp)} << 32) | static_cast<uint32_t>(rp);
    im.merges.try_emplace(key, Impl::Merge{static_cast<int32_t>(rank), result});  // first wins
  }

  // Special tokens by text, as llama.cpp detects them.
  for (const auto& [text, id] : im.token_to_id) {
    const bool eot = OneOf(text, kEotTexts);
    const bool eom = OneOf(text, kEomTexts);
    const bool eog = OneOf(text, kEogTexts);
    const bool fim = OneOf(text, kFimTexts);
    const bool fim_eog = OneOf(text, kFimEogTexts);
    if (eot || eom || eog || fim || fim_eog) im.attrs[id] = kAttrControl;
    if (eot || eom || eog || fim_eog) im.eog.insert(id);
  }
  if (im.eos >= 0) im.eog.insert(im.eos);

  for (size_t i = 0; i < n; ++i) {
    if (im.attrs[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) {
      im.special_tokens.push_back(static_cast<int32_t>(i));
    }
  }
  // Same comparator and input order as llama.cpp, so equal-length tokens keep its order too.
  std::sort(im.special_tokens.begin(), im.special_tokens.end(),
            [&im](int32_t a, int32_t b) { return im.tokens[a].size() > im.tokens[b].size(); });

  im.chat_template = std::move(v.chat_template);
  const std::string& tmpl = im.chat_template;
  if (tmpl.empty()) {
    im.chat_format = ChatFormat::kNone;
  } else if (tmpl.find("<|im_start|>") != std::string::npos) {
    im.chat_format = ChatFormat::kChatMl;
    im.chatml_default_system = ChatMlDefaultSystem(tmpl);
  } else if (tmpl.find("<|start_header_id|>") != std::string::npos &&
             tmpl.find("<|end_header_id|>") != std::string::npos) {
    im.chat_format = ChatFormat::kLlama3;
  } else {
    im.chat_format = ChatFormat::kUnknown;
  }
  return t;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool parse_special,
                                       bool add_bos) const {
  const Impl& im = *impl_;
  std::vector<int32_t> out;
  if (add_bos && im.add_bos && im.bos >= 0) out.push_back(im.bos);
  if (text.empty()) return out;
  // Fragments: token >= 0 is a matched special token, else [begin, begin+size) of raw text.
  struct Fragment {
    int32_t token;
    size_t begin;
    size_t size;
  };
  std::vector<Fragment> frags{{-1, 0, text.size()}};
  std::vector<Fragment> next;
  for (int32_t id : im.special_tokens) {
    // Control and unknown tokens only when parsing specials; user-defined ones always.
    if (!parse_special && (im.attrs[id] & (kAttrControl | kAttrUnknown))) continue;
    const std::string_view needle = im.tokens[id];
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view hay = text.substr(f.begin, f.size);
      size_t from = 0;
      for (size_t at = hay.find(needle); at != std::string_view::npos;
           at = hay.find(needle, from)) {
        if (at > from) next.push_back({-1, f.begin + from, at - from});
        next.push_back({id, 0, 0});
        from = at + needle.size();
      }
      if (from < hay.size()) next.push_back({-1, f.begin + from, hay.size() - from});
    }
    frags.swap(next);
  }
  for (const Fragment& f : frags) {
    if (f.token >= 0) {
      out.push_back(f.token);
    } else {
      im.EncodeText(text.substr(f.begin, f.size), &out);
    }
  }
  return out;
}

std::string Tokenizer::TokenPiece(int32_t id, bool render_special) const {
  const Impl& im = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= im.tokens.size()) return {};
  const uint16_t attr = im.attrs[id];
  const std::string& text = im.tokens[id];
  if (attr & kAttrControl) return render_special ? text : std::string();
  if (attr & (kAttrUnknown | kAttrUserDefined)) return text;
  if (!(attr & kAttrNormal)) return {};  // byte, unused, undefined: nothing (as llama.cpp)
  // Byte-level inverse: each code point stands for one byte.
  const auto& bytes = internal::GetByteMapping();
  std::string out;
  out.reserve(text.size());
  for (uint32_t cpt : internal::DecodeUtf8Lenient(text)) {
    if (cpt < bytes.cpt_to_byte.size() && bytes.cpt_to_byte[cpt] >= 0) {
      out.push_back(static_cast<char>(bytes.cpt_to_byte[cpt]));
      continue;
    }
    // Not a byte-level character: llama.cpp writes a marker with the bytes and the token.
    std::string utf8;
    internal::AppendUtf8(cpt, &utf8);
    out += "[UNK_BYTE_0x";
    static const char kHex[] = "0123456789abcdef";
    for (unsigned char c : utf8) {
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
    out += text + "]";
  }
  return out;
}

Result<std::string> Tokenizer::Decode(std::span<const int32_t> ids, bool render_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= impl_->tokens.size()) {
      return InvalidArgumentError("detokenize: token id " + std::to_string(id) +
                                  " out of range [0, " + std::to_string(impl_->tokens.size()) +
                                  ")");
    }
    out += TokenPiece(id, render_special);
  }
  return out;
}

Result<std::string> Tokenizer::ApplyChatTemplate(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt) const {
  const Impl& im = *impl_;
  std::string out;
  switch (im.chat_format) {
    case ChatFormat::kNone:
      return NotFoundError("chat template: the model has no tokenizer.chat_template");
    case ChatFormat::kUnknown:
      return InvalidArgumentError(
          "chat template: unrecognised template (kvtier formats ChatML and llama-3); starts with "
          "'" +
          im.chat_template.substr(0, 60) + "'");
    case ChatFormat::kChatMl:
      if (im.chatml_default_system && !messages.empty() && messages[0].role != "system") {
        out += "<|im_start|>system\n" + *im.chatml_default_system + "<|im_end|>\n";
      }
      for (const ChatMessage& m : messages) {
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::kLlama3:
      for (const ChatMessage& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        out += Trim(m.content);
        out += "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
  }
  return InternalError("chat template: bad format");
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->tokens.size()); }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::IsEndOfGeneration(int32_t id) const { return impl_->eog.count(id) > 0; }
std::string_view Tokenizer::pre_tokenizer() const { return impl_->pre_name; }
std::string_view Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->tokens.size()) return {};
  return impl_->tokens[id];
}

}  // namespace kvtier::model
