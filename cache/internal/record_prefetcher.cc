#include "cache/internal/record_prefetcher.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "cache/codec.h"

namespace kvtier::cache::internal {

RecordPrefetcher::RecordPrefetcher(storage::SegmentStore& disk, uint64_t budget_bytes)
    : disk_(disk), budget_bytes_(budget_bytes) {
  worker_ = std::jthread([this](std::stop_token stop) { Run(stop); });
}

RecordPrefetcher::~RecordPrefetcher() {
  worker_.request_stop();
  if (worker_.joinable()) worker_.join();
}

void RecordPrefetcher::Enqueue(std::span<const ExtentKey> keys) {
  bool queued_any = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const ExtentKey& key : keys) {
      if (buffer_.count(key) != 0 || queued_.count(key) != 0 || reading_ == key) continue;
      queue_.push_back(key);
      queued_.insert(key);
      queued_any = true;
    }
    // No more queued than the buffer holds: the oldest guesses go first.
    const size_t max_queued = std::max<uint64_t>(
        4, record_bytes_ > 0 ? budget_bytes_ / record_bytes_ : 256);
    while (queued_.size() > max_queued && !queue_.empty()) {
      queued_.erase(queue_.front());
      queue_.pop_front();
    }
  }
  if (queued_any) work_cv_.notify_one();
}

std::shared_ptr<const std::vector<uint8_t>> RecordPrefetcher::Take(const ExtentKey& key,
                                                                   bool* waited,
                                                                   bool* prefetched) {
  *waited = false;
  std::unique_lock<std::mutex> lock(mu_);
  queued_.erase(key);  // (left in queue_: the worker skips keys no longer in queued_)
  if (reading_ == key) {
    *waited = true;
    done_cv_.wait(lock, [&] { return reading_ != key; });
  }
  auto it = buffer_.find(key);
  if (it == buffer_.end()) return nullptr;
  it->second.used = true;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  if (prefetched != nullptr) *prefetched = it->second.prefetched;
  return it->second.bytes;
}

void RecordPrefetcher::Keep(const ExtentKey& key,
                            std::shared_ptr<const std::vector<uint8_t>> bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  queued_.erase(key);
  if (buffer_.count(key) != 0 || bytes->size() > budget_bytes_) return;
  // A demand read must not push out a prefetched record before it served its page.
  if (!MakeRoomLocked(bytes->size(), /*spare_unused=*/true)) return;
  InsertLocked(key, std::move(bytes), /*used=*/true, /*prefetched=*/false);
  ++counters_.records_kept;
}

void RecordPrefetcher::InsertLocked(const ExtentKey& key,
                                    std::shared_ptr<const std::vector<uint8_t>> bytes, bool used,
                                    bool prefetched) {
  counters_.buffered_bytes += bytes->size();
  ++counters_.buffered_records;
  lru_.push_front(key);
  buffer_.emplace(key, Buffered{std::move(bytes), used, lru_.begin(), prefetched});
}

void RecordPrefetcher::Erase(const ExtentKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  queued_.erase(key);
  if (reading_ == key) discard_reading_ = true;
  auto it = buffer_.find(key);
  if (it != buffer_.end()) DropLocked(it);
}

void RecordPrefetcher::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return queued_.empty() && !reading_.has_value(); });
}

RecordPrefetcher::Counters RecordPrefetcher::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

void RecordPrefetcher::DropLocked(
    std::unordered_map<ExtentKey, Buffered, ExtentKeyHash>::iterator it) {
  counters_.buffered_bytes -= it->second.bytes->size();
  --counters_.buffered_records;
  lru_.erase(it->second.lru);
  buffer_.erase(it);
}

bool RecordPrefetcher::MakeRoomLocked(uint64_t incoming, bool spare_unused) {
  const auto fits = [&](uint64_t freed) {
    return counters_.buffered_bytes - freed + incoming <= budget_bytes_;
  };
  if (spare_unused) {  // enough in records already used?
    uint64_t freeable = 0;
    for (auto it = lru_.rbegin(); it != lru_.rend() && !fits(freeable); ++it) {
      const Buffered& b = buffer_.at(*it);
      if (b.used) freeable += b.bytes->size();
    }
    if (!fits(freeable)) return false;
  }
  for (auto it = lru_.end(); !fits(0) && it != lru_.begin();) {
    --it;
    auto b = buffer_.find(*it);
    if (spare_unused && !b->second.used) continue;
    if (!b->second.used) ++counters_.wasted;
    it = std::next(it);  // stays valid when the victim's node goes
    DropLocked(b);
  }
  return true;
}

void RecordPrefetcher::Run(std::stop_token stop) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    // Skip keys taken or erased since they were queued.
    while (!queue_.empty() && queued_.count(queue_.front()) == 0) queue_.pop_front();
    if (queue_.empty()) {
      done_cv_.notify_all();  // idle (WaitIdle)
      if (!work_cv_.wait(lock, stop, [&] { return !queue_.empty(); })) return;
      continue;
    }
    if (stop.stop_requested()) return;
    const ExtentKey key = queue_.front();
    queue_.pop_front();
    queued_.erase(key);
    reading_ = key;
    discard_reading_ = false;
    lock.unlock();

    std::shared_ptr<const std::vector<uint8_t>> record;
    uint64_t read_bytes = 0;
    auto read = disk_.Get(key.bytes);
    if (read.ok()) {
      read_bytes = read->bytes().size();
      auto plain = DecompressExtent(read->bytes());
      if (plain.ok()) {
        record = std::make_shared<const std::vector<uint8_t>>(std::move(plain).value());
      }
    }

    lock.lock();
    counters_.disk_bytes_read += read_bytes;
    if (!record) {
      ++counters_.failed;
    } else {
      ++counters_.records_prefetched;
      record_bytes_ = record->size();
      // (Buffered already: the caller read it meanwhile and handed it over.)
      if (discard_reading_ || record->size() > budget_bytes_ || buffer_.count(key) != 0) {
        ++counters_.wasted;
      } else {
        MakeRoomLocked(record->size(), /*spare_unused=*/false);
        InsertLocked(key, std::move(record), /*used=*/false, /*prefetched=*/true);
      }
    }
    reading_.reset();
    discard_reading_ = false;
    done_cv_.notify_all();
  }
}

}  // namespace kvtier::cache::internal
