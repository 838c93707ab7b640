// codec_quality_tool — KV codec quality on the real model (DESIGN §4: "each codec's quality is
// measured on the real model, not assumed").
//
//   codec_quality_tool [--model M] [--text FILE] [--prefix N] [--eval E] [--threads T]
//
// Prefills the first N tokens (a multiple of 64) of FILE, then for each codec encodes and
// decodes every whole extent of that KV in place and reports
//   - the KV reconstruction error: relative L2 ||x - x'|| / ||x|| over all K (and all V),
//   - the next-token top-1 agreement against the f16 KV over the following E positions,
//     teacher-forced (the same E tokens are fed with the original KV and with the round-tripped
//     KV; the argmax of the logits at each position is compared), and the mean KL divergence,
//   - the encoded size relative to f16, without and with zstd, and encode/decode time per
//     extent (one thread).
// Defaults: the test model, /usr/share/common-licenses/GPL-3, N = 2048, E = 512.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cache/codec.h"
#include "cache/extent.h"
#include "cache/page_pool.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/fp16.h"
#include "model/model.h"

namespace {

using kvtier::Status;
namespace cache = kvtier::cache;
namespace kernels = kvtier::kernels;
namespace model = kvtier::model;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& m) {
  std::fprintf(stderr, "codec_quality_tool: %s\n", m.c_str());
  return 1;
}

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::vector<int32_t> Argmax(const std::vector<float>& logits, int vocab) {
  std::vector<int32_t> out(logits.size() / vocab);
  for (size_t i = 0; i < out.size(); ++i) {
    const float* row = logits.data() + i * vocab;
    out[i] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
  }
  return out;
}

// Mean over positions of KL(softmax(ref) || softmax(got)).
double MeanKl(const std::vector<float>& ref, const std::vector<float>& got, int vocab) {
  const size_t n = ref.size() / vocab;
  double total = 0;
  std::vector<double> p(vocab), q(vocab);
  for (size_t i = 0; i < n; ++i) {
    auto softmax = [&](const float* x, std::vector<double>& out) {
      const float m = *std::max_element(x, x + vocab);
      double s = 0;
      for (int j = 0; j < vocab; ++j) s += (out[j] = std::exp(static_cast<double>(x[j]) - m));
      for (int j = 0; j < vocab; ++j) out[j] /= s;
    };
    softmax(ref.data() + i * vocab, p);
    softmax(got.data() + i * vocab, q);
    double kl = 0;
    for (int j = 0; j < vocab; ++j) {
      if (p[j] > 0) kl += p[j] * std::log(p[j] / std::max(q[j], 1e-300));
    }
    total += kl;
  }
  return total / n;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt;
  for (int i = 1; i + 1 < argc; i += 2) opt[std::string(argv[i]).substr(2)] = argv[i + 1];
  auto get = [&](const std::string& k, const std::string& def) {
    return opt.count(k) ? opt[k] : def;
  };
  const char* home = std::getenv("HOME");
  const std::string model_path =
      get("model", std::string(home ? home : "/root") +
                       "/.cache/kvtier/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  const std::string text_path = get("text", "/usr/share/common-licenses/GPL-3");
  const int prefix = std::stoi(get("prefix", "2048"));
  const int eval = std::stoi(get("eval", "512"));
  const int threads = std::stoi(get("threads", "0"));
  if (prefix <= 0 || prefix % 64 != 0 || eval <= 0) {
    return Fail("--prefix must be a positive multiple of 64, --eval positive");
  }

  auto model_or = model::Model::Load(model_path);
  if (!model_or.ok()) return Fail(model_or.status().ToString());
  const model::Model& m = **model_or;
  const model::ModelConfig& c = m.config();
  std::ifstream in(text_path);
  if (!in) return Fail("cannot read " + text_path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<int32_t> tokens = m.tokenizer().Encode(ss.str(), /*parse_special=*/false);
  if (static_cast<int>(tokens.size()) < prefix + eval) {
    return Fail("the text has " + std::to_string(tokens.size()) + " tokens, need " +
                std::to_string(prefix + eval));
  }
  tokens.resize(prefix + eval);

  kernels::ThreadPool pool(kernels::ThreadPool::DefaultThreads(threads));
  model::ForwardPass forward(m, pool, 512);
  const int64_t pages_per_layer = (prefix + eval + 15) / 16 + 1;
  auto pages_or = cache::PagePool::Create(
      cache::PageShape{16, c.n_kv_heads, c.head_dim},
      static_cast<uint64_t>(pages_per_layer) * c.n_layers * 2 * 16 * c.kv_dim() * 2);
  if (!pages_or.ok()) return Fail(pages_or.status().ToString());
  cache::PagePool& pages = **pages_or;
  cache::SequenceKv seq(pages, c.n_layers);
  if (Status s = seq.Reserve(prefix + eval); !s.ok()) return Fail(s.ToString());
  const model::KvView kv{pages.view(), seq.page_tables()};

  std::fprintf(stderr, "model %s, %d threads (%s kernels); prefill %d tokens of %s...\n",
               model_path.c_str(), pool.size(), kernels::CpuKernelLevel(), prefix,
               text_path.c_str());
  Clock::time_point t0 = Clock::now();
  std::vector<float> logits;
  if (Status s = forward.Run(std::span<const int32_t>(tokens).first(prefix), 0, kv,
                             model::LogitsMode::kNone, &logits);
      !s.ok()) {
    return Fail(s.ToString());
  }
  std::fprintf(stderr, "prefill %.0f ms\n", MsSince(t0));

  // Views of every whole extent of the prefix, and the original f16 K/V of each.
  const cache::ExtentShape shape = cache::ExtentShapeOf(pages.view(), c.n_layers);
  const int n_extents = prefix / shape.tokens();
  std::vector<std::vector<int32_t>> ids(n_extents);
  std::vector<std::vector<uint16_t>> original(n_extents);
  for (int e = 0; e < n_extents; ++e) {
    auto ids_or = cache::ExtentPageIds(seq.page_tables(), e);
    if (!ids_or.ok()) return Fail(ids_or.status().ToString());
    ids[e] = std::move(*ids_or);
    original[e].resize(shape.RawBytes() / 2);
    if (Status s = cache::GatherExtent({pages.view(), shape, ids[e]}, original[e]); !s.ok()) {
      return Fail(s.ToString());
    }
  }
  auto eval_logits = [&](std::vector<float>* out) {
    return forward.Run(std::span<const int32_t>(tokens).subspan(prefix), prefix, kv,
                       model::LogitsMode::kAll, out);
  };
  std::vector<float> ref;
  t0 = Clock::now();
  if (Status s = eval_logits(&ref); !s.ok()) return Fail(s.ToString());
  std::fprintf(stderr, "eval %d positions %.0f ms\n", eval, MsSince(t0));
  const std::vector<int32_t> ref_top = Argmax(ref, c.vocab_size);
  // Top-1 minus top-2 logit of the f16 run at each position.
  constexpr float kDecisiveMargin = 1.0f;
  std::vector<float> ref_margin(ref_top.size());
  int ref_correct = 0, n_decisive = 0;
  for (size_t i = 0; i < ref_top.size(); ++i) {
    const float* row = ref.data() + i * c.vocab_size;
    float second = -INFINITY;
    for (int j = 0; j < c.vocab_size; ++j) {
      if (j != ref_top[i]) second = std::max(second, row[j]);
    }
    ref_margin[i] = row[ref_top[i]] - second;
    n_decisive += ref_margin[i] >= kDecisiveMargin;
    if (i + 1 < ref_top.size()) ref_correct += ref_top[i] == tokens[prefix + i + 1];
  }

  std::printf(
      "codec quality: %s, %d-token prefix of %s (%d extents), %d teacher-forced positions\n",
      m.config().name.c_str(), prefix, text_path.c_str(), n_extents, eval);
  std::printf("f16 KV: next-token accuracy %d/%d; %d/%d positions have a top-1 margin >= %.1f\n",
              ref_correct, eval - 1, n_decisive, eval, kDecisiveMargin);
  std::printf("%-9s %9s %9s %16s %16s %9s %9s %8s %8s %7s %7s\n", "codec", "K relL2", "V relL2",
              "top-1 agree", "agree|margin>=1", "next-tok", "mean KL", "size", "+zstd", "enc ms",
              "dec ms");
  // Rows: the three codecs, then a control that moves every K/V element by at most one f16 ulp
  // (each element +1 ulp, -1 ulp or unchanged, fixed seed): the smallest perturbation the KV
  // can take. Its agreement is the noise floor of top-1 agreement on this model.
  std::mt19937 rng(12345);
  for (int row = 0; row < 4; ++row) {
    const bool control = row == 3;
    const cache::Codec codec = control ? cache::Codec::kF16 : static_cast<cache::Codec>(row + 1);
    uint64_t bytes = 0, zbytes = 0;
    double enc_ms = 0, dec_ms = 0;
    double k_err = 0, k_norm = 0, v_err = 0, v_norm = 0;
    std::vector<uint16_t> now(shape.RawBytes() / 2);
    for (int e = 0; e < n_extents; ++e) {
      const cache::ExtentView view{pages.view(), shape, ids[e]};
      std::vector<uint8_t> enc;
      Clock::time_point t = Clock::now();
      if (Status s = cache::EncodeExtent(view, cache::CodecSpec{codec, false}, &enc); !s.ok()) {
        return Fail(s.ToString());
      }
      enc_ms += MsSince(t);
      bytes += enc.size();
      auto z = cache::EncodeExtent(view, cache::CodecSpec{codec, true});
      if (!z.ok()) return Fail(z.status().ToString());
      zbytes += z->size();
      t = Clock::now();
      if (Status s = cache::DecodeExtent(enc, view); !s.ok()) return Fail(s.ToString());
      dec_ms += MsSince(t);
      if (control) {
        for (size_t i = 0; i < now.size(); ++i) {
          const uint16_t h = original[e][i];
          const int r = static_cast<int>(rng() % 3) - 1;
          // Step the magnitude by one ulp (stays finite: the KV holds no inf/NaN and no value
          // at the f16 maximum), keeping zeros as they are.
          now[i] = (h & 0x7fff) == 0 || (h & 0x7fff) >= 0x7bff ? h : static_cast<uint16_t>(h + r);
        }
        if (Status s = cache::ScatterExtent(now, view); !s.ok()) return Fail(s.ToString());
      }
      if (Status s = cache::GatherExtent(view, now); !s.ok()) return Fail(s.ToString());
      // Gathered layout: [layer][K, V][head][token][dim].
      const size_t half = shape.HalfElemsPerLayer();
      for (size_t i = 0; i < now.size(); ++i) {
        const double x = kernels::F16ToF32(original[e][i]);
        const double d = x - kernels::F16ToF32(now[i]);
        const bool is_v = (i / half) % 2 == 1;
        (is_v ? v_err : k_err) += d * d;
        (is_v ? v_norm : k_norm) += x * x;
      }
    }
    std::vector<float> got;
    if (Status s = eval_logits(&got); !s.ok()) return Fail(s.ToString());
    const std::vector<int32_t> top = Argmax(got, c.vocab_size);
    int agree = 0, decisive = 0, decisive_agree = 0, correct = 0;
    for (size_t i = 0; i < top.size(); ++i) {
      agree += top[i] == ref_top[i];
      if (ref_margin[i] >= kDecisiveMargin) {
        ++decisive;
        decisive_agree += top[i] == ref_top[i];
      }
      if (i + 1 < top.size()) correct += top[i] == tokens[prefix + i + 1];
    }
    const double raw = static_cast<double>(shape.RawBytes()) * n_extents;
    char agree_s[400], decisive_s[400], correct_s[64];
    std::snprintf(agree_s, sizeof(agree_s), "%d/%zu=%.2f%%", agree, top.size(),
                  100.0 * agree / top.size());
    std::snprintf(decisive_s, sizeof(decisive_s), "%d/%d=%.2f%%", decisive_agree, decisive,
                  decisive ? 100.0 * decisive_agree / decisive : 100.0);
    std::snprintf(correct_s, sizeof(correct_s), "%d/%d", correct, eval - 1);
    const std::string name = control ? "f16±1ulp" : std::string(cache::CodecName(codec));
    std::printf("%-9s %9.5f %9.5f %16s %16s %9s %9.6f", name.c_str(), std::sqrt(k_err / k_norm),
                std::sqrt(v_err / v_norm), agree_s, decisive_s, correct_s,
                MeanKl(ref, got, c.vocab_size));
    if (control) {
      std::printf("\n");
    } else {
      std::printf(" %8.4f %8.4f %7.2f %7.2f\n", bytes / raw, zbytes / raw, enc_ms / n_extents,
                  dec_ms / n_extents);
    }
    std::fflush(stdout);
    // Put the original KV back for the next codec.
    for (int e = 0; e < n_extents; ++e) {
      if (Status s = cache::ScatterExtent(original[e], {pages.view(), shape, ids[e]}); !s.ok()) {
        return Fail(s.ToString());
      }
    }
  }
  std::printf(
      "size: encoded bytes (header included) / f16 bytes; zstd level 3; times per extent "
      "(%d layers x 64 tokens), one thread\n",
      c.n_layers);
  return 0;
}
