#include "storage/io_engine.h"

#include <liburing.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <latch>
#include <mutex>
#include <thread>
#include <vector>

namespace kvtier::storage {

void LogLine(const LogFn& log, std::string_view line) {
  if (log) {
    log(line);
  } else {
    std::fprintf(stderr, "kvtier storage: %.*s\n", static_cast<int>(line.size()), line.data());
  }
}

AlignedBuffer AlignedBuffer::Uninitialized(size_t size_bytes) {
  AlignedBuffer b;
  if (size_bytes == 0) return b;
  size_t rounded = (size_bytes + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
  b.data_ = static_cast<uint8_t*>(std::aligned_alloc(kDirectIoAlignment, rounded));
  KVTIER_CHECK(b.data_ != nullptr);  // out of memory
  b.size_ = size_bytes;
  return b;
}

AlignedBuffer::AlignedBuffer(size_t size_bytes) : AlignedBuffer(Uninitialized(size_bytes)) {
  if (data_ != nullptr) {
    std::memset(data_, 0,
                (size_ + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment);
  }
}

namespace {

int ErrnoOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kResourceExhausted:
      return ENOSPC;
    case StatusCode::kNotFound:
      return ENOENT;
    default:
      return EIO;
  }
}

// Carries out one request with blocking calls through the File interface.
void RunBlocking(IoRequest& r) {
  while (r.done_bytes < r.len) {
    Result<size_t> n =
        r.op == IoRequest::Op::kRead
            ? r.file->ReadAt(r.offset + r.done_bytes,
                             std::span<uint8_t>(r.buf + r.done_bytes, r.len - r.done_bytes))
            : r.file->WriteAt(r.offset + r.done_bytes,
                              std::span<const uint8_t>(r.buf + r.done_bytes, r.len - r.done_bytes));
    if (!n.ok()) {
      r.error = ErrnoOf(n.status());
      return;
    }
    if (*n == 0) {  // end of file (read) or no progress (write)
      if (r.op == IoRequest::Op::kWrite) r.error = EIO;
      return;
    }
    r.done_bytes += *n;
  }
}

void ResetResults(std::span<IoRequest> requests) {
  for (IoRequest& r : requests) {
    r.done_bytes = 0;
    r.error = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Thread pool: every request is one task; pool_threads blocking calls in flight.

class ThreadPoolEngine final : public IoEngine {
 public:
  explicit ThreadPoolEngine(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~ThreadPoolEngine() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  std::string_view name() const override { return "threads"; }

  void Run(std::span<IoRequest> requests) override {
    if (requests.empty()) return;
    ResetResults(requests);
    std::latch done(static_cast<std::ptrdiff_t>(requests.size()));
    AddInFlight(static_cast<int64_t>(requests.size()));
    {
      std::lock_guard lock(mu_);
      for (IoRequest& r : requests) tasks_.push_back({&r, &done});
    }
    cv_.notify_all();
    done.wait();
  }

 private:
  struct Task {
    IoRequest* request;
    std::latch* done;
  };

  void Loop() {
    for (;;) {
      Task task;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stop_ and drained
        task = tasks_.front();
        tasks_.pop_front();
      }
      RunBlocking(*task.request);
      AddInFlight(-1);
      task.done->count_down();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;  // guarded by mu_
  bool stop_ = false;       // guarded by mu_
  std::vector<std::thread> threads_;
};

// ---------------------------------------------------------------------------------------------
// io_uring: one ring per I/O thread.

class UringEngine;

class UringWorker {
 public:
  UringWorker(unsigned depth, UringEngine* engine) : depth_(depth), engine_(engine) {}
  ~UringWorker() {
    if (thread_.joinable()) {
      {
        std::lock_guard lock(mu_);
        stop_ = true;
      }
      cv_.notify_all();
      thread_.join();
    }
    if (ring_ready_) io_uring_queue_exit(&ring_);
  }

  // Sets the ring up and checks it works with a NOP round trip. Returns a negative errno.
  int Probe() {
    int rc = io_uring_queue_init(depth_, &ring_, 0);
    if (rc < 0) return rc;
    ring_ready_ = true;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return -EBUSY;
    io_uring_prep_nop(sqe);
    rc = io_uring_submit_and_wait(&ring_, 1);
    if (rc < 0) return rc;
    io_uring_cqe* cqe = nullptr;
    rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc < 0) return rc;
    int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    return res < 0 ? res : 0;
  }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }

  void Post(std::span<IoRequest> requests, std::latch* done) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back({requests, done});
    }
    cv_.notify_one();
  }

 private:
  struct Job {
    std::span<IoRequest> requests;
    std::latch* done;
  };

  void Loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = jobs_.front();
        jobs_.pop_front();
      }
      Process(job.requests);
      job.done->count_down();
    }
  }

  static void Prep(io_uring_sqe* sqe, IoRequest& r) {
    uint8_t* buf = r.buf + r.done_bytes;
    unsigned len = static_cast<unsigned>(r.len - r.done_bytes);
    uint64_t off = r.offset + r.done_bytes;
    if (r.op == IoRequest::Op::kRead) {
      io_uring_prep_read(sqe, r.file->native_fd(), buf, len, off);
    } else {
      io_uring_prep_write(sqe, r.file->native_fd(), buf, len, off);
    }
    io_uring_sqe_set_data(sqe, &r);
  }

  // Puts as many requests in flight as the ring holds, submits them together, and keeps the
  // ring full until every request has completed.
  void Process(std::span<IoRequest> requests) {
    size_t next = 0;
    unsigned in_flight = 0;
    std::vector<IoRequest*> again;  // short or interrupted transfers to resubmit
    while (next < requests.size() || in_flight > 0 || !again.empty()) {
      unsigned queued = 0;
      while (!again.empty()) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) break;
        Prep(sqe, *again.back());
        again.pop_back();
        ++queued;
      }
      while (next < requests.size() && in_flight + queued < depth_) {
        IoRequest& r = requests[next];
        if (r.file->native_fd() < 0) {  // no fd: through the File interface
          RunBlocking(r);
          ++next;
          continue;
        }
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) break;
        Prep(sqe, r);
        ++next;
        ++queued;
      }
      in_flight += queued;
      NoteInFlight(static_cast<int64_t>(queued));
      if (in_flight == 0) continue;
      int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        NoteInFlight(-static_cast<int64_t>(in_flight));
        FailAll(requests, -rc);
        return;
      }
      io_uring_cqe* cqe;
      unsigned head;
      unsigned seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        IoRequest& r = *static_cast<IoRequest*>(io_uring_cqe_get_data(cqe));
        int res = cqe->res;
        if (res == -EINTR || res == -EAGAIN) {
          again.push_back(&r);
        } else if (res < 0) {
          r.error = -res;
        } else if (res == 0) {
          if (r.op == IoRequest::Op::kWrite) r.error = EIO;  // no progress
        } else {
          r.done_bytes += static_cast<size_t>(res);
          if (r.done_bytes < r.len) again.push_back(&r);
        }
      }
      io_uring_cq_advance(&ring_, seen);
      in_flight -= seen;
      NoteInFlight(-static_cast<int64_t>(seen));
      // Resubmitted requests count as in flight again when queued above.
    }
  }

  // The ring itself failed (not one request): it is torn down (the kernel cancels what was in
  // flight) and recreated; every request not yet finished reports `err`.
  void FailAll(std::span<IoRequest> requests, int err) {
    io_uring_queue_exit(&ring_);
    ring_ready_ = false;
    for (IoRequest& r : requests) {
      if (r.error == 0 && r.done_bytes < r.len) r.error = err;
    }
    if (io_uring_queue_init(depth_, &ring_, 0) == 0) ring_ready_ = true;
  }

  void NoteInFlight(int64_t delta);

  const unsigned depth_;
  UringEngine* const engine_;
  io_uring ring_{};
  bool ring_ready_ = false;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;  // guarded by mu_
  bool stop_ = false;     // guarded by mu_
};

class UringEngine final : public IoEngine {
 public:
  // Returns a negative errno when io_uring cannot be used.
  int Init(int threads, int depth) {
    for (int i = 0; i < threads; ++i) {
      workers_.push_back(std::make_unique<UringWorker>(static_cast<unsigned>(depth), this));
      if (int rc = workers_.back()->Probe(); rc < 0) return rc;
    }
    for (auto& w : workers_) w->Start();
    return 0;
  }

  std::string_view name() const override { return "io_uring"; }

  void Run(std::span<IoRequest> requests) override {
    if (requests.empty()) return;
    ResetResults(requests);
    // Small batches go to one worker (round robin); larger ones are split evenly.
    constexpr size_t kMinShare = 8;
    size_t shares = std::min(workers_.size(), (requests.size() + kMinShare - 1) / kMinShare);
    std::latch done(static_cast<std::ptrdiff_t>(shares));
    size_t first = next_worker_.fetch_add(1, std::memory_order_relaxed);
    size_t begin = 0;
    for (size_t i = 0; i < shares; ++i) {
      size_t end = requests.size() * (i + 1) / shares;
      workers_[(first + i) % workers_.size()]->Post(requests.subspan(begin, end - begin), &done);
      begin = end;
    }
    done.wait();
  }

 private:
  friend class UringWorker;
  std::vector<std::unique_ptr<UringWorker>> workers_;
  std::atomic<size_t> next_worker_{0};
};

void UringWorker::NoteInFlight(int64_t delta) {
  if (delta != 0) engine_->AddInFlight(delta);
}

}  // namespace

Result<std::unique_ptr<IoEngine>> CreateIoEngine(const IoEngineOptions& options) {
  using Kind = IoEngineOptions::Kind;
  if (options.kind != Kind::kThreadPool) {
    auto engine = std::make_unique<UringEngine>();
    int rc = engine->Init(std::max(1, options.io_uring_threads), std::max(2, options.queue_depth));
    if (rc == 0) {
      LogLine(options.log, "I/O engine: io_uring (" + std::to_string(options.io_uring_threads) +
                               " threads x " + std::to_string(options.queue_depth) + " entries)");
      return std::unique_ptr<IoEngine>(std::move(engine));
    }
    std::string why = std::string("io_uring refused: ") + std::strerror(-rc);
    if (options.kind == Kind::kIoUring) return UnavailableError(why);
    LogLine(options.log, why + "; I/O engine: threads (pread/pwrite pool of " +
                             std::to_string(options.pool_threads) + ")");
  } else {
    LogLine(options.log, "I/O engine: threads (pread/pwrite pool of " +
                             std::to_string(options.pool_threads) + ", forced by options)");
  }
  return std::unique_ptr<IoEngine>(new ThreadPoolEngine(std::max(1, options.pool_threads)));
}

}  // namespace kvtier::storage
