// client/libkvtier.h — libkvtier, the C++ client of kvtierd (DESIGN §6): one connection to the
// daemon's Unix socket, typed requests, streamed token and progress events, cancellation.
//
// Thread safety: a Client is internally synchronized. Any method may be called from any thread,
// and several calls may be in flight at once on one Client (the requests are pipelined on its
// one connection; a background reader thread dispatches each daemon line to its request by id).
// Every call blocks its caller until its request's final line arrives; its callbacks run on the
// calling thread, never on the reader thread, so a callback may call other Client methods.
//
// Errors (client/README.md has the table): a daemon error line becomes a Status whose message
// starts with the daemon's code, "<code>: <message>" (e.g. "busy: request queue full"), and
// DaemonErrorCode() gives the code back; bad_request → InvalidArgument, unknown_op →
// Unimplemented, too_large / context_overflow / busy → ResourceExhausted, cancelled →
// Cancelled, forbidden / unavailable → Unavailable, internal → Internal. A daemon that cannot be
// reached, or that closes the connection, is Unavailable; a line from the daemon that is not a
// valid event is Internal and ends the connection (every request in flight fails with it).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "protocol/messages.h"

namespace kvtier::client {

// The wire types are the client's types.
using protocol::DetokenizeResult;
using protocol::EvictResult;
using protocol::EvictTier;
using protocol::GenerateRequest;
using protocol::GenerateResult;
using protocol::HealthResult;
using protocol::PinInfo;
using protocol::PinsResult;
using protocol::PrefillRequest;
using protocol::PrefillResult;
using protocol::RequestId;
using protocol::StatsResult;

// The socket kvtierd listens on by default (DESIGN §6): $KVTIER_SOCKET, else
// $XDG_RUNTIME_DIR/kvtier/kvtier.sock, else /run/kvtier/kvtier.sock.
std::string DefaultSocketPath();

// The daemon error code carried by a Status that a Client method returned for a daemon error
// line; nullopt for any other Status (OK, or an error of the client or the connection).
std::optional<protocol::ErrorCode> DaemonErrorCode(const Status& status);

// Called on the calling thread with each generated token and its text (whole UTF-8 characters;
// may be empty). Return false to cancel the request: the client sends `cancel` and the call
// still returns the daemon's final answer (finish_reason "cancelled", or a cancelled error).
using TokenCallback = std::function<bool(int32_t token, std::string_view text)>;
// Called with prompt tokens done (cached ones count as done) and the total. Return false to
// cancel, as above.
using ProgressCallback = std::function<bool(int64_t done_tokens, int64_t total_tokens)>;

struct ConnectOptions {
  std::string socket_path;  // empty: DefaultSocketPath()
  // Longest wait to establish the connection (a daemon whose accept backlog is full).
  std::chrono::milliseconds connect_timeout{5000};
  // Longest wait between two lines of one request's answer; 0: no limit (a long prefill on the
  // CPU may be silent for minutes). When it passes, the request is cancelled and the call
  // returns Unavailable.
  std::chrono::milliseconds request_timeout{0};
};

// The answer to one request: the typed result and the raw result line (JSON, no '\n'), which
// carries any field this client version does not know (`kvtier stats --json` prints it).
struct Reply {
  protocol::OpResult result;
  std::string json;
};

class Client {
 public:
  // Connects to kvtierd. A missing socket or a refused connection is Unavailable
  // "... is kvtierd running? (socket PATH)".
  static Result<std::unique_ptr<Client>> Connect(const ConnectOptions& options);
  static Result<std::unique_ptr<Client>> Connect(const std::string& socket_path,
                                                 std::chrono::milliseconds timeout);
  // Closes the connection; calls still in flight on other threads return Unavailable. (Do not
  // destroy a Client while another thread may still start a call on it.)
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& socket_path() const;

  // A fresh request id (an integer unique on this Client), to pass to Generate or Prefill when
  // another thread needs the id to Cancel() it.
  RequestId NewId();

  Result<HealthResult> Health();
  Result<std::vector<int32_t>> Tokenize(std::string_view text, bool special = false);
  Result<std::string> Detokenize(const std::vector<int32_t>& tokens);
  // Streams tokens to on_token when given (the request's `stream` is then set). `id`: null for a
  // fresh one.
  Result<GenerateResult> Generate(const GenerateRequest& request, const TokenCallback& on_token,
                                  RequestId id = {});
  Result<PrefillResult> Prefill(const PrefillRequest& request, const ProgressCallback& on_progress,
                                RequestId id = {});
  Result<StatsResult> Stats();
  Result<std::vector<PinInfo>> Pins();
  // False when no pin of that name exists in the caller's namespace.
  Result<bool> Unpin(const std::string& name);
  // Bytes freed.
  Result<int64_t> Evict(EvictTier tier);
  // Cancels the request `target` (of this connection). False when it was not in flight.
  Result<bool> Cancel(const RequestId& target);

  // Any request, for callers that want the raw result line or the events themselves.
  // `request.id` null: a fresh id is used. `on_event` (optional) sees every token and progress
  // event; returning false cancels the request as above.
  using EventCallback = std::function<bool(const protocol::Event& event)>;
  Result<Reply> Send(protocol::Request request, const EventCallback& on_event = nullptr);

  // Lines whose id matched no request in flight (ignored; a test hook and a debugging aid).
  int64_t stray_lines() const;

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvtier::client
