// ttft_tool — time to first token of one long prompt, cold or served from a cache tier
// (bench/warm-ttft drives it; each mode runs in its own process).
//
//   ttft_tool MODE --model M --cache-dir D --state-dir S --prompt-file F --tokens N [--threads T]
//   MODE: cold  the prompt computed from scratch (prefix cache off)
//         fill  compute it and store its extents in every tier (what a first request does)
//         disk  a fresh engine over the same directories: the prefix comes from disk
//         host  fill, evict the device tier, ask again: the prefix comes from host RAM
// Prints one JSON object: mode, ttft_ms, prompt_tokens, cached_by_tier, bytes_promoted.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace {
int Fail(const std::string& m) {
  std::fprintf(stderr, "ttft_tool: %s\n", m.c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Fail("usage: ttft_tool cold|fill|disk|host --model M ...");
  const std::string mode = argv[1];
  std::map<std::string, std::string> opt;
  for (int i = 2; i + 1 < argc; i += 2) opt[std::string(argv[i]).substr(2)] = argv[i + 1];
  kvtier::engine::EngineOptions eo;
  eo.model_path = opt["model"];
  eo.threads = opt.count("threads") ? std::stoi(opt["threads"]) : 0;
  eo.cache_dir = opt["cache-dir"];
  eo.state_dir = opt["state-dir"];
  eo.prefix_cache = mode != "cold";
  if (opt.count("disk-codec")) eo.disk_codec = opt["disk-codec"];
  auto engine = kvtier::engine::Engine::Create(eo);
  if (!engine.ok()) return Fail(engine.status().ToString());

  std::ifstream f(opt["prompt-file"], std::ios::binary);
  if (!f) return Fail("cannot read --prompt-file");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // Cut the text to the first N tokens so every mode sees the same prompt.
  const auto& tok = (*engine)->model().tokenizer();
  std::vector<int32_t> ids = tok.Encode(text, false);
  const size_t n = opt.count("tokens") ? std::stoul(opt["tokens"]) : ids.size();
  if (ids.size() > n) ids.resize(n);
  auto prompt = tok.Decode(ids);
  if (!prompt.ok()) return Fail(prompt.status().ToString());

  kvtier::engine::GenerateRequest r;
  r.prompt = *prompt;
  r.raw = true;
  r.max_tokens = 1;
  r.sampling.temperature = 0;
  r.seed_given = true;
  if (mode == "host") {
    auto fill = (*engine)->Generate(r, nullptr);
    if (!fill.ok()) return Fail(fill.status().ToString());
    auto freed = (*engine)->Evict("local", "device");
    if (!freed.ok()) return Fail(freed.status().ToString());
  }
  auto res = (*engine)->Generate(r, nullptr);
  if (!res.ok()) return Fail(res.status().ToString());
  const auto& u = res->usage;
  nlohmann::json j = {
      {"mode", mode},
      {"ttft_ms", res->timing.ttft_ms},
      {"cache_ms", res->timing.cache_ms},
      {"prompt_tokens", u.prompt_tokens},
      {"cached_tokens", u.cached_tokens},
      {"cached_by_tier",
       {{"device", u.cached_by_tier.device},
        {"host", u.cached_by_tier.host},
        {"disk", u.cached_by_tier.disk}}},
      {"bytes_promoted", res->bytes_promoted},
      {"io_engine", (*engine)->TierStats().disk_io_engine},
      {"disk_codec", eo.disk_codec},
  };
  std::cout << j.dump() << "\n";
  return 0;
}
