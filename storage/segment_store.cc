#include "storage/segment_store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>

#include "storage/internal/record_format.h"

namespace kvtier::storage {

namespace fmt = internal;

namespace {

constexpr std::string_view kFormatKey = "!format";
constexpr std::string_view kFormatValue = "kvtier-disk-index-v1";
constexpr std::string_view kNextSegmentKey = "!next_segment";

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

rocksdb::Slice KeySlice(const ExtentKey& key) {
  return rocksdb::Slice(reinterpret_cast<const char*>(key.data()), key.size());
}

Status RocksStatus(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNoSpace()) return ResourceExhaustedError(std::string(what) + ": " + s.ToString());
  return IOError(std::string(what) + ": " + s.ToString());
}

std::string EncodeU64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

}  // namespace

struct SegmentStore::Segment {
  uint64_t id = 0;
  std::string path;
  std::unique_ptr<File> file;
  uint64_t size_bytes = 0;                      // guarded by mu_ (changed with write_mu_ held too)
  uint64_t synced_bytes = 0;                    // guarded by write_mu_
  uint64_t last_access_ms = 0;                  // guarded by mu_
  bool sealed = false;                          // guarded by write_mu_: no more appends
  std::unordered_set<ExtentKey, KeyHash> keys;  // guarded by mu_: live records
};

size_t SegmentStore::KeyHash::operator()(const ExtentKey& k) const {
  return static_cast<size_t>(XXH3_64bits(k.data(), k.size()));
}

SegmentStore::SegmentStore(const SegmentStoreOptions& options)
    : options_(options), fs_(options.fs != nullptr ? options.fs : FileSystem::Default()) {}

Result<std::unique_ptr<SegmentStore>> SegmentStore::Open(const SegmentStoreOptions& options) {
  if (options.dir.empty() || options.index_dir.empty()) {
    return InvalidArgumentError("SegmentStore: dir and index_dir are required");
  }
  if (options.segment_bytes < 16 * kDirectIoAlignment ||
      options.segment_bytes % kDirectIoAlignment != 0 ||
      options.segment_bytes > std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError(
        "SegmentStore: segment_bytes must be a multiple of 4 KiB in "
        "[64 KiB, 4 GiB)");
  }
  std::unique_ptr<SegmentStore> store(new SegmentStore(options));
  RETURN_IF_ERROR(store->Recover());
  return store;
}

Status SegmentStore::Recover() {
  const std::string& dir = options_.dir;
  RETURN_IF_ERROR(fs_->CreateDirs(dir));
  RETURN_IF_ERROR(fs_->CreateDirs(options_.index_dir));

  IoEngineOptions eo;
  eo.kind =
      options_.use_io_uring ? IoEngineOptions::Kind::kAuto : IoEngineOptions::Kind::kThreadPool;
  eo.io_uring_threads = options_.io_threads;
  eo.queue_depth = options_.io_queue_depth;
  eo.log = options_.log;
  ASSIGN_OR_RETURN(engine_, CreateIoEngine(eo));

  if (options_.use_direct_io) {
    std::string probe = dir + "/.direct-probe";
    OpenOptions po;
    po.create = po.truncate = po.writable = po.direct = true;
    ASSIGN_OR_RETURN(std::unique_ptr<File> f, fs_->Open(probe, po));
    direct_io_ = f->direct();
    f.reset();
    (void)fs_->Remove(probe);
    if (!direct_io_) {
      LogLine(options_.log, "O_DIRECT refused by the filesystem under " + dir +
                                "; segment files use buffered I/O");
    }
  }

  // The index.
  rocksdb::Options ro;
  ro.create_if_missing = true;
  ro.write_buffer_size = 8 << 20;
  ro.max_open_files = 256;
  ro.keep_log_file_num = 2;
  rocksdb::DB* raw_db = nullptr;
  RETURN_IF_ERROR(RocksStatus(rocksdb::DB::Open(ro, options_.index_dir, &raw_db),
                              "open index " + options_.index_dir));
  db_.reset(raw_db);
  std::string format;
  rocksdb::Status fs = db_->Get(rocksdb::ReadOptions(),
                                rocksdb::Slice(kFormatKey.data(), kFormatKey.size()), &format);
  rocksdb::WriteBatch fixes;
  bool wipe = false;
  if (fs.ok() && format != kFormatValue) {
    LogLine(options_.log, "index " + options_.index_dir + " has format '" + format + "', not '" +
                              std::string(kFormatValue) + "': wiping it");
    wipe = true;
  } else if (!fs.ok() && !fs.IsNotFound()) {
    return RocksStatus(fs, "read index format");
  }
  fixes.Put(rocksdb::Slice(kFormatKey.data(), kFormatKey.size()),
            rocksdb::Slice(kFormatValue.data(), kFormatValue.size()));

  // Segment files.
  uint64_t max_id = 0;
  ASSIGN_OR_RETURN(std::vector<std::string> names, fs_->ListDir(dir));
  int ignored = 0;
  for (const std::string& name : names) {
    uint64_t id;
    if (!fmt::ParseSegmentFileName(name, &id)) continue;  // foreign: never touched
    max_id = std::max(max_id, id);
    auto seg = std::make_shared<Segment>();
    seg->id = id;
    seg->path = dir + "/" + name;
    OpenOptions oo;
    oo.writable = false;
    oo.direct = direct_io_;
    Result<std::unique_ptr<File>> file = fs_->Open(seg->path, oo);
    if (!file.ok()) {
      LogLine(options_.log, "ignoring " + name + ": " + file.status().ToString());
      ++ignored;
      continue;
    }
    seg->file = std::move(*file);
    AlignedBuffer head(fmt::kSegmentHeaderBytes);
    Result<size_t> n = seg->file->ReadAt(0, head.span());
    Status check = !n.ok() ? n.status() : fmt::CheckSegmentHeader(head.span().first(*n), id);
    if (!check.ok()) {
      LogLine(options_.log, "ignoring " + name + ": " + check.ToString());
      ++ignored;
      continue;
    }
    ASSIGN_OR_RETURN(seg->size_bytes, seg->file->Size());
    seg->synced_bytes = seg->size_bytes;
    seg->sealed = true;
    segments_[id] = std::move(seg);
  }

  // Index entries: keep those that point inside a known segment.
  uint64_t torn = 0, dropped = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    // Extent keys are exactly 32 bytes; the meta keys ("!format", "!next_segment") are not.
    // (A prefix test would misread the 1/256 of extent keys whose first byte is '!'.)
    if (k.size() != sizeof(ExtentKey)) {
      if (k == rocksdb::Slice(kFormatKey.data(), kFormatKey.size())) continue;
      if (k == rocksdb::Slice(kNextSegmentKey.data(), kNextSegmentKey.size())) {
        if (!wipe && it->value().size() == 8) {
          uint64_t next;
          std::memcpy(&next, it->value().data(), 8);
          if (next > 0) max_id = std::max(max_id, next - 1);
        }
        continue;
      }
      fixes.Delete(k);
      ++dropped;
      continue;
    }
    if (wipe) {
      fixes.Delete(k);
      ++dropped;
      continue;
    }
    Result<fmt::IndexValue> v = fmt::DecodeIndexValue(it->value().ToStringView());
    if (!v.ok()) {
      fixes.Delete(k);
      ++dropped;
      continue;
    }
    max_id = std::max(max_id, v->segment_id);
    auto seg_it = segments_.find(v->segment_id);
    if (seg_it == segments_.end()) {
      fixes.Delete(k);
      ++dropped;
      continue;
    }
    Segment& seg = *seg_it->second;
    if (v->offset + v->record_bytes > seg.size_bytes) {  // torn: the file ends inside it
      fixes.Delete(k);
      ++torn;
      continue;
    }
    ExtentKey key;
    std::memcpy(key.data(), k.data(), key.size());
    Entry e;
    e.segment_id = v->segment_id;
    e.offset = v->offset;
    e.record_bytes = v->record_bytes;
    e.stored_bytes = v->stored_bytes;
    e.uncompressed_bytes = v->uncompressed_bytes;
    e.checksum = v->checksum;
    e.last_access_ms = v->last_access_ms;
    e.codec = v->codec;
    e.indexed = true;
    entries_[key] = e;
    seg.keys.insert(key);
    seg.last_access_ms = std::max(seg.last_access_ms, e.last_access_ms);
  }
  RETURN_IF_ERROR(RocksStatus(it->status(), "scan index"));
  it.reset();
  corrupt_ += torn;

  // Segments nobody references hold only records never indexed (written after the last sync):
  // garbage.
  int orphans = 0;
  for (auto s = segments_.begin(); s != segments_.end();) {
    if (s->second->keys.empty()) {
      std::string path = s->second->path;
      s = segments_.erase(s);
      Status rs = fs_->Remove(path);
      if (!rs.ok()) LogLine(options_.log, "cannot remove unreferenced segment: " + rs.ToString());
      ++orphans;
    } else {
      bytes_on_disk_ += s->second->size_bytes;
      ++s;
    }
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  RETURN_IF_ERROR(RocksStatus(db_->Write(wo, &fixes), "write index fixes"));
  next_segment_id_ = max_id + 1;

  LogLine(options_.log,
          "disk tier at " + dir + ": " + std::to_string(entries_.size()) + " records in " +
              std::to_string(segments_.size()) + " segments, " + std::to_string(bytes_on_disk_) +
              " bytes; dropped " + std::to_string(torn) + " torn and " + std::to_string(dropped) +
              " stale index entries, " + std::to_string(orphans) +
              " unreferenced segments; ignored " + std::to_string(ignored) + " files; engine " +
              std::string(engine_->name()) + ", O_DIRECT " + (direct_io_ ? "on" : "off"));

  std::lock_guard wl(write_mu_);
  return MakeRoomLocked(0);
}

SegmentStore::~SegmentStore() {
  if (db_ != nullptr) {
    std::lock_guard wl(write_mu_);
    Status s = SyncLocked();
    if (!s.ok()) LogLine(options_.log, "sync at close failed: " + s.ToString());
    rocksdb::Status cs = db_->Close();
    if (!cs.ok()) LogLine(options_.log, "closing the index failed: " + cs.ToString());
  }
  active_.reset();
  segments_.clear();
  db_.reset();
}

Status SegmentStore::Put(const ExtentKey& key, uint8_t codec, uint64_t uncompressed_bytes,
                         std::span<const uint8_t> bytes) {
  uint64_t record_bytes = fmt::RecordBytes(bytes.size());
  if (record_bytes + fmt::kSegmentHeaderBytes > options_.segment_bytes) {
    return InvalidArgumentError("extent of " + std::to_string(bytes.size()) +
                                " bytes does not fit a segment of " +
                                std::to_string(options_.segment_bytes));
  }
  if (Contains(key)) return Status::Ok();
  uint64_t checksum = 0;
  AlignedBuffer record = fmt::EncodeRecord(key, codec, uncompressed_bytes, bytes, &checksum);

  std::lock_guard wl(write_mu_);
  if (Contains(key)) return Status::Ok();
  if (active_ != nullptr && active_->size_bytes + record_bytes > options_.segment_bytes) {
    RETURN_IF_ERROR(RollSegmentLocked());
  }
  RETURN_IF_ERROR(MakeRoomLocked(record_bytes + (active_ ? 0 : fmt::kSegmentHeaderBytes)));
  if (active_ == nullptr) {
    uint64_t id = next_segment_id_++;
    auto seg = std::make_shared<Segment>();
    seg->id = id;
    seg->path = options_.dir + "/" + fmt::SegmentFileName(id);
    OpenOptions oo;
    oo.create = oo.truncate = oo.writable = true;
    oo.direct = direct_io_;
    ASSIGN_OR_RETURN(seg->file, fs_->Open(seg->path, oo));
    AlignedBuffer head = fmt::EncodeSegmentHeader(id, NowMs());
    IoRequest req{IoRequest::Op::kWrite, seg->file.get(), 0, head.data(), head.size()};
    engine_->Run({&req, 1});
    if (req.error != 0 || req.done_bytes != head.size()) {
      ++write_errors_;
      seg->file.reset();
      (void)fs_->Remove(seg->path);
      return req.error != 0 ? ErrnoStatus(req.error, "write segment header " + seg->path)
                            : IOError("short write of segment header " + seg->path);
    }
    seg->size_bytes = fmt::kSegmentHeaderBytes;
    seg->last_access_ms = NowMs();
    (void)db_->Put(rocksdb::WriteOptions(),
                   rocksdb::Slice(kNextSegmentKey.data(), kNextSegmentKey.size()),
                   EncodeU64(next_segment_id_));
    dir_sync_needed_ = true;
    {
      std::unique_lock lock(mu_);
      segments_[id] = seg;
      bytes_on_disk_ += seg->size_bytes;
    }
    active_ = std::move(seg);
  }

  Segment& seg = *active_;
  const uint64_t offset = seg.size_bytes;
  IoRequest req{IoRequest::Op::kWrite, seg.file.get(), offset, record.data(), record.size()};
  engine_->Run({&req, 1});
  if (req.error != 0 || req.done_bytes != record.size()) {
    ++write_errors_;
    Status failure = req.error != 0 ? ErrnoStatus(req.error, "write record to " + seg.path)
                                    : IOError("short write to " + seg.path + ": " +
                                              std::to_string(req.done_bytes) + " of " +
                                              std::to_string(record.size()) + " bytes");
    // Nothing of a failed record may stay reachable: cut it off. If that fails too, the
    // segment is sealed with the unknown bytes counted as used.
    Status cut = seg.file->Truncate(offset);
    if (!cut.ok()) {
      LogLine(options_.log, "cannot cut a failed write off " + seg.path + ": " + cut.ToString() +
                                "; sealing the segment");
      std::unique_lock lock(mu_);
      seg.size_bytes += record_bytes;
      bytes_on_disk_ += record_bytes;
      seg.sealed = true;
      active_.reset();
    }
    return failure;
  }

  uint64_t now = NowMs();
  {
    std::unique_lock lock(mu_);
    Entry e;
    e.segment_id = seg.id;
    e.offset = offset;
    e.record_bytes = static_cast<uint32_t>(record_bytes);
    e.stored_bytes = static_cast<uint32_t>(bytes.size());
    e.uncompressed_bytes = uncompressed_bytes;
    e.checksum = checksum;
    e.last_access_ms = now;
    e.codec = codec;
    entries_[key] = e;
    seg.keys.insert(key);
    seg.size_bytes += record_bytes;
    seg.last_access_ms = std::max(seg.last_access_ms, now);
    bytes_on_disk_ += record_bytes;
  }
  pending_index_.push_back(key);
  bytes_in_ += bytes.size();
  return Status::Ok();
}

Status SegmentStore::RollSegmentLocked() {
  active_->sealed = true;
  active_.reset();
  // A full segment becomes durable and indexed now, so unsynced work stays bounded.
  return SyncLocked();
}

Status SegmentStore::MakeRoomLocked(uint64_t incoming_bytes) {
  for (;;) {
    uint64_t victim = 0;
    bool found = false;
    {
      std::shared_lock lock(mu_);
      if (bytes_on_disk_ + incoming_bytes <= options_.disk_budget_bytes) return Status::Ok();
      uint64_t best_access = 0;
      for (const auto& [id, seg] : segments_) {
        if (seg == active_) continue;
        if (!found || seg->last_access_ms < best_access ||
            (seg->last_access_ms == best_access && id < victim)) {
          found = true;
          victim = id;
          best_access = seg->last_access_ms;
        }
      }
    }
    // Only the active segment is left: it is at most one segment, the allowance over budget.
    if (!found) return Status::Ok();
    RETURN_IF_ERROR(DropSegmentLocked(victim, /*count_as_gc=*/true));
  }
}

Status SegmentStore::DropSegmentLocked(uint64_t segment_id, bool count_as_gc) {
  std::shared_ptr<Segment> seg;
  rocksdb::WriteBatch deletes;
  {
    std::unique_lock lock(mu_);
    auto it = segments_.find(segment_id);
    if (it == segments_.end()) return Status::Ok();
    seg = it->second;
    for (const ExtentKey& key : seg->keys) {
      auto e = entries_.find(key);
      if (e == entries_.end() || e->second.segment_id != segment_id) continue;
      if (e->second.indexed) deletes.Delete(KeySlice(key));
      access_dirty_.erase(key);
      entries_.erase(e);
    }
    seg->keys.clear();
    segments_.erase(it);
    bytes_on_disk_ -= seg->size_bytes;
  }
  if (seg == active_) active_.reset();
  if (count_as_gc) {
    ++gc_runs_;
    gc_bytes_ += seg->size_bytes;
  }
  // Index entries first (synced), then the file: no durable entry outlives its payload.
  if (deletes.Count() > 0) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    Status s = RocksStatus(db_->Write(wo, &deletes), "drop index entries");
    if (!s.ok()) {
      // Recovery drops entries whose segment is gone, so removing the file stays safe.
      LogLine(options_.log, s.ToString());
    }
  }
  return fs_->Remove(seg->path);
}

Status SegmentStore::Sync() {
  std::lock_guard wl(write_mu_);
  return SyncLocked();
}

Status SegmentStore::SyncLocked() {
  // 1. Payload: every segment with unsynced bytes.
  std::vector<std::pair<std::shared_ptr<Segment>, uint64_t>> dirty;
  {
    std::shared_lock lock(mu_);
    for (const auto& [id, seg] : segments_) {
      if (seg->size_bytes > seg->synced_bytes) dirty.emplace_back(seg, seg->size_bytes);
    }
  }
  for (auto& [seg, size] : dirty) {
    RETURN_IF_ERROR(seg->file->DataSync());
    seg->synced_bytes = size;
  }
  if (dir_sync_needed_) {
    RETURN_IF_ERROR(fs_->SyncDir(options_.dir));
    dir_sync_needed_ = false;
  }
  // 2. Index: entries whose payload is now durable, and refreshed access times.
  rocksdb::WriteBatch batch;
  std::vector<ExtentKey> newly_indexed;
  {
    std::shared_lock lock(mu_);
    auto put = [&](const ExtentKey& key, const Entry& e) {
      fmt::IndexValue v;
      v.codec = e.codec;
      v.stored_bytes = e.stored_bytes;
      v.segment_id = e.segment_id;
      v.offset = e.offset;
      v.record_bytes = e.record_bytes;
      v.uncompressed_bytes = e.uncompressed_bytes;
      v.checksum = e.checksum;
      v.last_access_ms = e.last_access_ms;
      batch.Put(KeySlice(key), fmt::EncodeIndexValue(v));
    };
    for (const ExtentKey& key : pending_index_) {
      auto it = entries_.find(key);
      if (it == entries_.end() || it->second.indexed) continue;
      put(key, it->second);
      newly_indexed.push_back(key);
    }
    for (const ExtentKey& key : access_dirty_) {
      auto it = entries_.find(key);
      if (it != entries_.end() && it->second.indexed) put(key, it->second);
    }
  }
  if (batch.Count() > 0) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    RETURN_IF_ERROR(RocksStatus(db_->Write(wo, &batch), "write index"));
  }
  {
    std::unique_lock lock(mu_);
    for (const ExtentKey& key : newly_indexed) {
      auto it = entries_.find(key);
      if (it != entries_.end()) it->second.indexed = true;
    }
    access_dirty_.clear();
  }
  pending_index_.clear();
  return Status::Ok();
}

bool SegmentStore::Contains(const ExtentKey& key) const {
  std::shared_lock lock(mu_);
  return entries_.contains(key);
}

Status SegmentStore::Remove(const ExtentKey& key, uint64_t* removed_bytes) {
  std::lock_guard wl(write_mu_);
  Entry e;
  bool drop_segment = false;
  {
    std::unique_lock lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return NotFoundError("no such extent");
    e = it->second;
    if (removed_bytes != nullptr) *removed_bytes = e.stored_bytes;
    entries_.erase(it);
    access_dirty_.erase(key);
    auto s = segments_.find(e.segment_id);
    if (s != segments_.end()) {
      s->second->keys.erase(key);
      drop_segment = s->second->keys.empty() && s->second != active_;
    }
  }
  if (e.indexed) {
    RETURN_IF_ERROR(
        RocksStatus(db_->Delete(rocksdb::WriteOptions(), KeySlice(key)), "remove index entry"));
  }
  if (drop_segment) return DropSegmentLocked(e.segment_id, /*count_as_gc=*/false);
  return Status::Ok();
}

Result<StoredExtent> SegmentStore::Get(const ExtentKey& key) {
  std::vector<Result<StoredExtent>> r = MultiGet(std::span<const ExtentKey>(&key, 1));
  return std::move(r[0]);
}

void SegmentStore::DropCorrupt(const ExtentKey& key, const Entry& seen) {
  // Called with mu_ held exclusively.
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.segment_id != seen.segment_id ||
      it->second.offset != seen.offset) {
    return;  // already replaced or dropped
  }
  if (it->second.indexed) (void)db_->Delete(rocksdb::WriteOptions(), KeySlice(key));
  auto s = segments_.find(seen.segment_id);
  if (s != segments_.end()) s->second->keys.erase(key);
  access_dirty_.erase(key);
  entries_.erase(it);
}

std::vector<Result<StoredExtent>> SegmentStore::MultiGet(std::span<const ExtentKey> keys) {
  struct Read {
    size_t index;
    Entry entry;
    std::shared_ptr<Segment> segment;
    AlignedBuffer buffer;
  };
  std::vector<Result<StoredExtent>> out;
  out.reserve(keys.size());
  std::vector<Read> reads;
  {
    std::shared_lock lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      out.emplace_back(NotFoundError("extent not on disk"));
      auto it = entries_.find(keys[i]);
      if (it == entries_.end()) continue;
      auto s = segments_.find(it->second.segment_id);
      if (s == segments_.end()) continue;
      reads.push_back({i, it->second, s->second, AlignedBuffer()});
    }
  }
  misses_ += keys.size() - reads.size();

  std::vector<IoRequest> requests(reads.size());
  for (size_t r = 0; r < reads.size(); ++r) {
    reads[r].buffer = AlignedBuffer::Uninitialized(reads[r].entry.record_bytes);
    requests[r] = IoRequest{IoRequest::Op::kRead, reads[r].segment->file.get(),
                            reads[r].entry.offset, reads[r].buffer.data(), reads[r].buffer.size()};
  }
  engine_->Run(requests);

  std::vector<size_t> good, bad;
  for (size_t r = 0; r < reads.size(); ++r) {
    Read& rd = reads[r];
    const IoRequest& req = requests[r];
    const ExtentKey& key = keys[rd.index];
    if (req.error != 0) {
      ++read_errors_;
      ++misses_;
      out[rd.index] = ErrnoStatus(req.error, "read " + rd.segment->path);
      continue;
    }
    Status why;
    if (req.done_bytes != rd.buffer.size()) {
      why = CorruptionError("record torn: " + std::to_string(req.done_bytes) + " of " +
                            std::to_string(rd.buffer.size()) + " bytes");
    } else {
      Result<fmt::RecordInfo> info = fmt::DecodeRecord(rd.buffer.span(), key);
      if (!info.ok()) {
        why = info.status();
      } else if (info->checksum != rd.entry.checksum || info->codec != rd.entry.codec ||
                 info->stored_bytes != rd.entry.stored_bytes ||
                 info->uncompressed_bytes != rd.entry.uncompressed_bytes) {
        why = CorruptionError("record does not match its index entry");
      }
    }
    if (!why.ok()) {
      ++corrupt_;
      ++misses_;
      out[rd.index] = NotFoundError("corrupt record dropped: " + why.message());
      bad.push_back(r);
      continue;
    }
    StoredExtent x;
    x.codec_ = rd.entry.codec;
    x.uncompressed_bytes_ = rd.entry.uncompressed_bytes;
    x.payload_offset_ = fmt::kRecordHeaderBytes;
    x.size_ = rd.entry.stored_bytes;
    x.buffer_ = std::move(rd.buffer);
    ++hits_;
    bytes_out_ += x.size_;
    out[rd.index] = std::move(x);
    good.push_back(r);
  }

  if (!good.empty() || !bad.empty()) {
    uint64_t now = NowMs();
    std::unique_lock lock(mu_);
    for (size_t r : good) {
      const ExtentKey& key = keys[reads[r].index];
      auto it = entries_.find(key);
      if (it == entries_.end() || it->second.segment_id != reads[r].entry.segment_id) continue;
      it->second.last_access_ms = now;
      if (it->second.indexed) access_dirty_.insert(key);
      reads[r].segment->last_access_ms = std::max(reads[r].segment->last_access_ms, now);
    }
    for (size_t r : bad) DropCorrupt(keys[reads[r].index], reads[r].entry);
  }
  return out;
}

SegmentStoreStats SegmentStore::stats() const {
  SegmentStoreStats s;
  {
    std::shared_lock lock(mu_);
    s.bytes_on_disk = bytes_on_disk_;
    s.records = entries_.size();
    for (const auto& [key, e] : entries_) ++s.records_by_codec[e.codec];
    s.segments = segments_.size();
  }
  s.hits = hits_;
  s.misses = misses_;
  s.corrupt_records = corrupt_;
  s.read_errors = read_errors_;
  s.write_errors = write_errors_;
  s.bytes_in = bytes_in_;
  s.bytes_out = bytes_out_;
  s.gc_runs = gc_runs_;
  s.gc_bytes = gc_bytes_;
  return s;
}

}  // namespace kvtier::storage
