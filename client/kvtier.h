/* client/kvtier.h — the C ABI of libkvtier (libkvtier.so), for binding kvtierd's client from
 * other languages (Python ctypes/cffi, Go cgo, Rust, ...). C99; no C++ types cross it.
 *
 * Thread safety: a kvtier_client is internally synchronized: every function may be called from
 * any thread, several calls may be in flight on one client at once (they share its connection),
 * and each call blocks its thread until its answer arrives. Callbacks run on the calling thread.
 * kvtier_close must not race with other calls on the same client.
 *
 * Conventions:
 *   - Every function that can fail returns an int status: KVTIER_OK (0) or a KVTIER_E_* code.
 *     On failure, kvtier_last_error() gives a one-line UTF-8 message for this thread, valid until
 *     this thread's next kvtier_* call; output parameters are left untouched.
 *   - Strings in are UTF-8, NUL-terminated unless a length is given; strings out are UTF-8,
 *     NUL-terminated, allocated by the library, and owned by the caller, who frees them with
 *     kvtier_string_free (token arrays: kvtier_tokens_free). Never free them with free().
 *   - Results of structured ops (health, generate, prefill, stats, pins) are the daemon's result
 *     object as JSON text (DESIGN §6, protocol/README.md): {"id":..,"event":"result","op":..,...}.
 *   - Request parameters of generate and prefill are a JSON object with the fields of the op
 *     (e.g. {"prompt":"...","max_tokens":32,"temperature":0}); it may carry an integer or string
 *     "id" (see kvtier_new_request_id), and must not carry "op". It is validated exactly as the
 *     daemon would validate it, so a mistake is reported before anything is sent.
 */
#ifndef KVTIER_CLIENT_KVTIER_H_
#define KVTIER_CLIENT_KVTIER_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. The daemon's error codes (DESIGN §6) map one to one; the others come from this
 * side of the socket. Values never change; new codes may be added. */
enum {
  KVTIER_OK = 0,
  KVTIER_E_INVALID_ARGUMENT = 1, /* a bad argument to this library (null pointer, bad JSON) */
  KVTIER_E_UNAVAILABLE = 2,      /* cannot reach kvtierd, connection lost, daemon unavailable */
  KVTIER_E_BAD_REQUEST = 3,      /* daemon: bad_request */
  KVTIER_E_UNKNOWN_OP = 4,       /* daemon: unknown_op */
  KVTIER_E_TOO_LARGE = 5,        /* daemon: too_large */
  KVTIER_E_CONTEXT_OVERFLOW = 6, /* daemon: context_overflow */
  KVTIER_E_BUSY = 7,             /* daemon: busy (queue full, too many connections) */
  KVTIER_E_CANCELLED = 8,        /* daemon: cancelled */
  KVTIER_E_FORBIDDEN = 9,        /* daemon: forbidden */
  KVTIER_E_INTERNAL = 10,        /* daemon: internal, or a protocol violation */
};

typedef struct kvtier_client kvtier_client;

/* Called with each generated token: its id and the text it completes (text_len bytes, also
 * NUL-terminated; may be empty). Return nonzero to go on, 0 to cancel the request. */
typedef int (*kvtier_token_fn)(void* user_data, int32_t token, const char* text, size_t text_len);
/* Called with the prompt tokens done so far and the total. Return nonzero to go on, 0 to cancel. */
typedef int (*kvtier_progress_fn)(void* user_data, int64_t done_tokens, int64_t total_tokens);
/* Called with every non-final event line of a request, as JSON text. Return 0 to cancel. */
typedef int (*kvtier_event_fn)(void* user_data, const char* event_json);

/* The library version, e.g. "0.1.0" (static storage). */
const char* kvtier_version(void);
/* A short name for a status code, e.g. "busy" (static storage; "unknown" for others). */
const char* kvtier_status_name(int status);
/* This thread's last error message ("" when the last call succeeded). */
const char* kvtier_last_error(void);

/* The default socket path ($KVTIER_SOCKET, else $XDG_RUNTIME_DIR/kvtier/kvtier.sock, else
 * /run/kvtier/kvtier.sock). Free with kvtier_string_free. */
char* kvtier_default_socket_path(void);

/* Connects to kvtierd. socket_path NULL or "": the default; timeout_ms <= 0: 5000.
 * *out receives a client to release with kvtier_close. */
int kvtier_connect(const char* socket_path, int timeout_ms, kvtier_client** out);
/* Closes the connection and frees the client (NULL is allowed). */
void kvtier_close(kvtier_client* client);

/* A fresh integer request id, to put in a request's "id" so that another thread can cancel it. */
int64_t kvtier_new_request_id(kvtier_client* client);

int kvtier_health(kvtier_client* client, char** result_json);
/* special != 0: text such as "<|im_start|>" becomes that special token. */
int kvtier_tokenize(kvtier_client* client, const char* text, size_t text_len, int special,
                    int32_t** tokens, size_t* n_tokens);
int kvtier_detokenize(kvtier_client* client, const int32_t* tokens, size_t n_tokens,
                      char** text);
/* on_token may be NULL (no streaming). result_json may be NULL when only the tokens matter. */
int kvtier_generate(kvtier_client* client, const char* params_json, kvtier_token_fn on_token,
                    void* user_data, char** result_json);
int kvtier_prefill(kvtier_client* client, const char* params_json, kvtier_progress_fn on_progress,
                   void* user_data, char** result_json);
int kvtier_stats(kvtier_client* client, char** result_json);
int kvtier_pins(kvtier_client* client, char** result_json);
/* *unpinned: 1 when the pin existed, 0 when not. */
int kvtier_unpin(kvtier_client* client, const char* name, int* unpinned);
/* tier: "device", "host", "disk", "all", or NULL for "all". */
int kvtier_evict(kvtier_client* client, const char* tier, int64_t* freed_bytes);
/* Cancels the request with integer id `target`; *cancelled: 1 when it was in flight. */
int kvtier_cancel(kvtier_client* client, int64_t target, int* cancelled);

/* Any request: a whole request object as JSON ("op" required, "id" optional). on_event (may be
 * NULL) sees each token/progress line. */
int kvtier_call(kvtier_client* client, const char* request_json, kvtier_event_fn on_event,
                void* user_data, char** result_json);

void kvtier_string_free(char* s);
void kvtier_tokens_free(int32_t* tokens);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KVTIER_CLIENT_KVTIER_H_ */
