// The C ABI (client/kvtier.h) over libkvtier. No exception and no C++ type crosses it.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "client/kvtier.h"
#include "client/libkvtier.h"

#ifndef KVTIER_VERSION
#define KVTIER_VERSION "0.0.0"
#endif

struct kvtier_client {
  std::unique_ptr<kvtier::client::Client> client;
};

namespace {

using kvtier::Result;
using kvtier::Status;
using kvtier::StatusCode;
using kvtier::client::Client;
namespace protocol = kvtier::protocol;

thread_local std::string t_last_error;

int CodeOf(const Status& s) {
  if (s.ok()) return KVTIER_OK;
  if (std::optional<protocol::ErrorCode> d = kvtier::client::DaemonErrorCode(s)) {
    switch (*d) {
      case protocol::ErrorCode::kBadRequest:
        return KVTIER_E_BAD_REQUEST;
      case protocol::ErrorCode::kUnknownOp:
        return KVTIER_E_UNKNOWN_OP;
      case protocol::ErrorCode::kTooLarge:
        return KVTIER_E_TOO_LARGE;
      case protocol::ErrorCode::kContextOverflow:
        return KVTIER_E_CONTEXT_OVERFLOW;
      case protocol::ErrorCode::kBusy:
        return KVTIER_E_BUSY;
      case protocol::ErrorCode::kCancelled:
        return KVTIER_E_CANCELLED;
      case protocol::ErrorCode::kForbidden:
        return KVTIER_E_FORBIDDEN;
      case protocol::ErrorCode::kUnavailable:
        return KVTIER_E_UNAVAILABLE;
      case protocol::ErrorCode::kInternal:
        return KVTIER_E_INTERNAL;
    }
  }
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
      return KVTIER_E_INVALID_ARGUMENT;
    case StatusCode::kUnavailable:
      return KVTIER_E_UNAVAILABLE;
    case StatusCode::kCancelled:
      return KVTIER_E_CANCELLED;
    case StatusCode::kUnimplemented:  // ParseRequest's verdict on an unknown op
      return KVTIER_E_UNKNOWN_OP;
    default:
      return KVTIER_E_INTERNAL;
  }
}

// Records `s` as this thread's last error and returns its code.
int Done(const Status& s) {
  if (s.ok()) {
    t_last_error.clear();
  } else {
    t_last_error = s.message();
  }
  return CodeOf(s);
}

int BadArgument(const char* what) {
  t_last_error = what;
  return KVTIER_E_INVALID_ARGUMENT;
}

// A malloc'd NUL-terminated copy (nullptr when out of memory).
char* CopyString(std::string_view s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p == nullptr) return nullptr;
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  return p;
}

// Hands `s` to the caller through *out (when out is not null).
int Give(std::string_view s, char** out) {
  if (out == nullptr) return Done(Status::Ok());
  char* p = CopyString(s);
  if (p == nullptr) return BadArgument("out of memory");
  *out = p;
  return Done(Status::Ok());
}

// Builds a request from a JSON object of the op's fields (an "id" optional, no "op"); the
// daemon's own validation (ParseRequest) checks it.
Result<protocol::Request> RequestFromParams(Client& client, const char* json_text,
                                            std::string_view op, bool op_in_json) {
  if (json_text == nullptr) return kvtier::InvalidArgumentError("request JSON is null");
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return kvtier::InvalidArgumentError("request JSON must be one JSON object");
  }
  if (!op_in_json) {
    if (j.contains("op")) {
      return kvtier::InvalidArgumentError("the parameters must not carry \"op\"");
    }
    j["op"] = op;
  }
  const bool fresh_id = !j.contains("id");
  if (fresh_id) j["id"] = 0;  // replaced below; keeps validation's "missing id" quiet
  ASSIGN_OR_RETURN(protocol::Request request, protocol::ParseRequest(j.dump()));
  if (fresh_id) request.id = client.NewId();
  return request;
}

template <typename F>
int Guarded(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    t_last_error = "out of memory";
    return KVTIER_E_INTERNAL;
  } catch (const std::exception& e) {
    t_last_error = std::string("internal error: ") + e.what();
    return KVTIER_E_INTERNAL;
  } catch (...) {
    t_last_error = "internal error";
    return KVTIER_E_INTERNAL;
  }
}

// Sends a request and hands back its raw result line.
int SendForJson(kvtier_client* c, protocol::Request request, const Client::EventCallback& on_event,
                char** result_json) {
  Result<kvtier::client::Reply> reply = c->client->Send(std::move(request), on_event);
  if (!reply.ok()) return Done(reply.status());
  return Give(reply->json, result_json);
}

}  // namespace

extern "C" {

const char* kvtier_version(void) { return KVTIER_VERSION; }

const char* kvtier_status_name(int status) {
  switch (status) {
    case KVTIER_OK:
      return "ok";
    case KVTIER_E_INVALID_ARGUMENT:
      return "invalid_argument";
    case KVTIER_E_UNAVAILABLE:
      return "unavailable";
    case KVTIER_E_BAD_REQUEST:
      return "bad_request";
    case KVTIER_E_UNKNOWN_OP:
      return "unknown_op";
    case KVTIER_E_TOO_LARGE:
      return "too_large";
    case KVTIER_E_CONTEXT_OVERFLOW:
      return "context_overflow";
    case KVTIER_E_BUSY:
      return "busy";
    case KVTIER_E_CANCELLED:
      return "cancelled";
    case KVTIER_E_FORBIDDEN:
      return "forbidden";
    case KVTIER_E_INTERNAL:
      return "internal";
    default:
      return "unknown";
  }
}

const char* kvtier_last_error(void) { return t_last_error.c_str(); }

char* kvtier_default_socket_path(void) {
  try {
    return CopyString(kvtier::client::DefaultSocketPath());
  } catch (...) {
    return nullptr;
  }
}

int kvtier_connect(const char* socket_path, int timeout_ms, kvtier_client** out) {
  if (out == nullptr) return BadArgument("kvtier_connect: out is null");
  return Guarded([&] {
    kvtier::client::ConnectOptions o;
    if (socket_path != nullptr) o.socket_path = socket_path;
    if (timeout_ms > 0) o.connect_timeout = std::chrono::milliseconds(timeout_ms);
    Result<std::unique_ptr<Client>> c = Client::Connect(o);
    if (!c.ok()) return Done(c.status());
    *out = new kvtier_client{std::move(*c)};
    return Done(Status::Ok());
  });
}

void kvtier_close(kvtier_client* client) { delete client; }

int64_t kvtier_new_request_id(kvtier_client* client) {
  if (client == nullptr) return 0;
  return client->client->NewId().int_value();
}

int kvtier_health(kvtier_client* c, char** result_json) {
  if (c == nullptr || result_json == nullptr) return BadArgument("kvtier_health: null argument");
  return Guarded([&] {
    protocol::Request r;
    r.body = protocol::HealthRequest{};
    return SendForJson(c, std::move(r), nullptr, result_json);
  });
}

int kvtier_tokenize(kvtier_client* c, const char* text, size_t text_len, int special,
                    int32_t** tokens, size_t* n_tokens) {
  if (c == nullptr || (text == nullptr && text_len > 0) || tokens == nullptr ||
      n_tokens == nullptr) {
    return BadArgument("kvtier_tokenize: null argument");
  }
  return Guarded([&] {
    Result<std::vector<int32_t>> ids =
        c->client->Tokenize(std::string_view(text == nullptr ? "" : text, text_len), special != 0);
    if (!ids.ok()) return Done(ids.status());
    auto* p = static_cast<int32_t*>(std::malloc(std::max<size_t>(1, ids->size()) * 4));
    if (p == nullptr) return BadArgument("out of memory");
    std::memcpy(p, ids->data(), ids->size() * sizeof(int32_t));
    *tokens = p;
    *n_tokens = ids->size();
    return Done(Status::Ok());
  });
}

int kvtier_detokenize(kvtier_client* c, const int32_t* tokens, size_t n_tokens, char** text) {
  if (c == nullptr || (tokens == nullptr && n_tokens > 0) || text == nullptr) {
    return BadArgument("kvtier_detokenize: null argument");
  }
  return Guarded([&] {
    Result<std::string> s = c->client->Detokenize(std::vector<int32_t>(tokens, tokens + n_tokens));
    if (!s.ok()) return Done(s.status());
    return Give(*s, text);
  });
}

int kvtier_generate(kvtier_client* c, const char* params_json, kvtier_token_fn on_token,
                    void* user_data, char** result_json) {
  if (c == nullptr) return BadArgument("kvtier_generate: client is null");
  return Guarded([&] {
    Result<protocol::Request> r = RequestFromParams(*c->client, params_json, "generate", false);
    if (!r.ok()) return Done(r.status());
    Client::EventCallback on_event;
    if (on_token != nullptr) {
      std::get<protocol::GenerateRequest>(r->body).stream = true;
      on_event = [&](const protocol::Event& e) {
        const auto* t = std::get_if<protocol::TokenEvent>(&e.body);
        return t == nullptr || on_token(user_data, t->token, t->text.c_str(), t->text.size()) != 0;
      };
    }
    return SendForJson(c, std::move(*r), on_event, result_json);
  });
}

int kvtier_prefill(kvtier_client* c, const char* params_json, kvtier_progress_fn on_progress,
                   void* user_data, char** result_json) {
  if (c == nullptr) return BadArgument("kvtier_prefill: client is null");
  return Guarded([&] {
    Result<protocol::Request> r = RequestFromParams(*c->client, params_json, "prefill", false);
    if (!r.ok()) return Done(r.status());
    Client::EventCallback on_event;
    if (on_progress != nullptr) {
      on_event = [&](const protocol::Event& e) {
        const auto* p = std::get_if<protocol::ProgressEvent>(&e.body);
        return p == nullptr || on_progress(user_data, p->done, p->total) != 0;
      };
    }
    return SendForJson(c, std::move(*r), on_event, result_json);
  });
}

int kvtier_stats(kvtier_client* c, char** result_json) {
  if (c == nullptr || result_json == nullptr) return BadArgument("kvtier_stats: null argument");
  return Guarded([&] {
    protocol::Request r;
    r.body = protocol::StatsRequest{};
    return SendForJson(c, std::move(r), nullptr, result_json);
  });
}

int kvtier_pins(kvtier_client* c, char** result_json) {
  if (c == nullptr || result_json == nullptr) return BadArgument("kvtier_pins: null argument");
  return Guarded([&] {
    protocol::Request r;
    r.body = protocol::PinsRequest{};
    return SendForJson(c, std::move(r), nullptr, result_json);
  });
}

int kvtier_unpin(kvtier_client* c, const char* name, int* unpinned) {
  if (c == nullptr || name == nullptr || unpinned == nullptr) {
    return BadArgument("kvtier_unpin: null argument");
  }
  return Guarded([&] {
    Result<bool> r = c->client->Unpin(name);
    if (!r.ok()) return Done(r.status());
    *unpinned = *r ? 1 : 0;
    return Done(Status::Ok());
  });
}

int kvtier_evict(kvtier_client* c, const char* tier, int64_t* freed_bytes) {
  if (c == nullptr || freed_bytes == nullptr) return BadArgument("kvtier_evict: null argument");
  return Guarded([&] {
    protocol::EvictTier t = protocol::EvictTier::kAll;
    const std::string_view name = tier == nullptr ? "all" : tier;
    if (name == "device") {
      t = protocol::EvictTier::kDevice;
    } else if (name == "host") {
      t = protocol::EvictTier::kHost;
    } else if (name == "disk") {
      t = protocol::EvictTier::kDisk;
    } else if (name != "all") {
      return BadArgument("kvtier_evict: tier must be device, host, disk or all");
    }
    Result<int64_t> r = c->client->Evict(t);
    if (!r.ok()) return Done(r.status());
    *freed_bytes = *r;
    return Done(Status::Ok());
  });
}

int kvtier_cancel(kvtier_client* c, int64_t target, int* cancelled) {
  if (c == nullptr || cancelled == nullptr) return BadArgument("kvtier_cancel: null argument");
  return Guarded([&] {
    Result<bool> r = c->client->Cancel(protocol::RequestId(target));
    if (!r.ok()) return Done(r.status());
    *cancelled = *r ? 1 : 0;
    return Done(Status::Ok());
  });
}

int kvtier_call(kvtier_client* c, const char* request_json, kvtier_event_fn on_event,
                void* user_data, char** result_json) {
  if (c == nullptr) return BadArgument("kvtier_call: client is null");
  return Guarded([&] {
    Result<protocol::Request> r = RequestFromParams(*c->client, request_json, "", true);
    if (!r.ok()) return Done(r.status());
    Client::EventCallback cb;
    if (on_event != nullptr) {
      cb = [&](const protocol::Event& e) {
        std::string line = protocol::EncodeEvent(e);
        if (!line.empty() && line.back() == '\n') line.pop_back();
        return on_event(user_data, line.c_str()) != 0;
      };
    }
    return SendForJson(c, std::move(*r), cb, result_json);
  });
}

void kvtier_string_free(char* s) { std::free(s); }

void kvtier_tokens_free(int32_t* tokens) { std::free(tokens); }

}  // extern "C"
