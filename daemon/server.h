// daemon/server.h — kvtierd's server: a Boost.Asio event loop on a Unix stream socket that
// speaks the NDJSON protocol (protocol/) and hands compute to one engine worker thread.
//
// Thread safety: Create() and Run() are called from one thread (main); RequestShutdown() is safe
// from any thread. Inside, protocol work runs on `io_threads` Asio threads, each connection's
// state on its own strand; generate and prefill run one at a time on the engine worker thread;
// tokenize and detokenize on a small helper pool; nothing that computes or touches the disk runs
// on an Asio thread. daemon/README.md describes the limits and the shutdown sequence.
#pragma once

#include <memory>

#include "base/status.h"
#include "daemon/config.h"
#include "engine/engine.h"

namespace kvtier::daemon {

class Server {
 public:
  // Listens on `inherited_fd` (a listening AF_UNIX stream socket from socket activation) when it
  // is >= 0, else creates config.socket_path: its directory 0750 when missing, the socket 0660; a
  // stale socket file is removed only when nothing answers on it. `engine` must outlive the
  // server.
  static Result<std::unique_ptr<Server>> Create(const DaemonConfig& config, engine::Engine* engine,
                                                int inherited_fd);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves until a shutdown completes (SIGTERM, SIGINT or RequestShutdown()): stop accepting,
  // let in-flight work finish for shutdown_grace_s, cancel the rest, flush, close. Sends
  // READY=1 when it starts serving, STOPPING=1 when the shutdown starts and WATCHDOG=1 pings
  // when systemd asks for them. Removes the socket file it created.
  Status Run();

  void RequestShutdown();

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvtier::daemon
