// The kvtier CLI end to end: the built `kvtier` binary against the REAL kvtierd (started as a
// child on a temporary socket with the real model), checking what it prints and its exit codes.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/client/client_test_util.h"

namespace kvtier::testing {
namespace {

using nlohmann::json;

class CliModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new DaemonProcess();
    ready_ = daemon_->WaitReady();
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(ready_) << "kvtierd did not start"; }

  // kvtier --socket <daemon> ARGS...
  static CommandResult Kvtier(std::vector<std::string> args, const std::string& input = "") {
    std::vector<std::string> argv = {KvtierBinary(), "--socket", daemon_->socket_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, input);
  }

  static std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = daemon_->dir() + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  static DaemonProcess* daemon_;
  static bool ready_;
};
DaemonProcess* CliModelTest::daemon_ = nullptr;
bool CliModelTest::ready_ = false;

std::string Document() {
  std::string s;
  for (int i = 0; i < 50; ++i) {
    s += "Paragraph " + std::to_string(i) + ": the lighthouse keeper counted ships at night. ";
  }
  return s;
}

TEST_F(CliModelTest, Health) {
  CommandResult r = Kvtier({"health"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("kvtierd "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(daemon_->socket_path()), std::string::npos);
  EXPECT_NE(r.out.find("SmolLM2"), std::string::npos);
  EXPECT_NE(r.out.find("backend: cpu"), std::string::npos);

  CommandResult j = Kvtier({"health", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  json v = json::parse(j.out);
  EXPECT_EQ(v["event"], "result");
  EXPECT_EQ(v["op"], "health");
}

TEST_F(CliModelTest, Tokenize) {
  CommandResult r = Kvtier({"tokenize"}, "Hello, world");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "19556 28 905\n");
  CommandResult j = Kvtier({"tokenize", "--json"}, "Hello, world");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_EQ(j.out, "[19556,28,905]\n");
}

TEST_F(CliModelTest, GenerateTextAndJsonAgree) {
  CommandResult text = Kvtier({"generate", "--raw", "--prompt", "The capital of France is",
                               "--max-tokens", "10", "--temperature", "0"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  CommandResult j = Kvtier({"generate", "--raw", "--prompt", "The capital of France is",
                            "--max-tokens", "10", "--temperature", "0", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  json v = json::parse(j.out);
  EXPECT_EQ(v["op"], "generate");
  EXPECT_EQ(v["finish_reason"], "length");
  EXPECT_EQ(v["usage"]["completion_tokens"], 10);
  EXPECT_EQ(text.out, v["text"].get<std::string>() + "\n");
  EXPECT_TRUE(v["timing"].contains("ttft_ms"));
}

TEST_F(CliModelTest, GeneratePromptFromStdinAndFile) {
  CommandResult a = Kvtier({"generate", "--max-tokens", "6", "--temperature", "0", "--json"},
                           "What is two plus two?");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const std::string path = WriteFile("q.txt", "What is two plus two?");
  CommandResult b = Kvtier(
      {"generate", "--prompt-file", path, "--max-tokens", "6", "--temperature", "0", "--json"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(json::parse(a.out)["text"], json::parse(b.out)["text"]);
  // The chat template was applied: the prompt is longer than the bare question.
  EXPECT_GT(json::parse(a.out)["usage"]["prompt_tokens"].get<int>(), 8);
}

TEST_F(CliModelTest, PrefillPinsShowsProgressAndTheNextQuestionReusesIt) {
  const std::string doc = WriteFile("doc.txt", Document());
  CommandResult p = Kvtier({"prefill", "--pin", "cli-doc", doc});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_NE(p.out.find("prefilled "), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("pinned as 'cli-doc'"), std::string::npos) << p.out;
  // stderr is a file here: plain progress lines, the last at 100%.
  EXPECT_NE(p.err.find("prefill "), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("100%"), std::string::npos) << p.err;
  EXPECT_EQ(p.err.find('\r'), std::string::npos) << "no terminal redraws in a log";

  CommandResult pins = Kvtier({"pins"});
  ASSERT_EQ(pins.exit_code, 0) << pins.err;
  EXPECT_NE(pins.out.find("cli-doc"), std::string::npos) << pins.out;

  // Prefill again: everything cached.
  CommandResult again = Kvtier({"prefill", "--json", doc});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  json v = json::parse(again.out);
  EXPECT_EQ(v["op"], "prefill");
  EXPECT_GE(v["cached_tokens"].get<int64_t>(), v["tokens"].get<int64_t>() - 64);

  // A question about the document (same chat form, document first) reuses its prefix.
  const std::string q =
      WriteFile("docq.txt", Document() + "\nQuestion: what did the keeper count?");
  CommandResult g =
      Kvtier({"generate", "--prompt-file", q, "--max-tokens", "4", "--temperature", "0", "--json"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_GE(json::parse(g.out)["usage"]["cached_tokens"].get<int64_t>(), 512) << g.out;

  CommandResult u = Kvtier({"unpin", "cli-doc"});
  ASSERT_EQ(u.exit_code, 0) << u.err;
  EXPECT_EQ(u.out, "unpinned 'cli-doc'\n");
  CommandResult u2 = Kvtier({"unpin", "cli-doc"});
  EXPECT_EQ(u2.exit_code, 1);
  EXPECT_NE(u2.err.find("no pin named 'cli-doc'"), std::string::npos) << u2.err;
}

TEST_F(CliModelTest, StatsTableAndJson) {
  CommandResult s = Kvtier({"stats"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(s.out.rfind("tier ", 0), 0u) << s.out;
  EXPECT_NE(s.out.find("\ndevice "), std::string::npos) << s.out;
  EXPECT_NE(s.out.find(" pages"), std::string::npos);
  EXPECT_NE(s.out.find("requests: "), std::string::npos);
  CommandResult j = Kvtier({"stats", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  json v = json::parse(j.out);
  EXPECT_EQ(v["op"], "stats");
  EXPECT_TRUE(v["tiers"].contains("device"));
  EXPECT_TRUE(v.contains("daemon")) << "the raw object, daemon extras included";
}

TEST_F(CliModelTest, Evict) {
  CommandResult e = Kvtier({"evict", "--tier", "host"});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_EQ(e.out.rfind("freed ", 0), 0u) << e.out;
  CommandResult all = Kvtier({"evict", "--json"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_TRUE(json::parse(all.out).contains("freed_bytes"));
  CommandResult bad = Kvtier({"evict", "--tier", "moon"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--tier must be"), std::string::npos);
}

TEST_F(CliModelTest, DaemonErrorsAreOneLineAndExitOne) {
  CommandResult r = Kvtier({"prefill", "--pin", "bad name!", WriteFile("x.txt", "some text")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("kvtier: bad_request: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("pin"), std::string::npos) << r.err;
}

TEST_F(CliModelTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Kvtier({"frobnicate"}).exit_code, 2);
  CommandResult typo = Kvtier({"generate", "--max-tokenz", "3"});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("unknown option --max-tokenz"), std::string::npos) << typo.err;
  CommandResult local_only = Kvtier({"stats", "--model", "/x.gguf"});
  EXPECT_EQ(local_only.exit_code, 2);
  EXPECT_NE(local_only.err.find("--local"), std::string::npos) << local_only.err;
  CommandResult no_local = RunCommand({KvtierBinary(), "stats", "--local"});
  EXPECT_EQ(no_local.exit_code, 2);
}

TEST_F(CliModelTest, NoDaemonSaysSo) {
  const std::string path = daemon_->dir() + "/nobody-here.sock";
  CommandResult r = RunCommand({KvtierBinary(), "--socket", path, "health"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is kvtierd running? (socket " + path + ")"), std::string::npos) << r.err;
  // $KVTIER_SOCKET is the default.
  CommandResult env = RunCommand({KvtierBinary(), "health"}, "", {"KVTIER_SOCKET=" + path});
  EXPECT_EQ(env.exit_code, 1);
  EXPECT_NE(env.err.find(path), std::string::npos) << env.err;
  CommandResult ok =
      RunCommand({KvtierBinary(), "health"}, "", {"KVTIER_SOCKET=" + daemon_->socket_path()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST_F(CliModelTest, LocalModeStillWorks) {
  CommandResult r = RunCommand(
      {KvtierBinary(), "tokenize", "--local", "--model", ModelPath(), "--json"}, "Hello, world");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[19556,28,905]\n");
  const std::string dir = daemon_->dir() + "/local";
  CommandResult p = RunCommand({KvtierBinary(), "prefill", "--local", "--model", ModelPath(),
                                "--cache-dir", dir + "/cache", "--state-dir", dir + "/state",
                                "--threads", "2", "--json", WriteFile("local.txt", Document())});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  json v = json::parse(p.out);
  EXPECT_EQ(v["op"], "prefill");
  EXPECT_GT(v["tokens"].get<int64_t>(), 500);

  // A second process asks about the document sparsely: the cached prefix stays cold on disk
  // (nothing is in this process's RAM) and only the pages attention selects are decoded, which
  // --json reports per tier.
  const std::string q =
      WriteFile("localq.txt", Document() + "\nQuestion: what did the keeper count?");
  CommandResult g = RunCommand({KvtierBinary(), "generate", "--local", "--model", ModelPath(),
                                "--cache-dir", dir + "/cache", "--state-dir", dir + "/state",
                                "--threads", "2", "--attention", "sparse", "--budget", "384",
                                "--max-tokens", "2", "--temperature", "0", "--json",
                                "--prompt-file", q});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  json gj = json::parse(g.out);
  EXPECT_GE(gj["usage"]["cached_by_tier"]["disk"].get<int64_t>(), 512) << g.out;
  const json& rt = gj["retrieval"];
  EXPECT_EQ(rt["attention"], "sparse") << g.out;
  EXPECT_GT(rt["sparse_steps"].get<int64_t>(), 0) << g.out;
  EXPECT_GE(rt["cold_tokens"].get<int64_t>(), 512) << g.out;
  // Nothing was in this process's RAM: every record came from disk once (a read on the compute
  // thread or a prefetch), then served the pages of later layers from the host tier.
  const int64_t from_disk = rt["pages_promoted_by_tier"]["disk"].get<int64_t>();
  const int64_t from_host = rt["pages_promoted_by_tier"]["host"].get<int64_t>();
  const int64_t prefetched = rt["prefetch"]["hits"].get<int64_t>();
  EXPECT_GT(from_disk, 0) << g.out;  // the first step's first sparse layer has no prefetch
  EXPECT_EQ(rt["disk_reads"].get<int64_t>(), from_disk) << g.out;
  EXPECT_EQ(rt["pages_promoted"].get<int64_t>(), from_disk + from_host + prefetched) << g.out;
  EXPECT_EQ(rt["hot_misses"].get<int64_t>(), rt["pages_promoted"].get<int64_t>()) << g.out;
  EXPECT_GT(rt["bytes_decompressed"].get<int64_t>(), 0) << g.out;

  // 8-bit activations (llama.cpp's arithmetic; the default is float): the same greedy answer
  // to an easy question; a bad value is refused.
  CommandResult q8 = RunCommand({KvtierBinary(), "generate", "--local", "--model", ModelPath(),
                                 "--disk-cache-bytes", "0", "--threads", "2",
                                 "--matmul-activations", "q8", "--max-tokens", "3",
                                 "--temperature", "0", "--raw", "--prompt",
                                 "The capital of France is"});
  ASSERT_EQ(q8.exit_code, 0) << q8.err;
  EXPECT_EQ(q8.out.rfind(" Paris", 0), 0u) << q8.out;
  CommandResult bad = RunCommand({KvtierBinary(), "generate", "--local", "--model", ModelPath(),
                                  "--matmul-activations", "int4", "--prompt", "x"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("q8 or f32"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace kvtier::testing
