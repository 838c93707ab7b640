// storage/io_engine.h — batched asynchronous reads and writes: io_uring, or a thread pool.
//
// Thread safety: an IoEngine is safe for concurrent use; any number of threads may call Run at
// once, each with its own requests.
//
// Two engines share one interface:
//   - "io_uring": a fixed set of I/O threads, each owning one ring. Run splits a batch over the
//     threads; each puts its whole share in its submission queue and submits it with one
//     io_uring_submit, so the batch is in flight at once (up to the ring depth per thread),
//     then reaps completions and resubmits the remainder of short transfers.
//   - "threads": a pread/pwrite thread pool, used when io_uring is refused (ENOSYS, EPERM from
//     seccomp or io_uring_disabled, ...) or forced by the options.
// CreateIoEngine probes io_uring (ring setup plus a NOP round trip) and logs which engine is in
// use. Requests on files without a native fd (fault injection) are carried out through
// File::ReadAt/WriteAt by the I/O thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "storage/file_system.h"

namespace kvtier::storage {

// A log sink: one line, no trailing newline. Empty: lines go to stderr.
using LogFn = std::function<void(std::string_view line)>;
void LogLine(const LogFn& log, std::string_view line);

// Heap bytes aligned to kDirectIoAlignment (usable with O_DIRECT); move-only.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size_bytes);  // zero-filled
  // Not zero-filled: for buffers a read fills completely before anyone looks at them.
  static AlignedBuffer Uninitialized(size_t size_bytes);
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = o.data_;
      size_ = o.size_;
      o.data_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data_); }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

struct IoRequest {
  enum class Op : uint8_t { kRead, kWrite };
  Op op = Op::kRead;
  File* file = nullptr;  // borrowed for the duration of Run
  uint64_t offset = 0;
  uint8_t* buf = nullptr;  // aligned when the file is O_DIRECT
  size_t len = 0;

  // Filled by Run: bytes transferred (short at end of file for reads) and the errno of the
  // failure that stopped the transfer (0 when none).
  size_t done_bytes = 0;
  int error = 0;
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  // "io_uring" or "threads".
  virtual std::string_view name() const = 0;
  // Carries out every request, many at once, and returns when all have completed. Results are
  // in each request's done_bytes/error; Run itself does not fail.
  virtual void Run(std::span<IoRequest> requests) = 0;
  // The most requests in flight at one time so far (io_uring: submitted to the kernel and not
  // yet reaped, over all rings; threads: queued or running).
  uint64_t max_in_flight() const { return max_in_flight_.load(std::memory_order_relaxed); }

 protected:
  void AddInFlight(int64_t delta) {
    int64_t now = in_flight_.fetch_add(delta, std::memory_order_relaxed) + delta;
    uint64_t seen = max_in_flight_.load(std::memory_order_relaxed);
    while (now > 0 && static_cast<uint64_t>(now) > seen &&
           !max_in_flight_.compare_exchange_weak(seen, static_cast<uint64_t>(now),
                                                 std::memory_order_relaxed)) {
    }
  }

 private:
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> max_in_flight_{0};
};

struct IoEngineOptions {
  enum class Kind : uint8_t {
    kAuto,        // io_uring when the probe succeeds, else the thread pool
    kIoUring,     // io_uring or an error
    kThreadPool,  // the pread/pwrite thread pool
  };
  Kind kind = Kind::kAuto;
  int io_uring_threads = 2;  // I/O threads, one ring each
  int queue_depth = 128;     // ring entries per thread: I/Os in flight per thread
  int pool_threads = 16;     // thread-pool engine: concurrent blocking preads
  LogFn log;                 // which engine was chosen and why
};

Result<std::unique_ptr<IoEngine>> CreateIoEngine(const IoEngineOptions& options);

}  // namespace kvtier::storage
