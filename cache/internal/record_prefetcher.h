// cache/internal/record_prefetcher.h — reads extent records from the disk tier ahead of need on
// a background thread and keeps them plain (zstd stripped) in a small RAM buffer, for
// TierManager::PrefetchPages (DESIGN §5: "the previous step's selection is prefetched").
//
// Thread safety: thread-safe; every method may be called from any thread (the TierManager calls
// them from the compute thread). One worker thread, owned by the object, does the reads. One
// mutex guards the queue, the read in progress and the buffer; the disk read and the zstd
// decompression run with it released.
//
// Errors in the worker are never fatal and never reported: a record that cannot be read or
// decompressed is simply not buffered, and the caller reads it itself (getting the error there).
// The worker never removes anything from the disk tier.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/extent_key.h"
#include "storage/segment_store.h"

namespace kvtier::cache::internal {

class RecordPrefetcher {
 public:
  struct Counters {
    int64_t records_prefetched = 0;  // records the worker read and decompressed
    int64_t records_kept = 0;        // records the caller read and handed over (Keep)
    int64_t wasted = 0;              // of those: dropped from the buffer without ever being taken
    int64_t failed = 0;              // reads or decompressions that failed (nothing buffered)
    uint64_t disk_bytes_read = 0;    // by the worker
    uint64_t buffered_bytes = 0;     // now
    int64_t buffered_records = 0;    // now
  };

  // `disk` is borrowed and must outlive this object; budget_bytes (> 0) bounds the buffer.
  RecordPrefetcher(storage::SegmentStore& disk, uint64_t budget_bytes);
  // Drops the queue, lets the read in progress finish, joins the worker.
  ~RecordPrefetcher();
  RecordPrefetcher(const RecordPrefetcher&) = delete;
  RecordPrefetcher& operator=(const RecordPrefetcher&) = delete;

  // Queues the keys that are not buffered, queued or being read, in order. When more records
  // are queued than the buffer could hold, the oldest queued ones are dropped (stale guesses).
  void Enqueue(std::span<const ExtentKey> keys);

  // The buffered record of `key` (marked used and recently used), or nullptr. When the worker
  // is reading it right now, waits for that read to end first (*waited = true); a key that is
  // only queued is unqueued, so the caller reads it itself without a second read racing it.
  // *prefetched (optional): whether the worker read it (else Keep put it there).
  std::shared_ptr<const std::vector<uint8_t>> Take(const ExtentKey& key, bool* waited,
                                                   bool* prefetched = nullptr);
  // Buffers a record the caller had to read itself (plain), as most recently used, so that the
  // buffer's RAM also serves demand reads when there is nothing to prefetch. Unqueues `key`;
  // makes room by dropping records already used, never a prefetched one still unused (nothing
  // is kept when that is not enough) and does nothing when `key` is buffered already. A read of
  // the same key in progress is dropped when it ends.
  void Keep(const ExtentKey& key, std::shared_ptr<const std::vector<uint8_t>> bytes);

  // Forgets `key`: unqueued and dropped from the buffer (a read in progress is discarded).
  void Erase(const ExtentKey& key);

  // Blocks until nothing is queued and no read is in progress (tests and benchmarks).
  void WaitIdle();

  Counters counters() const;

 private:
  struct Buffered {
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    bool used = false;
    std::list<ExtentKey>::iterator lru;
    bool prefetched = true;  // read by the worker (else kept for the caller)
  };
  void Run(std::stop_token stop);
  // Drops least recently used records until `incoming` more bytes fit and returns true. With
  // `spare_unused` only records already used go, and when those are not enough nothing is
  // dropped and it returns false. Holds mu_.
  bool MakeRoomLocked(uint64_t incoming, bool spare_unused);
  void DropLocked(std::unordered_map<ExtentKey, Buffered, ExtentKeyHash>::iterator it);
  // Adds `bytes` as the most recently used record (MakeRoomLocked first). Holds mu_.
  void InsertLocked(const ExtentKey& key, std::shared_ptr<const std::vector<uint8_t>> bytes,
                    bool used, bool prefetched);

  storage::SegmentStore& disk_;
  const uint64_t budget_bytes_;

  mutable std::mutex mu_;
  std::condition_variable_any work_cv_;  // guarded by mu_: something queued, or stop
  std::condition_variable done_cv_;      // guarded by mu_: a read ended
  std::deque<ExtentKey> queue_;          // guarded by mu_: may hold keys no longer in queued_
  std::unordered_set<ExtentKey, ExtentKeyHash> queued_;  // guarded by mu_: the live queue
  std::optional<ExtentKey> reading_;                     // guarded by mu_: the read in progress
  bool discard_reading_ = false;                          // guarded by mu_: Erase during it
  std::unordered_map<ExtentKey, Buffered, ExtentKeyHash> buffer_;  // guarded by mu_
  std::list<ExtentKey> lru_;                                       // guarded by mu_: front = MRU
  uint64_t record_bytes_ = 0;  // guarded by mu_: size of the last record read (queue bound)
  Counters counters_;          // guarded by mu_

  std::jthread worker_;  // last: started after everything it uses, stopped first
};

}  // namespace kvtier::cache::internal
