// kvtier — the command-line client (DESIGN.md §7). With --local --model PATH it runs the engine
// in-process; otherwise it talks to kvtierd over its Unix socket.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace {

using kvtier::Status;
using nlohmann::json;

constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

void PrintUsage(std::FILE* out) {
  std::fprintf(out,
      "usage: kvtier [--socket PATH] <command> [options]\n"
      "\n"
      "commands:\n"
      "  generate   [--prompt TEXT | --prompt-file F | stdin] [--raw] [--max-tokens N]\n"
      "             [--temperature T] [--top-k K] [--top-p P] [--seed N] [--stop S]...\n"
      "             [--attention auto|dense|sparse] [--budget N] [--json]\n"
      "  tokenize   [--json] [--no-special]       (text on stdin -> token ids)\n"
      "  prefill, stats, health, pins, unpin, evict   (need the daemon)\n"
      "\n"
      "local mode (no daemon): --local [--model PATH] [--threads N] [--context N]\n"
      "  [--state-dir DIR] [--cache-dir DIR] [--device auto|cpu|cuda]\n"
      "  [--host-cache-bytes N] [--disk-cache-bytes N (0: no disk tier)]\n"
      "  The default model is <cache-dir>/models/%s (scripts/fetch-model puts it there).\n"
      "  Cached prompt prefixes persist in <cache-dir>/kv (index in <state-dir>/kv-index).\n",
      kDefaultModelFile);
}

struct Args {
  std::string command;
  std::map<std::string, std::string> values;  // --flag VALUE
  std::map<std::string, bool> flags;          // --flag
  std::vector<std::string> stops;
  std::vector<std::string> positional;
};

// Flags that take no value.
bool IsBooleanFlag(const std::string& f) {
  return f == "local" || f == "raw" || f == "json" || f == "no-special" || f == "help";
}

std::optional<Args> ParseArgs(int argc, char** argv, std::string* error) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "-h") s = "--help";
    if (s.rfind("--", 0) == 0) {
      std::string name = s.substr(2), value;
      const size_t eq = name.find('=');
      bool has_value = false;
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      if (IsBooleanFlag(name)) {
        if (has_value) {
          *error = "--" + name + " takes no value";
          return std::nullopt;
        }
        a.flags[name] = true;
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) {
          *error = "--" + name + " needs a value";
          return std::nullopt;
        }
        value = argv[++i];
      }
      if (name == "stop") {
        a.stops.push_back(value);
      } else {
        a.values[name] = value;
      }
    } else if (a.command.empty()) {
      a.command = s;
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

bool ParseInt(const std::string& s, long long lo, long long hi, long long* out) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool ParseFloat(const std::string& s, double lo, double hi, double* out) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !(v >= lo && v <= hi)) return false;
  *out = v;
  return true;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "kvtier: %s\n", message.c_str());
  return 1;
}

std::string DefaultCacheDir() {
  if (const char* d = std::getenv("KVTIER_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/kvtier";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.cache/kvtier";
}

std::string DefaultStateDir() {
  if (const char* d = std::getenv("KVTIER_STATE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) return std::string(x) + "/kvtier";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.local/state/kvtier";
}

std::string ReadAll(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Known options per command; anything else is an error, so typos are not silently ignored.
const std::map<std::string, std::vector<std::string>> kCommandOptions = {
    {"generate",
     {"prompt", "prompt-file", "max-tokens", "temperature", "top-k", "top-p", "seed",
      "attention", "budget"}},
    {"tokenize", {}},
};
const std::vector<std::string> kLocalOptions = {
    "model",  "threads", "context",  "state-dir",        "cache-dir",
    "device", "socket",  "kv-bytes", "host-cache-bytes", "disk-cache-bytes"};

Status CheckOptions(const Args& a) {
  const auto& allowed = kCommandOptions.at(a.command);
  for (const auto& [name, value] : a.values) {
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end() &&
        std::find(kLocalOptions.begin(), kLocalOptions.end(), name) == kLocalOptions.end()) {
      return kvtier::InvalidArgumentError("unknown option --" + name + " for '" + a.command + "'");
    }
  }
  if (!a.stops.empty() && a.command != "generate") {
    return kvtier::InvalidArgumentError("--stop is only for generate");
  }
  return Status::Ok();
}

kvtier::Result<std::unique_ptr<kvtier::engine::Engine>> OpenLocalEngine(const Args& a) {
  kvtier::engine::EngineOptions opt;
  const std::string cache_dir = a.values.count("cache-dir") ? a.values.at("cache-dir")
                                                            : DefaultCacheDir();
  if (a.values.count("model")) {
    opt.model_path = a.values.at("model");
  } else if (const char* m = std::getenv("KVTIER_MODEL"); m && *m) {
    opt.model_path = m;
  } else {
    opt.model_path = cache_dir + "/models/" + kDefaultModelFile;
  }
  if (!std::filesystem::exists(opt.model_path)) {
    return kvtier::NotFoundError("model file " + opt.model_path +
                                 " not found (run scripts/fetch-model, or pass --model PATH)");
  }
  long long v = 0;
  if (a.values.count("threads")) {
    if (!ParseInt(a.values.at("threads"), 1, 1024, &v)) {
      return kvtier::InvalidArgumentError("--threads must be an integer in [1, 1024]");
    }
    opt.threads = static_cast<int>(v);
  }
  if (a.values.count("context")) {
    if (!ParseInt(a.values.at("context"), 16, 1 << 24, &v)) {
      return kvtier::InvalidArgumentError("--context must be an integer in [16, 16777216]");
    }
    opt.context_tokens = static_cast<int>(v);
  }
  if (a.values.count("kv-bytes")) {
    if (!ParseInt(a.values.at("kv-bytes"), 1, 1LL << 50, &v)) {
      return kvtier::InvalidArgumentError("--kv-bytes must be a positive integer");
    }
    opt.kv_capacity_bytes = static_cast<uint64_t>(v);
  }
  opt.cache_dir = cache_dir;
  opt.state_dir = a.values.count("state-dir") ? a.values.at("state-dir") : DefaultStateDir();
  if (a.values.count("host-cache-bytes")) {
    if (!ParseInt(a.values.at("host-cache-bytes"), 0, 1LL << 50, &v)) {
      return kvtier::InvalidArgumentError("--host-cache-bytes must be an integer >= 0");
    }
    opt.host_cache_bytes = static_cast<uint64_t>(v);
  }
  if (a.values.count("disk-cache-bytes")) {
    if (!ParseInt(a.values.at("disk-cache-bytes"), 0, 1LL << 50, &v)) {
      return kvtier::InvalidArgumentError("--disk-cache-bytes must be an integer >= 0");
    }
    opt.disk_cache_bytes = static_cast<uint64_t>(v);
    if (v == 0) opt.cache_dir.clear();  // no disk tier
  }
  if (a.values.count("device")) {
    const std::string& d = a.values.at("device");
    if (d != "auto" && d != "cpu" && d != "cuda") {
      return kvtier::InvalidArgumentError("--device must be auto, cpu or cuda");
    }
    if (d == "cuda") {
      return kvtier::UnavailableError("--device cuda: this build runs the model on the CPU only");
    }
  }
  return kvtier::engine::Engine::Create(opt);
}

int RunTokenize(const Args& a) {
  auto engine = OpenLocalEngine(a);
  if (!engine.ok()) return Fail(engine.status().message());
  const std::string text = ReadAll(std::cin);
  const bool special = !a.flags.count("no-special");
  const std::vector<int32_t> ids = (*engine)->model().tokenizer().Encode(text, special, false);
  if (a.flags.count("json")) {
    std::cout << json(ids).dump() << "\n";
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  }
  return 0;
}

int RunGenerate(const Args& a) {
  kvtier::engine::GenerateRequest req;
  long long iv = 0;
  double fv = 0;
  if (a.values.count("prompt")) {
    req.prompt = a.values.at("prompt");
  } else if (a.values.count("prompt-file")) {
    std::ifstream f(a.values.at("prompt-file"), std::ios::binary);
    if (!f) return Fail("cannot read --prompt-file " + a.values.at("prompt-file"));
    req.prompt = ReadAll(f);
  } else if (!a.positional.empty()) {
    return Fail("unexpected argument '" + a.positional[0] + "' (use --prompt TEXT)");
  } else {
    if (isatty(STDIN_FILENO)) std::fprintf(stderr, "kvtier: reading the prompt from stdin...\n");
    req.prompt = ReadAll(std::cin);
  }
  req.raw = a.flags.count("raw") > 0;
  if (a.values.count("max-tokens")) {
    if (!ParseInt(a.values.at("max-tokens"), 0, 1 << 24, &iv)) {
      return Fail("--max-tokens must be an integer in [0, 16777216]");
    }
    req.max_tokens = static_cast<int>(iv);
  }
  if (a.values.count("temperature")) {
    if (!ParseFloat(a.values.at("temperature"), 0, 100, &fv)) {
      return Fail("--temperature must be a number in [0, 100]");
    }
    req.sampling.temperature = static_cast<float>(fv);
  }
  if (a.values.count("top-k")) {
    if (!ParseInt(a.values.at("top-k"), 0, 1 << 24, &iv)) return Fail("--top-k must be >= 0");
    req.sampling.top_k = static_cast<int>(iv);
  }
  if (a.values.count("top-p")) {
    if (!ParseFloat(a.values.at("top-p"), 0, 1, &fv) || fv == 0) {
      return Fail("--top-p must be in (0, 1]");
    }
    req.sampling.top_p = static_cast<float>(fv);
  }
  if (a.values.count("seed")) {
    if (!ParseInt(a.values.at("seed"), 0, INT64_MAX, &iv)) return Fail("--seed must be >= 0");
    req.sampling.seed = static_cast<uint64_t>(iv);
    req.seed_given = true;
  }
  if (a.values.count("attention")) {
    const std::string& m = a.values.at("attention");
    if (m != "auto" && m != "dense" && m != "sparse") {
      return Fail("--attention must be auto, dense or sparse");
    }
    if (m == "sparse") return Fail("--attention sparse: retrieval attention is not in this build");
  }
  if (a.values.count("budget") && !ParseInt(a.values.at("budget"), 16, 1 << 24, &iv)) {
    return Fail("--budget must be an integer >= 16");
  }
  req.stop = a.stops;

  auto engine = OpenLocalEngine(a);
  if (!engine.ok()) return Fail(engine.status().message());
  const bool as_json = a.flags.count("json") > 0;
  auto on_token = [&](int32_t, std::string_view text) {
    if (!as_json && !text.empty()) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  auto result = (*engine)->Generate(req, on_token);
  if (!result.ok()) return Fail(result.status().message());
  const auto& r = *result;
  if (as_json) {
    json j = {
        {"event", "result"},
        {"text", r.text},
        {"finish_reason", r.finish_reason},
        {"seed", r.seed},
        {"usage",
         {{"prompt_tokens", r.usage.prompt_tokens},
          {"cached_tokens", r.usage.cached_tokens},
          {"cached_by_tier",
           {{"device", r.usage.cached_by_tier.device},
            {"host", r.usage.cached_by_tier.host},
            {"disk", r.usage.cached_by_tier.disk},
            {"remote", r.usage.cached_by_tier.remote}}},
          {"completion_tokens", r.usage.completion_tokens}}},
        {"timing",
         {{"ttft_ms", r.timing.ttft_ms},
          {"prefill_ms", r.timing.prefill_ms},
          {"decode_ms", r.timing.decode_ms},
          {"decode_tokens_per_s", r.timing.decode_tokens_per_s}}},
        {"retrieval", {{"pages_attended_avg", 0}, {"bytes_promoted", r.bytes_promoted}}},
    };
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string error;
  auto args = ParseArgs(argc, argv, &error);
  if (!args) {
    std::fprintf(stderr, "kvtier: %s\n", error.c_str());
    PrintUsage(stderr);
    return 2;
  }
  if (args->flags.count("help") || args->command.empty() || args->command == "help") {
    PrintUsage(args->command.empty() && !args->flags.count("help") ? stderr : stdout);
    return args->command.empty() && !args->flags.count("help") ? 2 : 0;
  }
  const std::string& cmd = args->command;
  if (cmd != "generate" && cmd != "tokenize") {
    if (cmd == "prefill" || cmd == "stats" || cmd == "health" || cmd == "pins" ||
        cmd == "unpin" || cmd == "evict") {
      return Fail("'" + cmd + "' talks to kvtierd, which this build does not include yet");
    }
    std::fprintf(stderr, "kvtier: unknown command '%s'\n", cmd.c_str());
    PrintUsage(stderr);
    return 2;
  }
  if (Status s = CheckOptions(*args); !s.ok()) {
    std::fprintf(stderr, "kvtier: %s\n", s.message().c_str());
    return 2;
  }
  if (!args->flags.count("local")) {
    return Fail("'" + cmd + "' without --local needs kvtierd, which this build does not "
                "include yet; run with --local");
  }
  return cmd == "generate" ? RunGenerate(*args) : RunTokenize(*args);
}
