// kvtierd — the kvtier daemon (DESIGN §7): loads the model, then serves the NDJSON protocol on a
// Unix socket until SIGTERM/SIGINT. Exit status: 0 after a clean shutdown, 1 when it cannot
// start (model, socket), 2 for a bad command line or config file.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/server.h"
#include "daemon/systemd.h"
#include "engine/engine.h"

#ifndef KVTIER_VERSION
#define KVTIER_VERSION "0.0.0"
#endif

namespace {

void SetUpLogging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("kvtierd");
  // Under systemd the journal stamps time and priority; elsewhere print them.
  if (std::getenv("JOURNAL_STREAM") != nullptr) {
    logger->set_pattern("%l: %v");
  } else {
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e kvtierd %l: %v");
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  kvtier::Result<kvtier::daemon::CommandLine> cl =
      kvtier::daemon::LoadConfig(args, [](const char* name) { return std::getenv(name); });
  if (!cl.ok()) {
    std::fprintf(stderr, "kvtierd: %s\n", cl.status().message().c_str());
    return 2;
  }
  if (cl->help) {
    std::fputs(kvtier::daemon::UsageText().c_str(), stdout);
    return 0;
  }
  if (cl->version) {
    std::printf("kvtierd %s\n", KVTIER_VERSION);
    return 0;
  }
  const kvtier::daemon::DaemonConfig& config = cl->config;
  SetUpLogging(config.log_level);

  kvtier::Result<int> inherited = kvtier::daemon::systemd::TakeInheritedSocket();
  if (!inherited.ok()) {
    spdlog::critical("{}", inherited.status().message());
    return 1;
  }
  if (config.device == "cuda") {
    spdlog::critical("--device cuda: this build runs the model on the CPU only");
    return 1;
  }
  spdlog::info("kvtierd {} loading {}", KVTIER_VERSION, config.model_path);
  kvtier::daemon::systemd::Notify("STATUS=loading the model and opening the cache index");
  kvtier::engine::EngineOptions options;
  options.model_path = config.model_path;
  options.threads = config.threads;
  options.context_tokens = config.context_tokens;
  options.kv_capacity_bytes = config.kv_capacity_bytes;
  options.host_cache_bytes = config.host_cache_bytes;
  options.hot_cache_bytes = config.hot_cache_bytes;
  options.prefetch_bytes = config.prefetch_bytes;
  options.attention = config.attention;
  options.budget_tokens = config.budget_tokens;
  options.dense_layers = config.dense_layers;
  options.sink_tokens = config.sink_tokens;
  options.recent_tokens = config.recent_tokens;
  if (config.sparse_min_tokens > 0) options.sparse_min_tokens = config.sparse_min_tokens;
  options.sparse_scoring = config.sparse_scoring;
  options.sparse_split = config.sparse_split;
  options.matmul_activations = config.matmul_activations;
  if (config.disk_cache_bytes > 0) {
    options.cache_dir = config.cache_dir;  // segments under <cache_dir>/kv
    options.state_dir = config.state_dir;  // the index under <state_dir>/kv-index
    options.disk_cache_bytes = config.disk_cache_bytes;
  }
  kvtier::Result<std::unique_ptr<kvtier::engine::Engine>> engine =
      kvtier::engine::Engine::Create(options);
  if (!engine.ok()) {
    spdlog::critical("cannot load the model: {}", engine.status().message());
    return 1;
  }
  kvtier::Result<std::unique_ptr<kvtier::daemon::Server>> server =
      kvtier::daemon::Server::Create(config, engine->get(), *inherited);
  if (!server.ok()) {
    spdlog::critical("{}", server.status().message());
    return 1;
  }
  const kvtier::Status run = (*server)->Run();
  if (!run.ok()) {
    spdlog::critical("{}", run.message());
    return 1;
  }
  return 0;
}
