// Crash test: a child process writes extents and is killed with SIGKILL at random moments, over
// and over; after each kill the store is reopened and every answer is checked against an
// expected-state file that survives the kills.
//
// The child is this test binary run again (posix_spawn of /proc/self/exe with
// --gtest_filter=CrashChild.* --gtest_also_run_disabled_tests), so it starts with a clean process (no threads inherited from a
// fork). It puts extents whose bytes are a function of their key, syncs every few puts, and only
// after a Sync returns OK appends the synced ids to expected.log with one write(2) per line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "storage/segment_store.h"
#include "tests/storage/storage_test_util.h"

extern char** environ;

namespace kvtier::storage {
namespace {

using testutil::ContentOf;
using testutil::KeyOf;

constexpr uint64_t kIdsPerRound = 1'000'000;
constexpr int kPutsPerRound = 400;
constexpr int kPutsPerSync = 8;

size_t SizeOf(uint64_t id) { return 1024 + (id * 7919) % (64 << 10); }

SegmentStoreOptions CrashOptions(const std::string& root, bool io_uring) {
  SegmentStoreOptions o;
  o.dir = root + "/cache";
  o.index_dir = root + "/state/index";
  o.segment_bytes = 4 << 20;
  o.disk_budget_bytes = 4ull << 30;  // no GC: every synced extent must survive
  o.use_io_uring = io_uring;
  o.log = [](std::string_view) {};
  return o;
}

// The child: runs only when spawned by the parent below.
TEST(CrashChild, DISABLED_Writer) {  // run only by CrashTest, as its child process
  const char* root = std::getenv("KVTIER_CRASH_DIR");
  if (root == nullptr) GTEST_SKIP() << "only run as the crash test's child";
  uint64_t round = std::strtoull(std::getenv("KVTIER_CRASH_ROUND"), nullptr, 10);
  bool io_uring = std::string(std::getenv("KVTIER_CRASH_URING")) == "1";
  int log_fd = ::open((std::string(root) + "/expected.log").c_str(),
                      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (log_fd < 0) std::_Exit(3);
  Result<std::unique_ptr<SegmentStore>> store = SegmentStore::Open(CrashOptions(root, io_uring));
  if (!store.ok()) std::_Exit(4);
  std::vector<uint64_t> unsynced;
  for (int j = 0; j < kPutsPerRound; ++j) {
    uint64_t id = round * kIdsPerRound + static_cast<uint64_t>(j);
    std::vector<uint8_t> bytes = ContentOf(id, SizeOf(id));
    if (!(*store)->Put(KeyOf(id), 2, bytes.size(), bytes).ok()) std::_Exit(5);
    unsynced.push_back(id);
    if (unsynced.size() == kPutsPerSync) {
      if (!(*store)->Sync().ok()) std::_Exit(6);
      for (uint64_t s : unsynced) {
        std::string line = std::to_string(s) + "\n";
        if (::write(log_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
          std::_Exit(7);
        }
      }
      unsynced.clear();
    }
  }
  // Done before the kill came: wait for it (the parent always kills).
  for (;;) ::pause();
}

std::set<uint64_t> ReadExpected(const std::string& path) {
  std::set<uint64_t> ids;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) ids.insert(std::stoull(line));  // a torn last line cannot happen: one write
  }
  return ids;
}

TEST(CrashTest, SigkillInALoopNeverServesCorruptExtents) {
  testutil::TempStoreDir dir;
  const std::string self = "/proc/self/exe";
  char exe[4096];
  ssize_t n = ::readlink(self.c_str(), exe, sizeof(exe) - 1);
  ASSERT_GT(n, 0);
  exe[n] = '\0';
  std::mt19937 rng(20240601);
  constexpr int kRounds = 24;
  uint64_t total_served = 0, total_checked_synced = 0, kills_mid_write = 0;
  auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < kRounds; ++round) {
    bool io_uring = round % 2 == 0;
    std::vector<std::string> env_strings = {
        "KVTIER_CRASH_DIR=" + dir.root,
        "KVTIER_CRASH_ROUND=" + std::to_string(round),
        std::string("KVTIER_CRASH_URING=") + (io_uring ? "1" : "0"),
    };
    std::vector<char*> envp;
    for (std::string& s : env_strings) envp.push_back(s.data());
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    envp.push_back(nullptr);
    std::string filter = "--gtest_filter=CrashChild.DISABLED_Writer";
    std::string also_disabled = "--gtest_also_run_disabled_tests";
    char* argv[] = {exe, filter.data(), also_disabled.data(), nullptr};
    pid_t pid;
    ASSERT_EQ(::posix_spawn(&pid, exe, nullptr, nullptr, argv, envp.data()), 0);
    // Kill at a random moment: during startup, recovery, writes or syncs.
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 400));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child exited by itself with status " << status << " in round " << round;

    std::set<uint64_t> synced = ReadExpected(dir.root + "/expected.log");
    Result<std::unique_ptr<SegmentStore>> store =
        SegmentStore::Open(CrashOptions(dir.root, !io_uring));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    // Every id any round may have put: the synced ones must be there; any served must be exact.
    std::vector<uint64_t> ids;
    for (int r = 0; r <= round; ++r) {
      for (int j = 0; j < kPutsPerRound; ++j) ids.push_back(r * kIdsPerRound + j);
    }
    std::vector<ExtentKey> keys;
    for (uint64_t id : ids) keys.push_back(KeyOf(id));
    std::vector<Result<StoredExtent>> got = (*store)->MultiGet(keys);
    uint64_t served_this_round = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      bool must = synced.contains(ids[i]);
      if (!got[i].ok()) {
        ASSERT_FALSE(must) << "round " << round << ": synced extent " << ids[i]
                           << " lost: " << got[i].status().ToString();
        continue;
      }
      std::vector<uint8_t> want = ContentOf(ids[i], SizeOf(ids[i]));
      const StoredExtent& x = got[i].value();
      ASSERT_TRUE(x.codec() == 2 && x.uncompressed_bytes() == want.size() &&
                  std::equal(want.begin(), want.end(), x.bytes().begin(), x.bytes().end()))
          << "round " << round << ": extent " << ids[i] << " served with wrong bytes";
      ++served_this_round;
    }
    EXPECT_EQ((*store)->stats().corrupt_records, 0u) << "round " << round;
    EXPECT_EQ(served_this_round, (*store)->stats().hits);
    total_served += served_this_round;
    total_checked_synced += synced.size();
    uint64_t this_round_synced = 0;
    for (uint64_t id : synced) this_round_synced += id / kIdsPerRound == uint64_t(round);
    if (this_round_synced > 0 && this_round_synced < kPutsPerRound) ++kills_mid_write;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "crash test: %d kills (%llu during the write loop), %llu extents served and "
      "verified, %llu synced-extent checks, %.1f s\n",
      kRounds, static_cast<unsigned long long>(kills_mid_write),
      static_cast<unsigned long long>(total_served),
      static_cast<unsigned long long>(total_checked_synced), secs);
  EXPECT_GE(kills_mid_write, 5u) << "the kills should land while the child is writing";
  EXPECT_GT(total_checked_synced, 0u);
}

}  // namespace
}  // namespace kvtier::storage
