// The forward pass of a tiny random-weight llama model (written with GgufWriter) against a naive
// double-precision transformer written here from the architecture's definition.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cache/page_pool.h"
#include "kernels/dtype.h"
#include "model/gguf_writer.h"
#include "model/model.h"
#include "model/random_model.h"
#include "tests/support/test_support.h"

namespace kvtier::model {
namespace {

using kernels::DType;

struct TinyShape {
  int dim = 64, n_heads = 4, n_kv_heads = 2, ffn = 128, n_layers = 2;
  float rope_base = 10000.0f, eps = 1e-5f;
};

std::string WriteTinyModel(const TinyShape& s, DType wtype, DType embd_type, uint32_t seed) {
  RandomModelShape shape;
  shape.n_layers = s.n_layers;
  shape.dim = s.dim;
  shape.n_heads = s.n_heads;
  shape.n_kv_heads = s.n_kv_heads;
  shape.ffn_dim = s.ffn;
  shape.vocab_size = 257;
  shape.context_length = 256;
  shape.rope_freq_base = s.rope_base;
  shape.rms_eps = s.eps;
  shape.weight_type = wtype;
  shape.embd_type = embd_type;
  const std::string path = testing::MakeTempDir("kvtier_tiny_") + "/tiny.gguf";
  Status st = WriteRandomLlamaGguf(shape, seed, path);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return path;
}

// ---- The reference: a plain double-precision llama forward pass. ----------------------------

std::vector<double> Dequant(const kernels::WeightView& w) {
  std::vector<float> row(w.cols);
  std::vector<double> out(w.rows * w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    kernels::DequantizeRow(w.type, static_cast<const uint8_t*>(w.data) + r * w.row_bytes,
                           row.data(), w.cols);
    for (int64_t c = 0; c < w.cols; ++c) out[r * w.cols + c] = row[c];
  }
  return out;
}

std::vector<double> MatVec(const std::vector<double>& w, int64_t rows, int64_t cols,
                           const std::vector<double>& x) {
  std::vector<double> y(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) y[r] += w[r * cols + c] * x[c];
  }
  return y;
}

std::vector<double> Norm(const std::vector<double>& x, const std::vector<float>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * w[i];
  return out;
}

void Rope(std::vector<double>& x, int n_heads, int hd, int pos, double base) {
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < hd / 2; ++i) {
      const double theta = pos * std::pow(base, -2.0 * i / hd);
      const double a = x[h * hd + 2 * i], b = x[h * hd + 2 * i + 1];
      x[h * hd + 2 * i] = a * std::cos(theta) - b * std::sin(theta);
      x[h * hd + 2 * i + 1] = a * std::sin(theta) + b * std::cos(theta);
    }
  }
}

// Logits [n][vocab] for tokens at positions 0..n-1.
std::vector<std::vector<double>> ReferenceLogits(const Model& m, const std::vector<int32_t>& ids) {
  const ModelConfig& c = m.config();
  const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  std::vector<double> embd = Dequant(m.token_embd());
  std::vector<double> out_w = Dequant(m.output());
  struct L {
    std::vector<double> q, k, v, o, g, u, d;
  };
  std::vector<L> ls(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = m.layer(l);
    ls[l] = {Dequant(w.wq), Dequant(w.wk),     Dequant(w.wv),   Dequant(w.wo),
             Dequant(w.w_gate), Dequant(w.w_up), Dequant(w.w_down)};
  }
  std::vector<std::vector<std::vector<double>>> keys(c.n_layers), vals(c.n_layers);
  std::vector<std::vector<double>> logits;
  for (size_t t = 0; t < ids.size(); ++t) {
    std::vector<double> x(embd.begin() + ids[t] * c.dim, embd.begin() + (ids[t] + 1) * c.dim);
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = m.layer(l);
      std::vector<double> h = Norm(x, w.attn_norm, c.rms_eps);
      std::vector<double> q = MatVec(ls[l].q, c.dim, c.dim, h);
      std::vector<double> k = MatVec(ls[l].k, c.kv_dim(), c.dim, h);
      std::vector<double> v = MatVec(ls[l].v, c.kv_dim(), c.dim, h);
      Rope(q, c.n_heads, hd, static_cast<int>(t), c.rope_freq_base);
      Rope(k, c.n_kv_heads, hd, static_cast<int>(t), c.rope_freq_base);
      keys[l].push_back(k);
      vals[l].push_back(v);
      std::vector<double> attn(c.dim, 0.0);
      for (int head = 0; head < c.n_heads; ++head) {
        const int kvh = head / group;
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += q[head * hd + i] * keys[l][j][kvh * hd + i];
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (size_t j = 0; j <= t; ++j) {
          for (int i = 0; i < hd; ++i) attn[head * hd + i] += s[j] / sum * vals[l][j][kvh * hd + i];
        }
      }
      std::vector<double> o = MatVec(ls[l].o, c.dim, c.dim, attn);
      for (int i = 0; i < c.dim; ++i) x[i] += o[i];
      h = Norm(x, w.ffn_norm, c.rms_eps);
      std::vector<double> g = MatVec(ls[l].g, c.ffn_dim, c.dim, h);
      std::vector<double> u = MatVec(ls[l].u, c.ffn_dim, c.dim, h);
      for (int i = 0; i < c.ffn_dim; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      std::vector<double> d = MatVec(ls[l].d, c.dim, c.ffn_dim, g);
      for (int i = 0; i < c.dim; ++i) x[i] += d[i];
    }
    logits.push_back(MatVec(out_w, c.vocab_size, c.dim, Norm(x, m.output_norm(), c.rms_eps)));
  }
  return logits;
}

// ||a - b|| / ||b|| over one row.
double RelErr(const float* a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

class ForwardTest : public ::testing::Test {
 protected:
  void Load(DType wtype, DType embd_type) {
    path_ = WriteTinyModel(shape_, wtype, embd_type, 1234);
    auto m = Model::Load(path_);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(m).value();
    auto pool = cache::PagePool::Create(
        {16, model_->config().n_kv_heads, model_->config().head_dim}, 64ull << 20);
    ASSERT_TRUE(pool.ok());
    pool_ = std::move(pool).value();
  }
  void TearDown() override {
    if (!path_.empty()) std::filesystem::remove_all(std::filesystem::path(path_).parent_path());
  }

  std::vector<int32_t> Tokens(int n) {
    std::vector<int32_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = (i * 37 + 11) % 256;
    return ids;
  }

  TinyShape shape_;
  std::string path_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<cache::PagePool> pool_;
};

TEST_F(ForwardTest, ConfigReadFromFile) {
  Load(DType::kF32, DType::kF32);
  const ModelConfig& c = model_->config();
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.vocab_size, 257);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(model_->fingerprint().size(), 64u);
}

TEST_F(ForwardTest, F32WeightsMatchDoubleReference) {
  Load(DType::kF32, DType::kF32);
  kernels::ThreadPool threads(2);
  ForwardPass fwd(*model_, threads);
  const std::vector<int32_t> ids = Tokens(40);  // 3 pages, the last one partial
  cache::SequenceKv seq(*pool_, model_->config().n_layers);
  ASSERT_TRUE(seq.Reserve(ids.size()).ok());
  std::vector<float> logits;
  ASSERT_TRUE(fwd.Run(ids, 0, {pool_->view(), seq.page_tables()}, LogitsMode::kAll, &logits).ok());
  const auto ref = ReferenceLogits(*model_, ids);
  const int vocab = model_->config().vocab_size;
  for (size_t t = 0; t < ids.size(); ++t) {
    // f16 KV storage bounds the agreement; a wrong RoPE, mask or GQA mapping is O(1).
    EXPECT_LT(RelErr(logits.data() + t * vocab, ref[t]), 5e-3) << "position " << t;
  }
}

TEST_F(ForwardTest, QuantizedWeightsMatchReferenceOnDequantizedWeights) {
  for (DType wt : {DType::kQ4_1, DType::kQ4_0, DType::kQ8_0, DType::kF16, DType::kBF16}) {
    Load(wt, DType::kQ8_0);
    kernels::ThreadPool threads(2);
    ForwardPass fwd(*model_, threads);
    const std::vector<int32_t> ids = Tokens(20);
    cache::SequenceKv seq(*pool_, model_->config().n_layers);
    ASSERT_TRUE(seq.Reserve(ids.size()).ok());
    std::vector<float> logits;
    ASSERT_TRUE(
        fwd.Run(ids, 0, {pool_->view(), seq.page_tables()}, LogitsMode::kAll, &logits).ok());
    const auto ref = ReferenceLogits(*model_, ids);
    const int vocab = model_->config().vocab_size;
    double worst = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      worst = std::max(worst, RelErr(logits.data() + t * vocab, ref[t]));
    }
    // Activations are quantized to 8 bits inside the integer kernels.
    EXPECT_LT(worst, 4e-2) << kernels::GetDTypeInfo(wt).name;
    TearDown();
  }
}

// set_matmul_acts(kF32): every matmul of the pass (QKV, output projection, FFN, logits) reads
// float activations, so quantized weights match the double reference on their dequantized
// values as closely as float weights do (f16 KV bounds it); with kQ8 they are ~30x further.
TEST_F(ForwardTest, FloatActivationsMatchReferenceOnDequantizedWeights) {
  for (DType wt : {DType::kQ4_1, DType::kQ4_0, DType::kQ8_0}) {
    Load(wt, DType::kQ8_0);
    kernels::ThreadPool threads(2);
    const std::vector<int32_t> ids = Tokens(20);
    const auto ref = ReferenceLogits(*model_, ids);
    const int vocab = model_->config().vocab_size;
    double worst[2] = {0, 0};
    for (int f32 = 0; f32 < 2; ++f32) {
      ForwardPass fwd(*model_, threads);
      fwd.set_matmul_acts(f32 ? kernels::MatMulActs::kF32 : kernels::MatMulActs::kQ8);
      EXPECT_EQ(fwd.matmul_acts(), f32 ? kernels::MatMulActs::kF32 : kernels::MatMulActs::kQ8);
      cache::SequenceKv seq(*pool_, model_->config().n_layers);
      ASSERT_TRUE(seq.Reserve(ids.size()).ok());
      std::vector<float> logits;
      ASSERT_TRUE(
          fwd.Run(ids, 0, {pool_->view(), seq.page_tables()}, LogitsMode::kAll, &logits).ok());
      for (size_t t = 0; t < ids.size(); ++t) {
        worst[f32] = std::max(worst[f32], RelErr(logits.data() + t * vocab, ref[t]));
      }
    }
    // Measured: f32 6-8e-4, q8 2.3-2.7e-2.
    EXPECT_LT(worst[1], 2e-3) << kernels::GetDTypeInfo(wt).name;
    EXPECT_GT(worst[0], 10 * worst[1]) << kernels::GetDTypeInfo(wt).name;
    TearDown();
  }
}

TEST_F(ForwardTest, IncrementalBatchesMatchOneBatch) {
  Load(DType::kQ4_1, DType::kQ8_0);
  kernels::ThreadPool threads(2);
  const std::vector<int32_t> ids = Tokens(45);
  const int vocab = model_->config().vocab_size;

  ForwardPass whole(*model_, threads);
  cache::SequenceKv a(*pool_, model_->config().n_layers);
  ASSERT_TRUE(a.Reserve(ids.size()).ok());
  std::vector<float> want;
  ASSERT_TRUE(whole.Run(ids, 0, {pool_->view(), a.page_tables()}, LogitsMode::kLast, &want).ok());
  ASSERT_EQ(want.size(), static_cast<size_t>(vocab));

  ForwardPass small(*model_, threads, /*max_batch_tokens=*/7);
  cache::SequenceKv b(*pool_, model_->config().n_layers);
  std::vector<float> got;
  const std::span<const int32_t> all(ids);
  size_t done = 0;
  for (size_t step : {17u, 1u, 1u, 26u}) {
    ASSERT_TRUE(b.Reserve(done + step).ok());
    ASSERT_TRUE(small
                    .Run(all.subspan(done, step), static_cast<int32_t>(done),
                         {pool_->view(), b.page_tables()}, LogitsMode::kLast, &got)
                    .ok());
    done += step;
  }
  std::vector<double> ref(want.begin(), want.end());
  EXPECT_LT(RelErr(got.data(), ref), 2e-3);
  EXPECT_EQ(std::max_element(got.begin(), got.end()) - got.begin(),
            std::max_element(want.begin(), want.end()) - want.begin());
}

TEST_F(ForwardTest, PagePlacementDoesNotChangeResults) {
  Load(DType::kQ4_1, DType::kQ8_0);
  kernels::ThreadPool threads(2);
  ForwardPass fwd(*model_, threads);
  const std::vector<int32_t> ids = Tokens(50);
  const int layers = model_->config().n_layers;
  cache::SequenceKv ordered(*pool_, layers);
  ASSERT_TRUE(ordered.Reserve(ids.size()).ok());
  std::vector<float> want;
  ASSERT_TRUE(
      fwd.Run(ids, 0, {pool_->view(), ordered.page_tables()}, LogitsMode::kAll, &want).ok());
  // The same sequence on pages taken in a scrambled order from the pool.
  std::vector<int32_t> free_ids;
  for (int i = 0; i < 4 * layers + 5; ++i) free_ids.push_back(*pool_->Allocate());
  std::shuffle(free_ids.begin(), free_ids.end(), std::mt19937(9));
  std::vector<std::vector<int32_t>> tables(layers);
  for (int l = 0; l < layers; ++l) {
    for (int p = 0; p < 4; ++p) tables[l].push_back(free_ids[l * 4 + p]);
  }
  std::vector<float> got;
  ASSERT_TRUE(fwd.Run(ids, 0, {pool_->view(), tables}, LogitsMode::kAll, &got).ok());
  EXPECT_EQ(got, want);
  for (int32_t p : free_ids) pool_->Free(p);
}

TEST_F(ForwardTest, RejectsShortPageTablesAndBadTokens) {
  Load(DType::kF32, DType::kF32);
  kernels::ThreadPool threads(1);
  ForwardPass fwd(*model_, threads);
  cache::SequenceKv seq(*pool_, model_->config().n_layers);
  ASSERT_TRUE(seq.Reserve(16).ok());
  std::vector<float> logits;
  const std::vector<int32_t> ids = Tokens(17);
  Status s = fwd.Run(ids, 0, {pool_->view(), seq.page_tables()}, LogitsMode::kLast, &logits);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("page table"), std::string::npos) << s.message();
  const std::vector<int32_t> bad = {5, 257};
  s = fwd.Run(bad, 0, {pool_->view(), seq.page_tables()}, LogitsMode::kLast, &logits);
  EXPECT_NE(s.message().find("out of range"), std::string::npos) << s.message();
}

TEST(ModelLoadTest, ErrorsNameTheProblem) {
  TinyShape shape;
  const std::string path = WriteTinyModel(shape, DType::kF32, DType::kF32, 1);
  // Rewrite with one tensor dropped / an unsupported architecture.
  auto original = GgufFile::Open(path);
  ASSERT_TRUE(original.ok());
  auto rewrite = [&](const std::string& skip_tensor, const std::string& arch) {
    GgufWriter w;
    for (const auto& [key, value] : (*original)->metadata()) {
      if (key == "general.alignment") continue;
      if (key == "general.architecture") {
        w.SetString(key, arch);
      } else {
        w.SetValue(key, value);
      }
    }
    for (const auto& t : (*original)->tensors()) {
      if (t.name == skip_tensor) continue;
      w.AddRawTensor(t.name, t.dims, t.ggml_type,
                     std::vector<uint8_t>(t.data, t.data + t.size_bytes));
    }
    const std::string out = path + ".bad.gguf";
    EXPECT_TRUE(w.WriteFile(out).ok());
    return Model::Load(out);
  };
  auto missing = rewrite("blk.1.ffn_up.weight", "llama");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("blk.1.ffn_up.weight"), std::string::npos)
      << missing.status().message();
  auto arch = rewrite("", "mamba");
  ASSERT_FALSE(arch.ok());
  EXPECT_NE(arch.status().message().find("mamba"), std::string::npos);
  auto ok = rewrite("", "llama");
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

}  // namespace
}  // namespace kvtier::model
