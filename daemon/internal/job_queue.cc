#include "daemon/internal/job_queue.h"

#include <utility>

namespace kvtier::daemon::internal {

JobQueue::JobQueue(size_t capacity) : capacity_(capacity), thread_([this] { Loop(); }) {}

JobQueue::~JobQueue() { Stop(); }

bool JobQueue::TrySubmit(uint64_t ticket, Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || queue_.size() >= capacity_) return false;
    queue_.push_back({ticket, std::move(job)});
  }
  cv_.notify_one();
  return true;
}

bool JobQueue::Remove(uint64_t ticket) {
  Job removed;  // destroyed outside the lock (it may own the last reference to a connection)
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->ticket == ticket) {
      removed = std::move(it->job);
      queue_.erase(it);
      return true;
    }
  }
  return false;
}

size_t JobQueue::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

bool JobQueue::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

bool JobQueue::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !running_ && queue_.empty();
}

void JobQueue::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void JobQueue::Loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      job = std::move(queue_.front().job);
      queue_.pop_front();
      running_ = true;
    }
    job();
    job = nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
  }
}

}  // namespace kvtier::daemon::internal
