// kvtierd under systemd-socket-activate with a fake NOTIFY_SOCKET: it serves on the inherited
// socket, says READY=1 only once the model and the cache index are open, pings the watchdog and
// says STOPPING=1 on SIGTERM.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <string>
#include <vector>

#include "tests/daemon/daemon_test_util.h"

namespace kvtier::testing {
namespace {

const char kSocketActivate[] = "/usr/bin/systemd-socket-activate";

// A datagram socket standing in for systemd's notify socket.
class FakeNotifySocket {
 public:
  explicit FakeNotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  ~FakeNotifySocket() { close(fd_); }

  // The next message (one sd_notify call), nullopt after timeout_ms.
  std::optional<std::string> Next(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }

  // Messages until one contains `what` (returned last), or all of them within timeout_ms.
  std::vector<std::string> Until(const std::string& what, int timeout_ms) {
    std::vector<std::string> got;
    const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      const int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      std::optional<std::string> m = Next(std::max(left, 1));
      if (!m) continue;
      got.push_back(*m);
      if (m->find(what) != std::string::npos) break;
    }
    return got;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

bool Contains(const std::vector<std::string>& msgs, const std::string& what) {
  for (const std::string& m : msgs) {
    if (m.find(what) != std::string::npos) return true;
  }
  return false;
}

// Starts kvtierd through systemd-socket-activate listening on `listen_path`.
pid_t StartActivated(const std::string& dir, const std::string& listen_path,
                     const std::string& notify_path, const std::string& model) {
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string log = dir + "/kvtierd.log";
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<std::string> args = {kSocketActivate,
                                     "-l",
                                     listen_path,
                                     "-E",
                                     "NOTIFY_SOCKET=" + notify_path,
                                     "-E",
                                     "WATCHDOG_USEC=200000",
                                     KvtierdPath(),
                                     "--model",
                                     model,
                                     "--socket",
                                     dir + "/not-used/kvtier.sock",
                                     "--cache-dir",
                                     dir + "/cache",
                                     "--state-dir",
                                     dir + "/state",
                                     "--threads",
                                     "2"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("LISTEN_FDS");
    execv(argv[0], argv.data());
    _exit(127);
  }
  // systemd-socket-activate binds the socket, then waits for the first connection.
  for (int i = 0; i < 500 && !std::filesystem::exists(listen_path); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pid;
}

int WaitExit(pid_t pid, int timeout_ms) {
  int status = -1;
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status;
}

TEST(DaemonSystemdTest, SocketActivationNotifyAndWatchdog) {
  if (access(kSocketActivate, X_OK) != 0) GTEST_SKIP() << "systemd-socket-activate not installed";
  const std::string dir = MakeTempDir("kvtierd_sd_");
  FakeNotifySocket notify(dir + "/notify.sock");
  const std::string listen_path = dir + "/activated.sock";
  const pid_t pid = StartActivated(dir, listen_path, notify.path(), ModelPath());
  ASSERT_TRUE(std::filesystem::exists(listen_path));
  // Nothing runs yet: the daemon starts on the first connection, which waits in the backlog.
  EXPECT_FALSE(notify.Next(200));
  Client c(listen_path);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send({{"id", 1}, {"op", "health"}}));
  std::vector<std::string> msgs = notify.Until("READY=1", 30000);
  ASSERT_TRUE(Contains(msgs, "READY=1")) << ReadFile(dir + "/kvtierd.log");
  // READY=1 comes after the loading status, once the engine (model and index) is open: the
  // request queued before it is answered.
  ASSERT_GE(msgs.size(), 2u);
  EXPECT_NE(msgs.front().find("STATUS=loading"), std::string::npos) << msgs.front();
  EXPECT_NE(msgs.back().find("READY=1"), std::string::npos);
  std::optional<json> r = c.WaitFinal(1, nullptr, 30000);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["event"], "result");
  // The inherited socket is used; the configured path is never created.
  EXPECT_FALSE(std::filesystem::exists(dir + "/not-used"));
  // Watchdog pings at half of WATCHDOG_USEC (200 ms): several in a second.
  int pings = 0;
  const Clock::time_point t0 = Clock::now();
  while (Clock::now() - t0 < std::chrono::seconds(1)) {
    std::optional<std::string> m = notify.Next(1000);
    if (m && m->find("WATCHDOG=1") != std::string::npos) ++pings;
  }
  EXPECT_GE(pings, 3);
  EXPECT_LE(pings, 15);
  // SIGTERM: STOPPING=1, then a clean exit.
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  msgs = notify.Until("STOPPING=1", 10000);
  EXPECT_TRUE(Contains(msgs, "STOPPING=1"));
  const int status = WaitExit(pid, 20000);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(DaemonSystemdTest, NoReadyWhenTheModelCannotBeOpened) {
  if (access(kSocketActivate, X_OK) != 0) GTEST_SKIP() << "systemd-socket-activate not installed";
  const std::string dir = MakeTempDir("kvtierd_sd_");
  FakeNotifySocket notify(dir + "/notify.sock");
  const std::string listen_path = dir + "/activated.sock";
  const pid_t pid = StartActivated(dir, listen_path, notify.path(), dir + "/missing.gguf");
  Client c(listen_path);
  ASSERT_TRUE(c.connected());
  const int status = WaitExit(pid, 20000);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  std::vector<std::string> msgs;
  while (std::optional<std::string> m = notify.Next(100)) msgs.push_back(*m);
  EXPECT_FALSE(Contains(msgs, "READY=1"));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace kvtier::testing
