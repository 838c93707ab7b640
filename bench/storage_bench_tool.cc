// bench/storage_bench_tool.cc — disk-tier throughput: writes extents through SegmentStore, or
// reads them all back with MultiGet. Driven by bench/disk_throughput, which drops the page cache
// between the two phases and runs fio on the same directory for comparison.
//
//   storage_bench_tool write --dir D --index-dir I --mib N [--extent-bytes B]
//   storage_bench_tool read  --dir D --index-dir I --mib N [--extent-bytes B] [--batch K]
//                            [--readers R] [--engine io_uring|threads] [--verify]
//
// Prints one JSON object: phase, engine, O_DIRECT, extents, bytes, seconds, MiB/s, and the
// request size on disk (the record size: header + payload + checksum, padded to 4 KiB).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/sha256.h"
#include "storage/segment_store.h"

namespace {

using kvtier::storage::ExtentKey;
using kvtier::storage::SegmentStore;
using kvtier::storage::SegmentStoreOptions;
using kvtier::storage::StoredExtent;

// A q8 extent of the default model (SmolLM2-135M): 64 tokens x 30 layers x {K,V} x 3 KV heads x
// (64 int8 + one f16 scale per token per head) = 64*30*2*3*(64+2) = 760,320 bytes.
constexpr size_t kQ8ExtentBytes = 64 * 30 * 2 * 3 * (64 + 2);

ExtentKey KeyOf(uint64_t i) {
  kvtier::Sha256 h;
  h.UpdateField("storage-bench");
  h.UpdateU64(i);
  return h.Finish();
}

void Fill(uint64_t i, std::vector<uint8_t>& out) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + 1;
  for (size_t j = 0; j + 8 <= out.size(); j += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out.data() + j, &x, 8);
  }
}

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: storage_bench_tool write|read --dir D --index-dir I --mib N "
               "[--extent-bytes B] [--batch K] [--readers R] [--engine io_uring|threads] "
               "[--verify]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage();
  std::string phase = argv[1];
  if (phase != "write" && phase != "read") Usage();
  SegmentStoreOptions o;
  uint64_t mib = 256;
  size_t extent_bytes = kQ8ExtentBytes;
  size_t batch = 64;
  int readers = 1;
  bool verify = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (a == "--dir") {
      o.dir = next();
    } else if (a == "--index-dir") {
      o.index_dir = next();
    } else if (a == "--mib") {
      mib = std::stoull(next());
    } else if (a == "--extent-bytes") {
      extent_bytes = std::stoull(next());
    } else if (a == "--batch") {
      batch = std::stoull(next());
    } else if (a == "--readers") {
      readers = std::stoi(next());
    } else if (a == "--engine") {
      o.use_io_uring = next() == "io_uring";
    } else if (a == "--verify") {
      verify = true;
    } else {
      Usage();
    }
  }
  if (o.dir.empty() || o.index_dir.empty() || extent_bytes == 0 || batch == 0) Usage();
  o.disk_budget_bytes = (mib + 1024) << 20;  // the whole data set stays on disk
  const uint64_t n = std::max<uint64_t>(1, (mib << 20) / extent_bytes);

  auto store_or = SegmentStore::Open(o);
  if (!store_or.ok()) {
    std::fprintf(stderr, "open: %s\n", store_or.status().ToString().c_str());
    return 1;
  }
  SegmentStore& store = **store_or;
  const uint64_t record_bytes = (64 + extent_bytes + 8 + 4095) / 4096 * 4096;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t bytes = 0, failures = 0;

  if (phase == "write") {
    std::vector<uint8_t> buf(extent_bytes);
    for (uint64_t i = 0; i < n; ++i) {
      Fill(i, buf);
      kvtier::Status s = store.Put(KeyOf(i), 1, extent_bytes, buf);
      if (!s.ok()) {
        std::fprintf(stderr, "put %llu: %s\n", static_cast<unsigned long long>(i),
                     s.ToString().c_str());
        return 1;
      }
      bytes += extent_bytes;
    }
    kvtier::Status s = store.Sync();
    if (!s.ok()) {
      std::fprintf(stderr, "sync: %s\n", s.ToString().c_str());
      return 1;
    }
  } else {
    // `readers` threads take batches of `batch` keys in order; each MultiGet puts its whole
    // batch in flight at once.
    std::atomic<uint64_t> next_key{0}, total{0}, bad{0};
    std::vector<std::thread> threads;
    for (int r = 0; r < readers; ++r) {
      threads.emplace_back([&] {
        std::vector<ExtentKey> keys;
        std::vector<uint8_t> want(extent_bytes);
        for (;;) {
          uint64_t first = next_key.fetch_add(batch);
          if (first >= n) return;
          uint64_t last = std::min<uint64_t>(n, first + batch);
          keys.clear();
          for (uint64_t i = first; i < last; ++i) keys.push_back(KeyOf(i));
          std::vector<kvtier::Result<StoredExtent>> got = store.MultiGet(keys);
          for (uint64_t i = first; i < last; ++i) {
            const auto& g = got[i - first];
            if (!g.ok() || g->bytes().size() != extent_bytes) {
              ++bad;
              continue;
            }
            if (verify) {
              Fill(i, want);
              if (std::memcmp(want.data(), g->bytes().data(), extent_bytes) != 0) ++bad;
            }
            total += extent_bytes;
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    bytes = total;
    failures = bad;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double mib_s = static_cast<double>(bytes) / (1 << 20) / secs;
  // Bytes moved on disk per request (the whole record) for comparison with fio's bs.
  double disk_mib_s = static_cast<double>(bytes / extent_bytes * record_bytes) / (1 << 20) / secs;
  std::printf(
      "{\"phase\":\"%s\",\"engine\":\"%.*s\",\"direct_io\":%s,\"extents\":%llu,"
      "\"extent_bytes\":%zu,\"record_bytes\":%llu,\"batch\":%zu,\"readers\":%d,"
      "\"failures\":%llu,\"seconds\":%.3f,\"payload_mib_s\":%.1f,\"disk_mib_s\":%.1f}\n",
      phase.c_str(), static_cast<int>(store.io_engine_name().size()), store.io_engine_name().data(),
      store.direct_io() ? "true" : "false", static_cast<unsigned long long>(n), extent_bytes,
      static_cast<unsigned long long>(record_bytes), batch, readers,
      static_cast<unsigned long long>(failures), secs, mib_s, disk_mib_s);
  return failures == 0 ? 0 : 1;
}
