#include "client/internal/cli_format.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

namespace kvtier::client::internal {
namespace {

std::string Printf(const char* fmt, auto... args) {
  const int n = std::snprintf(nullptr, 0, fmt, args...);
  std::string s(static_cast<size_t>(std::max(n, 0)), '\0');
  std::snprintf(s.data(), s.size() + 1, fmt, args...);
  return s;
}

std::string Count(int64_t n) {
  // 1234567 -> 1,234,567
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

// Right-aligns each column after the first; the first is left-aligned.
std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      const std::string pad(width[i] - r[i].size(), ' ');
      if (i == 0) {
        line += r[i] + pad;
      } else {
        line += "  " + pad + r[i];
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::string HumanBytes(int64_t bytes) {
  if (bytes < 0) return "-" + HumanBytes(-bytes);
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  const int decimals = v < 10 ? 2 : v < 100 ? 1 : 0;
  // 9.999 rounds to "10.00": print with the precision of the rounded value.
  std::string s = Printf("%.*f", decimals, v);
  if (decimals > 0 && std::stod(s) >= (decimals == 2 ? 10 : 100))
    s = Printf("%.*f", decimals - 1, v);
  return s + " " + kUnits[u];
}

std::string HumanDuration(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  if (seconds < 1) return Printf("%.0f ms", seconds * 1000);
  if (seconds < 60) return Printf("%.1f s", seconds);
  const int64_t s = static_cast<int64_t>(seconds);
  if (s < 3600) return Printf("%" PRId64 "m %02" PRId64 "s", s / 60, s % 60);
  if (s < 86400) return Printf("%" PRId64 "h %02" PRId64 "m", s / 3600, (s % 3600) / 60);
  return Printf("%" PRId64 "d %02" PRId64 "h", s / 86400, (s % 86400) / 3600);
}

std::string FormatStats(const protocol::StatsResult& stats) {
  std::vector<std::vector<std::string>> rows = {{"tier", "capacity", "used", "use", "entries",
                                                 "hits", "misses", "hit rate", "bytes in",
                                                 "bytes out"}};
  for (const protocol::TierStats& t : stats.tiers) {
    const std::string use = t.capacity_bytes > 0
                                ? Printf("%.0f%%", 100.0 * static_cast<double>(t.used_bytes) /
                                                       static_cast<double>(t.capacity_bytes))
                                : "-";
    const int64_t lookups = t.hits + t.misses;
    const std::string rate =
        lookups > 0
            ? Printf("%.0f%%", 100.0 * static_cast<double>(t.hits) / static_cast<double>(lookups))
            : "-";
    rows.push_back({t.tier, t.capacity_bytes > 0 ? HumanBytes(t.capacity_bytes) : "-",
                    HumanBytes(t.used_bytes), use,
                    Count(t.entries) + (t.tier == "device" ? " pages" : " extents"), Count(t.hits),
                    Count(t.misses), rate, HumanBytes(t.bytes_in), HumanBytes(t.bytes_out)});
  }
  std::string out = Table(rows);
  if (stats.tiers.empty()) out += "(no cache tiers)\n";
  const protocol::RequestStats& r = stats.requests;
  out += "\nrequests: " + Count(r.total) + " total, " + Count(r.active) + " active, " +
         Count(r.queued) + " queued, " + Count(r.errors) + " errors\n";
  if (!stats.codecs.empty()) {
    out += "codecs:";
    for (size_t i = 0; i < stats.codecs.size(); ++i) {
      out +=
          Printf("%s %s %.2fx", i ? "," : "", stats.codecs[i].codec.c_str(), stats.codecs[i].ratio);
    }
    out += " (uncompressed / stored)\n";
  }
  const protocol::RetrievalStats& rs = stats.retrieval;
  if (rs.steps > 0 || rs.pages_promoted > 0) {
    out += "retrieval: " + Count(rs.steps) + " sparse steps, " +
           Printf("%.1f", rs.pages_attended_avg) + " pages attended on average, " +
           Count(rs.pages_promoted) + " pages promoted (" + HumanBytes(rs.bytes_promoted) + ")\n";
  } else {
    out += "retrieval: no sparse decode steps yet\n";
  }
  return out;
}

std::string FormatHealth(const protocol::HealthResult& h, const std::string& socket_path) {
  std::string out;
  out += "kvtierd " + h.version + ": serving on " + socket_path + "\n";
  out += "model:   " + h.model + "\n";
  out += "backend: " + h.backend + (h.device.empty() ? "" : " (" + h.device + ")") + "\n";
  out += "uptime:  " + HumanDuration(h.uptime_s) + "\n";
  return out;
}

ProgressReporter::ProgressReporter(bool terminal, std::string label, int bar_width,
                                   double plain_interval_s)
    : terminal_(terminal),
      label_(std::move(label)),
      bar_width_(std::max(bar_width, 4)),
      plain_interval_s_(plain_interval_s) {}

std::string ProgressReporter::Line(int64_t done, int64_t total, double elapsed_s) const {
  const double frac =
      total > 0 ? std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0)
                : 0.0;
  std::string rate;
  const double dt = elapsed_s - first_s_;
  if (done > first_done_ && dt > 0) {
    rate = Printf("%.0f tokens/s", static_cast<double>(done - first_done_) / dt);
  }
  std::string line = label_ + " ";
  if (terminal_) {
    const int filled = static_cast<int>(frac * bar_width_);
    line += "[" + std::string(static_cast<size_t>(filled), '#') +
            std::string(static_cast<size_t>(bar_width_ - filled), '.') + "] ";
  }
  line +=
      Printf("%3.0f%%  ", std::floor(frac * 100)) + Count(done) + "/" + Count(total) + " tokens";
  if (first_done_ > 0) line += " (" + Count(first_done_) + " cached)";
  if (!rate.empty()) line += "  " + rate;
  if (terminal_ && !rate.empty() && done < total && done > first_done_) {
    const double eta =
        static_cast<double>(total - done) * dt / static_cast<double>(done - first_done_);
    line += "  ETA " + HumanDuration(eta);
  }
  return line;
}

std::string ProgressReporter::Update(int64_t done, int64_t total, double elapsed_s) {
  if (!started_) {
    started_ = true;
    first_done_ = done;
    first_s_ = elapsed_s;
  }
  const std::string line = Line(done, total, elapsed_s);
  if (terminal_) {
    std::string out = "\r" + line;
    if (line.size() < last_width_) out += std::string(last_width_ - line.size(), ' ');
    last_width_ = line.size();
    drew_ = true;
    return out;
  }
  const bool last = done >= total;
  if (done == last_plain_done_) return "";
  if (!last && elapsed_s - last_plain_s_ < plain_interval_s_) return "";
  last_plain_s_ = elapsed_s;
  last_plain_done_ = done;
  return line + "\n";
}

std::string ProgressReporter::Finish() {
  if (terminal_ && drew_) {
    drew_ = false;
    return "\n";
  }
  return "";
}

}  // namespace kvtier::client::internal
