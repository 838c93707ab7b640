// client/internal/cli_format.h — what the kvtier CLI prints for people: byte sizes, durations,
// the `stats` and `health` views, and the `prefill` progress bar. Pure text in, text out, so the
// tests can check it without a terminal.
//
// Thread safety: the free functions are pure; a ProgressReporter is used by one thread.
#pragma once

#include <cstdint>
#include <string>

#include "protocol/messages.h"

namespace kvtier::client::internal {

// 0 B, 512 B, 1.5 KiB, 12.0 MiB, 3.25 GiB (binary units, 3 significant digits).
std::string HumanBytes(int64_t bytes);
// 850 ms, 12.3 s, 4m 05s, 2h 03m, 3d 04h.
std::string HumanDuration(double seconds);

// `kvtier stats`: one table row per tier (capacity, used, entries, hits, misses, hit rate, bytes
// in and out), then requests, codecs and retrieval counters. Ends with '\n'.
std::string FormatStats(const protocol::StatsResult& stats);
// `kvtier health`: a few "key: value" lines. Ends with '\n'.
std::string FormatHealth(const protocol::HealthResult& health, const std::string& socket_path);

// The progress of a prefill. On a terminal: one line redrawn in place ("\r"), a bar with the
// percentage, tokens done/total and the rate. Elsewhere (a log, a pipe): plain lines, at most one
// per `plain_interval_s` seconds, and always the last one.
class ProgressReporter {
 public:
  ProgressReporter(bool terminal, std::string label, int bar_width = 30,
                   double plain_interval_s = 2.0);

  // What to write to stderr for an update at `elapsed_s` seconds since the request started
  // ("" when nothing is due).
  std::string Update(int64_t done_tokens, int64_t total_tokens, double elapsed_s);
  // What to write when the request has ended: the terminal line's '\n', or "".
  std::string Finish();

 private:
  std::string Line(int64_t done, int64_t total, double elapsed_s) const;

  const bool terminal_;
  const std::string label_;
  const int bar_width_;
  const double plain_interval_s_;
  bool started_ = false;
  int64_t first_done_ = 0;  // done at the first update (the cached part counts as done)
  double first_s_ = 0;
  double last_plain_s_ = -1e300;
  int64_t last_plain_done_ = -1;
  size_t last_width_ = 0;  // of the terminal line, to blank leftovers
  bool drew_ = false;
};

}  // namespace kvtier::client::internal
