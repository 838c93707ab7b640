// tests/storage/storage_test_util.h — helpers shared by the storage tests.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "base/sha256.h"
#include "storage/segment_store.h"
#include "tests/support/test_support.h"

namespace kvtier::storage::testutil {

// A deterministic key for the integer `i`.
inline ExtentKey KeyOf(uint64_t i) {
  Sha256 h;
  h.UpdateField("storage-test-key");
  h.UpdateU64(i);
  return h.Finish();
}

// Deterministic content for key `i`: size and bytes both derived from i.
inline std::vector<uint8_t> ContentOf(uint64_t i, size_t size) {
  std::vector<uint8_t> out(size);
  uint64_t x = i * 0x9E3779B97F4A7C15ull + 1;
  for (size_t j = 0; j < size; ++j) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[j] = static_cast<uint8_t>(x);
  }
  return out;
}

// A temporary store layout: segments under <root>/cache, index under <root>/state.
struct TempStoreDir {
  TempStoreDir() : root(kvtier::testing::MakeTempDir("kvtier_storage_")) {}
  // In memory (/dev/shm) when available: for tests that cut and rewrite a file thousands of
  // times, which a real disk (ext4 with discard) makes slow and noisy under load.
  struct InMemory {};
  explicit TempStoreDir(InMemory) {
    std::error_code ec;
    if (std::filesystem::is_directory("/dev/shm", ec)) {
      std::string tmpl = "/dev/shm/kvtier_storage_XXXXXX";
      if (mkdtemp(tmpl.data()) != nullptr) {
        root = tmpl;
        return;
      }
    }
    root = kvtier::testing::MakeTempDir("kvtier_storage_");
  }
  ~TempStoreDir() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  SegmentStoreOptions Options(bool io_uring = true) const {
    SegmentStoreOptions o;
    o.dir = root + "/cache";
    o.index_dir = root + "/state/index";
    o.segment_bytes = 4 << 20;
    o.disk_budget_bytes = 64 << 20;
    o.use_io_uring = io_uring;
    o.log = [](std::string_view) {};
    return o;
  }
  // Sum of the sizes of the segment files actually in the directory.
  uint64_t SegmentBytesOnDisk() const {
    uint64_t total = 0;
    for (const auto& e : std::filesystem::directory_iterator(root + "/cache")) {
      std::string name = e.path().filename().string();
      if (name.rfind("seg-", 0) == 0) total += e.file_size();
    }
    return total;
  }
  std::vector<std::string> SegmentFiles() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(root + "/cache")) {
      if (e.path().filename().string().rfind("seg-", 0) == 0) out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string root;
};

}  // namespace kvtier::storage::testutil
