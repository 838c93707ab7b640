// tests/client/client_test_util.h — for the client tests: the real kvtierd as a child process on
// a temporary socket, running a command with captured output, and a scripted fake daemon (used
// only for failure modes a real daemon cannot be made to produce on demand).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/libkvtier.h"
#include "tests/support/test_support.h"

namespace kvtier::testing {

inline std::string KvtierdBinary() {
  if (const char* p = std::getenv("KVTIERD"); p && *p) return p;
  return KVTIERD_PATH;
}
inline std::string KvtierBinary() { return KVTIER_CLI_PATH; }

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// kvtierd on the real model, with its own socket, cache and state directories; stopped (SIGTERM)
// by the destructor, which also checks that it exited cleanly.
class DaemonProcess {
 public:
  explicit DaemonProcess(std::vector<std::string> extra_args = {})
      : dir_(MakeTempDir("kvtier_client_test_")) {
    socket_path_ = dir_ + "/run/kvtier.sock";
    log_path_ = dir_ + "/kvtierd.log";
    std::vector<std::string> args = {
        KvtierdBinary(), "--model",     ModelPath(),     "--socket",  socket_path_, "--cache-dir",
        dir_ + "/cache", "--state-dir", dir_ + "/state", "--threads", "2"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    pid_ = fork();
    if (pid_ == 0) {
      const int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(log, 1);
      dup2(log, 2);
      unsetenv("NOTIFY_SOCKET");
      unsetenv("LISTEN_FDS");
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~DaemonProcess() {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Waits until a health request succeeds (the model is loaded). False, with a test failure
  // showing the daemon's log, when it exits or does not answer within `timeout`.
  bool WaitReady(std::chrono::seconds timeout = std::chrono::seconds(120)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "kvtierd exited during start-up (status " << status << "):\n" << Log();
        return false;
      }
      auto c = client::Client::Connect(socket_path_, std::chrono::milliseconds(1000));
      if (c.ok() && (*c)->Health().ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "kvtierd did not answer on " << socket_path_ << ":\n" << Log();
    return false;
  }

  // SIGTERM and wait; returns the exit status (-1 if not running).
  int Stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  const std::string& socket_path() const { return socket_path_; }
  const std::string& dir() const { return dir_; }
  std::string Log() const { return ReadWholeFile(log_path_); }

 private:
  std::string dir_, socket_path_, log_path_;
  pid_t pid_ = -1;
};

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string out, err;
};

// Runs argv[0] with `input` on stdin, capturing stdout and stderr (through files).
inline CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& input = "",
                                const std::vector<std::string>& env = {}) {
  const std::string dir = MakeTempDir("kvtier_cli_run_");
  const std::string in_path = dir + "/in", out_path = dir + "/out", err_path = dir + "/err";
  std::ofstream(in_path, std::ios::binary) << input;
  const pid_t pid = fork();
  if (pid == 0) {
    const int in = open(in_path.c_str(), O_RDONLY);
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadWholeFile(out_path);
  r.err = ReadWholeFile(err_path);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return r;
}

// A scripted stand-in for kvtierd: listens on a temporary socket and runs `script` on each
// accepted connection, in order, on its own thread. ONLY for failure modes a real daemon does not
// produce on demand (a close mid-stream, a garbage line, an answer to an unknown id, ...).
class FakeDaemon {
 public:
  // One accepted connection, seen from the fake daemon's side.
  class Conn {
   public:
    explicit Conn(int fd) : fd_(fd) {}
    ~Conn() { Close(); }
    // The next request line (without '\n'); nullopt on EOF or after 10 s.
    std::optional<std::string> ReadLine() {
      for (;;) {
        const size_t nl = buf_.find('\n');
        if (nl != std::string::npos) {
          std::string line = buf_.substr(0, nl);
          buf_.erase(0, nl + 1);
          return line;
        }
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 10000) <= 0) return std::nullopt;
        char tmp[4096];
        const ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
        if (n <= 0) return std::nullopt;
        buf_.append(tmp, static_cast<size_t>(n));
      }
    }
    // The next request, parsed (a test failure when it is not one).
    std::optional<protocol::Request> ReadRequest() {
      std::optional<std::string> line = ReadLine();
      if (!line) return std::nullopt;
      Result<protocol::Request> r = protocol::ParseRequest(*line);
      EXPECT_TRUE(r.ok()) << "the client sent an invalid request: " << *line;
      if (!r.ok()) return std::nullopt;
      return *r;
    }
    void Write(std::string_view bytes) {
      while (!bytes.empty()) {
        const ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n <= 0) return;
        bytes.remove_prefix(static_cast<size_t>(n));
      }
    }
    void Close() {
      if (fd_ >= 0) close(fd_);
      fd_ = -1;
    }

   private:
    int fd_;
    std::string buf_;
  };
  using Script = std::function<void(Conn&)>;

  explicit FakeDaemon(std::vector<Script> scripts) : dir_(MakeTempDir("kvtier_fake_daemon_")) {
    socket_path_ = dir_ + "/fake.sock";
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 8), 0);
    thread_ = std::thread([this, scripts = std::move(scripts)] {
      for (const Script& script : scripts) {
        pollfd p{listen_fd_, POLLIN, 0};
        if (poll(&p, 1, 10000) <= 0) return;
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        Conn conn(fd);
        script(conn);
      }
    });
  }
  ~FakeDaemon() {
    thread_.join();
    close(listen_fd_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::string& socket_path() const { return socket_path_; }

 private:
  std::string dir_, socket_path_;
  int listen_fd_ = -1;
  std::thread thread_;
};

}  // namespace kvtier::testing
