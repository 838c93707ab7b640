// daemon/internal/job_queue.h — the bounded FIFO in front of the engine: one dedicated thread
// runs its jobs one at a time, so no Asio thread ever waits on compute.
//
// Thread safety: all methods are safe from any thread. Jobs run on the queue's own thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace kvtier::daemon::internal {

class JobQueue {
 public:
  using Job = std::function<void()>;

  explicit JobQueue(size_t capacity);
  ~JobQueue();  // Stop()
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  // Appends a job under `ticket` (a caller-chosen unique number). False, and the job is dropped
  // unrun, when `capacity` jobs are already waiting or the queue is stopping.
  bool TrySubmit(uint64_t ticket, Job job);

  // Takes a job that has not started out of the queue: true when it was still waiting (it is then
  // destroyed without running), false when it is running, done or unknown.
  bool Remove(uint64_t ticket);

  size_t queued() const;
  bool running() const;  // a job is executing right now
  bool idle() const;     // nothing queued and nothing running

  // Refuses new jobs, runs the ones still queued, joins the thread. Idempotent.
  void Stop();

 private:
  struct Entry {
    uint64_t ticket;
    Job job;
  };
  void Loop();

  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;  // guarded by mu_
  bool running_ = false;     // guarded by mu_
  bool stopping_ = false;    // guarded by mu_
  std::thread thread_;
};

}  // namespace kvtier::daemon::internal
