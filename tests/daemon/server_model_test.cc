// kvtierd over a real socket with the real model: every op, concurrency, cancellation,
// disconnects, limits, namespaces across uids, and the shutdown sequence.
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <thread>

#include "tests/daemon/daemon_test_util.h"

namespace kvtier::testing {
namespace {

// A prompt of a few hundred tokens: several whole 64-token extents to cache.
std::string LongPrompt(const std::string& topic) {
  std::string p = "Background notes on " + topic + ".\n";
  for (int i = 0; i < 40; ++i) {
    p += "Paragraph " + std::to_string(i) + " about " + topic + " and its many details. ";
  }
  return p + "\nSummarise the notes in one word:";
}

// A raw prompt greedy decoding continues for thousands of tokens (no early end of text).
const char kEndless[] = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,";

// Waits until the daemon reports `n` open connections (closes are noticed asynchronously).
void WaitForConnections(Client& c, int n) {
  for (int i = 0; i < 200; ++i) {
    std::optional<json> s = c.Call({{"id", "conns"}, {"op", "stats"}});
    ASSERT_TRUE(s);
    if ((*s)["daemon"]["connections"] == n) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "the daemon never reported " << n << " connections";
}

json Generate(int64_t id, const std::string& prompt, int max_tokens, bool stream = false) {
  return {{"id", id},           {"op", "generate"}, {"prompt", prompt}, {"max_tokens", max_tokens},
          {"temperature", 0.0}, {"stream", stream}};
}

TEST(DaemonTest, EveryOp) {
  Daemon d;
  Client c(d.socket_path());
  ASSERT_TRUE(c.connected());

  std::optional<json> r = c.Call({{"id", 1}, {"op", "health"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "result");
  EXPECT_EQ((*r)["model"], "SmolLM2-135M-Instruct.Q4_1.gguf");
  EXPECT_EQ((*r)["backend"], "cpu");
  EXPECT_GE((*r)["uptime_s"].get<double>(), 0.0);

  r = c.Call({{"id", "tok"}, {"op", "tokenize"}, {"text", "Hello world"}});
  ASSERT_TRUE(r);
  ASSERT_EQ((*r)["event"], "result") << r->dump();
  const std::vector<int32_t> tokens = (*r)["tokens"].get<std::vector<int32_t>>();
  ASSERT_FALSE(tokens.empty());
  r = c.Call({{"id", 2}, {"op", "detokenize"}, {"tokens", tokens}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["text"], "Hello world");

  // Streamed generation: the token lines add up to the result's text.
  std::vector<json> events;
  r = c.Call(Generate(3, "The capital of France is", 6, true), &events);
  ASSERT_TRUE(r);
  ASSERT_EQ((*r)["event"], "result") << r->dump();
  std::string streamed;
  for (const json& e : events) {
    EXPECT_EQ(e["event"], "token");
    streamed += e["text"].get<std::string>();
  }
  EXPECT_EQ(streamed, (*r)["text"].get<std::string>());
  EXPECT_EQ((*r)["usage"]["completion_tokens"], events.size());
  EXPECT_EQ((*r)["finish_reason"], "length");
  EXPECT_NE((*r)["text"].get<std::string>().find("Paris"), std::string::npos) << r->dump();

  // Not streamed: no token lines, same greedy text.
  events.clear();
  std::optional<json> r2 = c.Call(Generate(4, "The capital of France is", 6, false), &events);
  ASSERT_TRUE(r2);
  EXPECT_TRUE(events.empty());
  EXPECT_EQ((*r2)["text"], (*r)["text"]);

  // Prefill with progress and a pin; pins lists it; the same prompt is then cached.
  const std::string doc = LongPrompt("lighthouses");
  events.clear();
  r = c.Call({{"id", 5}, {"op", "prefill"}, {"prompt", doc}, {"pin", "doc"}}, &events);
  ASSERT_TRUE(r);
  ASSERT_EQ((*r)["event"], "result") << r->dump();
  const int64_t doc_tokens = (*r)["tokens"].get<int64_t>();
  EXPECT_GT(doc_tokens, 128);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.front()["event"], "progress");
  EXPECT_EQ(events.back()["done"], doc_tokens);
  EXPECT_EQ(events.back()["total"], doc_tokens);
  r = c.Call({{"id", 6}, {"op", "pins"}});
  ASSERT_TRUE(r);
  ASSERT_EQ((*r)["pins"].size(), 1u) << r->dump();
  EXPECT_EQ((*r)["pins"][0]["name"], "doc");
  EXPECT_GT((*r)["pins"][0]["tokens"].get<int64_t>(), 0);
  r = c.Call(Generate(7, doc, 2));
  ASSERT_TRUE(r);
  EXPECT_GT((*r)["usage"]["cached_tokens"].get<int64_t>(), 0) << r->dump();

  r = c.Call({{"id", 8}, {"op", "unpin"}, {"name", "doc"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["unpinned"], true);
  r = c.Call({{"id", 9}, {"op", "unpin"}, {"name", "doc"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["unpinned"], false);

  r = c.Call({{"id", 10}, {"op", "stats"}});
  ASSERT_TRUE(r);
  ASSERT_EQ((*r)["event"], "result");
  EXPECT_TRUE((*r)["tiers"].contains("device")) << r->dump();
  EXPECT_GT((*r)["tiers"]["device"]["hits"].get<int64_t>(), 0);
  EXPECT_GE((*r)["requests"]["total"].get<int64_t>(), 10);
  EXPECT_EQ((*r)["requests"]["errors"], 0);
  EXPECT_EQ((*r)["daemon"]["connections"], 1);

  r = c.Call({{"id", 11}, {"op", "evict"}, {"tier", "all"}});
  ASSERT_TRUE(r);
  ASSERT_EQ((*r)["event"], "result") << r->dump();
  EXPECT_GT((*r)["freed_bytes"].get<int64_t>(), 0);
  r = c.Call(Generate(12, doc, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["usage"]["cached_tokens"], 0) << "evicted prefixes are gone";

  // cancel: an unknown target; a queued request (removed before it starts); a running one.
  r = c.Call({{"id", 13}, {"op", "cancel"}, {"target", "nope"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["cancelled"], false);
  ASSERT_TRUE(c.Send(Generate(14, kEndless, 4000, true)));
  ASSERT_TRUE(c.Send(Generate(15, "Say hi", 4)));
  std::optional<json> first_token = c.ReadEvent();  // 14 is running
  ASSERT_TRUE(first_token);
  EXPECT_EQ((*first_token)["id"], 14);
  r = c.Call({{"id", 16}, {"op", "cancel"}, {"target", 15}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["cancelled"], true);
  r = c.WaitFinal(15);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "error");
  EXPECT_EQ((*r)["code"], "cancelled");
  r = c.Call({{"id", 17}, {"op", "cancel"}, {"target", 14}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["cancelled"], true);
  r = c.WaitFinal(14, nullptr, 10000);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "result");
  EXPECT_EQ((*r)["finish_reason"], "cancelled");
  EXPECT_LT((*r)["usage"]["completion_tokens"].get<int64_t>(), 4000);

  r = c.Call({{"id", 18}, {"op", "stats"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["daemon"]["cancelled"], 2);
}

TEST(DaemonTest, ThirtyTwoConcurrentClientsMixedOps) {
  Daemon d;
  std::atomic<int> errors{0}, results{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&, t] {
      Client c(d.socket_path());
      if (!c.connected()) {
        ++errors;
        return;
      }
      // Pipelined: several requests in flight on the connection at once.
      std::vector<json> reqs = {
          {{"id", 1}, {"op", "health"}},
          {{"id", 2}, {"op", "tokenize"}, {"text", "client " + std::to_string(t)}},
          t % 2 == 0 ? Generate(3, "Client " + std::to_string(t % 4) + " says", 3, t % 4 == 0)
                     : json{{"id", 3}, {"op", "pins"}},
          {{"id", 4}, {"op", "stats"}},
          {{"id", 5}, {"op", "detokenize"}, {"tokens", {1, 2, 3}}},
      };
      for (const json& r : reqs) c.Send(r);
      for (const json& r : reqs) {
        std::optional<json> f = c.WaitFinal(r["id"], nullptr, 120000);
        if (!f || (*f)["event"] != "result") {
          ++errors;
          ADD_FAILURE() << "client " << t << ": " << (f ? f->dump() : "no answer");
        } else {
          ++results;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(results.load(), 32 * 5);
  Client c(d.socket_path());
  std::optional<json> s = c.Call({{"id", 1}, {"op", "stats"}});
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["requests"]["errors"], 0);
  // 32 clients, this one, and the harness's readiness probe.
  EXPECT_EQ((*s)["daemon"]["connections_total"], 34);
}

TEST(DaemonTest, DisconnectMidStreamFreesItsWork) {
  Daemon d;
  {
    Client a(d.socket_path());
    ASSERT_TRUE(a.Send(Generate(1, kEndless, 6000, true)));
    for (int i = 0; i < 3; ++i) {
      std::optional<json> e = a.ReadEvent();
      ASSERT_TRUE(e);
      EXPECT_EQ((*e)["event"], "token");
    }
  }  // closed mid-stream: 6000 tokens would take minutes
  Client b(d.socket_path());
  const Clock::time_point t0 = Clock::now();
  std::optional<json> r = b.Call(Generate(1, "Hi", 2), nullptr, 30000);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "result");
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  r = b.Call({{"id", 2}, {"op", "stats"}});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["daemon"]["cancelled"], 1) << r->dump();
  EXPECT_EQ((*r)["requests"]["active"], 0);
  EXPECT_EQ((*r)["requests"]["queued"], 0);
}

TEST(DaemonTest, HalfClosedClientStillGetsItsAnswers) {
  Daemon d;
  Client c(d.socket_path());
  ASSERT_TRUE(c.Send(Generate(1, "Hello", 3)));
  ASSERT_TRUE(c.Send({{"id", 2}, {"op", "health"}}));
  shutdown(c.fd(), SHUT_WR);
  std::optional<json> r = c.WaitFinal(1);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "result");
  EXPECT_TRUE(c.WaitFinal(2));
  EXPECT_TRUE(c.WaitClosed());
}

TEST(DaemonTest, QueueFullIsBusyAtOnce) {
  Daemon d({"--queue-depth", "1"});
  Client c(d.socket_path());
  ASSERT_TRUE(c.Send(Generate(1, kEndless, 3000, true)));
  std::optional<json> e = c.ReadEvent();  // 1 runs
  ASSERT_TRUE(e);
  ASSERT_TRUE(c.Send(Generate(2, "Hi", 2)));  // waits in the queue
  const Clock::time_point t0 = Clock::now();
  std::optional<json> r = c.Call(Generate(3, "Hi", 2), nullptr, 5000);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "busy") << r->dump();
  // At once, not after the running generation (minutes); slack for a loaded CI machine.
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  // tokenize does not wait behind generation.
  r = c.Call({{"id", 4}, {"op", "tokenize"}, {"text", "still quick"}}, nullptr, 5000);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "result");
  ASSERT_TRUE(c.Call({{"id", 5}, {"op", "cancel"}, {"target", 1}}));
  EXPECT_TRUE(c.WaitFinal(1));
  r = c.WaitFinal(2);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "result");
}

TEST(DaemonTest, ConnectionLimitRefusesFastAndExplicitly) {
  Daemon d({"--max-connections", "2"});
  Client a(d.socket_path());
  WaitForConnections(a, 1);  // the harness's readiness probe has gone
  Client b(d.socket_path());
  ASSERT_TRUE(a.Call({{"id", 1}, {"op", "health"}}));
  ASSERT_TRUE(b.Call({{"id", 1}, {"op", "health"}}));
  Client c(d.socket_path());
  std::optional<json> e = c.ReadEvent(5000);
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["event"], "error");
  EXPECT_EQ((*e)["code"], "busy");
  EXPECT_TRUE(c.WaitClosed());
  a.Close();
  // A slot frees when a client leaves.
  for (int i = 0; i < 100; ++i) {
    Client again(d.socket_path());
    ASSERT_TRUE(again.Send({{"id", 1}, {"op", "health"}}));
    std::optional<json> r = again.ReadEvent(5000);  // the result, or the refusal
    ASSERT_TRUE(r);
    if ((*r)["event"] == "result") return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "no connection slot freed";
}

TEST(DaemonTest, IdleConnectionsAreClosed) {
  Daemon d({"--idle-timeout-s", "0.3"});
  Client c(d.socket_path());
  ASSERT_TRUE(c.Call({{"id", 1}, {"op", "health"}}));
  const Clock::time_point t0 = Clock::now();
  EXPECT_TRUE(c.WaitClosed(5000));
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(250));
}

TEST(DaemonTest, AClientThatStopsReadingIsDisconnected) {
  Daemon d({"--output-limit-bytes", "65536"});
  Client slow(d.socket_path());
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "word" + std::to_string(i) + " ";
  // Each answer is tens of KB; the client never reads them.
  for (int i = 0; i < 60; ++i) {
    if (!slow.Send({{"id", i}, {"op", "tokenize"}, {"text", text}})) break;
  }
  Client watcher(d.socket_path());
  bool dropped = false;
  for (int i = 0; i < 200 && !dropped; ++i) {
    std::optional<json> s = watcher.Call({{"id", i}, {"op", "stats"}});
    ASSERT_TRUE(s);
    dropped = (*s)["daemon"]["slow_clients_dropped"] == 1;
    if (!dropped) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_TRUE(dropped);
  EXPECT_TRUE(slow.WaitClosed(10000));
  EXPECT_TRUE(watcher.Call({{"id", "after"}, {"op", "health"}}));
}

// Runs `requests` as `uid` in a child process; returns the final lines, in order. With no
// requests, returns the first line the daemon sends on its own.
std::vector<json> RunAsUid(uid_t uid, const std::string& socket,
                           const std::vector<json>& requests) {
  int pipefd[2];
  EXPECT_EQ(pipe(pipefd), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(pipefd[0]);
    if (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0) _exit(3);
    std::string out;
    {
      Client c(socket);
      if (requests.empty()) {
        std::optional<json> e = c.connected() ? c.ReadEvent(10000) : std::nullopt;
        out += (e ? e->dump() : std::string("null")) + "\n";
      }
      for (const json& r : requests) {
        std::optional<json> f = c.connected() ? c.Call(r) : std::nullopt;
        out += (f ? f->dump() : std::string("null")) + "\n";
      }
    }
    const ssize_t n = write(pipefd[1], out.data(), out.size());
    _exit(n == static_cast<ssize_t>(out.size()) ? 0 : 4);
  }
  close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  std::vector<json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) lines.push_back(json::parse(line));
  return lines;
}

int64_t Cached(const json& r) {
  EXPECT_EQ(r["event"], "result") << r.dump();
  return r.value("usage", json::object()).value("cached_tokens", int64_t{-1});
}

TEST(DaemonTest, UidsNeverShareCachedPrefixesOnAnyTier) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run clients as other uids";
  const std::string sock_dir = MakeTempDir("kvtierd_sock_");
  chmod(sock_dir.c_str(), 0777);
  Daemon d({}, sock_dir);
  chmod(d.socket_path().c_str(), 0666);  // the test's stand-in for a shared group
  const std::string doc = LongPrompt("the history of tea");
  const uid_t kA = 65534, kB = 65533;
  auto gen = [&](int64_t id, const std::string& salt) {
    json r = Generate(id, doc, 1);
    if (!salt.empty()) r["cache_salt"] = salt;
    return r;
  };
  auto evict = [](int64_t id, const std::string& tier) {
    return json{{"id", id}, {"op", "evict"}, {"tier", tier}};
  };
  // A computes the prefix; A's second run hits the device tier.
  std::vector<json> a = RunAsUid(kA, d.socket_path(), {gen(1, ""), gen(2, "")});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(Cached(a[0]), 0);
  EXPECT_GT(Cached(a[1]), 0);
  EXPECT_GT(a[1]["usage"]["cached_by_tier"]["device"].get<int64_t>(), 0);
  // B sees nothing of A's (A's extents are on the device tier and below).
  std::vector<json> b = RunAsUid(kB, d.socket_path(), {gen(1, "")});
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(Cached(b[0]), 0);
  // A drops its device copies: A's next hit comes from a lower tier.
  a = RunAsUid(kA, d.socket_path(), {evict(3, "device"), gen(4, "")});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]["event"], "result") << a[0].dump();
  EXPECT_GT(Cached(a[1]), 0);
  const json& tiers = a[1]["usage"]["cached_by_tier"];
  EXPECT_GT(tiers["host"].get<int64_t>() + tiers["disk"].get<int64_t>(), 0) << a[1].dump();
  // With A's extents only below the device tier, B (fresh salt: nothing of its own) still
  // misses; B's own namespace hits.
  a = RunAsUid(kA, d.socket_path(), {evict(5, "device")});
  b = RunAsUid(kB, d.socket_path(), {gen(2, "fresh"), gen(3, ""), gen(4, "")});
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(Cached(b[0]), 0);
  EXPECT_GT(Cached(b[1]), 0);
  EXPECT_GT(Cached(b[2]), 0);
  // A salt narrows A's namespace: a miss first, then a hit.
  a = RunAsUid(kA, d.socket_path(), {gen(6, "s1"), gen(7, "s1")});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(Cached(a[0]), 0);
  EXPECT_GT(Cached(a[1]), 0);
  std::error_code ec;
  std::filesystem::remove_all(sock_dir, ec);
}

TEST(DaemonTest, AllowedUidsRefuseOthers) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run clients as other uids";
  const std::string sock_dir = MakeTempDir("kvtierd_sock_");
  chmod(sock_dir.c_str(), 0777);
  Daemon d({"--allowed-uids", "65534"}, sock_dir);
  chmod(d.socket_path().c_str(), 0666);
  std::vector<json> ok = RunAsUid(65534, d.socket_path(), {{{"id", 1}, {"op", "health"}}});
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0]["event"], "result");
  // The refused client gets one forbidden line (id null) and then the close.
  std::vector<json> no = RunAsUid(65533, d.socket_path(), {});
  ASSERT_EQ(no.size(), 1u);
  EXPECT_EQ(no[0]["code"], "forbidden") << no[0].dump();
  std::error_code ec;
  std::filesystem::remove_all(sock_dir, ec);
}

TEST(DaemonTest, SigtermFinishesInFlightWorkThenExits) {
  Daemon d({"--shutdown-grace-s", "5"});
  Client c(d.socket_path());
  ASSERT_TRUE(c.Send(Generate(1, kEndless, 5, true)));
  ASSERT_TRUE(c.ReadEvent());
  kill(d.pid(), SIGTERM);
  std::optional<json> r = c.WaitFinal(1);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "result");
  EXPECT_EQ((*r)["finish_reason"], "length");  // finished within the grace
  EXPECT_TRUE(c.WaitClosed());
  const int status = d.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(std::filesystem::exists(d.socket_path()));
}

TEST(DaemonTest, SigtermCancelsWorkPastTheGrace) {
  Daemon d({"--shutdown-grace-s", "0.3"});
  Client c(d.socket_path());
  ASSERT_TRUE(c.Send(Generate(1, kEndless, 6000, true)));
  ASSERT_TRUE(c.Send(Generate(2, "Queued behind it", 5)));
  ASSERT_TRUE(c.ReadEvent());
  const Clock::time_point t0 = Clock::now();
  kill(d.pid(), SIGTERM);
  std::optional<json> r1 = c.WaitFinal(1, nullptr, 10000);
  std::optional<json> r2 = c.WaitFinal(2, nullptr, 10000);
  ASSERT_TRUE(r1);
  ASSERT_TRUE(r2);
  EXPECT_EQ((*r1)["finish_reason"], "cancelled") << r1->dump();
  EXPECT_EQ((*r2)["code"], "cancelled") << r2->dump();
  EXPECT_TRUE(c.WaitClosed());
  const int status = d.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // Far less than the 6,000 tokens would take (over a minute), with room for a loaded CI box.
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(20));
}

TEST(DaemonTest, StaleSocketIsReplacedButALiveOneIsNot) {
  const std::string dir = MakeTempDir("kvtierd_stale_");
  const std::string path = dir + "/kvtier.sock";
  {
    // A socket file nobody listens on.
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    close(fd);
  }
  Daemon first({}, dir);
  Client c(first.socket_path());
  ASSERT_TRUE(c.Call({{"id", 1}, {"op", "health"}}));
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  // A second daemon on the same path refuses to start and leaves the first alone.
  const std::string cmd = KvtierdPath() + " --model " + ModelPath() + " --socket " + path +
                          " --disk-cache-bytes 0 --log-level error 2>/dev/null";
  const int rc = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1) << rc;
  EXPECT_TRUE(c.Call({{"id", 2}, {"op", "health"}}));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(DaemonTest, RuntimeDirectoryIsCreated0750) {
  Daemon d;
  struct stat st {};
  ASSERT_EQ(stat(std::filesystem::path(d.socket_path()).parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
  ASSERT_EQ(stat(d.socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
}

TEST(DaemonTest, LogsCarryNoPromptOrGeneratedText) {
  Daemon d({"--log-level", "info"});
  Client c(d.socket_path());
  std::optional<json> r = c.Call(Generate(1, "zebra-secret-prompt-words", 4));
  ASSERT_TRUE(r);
  const std::string text = (*r)["text"].get<std::string>();
  std::optional<json> t = c.Call({{"id", 2}, {"op", "tokenize"}, {"text", "another-secret"}});
  ASSERT_TRUE(t);
  c.Close();
  d.Stop();
  const std::string log = d.log();
  EXPECT_EQ(log.find("zebra-secret"), std::string::npos) << log;
  EXPECT_EQ(log.find("another-secret"), std::string::npos) << log;
  if (text.size() > 6) {
    EXPECT_EQ(log.find(text), std::string::npos) << log;
  }
  EXPECT_NE(log.find("generate 1 prompt"), std::string::npos) << log;
}

}  // namespace
}  // namespace kvtier::testing
