// The tokenizer on the real model file, against llama.cpp's ids for the same texts
// (tests/model/data/tokenize_expected.json, written by bench/compare_tokenize.py
// --write-expected from bench/data/tokenize_corpus.jsonl).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "tests/support/test_support.h"

namespace kvtier::model {
namespace {

std::filesystem::path ExpectedPath() {
  return std::filesystem::path(__FILE__).parent_path() / "data" / "tokenize_expected.json";
}

class TokenizerModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto file = GgufFile::Open(kvtier::testing::ModelPath());
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    file_ = std::move(file).value().release();
    auto tok = Tokenizer::Create(*file_);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tok_ = std::move(tok).value().release();
    std::ifstream in(ExpectedPath());
    ASSERT_TRUE(in) << "cannot open " << ExpectedPath();
    expected_ = new nlohmann::json(nlohmann::json::parse(in));
  }
  static void TearDownTestSuite() {
    delete expected_;
    delete tok_;
    delete file_;
  }
  void SetUp() override { ASSERT_NE(tok_, nullptr); }

  static inline GgufFile* file_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
  static inline nlohmann::json* expected_ = nullptr;
};

TEST_F(TokenizerModelTest, Metadata) {
  EXPECT_EQ(tok_->vocab_size(), 49152);
  EXPECT_EQ(tok_->pre_tokenizer(), "smollm");
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->TokenText(1), "<|im_start|>");
  // llama.cpp's end-of-generation set for this file: <|endoftext|>, <|im_end|>, <reponame>.
  std::vector<int32_t> eog;
  for (int32_t id = 0; id < tok_->vocab_size(); ++id) {
    if (tok_->IsEndOfGeneration(id)) eog.push_back(id);
  }
  EXPECT_EQ(eog, (std::vector<int32_t>{0, 2, 4}));
  // add_bos_token is false in the file.
  EXPECT_EQ(tok_->Encode("hi", false, /*add_bos=*/true), tok_->Encode("hi", false));
}

TEST_F(TokenizerModelTest, IdenticalToLlamaCpp) {
  const auto& cases = (*expected_)["cases"];
  ASSERT_GE(cases.size(), 220u);
  size_t same = 0;
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    const auto want_special = c["special"].get<std::vector<int32_t>>();
    const auto want_plain = c["plain"].get<std::vector<int32_t>>();
    const auto special = tok_->Encode(text, /*parse_special=*/true);
    const auto plain = tok_->Encode(text, /*parse_special=*/false);
    EXPECT_EQ(special, want_special) << "special=true: " << text;
    EXPECT_EQ(plain, want_plain) << "special=false: " << text;
    auto decoded = tok_->Decode(plain);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, text) << "round trip";
    // Rendering specials gives the text back from the special-parsed ids too.
    EXPECT_EQ(tok_->Decode(special, /*render_special=*/true).value(), text);
    same += (special == want_special && plain == want_plain);
  }
  std::printf("%zu/%zu texts identical to llama.cpp (%.2f%%)\n", same, cases.size(),
              100.0 * static_cast<double>(same) / static_cast<double>(cases.size()));
}

TEST_F(TokenizerModelTest, ChatMlFromTheFile) {
  const std::string sys =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n";
  // One message: the template's default system message comes first.
  auto one = tok_->ApplyChatTemplate({{"user", "Hello! What is the capital of France?"}});
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(*one, sys +
                      "<|im_start|>user\nHello! What is the capital of France?<|im_end|>\n"
                      "<|im_start|>assistant\n");
  // Three messages with a system message: no default.
  const std::vector<ChatMessage> three = {{"system", "You are a terse assistant."},
                                          {"user", "Name three primes."},
                                          {"assistant", "2, 3, 5."}};
  auto three_text = tok_->ApplyChatTemplate(three, /*add_generation_prompt=*/false);
  ASSERT_TRUE(three_text.ok());
  EXPECT_EQ(*three_text,
            "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
            "<|im_start|>user\nName three primes.<|im_end|>\n"
            "<|im_start|>assistant\n2, 3, 5.<|im_end|>\n");

  // And every rendering equals the template rendered by Jinja2 (written with the ids).
  const auto& chats = (*expected_)["chat"];
  ASSERT_EQ(chats.size(), 4u);
  for (const auto& c : chats) {
    std::vector<ChatMessage> msgs;
    for (const auto& m : c["messages"]) {
      msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    auto got = tok_->ApplyChatTemplate(msgs, c["add_generation_prompt"].get<bool>());
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, c["text"].get<std::string>());
  }
  // The special tokens of a rendered chat encode as single control tokens.
  const auto ids = tok_->Encode(*one, /*parse_special=*/true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);   // <|im_start|>
  EXPECT_EQ(ids.back(), 198);  // "\n" after "assistant"
}

}  // namespace
}  // namespace kvtier::model
