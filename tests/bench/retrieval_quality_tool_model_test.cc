// The CI smoke of the retrieval quality harness (bench/retrieval_quality_tool.cc): both of its
// quality commands on small contexts with the real model, checked where the answer is known —
// a budget that covers the whole context selects every page, which runs the dense kernel, so
// its answers and logits must equal dense's exactly; a small budget must attend fewer pages.
// The full runs are BENCHMARKS.md's ("Retrieval attention"), not tests.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/test_support.h"

namespace kvtier::testing {
namespace {

#ifdef KVTIER_RETRIEVAL_TOOL_PATH

struct ToolRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

ToolRun RunTool(const std::string& args) {
  ToolRun r;
  const std::string cmd = std::string(KVTIER_RETRIEVAL_TOOL_PATH) + " " + args +
                          " --model '" + ModelPath() + "' --threads 2 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The cells of the first table row whose first cell is `first` (trimmed); empty if none.
std::vector<std::string> Row(const std::string& out, const std::string& first) {
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '|') continue;
    std::vector<std::string> cells;
    std::istringstream ls(line.substr(1));
    std::string cell;
    while (std::getline(ls, cell, '|')) {
      const size_t b = cell.find_first_not_of(' '), e = cell.find_last_not_of(' ');
      cells.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
    }
    if (!cells.empty() && cells[0] == first) return cells;
  }
  return {};
}

TEST(RetrievalQualityToolTest, CasesAnswerLikeDenseWhenTheBudgetCoversTheContext) {
  const ToolRun r = RunTool(
      "cases --kind passkey --contexts 1024 --cases 2 --budgets 256,2048 --scoring sketch");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // One line per case: ... dense '<answer>' sparse256sketch '<answer>' sparse2048sketch '...'
  const std::regex line_re(
      "passkey ctx 1024 depth [0-9.]+ answer ([0-9]+) dense '([^']*)' sparse256sketch '([^']*)' "
      "sparse2048sketch '([^']*)'");
  int cases = 0;
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), line_re), end; it != end; ++it) {
    ++cases;
    EXPECT_EQ((*it)[4].str(), (*it)[2].str()) << "budget 2048 >= context: dense's answer\n"
                                               << r.out;
  }
  EXPECT_EQ(cases, 2) << r.out;
  // | task | context | cases | dense | sparse 256 | ratio | pages/step | sparse 2048 | ratio |
  // pages/step | s/case |
  const std::vector<std::string> row = Row(r.out, "passkey");
  ASSERT_EQ(row.size(), 11u) << r.out;
  EXPECT_EQ(row[1], "1024");
  EXPECT_EQ(row[2], "2");
  const auto count = [](const std::string& cell) { return cell.substr(0, cell.find(" = ")); };
  EXPECT_EQ(count(row[7]), count(row[3])) << r.out;  // "k/2": as many right as dense
  const double pages_small = std::atof(row[6].c_str()), pages_all = std::atof(row[9].c_str());
  EXPECT_GT(pages_small, 0) << r.out;
  EXPECT_LT(pages_small, pages_all) << r.out;
}

TEST(RetrievalQualityToolTest, AgreeIsExactWhenTheBudgetCoversTheContext) {
  const ToolRun r = RunTool("agree --prefix 512 --eval 24 --budgets 128,1024 --scoring sketch");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // | run | top-1 | margin >= 1 | mean KL | p99 KL | vs one at a time | its KL | pages/step | s |
  const std::vector<std::string> floor = Row(r.out, "dense, one token at a time (noise floor)");
  const std::vector<std::string> all = Row(r.out, "sparse 1024 (sketch)");
  const std::vector<std::string> small = Row(r.out, "sparse 128 (sketch)");
  ASSERT_EQ(floor.size(), 9u) << r.out;
  ASSERT_EQ(all.size(), 9u) << r.out;
  ASSERT_EQ(small.size(), 9u) << r.out;
  // Every page selected: the same kernels as dense one token at a time, the same logits.
  EXPECT_EQ(all[5], "24/24 = 100.00%") << r.out;
  EXPECT_EQ(all[6], "0.00000") << r.out;
  EXPECT_EQ(all[1], floor[1]) << r.out;  // and the same agreement with the batch
  EXPECT_EQ(all[7], floor[7]) << r.out;
  // Budget 128 leaves the sink and recent pages only (20 of the 33-34 in the sparse layers).
  const double pages_small = std::atof(small[7].c_str()), pages_all = std::atof(all[7].c_str());
  EXPECT_GT(pages_small, 0) << r.out;
  EXPECT_LT(pages_small, pages_all) << r.out;
  // The reference's own top-1 agreement: a count out of 24.
  EXPECT_NE(small[5].find("/24 = "), std::string::npos) << r.out;
}

#else

TEST(RetrievalQualityToolTest, NeedsTheBenchTools) {
  GTEST_SKIP() << "configured without the bench tools (KVTIER_BENCH=OFF)";
}

#endif

}  // namespace
}  // namespace kvtier::testing
