// storage/segment_store.h — the disk tier: extents in append-only segment files, indexed in
// RocksDB.
//
// Thread safety: a SegmentStore is safe for concurrent use from many threads without external
// synchronization. Writers (Put, Remove, Sync, garbage collection) are serialized by one mutex;
// reads (Get, MultiGet, Contains) look the index up under a shared lock and do their disk I/O
// with no lock held, so they proceed concurrently with each other and with a write.
//
// Durability: Put makes the record readable in this process at once; it becomes durable at the
// next Sync (or when its segment fills up), which fdatasyncs the segment files first and only
// then writes the index entries (RocksDB, synced). An index entry therefore never points at a
// payload that was not durable when the entry was written. After a crash, records put after the
// last successful Sync may be missing (a miss), never wrong.
//
// Integrity: every record carries a header and an xxh3-64 checksum. A record that fails any
// check on read (torn, flipped bits, wrong key) is a miss counted in stats().corrupt_records,
// its index entry is dropped, and its bytes are never returned.
//
// Budget: bytes on disk (all segment files) stay ≤ disk_budget_bytes + segment_bytes: before a
// write would pass the budget, whole segments are dropped, least recently accessed first (index
// entries first, then the file).
//
// Format and layout: storage/README.md and storage/internal/record_format.h.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/status.h"
#include "storage/file_system.h"
#include "storage/io_engine.h"

namespace rocksdb {
class DB;
}

namespace kvtier::storage {

// The 32-byte content address of an extent (DESIGN §4: SHA-256 of its inputs).
using ExtentKey = std::array<uint8_t, 32>;

struct SegmentStoreOptions {
  std::string dir;        // segment files (the cache dir's disk-tier folder)
  std::string index_dir;  // the RocksDB index (under the state dir)
  uint64_t disk_budget_bytes = 8ull << 30;
  uint64_t segment_bytes = 64ull << 20;  // a multiple of 4 KiB, ≥ 64 KiB
  bool use_io_uring = true;              // false forces the pread/pwrite thread pool
  bool use_direct_io = true;  // O_DIRECT; buffered when false or refused by the filesystem
  int io_threads = 2;         // io_uring: threads (one ring each)
  int io_queue_depth = 128;   // io_uring: entries per ring
  FileSystem* fs = nullptr;   // borrowed; null: FileSystem::Default()
  LogFn log;                  // null: stderr
};

struct SegmentStoreStats {
  uint64_t bytes_on_disk = 0;  // all live segment files, headers and padding included
  uint64_t records = 0;
  std::array<uint64_t, 256> records_by_codec{};  // records by the codec byte given to Put
  uint64_t segments = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;           // includes corrupt records and read errors
  uint64_t corrupt_records = 0;  // failed validation on read, or torn at recovery
  uint64_t read_errors = 0;
  uint64_t write_errors = 0;  // failed or short writes (never counted as stored)
  uint64_t bytes_in = 0;      // payload bytes stored by Put
  uint64_t bytes_out = 0;     // payload bytes served by Get/MultiGet
  uint64_t gc_runs = 0;       // segments dropped to keep the budget
  uint64_t gc_bytes = 0;
};

// An extent read back from disk. Owns its bytes (the aligned read buffer).
class StoredExtent {
 public:
  uint8_t codec() const { return codec_; }
  uint64_t uncompressed_bytes() const { return uncompressed_bytes_; }
  std::span<const uint8_t> bytes() const { return {buffer_.data() + payload_offset_, size_}; }

 private:
  friend class SegmentStore;
  AlignedBuffer buffer_;
  size_t payload_offset_ = 0;
  size_t size_ = 0;
  uint8_t codec_ = 0;
  uint64_t uncompressed_bytes_ = 0;
};

class SegmentStore {
 public:
  // Opens (creating if needed) the store and recovers it: index entries pointing at missing
  // segments or past a segment's end are dropped, segment files of another format version and
  // foreign files are ignored, segments nobody references are removed.
  static Result<std::unique_ptr<SegmentStore>> Open(const SegmentStoreOptions& options);
  // Syncs (best effort; failures are logged) and closes. No call may be in flight.
  ~SegmentStore();
  SegmentStore(const SegmentStore&) = delete;
  SegmentStore& operator=(const SegmentStore&) = delete;

  // Appends the extent. OK once the record is fully written (readable now, durable after Sync).
  // A key already present is left as is (content addressed: same key, same bytes). Errors:
  // ResourceExhausted (ENOSPC), IOError (EIO, short write), InvalidArgument (larger than a
  // segment). A failed or short write stores nothing.
  Status Put(const ExtentKey& key, uint8_t codec, uint64_t uncompressed_bytes,
             std::span<const uint8_t> bytes);
  // The extent, or NotFound (absent, or dropped because it failed validation), or IOError (the
  // read failed; the entry is kept).
  Result<StoredExtent> Get(const ExtentKey& key);
  // Get for many keys with all reads in flight at once through the I/O engine. One result per
  // key, in order.
  std::vector<Result<StoredExtent>> MultiGet(std::span<const ExtentKey> keys);
  bool Contains(const ExtentKey& key) const;
  // NotFound when absent. A segment left with no records is deleted.
  // removed_bytes (optional) receives the removed extent's payload size.
  Status Remove(const ExtentKey& key, uint64_t* removed_bytes = nullptr);
  // Makes every record put so far durable: segment data, then directory, then the index.
  Status Sync();

  SegmentStoreStats stats() const;
  // "io_uring" or "threads".
  std::string_view io_engine_name() const { return engine_->name(); }
  // Whether segment files use O_DIRECT.
  bool direct_io() const { return direct_io_; }

 private:
  struct KeyHash {
    size_t operator()(const ExtentKey& k) const;
  };
  struct Segment;
  struct Entry {
    uint64_t segment_id = 0;
    uint64_t offset = 0;
    uint32_t record_bytes = 0;
    uint32_t stored_bytes = 0;
    uint64_t uncompressed_bytes = 0;
    uint64_t checksum = 0;
    uint64_t last_access_ms = 0;
    uint8_t codec = 0;
    bool indexed = false;  // written to RocksDB
  };

  explicit SegmentStore(const SegmentStoreOptions& options);
  Status Recover();
  Status SyncLocked();
  Status RollSegmentLocked();
  // Drops least recently accessed sealed segments until `incoming_bytes` more fit the budget.
  Status MakeRoomLocked(uint64_t incoming_bytes);
  Status DropSegmentLocked(uint64_t segment_id, bool count_as_gc);
  void DropCorrupt(const ExtentKey& key, const Entry& seen);

  SegmentStoreOptions options_;
  FileSystem* fs_;
  std::unique_ptr<IoEngine> engine_;
  std::unique_ptr<rocksdb::DB> db_;
  bool direct_io_ = false;

  // Serializes writers: Put, Remove, Sync, GC. Held across write I/O; readers do not take it.
  std::mutex write_mu_;
  uint64_t next_segment_id_ = 1;          // guarded by write_mu_
  std::shared_ptr<Segment> active_;       // guarded by write_mu_
  std::vector<ExtentKey> pending_index_;  // guarded by write_mu_: written, not yet indexed
  bool dir_sync_needed_ = false;          // guarded by write_mu_

  // Guards the in-memory index and segment table (taken shared by readers, exclusive by
  // writers for short updates, never across I/O).
  mutable std::shared_mutex mu_;
  std::unordered_map<ExtentKey, Entry, KeyHash> entries_;            // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<Segment>> segments_;  // guarded by mu_
  std::unordered_set<ExtentKey, KeyHash> access_dirty_;              // guarded by mu_
  uint64_t bytes_on_disk_ = 0;                                       // guarded by mu_

  std::atomic<uint64_t> hits_{0}, misses_{0}, corrupt_{0}, read_errors_{0}, write_errors_{0},
      bytes_in_{0}, bytes_out_{0}, gc_runs_{0}, gc_bytes_{0};
};

}  // namespace kvtier::storage
