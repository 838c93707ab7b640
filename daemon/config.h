// daemon/config.h — kvtierd's configuration: defaults (DESIGN §6–§8), then a TOML file, then
// command-line flags, each overriding the one before.
//
// Thread safety: DaemonConfig is a plain value; LoadConfig is reentrant (it reads the process
// environment through the Environment it is given and the group database through getgrnam_r).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

namespace kvtier::daemon {

inline constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

struct DaemonConfig {
  std::string config_file;  // "" when none was read
  std::string model_path;   // default: <cache_dir>/models/SmolLM2-135M-Instruct.Q4_1.gguf
  std::string socket_path;  // ignored when a socket is inherited (systemd socket activation)
  std::string state_dir;
  std::string cache_dir;
  std::string device = "auto";  // auto | cpu | cuda
  int threads = 0;              // engine compute threads; 0: one per hardware thread
  int io_threads = 2;           // Asio threads (protocol work only, never compute)
  int max_connections = 256;
  int queue_depth = 64;                  // generate/prefill waiting for the engine
  int max_requests_per_connection = 64;  // in flight on one connection (queued or running)
  double idle_timeout_s = 300;           // a connection with nothing in flight; 0: never
  std::vector<uid_t> allowed_uids;       // empty with allowed_gids empty: anyone who can connect
  std::vector<gid_t> allowed_gids;       // resolved from allowed_groups (names or numbers)
  std::optional<gid_t> shared_namespace_gid;    // members share the namespace "gid:<gid>"
  std::string log_level = "info";               // trace debug info warn error critical off
  size_t max_line_bytes = size_t{16} << 20;     // request line limit (DESIGN §6)
  size_t output_limit_bytes = size_t{8} << 20;  // unsent bytes per connection before dropping it
  double shutdown_grace_s = 5;  // SIGTERM: in-flight work may finish this long, then is cancelled
  int context_tokens = 0;       // 0: the model's trained context
  uint64_t kv_capacity_bytes = 0;                  // device-tier KV pool; 0: the engine's default
  uint64_t host_cache_bytes = uint64_t{1} << 30;   // host tier (RAM); 0: none
  uint64_t hot_cache_bytes = 0;  // hot cache of single promoted pages; 0: the engine's default
  uint64_t prefetch_bytes = uint64_t{64} << 20;  // read-ahead buffer of disk records; 0: off
  uint64_t disk_cache_bytes = uint64_t{16} << 30;  // disk tier under <cache_dir>/kv; 0: none
  // Retrieval attention (DESIGN §5; engine::EngineOptions has the meaning of each).
  std::string attention = "auto";  // auto | dense | sparse (requests may override)
  int budget_tokens = 2048;
  int dense_layers = 2;
  int sink_tokens = 64;
  int recent_tokens = 256;
  int sparse_min_tokens = 0;         // auto goes sparse above this context; 0: the engine's (4096)
  std::string sparse_scoring = "sketch";  // sketch | sketch-only | bound
  std::string sparse_split = "per-head";   // per-head | shared (engine::EngineOptions)
  std::string matmul_activations = "f32";  // f32 | q8 (engine::EngineOptions)
};

// getenv-shaped lookup (tests pass a fake one).
using Environment = std::function<const char*(const char* name)>;

struct CommandLine {
  DaemonConfig config;
  bool help = false;
  bool version = false;
};

// Parses argv (argv[0] excluded) and the --config file (TOML; unknown keys, wrong types and
// out-of-range values are InvalidArgument errors naming the file, line and key). Without
// --config, $CONFIGURATION_DIRECTORY/kvtierd.toml is read when systemd set that variable and the
// file exists.
Result<CommandLine> LoadConfig(const std::vector<std::string>& args, const Environment& env);

// The flags, for --help.
std::string UsageText();

}  // namespace kvtier::daemon
