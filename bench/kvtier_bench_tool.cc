// kvtier_bench_tool — kvtier's side of the comparisons with llama.cpp (bench/compare-llamacpp).
//
//   kvtier_bench_tool logits   --model M --input windows.json [--dump F]
//                                          -> per-position argmax ids (F: raw f32 logits, window 0)
//   kvtier_bench_tool generate --model M --input prompts.json --max-tokens N
//                                                                -> greedy token ids (raw prompts)
//   kvtier_bench_tool speed    --model M --prompt-tokens P --gen G [--repeat R]
//                              [--attention dense|sparse|auto] [--budget B] [--scoring sketch|bound]
//                                                                -> prompt and decode tokens/s
// Common: --threads N. Output is one JSON document on stdout.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"

using nlohmann::json;

namespace {

int Fail(const std::string& m) {
  std::fprintf(stderr, "kvtier_bench_tool: %s\n", m.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Fail("usage: kvtier_bench_tool logits|generate|speed --model M ...");
  const std::string cmd = argv[1];
  std::map<std::string, std::string> opt;
  for (int i = 2; i + 1 < argc; i += 2) opt[std::string(argv[i]).substr(2)] = argv[i + 1];
  auto get = [&](const std::string& k, const std::string& def) {
    return opt.count(k) ? opt[k] : def;
  };
  kvtier::engine::EngineOptions eo;
  eo.model_path = get("model", "");
  eo.threads = std::stoi(get("threads", "0"));
  eo.context_tokens = std::stoi(get("context", "0"));
  eo.batch_tokens = std::stoi(get("batch", "512"));
  eo.matmul_activations = get("acts", eo.matmul_activations);  // f32 (default) | q8
  auto engine_or = kvtier::engine::Engine::Create(eo);
  if (!engine_or.ok()) return Fail(engine_or.status().ToString());
  auto& engine = **engine_or;
  const int vocab = engine.model().config().vocab_size;

  if (cmd == "logits" || cmd == "generate") {
    std::ifstream in(get("input", ""));
    if (!in) return Fail("cannot read --input");
    json input = json::parse(in);
    json out = json::array();
    if (cmd == "logits") {
      for (const auto& window : input) {
        std::vector<int32_t> ids = window.get<std::vector<int32_t>>();
        auto logits = engine.AllLogits(ids);
        if (!logits.ok()) return Fail(logits.status().ToString());
        if (opt.count("dump") && out.empty()) {  // raw logits of the first window
          std::ofstream dump(opt["dump"], std::ios::binary);
          dump.write(reinterpret_cast<const char*>(logits->data()),
                     static_cast<std::streamsize>(logits->size() * sizeof(float)));
        }
        std::vector<int32_t> top;
        for (size_t t = 0; t < ids.size(); ++t) {
          top.push_back(kvtier::engine::Sampler::Argmax(
              std::span<const float>(logits->data() + t * vocab, vocab)));
        }
        out.push_back(top);
      }
    } else {
      const int max_tokens = std::stoi(get("max-tokens", "64"));
      for (const auto& p : input) {
        kvtier::engine::GenerateRequest req;
        req.prompt = p.get<std::string>();
        req.raw = true;
        req.max_tokens = max_tokens;
        req.sampling.temperature = 0;
        req.seed_given = true;
        auto r = engine.Generate(req, nullptr);
        if (!r.ok()) return Fail(r.status().ToString());
        out.push_back(r->tokens);
      }
    }
    std::cout << out.dump() << "\n";
    return 0;
  }
  if (cmd == "speed") {
    const int n_prompt = std::stoi(get("prompt-tokens", "512"));
    const int n_gen = std::stoi(get("gen", "64"));
    const int repeat = std::stoi(get("repeat", "1"));
    // A deterministic prompt of ordinary tokens (ids from the middle of the vocabulary).
    std::vector<int32_t> prompt(n_prompt);
    for (int i = 0; i < n_prompt; ++i) prompt[i] = 1000 + (i * 7919) % 20000;
    json runs = json::array();
    for (int r = 0; r < repeat; ++r) {
      auto s = engine.MeasureSpeed(prompt, n_gen, get("attention", "dense"),
                                   std::stoi(get("budget", "0")), get("scoring", ""));
      if (!s.ok()) return Fail(s.status().ToString());
      runs.push_back({{"prompt_tokens_per_s", s->prompt_tokens * 1000.0 / s->prefill_ms},
                      {"decode_tokens_per_s", n_gen > 0 ? n_gen * 1000.0 / s->decode_ms : 0.0},
                      {"decode_matmul_ms", s->profile.matmul_ms},
                      {"decode_attention_ms", s->profile.attention_ms},
                      {"decode_other_ms", s->profile.other_ms},
                      {"decode_score_ms", s->profile.score_ms},
                      {"decode_select_ms", s->profile.select_ms},
                      {"pages_attended_avg", s->pages_attended_avg}});
    }
    std::cout << json{{"threads", engine.threads()}, {"runs", runs}}.dump() << "\n";
    return 0;
  }
  return Fail("unknown command " + cmd);
}
