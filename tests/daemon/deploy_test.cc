// deploy/: the systemd units pass `systemd-analyze verify` silently and their hardening scores
// an exposure of at most 2.0 in `systemd-analyze security --offline=yes`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "tests/support/test_support.h"

namespace kvtier::testing {
namespace {

const char kAnalyze[] = "/usr/bin/systemd-analyze";

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a shell command; returns its exit status and stdout+stderr.
int RunShell(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The units as installed: ExecStart points at a binary that exists (the one just built).
std::string StageUnits() {
  const std::string dir = MakeTempDir("kvtier_units_");
  const std::string deploy = std::string(KVTIER_SOURCE_DIR) + "/deploy";
  std::string unit = Slurp(deploy + "/kvtierd.service");
  const std::string from = "ExecStart=/usr/bin/kvtierd";
  const size_t at = unit.find(from);
  EXPECT_NE(at, std::string::npos) << "the install rule rewrites this ExecStart line";
  if (at != std::string::npos)
    unit.replace(at, from.size(), std::string("ExecStart=") + KVTIERD_PATH);
  std::ofstream(dir + "/kvtierd.service") << unit;
  std::filesystem::copy_file(deploy + "/kvtierd.socket", dir + "/kvtierd.socket");
  return dir;
}

TEST(DeployTest, UnitsVerifyCleanly) {
  if (access(kAnalyze, X_OK) != 0) GTEST_SKIP() << "systemd-analyze not installed";
  const std::string dir = StageUnits();
  std::string out;
  const int rc = RunShell(
      std::string("cd ") + dir + " && " + kAnalyze + " verify kvtierd.service kvtierd.socket",
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "") << "systemd-analyze verify printed something";
  std::filesystem::remove_all(dir);
}

TEST(DeployTest, ServiceExposureIsAtMostTwo) {
  if (access(kAnalyze, X_OK) != 0) GTEST_SKIP() << "systemd-analyze not installed";
  const std::string dir = StageUnits();
  std::string out;
  const int rc = RunShell(std::string("cd ") + dir + " && " + kAnalyze +
                              " security --offline=yes --no-pager kvtierd.service",
                          &out);
  EXPECT_EQ(rc, 0) << out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m,
                                std::regex("Overall exposure level for kvtierd\\.service: "
                                           "([0-9]+\\.[0-9]+)")))
      << out;
  const double exposure = std::stod(m[1].str());
  EXPECT_LE(exposure, 2.0) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvtier::testing
