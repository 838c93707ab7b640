// What the kvtier CLI prints for people: sizes, durations, the stats table, the progress bar.
#include "client/internal/cli_format.h"

#include <gtest/gtest.h>

#include <string>

namespace kvtier::client::internal {
namespace {

TEST(CliFormatTest, HumanBytes) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1024), "1.00 KiB");
  EXPECT_EQ(HumanBytes(1536), "1.50 KiB");
  EXPECT_EQ(HumanBytes(int64_t{12} << 20), "12.0 MiB");
  EXPECT_EQ(HumanBytes(int64_t{512} << 20), "512 MiB");
  EXPECT_EQ(HumanBytes(int64_t{1} << 30), "1.00 GiB");
  EXPECT_EQ(HumanBytes((int64_t{10} << 30) - 1), "10.0 GiB");  // not "10.00"
  EXPECT_EQ(HumanBytes(-2048), "-2.00 KiB");
}

TEST(CliFormatTest, HumanDuration) {
  EXPECT_EQ(HumanDuration(0.25), "250 ms");
  EXPECT_EQ(HumanDuration(12.34), "12.3 s");
  EXPECT_EQ(HumanDuration(245), "4m 05s");
  EXPECT_EQ(HumanDuration(3 * 3600 + 125), "3h 02m");
  EXPECT_EQ(HumanDuration(2 * 86400 + 5 * 3600), "2d 05h");
  EXPECT_EQ(HumanDuration(-1), "0 ms");
}

protocol::StatsResult SampleStats() {
  protocol::StatsResult s;
  protocol::TierStats device;
  device.tier = "device";
  device.capacity_bytes = int64_t{512} << 20;
  device.used_bytes = int64_t{128} << 20;
  device.entries = 2640;
  device.hits = 3;
  device.misses = 1;
  device.bytes_in = int64_t{30} << 20;
  protocol::TierStats disk;
  disk.tier = "disk";
  disk.capacity_bytes = int64_t{16} << 30;
  disk.used_bytes = int64_t{14} << 20;
  disk.entries = 22;
  s.tiers = {device, disk};
  s.codecs = {{"q8+zstd", 2.5}};
  s.requests = {7, 1, 2, 0};
  return s;
}

TEST(CliFormatTest, StatsTableHasARowPerTierWithItsNumbers) {
  const std::string t = FormatStats(SampleStats());
  EXPECT_NE(t.find("tier"), std::string::npos);
  // device: capacity, used, use %, pages, hits, misses, hit rate.
  const size_t device = t.find("\ndevice");
  ASSERT_NE(device, std::string::npos) << t;
  const std::string row = t.substr(device + 1, t.find('\n', device + 1) - device - 1);
  for (const char* want : {"512 MiB", "128 MiB", "25%", "2,640 pages", "75%", "30.0 MiB"}) {
    EXPECT_NE(row.find(want), std::string::npos) << want << " in: " << row;
  }
  const size_t disk = t.find("\ndisk");
  ASSERT_NE(disk, std::string::npos);
  EXPECT_NE(t.find("22 extents", disk), std::string::npos);
  EXPECT_EQ(t.find("host"), std::string::npos) << "only the tiers present";
  EXPECT_NE(t.find("requests: 7 total, 1 active, 2 queued, 0 errors"), std::string::npos) << t;
  EXPECT_NE(t.find("q8+zstd 2.50x"), std::string::npos) << t;
  // Columns line up: every row of the table has the same width up to the last column.
  const size_t header_end = t.find('\n');
  EXPECT_EQ(t.substr(0, header_end).size(), row.size());
}

TEST(CliFormatTest, Health) {
  protocol::HealthResult h{"0.1.0", "SmolLM2", "cpu", "AMD EPYC", 75};
  const std::string s = FormatHealth(h, "/run/kvtier/kvtier.sock");
  EXPECT_NE(s.find("kvtierd 0.1.0"), std::string::npos);
  EXPECT_NE(s.find("/run/kvtier/kvtier.sock"), std::string::npos);
  EXPECT_NE(s.find("cpu (AMD EPYC)"), std::string::npos);
  EXPECT_NE(s.find("1m 15s"), std::string::npos);
}

TEST(CliFormatTest, TerminalProgressBarRedrawsOneLine) {
  ProgressReporter p(/*terminal=*/true, "prefill", /*bar_width=*/10);
  const std::string first = p.Update(0, 1000, 0.0);
  EXPECT_EQ(first.front(), '\r');
  EXPECT_NE(first.find("[..........]"), std::string::npos) << first;
  EXPECT_NE(first.find("  0%"), std::string::npos) << first;
  EXPECT_NE(first.find("0/1,000 tokens"), std::string::npos) << first;
  const std::string half = p.Update(500, 1000, 2.0);
  EXPECT_NE(half.find("[#####.....]"), std::string::npos) << half;
  EXPECT_NE(half.find(" 50%"), std::string::npos) << half;
  EXPECT_NE(half.find("500/1,000 tokens"), std::string::npos) << half;
  EXPECT_NE(half.find("250 tokens/s"), std::string::npos) << half;
  EXPECT_NE(half.find("ETA 2.0 s"), std::string::npos) << half;
  EXPECT_EQ(half.find('\n'), std::string::npos);
  const std::string done = p.Update(1000, 1000, 4.0);
  EXPECT_NE(done.find("[##########] 100%"), std::string::npos) << done;
  EXPECT_EQ(p.Finish(), "\n");
  EXPECT_EQ(p.Finish(), "");
}

TEST(CliFormatTest, CachedTokensDoNotInflateTheRate) {
  ProgressReporter p(true, "prefill", 10);
  p.Update(600, 1000, 0.0);  // 600 cached
  const std::string s = p.Update(800, 1000, 1.0);
  EXPECT_NE(s.find("200 tokens/s"), std::string::npos) << s;
  EXPECT_NE(s.find("(600 cached)"), std::string::npos) << s;
}

TEST(CliFormatTest, PlainProgressIsThrottledLinesAndAlwaysTheLast) {
  ProgressReporter p(/*terminal=*/false, "prefill", 10, /*plain_interval_s=*/2.0);
  const std::string a = p.Update(0, 3000, 0.0);
  EXPECT_EQ(a, "prefill   0%  0/3,000 tokens\n");
  EXPECT_EQ(p.Update(512, 3000, 0.5), "");  // within the interval
  const std::string b = p.Update(1024, 3000, 2.5);
  EXPECT_NE(b.find(" 34%  1,024/3,000 tokens"), std::string::npos) << b;
  EXPECT_EQ(b.find('\r'), std::string::npos);
  EXPECT_EQ(b.find('['), std::string::npos) << "no bar in a log";
  const std::string c = p.Update(3000, 3000, 2.6);  // the last one is never dropped
  EXPECT_NE(c.find("100%"), std::string::npos) << c;
  EXPECT_EQ(p.Update(3000, 3000, 2.7), "") << "no repeat";
  EXPECT_EQ(p.Finish(), "");
}

}  // namespace
}  // namespace kvtier::client::internal
