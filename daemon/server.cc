#include "daemon/server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/internal/job_queue.h"
#include "daemon/internal/peer.h"
#include "daemon/systemd.h"
#include "protocol/framing.h"
#include "protocol/messages.h"

#ifndef KVTIER_VERSION
#define KVTIER_VERSION "0.0.0"
#endif

namespace kvtier::daemon {

namespace asio = boost::asio;
namespace proto = kvtier::protocol;
using stream_protocol = asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;
using Strand = asio::strand<asio::io_context::executor_type>;
using Socket = stream_protocol::socket::rebind_executor<Strand>::other;
using StrandTimer = asio::steady_timer::rebind_executor<Strand>::other;
using CancelFlag = std::shared_ptr<std::atomic<bool>>;

// Tokens per cache extent (DESIGN §4: 4 pages of 16 tokens), for reporting pins in tokens.
constexpr int64_t kExtentTokens = 64;

namespace {

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        size_t start = colon + 1;
        while (start < line.size() && line[start] == ' ') ++start;
        return line.substr(start);
      }
    }
  }
  return "cpu";
}

proto::ErrorCode ErrorCodeOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
      return proto::ErrorCode::kBadRequest;
    case StatusCode::kResourceExhausted:
      return s.message().rfind("context_overflow", 0) == 0 ? proto::ErrorCode::kContextOverflow
                                                           : proto::ErrorCode::kInternal;
    case StatusCode::kCancelled:
      return proto::ErrorCode::kCancelled;
    case StatusCode::kUnavailable:
      return proto::ErrorCode::kUnavailable;
    default:
      return proto::ErrorCode::kInternal;
  }
}

// Creates the listening socket at `path` (see Server::Create).
Result<int> CreateListeningSocket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return InvalidArgumentError("socket path '" + path + "' is empty or longer than " +
                                std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return IOError("cannot create " + dir.string() + ": " + ec.message());
    if (chmod(dir.c_str(), 0750) != 0) {
      return IOError("chmod 0750 " + dir.string() + ": " + std::strerror(errno));
    }
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return InvalidArgumentError(path + " exists and is not a socket; not touching it");
    }
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) return IOError(std::string("socket: ") + std::strerror(errno));
    const int rc = connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    const int err = errno;
    close(probe);
    if (rc == 0) return UnavailableError("another daemon is already listening on " + path);
    if (err != ECONNREFUSED) {
      return IOError("cannot probe the existing socket " + path + ": " + std::strerror(err));
    }
    if (unlink(path.c_str()) != 0) {
      return IOError("cannot remove the stale socket " + path + ": " + std::strerror(errno));
    }
    spdlog::info("removed a stale socket file at {}", path);
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return IOError(std::string("socket: ") + std::strerror(errno));
  const mode_t old_mask = umask(0117);  // the socket is born 0660
  const int bound = bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  umask(old_mask);
  if (bound != 0) {
    close(fd);
    return IOError("bind " + path + ": " + std::strerror(bind_errno));
  }
  if (chmod(path.c_str(), 0660) != 0 || listen(fd, SOMAXCONN) != 0) {
    const int err = errno;
    close(fd);
    unlink(path.c_str());
    return IOError("listen on " + path + ": " + std::strerror(err));
  }
  return fd;
}

}  // namespace

// Daemon-wide counters (relaxed atomics: they are statistics, not synchronization).
struct Counters {
  std::atomic<int64_t> requests{0};   // request lines received
  std::atomic<int64_t> completed{0};  // final result lines
  std::atomic<int64_t> errors{0};     // final error lines (cancelled excluded)
  std::atomic<int64_t> cancelled{0};  // requests that ended cancelled (by cancel or disconnect)
  std::atomic<int64_t> active{0};     // running on the engine worker or a helper now
  std::atomic<int64_t> helpers_pending{0};  // tokenize/detokenize posted and not finished
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> connections_total{0};
  std::atomic<int64_t> connections_refused{0};  // over max_connections
  std::atomic<int64_t> forbidden{0};
  std::atomic<int64_t> slow_clients_dropped{0};  // over the output limit
  std::atomic<int64_t> idle_closed{0};
  std::atomic<int64_t> busy{0};  // requests refused because the queue was full
};

class Connection;

class Server::Impl {
 public:
  Impl(const DaemonConfig& config, engine::Engine* engine)
      : config_(config),
        engine_(*engine),
        io_(config.io_threads),
        acceptor_(io_),
        signals_(io_),
        shutdown_timer_(io_),
        watchdog_timer_(io_),
        accept_retry_timer_(io_),
        jobs_(static_cast<size_t>(config.queue_depth)),
        helpers_(2),
        started_(Clock::now()),
        cpu_name_(CpuModelName()),
        self_uid_(geteuid()) {
    tier_stats_ = engine_.TierStats();
  }

  Status Listen(int inherited_fd);
  Status Run();
  void RequestShutdown() {
    asio::post(io_, [this] { BeginShutdown(); });
  }

  // --- used by connections ---
  const DaemonConfig& config() const { return config_; }
  engine::Engine& engine() { return engine_; }
  internal::JobQueue& jobs() { return jobs_; }
  asio::thread_pool& helpers() { return helpers_; }
  Counters& counters() { return counters_; }
  uid_t self_uid() const { return self_uid_; }
  bool shutting_down() const { return shutting_down_.load(std::memory_order_acquire); }
  uint64_t NextTicket() { return next_ticket_.fetch_add(1, std::memory_order_relaxed); }
  void Unregister(uint64_t connection_id);
  // Called on the engine worker after each job (the engine takes its compute lock for it, which
  // only the worker ever holds long): `stats` then never waits for a generation to finish.
  void RefreshTierStats() {
    cache::TierStatsSnapshot s = engine_.TierStats();
    std::lock_guard<std::mutex> lock(stats_mu_);
    tier_stats_ = std::move(s);
  }
  proto::HealthResult Health() const;
  std::string EncodeStats(const proto::RequestId& id);

 private:
  void Accept();
  void BeginShutdown();
  void ShutdownTick();
  void WatchdogTick();
  template <typename F>
  void ForEachConnection(F f);

  const DaemonConfig config_;
  engine::Engine& engine_;
  asio::io_context io_;
  stream_protocol::acceptor acceptor_;
  asio::signal_set signals_;
  asio::steady_timer shutdown_timer_;
  asio::steady_timer watchdog_timer_;
  asio::steady_timer accept_retry_timer_;
  std::chrono::microseconds watchdog_interval_{0};
  internal::JobQueue jobs_;
  asio::thread_pool helpers_;
  Counters counters_;
  const Clock::time_point started_;
  const std::string cpu_name_;
  const uid_t self_uid_;
  std::string created_socket_path_;  // removed at exit; empty when inherited
  std::atomic<bool> shutting_down_{false};
  std::atomic<uint64_t> next_ticket_{1};
  uint64_t next_connection_id_ = 0;  // accept handler only (one outstanding accept)
  // Shutdown state: touched only by BeginShutdown/ShutdownTick, which run on the timer chain.
  Clock::time_point shutdown_started_;
  Clock::time_point flush_deadline_;
  bool cancelled_all_ = false;
  bool closing_all_ = false;
  bool forced_close_ = false;

  std::mutex connections_mu_;
  std::unordered_map<uint64_t, std::weak_ptr<Connection>> connections_;  // guarded by mu

  std::mutex stats_mu_;
  cache::TierStatsSnapshot tier_stats_;  // guarded by stats_mu_
};

// One client connection. All its state lives on its strand; the engine worker and the helper
// pool reach it only through Post().
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server::Impl& server, Socket socket, uint64_t id)
      : server_(server),
        socket_(std::move(socket)),
        idle_timer_(socket_.get_executor()),
        hup_timer_(socket_.get_executor()),
        id_(id),
        decoder_(server.config().max_line_bytes),
        last_activity_(Clock::now()) {}

  uint64_t id() const { return id_; }

  // Runs fn(*this) on the connection's strand, from any thread.
  template <typename F>
  void Post(F fn) {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), fn = std::move(fn)]() mutable { fn(*self); });
  }

  // (strand) Checks the peer and starts reading.
  void Start();
  // (strand) Sends one error line and closes: a connection over the limit.
  void Refuse(proto::ErrorCode code, const std::string& message) {
    Send(proto::EncodeError(proto::RequestId(), code, message));
    CloseAfterWrite();
  }
  // (strand) Shutdown, grace over: cancels every request in flight.
  void CancelAll(const std::string& why);
  // (strand) Closes once the queued output has been written (nothing may be in flight).
  void CloseAfterWrite() {
    close_after_write_ = true;
    if (out_.empty() && !writing_) Close("done");
  }
  // (strand) Closes now, cancelling the work in flight.
  void Close(const std::string& why);

 private:
  enum class Outcome { kResult, kError, kCancelled };
  struct InFlight {
    uint64_t ticket = 0;
    CancelFlag cancelled;
    bool on_engine = false;  // in the engine queue (else on the helper pool)
  };

  void Read();
  void OnRead(const boost::system::error_code& ec, size_t n);
  void OnEndOfInput();
  void CheckHangUp();
  void HandleLine(std::string_view line);
  void Dispatch(proto::Request request);
  void Send(std::string frame);
  void StartWrite();
  void ArmIdleTimer(std::chrono::steady_clock::duration after);
  void OnIdleTimer();
  // (strand) The final line of request `id`.
  void Finish(const proto::RequestId& id, std::string frame, Outcome outcome);
  // (any thread) Posts Finish.
  void PostFinish(const proto::RequestId& id, std::string frame, Outcome outcome) {
    Post([id, frame = std::move(frame), outcome](Connection& c) mutable {
      c.Finish(id, std::move(frame), outcome);
    });
  }
  void SendError(const proto::RequestId& id, proto::ErrorCode code, const std::string& message) {
    server_.counters().errors.fetch_add(1, std::memory_order_relaxed);
    Send(proto::EncodeError(id, code, message));
  }
  // Engine worker / helper pool bodies: they touch only server_ and Post().
  // A job taken from a queue: answers `cancelled` and returns false if it was cancelled while
  // waiting, else counts it active and returns true.
  bool BeginWork(const proto::RequestId& id, const CancelFlag& cancelled) {
    if (cancelled->load(std::memory_order_relaxed)) {
      PostFinish(id, proto::EncodeError(id, proto::ErrorCode::kCancelled, "cancelled"),
                 Outcome::kCancelled);
      return false;
    }
    server_.counters().active.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  void RunGenerate(const proto::RequestId& id, const proto::GenerateRequest& request,
                   const std::string& ns, const CancelFlag& cancelled);
  void RunPrefill(const proto::RequestId& id, const proto::PrefillRequest& request,
                  const std::string& ns, const CancelFlag& cancelled);
  void RunHelper(const proto::RequestId& id, const proto::Request::Body& body,
                 const CancelFlag& cancelled);
  void RunCacheOp(const proto::RequestId& id, const proto::Request::Body& body,
                  const CancelFlag& cancelled);

  Server::Impl& server_;
  Socket socket_;
  StrandTimer idle_timer_;
  StrandTimer hup_timer_;
  const uint64_t id_;
  internal::PeerCredentials peer_;
  std::string namespace_;
  bool registered_ = false;
  proto::LineDecoder decoder_;
  std::array<char, 64 * 1024> read_buf_;
  std::unordered_map<proto::RequestId, InFlight, proto::RequestIdHash> in_flight_;
  std::deque<std::string> out_;
  size_t out_bytes_ = 0;
  size_t writing_frames_ = 0;
  bool writing_ = false;
  std::vector<asio::const_buffer> write_buffers_;
  bool reading_ = false;
  bool read_paused_ = false;  // output backlog: stop reading new requests until it drains
  bool half_closed_ = false;  // the client shut its write side; answers still go out
  bool close_after_write_ = false;
  bool closing_ = false;
  Clock::time_point last_activity_;

  friend class Server::Impl;
};

// ---------------------------------------------------------------------------------------------
// Connection

void Connection::Start() {
  registered_ = true;
  Result<internal::PeerCredentials> peer = internal::ReadPeerCredentials(socket_.native_handle());
  if (!peer.ok()) {
    spdlog::warn("conn {}: {}", id_, peer.status().message());
    Close("no peer credentials");
    return;
  }
  peer_ = std::move(*peer);
  if (!internal::IsAllowed(server_.config(), peer_, server_.self_uid())) {
    server_.counters().forbidden.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("conn {}: uid {} (pid {}) is not allowed; refused", id_, peer_.uid, peer_.pid);
    SendError(proto::RequestId(), proto::ErrorCode::kForbidden,
              "uid " + std::to_string(peer_.uid) + " is not allowed to use this daemon");
    CloseAfterWrite();
    return;
  }
  namespace_ = internal::BaseNamespace(server_.config(), peer_);
  spdlog::debug("conn {}: uid {} pid {} namespace {}", id_, peer_.uid, peer_.pid, namespace_);
  Read();
  if (server_.config().idle_timeout_s > 0) {
    ArmIdleTimer(std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(server_.config().idle_timeout_s)));
  }
}

void Connection::Read() {
  if (closing_ || close_after_write_ || half_closed_ || reading_) return;
  if (out_bytes_ > server_.config().output_limit_bytes / 2) {
    read_paused_ = true;
    return;
  }
  reading_ = true;
  socket_.async_read_some(asio::buffer(read_buf_),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      size_t n) { self->OnRead(ec, n); });
}

void Connection::OnRead(const boost::system::error_code& ec, size_t n) {
  reading_ = false;
  if (closing_) return;
  if (ec) {
    if (ec == asio::error::eof) {
      OnEndOfInput();
    } else {
      Close("read: " + ec.message());
    }
    return;
  }
  last_activity_ = Clock::now();
  const proto::LineDecoder::State state = decoder_.Feed(
      std::string_view(read_buf_.data(), n), [this](std::string_view line) { HandleLine(line); });
  if (state == proto::LineDecoder::State::kTooLarge) {
    spdlog::info("conn {}: request line over {} bytes; closing", id_, decoder_.max_line_bytes());
    server_.counters().requests.fetch_add(1, std::memory_order_relaxed);
    server_.counters().errors.fetch_add(1, std::memory_order_relaxed);
    // In-flight work is cancelled: the client is told the connection ends here.
    CancelAll("the connection is closing (a request line was too large)");
    Send(proto::EncodeLineTooLarge(decoder_.max_line_bytes()));
    CloseAfterWrite();
    return;
  }
  Read();
}

// EOF: a client that closed the socket is gone (its work is cancelled); one that only shut its
// write side (shutdown(SHUT_WR), `socat`, `nc -N`) still gets its answers. The kernel tells them
// apart: a Unix socket whose peer closed polls POLLHUP.
void Connection::OnEndOfInput() {
  pollfd p{socket_.native_handle(), POLLOUT, 0};
  if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
    Close("client disconnected");
    return;
  }
  half_closed_ = true;
  if (std::optional<std::string> last = decoder_.Finish()) HandleLine(*last);
  if (in_flight_.empty()) {
    CloseAfterWrite();
  } else {
    CheckHangUp();
  }
}

// While half-closed with work in flight: notice a full close within 100 ms and cancel.
void Connection::CheckHangUp() {
  hup_timer_.expires_after(std::chrono::milliseconds(100));
  hup_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->closing_) return;
    pollfd p{self->socket_.native_handle(), POLLOUT, 0};
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
      self->Close("client disconnected");
      return;
    }
    self->CheckHangUp();
  });
}

void Connection::HandleLine(std::string_view line) {
  server_.counters().requests.fetch_add(1, std::memory_order_relaxed);
  proto::RequestError error;
  Result<proto::Request> request = proto::ParseRequest(line, &error);
  if (!request.ok()) {
    spdlog::debug("conn {}: refused a {}-byte line: {}", id_, line.size(),
                  proto::ErrorCodeName(error.code));
    server_.counters().errors.fetch_add(1, std::memory_order_relaxed);
    Send(error.Encode());
    return;
  }
  Dispatch(std::move(*request));
}

void Connection::Dispatch(proto::Request request) {
  const proto::RequestId id = request.id;
  const proto::Op op = request.op();
  spdlog::debug("conn {}: request {} op {}", id_, id.ToJson(), proto::OpName(op));
  if (in_flight_.count(id)) {
    SendError(id, proto::ErrorCode::kBadRequest,
              "id " + id.ToJson() + " is already in flight on this connection");
    return;
  }
  const bool control =
      op == proto::Op::kHealth || op == proto::Op::kStats || op == proto::Op::kCancel;
  if (!control && server_.shutting_down()) {
    SendError(id, proto::ErrorCode::kUnavailable, "the daemon is shutting down");
    return;
  }
  switch (op) {
    case proto::Op::kHealth:
      server_.counters().completed.fetch_add(1, std::memory_order_relaxed);
      Send(proto::EncodeResult(id, server_.Health()));
      return;
    case proto::Op::kStats:
      server_.counters().completed.fetch_add(1, std::memory_order_relaxed);
      Send(server_.EncodeStats(id));
      return;
    case proto::Op::kCancel: {
      const proto::RequestId& target = std::get<proto::CancelRequest>(request.body).target;
      auto it = in_flight_.find(target);
      const bool found = it != in_flight_.end();
      if (found) {
        it->second.cancelled->store(true, std::memory_order_relaxed);
        if (it->second.on_engine && server_.jobs().Remove(it->second.ticket)) {
          Finish(target,
                 proto::EncodeError(target, proto::ErrorCode::kCancelled,
                                    "cancelled by request " + id.ToJson() + " before it started"),
                 Outcome::kCancelled);
        }
      }
      server_.counters().completed.fetch_add(1, std::memory_order_relaxed);
      Send(proto::EncodeResult(id, proto::CancelResult{found}));
      return;
    }
    default:
      break;
  }
  if (static_cast<int>(in_flight_.size()) >= server_.config().max_requests_per_connection) {
    server_.counters().busy.fetch_add(1, std::memory_order_relaxed);
    SendError(id, proto::ErrorCode::kBusy,
              "too many requests in flight on this connection (max " +
                  std::to_string(server_.config().max_requests_per_connection) + ")");
    return;
  }
  InFlight f;
  f.ticket = server_.NextTicket();
  f.cancelled = std::make_shared<std::atomic<bool>>(false);
  auto self = shared_from_this();
  if (op == proto::Op::kTokenize || op == proto::Op::kDetokenize) {
    // Cheap next to generation, and never queued behind it.
    in_flight_.emplace(id, f);
    server_.counters().helpers_pending.fetch_add(1, std::memory_order_relaxed);
    asio::post(server_.helpers(), [self, id, body = std::move(request.body), c = f.cancelled] {
      self->RunHelper(id, body, c);
      self->server_.counters().helpers_pending.fetch_sub(1, std::memory_order_relaxed);
    });
    return;
  }
  // Everything else needs the engine's compute lock: it waits its turn on the engine worker.
  internal::JobQueue::Job job;
  if (op == proto::Op::kGenerate) {
    auto& g = std::get<proto::GenerateRequest>(request.body);
    std::string ns = internal::RequestNamespace(namespace_, g.cache_salt);
    job = [self, id, g = std::move(g), ns = std::move(ns), c = f.cancelled] {
      self->RunGenerate(id, g, ns, c);
    };
  } else if (op == proto::Op::kPrefill) {
    auto& p = std::get<proto::PrefillRequest>(request.body);
    std::string ns = internal::RequestNamespace(namespace_, p.cache_salt);
    job = [self, id, p = std::move(p), ns = std::move(ns), c = f.cancelled] {
      self->RunPrefill(id, p, ns, c);
    };
  } else {
    job = [self, id, body = std::move(request.body), c = f.cancelled] {
      self->RunCacheOp(id, body, c);
    };
  }
  f.on_engine = true;
  in_flight_.emplace(id, f);
  if (!server_.jobs().TrySubmit(f.ticket, std::move(job))) {
    in_flight_.erase(id);
    server_.counters().busy.fetch_add(1, std::memory_order_relaxed);
    SendError(id, proto::ErrorCode::kBusy,
              "the engine queue is full (" + std::to_string(server_.config().queue_depth) +
                  " requests waiting); retry later");
  }
}

void Connection::Finish(const proto::RequestId& id, std::string frame, Outcome outcome) {
  in_flight_.erase(id);
  Counters& c = server_.counters();
  switch (outcome) {
    case Outcome::kResult:
      c.completed.fetch_add(1, std::memory_order_relaxed);
      break;
    case Outcome::kError:
      c.errors.fetch_add(1, std::memory_order_relaxed);
      break;
    case Outcome::kCancelled:
      c.cancelled.fetch_add(1, std::memory_order_relaxed);
      break;
  }
  last_activity_ = Clock::now();
  Send(std::move(frame));
  if (half_closed_ && in_flight_.empty()) CloseAfterWrite();
}

void Connection::CancelAll(const std::string& why) {
  std::vector<proto::RequestId> removed;
  for (auto& [rid, f] : in_flight_) {
    f.cancelled->store(true, std::memory_order_relaxed);
    if (f.on_engine && server_.jobs().Remove(f.ticket)) removed.push_back(rid);
  }
  for (const proto::RequestId& rid : removed) {
    Finish(rid, proto::EncodeError(rid, proto::ErrorCode::kCancelled, why), Outcome::kCancelled);
  }
}

void Connection::Send(std::string frame) {
  if (closing_) return;
  const size_t limit = server_.config().output_limit_bytes;
  // One frame larger than the limit may go out alone (its size is bounded by the request); what
  // is refused is a backlog that keeps growing because the client does not read.
  if (out_bytes_ > 0 && out_bytes_ + frame.size() > limit) {
    server_.counters().slow_clients_dropped.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("conn {}: uid {} is not reading ({} bytes unsent, limit {}); disconnecting", id_,
                 peer_.uid, out_bytes_, limit);
    Close("output limit");
    return;
  }
  out_bytes_ += frame.size();
  out_.push_back(std::move(frame));
  StartWrite();
}

void Connection::StartWrite() {
  if (writing_ || out_.empty() || closing_) return;
  writing_ = true;
  write_buffers_.clear();
  writing_frames_ = std::min<size_t>(out_.size(), 64);
  for (size_t i = 0; i < writing_frames_; ++i) write_buffers_.push_back(asio::buffer(out_[i]));
  asio::async_write(socket_, write_buffers_,
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                      self->writing_ = false;
                      if (self->closing_) return;
                      if (ec) {
                        self->Close("write: " + ec.message());
                        return;
                      }
                      for (size_t i = 0; i < self->writing_frames_; ++i) {
                        self->out_bytes_ -= self->out_.front().size();
                        self->out_.pop_front();
                      }
                      self->writing_frames_ = 0;
                      self->last_activity_ = Clock::now();
                      if (self->out_.empty() && self->close_after_write_) {
                        self->Close("done");
                        return;
                      }
                      if (self->read_paused_ &&
                          self->out_bytes_ <= self->server_.config().output_limit_bytes / 4) {
                        self->read_paused_ = false;
                        self->Read();
                      }
                      self->StartWrite();
                    });
}

void Connection::ArmIdleTimer(Clock::duration after) {
  idle_timer_.expires_after(after);
  idle_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->OnIdleTimer();
  });
}

void Connection::OnIdleTimer() {
  if (closing_) return;
  const auto timeout = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(server_.config().idle_timeout_s));
  const auto idle_for = Clock::now() - last_activity_;
  if (in_flight_.empty() && !writing_ && idle_for >= timeout) {
    server_.counters().idle_closed.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("conn {}: idle for {:.1f} s; closing", id_,
                  std::chrono::duration<double>(idle_for).count());
    Close("idle timeout");
    return;
  }
  ArmIdleTimer(idle_for < timeout ? timeout - idle_for : timeout);
}

void Connection::Close(const std::string& why) {
  if (closing_) return;
  closing_ = true;
  for (auto& [rid, f] : in_flight_) {
    f.cancelled->store(true, std::memory_order_relaxed);
    if (f.on_engine && server_.jobs().Remove(f.ticket)) {
      server_.counters().cancelled.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Requests still running report to a closed connection: Finish only counts them.
  out_.clear();
  out_bytes_ = 0;
  boost::system::error_code ec;
  socket_.shutdown(stream_protocol::socket::shutdown_both, ec);
  socket_.close(ec);
  idle_timer_.cancel();
  hup_timer_.cancel();
  spdlog::debug("conn {}: closed ({})", id_, why);
  if (registered_) {
    registered_ = false;
    server_.Unregister(id_);
  }
}

void Connection::RunHelper(const proto::RequestId& id, const proto::Request::Body& body,
                           const CancelFlag& cancelled) {
  if (!BeginWork(id, cancelled)) return;
  const model::Tokenizer& tok = server_.engine().model().tokenizer();
  std::string frame;
  Outcome outcome = Outcome::kResult;
  if (const auto* t = std::get_if<proto::TokenizeRequest>(&body)) {
    proto::TokenizeResult r;
    r.tokens = tok.Encode(t->text, t->special, /*add_bos=*/false);
    frame = proto::EncodeResult(id, r);
  } else if (const auto* d = std::get_if<proto::DetokenizeRequest>(&body)) {
    Result<std::string> text = tok.Decode(d->tokens);
    if (text.ok()) {
      frame = proto::EncodeResult(id, proto::DetokenizeResult{std::move(*text)});
    } else {
      frame = proto::EncodeError(id, ErrorCodeOf(text.status()), text.status().message());
      outcome = Outcome::kError;
    }
  }
  server_.counters().active.fetch_sub(1, std::memory_order_relaxed);
  PostFinish(id, std::move(frame), outcome);
}

namespace {

engine::GenerateRequest ToEngineRequest(const proto::PromptInput& input, const std::string& ns) {
  engine::GenerateRequest er;
  if (input.is_chat()) {
    for (const proto::ChatMessage& m : input.messages) {
      er.messages.push_back({std::string(proto::RoleName(m.role)), m.content});
    }
  } else {
    er.prompt = input.prompt;
    er.raw = true;  // DESIGN §6: `prompt` is fed as is; `messages` get the chat template
  }
  er.cache_namespace = ns;
  return er;
}

proto::FinishReason ToFinishReason(const std::string& r) {
  if (r == "stop") return proto::FinishReason::kStop;
  if (r == "cancelled") return proto::FinishReason::kCancelled;
  return proto::FinishReason::kLength;
}

}  // namespace

void Connection::RunGenerate(const proto::RequestId& id, const proto::GenerateRequest& request,
                             const std::string& ns, const CancelFlag& cancelled) {
  if (!BeginWork(id, cancelled)) return;
  engine::GenerateRequest er = ToEngineRequest(request.input, ns);
  er.max_tokens = request.max_tokens;
  er.sampling.temperature = static_cast<float>(request.temperature);
  er.sampling.top_p = static_cast<float>(request.top_p);
  er.sampling.top_k = request.top_k;
  er.seed_given = request.seed.has_value();
  if (request.seed) er.sampling.seed = static_cast<uint64_t>(*request.seed);
  er.stop = request.stop;
  er.attention = std::string(proto::AttentionName(request.attention));
  if (request.budget_tokens) er.budget_tokens = *request.budget_tokens;
  int32_t last_token = 0;
  const bool stream = request.stream;
  auto on_token = [&](int32_t token, std::string_view text) {
    if (cancelled->load(std::memory_order_relaxed)) return false;
    if (stream) {
      // token -1 carries text the engine held back (a possible stop string) at the end: it is
      // sent under the last real token's id.
      if (token >= 0) last_token = token;
      std::string frame = proto::EncodeToken(id, last_token, text);
      Post([frame = std::move(frame)](Connection& c) mutable { c.Send(std::move(frame)); });
    }
    return true;
  };
  // A long prompt's prefill stops early too when the request is cancelled.
  auto on_progress = [&](int64_t, int64_t) { return !cancelled->load(std::memory_order_relaxed); };
  Result<engine::GenerateResult> result = server_.engine().Generate(er, on_token, on_progress);
  server_.RefreshTierStats();
  server_.counters().active.fetch_sub(1, std::memory_order_relaxed);
  if (!result.ok()) {
    spdlog::info("conn {}: generate {} failed: {}", id_, id.ToJson(),
                 proto::ErrorCodeName(ErrorCodeOf(result.status())));
    const proto::ErrorCode code = ErrorCodeOf(result.status());
    PostFinish(id, proto::EncodeError(id, code, result.status().message()),
               code == proto::ErrorCode::kCancelled ? Outcome::kCancelled : Outcome::kError);
    return;
  }
  const engine::GenerateResult& r = *result;
  proto::GenerateResult out;
  out.text = r.text;
  out.finish_reason = ToFinishReason(r.finish_reason);
  out.usage.prompt_tokens = r.usage.prompt_tokens;
  out.usage.cached_tokens = r.usage.cached_tokens;
  out.usage.cached_by_tier = {r.usage.cached_by_tier.device, r.usage.cached_by_tier.host,
                              r.usage.cached_by_tier.disk, r.usage.cached_by_tier.remote};
  out.usage.completion_tokens = r.usage.completion_tokens;
  out.timing = {r.timing.ttft_ms, r.timing.prefill_ms, r.timing.decode_ms,
                r.timing.decode_tokens_per_s};
  out.retrieval.pages_attended_avg = r.retrieval.pages_attended_avg;
  out.retrieval.bytes_promoted = static_cast<int64_t>(r.bytes_promoted);
  out.retrieval.pages_promoted = r.retrieval.pages_promoted;
  out.retrieval.pages_promoted_host = r.retrieval.pages_promoted_host;
  out.retrieval.pages_promoted_disk = r.retrieval.pages_promoted_disk;
  out.retrieval.bytes_decompressed = static_cast<int64_t>(r.retrieval.bytes_decompressed);
  out.retrieval.hot_hits = r.retrieval.hot_hits;
  out.retrieval.hot_misses = r.retrieval.hot_misses;
  out.retrieval.disk_reads = r.retrieval.disk_reads;
  out.retrieval.records_prefetched = r.retrieval.records_prefetched;
  out.retrieval.prefetch_hits = r.retrieval.prefetch_hits;
  out.retrieval.prefetch_waits = r.retrieval.prefetch_waits;
  out.retrieval.prefetch_wasted = r.retrieval.prefetch_wasted;
  out.seed = r.seed;
  spdlog::info(
      "conn {} uid {}: generate {} prompt {} (cached {}) completion {} ttft {:.1f} ms "
      "decode {:.1f} tok/s finish {}",
      id_, peer_.uid, id.ToJson(), r.usage.prompt_tokens, r.usage.cached_tokens,
      r.usage.completion_tokens, r.timing.ttft_ms, r.timing.decode_tokens_per_s, r.finish_reason);
  PostFinish(id, proto::EncodeResult(id, out),
             out.finish_reason == proto::FinishReason::kCancelled ? Outcome::kCancelled
                                                                  : Outcome::kResult);
}

void Connection::RunPrefill(const proto::RequestId& id, const proto::PrefillRequest& request,
                            const std::string& ns, const CancelFlag& cancelled) {
  if (!BeginWork(id, cancelled)) return;
  engine::GenerateRequest er = ToEngineRequest(request.input, ns);
  er.max_tokens = 0;  // the engine's prefill: compute and cache the prompt, generate nothing
  er.seed_given = true;
  // Progress lines: the engine reports before the first batch and after each (batch_tokens).
  auto on_progress = [&](int64_t done, int64_t total) {
    if (cancelled->load(std::memory_order_relaxed)) return false;
    Post([f = proto::EncodeProgress(id, done, total)](Connection& c) mutable {
      c.Send(std::move(f));
    });
    return true;
  };
  Result<engine::GenerateResult> result = server_.engine().Generate(er, nullptr, on_progress);
  Status pinned = Status::Ok();
  if (result.ok() && !request.pin.empty()) pinned = server_.engine().Pin(ns, request.pin, er);
  server_.RefreshTierStats();
  std::string frame;
  Outcome outcome = Outcome::kResult;
  if (!result.ok() || !pinned.ok()) {
    const Status& st = result.ok() ? pinned : result.status();
    const proto::ErrorCode code = ErrorCodeOf(st);
    frame = proto::EncodeError(id, code, st.message());
    outcome = code == proto::ErrorCode::kCancelled ? Outcome::kCancelled : Outcome::kError;
  } else {
    frame = proto::EncodeResult(
        id, proto::PrefillResult{result->usage.prompt_tokens, result->usage.cached_tokens});
    spdlog::info("conn {} uid {}: prefill {} tokens {} (cached {}) in {:.1f} ms{}", id_, peer_.uid,
                 id.ToJson(), result->usage.prompt_tokens, result->usage.cached_tokens,
                 result->timing.prefill_ms, request.pin.empty() ? "" : " pinned");
  }
  server_.counters().active.fetch_sub(1, std::memory_order_relaxed);
  PostFinish(id, std::move(frame), outcome);
}

void Connection::RunCacheOp(const proto::RequestId& id, const proto::Request::Body& body,
                            const CancelFlag& cancelled) {
  if (!BeginWork(id, cancelled)) return;
  engine::Engine& engine = server_.engine();
  std::string frame;
  Outcome outcome = Outcome::kResult;
  if (std::holds_alternative<proto::PinsRequest>(body)) {
    proto::PinsResult r;
    for (const cache::PinInfo& p : engine.Pins(namespace_)) {
      r.pins.push_back({p.name, p.extents * kExtentTokens});
    }
    frame = proto::EncodeResult(id, r);
  } else if (const auto* u = std::get_if<proto::UnpinRequest>(&body)) {
    const Status st = engine.Unpin(namespace_, u->name);
    if (st.ok() || st.code() == StatusCode::kNotFound) {
      frame = proto::EncodeResult(id, proto::UnpinResult{st.ok()});
    } else {
      frame = proto::EncodeError(id, ErrorCodeOf(st), st.message());
      outcome = Outcome::kError;
    }
  } else if (const auto* e = std::get_if<proto::EvictRequest>(&body)) {
    Result<uint64_t> freed = engine.Evict(namespace_, std::string(proto::EvictTierName(e->tier)));
    if (freed.ok()) {
      frame = proto::EncodeResult(id, proto::EvictResult{static_cast<int64_t>(*freed)});
      spdlog::info("conn {} uid {}: evict {} freed {} bytes", id_, peer_.uid,
                   proto::EvictTierName(e->tier), *freed);
    } else {
      frame = proto::EncodeError(id, ErrorCodeOf(freed.status()), freed.status().message());
      outcome = Outcome::kError;
    }
    server_.RefreshTierStats();
  }
  server_.counters().active.fetch_sub(1, std::memory_order_relaxed);
  PostFinish(id, std::move(frame), outcome);
}

// ---------------------------------------------------------------------------------------------
// Server::Impl

Status Server::Impl::Listen(int inherited_fd) {
  int fd = inherited_fd;
  if (fd < 0) {
    ASSIGN_OR_RETURN(fd, CreateListeningSocket(config_.socket_path));
    created_socket_path_ = config_.socket_path;
  }
  boost::system::error_code ec;
  acceptor_.assign(stream_protocol(), fd, ec);
  if (ec) return IOError("cannot use the listening socket: " + ec.message());
  acceptor_.non_blocking(true, ec);
  if (inherited_fd >= 0) {
    spdlog::info("listening on the socket passed by systemd (fd {})", fd);
  } else {
    spdlog::info("listening on {}", created_socket_path_);
  }
  return Status::Ok();
}

void Server::Impl::Accept() {
  acceptor_.async_accept(
      asio::make_strand(io_), [this](const boost::system::error_code& ec, Socket socket) {
        if (ec) {
          if (ec == asio::error::operation_aborted || shutting_down()) return;
          // EMFILE and friends: back off instead of spinning.
          spdlog::warn("accept: {}", ec.message());
          accept_retry_timer_.expires_after(std::chrono::milliseconds(100));
          accept_retry_timer_.async_wait([this](const boost::system::error_code& e) {
            if (!e && !shutting_down()) Accept();
          });
          return;
        }
        auto conn = std::make_shared<Connection>(*this, std::move(socket), ++next_connection_id_);
        counters_.connections_total.fetch_add(1, std::memory_order_relaxed);
        bool accepted = false;
        {
          std::lock_guard<std::mutex> lock(connections_mu_);
          if (static_cast<int>(connections_.size()) < config_.max_connections) {
            connections_.emplace(conn->id(), conn);
            counters_.connections.store(static_cast<int64_t>(connections_.size()),
                                        std::memory_order_relaxed);
            accepted = true;
          }
        }
        if (accepted) {
          conn->Post([](Connection& c) { c.Start(); });
        } else {
          counters_.connections_refused.fetch_add(1, std::memory_order_relaxed);
          spdlog::warn("connection refused: {} connections open (max_connections)",
                       config_.max_connections);
          const std::string msg = "too many connections (max " +
                                  std::to_string(config_.max_connections) + "); retry later";
          conn->Post([msg](Connection& c) { c.Refuse(proto::ErrorCode::kBusy, msg); });
        }
        Accept();
      });
}

void Server::Impl::Unregister(uint64_t connection_id) {
  std::lock_guard<std::mutex> lock(connections_mu_);
  connections_.erase(connection_id);
  counters_.connections.store(static_cast<int64_t>(connections_.size()), std::memory_order_relaxed);
}

template <typename F>
void Server::Impl::ForEachConnection(F f) {
  std::vector<std::shared_ptr<Connection>> live;
  {
    std::lock_guard<std::mutex> lock(connections_mu_);
    for (auto& [cid, weak] : connections_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  for (auto& c : live) c->Post(f);
}

proto::HealthResult Server::Impl::Health() const {
  proto::HealthResult h;
  h.version = KVTIER_VERSION;
  h.model = std::filesystem::path(engine_.options().model_path).filename().string();
  h.backend = "cpu";
  h.device = cpu_name_;
  h.uptime_s = SecondsSince(started_);
  return h;
}

std::string Server::Impl::EncodeStats(const proto::RequestId& id) {
  proto::StatsResult s;
  cache::TierStatsSnapshot t;
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    t = tier_stats_;
  }
  const engine::EngineOptions& opt = engine_.options();
  proto::TierStats device;
  device.tier = "device";
  device.capacity_bytes = static_cast<int64_t>(opt.kv_capacity_bytes);  // 0: the engine's default
  device.used_bytes = static_cast<int64_t>(t.device.bytes);
  // The device tier holds whole extents: 4 pages of 16 tokens per layer each.
  device.entries = t.device.extents * 4 * engine_.model().config().n_layers;
  device.hits = t.device.hits;
  device.misses = t.device.misses;
  device.bytes_in = static_cast<int64_t>(t.device.bytes_in);
  device.bytes_out = static_cast<int64_t>(t.device.bytes_out);
  s.tiers.push_back(device);
  if (t.has_host) {
    proto::TierStats host;
    host.tier = "host";
    host.capacity_bytes = static_cast<int64_t>(t.host.capacity_bytes);
    host.used_bytes = static_cast<int64_t>(t.host.used_bytes);
    host.entries = t.host.extents;
    host.hits = t.host.hits;
    host.misses = t.host.misses;
    host.bytes_in = static_cast<int64_t>(t.host.bytes_in);
    host.bytes_out = static_cast<int64_t>(t.host.bytes_out);
    s.tiers.push_back(host);
  }
  if (t.has_disk) {
    proto::TierStats disk;
    disk.tier = "disk";
    disk.capacity_bytes = static_cast<int64_t>(opt.disk_cache_bytes);
    disk.used_bytes = static_cast<int64_t>(t.disk.bytes_on_disk);
    disk.entries = static_cast<int64_t>(t.disk.records);
    disk.hits = static_cast<int64_t>(t.disk.hits);
    disk.misses = static_cast<int64_t>(t.disk.misses);
    disk.bytes_in = static_cast<int64_t>(t.disk.bytes_in);
    disk.bytes_out = static_cast<int64_t>(t.disk.bytes_out);
    s.tiers.push_back(disk);
  }
  const Counters& c = counters_;
  s.requests.total = c.requests.load(std::memory_order_relaxed);
  s.requests.active = c.active.load(std::memory_order_relaxed);
  s.requests.queued = static_cast<int64_t>(jobs_.queued());
  s.requests.errors = c.errors.load(std::memory_order_relaxed);
  std::string frame = proto::EncodeResult(id, s);
  // Daemon counters the protocol's StatsResult has no field for yet; clients ignore unknown
  // fields (protocol/messages.h), so they ride along under "daemon".
  nlohmann::json extra = {
      {"connections", c.connections.load(std::memory_order_relaxed)},
      {"connections_total", c.connections_total.load(std::memory_order_relaxed)},
      {"connections_refused", c.connections_refused.load(std::memory_order_relaxed)},
      {"forbidden", c.forbidden.load(std::memory_order_relaxed)},
      {"completed", c.completed.load(std::memory_order_relaxed)},
      {"cancelled", c.cancelled.load(std::memory_order_relaxed)},
      {"busy", c.busy.load(std::memory_order_relaxed)},
      {"slow_clients_dropped", c.slow_clients_dropped.load(std::memory_order_relaxed)},
      {"idle_closed", c.idle_closed.load(std::memory_order_relaxed)},
      {"device_evictions", t.device.evictions},
      {"disk_io_engine", t.disk_io_engine},
      {"uptime_s", SecondsSince(started_)},
  };
  if (frame.size() >= 2 && frame.compare(frame.size() - 2, 2, "}\n") == 0) {
    frame.insert(frame.size() - 2, ",\"daemon\":" + extra.dump());
  }
  return frame;
}

void Server::Impl::WatchdogTick() {
  systemd::Notify("WATCHDOG=1");
  watchdog_timer_.expires_after(watchdog_interval_ / 2);
  watchdog_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) WatchdogTick();
  });
}

void Server::Impl::BeginShutdown() {
  if (shutting_down_.exchange(true, std::memory_order_acq_rel)) return;
  spdlog::info("shutting down: no new connections; in-flight work has {:.1f} s to finish",
               config_.shutdown_grace_s);
  systemd::Notify("STOPPING=1");
  boost::system::error_code ec;
  acceptor_.close(ec);
  accept_retry_timer_.cancel();
  if (!created_socket_path_.empty()) unlink(created_socket_path_.c_str());
  shutdown_started_ = Clock::now();
  ShutdownTick();
}

void Server::Impl::ShutdownTick() {
  const Clock::time_point now = Clock::now();
  if (!cancelled_all_ && SecondsSince(shutdown_started_) >= config_.shutdown_grace_s) {
    cancelled_all_ = true;
    spdlog::info("shutdown grace over: cancelling in-flight work");
    ForEachConnection([](Connection& c) { c.CancelAll("cancelled: the daemon is shutting down"); });
  }
  const bool idle = jobs_.idle() && counters_.helpers_pending.load() == 0;
  if (idle && !closing_all_) {
    // Every final line has been posted before the connections hear this (same strand, FIFO).
    closing_all_ = true;
    flush_deadline_ = now + std::chrono::seconds(2);
    ForEachConnection([](Connection& c) { c.CloseAfterWrite(); });
  }
  if (closing_all_ && !forced_close_ && now >= flush_deadline_) {
    forced_close_ = true;
    ForEachConnection([](Connection& c) { c.Close("shutdown"); });
  }
  bool none_left;
  {
    std::lock_guard<std::mutex> lock(connections_mu_);
    none_left = connections_.empty();
  }
  if (closing_all_ && none_left) {
    spdlog::info("shutdown complete");
    signals_.cancel();
    watchdog_timer_.cancel();
    io_.stop();
    return;
  }
  shutdown_timer_.expires_after(std::chrono::milliseconds(20));
  shutdown_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) ShutdownTick();
  });
}

Status Server::Impl::Run() {
  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("signal {} received", signo);
    BeginShutdown();
  });
  Accept();
  watchdog_interval_ = systemd::WatchdogInterval();
  if (watchdog_interval_.count() > 0) {
    spdlog::info("systemd watchdog: pinging every {} ms", watchdog_interval_.count() / 2000);
    WatchdogTick();
  }
  systemd::Notify("READY=1\nSTATUS=serving");
  spdlog::info("ready: model {}, {} engine threads, {} io threads, queue depth {}", Health().model,
               engine_.threads(), config_.io_threads, config_.queue_depth);
  std::vector<std::thread> threads;
  for (int i = 1; i < config_.io_threads; ++i) threads.emplace_back([this] { io_.run(); });
  io_.run();
  for (std::thread& t : threads) t.join();
  jobs_.Stop();
  helpers_.join();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Server

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::Create(const DaemonConfig& config, engine::Engine* engine,
                                               int inherited_fd) {
  auto impl = std::make_unique<Impl>(config, engine);
  RETURN_IF_ERROR(impl->Listen(inherited_fd));
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Status Server::Run() { return impl_->Run(); }

void Server::RequestShutdown() { impl_->RequestShutdown(); }

}  // namespace kvtier::daemon
