// kvtier — the command-line client (DESIGN.md §7). It talks to kvtierd over its Unix socket
// through libkvtier; with --local --model PATH, `generate`, `tokenize` and `prefill` run the
// engine in-process instead.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/internal/cli_format.h"
#include "client/libkvtier.h"
#include "engine/engine.h"
#include "protocol/messages.h"

namespace {

using kvtier::Status;
using nlohmann::json;
namespace protocol = kvtier::protocol;
namespace cli = kvtier::client::internal;

constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr int kExitInterrupted = 130;

void PrintUsage(std::FILE* out) {
  std::fprintf(
      out,
      "usage: kvtier [--socket PATH] <command> [options]\n"
      "\n"
      "commands (over kvtierd's socket: --socket PATH, else $KVTIER_SOCKET, else\n"
      "$XDG_RUNTIME_DIR/kvtier/kvtier.sock, else /run/kvtier/kvtier.sock):\n"
      "  generate   [--prompt TEXT | --prompt-file F | stdin] [--raw] [--max-tokens N]\n"
      "             [--temperature T] [--top-k K] [--top-p P] [--seed N] [--stop S]...\n"
      "             [--attention auto|dense|sparse] [--budget N] [--json]\n"
      "  prefill    [--pin NAME] [--raw] [--json] FILE...   (FILE '-' is stdin; a progress bar\n"
      "             on stderr; later prompts that start with the same text reuse its KV)\n"
      "  tokenize   [--json] [--no-special]       (text on stdin -> token ids)\n"
      "  stats      [--json]                      (cache tiers, requests)\n"
      "  health     [--json]\n"
      "  pins       [--json]\n"
      "  unpin      NAME\n"
      "  evict      [--tier device|host|disk|all] [--json]\n"
      "\n"
      "local mode (generate, tokenize, prefill without a daemon): --local [--model PATH]\n"
      "  [--threads N] [--context N] [--state-dir DIR] [--cache-dir DIR] [--device auto|cpu|cuda]\n"
      "  [--host-cache-bytes N] [--hot-cache-bytes N] [--disk-cache-bytes N (0: no disk tier)]\n"
      "  [--matmul-activations f32|q8 (q8: activations rounded to 8 bits as llama.cpp does)]\n"
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

// Known options and flags per command; anything else is an error, so typos are not silently
// ignored.
struct CommandSpec {
  std::vector<std::string> options;  // --name VALUE
  std::vector<std::string> flags;    // --name
  bool local = false;                // has a --local mode
};
const std::map<std::string, CommandSpec> kCommands = {
    {"generate",
     {{"prompt", "prompt-file", "max-tokens", "temperature", "top-k", "top-p", "seed", "attention",
       "budget"},
      {"raw", "json"},
      true}},
    {"prefill", {{"pin"}, {"raw", "json"}, true}},
    {"tokenize", {{}, {"json", "no-special"}, true}},
    {"stats", {{}, {"json"}, false}},
    {"health", {{}, {"json"}, false}},
    {"pins", {{}, {"json"}, false}},
    {"unpin", {{}, {"json"}, false}},
    {"evict", {{"tier"}, {"json"}, false}},
};
const std::vector<std::string> kLocalOptions = {
    "model",  "threads",  "context",          "state-dir",       "cache-dir",
    "device", "kv-bytes", "host-cache-bytes", "hot-cache-bytes", "disk-cache-bytes",
    "matmul-activations"};

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

Status CheckOptions(const Args& a) {
  const CommandSpec& spec = kCommands.at(a.command);
  const bool local = a.flags.count("local") > 0;
  if (local && !spec.local) {
    return kvtier::InvalidArgumentError("'" + a.command +
                                        "' has no --local mode: it asks kvtierd (--socket PATH)");
  }
  for (const auto& [name, value] : a.values) {
    if (Contains(spec.options, name)) continue;
    if (Contains(kLocalOptions, name)) {
      if (local) continue;
      return kvtier::InvalidArgumentError("--" + name + " is an option of --local mode (kvtierd " +
                                          "has its own: kvtierd --" + name + ")");
    }
    if (name == "socket") continue;  // global; --local ignores it
    return kvtier::InvalidArgumentError("unknown option --" + name + " for '" + a.command + "'");
  }
  for (const auto& [name, value] : a.flags) {
    if (name == "local" || Contains(spec.flags, name)) continue;
    return kvtier::InvalidArgumentError("unknown flag --" + name + " for '" + a.command + "'");
  }
  if (!a.stops.empty() && a.command != "generate") {
    return kvtier::InvalidArgumentError("--stop is only for generate");
  }
  return Status::Ok();
}

kvtier::Result<std::unique_ptr<kvtier::engine::Engine>> OpenLocalEngine(const Args& a) {
  kvtier::engine::EngineOptions opt;
  const std::string cache_dir =
      a.values.count("cache-dir") ? a.values.at("cache-dir") : DefaultCacheDir();
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
  if (a.values.count("hot-cache-bytes")) {
    if (!ParseInt(a.values.at("hot-cache-bytes"), 0, 1LL << 50, &v)) {
      return kvtier::InvalidArgumentError("--hot-cache-bytes must be an integer >= 0");
    }
    opt.hot_cache_bytes = static_cast<uint64_t>(v);
  }
  if (a.values.count("disk-cache-bytes")) {
    if (!ParseInt(a.values.at("disk-cache-bytes"), 0, 1LL << 50, &v)) {
      return kvtier::InvalidArgumentError("--disk-cache-bytes must be an integer >= 0");
    }
    opt.disk_cache_bytes = static_cast<uint64_t>(v);
    if (v == 0) opt.cache_dir.clear();  // no disk tier
  }
  if (a.values.count("matmul-activations")) {
    opt.matmul_activations = a.values.at("matmul-activations");  // Engine::Create validates it
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

// ---------------------------------------------------------------------------------------------
// The daemon side.

kvtier::Result<std::unique_ptr<kvtier::client::Client>> ConnectDaemon(const Args& a) {
  kvtier::client::ConnectOptions o;
  if (a.values.count("socket")) o.socket_path = a.values.at("socket");
  return kvtier::client::Client::Connect(o);
}

// While a long request runs, SIGINT/SIGTERM cancel it (the daemon then stops its work); a second
// signal exits at once. The signals are blocked in every thread (call Block() before any thread
// starts) and taken by a watcher thread with sigwait.
class InterruptCanceller {
 public:
  static void Block() {
    sigset_t set = Signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }

  InterruptCanceller(kvtier::client::Client* client, protocol::RequestId id)
      : watcher_([this, client, id = std::move(id)] { Watch(client, id); }) {}
  ~InterruptCanceller() {
    done_.store(true);
    pthread_kill(watcher_.native_handle(), SIGUSR1);
    watcher_.join();
  }
  bool interrupted() const { return interrupted_.load(); }

 private:
  static sigset_t Signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);  // "done": wakes the watcher
    return set;
  }

  void Watch(kvtier::client::Client* client, const protocol::RequestId& id) {
    const sigset_t set = Signals();
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0 || done_.load()) return;
      if (sig == SIGUSR1) continue;
      if (interrupted_.exchange(true)) _exit(kExitInterrupted);
      std::fputs("\nkvtier: cancelling (again to quit now)\n", stderr);
      (void)client->Cancel(id);
    }
  }

  std::atomic<bool> done_{false};
  std::atomic<bool> interrupted_{false};
  std::thread watcher_;
};

void PrintLine(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
}

int RunGenerateRemote(const Args& a, const kvtier::engine::GenerateRequest& local_form) {
  protocol::GenerateRequest g;
  if (local_form.raw) {
    g.input.prompt = local_form.prompt;
  } else {
    g.input.messages.push_back({protocol::Role::kUser, local_form.prompt});
  }
  if (a.values.count("max-tokens")) g.max_tokens = local_form.max_tokens;
  if (a.values.count("temperature")) g.temperature = std::stod(a.values.at("temperature"));
  if (a.values.count("top-k")) g.top_k = local_form.sampling.top_k;
  if (a.values.count("top-p")) g.top_p = std::stod(a.values.at("top-p"));
  if (local_form.seed_given) g.seed = static_cast<int64_t>(local_form.sampling.seed);
  g.stop = local_form.stop;
  if (a.values.count("attention")) {
    const std::string& m = a.values.at("attention");
    g.attention = m == "dense"    ? protocol::Attention::kDense
                  : m == "sparse" ? protocol::Attention::kSparse
                                  : protocol::Attention::kAuto;
  }
  if (a.values.count("budget")) g.budget_tokens = std::stoi(a.values.at("budget"));
  const bool as_json = a.flags.count("json") > 0;
  g.stream = !as_json;

  InterruptCanceller::Block();
  auto client = ConnectDaemon(a);
  if (!client.ok()) return Fail(client.status().message());
  protocol::Request request;
  request.id = (*client)->NewId();
  request.body = g;
  InterruptCanceller canceller(client->get(), request.id);
  auto on_event = [&](const protocol::Event& e) {
    if (const auto* t = std::get_if<protocol::TokenEvent>(&e.body); t && !t->text.empty()) {
      std::fwrite(t->text.data(), 1, t->text.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  kvtier::Result<kvtier::client::Reply> reply = (*client)->Send(request, on_event);
  if (!as_json) std::fputc('\n', stdout);
  if (!reply.ok()) {
    if (canceller.interrupted()) return kExitInterrupted;
    return Fail(reply.status().message());
  }
  if (as_json) PrintLine(reply->json);
  return canceller.interrupted() ? kExitInterrupted : 0;
}

// The text of the prefill's FILE arguments, concatenated in order ("-" is stdin).
kvtier::Result<std::string> ReadPrefillFiles(const Args& a) {
  if (a.positional.empty()) {
    return kvtier::InvalidArgumentError("prefill needs at least one FILE ('-' for stdin)");
  }
  std::string text;
  for (const std::string& path : a.positional) {
    if (path == "-") {
      text += ReadAll(std::cin);
      continue;
    }
    std::ifstream f(path, std::ios::binary);
    if (!f) return kvtier::NotFoundError("cannot read " + path);
    text += ReadAll(f);
  }
  if (text.empty()) return kvtier::InvalidArgumentError("prefill: the input is empty");
  return text;
}

std::string PrefillSummary(int64_t tokens, int64_t cached, double seconds, const std::string& pin) {
  std::string s = "prefilled " + std::to_string(tokens) + " tokens (" + std::to_string(cached) +
                  " were cached) in " + cli::HumanDuration(seconds);
  if (!pin.empty()) s += "; pinned as '" + pin + "'";
  return s;
}

int RunPrefill(const Args& a) {
  kvtier::Result<std::string> text = ReadPrefillFiles(a);
  if (!text.ok()) return Fail(text.status().message());
  const bool raw = a.flags.count("raw") > 0;
  const bool as_json = a.flags.count("json") > 0;
  const std::string pin = a.values.count("pin") ? a.values.at("pin") : "";
  cli::ProgressReporter progress(isatty(STDERR_FILENO) != 0, "prefill");
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  auto on_progress = [&](int64_t done, int64_t total) {
    const std::string out = progress.Update(done, total, elapsed());
    std::fputs(out.c_str(), stderr);
    std::fflush(stderr);
    return true;
  };

  if (a.flags.count("local")) {
    auto engine = OpenLocalEngine(a);
    if (!engine.ok()) return Fail(engine.status().message());
    kvtier::engine::GenerateRequest req;
    req.prompt = *text;
    req.raw = raw;  // else the chat template, as `generate` applies it
    req.max_tokens = 0;
    req.seed_given = true;
    auto result = (*engine)->Generate(req, nullptr, on_progress);
    std::fputs(progress.Finish().c_str(), stderr);
    if (!result.ok()) return Fail(result.status().message());
    if (!pin.empty()) {
      if (Status s = (*engine)->Pin(req.cache_namespace, pin, req); !s.ok()) {
        return Fail(s.message());
      }
    }
    if (as_json) {
      PrintLine(json{{"event", "result"},
                     {"op", "prefill"},
                     {"tokens", result->usage.prompt_tokens},
                     {"cached_tokens", result->usage.cached_tokens}}
                    .dump());
    } else {
      PrintLine(
          PrefillSummary(result->usage.prompt_tokens, result->usage.cached_tokens, elapsed(), pin));
    }
    return 0;
  }

  protocol::PrefillRequest p;
  if (raw) {
    p.input.prompt = *text;
  } else {
    p.input.messages.push_back({protocol::Role::kUser, *text});
  }
  p.pin = pin;
  InterruptCanceller::Block();
  auto client = ConnectDaemon(a);
  if (!client.ok()) return Fail(client.status().message());
  protocol::Request request;
  request.id = (*client)->NewId();
  request.body = p;
  InterruptCanceller canceller(client->get(), request.id);
  auto on_event = [&](const protocol::Event& e) {
    if (const auto* pr = std::get_if<protocol::ProgressEvent>(&e.body)) {
      return on_progress(pr->done, pr->total);
    }
    return true;
  };
  kvtier::Result<kvtier::client::Reply> reply = (*client)->Send(request, on_event);
  std::fputs(progress.Finish().c_str(), stderr);
  if (!reply.ok()) {
    if (canceller.interrupted()) return kExitInterrupted;
    return Fail(reply.status().message());
  }
  if (as_json) {
    PrintLine(reply->json);
  } else {
    const auto& r = std::get<protocol::PrefillResult>(reply->result);
    PrintLine(PrefillSummary(r.tokens, r.cached_tokens, elapsed(), pin));
  }
  return 0;
}

void PrintTokens(const std::vector<int32_t>& ids, bool as_json) {
  if (as_json) {
    std::cout << json(ids).dump() << "\n";
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  }
}

// stats, health, pins, unpin, evict: one request, a readable answer (or the raw line with --json).
int RunSimple(const Args& a) {
  const std::string& cmd = a.command;
  protocol::Request request;
  if (cmd == "stats") {
    request.body = protocol::StatsRequest{};
  } else if (cmd == "health") {
    request.body = protocol::HealthRequest{};
  } else if (cmd == "pins") {
    request.body = protocol::PinsRequest{};
  } else if (cmd == "unpin") {
    if (a.positional.size() != 1) return Fail("usage: kvtier unpin NAME");
    request.body = protocol::UnpinRequest{a.positional[0]};
  } else {  // evict
    protocol::EvictRequest e;
    const std::string tier = a.values.count("tier") ? a.values.at("tier") : "all";
    if (tier == "device") {
      e.tier = protocol::EvictTier::kDevice;
    } else if (tier == "host") {
      e.tier = protocol::EvictTier::kHost;
    } else if (tier == "disk") {
      e.tier = protocol::EvictTier::kDisk;
    } else if (tier != "all") {
      return Fail("--tier must be device, host, disk or all");
    }
    request.body = e;
  }
  if (cmd != "unpin" && !a.positional.empty()) {
    return Fail("unexpected argument '" + a.positional[0] + "'");
  }
  auto client = ConnectDaemon(a);
  if (!client.ok()) return Fail(client.status().message());
  kvtier::Result<kvtier::client::Reply> reply = (*client)->Send(request);
  if (!reply.ok()) return Fail(reply.status().message());
  if (a.flags.count("json")) {
    PrintLine(reply->json);
    return cmd == "unpin" && !std::get<protocol::UnpinResult>(reply->result).unpinned ? 1 : 0;
  }
  const protocol::OpResult& r = reply->result;
  if (cmd == "stats") {
    std::fputs(cli::FormatStats(std::get<protocol::StatsResult>(r)).c_str(), stdout);
  } else if (cmd == "health") {
    std::fputs(
        cli::FormatHealth(std::get<protocol::HealthResult>(r), (*client)->socket_path()).c_str(),
        stdout);
  } else if (cmd == "pins") {
    const auto& pins = std::get<protocol::PinsResult>(r).pins;
    if (pins.empty()) {
      PrintLine("no pinned prefixes");
    } else {
      size_t w = 4;
      for (const auto& p : pins) w = std::max(w, p.name.size());
      std::printf("%-*s  %10s\n", static_cast<int>(w), "name", "tokens");
      for (const auto& p : pins) {
        std::printf("%-*s  %10" PRId64 "\n", static_cast<int>(w), p.name.c_str(), p.tokens);
      }
    }
  } else if (cmd == "unpin") {
    if (!std::get<protocol::UnpinResult>(r).unpinned) {
      return Fail("no pin named '" + a.positional[0] + "'");
    }
    PrintLine("unpinned '" + a.positional[0] + "'");
  } else {
    const int64_t freed = std::get<protocol::EvictResult>(r).freed_bytes;
    PrintLine("freed " + cli::HumanBytes(freed) + " (" + std::to_string(freed) + " bytes)");
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// generate and tokenize (both modes).

int RunTokenize(const Args& a) {
  const bool special = !a.flags.count("no-special");
  if (!a.positional.empty()) return Fail("unexpected argument '" + a.positional[0] + "'");
  if (!a.flags.count("local")) {
    auto client = ConnectDaemon(a);
    if (!client.ok()) return Fail(client.status().message());
    auto ids = (*client)->Tokenize(ReadAll(std::cin), special);
    if (!ids.ok()) return Fail(ids.status().message());
    PrintTokens(*ids, a.flags.count("json") > 0);
    return 0;
  }
  auto engine = OpenLocalEngine(a);
  if (!engine.ok()) return Fail(engine.status().message());
  const std::string text = ReadAll(std::cin);
  const std::vector<int32_t> ids = (*engine)->model().tokenizer().Encode(text, special, false);
  PrintTokens(ids, a.flags.count("json") > 0);
  return 0;
}

int RunGenerate(const Args& a) {
  kvtier::engine::GenerateRequest req;
  long long iv = 0;
  double fv = 0;
  const bool local = a.flags.count("local") > 0;
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
    req.attention = m;
  }
  if (a.values.count("budget")) {
    if (!ParseInt(a.values.at("budget"), 16, 1 << 24, &iv)) {
      return Fail("--budget must be an integer >= 16");
    }
    req.budget_tokens = static_cast<int>(iv);
  }
  req.stop = a.stops;
  if (!local) return RunGenerateRemote(a, req);

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
        {"retrieval",
         {{"attention", r.retrieval.attention},
          {"pages_attended_avg", r.retrieval.pages_attended_avg},
          {"sparse_steps", r.retrieval.sparse_steps},
          {"pages_promoted", r.retrieval.pages_promoted},
          {"bytes_promoted", r.bytes_promoted},
          {"cold_tokens", r.retrieval.cold_tokens},
          {"pages_promoted_by_tier",
           {{"host", r.retrieval.pages_promoted_host}, {"disk", r.retrieval.pages_promoted_disk}}},
          {"bytes_decompressed", r.retrieval.bytes_decompressed},
          {"hot_hits", r.retrieval.hot_hits},
          {"hot_misses", r.retrieval.hot_misses},
          {"disk_reads", r.retrieval.disk_reads},
          {"prefetch",
           {{"records", r.retrieval.records_prefetched},
            {"hits", r.retrieval.prefetch_hits},
            {"waits", r.retrieval.prefetch_waits},
            {"wasted", r.retrieval.prefetch_wasted}}}}},
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
  if (!kCommands.count(cmd)) {
    std::fprintf(stderr, "kvtier: unknown command '%s'\n", cmd.c_str());
    PrintUsage(stderr);
    return 2;
  }
  if (Status s = CheckOptions(*args); !s.ok()) {
    std::fprintf(stderr, "kvtier: %s\n", s.message().c_str());
    return 2;
  }
  if (cmd == "generate") return RunGenerate(*args);
  if (cmd == "tokenize") return RunTokenize(*args);
  if (cmd == "prefill") return RunPrefill(*args);
  return RunSimple(*args);
}
