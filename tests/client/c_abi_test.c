/* tests/client/c_abi_test.c — the C ABI of libkvtier (client/kvtier.h), compiled as C99 and
 * linked against libkvtier.so, as a binding in another language would use it.
 *
 *   c_abi_test                     checks without a daemon (label unit)
 *   c_abi_test KVTIERD MODEL       also starts the real kvtierd on MODEL on a temporary socket
 *                                  and runs every op through the C ABI (label model)
 *
 * $KVTIER_TEST_MODEL, when set, replaces MODEL. Exit status 0 only when every check passed. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/kvtier.h"

static int g_failures = 0;

#define CHECK(cond)                                                                \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,      \
              __LINE__, #cond, kvtier_last_error());                               \
      ++g_failures;                                                                \
    }                                                                              \
  } while (0)

#define CHECK_STATUS(call, want)                                                   \
  do {                                                                             \
    int got_ = (call);                                                             \
    if (got_ != (want)) {                                                          \
      fprintf(stderr, "%s:%d: %s returned %s, want %s (last error: %s)\n",         \
              __FILE__, __LINE__, #call, kvtier_status_name(got_),                 \
              kvtier_status_name(want), kvtier_last_error());                      \
      ++g_failures;                                                                \
    }                                                                              \
  } while (0)

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* --- without a daemon --- */

static void test_without_daemon(void) {
  kvtier_client* c = NULL;
  char* s = NULL;

  CHECK(strlen(kvtier_version()) > 0);
  CHECK(strcmp(kvtier_status_name(KVTIER_OK), "ok") == 0);
  CHECK(strcmp(kvtier_status_name(KVTIER_E_BUSY), "busy") == 0);
  CHECK(strcmp(kvtier_status_name(KVTIER_E_CONTEXT_OVERFLOW), "context_overflow") == 0);
  CHECK(strcmp(kvtier_status_name(12345), "unknown") == 0);

  s = kvtier_default_socket_path();
  CHECK(s != NULL && strstr(s, "kvtier.sock") != NULL);
  kvtier_string_free(s);

  CHECK_STATUS(kvtier_connect("/tmp/x", 100, NULL), KVTIER_E_INVALID_ARGUMENT);
  CHECK(strstr(kvtier_last_error(), "null") != NULL);

  /* Nobody listens there: Unavailable, and the message says what to check. */
  CHECK_STATUS(kvtier_connect("/nonexistent-kvtier-dir/kvtier.sock", 500, &c),
               KVTIER_E_UNAVAILABLE);
  CHECK(c == NULL);
  CHECK(strstr(kvtier_last_error(), "is kvtierd running?") != NULL);
  CHECK(strstr(kvtier_last_error(), "/nonexistent-kvtier-dir/kvtier.sock") != NULL);

  CHECK_STATUS(kvtier_health(NULL, &s), KVTIER_E_INVALID_ARGUMENT);
  CHECK_STATUS(kvtier_generate(NULL, "{}", NULL, NULL, NULL), KVTIER_E_INVALID_ARGUMENT);
  kvtier_close(NULL); /* allowed */
}

/* --- against kvtierd --- */

struct tokens_seen {
  int count;
  int stop_after; /* 0: never */
  char text[4096];
};

static int on_token(void* user_data, int32_t token, const char* text, size_t text_len) {
  struct tokens_seen* t = (struct tokens_seen*)user_data;
  CHECK(token >= 0);
  CHECK(strlen(text) == text_len);
  if (strlen(t->text) + text_len < sizeof(t->text)) strcat(t->text, text);
  ++t->count;
  return t->stop_after == 0 || t->count < t->stop_after;
}

struct progress_seen {
  int calls;
  int64_t last_done, last_total;
};

static int on_progress(void* user_data, int64_t done, int64_t total) {
  struct progress_seen* p = (struct progress_seen*)user_data;
  CHECK(done >= p->last_done);
  CHECK(done <= total);
  p->last_done = done;
  p->last_total = total;
  ++p->calls;
  return 1;
}

static int on_event(void* user_data, const char* event_json) {
  int* n = (int*)user_data;
  CHECK(strstr(event_json, "\"event\":\"token\"") != NULL);
  ++*n;
  return 1;
}

static pid_t start_daemon(const char* kvtierd, const char* model, const char* dir,
                          const char* socket_path) {
  char cache[512], state[512], log[512];
  pid_t pid;
  snprintf(cache, sizeof cache, "%s/cache", dir);
  snprintf(state, sizeof state, "%s/state", dir);
  snprintf(log, sizeof log, "%s/kvtierd.log", dir);
  pid = fork();
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    unsetenv("NOTIFY_SOCKET");
    unsetenv("LISTEN_FDS");
    execl(kvtierd, kvtierd, "--model", model, "--socket", socket_path, "--cache-dir", cache,
          "--state-dir", state, "--threads", "2", (char*)NULL);
    _exit(127);
  }
  return pid;
}

/* Connects, retrying while the daemon loads its model (at most 120 s). */
static kvtier_client* wait_for_daemon(pid_t pid, const char* socket_path) {
  int i;
  for (i = 0; i < 1200; ++i) {
    kvtier_client* c = NULL;
    int status;
    char* health = NULL;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      fprintf(stderr, "kvtierd exited early (status %d)\n", status);
      return NULL;
    }
    if (kvtier_connect(socket_path, 1000, &c) == KVTIER_OK) {
      if (kvtier_health(c, &health) == KVTIER_OK) {
        kvtier_string_free(health);
        return c;
      }
      kvtier_close(c);
    }
    sleep_ms(100);
  }
  fprintf(stderr, "kvtierd did not answer on %s within 120 s\n", socket_path);
  return NULL;
}

static void test_with_daemon(kvtier_client* c) {
  char* s = NULL;
  int32_t* ids = NULL;
  size_t n = 0;
  int flag = -1;
  int64_t freed = -1;
  struct tokens_seen seen;
  struct progress_seen progress;
  int events = 0;
  char params[8192];
  size_t i;

  /* health */
  CHECK_STATUS(kvtier_health(c, &s), KVTIER_OK);
  CHECK(s != NULL && strstr(s, "\"op\":\"health\"") != NULL && strstr(s, "\"backend\"") != NULL);
  kvtier_string_free(s);
  s = NULL;

  /* tokenize / detokenize: the tokenizer test's known ids */
  CHECK_STATUS(kvtier_tokenize(c, "Hello, world", 12, 0, &ids, &n), KVTIER_OK);
  CHECK(n == 3);
  if (n == 3) CHECK(ids[0] == 19556 && ids[1] == 28 && ids[2] == 905);
  CHECK_STATUS(kvtier_detokenize(c, ids, n, &s), KVTIER_OK);
  CHECK(s != NULL && strcmp(s, "Hello, world") == 0);
  kvtier_string_free(s);
  s = NULL;
  kvtier_tokens_free(ids);
  ids = NULL;
  CHECK_STATUS(kvtier_tokenize(c, "", 0, 0, &ids, &n), KVTIER_OK);
  CHECK(n == 0);
  kvtier_tokens_free(ids);
  {
    const int32_t bad[1] = {1000000000};
    CHECK_STATUS(kvtier_detokenize(c, bad, 1, &s), KVTIER_E_BAD_REQUEST);
    CHECK(strncmp(kvtier_last_error(), "bad_request: ", 13) == 0);
  }

  /* generate, streamed: 8 greedy tokens */
  memset(&seen, 0, sizeof seen);
  CHECK_STATUS(kvtier_generate(c,
                               "{\"prompt\":\"The capital of France is\",\"max_tokens\":8,"
                               "\"temperature\":0}",
                               on_token, &seen, &s),
               KVTIER_OK);
  CHECK(seen.count == 8);
  CHECK(s != NULL && strstr(s, "\"finish_reason\":\"length\"") != NULL);
  CHECK(s != NULL && strstr(s, "\"completion_tokens\":8") != NULL);
  CHECK(strlen(seen.text) > 0);
  kvtier_string_free(s);
  s = NULL;

  /* generate, cancelled by the callback after 2 tokens */
  memset(&seen, 0, sizeof seen);
  seen.stop_after = 2;
  {
    int rc = kvtier_generate(c, "{\"prompt\":\"Once upon a time\",\"max_tokens\":200,"
                                "\"temperature\":0}",
                             on_token, &seen, &s);
    CHECK(rc == KVTIER_OK || rc == KVTIER_E_CANCELLED);
    if (rc == KVTIER_OK) {
      CHECK(strstr(s, "\"finish_reason\":\"cancelled\"") != NULL);
      kvtier_string_free(s);
      s = NULL;
    }
    CHECK(seen.count == 2); /* no callback after it said stop */
  }

  /* bad parameters are refused before anything is sent */
  CHECK_STATUS(kvtier_generate(c, "{\"prompt\":1}", NULL, NULL, &s), KVTIER_E_INVALID_ARGUMENT);
  CHECK(strstr(kvtier_last_error(), "prompt") != NULL);
  CHECK_STATUS(kvtier_generate(c, "not json", NULL, NULL, &s), KVTIER_E_INVALID_ARGUMENT);
  CHECK_STATUS(kvtier_generate(c, "{\"op\":\"health\"}", NULL, NULL, &s),
               KVTIER_E_INVALID_ARGUMENT);
  CHECK(s == NULL);

  /* prefill with a pin and progress */
  memset(&progress, 0, sizeof progress);
  strcpy(params, "{\"pin\":\"c-abi\",\"prompt\":\"");
  for (i = 0; i < 60; ++i) strcat(params, "The quick brown fox jumps over the lazy dog. ");
  strcat(params, "\"}");
  CHECK_STATUS(kvtier_prefill(c, params, on_progress, &progress, &s), KVTIER_OK);
  CHECK(progress.calls >= 1);
  CHECK(progress.last_total > 64 && progress.last_done == progress.last_total);
  CHECK(s != NULL && strstr(s, "\"op\":\"prefill\"") != NULL);
  kvtier_string_free(s);
  s = NULL;

  /* pins / unpin */
  CHECK_STATUS(kvtier_pins(c, &s), KVTIER_OK);
  CHECK(s != NULL && strstr(s, "\"c-abi\"") != NULL);
  kvtier_string_free(s);
  s = NULL;
  CHECK_STATUS(kvtier_unpin(c, "c-abi", &flag), KVTIER_OK);
  CHECK(flag == 1);
  CHECK_STATUS(kvtier_unpin(c, "c-abi", &flag), KVTIER_OK);
  CHECK(flag == 0);

  /* stats, evict, cancel of nothing */
  CHECK_STATUS(kvtier_stats(c, &s), KVTIER_OK);
  CHECK(s != NULL && strstr(s, "\"device\"") != NULL && strstr(s, "\"requests\"") != NULL);
  kvtier_string_free(s);
  s = NULL;
  CHECK_STATUS(kvtier_evict(c, NULL, &freed), KVTIER_OK);
  CHECK(freed >= 0);
  CHECK_STATUS(kvtier_evict(c, "nowhere", &freed), KVTIER_E_INVALID_ARGUMENT);
  CHECK_STATUS(kvtier_cancel(c, 987654321, &flag), KVTIER_OK);
  CHECK(flag == 0);

  /* kvtier_call: any op, events as JSON */
  CHECK_STATUS(kvtier_call(c,
                           "{\"op\":\"generate\",\"prompt\":\"Hi\",\"max_tokens\":3,"
                           "\"temperature\":0,\"stream\":true}",
                           on_event, &events, &s),
               KVTIER_OK);
  CHECK(events == 3);
  kvtier_string_free(s);
  s = NULL;
  CHECK_STATUS(kvtier_call(c, "{\"op\":\"frobnicate\"}", NULL, NULL, &s),
               KVTIER_E_UNKNOWN_OP);
  CHECK(kvtier_new_request_id(c) > 0);
}

int main(int argc, char** argv) {
  const char* kvtierd;
  const char* model;
  char dir[] = "/tmp/kvtier_c_abi_XXXXXX";
  char socket_path[600], cmd[700];
  pid_t pid;
  kvtier_client* c;
  int status = 0;

  test_without_daemon();
  if (argc < 3) {
    if (g_failures == 0) printf("c_abi_test: all checks passed (no daemon)\n");
    return g_failures == 0 ? 0 : 1;
  }
  kvtierd = argv[1];
  model = getenv("KVTIER_TEST_MODEL") != NULL && getenv("KVTIER_TEST_MODEL")[0] != '\0'
              ? getenv("KVTIER_TEST_MODEL")
              : argv[2];
  if (access(model, R_OK) != 0) {
    fprintf(stderr, "c_abi_test: model %s is missing (run scripts/fetch-model)\n", model);
    return 1;
  }
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(socket_path, sizeof socket_path, "%s/run/kvtier.sock", dir);
  pid = start_daemon(kvtierd, model, dir, socket_path);
  c = wait_for_daemon(pid, socket_path);
  if (c == NULL) {
    ++g_failures;
  } else {
    test_with_daemon(c);
    kvtier_close(c);
  }
  kill(pid, SIGTERM);
  if (waitpid(pid, &status, 0) == pid) {
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  if (g_failures > 0) {
    snprintf(cmd, sizeof cmd, "cat %s/kvtierd.log >&2", dir);
    if (system(cmd) != 0) fprintf(stderr, "(no daemon log)\n");
  }
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  if (g_failures == 0) printf("c_abi_test: all checks passed\n");
  return g_failures == 0 ? 0 : 1;
}
