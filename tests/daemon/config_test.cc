// daemon/config and daemon/internal/peer: defaults, file and flag precedence, strict keys, and the
// access and namespace policy.
#include "daemon/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "daemon/internal/peer.h"
#include "tests/support/test_support.h"

namespace kvtier::daemon {
namespace {

Environment FakeEnv(std::map<std::string, std::string> vars) {
  auto held = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [held](const char* name) -> const char* {
    auto it = held->find(name);
    return it == held->end() ? nullptr : it->second.c_str();
  };
}

std::string WriteFile(const std::string& text) {
  const std::string path = kvtier::testing::MakeTempDir("kvtierd_cfg_") + "/kvtierd.toml";
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigTest, SystemdDirectoriesAndDefaultModel) {
  Result<CommandLine> cl = LoadConfig({}, FakeEnv({{"RUNTIME_DIRECTORY", "/run/kvtier"},
                                                   {"STATE_DIRECTORY", "/var/lib/kvtier"},
                                                   {"CACHE_DIRECTORY", "/var/cache/kvtier"}}));
  ASSERT_TRUE(cl.ok()) << cl.status().ToString();
  EXPECT_EQ(cl->config.socket_path, "/run/kvtier/kvtier.sock");
  EXPECT_EQ(cl->config.state_dir, "/var/lib/kvtier");
  EXPECT_EQ(cl->config.cache_dir, "/var/cache/kvtier");
  EXPECT_EQ(cl->config.model_path, "/var/cache/kvtier/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  EXPECT_EQ(cl->config.output_limit_bytes, size_t{8} << 20);
  EXPECT_EQ(cl->config.shutdown_grace_s, 5.0);
}

TEST(ConfigTest, KvtierSocketWinsOverXdg) {
  Result<CommandLine> cl = LoadConfig(
      {}, FakeEnv({{"KVTIER_SOCKET", "/tmp/k.sock"}, {"XDG_RUNTIME_DIR", "/run/user/7"}}));
  ASSERT_TRUE(cl.ok());
  EXPECT_EQ(cl->config.socket_path, "/tmp/k.sock");
}

TEST(ConfigTest, FlagsOverrideTheFile) {
  const std::string path = WriteFile(
      "threads = 3\nqueue_depth = 9\nallowed_uids = [1000, \"1001\"]\nidle_timeout_s = 2.5\n");
  Result<CommandLine> cl =
      LoadConfig({"--config", path, "--threads=5", "--allowed-uids", "7, 8"}, FakeEnv({}));
  ASSERT_TRUE(cl.ok()) << cl.status().ToString();
  EXPECT_EQ(cl->config.threads, 5);
  EXPECT_EQ(cl->config.queue_depth, 9);
  EXPECT_EQ(cl->config.idle_timeout_s, 2.5);
  EXPECT_EQ(cl->config.allowed_uids, (std::vector<uid_t>{7, 8}));
}

TEST(ConfigTest, RetrievalAttentionSettings) {
  const std::string path = WriteFile(
      "attention = \"sparse\"\nbudget_tokens = 1024\ndense_layers = 3\nsparse_scoring = "
      "\"bound\"\nsparse_min_tokens = 4096\nmatmul_activations = \"q8\"\nsparse_split = \"shared\"\n");
  Result<CommandLine> cl = LoadConfig({"--config", path, "--recent-tokens", "128"}, FakeEnv({}));
  ASSERT_TRUE(cl.ok()) << cl.status().ToString();
  EXPECT_EQ(cl->config.attention, "sparse");
  EXPECT_EQ(cl->config.budget_tokens, 1024);
  EXPECT_EQ(cl->config.dense_layers, 3);
  EXPECT_EQ(cl->config.sparse_scoring, "bound");
  EXPECT_EQ(cl->config.sparse_min_tokens, 4096);
  EXPECT_EQ(cl->config.recent_tokens, 128);
  EXPECT_EQ(cl->config.sink_tokens, 64);  // default kept
  EXPECT_EQ(cl->config.matmul_activations, "q8");
  Result<CommandLine> def = LoadConfig({}, FakeEnv({}));
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->config.matmul_activations, "f32");
  EXPECT_EQ(cl->config.sparse_split, "shared");
  EXPECT_EQ(def->config.sparse_split, "per-head");
}

TEST(ConfigTest, PrefetchBytes) {
  Result<CommandLine> def = LoadConfig({}, FakeEnv({}));
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->config.prefetch_bytes, uint64_t{64} << 20);  // on by default
  Result<CommandLine> file = LoadConfig({"--config", WriteFile("prefetch_bytes = 0\n")}, FakeEnv({}));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->config.prefetch_bytes, 0u);
  Result<CommandLine> flag = LoadConfig(
      {"--config", WriteFile("prefetch_bytes = 0\n"), "--prefetch-bytes", "1048576"}, FakeEnv({}));
  ASSERT_TRUE(flag.ok()) << flag.status().ToString();
  EXPECT_EQ(flag->config.prefetch_bytes, 1048576u);
  Result<CommandLine> bad = LoadConfig({"--config", WriteFile("prefetch_bytes = -1\n")}, FakeEnv({}));
  EXPECT_FALSE(bad.ok());
}

TEST(ConfigTest, StrictKeysTypesAndRanges) {
  const struct {
    const char* toml;
    const char* expect;
  } bad[] = {
      {"thread = 2\n", "'thread' is not a kvtierd setting"},
      {"threads = \"2\"\n", "must be an integer"},
      {"threads = 5000\n", "must be in [0, 1024]"},
      {"device = \"tpu\"\n", "auto, cpu or cuda"},
      {"allowed_groups = [\"no-such-group-kvtier\"]\n", "unknown group"},
      {"log_level = \"loud\"\n", "must be trace"},
      {"attention = \"fast\"\n", "auto, dense or sparse"},
      {"sparse_scoring = \"best\"\n", "sketch, sketch-only or bound"},
      {"matmul_activations = \"int4\"\n", "q8 or f32"},
      {"sparse_split = \"even\"\n", "shared or per-head"},
      {"budget_tokens = 8\n", "must be in [16,"},
      {"threads = \n", "kvtierd.toml:1"},
  };
  for (const auto& b : bad) {
    Result<CommandLine> cl = LoadConfig({"--config", WriteFile(b.toml)}, FakeEnv({}));
    ASSERT_FALSE(cl.ok()) << b.toml;
    EXPECT_NE(cl.status().message().find(b.expect), std::string::npos)
        << b.toml << " -> " << cl.status().message();
  }
  EXPECT_FALSE(LoadConfig({"--no-such-flag", "1"}, FakeEnv({})).ok());
  EXPECT_FALSE(LoadConfig({"--threads"}, FakeEnv({})).ok());
  EXPECT_FALSE(LoadConfig({"--queue-depth", "0"}, FakeEnv({})).ok());
  EXPECT_FALSE(LoadConfig({"--idle-timeout-s", "nan"}, FakeEnv({})).ok());
}

TEST(PeerTest, AccessPolicy) {
  DaemonConfig c;
  internal::PeerCredentials p;
  p.uid = 1000;
  p.gid = 1000;
  p.groups = {27, 1000};
  EXPECT_TRUE(internal::IsAllowed(c, p, 0)) << "no lists: the socket mode decides";
  c.allowed_uids = {1001};
  EXPECT_FALSE(internal::IsAllowed(c, p, 0));
  EXPECT_TRUE(internal::IsAllowed(c, p, 1000)) << "the daemon's own uid";
  c.allowed_gids = {27};
  EXPECT_TRUE(internal::IsAllowed(c, p, 0)) << "a supplementary group";
}

TEST(PeerTest, Namespaces) {
  DaemonConfig c;
  internal::PeerCredentials p;
  p.uid = 1000;
  p.gid = 100;
  EXPECT_EQ(internal::BaseNamespace(c, p), "uid:1000");
  c.shared_namespace_gid = 100;
  EXPECT_EQ(internal::BaseNamespace(c, p), "gid:100");
  c.shared_namespace_gid = 5;
  EXPECT_EQ(internal::BaseNamespace(c, p), "uid:1000");
  EXPECT_EQ(internal::RequestNamespace("uid:1000", ""), "uid:1000");
  EXPECT_EQ(internal::RequestNamespace("uid:1000", "proj"), "uid:1000/salt:proj");
}

}  // namespace
}  // namespace kvtier::daemon
