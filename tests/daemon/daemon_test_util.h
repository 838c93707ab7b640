// tests/daemon/daemon_test_util.h — runs the real kvtierd binary as a child process on a
// temporary socket, and a minimal NDJSON client over a plain Unix socket.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_support.h"

namespace kvtier::testing {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

inline std::string KvtierdPath() {
  if (const char* p = std::getenv("KVTIERD"); p && *p) return p;
  return KVTIERD_PATH;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Connects to a Unix socket; -1 on failure.
inline int ConnectUnix(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A blocking NDJSON client with read timeouts.
class Client {
 public:
  explicit Client(const std::string& path) : fd_(ConnectUnix(path)) {}
  ~Client() { Close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool SendRaw(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  bool Send(const json& request) { return SendRaw(request.dump() + "\n"); }

  // The next line (without '\n'); nullopt on EOF, error or timeout (timed_out() tells which).
  std::optional<std::string> ReadLine(int timeout_ms = 60000) {
    timed_out_ = false;
    const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        timed_out_ = true;
        return std::nullopt;
      }
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char tmp[65536];
      const ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  bool timed_out() const { return timed_out_; }

  std::optional<json> ReadEvent(int timeout_ms = 60000) {
    std::optional<std::string> line = ReadLine(timeout_ms);
    if (!line) return std::nullopt;
    json j = json::parse(*line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      ADD_FAILURE() << "the daemon sent a line that is not JSON: " << *line;
      return std::nullopt;
    }
    return j;
  }

  // Reads until the final line (result or error) of `id`; lines of other ids are kept for later
  // calls. `events` (optional) receives the token/progress lines of `id` in order.
  std::optional<json> WaitFinal(const json& id, std::vector<json>* events = nullptr,
                                int timeout_ms = 60000) {
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (pending_[i]["id"] == id && IsFinal(pending_[i])) {
        json j = pending_[i];
        pending_.erase(pending_.begin() + static_cast<long>(i));
        return j;
      }
    }
    for (;;) {
      std::optional<json> e = ReadEvent(timeout_ms);
      if (!e) return std::nullopt;
      if ((*e)["id"] != id) {
        pending_.push_back(*e);
        continue;
      }
      if (IsFinal(*e)) return e;
      if (events) events->push_back(*e);
    }
  }

  // Sends a request and waits for its final line.
  std::optional<json> Call(const json& request, std::vector<json>* events = nullptr,
                           int timeout_ms = 60000) {
    if (!Send(request)) return std::nullopt;
    return WaitFinal(request["id"], events, timeout_ms);
  }

  // True when the daemon closes the connection within timeout_ms (lines before EOF are skipped).
  bool WaitClosed(int timeout_ms = 10000) {
    const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      if (!ReadLine(static_cast<int>(
              std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())
                  .count())) &&
          !timed_out_) {
        return true;
      }
    }
    return false;
  }

  static bool IsFinal(const json& e) {
    return e.value("event", "") == "result" || e.value("event", "") == "error";
  }

 private:
  int fd_;
  std::string buf_;
  bool timed_out_ = false;
  std::vector<json> pending_;
};

// kvtierd as a child process: its own socket, cache and state directories under a temp dir.
class Daemon {
 public:
  // `socket_dir` empty: <tmp>/run (created by the daemon, 0750).
  explicit Daemon(std::vector<std::string> extra_args = {}, std::string socket_dir = "")
      : dir_(MakeTempDir("kvtierd_test_")) {
    socket_path_ = (socket_dir.empty() ? dir_ + "/run" : socket_dir) + "/kvtier.sock";
    log_path_ = dir_ + "/kvtierd.log";
    std::vector<std::string> args = {
        KvtierdPath(), "--model",       ModelPath(),   "--socket",      socket_path_,
        "--cache-dir", dir_ + "/cache", "--state-dir", dir_ + "/state", "--threads",
        "2",           "--io-threads",  "2",           "--log-level",   "info"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    pid_ = fork();
    if (pid_ == 0) {
      const int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(log, 1);
      dup2(log, 2);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      unsetenv("NOTIFY_SOCKET");
      unsetenv("LISTEN_FDS");
      unsetenv("KVTIER_SOCKET");
      execv(argv[0], argv.data());
      _exit(127);
    }
    // Ready when the socket answers.
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      const int fd = ConnectUnix(socket_path_);
      if (fd >= 0) {
        close(fd);
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "kvtierd exited at start:\n" << ReadFile(log_path_);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "kvtierd did not start listening:\n" << ReadFile(log_path_);
  }

  ~Daemon() {
    if (pid_ > 0) {
      const int status = Stop();
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "kvtierd did not exit cleanly (status " << status << "):\n"
          << ReadFile(log_path_);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // SIGTERM, then waits (SIGKILL after 20 s). Returns the wait status.
  int Stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = -1;
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(20);
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    return status;
  }

  bool alive() const { return pid_ > 0 && kill(pid_, 0) == 0; }
  pid_t pid() const { return pid_; }
  const std::string& socket_path() const { return socket_path_; }
  const std::string& dir() const { return dir_; }
  std::string log() const { return ReadFile(log_path_); }

 private:
  std::string dir_;
  std::string socket_path_;
  std::string log_path_;
  pid_t pid_ = -1;
};

}  // namespace kvtier::testing
