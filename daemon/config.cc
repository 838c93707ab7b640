#include "daemon/config.h"

#include <grp.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string_view>

namespace kvtier::daemon {
namespace {

enum class Type { kString, kInt, kDouble, kList };

// One setting: its TOML key (flag: the same with '-' for '_'), type, range and where it goes.
struct Option {
  const char* key;
  Type type;
  int64_t lo = 0, hi = 0;  // kInt and kDouble ranges
  const char* help;
};

constexpr int64_t kMaxInt = int64_t{1} << 50;

const Option kOptions[] = {
    {"model", Type::kString, 0, 0, "GGUF model file"},
    {"socket", Type::kString, 0, 0, "Unix socket path (ignored under socket activation)"},
    {"state_dir", Type::kString, 0, 0, "state directory (index, pins)"},
    {"cache_dir", Type::kString, 0, 0, "cache directory (segments; models/ holds models)"},
    {"device", Type::kString, 0, 0, "auto | cpu | cuda"},
    {"threads", Type::kInt, 0, 1024, "engine compute threads (0: all hardware threads)"},
    {"io_threads", Type::kInt, 1, 64, "Asio threads for the protocol"},
    {"max_connections", Type::kInt, 1, 1 << 20, "connections served at once"},
    {"queue_depth", Type::kInt, 1, 1 << 20, "generate/prefill requests waiting for the engine"},
    {"max_requests_per_connection", Type::kInt, 1, 1 << 20, "requests in flight per connection"},
    {"idle_timeout_s", Type::kDouble, 0, 1 << 30, "close idle connections after (0: never)"},
    {"allowed_uids", Type::kList, 0, 0, "uids allowed to connect (the daemon's own always is)"},
    {"allowed_groups", Type::kList, 0, 0, "groups (names or gids) whose members may connect"},
    {"shared_namespace_group", Type::kString, 0, 0, "members of this group share one namespace"},
    {"log_level", Type::kString, 0, 0, "trace | debug | info | warn | error | critical | off"},
    {"max_line_bytes", Type::kInt, 64, int64_t{1} << 31, "longest request line"},
    {"output_limit_bytes", Type::kInt, 4096, kMaxInt, "unsent bytes per connection"},
    {"shutdown_grace_s", Type::kDouble, 0, 3600, "SIGTERM: time to finish in-flight work"},
    {"context_tokens", Type::kInt, 0, 1 << 24, "longest sequence (0: the model's)"},
    {"kv_capacity_bytes", Type::kInt, 0, kMaxInt, "device-tier KV pool (0: engine default)"},
    {"host_cache_bytes", Type::kInt, 0, kMaxInt, "host-tier capacity (0: no host tier)"},
    {"hot_cache_bytes", Type::kInt, 0, kMaxInt,
     "device pages promoted one by one for sparse attention (0: engine default)"},
    {"prefetch_bytes", Type::kInt, 0, kMaxInt,
     "disk records of the previous sparse selection read ahead into RAM (0: no prefetch)"},
    {"disk_cache_bytes", Type::kInt, 0, kMaxInt, "disk-tier capacity (0: no disk tier)"},
    {"attention", Type::kString, 0, 0, "auto | dense | sparse (retrieval attention, DESIGN §5)"},
    {"budget_tokens", Type::kInt, 16, 1 << 24, "sparse attention: tokens attended per KV head"},
    {"dense_layers", Type::kInt, 0, 1024, "sparse attention: first layers kept dense"},
    {"sink_tokens", Type::kInt, 0, 1 << 24, "sparse attention: first tokens always attended"},
    {"recent_tokens", Type::kInt, 0, 1 << 24, "sparse attention: recent window always attended"},
    {"sparse_min_tokens", Type::kInt, 0, kMaxInt,
     "auto: sparse above this context (0: the engine's default)"},
    {"sparse_scoring", Type::kString, 0, 0, "sketch | sketch-only | bound (how sparse attention ranks pages)"},
    {"sparse_split", Type::kString, 0, 0,
     "per-head | shared (each KV head's own budget, or a layer's budget shared among its KV heads by score)"},
    {"matmul_activations", Type::kString, 0, 0,
     "f32 | q8 (activations kept in float in the CPU matmuls, or rounded to 8 bits as llama.cpp does)"},
};

const Option* FindOption(std::string_view key) {
  for (const Option& o : kOptions) {
    if (key == o.key) return &o;
  }
  return nullptr;
}

std::string Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

Result<gid_t> ResolveGroup(const std::string& name) {
  gid_t gid = 0;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), gid);
  if (ec == std::errc() && end == name.data() + name.size() && !name.empty()) return gid;
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  const int rc = getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) return InvalidArgumentError("unknown group '" + name + "'");
  return found->gr_gid;
}

// A parsed value of one option, whichever source it came from.
struct Value {
  std::string str;
  int64_t i = 0;
  double d = 0;
  std::vector<std::string> list;
};

Status Apply(const Option& o, const Value& v, DaemonConfig* c) {
  const std::string_view k = o.key;
  if (k == "model")
    c->model_path = v.str;
  else if (k == "socket")
    c->socket_path = v.str;
  else if (k == "state_dir")
    c->state_dir = v.str;
  else if (k == "cache_dir")
    c->cache_dir = v.str;
  else if (k == "device") {
    if (v.str != "auto" && v.str != "cpu" && v.str != "cuda") {
      return InvalidArgumentError("must be auto, cpu or cuda");
    }
    c->device = v.str;
  } else if (k == "threads")
    c->threads = static_cast<int>(v.i);
  else if (k == "io_threads")
    c->io_threads = static_cast<int>(v.i);
  else if (k == "max_connections")
    c->max_connections = static_cast<int>(v.i);
  else if (k == "queue_depth")
    c->queue_depth = static_cast<int>(v.i);
  else if (k == "max_requests_per_connection")
    c->max_requests_per_connection = static_cast<int>(v.i);
  else if (k == "idle_timeout_s")
    c->idle_timeout_s = v.d;
  else if (k == "allowed_uids") {
    c->allowed_uids.clear();
    for (const std::string& s : v.list) {
      uid_t uid = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), uid);
      if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
        return InvalidArgumentError("'" + s + "' is not a uid");
      }
      c->allowed_uids.push_back(uid);
    }
  } else if (k == "allowed_groups") {
    c->allowed_gids.clear();
    for (const std::string& s : v.list) {
      ASSIGN_OR_RETURN(gid_t gid, ResolveGroup(s));
      c->allowed_gids.push_back(gid);
    }
  } else if (k == "shared_namespace_group") {
    if (v.str.empty()) {
      c->shared_namespace_gid.reset();
    } else {
      ASSIGN_OR_RETURN(gid_t gid, ResolveGroup(v.str));
      c->shared_namespace_gid = gid;
    }
  } else if (k == "log_level") {
    static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    bool ok = false;
    for (const char* l : kLevels) ok = ok || v.str == l;
    if (!ok)
      return InvalidArgumentError("must be trace, debug, info, warn, error, critical or off");
    c->log_level = v.str;
  } else if (k == "max_line_bytes")
    c->max_line_bytes = static_cast<size_t>(v.i);
  else if (k == "output_limit_bytes")
    c->output_limit_bytes = static_cast<size_t>(v.i);
  else if (k == "shutdown_grace_s")
    c->shutdown_grace_s = v.d;
  else if (k == "context_tokens")
    c->context_tokens = static_cast<int>(v.i);
  else if (k == "kv_capacity_bytes")
    c->kv_capacity_bytes = static_cast<uint64_t>(v.i);
  else if (k == "host_cache_bytes")
    c->host_cache_bytes = static_cast<uint64_t>(v.i);
  else if (k == "hot_cache_bytes")
    c->hot_cache_bytes = static_cast<uint64_t>(v.i);
  else if (k == "prefetch_bytes")
    c->prefetch_bytes = static_cast<uint64_t>(v.i);
  else if (k == "disk_cache_bytes")
    c->disk_cache_bytes = static_cast<uint64_t>(v.i);
  else if (k == "attention") {
    if (v.str != "auto" && v.str != "dense" && v.str != "sparse") {
      return InvalidArgumentError("must be auto, dense or sparse");
    }
    c->attention = v.str;
  } else if (k == "budget_tokens")
    c->budget_tokens = static_cast<int>(v.i);
  else if (k == "dense_layers")
    c->dense_layers = static_cast<int>(v.i);
  else if (k == "sink_tokens")
    c->sink_tokens = static_cast<int>(v.i);
  else if (k == "recent_tokens")
    c->recent_tokens = static_cast<int>(v.i);
  else if (k == "sparse_min_tokens")
    c->sparse_min_tokens = static_cast<int>(v.i);
  else if (k == "sparse_scoring") {
    if (v.str != "sketch" && v.str != "sketch-only" && v.str != "bound") {
      return InvalidArgumentError("must be sketch, sketch-only or bound");
    }
    c->sparse_scoring = v.str;
  } else if (k == "sparse_split") {
    if (v.str != "shared" && v.str != "per-head") return InvalidArgumentError("must be shared or per-head");
    c->sparse_split = v.str;
  } else if (k == "matmul_activations") {
    if (v.str != "q8" && v.str != "f32") return InvalidArgumentError("must be q8 or f32");
    c->matmul_activations = v.str;
  } else
    return InternalError("option without a setter");
  return Status::Ok();
}

std::string RangeText(const Option& o) {
  return "[" + std::to_string(o.lo) + ", " + std::to_string(o.hi) + "]";
}

// A flag's text -> Value.
Result<Value> ParseFlagValue(const Option& o, const std::string& text) {
  Value v;
  switch (o.type) {
    case Type::kString:
      v.str = text;
      return v;
    case Type::kInt: {
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v.i);
      if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v.i < o.lo ||
          v.i > o.hi) {
        return InvalidArgumentError("must be an integer in " + RangeText(o));
      }
      return v;
    }
    case Type::kDouble: {
      char* end = nullptr;
      errno = 0;
      v.d = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(v.d) || v.d < o.lo ||
          v.d > o.hi) {
        return InvalidArgumentError("must be a number in " + RangeText(o));
      }
      return v;
    }
    case Type::kList: {
      size_t start = 0;
      while (start <= text.size()) {
        const size_t comma = std::min(text.find(',', start), text.size());
        std::string item = Trim(std::string_view(text).substr(start, comma - start));
        if (!item.empty()) v.list.push_back(std::move(item));
        start = comma + 1;
      }
      return v;
    }
  }
  return InternalError("bad option type");
}

// A TOML node -> Value, with strict types.
Result<Value> ParseTomlValue(const Option& o, const toml::node& node) {
  Value v;
  switch (o.type) {
    case Type::kString:
      if (!node.is_string()) return InvalidArgumentError("must be a string");
      v.str = *node.value<std::string>();
      return v;
    case Type::kInt:
      if (!node.is_integer()) return InvalidArgumentError("must be an integer");
      v.i = *node.value<int64_t>();
      if (v.i < o.lo || v.i > o.hi) return InvalidArgumentError("must be in " + RangeText(o));
      return v;
    case Type::kDouble:
      if (!node.is_integer() && !node.is_floating_point()) {
        return InvalidArgumentError("must be a number");
      }
      v.d = *node.value<double>();
      if (!std::isfinite(v.d) || v.d < o.lo || v.d > o.hi) {
        return InvalidArgumentError("must be in " + RangeText(o));
      }
      return v;
    case Type::kList: {
      const toml::array* arr = node.as_array();
      if (arr == nullptr) return InvalidArgumentError("must be an array");
      for (const toml::node& item : *arr) {
        if (item.is_string()) {
          v.list.push_back(*item.value<std::string>());
        } else if (item.is_integer() && *item.value<int64_t>() >= 0) {
          v.list.push_back(std::to_string(*item.value<int64_t>()));
        } else {
          return InvalidArgumentError("items must be names or non-negative integers");
        }
      }
      return v;
    }
  }
  return InternalError("bad option type");
}

Status LoadTomlFile(const std::string& path, DaemonConfig* c) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return InvalidArgumentError(path + ":" + std::to_string(e.source().begin.line) + ": " +
                                std::string(e.description()));
  }
  for (const auto& [key, node] : table) {
    const std::string where = path + ":" + std::to_string(node.source().begin.line) + ": '" +
                              std::string(key.str()) + "'";
    const Option* o = FindOption(key.str());
    if (o == nullptr) {
      return InvalidArgumentError(where + " is not a kvtierd setting (see kvtierd --help)");
    }
    Result<Value> v = ParseTomlValue(*o, node);
    if (!v.ok()) return v.status().WithContext(where);
    RETURN_IF_ERROR(Apply(*o, *v, c).WithContext(where));
  }
  return Status::Ok();
}

std::string Env(const Environment& env, const char* name) {
  const char* v = env(name);
  return v != nullptr ? std::string(v) : std::string();
}

// DESIGN §6/§8 defaults. Under systemd (RuntimeDirectory=, StateDirectory=, CacheDirectory=) the
// directories it made are used; a root daemon outside systemd uses the system paths' socket.
void FillDefaults(const Environment& env, DaemonConfig* c) {
  const std::string home = Env(env, "HOME").empty() ? "/tmp" : Env(env, "HOME");
  const bool root = geteuid() == 0;
  // systemd may pass several directories separated by ':'; the first is ours.
  auto first = [](std::string s) { return s.substr(0, s.find(':')); };
  if (c->socket_path.empty()) {
    if (!Env(env, "KVTIER_SOCKET").empty()) {
      c->socket_path = Env(env, "KVTIER_SOCKET");
    } else if (!Env(env, "RUNTIME_DIRECTORY").empty()) {
      c->socket_path = first(Env(env, "RUNTIME_DIRECTORY")) + "/kvtier.sock";
    } else if (!root && !Env(env, "XDG_RUNTIME_DIR").empty()) {
      c->socket_path = Env(env, "XDG_RUNTIME_DIR") + "/kvtier/kvtier.sock";
    } else if (root) {
      c->socket_path = "/run/kvtier/kvtier.sock";
    } else {
      c->socket_path = "/run/user/" + std::to_string(geteuid()) + "/kvtier/kvtier.sock";
    }
  }
  if (c->state_dir.empty()) {
    if (!Env(env, "STATE_DIRECTORY").empty()) {
      c->state_dir = first(Env(env, "STATE_DIRECTORY"));
    } else if (!Env(env, "XDG_STATE_HOME").empty()) {
      c->state_dir = Env(env, "XDG_STATE_HOME") + "/kvtier";
    } else {
      c->state_dir = home + "/.local/state/kvtier";
    }
  }
  if (c->cache_dir.empty()) {
    if (!Env(env, "CACHE_DIRECTORY").empty()) {
      c->cache_dir = first(Env(env, "CACHE_DIRECTORY"));
    } else if (!Env(env, "KVTIER_CACHE_DIR").empty()) {
      c->cache_dir = Env(env, "KVTIER_CACHE_DIR");
    } else if (!Env(env, "XDG_CACHE_HOME").empty()) {
      c->cache_dir = Env(env, "XDG_CACHE_HOME") + "/kvtier";
    } else {
      c->cache_dir = home + "/.cache/kvtier";
    }
  }
  if (c->model_path.empty()) {
    c->model_path = !Env(env, "KVTIER_MODEL").empty()
                        ? Env(env, "KVTIER_MODEL")
                        : c->cache_dir + "/models/" + kDefaultModelFile;
  }
}

}  // namespace

std::string UsageText() {
  std::string s =
      "usage: kvtierd [--config FILE] [--FLAG VALUE]...\n"
      "Flags override the TOML config file; its keys are the flag names with '_' for '-'.\n\n";
  for (const Option& o : kOptions) {
    std::string flag = o.key;
    for (char& ch : flag) ch = ch == '_' ? '-' : ch;
    s += "  --" + flag + std::string(flag.size() < 28 ? 28 - flag.size() : 1, ' ') + o.help + "\n";
  }
  s += "  --config                      TOML file read before the flags\n";
  s += "  --help, --version\n";
  return s;
}

Result<CommandLine> LoadConfig(const std::vector<std::string>& args, const Environment& env) {
  CommandLine cl;
  // Pass 1: split flags, find --config.
  std::vector<std::pair<std::string, std::string>> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      cl.help = true;
      continue;
    }
    if (a == "--version") {
      cl.version = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) return InvalidArgumentError("unexpected argument '" + a + "'");
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else {
      if (i + 1 >= args.size()) return InvalidArgumentError("--" + name + " needs a value");
      value = args[++i];
    }
    flags.emplace_back(std::move(name), std::move(value));
  }
  if (cl.help || cl.version) return cl;
  for (const auto& [name, value] : flags) {
    if (name == "config") cl.config.config_file = value;
  }
  if (cl.config.config_file.empty() && !Env(env, "CONFIGURATION_DIRECTORY").empty()) {
    // Under systemd (ConfigurationDirectory=kvtier): /etc/kvtier/kvtierd.toml when present.
    const std::string dir = Env(env, "CONFIGURATION_DIRECTORY");
    const std::string path = dir.substr(0, dir.find(':')) + "/kvtierd.toml";
    if (access(path.c_str(), F_OK) == 0) cl.config.config_file = path;
  }
  if (!cl.config.config_file.empty())
    RETURN_IF_ERROR(LoadTomlFile(cl.config.config_file, &cl.config));
  // Pass 2: flags override the file.
  for (const auto& [name, value] : flags) {
    if (name == "config") continue;
    std::string key = name;
    for (char& ch : key) ch = ch == '-' ? '_' : ch;
    const Option* o = FindOption(key);
    if (o == nullptr) return InvalidArgumentError("unknown flag --" + name + " (see --help)");
    Result<Value> v = ParseFlagValue(*o, value);
    if (!v.ok()) return v.status().WithContext("--" + name);
    RETURN_IF_ERROR(Apply(*o, *v, &cl.config).WithContext("--" + name));
  }
  FillDefaults(env, &cl.config);
  return cl;
}

}  // namespace kvtier::daemon
