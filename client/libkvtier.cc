// libkvtier: one Unix-socket connection per Client, a reader thread that routes daemon lines to
// the requests in flight, callers that wait on their own request and run their own callbacks.
#include "client/libkvtier.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "protocol/framing.h"

namespace kvtier::client {
namespace {

using protocol::ErrorCode;
using protocol::Event;
using protocol::Op;
using protocol::OpResult;
using protocol::Request;

// Daemon lines may be far longer than request lines (a tokenize result of a 16 MiB text); the
// client trusts its daemon, so this only stops a runaway line from exhausting memory.
constexpr size_t kMaxEventLineBytes = size_t{256} << 20;

std::string Errno(int err) { return std::strerror(err); }

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

StatusCode StatusCodeForDaemonError(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadRequest:
      return StatusCode::kInvalidArgument;
    case ErrorCode::kUnknownOp:
      return StatusCode::kUnimplemented;
    case ErrorCode::kTooLarge:
    case ErrorCode::kContextOverflow:
    case ErrorCode::kBusy:
      return StatusCode::kResourceExhausted;
    case ErrorCode::kCancelled:
      return StatusCode::kCancelled;
    case ErrorCode::kForbidden:
    case ErrorCode::kUnavailable:
      return StatusCode::kUnavailable;
    case ErrorCode::kInternal:
      return StatusCode::kInternal;
  }
  return StatusCode::kInternal;
}

Status DaemonError(ErrorCode code, std::string_view message, std::string_view suffix = {}) {
  std::string m(protocol::ErrorCodeName(code));
  m += ": ";
  m += message;
  m += suffix;
  return Status(StatusCodeForDaemonError(code), std::move(m));
}

// Connects a blocking AF_UNIX stream socket to `path` within `timeout`.
Result<int> ConnectSocket(const std::string& path, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return InvalidArgumentError("socket path '" + path + "' is empty or longer than " +
                                std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return IOError("socket(): " + Errno(errno));
  // On AF_UNIX, a blocking connect waits for room in a full accept backlog; SO_SNDTIMEO bounds
  // that wait. It is reset afterwards so writes block as usual.
  const int64_t ms = std::max<int64_t>(1, timeout.count());
  timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    ::close(fd);
    switch (err) {
      case ENOENT:
      case ECONNREFUSED:
      case ENOTDIR:
        return UnavailableError("cannot connect to kvtierd (" + Errno(err) +
                                "); is kvtierd running? (socket " + path + ")");
      case EACCES:
      case EPERM:
        return UnavailableError("cannot connect to kvtierd: permission denied on socket " + path +
                                " (is your user allowed to use kvtierd?)");
      case EAGAIN:
      case EINPROGRESS:
      case ETIMEDOUT:
        return UnavailableError("timed out connecting to kvtierd after " +
                                std::to_string(timeout.count()) + " ms (socket " + path + ")");
      default:
        return UnavailableError("cannot connect to kvtierd at " + path + ": " + Errno(err));
    }
  }
  tv = timeval{0, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

// One request in flight: the events the reader has routed to it and, at the end, its answer.
struct Pending {
  explicit Pending(Op op, bool discard) : op(op), discard(discard) {}
  const Op op;
  const bool discard;  // nobody waits (a cancel sent on a callback's behalf): drop its answer
  std::condition_variable cv;
  std::deque<Event> events;  // token and progress events not yet handed to the caller
  std::optional<Result<Reply>> answer;
};

// One connection: the socket, its reader thread and the requests in flight on it. Shared by the
// Client and the calls in flight, so a call may outlive a reconnect.
class Connection {
 public:
  Connection(int fd, std::string socket_path, std::shared_ptr<std::atomic<int64_t>> next_id)
      : fd_(fd), socket_path_(std::move(socket_path)), next_id_(std::move(next_id)) {
    reader_ = std::thread([this] { ReadLoop(); });
  }
  ~Connection() {
    Close();
    reader_.join();
    ::close(fd_);
  }

  // Ends the connection from this side; calls in flight fail with Unavailable.
  void Close() {
    closing_.store(true, std::memory_order_release);
    ::shutdown(fd_, SHUT_RDWR);
  }

  // True when the connection has failed and nothing is in flight on it (a reconnect is safe).
  bool DeadAndIdle() {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_.has_value() && pending_.empty();
  }

  int64_t stray_lines() const { return stray_lines_.load(std::memory_order_relaxed); }

  Result<Reply> Call(const Request& request, const Client::EventCallback& on_event,
                     std::chrono::milliseconds timeout);

 private:
  void ReadLoop();
  // Routes one line; a non-OK Status ends the connection.
  Status OnLine(std::string_view line);
  void FailAll(const Status& status);
  Status Write(std::string_view bytes);
  // Sends `cancel` for `target` without waiting for its answer.
  void SendCancel(const protocol::RequestId& target);
  // Registers `id`; InvalidArgument when it is already in flight, the failure when broken.
  Status Register(const protocol::RequestId& id, std::shared_ptr<Pending> p);
  void Unregister(const protocol::RequestId& id);

  const int fd_;
  const std::string socket_path_;
  const std::shared_ptr<std::atomic<int64_t>> next_id_;
  std::thread reader_;
  std::atomic<bool> closing_{false};
  std::atomic<int64_t> stray_lines_{0};

  std::mutex write_mu_;  // serializes whole frames on the socket

  std::mutex mu_;  // guards the members below
  std::unordered_map<protocol::RequestId, std::shared_ptr<Pending>, protocol::RequestIdHash>
      pending_;
  std::optional<Status> broken_;  // set once, when the connection has ended
  // The last error line with a null id (e.g. the daemon refusing the connection or a too_large
  // line): it explains the close that usually follows.
  std::optional<Event> stray_error_;
};

Status Connection::Register(const protocol::RequestId& id, std::shared_ptr<Pending> p) {
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_) return *broken_;
  if (!pending_.emplace(id, std::move(p)).second) {
    return InvalidArgumentError("request id " + id.ToJson() + " is already in flight");
  }
  return Status::Ok();
}

void Connection::Unregister(const protocol::RequestId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.erase(id);
}

Status Connection::Write(std::string_view bytes) {
  std::lock_guard<std::mutex> lock(write_mu_);
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return UnavailableError("cannot send to kvtierd (" + Errno(errno) + "; socket " +
                              socket_path_ + ")");
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

void Connection::SendCancel(const protocol::RequestId& target) {
  Request cancel;
  cancel.id = protocol::RequestId(next_id_->fetch_add(1, std::memory_order_relaxed));
  cancel.body = protocol::CancelRequest{target};
  if (!Register(cancel.id, std::make_shared<Pending>(Op::kCancel, /*discard=*/true)).ok()) return;
  if (!Write(protocol::EncodeRequest(cancel)).ok()) Unregister(cancel.id);
}

Result<Reply> Connection::Call(const Request& request, const Client::EventCallback& on_event,
                               std::chrono::milliseconds timeout) {
  auto p = std::make_shared<Pending>(request.op(), /*discard=*/false);
  RETURN_IF_ERROR(Register(request.id, p));
  if (Status s = Write(protocol::EncodeRequest(request)); !s.ok()) {
    // The daemon has closed the connection; its reason (e.g. a refusal line) is usually still
    // on its way to the reader, which then fails this request with it.
    std::unique_lock<std::mutex> lock(mu_);
    if (p->cv.wait_for(lock, std::chrono::seconds(2), [&] { return p->answer.has_value(); })) {
      return std::move(*p->answer);
    }
    pending_.erase(request.id);
    return s;
  }
  bool cancelled = false;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    auto ready = [&] { return !p->events.empty() || p->answer.has_value(); };
    if (timeout.count() > 0) {
      if (!p->cv.wait_for(lock, timeout, ready)) {
        pending_.erase(request.id);
        lock.unlock();
        SendCancel(request.id);
        return UnavailableError("no answer from kvtierd for " + std::to_string(timeout.count()) +
                                " ms; request " + request.id.ToJson() + " cancelled");
      }
    } else {
      p->cv.wait(lock, ready);
    }
    if (!p->events.empty()) {
      Event e = std::move(p->events.front());
      p->events.pop_front();
      if (cancelled || !on_event) continue;  // after a cancel, nobody wants more events
      lock.unlock();
      const bool go_on = on_event(e);
      if (!go_on) {
        cancelled = true;
        SendCancel(request.id);
      }
      lock.lock();
      continue;
    }
    // pending_ no longer holds p: the reader removed it with the answer.
    return std::move(*p->answer);
  }
}

void Connection::ReadLoop() {
  protocol::LineDecoder decoder(kMaxEventLineBytes);
  std::vector<char> buf(size_t{64} << 10);
  Status end;
  for (;;) {
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (closing_.load(std::memory_order_acquire)) {
        end = UnavailableError("the connection to kvtierd was closed by the client");
      } else if (n == 0) {
        end = UnavailableError("kvtierd closed the connection (socket " + socket_path_ + ")");
      } else {
        end = UnavailableError("reading from kvtierd failed: " + Errno(errno));
      }
      break;
    }
    Status bad;
    const auto state = decoder.Feed(std::string_view(buf.data(), static_cast<size_t>(n)),
                                    [&](std::string_view line) {
                                      if (bad.ok()) bad = OnLine(line);
                                    });
    if (!bad.ok()) {
      end = bad;
      break;
    }
    if (state == protocol::LineDecoder::State::kTooLarge) {
      end = InternalError("kvtierd sent a line over " + std::to_string(kMaxEventLineBytes) +
                          " bytes; connection dropped");
      break;
    }
  }
  if (end.code() == StatusCode::kUnavailable) {
    // The daemon's last words, when it closed: an unterminated line, or a null-id error.
    if (std::optional<std::string> tail = decoder.Finish()) (void)OnLine(*tail);
    std::lock_guard<std::mutex> lock(mu_);
    if (stray_error_ && !closing_.load(std::memory_order_acquire)) {
      const auto& e = std::get<protocol::ErrorEvent>(stray_error_->body);
      end = DaemonError(e.code, e.message, " (kvtierd closed the connection)");
    }
  }
  FailAll(end);
}

Status Connection::OnLine(std::string_view line) {
  Result<Event> parsed = protocol::ParseEvent(line);
  if (!parsed.ok()) {
    return InternalError("kvtierd sent a line that is not a valid event (" +
                         parsed.status().message() + "); connection dropped");
  }
  Event& e = *parsed;
  std::lock_guard<std::mutex> lock(mu_);
  if (e.id.is_null()) {
    if (std::holds_alternative<protocol::ErrorEvent>(e.body)) {
      stray_error_ = std::move(e);
    } else {
      stray_lines_.fetch_add(1, std::memory_order_relaxed);
    }
    return Status::Ok();
  }
  auto it = pending_.find(e.id);
  if (it == pending_.end()) {
    stray_lines_.fetch_add(1, std::memory_order_relaxed);
    return Status::Ok();
  }
  std::shared_ptr<Pending> p = it->second;
  if (!e.is_final()) {
    if (!p->discard) {
      p->events.push_back(std::move(e));
      p->cv.notify_one();
    }
    return Status::Ok();
  }
  pending_.erase(it);
  if (p->discard) return Status::Ok();
  if (auto* err = std::get_if<protocol::ErrorEvent>(&e.body)) {
    p->answer.emplace(DaemonError(err->code, err->message));
  } else {
    OpResult& result = std::get<OpResult>(e.body);
    if (static_cast<int>(result.index()) != static_cast<int>(p->op)) {
      p->answer.emplace(InternalError(
          "kvtierd answered a " + std::string(protocol::OpName(p->op)) + " request with a " +
          std::string(protocol::OpName(static_cast<Op>(result.index()))) + " result"));
    } else {
      p->answer.emplace(Reply{std::move(result), std::string(line)});
    }
  }
  p->cv.notify_one();
  return Status::Ok();
}

void Connection::FailAll(const Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  broken_ = status;
  for (auto& [id, p] : pending_) {
    p->answer.emplace(status);
    p->cv.notify_one();
  }
  pending_.clear();
}

}  // namespace

std::string DefaultSocketPath() {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v != nullptr ? v : "";
  };
  if (!env("KVTIER_SOCKET").empty()) return env("KVTIER_SOCKET");
  // The paths kvtierd picks (daemon/config.h), first one that exists; else the one a daemon
  // started by this user would pick, so the error message names it.
  std::vector<std::string> candidates;
  if (!env("XDG_RUNTIME_DIR").empty()) {
    candidates.push_back(env("XDG_RUNTIME_DIR") + "/kvtier/kvtier.sock");
  }
  if (geteuid() != 0) {
    candidates.push_back("/run/user/" + std::to_string(geteuid()) + "/kvtier/kvtier.sock");
  }
  candidates.push_back("/run/kvtier/kvtier.sock");
  for (const std::string& c : candidates) {
    if (Exists(c)) return c;
  }
  return geteuid() == 0 ? "/run/kvtier/kvtier.sock" : candidates.front();
}

std::optional<protocol::ErrorCode> DaemonErrorCode(const Status& status) {
  const std::string& m = status.message();
  const size_t colon = m.find(": ");
  if (status.ok() || colon == std::string::npos) return std::nullopt;
  std::optional<ErrorCode> code = protocol::ErrorCodeFromName(std::string_view(m).substr(0, colon));
  if (!code || StatusCodeForDaemonError(*code) != status.code()) return std::nullopt;
  return code;
}

class Client::Impl {
 public:
  explicit Impl(ConnectOptions options) : options_(std::move(options)) {}

  // The live connection, reconnecting when the last one ended with nothing in flight (kvtierd
  // closes idle connections).
  Result<std::shared_ptr<Connection>> Live() {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn_ && !conn_->DeadAndIdle()) return conn_;
    ASSIGN_OR_RETURN(int fd, ConnectSocket(options_.socket_path, options_.connect_timeout));
    if (conn_) stray_before_ += conn_->stray_lines();
    conn_ = std::make_shared<Connection>(fd, options_.socket_path, next_id_);
    return conn_;
  }

  RequestId NewId() { return RequestId(next_id_->fetch_add(1, std::memory_order_relaxed)); }

  Result<Reply> Send(Request request, const EventCallback& on_event) {
    if (request.id.is_null()) request.id = NewId();
    ASSIGN_OR_RETURN(std::shared_ptr<Connection> conn, Live());
    return conn->Call(request, on_event, options_.request_timeout);
  }

  int64_t stray_lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return stray_before_ + (conn_ ? conn_->stray_lines() : 0);
  }

  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn_) conn_->Close();
  }

  const ConnectOptions options_;

 private:
  const std::shared_ptr<std::atomic<int64_t>> next_id_ = std::make_shared<std::atomic<int64_t>>(1);
  std::mutex mu_;  // guards conn_, stray_before_
  std::shared_ptr<Connection> conn_;
  int64_t stray_before_ = 0;
};

namespace {

// Sends `body` and returns the result of its op.
template <typename T, typename Body>
Result<T> Typed(Client& client, Body body, const Client::EventCallback& on_event = nullptr,
                RequestId id = {}) {
  protocol::Request request;
  request.id = std::move(id);
  request.body = std::move(body);
  ASSIGN_OR_RETURN(Reply reply, client.Send(std::move(request), on_event));
  return std::get<T>(std::move(reply.result));
}

}  // namespace

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() { impl_->Close(); }

Result<std::unique_ptr<Client>> Client::Connect(const ConnectOptions& options) {
  ConnectOptions o = options;
  if (o.socket_path.empty()) o.socket_path = DefaultSocketPath();
  auto impl = std::make_unique<Impl>(std::move(o));
  RETURN_IF_ERROR(impl->Live());
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Result<std::unique_ptr<Client>> Client::Connect(const std::string& socket_path,
                                                std::chrono::milliseconds timeout) {
  ConnectOptions o;
  o.socket_path = socket_path;
  o.connect_timeout = timeout;
  return Connect(o);
}

const std::string& Client::socket_path() const { return impl_->options_.socket_path; }

RequestId Client::NewId() { return impl_->NewId(); }

Result<Reply> Client::Send(protocol::Request request, const EventCallback& on_event) {
  return impl_->Send(std::move(request), on_event);
}

int64_t Client::stray_lines() const { return impl_->stray_lines(); }

Result<HealthResult> Client::Health() {
  return Typed<HealthResult>(*this, protocol::HealthRequest{});
}

Result<std::vector<int32_t>> Client::Tokenize(std::string_view text, bool special) {
  ASSIGN_OR_RETURN(protocol::TokenizeResult r,
                   Typed<protocol::TokenizeResult>(
                       *this, protocol::TokenizeRequest{std::string(text), special}));
  return std::move(r.tokens);
}

Result<std::string> Client::Detokenize(const std::vector<int32_t>& tokens) {
  ASSIGN_OR_RETURN(DetokenizeResult r,
                   Typed<DetokenizeResult>(*this, protocol::DetokenizeRequest{tokens}));
  return std::move(r.text);
}

Result<GenerateResult> Client::Generate(const GenerateRequest& request,
                                        const TokenCallback& on_token, RequestId id) {
  GenerateRequest r = request;
  EventCallback on_event;
  if (on_token) {
    r.stream = true;
    on_event = [&on_token](const protocol::Event& e) {
      const auto* t = std::get_if<protocol::TokenEvent>(&e.body);
      return t == nullptr || on_token(t->token, t->text);
    };
  }
  return Typed<GenerateResult>(*this, std::move(r), on_event, std::move(id));
}

Result<PrefillResult> Client::Prefill(const PrefillRequest& request,
                                      const ProgressCallback& on_progress, RequestId id) {
  EventCallback on_event;
  if (on_progress) {
    on_event = [&on_progress](const protocol::Event& e) {
      const auto* p = std::get_if<protocol::ProgressEvent>(&e.body);
      return p == nullptr || on_progress(p->done, p->total);
    };
  }
  return Typed<PrefillResult>(*this, request, on_event, std::move(id));
}

Result<StatsResult> Client::Stats() { return Typed<StatsResult>(*this, protocol::StatsRequest{}); }

Result<std::vector<PinInfo>> Client::Pins() {
  ASSIGN_OR_RETURN(PinsResult r, Typed<PinsResult>(*this, protocol::PinsRequest{}));
  return std::move(r.pins);
}

Result<bool> Client::Unpin(const std::string& name) {
  ASSIGN_OR_RETURN(protocol::UnpinResult r,
                   Typed<protocol::UnpinResult>(*this, protocol::UnpinRequest{name}));
  return r.unpinned;
}

Result<int64_t> Client::Evict(EvictTier tier) {
  ASSIGN_OR_RETURN(EvictResult r, Typed<EvictResult>(*this, protocol::EvictRequest{tier}));
  return r.freed_bytes;
}

Result<bool> Client::Cancel(const RequestId& target) {
  if (target.is_null()) return InvalidArgumentError("cancel: the target id is null");
  ASSIGN_OR_RETURN(protocol::CancelResult r,
                   Typed<protocol::CancelResult>(*this, protocol::CancelRequest{target}));
  return r.cancelled;
}

}  // namespace kvtier::client
