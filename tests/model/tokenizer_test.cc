// Unit tests of the tokenizer on hand-written cases and a tiny in-memory vocabulary.
#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/internal/pretokenize.h"
#include "model/internal/unicode.h"

namespace kvtier::model {
namespace {

using internal::PreTokenize;
using internal::PreTokenizerKind;
using Words = std::vector<std::string>;

TEST(PreTokenizeTest, SmolLmSplitsEveryDigit) {
  EXPECT_EQ(PreTokenize("I'm 12 years", PreTokenizerKind::kSmolLm),
            (Words{"I", "'m", " ", "1", "2", " years"}));
  EXPECT_EQ(PreTokenize("x=3.14", PreTokenizerKind::kSmolLm),
            (Words{"x", "=", "3", ".", "1", "4"}));
  // Non-ASCII numbers too (Arabic-Indic digits, superscript two, Roman numeral twelve).
  EXPECT_EQ(PreTokenize("\xd9\xa1\xd9\xa2\xc2\xb2\xe2\x85\xab", PreTokenizerKind::kSmolLm),
            (Words{"\xd9\xa1", "\xd9\xa2", "\xc2\xb2", "\xe2\x85\xab"}));
  // The digit cut ends the whitespace segment, so the look-ahead cannot see the digit.
  EXPECT_EQ(PreTokenize("a  1", PreTokenizerKind::kSmolLm), (Words{"a", "  ", "1"}));
  EXPECT_EQ(PreTokenize("a  1", PreTokenizerKind::kGpt2), (Words{"a", " ", " 1"}));
}

TEST(PreTokenizeTest, Gpt2Contractions) {
  EXPECT_EQ(PreTokenize("they're we've I'll he'd it's don't I'm", PreTokenizerKind::kGpt2),
            (Words{"they", "'re", " we", "'ve", " I", "'ll", " he", "'d", " it", "'s", " don", "'t",
                   " I", "'m"}));
  // Case-sensitive in GPT-2: "'S" is punctuation followed by a letter run.
  EXPECT_EQ(PreTokenize("IT'S", PreTokenizerKind::kGpt2), (Words{"IT", "'", "S"}));
  EXPECT_EQ(PreTokenize("'x", PreTokenizerKind::kGpt2), (Words{"'", "x"}));
}

TEST(PreTokenizeTest, Gpt2WhitespaceRuns) {
  // \s+(?!\S): a run before a word leaves its last space to the word.
  EXPECT_EQ(PreTokenize("a  b", PreTokenizerKind::kGpt2), (Words{"a", " ", " b"}));
  EXPECT_EQ(PreTokenize("a   \n b", PreTokenizerKind::kGpt2), (Words{"a", "   \n", " b"}));
  // A tab is not the optional space of ` ?\p{L}+`: it stands alone.
  EXPECT_EQ(PreTokenize("hello\t\tworld", PreTokenizerKind::kGpt2),
            (Words{"hello", "\t", "\t", "world"}));
  // Trailing and leading runs.
  EXPECT_EQ(PreTokenize("a  ", PreTokenizerKind::kGpt2), (Words{"a", "  "}));
  EXPECT_EQ(PreTokenize("  a", PreTokenizerKind::kGpt2), (Words{" ", " a"}));
  // "\r\n" before a letter: the \s+(?!\S) match backs off to "\r", then "\n" stands alone.
  EXPECT_EQ(PreTokenize("x\r\ny", PreTokenizerKind::kGpt2), (Words{"x", "\r", "\n", "y"}));
  EXPECT_EQ(PreTokenize("   ", PreTokenizerKind::kGpt2), (Words{"   "}));
}

TEST(PreTokenizeTest, Gpt2PunctuationAndScripts) {
  EXPECT_EQ(PreTokenize("foo(bar, \"baz\")!!", PreTokenizerKind::kGpt2),
            (Words{"foo", "(", "bar", ",", " \"", "baz", "\")!!"}));
  // Cyrillic letters with a space; CJK letters; a combining mark is not a letter.
  EXPECT_EQ(
      PreTokenize("\xd0\xbf\xd1\x80\xd0\xb8 \xd0\xb2\xd0\xb5\xd1\x82", PreTokenizerKind::kGpt2),
      (Words{"\xd0\xbf\xd1\x80\xd0\xb8", " \xd0\xb2\xd0\xb5\xd1\x82"}));
  EXPECT_EQ(PreTokenize("e\xcc\x81t", PreTokenizerKind::kGpt2), (Words{"e", "\xcc\x81", "t"}));
}

TEST(PreTokenizeTest, InvalidUtf8BecomesReplacementCharacter) {
  EXPECT_EQ(PreTokenize("a\xff"
                        "b",
                        PreTokenizerKind::kGpt2),
            (Words{"a", "\xef\xbf\xbd", "b"}));
  // Truncated 3-byte sequence at the end: each byte is replaced on its own.
  EXPECT_EQ(PreTokenize("\xe4\xb8", PreTokenizerKind::kGpt2), (Words{"\xef\xbf\xbd\xef\xbf\xbd"}));
}

TEST(PreTokenizeTest, Llama3Pattern) {
  EXPECT_EQ(PreTokenize("12345", PreTokenizerKind::kLlama3), (Words{"123", "45"}));
  EXPECT_EQ(PreTokenize("IT'S ok", PreTokenizerKind::kLlama3), (Words{"IT", "'S", " ok"}));
  EXPECT_EQ(PreTokenize("!!\n\nx", PreTokenizerKind::kLlama3), (Words{"!!\n\n", "x"}));
  EXPECT_EQ(PreTokenize("a \n\n b", PreTokenizerKind::kLlama3), (Words{"a", " \n\n", " b"}));
  EXPECT_EQ(PreTokenize("(hello", PreTokenizerKind::kLlama3), (Words{"(hello"}));
}

TEST(UnicodeTest, Categories) {
  using internal::CodepointFlags;
  EXPECT_TRUE(internal::IsLetter(CodepointFlags('a')));
  EXPECT_TRUE(internal::IsNumber(CodepointFlags('7')));
  EXPECT_TRUE(internal::IsWhitespace(CodepointFlags(0x3000)));
  EXPECT_FALSE(internal::IsWhitespace(CodepointFlags(0x1C)));  // not White_Space
  EXPECT_TRUE(internal::IsLetter(CodepointFlags(0x4E2D)));     // CJK
  EXPECT_EQ(CodepointFlags(0x0378), internal::kUndefined);     // unassigned
  EXPECT_EQ(CodepointFlags(0x110000), internal::kUndefined);
  EXPECT_STREQ(internal::kUnicodeVersion, "15.1.0");
}

// A tiny vocabulary: 3 special tokens, the 256 byte-level characters, a few merges.
Tokenizer::Vocab TinyVocab() {
  Tokenizer::Vocab v;
  v.tokens = {"<|im_start|>", "<|im_end|>", "<user>", "[X]", "[X][Y]"};
  v.token_types = {3, 3, 4, 3, 3};
  const auto& bytes = internal::GetByteMapping();
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(bytes.byte_to_utf8[b]);
    v.token_types.push_back(1);
  }
  for (const char* t : {"ab", "bc", "abc", "aa",
                        "\xc4\xa0"
                        "a"}) {  // \xc4\xa0 = byte-level space
    v.tokens.push_back(t);
    v.token_types.push_back(1);
  }
  v.merges = {"b c", "a b", "a bc", "a a", "\xc4\xa0 a"};
  v.pre = "gpt2";
  return v;
}

constexpr int32_t kFirstByte = 5;
int32_t ByteId(unsigned char b) { return kFirstByte + b; }
constexpr int32_t kAb = 261, kBc = 262, kAbc = 263, kAa = 264, kSpaceA = 265;

std::unique_ptr<Tokenizer> MakeTiny() {
  auto t = Tokenizer::CreateFromVocab(TinyVocab());
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

TEST(TokenizerTest, BpeMergesByRank) {
  auto t = MakeTiny();
  ASSERT_EQ(t->TokenText(kAb), "ab");
  // "b c" (rank 0) beats "a b" (rank 1), then "a bc" (rank 2).
  EXPECT_EQ(t->Encode("abc", false), (std::vector<int32_t>{kAbc}));
  EXPECT_EQ(t->Encode("ab", false), (std::vector<int32_t>{kAb}));
  EXPECT_EQ(t->Encode("bc", false), (std::vector<int32_t>{kBc}));
  // Equal ranks merge leftmost first.
  EXPECT_EQ(t->Encode("aaa", false), (std::vector<int32_t>{kAa, ByteId('a')}));
  // A word boundary stops merges; the space joins the next word.
  EXPECT_EQ(t->Encode("ab a", false), (std::vector<int32_t>{kAb, kSpaceA}));
  // No merge: one token per byte, including multi-byte characters.
  EXPECT_EQ(t->Encode("\xc3\xa9", false), (std::vector<int32_t>{ByteId(0xC3), ByteId(0xA9)}));
}

TEST(TokenizerTest, SpecialTokens) {
  auto t = MakeTiny();
  EXPECT_EQ(t->Encode("<|im_start|>ab<|im_end|>", true), (std::vector<int32_t>{0, kAb, 1}));
  // Without special parsing the markers are plain text ('<' '|' ...), but the user-defined
  // token is still matched.
  const auto plain = t->Encode("<|im_start|>", false);
  ASSERT_EQ(plain.size(), 12u);
  EXPECT_EQ(plain[0], ByteId('<'));
  EXPECT_EQ(t->Encode("a<user>b", false), (std::vector<int32_t>{ByteId('a'), 2, ByteId('b')}));
  // Longest special token first.
  EXPECT_EQ(t->Encode("[X][Y][X]", true), (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(t->Encode("", true), (std::vector<int32_t>{}));
}

TEST(TokenizerTest, DecodeBytesAndSpecials) {
  auto t = MakeTiny();
  const std::vector<int32_t> e_acute = {ByteId(0xC3), ByteId(0xA9)};
  EXPECT_EQ(t->Decode(e_acute).value(), "\xc3\xa9");
  // A partial UTF-8 sequence comes out as raw bytes (streaming).
  EXPECT_EQ(t->TokenPiece(ByteId(0xC3)), "\xc3");
  EXPECT_EQ(t->TokenPiece(kSpaceA), " a");
  EXPECT_EQ(t->TokenPiece(ByteId('\n')), "\n");
  const std::vector<int32_t> with_special = {0, kAb, 1, 2};
  EXPECT_EQ(t->Decode(with_special).value(), "ab<user>");
  EXPECT_EQ(t->Decode(with_special, true).value(), "<|im_start|>ab<|im_end|><user>");
  const std::vector<int32_t> bad = {9999};
  EXPECT_FALSE(t->Decode(bad).ok());
  // Invalid UTF-8 is encoded as U+FFFD, as llama.cpp does.
  EXPECT_EQ(t->Decode(t->Encode("hello \xff world", false)).value(), "hello \xef\xbf\xbd world");
}

TEST(TokenizerTest, EndOfGenerationAndErrors) {
  auto t = MakeTiny();
  EXPECT_TRUE(t->IsEndOfGeneration(1));  // <|im_end|>
  EXPECT_FALSE(t->IsEndOfGeneration(0));
  Tokenizer::Vocab v = TinyVocab();
  v.pre = "qwen2";
  EXPECT_FALSE(Tokenizer::CreateFromVocab(v).ok());
  v = TinyVocab();
  v.token_types.pop_back();
  EXPECT_FALSE(Tokenizer::CreateFromVocab(v).ok());
}

TEST(TokenizerTest, ChatTemplates) {
  Tokenizer::Vocab v = TinyVocab();
  v.chat_template =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\nYou are kind.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
      "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  auto chatml = std::move(Tokenizer::CreateFromVocab(v)).value();
  EXPECT_EQ(chatml->ApplyChatTemplate({{"user", "Hi"}}).value(),
            "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(chatml->ApplyChatTemplate({{"system", "S"}, {"user", "U"}}, false).value(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
  // Escaped newlines in the literal (as Qwen's template writes them).
  v.chat_template =
      "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nBe brief.<|im_end|>\\n' "
      "}}{%- endif %}<|im_start|>";
  auto escaped = std::move(Tokenizer::CreateFromVocab(v)).value();
  EXPECT_EQ(escaped->ApplyChatTemplate({{"user", "x"}}, false).value(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n");

  v.chat_template = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}";
  auto llama3 = std::move(Tokenizer::CreateFromVocab(v)).value();
  EXPECT_EQ(llama3->ApplyChatTemplate({{"user", " Hi \n"}}).value(),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");

  v.chat_template = "{{ bos_token }}[INST] {{ message }} [/INST]";
  auto unknown = std::move(Tokenizer::CreateFromVocab(v)).value();
  auto r = unknown->ApplyChatTemplate({{"user", "x"}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unrecognised"), std::string::npos);
  v.chat_template.clear();
  auto none = std::move(Tokenizer::CreateFromVocab(v)).value();
  EXPECT_EQ(none->ApplyChatTemplate({{"user", "x"}}).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvtier::model
