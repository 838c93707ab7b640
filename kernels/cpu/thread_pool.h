// kernels/cpu/thread_pool.h — a small fork-join pool for the CPU kernels.
//
// Thread safety: Run() may be called from one thread at a time (the thread that owns the pool,
// normally the engine's compute thread); it is not re-entrant. Workers spin briefly between
// jobs so the many small ops of a decode step do not pay a futex wake each, then sleep.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvtier::kernels {

class ThreadPool {
 public:
  // n_threads counts the calling thread: ThreadPool(1) runs everything inline.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index, n_threads) once on each of the pool's threads (index 0 is the
  // caller) and returns when all have finished. fn must not call Run() itself.
  void Run(const std::function<void(int thread_index, int n_threads)>& fn);

  // Splits [0, n) into contiguous ranges, one per thread (or fewer if n is small), and calls
  // fn(begin, end) for each. `grain` is the smallest range worth a thread.
  void ParallelFor(int64_t n, int64_t grain,
                   const std::function<void(int64_t begin, int64_t end)>& fn);

  // Threads to use when the user asks for `requested` (<= 0: the machine's physical cores).
  static int DefaultThreads(int requested);

 private:
  void WorkerLoop(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;  // guarded by generation_ handoff
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;  // guards sleeping on cv_
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
};

}  // namespace kvtier::kernels
