// Reads the real SmolLM2-135M-Instruct.Q4_1.gguf and checks facts about it (label: model).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/gguf.h"
#include "tests/support/test_support.h"

namespace kvtier::model {
namespace {

constexpr uint32_t kGgmlF32 = 0;
constexpr uint32_t kGgmlQ4_1 = 3;
constexpr uint32_t kGgmlQ8_0 = 8;

class GgufModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto r = GgufFile::Open(kvtier::testing::ModelPath());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    file_ = std::move(r).value().release();
  }
  static void TearDownTestSuite() {
    delete file_;
    file_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(file_, nullptr); }

  static const GgufFile* file_;
};

const GgufFile* GgufModelTest::file_ = nullptr;

TEST_F(GgufModelTest, Header) {
  EXPECT_EQ(file_->version(), 3u);
  EXPECT_EQ(file_->alignment(), 32u);
}

TEST_F(GgufModelTest, Hyperparameters) {
  const GgufFile& f = *file_;
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetInt("llama.block_count"), 30);
  EXPECT_EQ(*f.GetInt("llama.embedding_length"), 576);
  EXPECT_EQ(*f.GetInt("llama.attention.head_count"), 9);
  EXPECT_EQ(*f.GetInt("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(*f.GetInt("llama.feed_forward_length"), 1536);
  EXPECT_EQ(*f.GetInt("llama.context_length"), 8192);
  EXPECT_EQ(*f.GetFloat("llama.rope.freq_base"), 100000.0);
  EXPECT_NEAR(*f.GetFloat("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);
}

TEST_F(GgufModelTest, Tokenizer) {
  const GgufFile& f = *file_;
  EXPECT_EQ(*f.GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*f.GetString("tokenizer.ggml.pre"), "smollm");
  auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  ASSERT_EQ(tokens->size(), 49152u);
  EXPECT_EQ((*tokens)[0], "<|endoftext|>");
  EXPECT_EQ((*tokens)[1], "<|im_start|>");
  EXPECT_EQ((*tokens)[2], "<|im_end|>");
  auto merges = f.GetStringArray("tokenizer.ggml.merges");
  ASSERT_TRUE(merges.ok()) << merges.status().ToString();
  EXPECT_GT(merges->size(), 40000u);
  auto types = f.GetIntArray("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok()) << types.status().ToString();
  EXPECT_EQ(types->size(), 49152u);
}

TEST_F(GgufModelTest, Tensors) {
  const GgufFile& f = *file_;
  // 30 blocks of 9 tensors (attn_norm, attn_q/k/v/output, ffn_norm, ffn_gate/up/down) plus
  // token_embd and output_norm; the output projection is tied to token_embd.
  EXPECT_EQ(f.tensors().size(), 30u * 9 + 2);
  EXPECT_EQ(f.FindTensor("output.weight"), nullptr);

  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->ggml_type, kGgmlQ8_0);
  EXPECT_TRUE(embd->supported);
  EXPECT_EQ(embd->dtype, kernels::DType::kQ8_0);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd->size_bytes, 576u / 32 * 34 * 49152);

  const GgufTensorInfo* q = f.FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->ggml_type, kGgmlQ4_1);
  EXPECT_EQ(q->dtype, kernels::DType::kQ4_1);
  EXPECT_EQ(q->dims, (std::vector<int64_t>{576, 576}));
  EXPECT_EQ(q->size_bytes, 576u / 32 * 20 * 576);

  const GgufTensorInfo* k = f.FindTensor("blk.29.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->dims, (std::vector<int64_t>{576, 192}));
  const GgufTensorInfo* down = f.FindTensor("blk.7.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->dims, (std::vector<int64_t>{1536, 576}));
  const GgufTensorInfo* norm = f.FindTensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->ggml_type, kGgmlF32);
  EXPECT_EQ(norm->dims, (std::vector<int64_t>{576}));

  for (const GgufTensorInfo& t : f.tensors()) {
    EXPECT_TRUE(t.supported) << t.name;
    EXPECT_EQ(t.offset % f.alignment(), 0u) << t.name;
  }
}

}  // namespace
}  // namespace kvtier::model
