#include "storage/fault_injection_fs.h"

#include <cerrno>

namespace kvtier::storage {

namespace {

std::string ParentDir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

class FaultFile final : public File {
 public:
  FaultFile(std::unique_ptr<File> base, FaultInjectionFileSystem* fs)
      : base_(std::move(base)), fs_(fs) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (int err = fs_->TakeReadError()) return ErrnoStatus(err, "injected read " + path());
    return base_->ReadAt(offset, out);
  }

  Result<size_t> WriteAt(uint64_t offset, std::span<const uint8_t> data) override {
    if (int err = fs_->TakeWriteError()) return ErrnoStatus(err, "injected write " + path());
    if (fs_->TakeShortWrite()) {
      size_t n = data.size() / 2;
      if (base_->direct()) n -= n % kDirectIoAlignment;
      if (n == 0) return size_t{0};
      return base_->WriteAt(offset, data.first(n));
    }
    return base_->WriteAt(offset, data);
  }

  Status DataSync() override { return SyncImpl(/*full=*/false); }
  Status Sync() override { return SyncImpl(/*full=*/true); }
  Result<uint64_t> Size() override { return base_->Size(); }
  Status Truncate(uint64_t size_bytes) override { return base_->Truncate(size_bytes); }
  bool direct() const override { return base_->direct(); }
  int native_fd() const override { return -1; }  // all I/O through ReadAt/WriteAt
  const std::string& path() const override { return base_->path(); }

 private:
  Status SyncImpl(bool full) {
    if (int err = fs_->TakeSyncError()) return ErrnoStatus(err, "injected sync " + path());
    RETURN_IF_ERROR(full ? base_->Sync() : base_->DataSync());
    ASSIGN_OR_RETURN(uint64_t size, base_->Size());
    fs_->MarkSynced(path(), size);
    return Status::Ok();
  }

  std::unique_ptr<File> base_;
  FaultInjectionFileSystem* fs_;
};

FaultInjectionFileSystem::FaultInjectionFileSystem(FileSystem* base, uint64_t seed)
    : base_(base), rng_(seed) {}

void FaultInjectionFileSystem::FailWrites(int err, int count) {
  std::lock_guard lock(mu_);
  write_fault_ = {err, count};
}
void FaultInjectionFileSystem::ShortWrites(int count) {
  std::lock_guard lock(mu_);
  short_write_ = {EIO, count};
}
void FaultInjectionFileSystem::FailReads(int err, int count) {
  std::lock_guard lock(mu_);
  read_fault_ = {err, count};
}
void FaultInjectionFileSystem::FailSyncs(int err, int count) {
  std::lock_guard lock(mu_);
  sync_fault_ = {err, count};
}
void FaultInjectionFileSystem::RefuseDirectIo(bool refuse) {
  std::lock_guard lock(mu_);
  refuse_direct_ = refuse;
}
void FaultInjectionFileSystem::ClearFaults() {
  std::lock_guard lock(mu_);
  write_fault_ = short_write_ = read_fault_ = sync_fault_ = Fault{};
}
int64_t FaultInjectionFileSystem::injected_faults() const {
  std::lock_guard lock(mu_);
  return injected_;
}

int FaultInjectionFileSystem::Take(Fault& fault) {
  if (fault.err == 0 || fault.count == 0) return 0;
  if (fault.count > 0) --fault.count;
  ++injected_;
  return fault.err;
}
int FaultInjectionFileSystem::TakeWriteError() {
  std::lock_guard lock(mu_);
  return Take(write_fault_);
}
bool FaultInjectionFileSystem::TakeShortWrite() {
  std::lock_guard lock(mu_);
  return Take(short_write_) != 0;
}
int FaultInjectionFileSystem::TakeReadError() {
  std::lock_guard lock(mu_);
  return Take(read_fault_);
}
int FaultInjectionFileSystem::TakeSyncError() {
  std::lock_guard lock(mu_);
  return Take(sync_fault_);
}

void FaultInjectionFileSystem::MarkSynced(const std::string& path, uint64_t size_bytes) {
  std::lock_guard lock(mu_);
  files_[path].synced_bytes = size_bytes;
}

Result<std::unique_ptr<File>> FaultInjectionFileSystem::Open(const std::string& path,
                                                             const OpenOptions& options) {
  bool existed = base_->Exists(path);
  OpenOptions opts = options;
  {
    std::lock_guard lock(mu_);
    if (refuse_direct_) opts.direct = false;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<File> file, base_->Open(path, opts));
  {
    std::lock_guard lock(mu_);
    auto [it, inserted] = files_.try_emplace(path);
    if (!existed) {
      it->second = FileState{0, true};
    } else if (inserted || options.truncate) {
      // A file this object has not seen: what is on disk now counts as durable.
      Result<uint64_t> size = file->Size();
      it->second.synced_bytes = size.ok() ? *size : 0;
    }
  }
  return std::unique_ptr<File>(new FaultFile(std::move(file), this));
}

Status FaultInjectionFileSystem::Rename(const std::string& from, const std::string& to) {
  RETURN_IF_ERROR(base_->Rename(from, to));
  std::lock_guard lock(mu_);
  auto it = files_.find(from);
  if (it != files_.end()) {
    files_[to] = it->second;
    files_.erase(from);
  }
  return Status::Ok();
}

Status FaultInjectionFileSystem::Remove(const std::string& path) {
  RETURN_IF_ERROR(base_->Remove(path));
  std::lock_guard lock(mu_);
  files_.erase(path);
  return Status::Ok();
}

Result<std::vector<std::string>> FaultInjectionFileSystem::ListDir(const std::string& dir) {
  return base_->ListDir(dir);
}
Result<uint64_t> FaultInjectionFileSystem::FileSize(const std::string& path) {
  return base_->FileSize(path);
}
bool FaultInjectionFileSystem::Exists(const std::string& path) { return base_->Exists(path); }
Status FaultInjectionFileSystem::CreateDirs(const std::string& dir) {
  return base_->CreateDirs(dir);
}

Status FaultInjectionFileSystem::SyncDir(const std::string& dir) {
  if (int err = TakeSyncError()) return ErrnoStatus(err, "injected sync dir " + dir);
  RETURN_IF_ERROR(base_->SyncDir(dir));
  std::lock_guard lock(mu_);
  for (auto& [path, state] : files_) {
    if (ParentDir(path) == dir) state.created_since_dir_sync = false;
  }
  return Status::Ok();
}

Status FaultInjectionFileSystem::SimulateCrash(CrashMode mode) {
  std::lock_guard lock(mu_);
  for (auto it = files_.begin(); it != files_.end();) {
    const std::string& path = it->first;
    FileState& state = it->second;
    if (state.created_since_dir_sync) {
      Status s = base_->Remove(path);
      if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
      it = files_.erase(it);
      continue;
    }
    Result<uint64_t> size = base_->FileSize(path);
    if (!size.ok()) {
      if (size.status().code() == StatusCode::kNotFound) {
        it = files_.erase(it);
        continue;
      }
      return size.status();
    }
    if (*size > state.synced_bytes) {
      uint64_t keep = state.synced_bytes;
      if (mode == CrashMode::kTornTail) {
        keep += rng_() % (*size - state.synced_bytes);
      }
      OpenOptions opts;
      opts.writable = true;
      ASSIGN_OR_RETURN(std::unique_ptr<File> f, base_->Open(path, opts));
      RETURN_IF_ERROR(f->Truncate(keep));
    }
    ++it;
  }
  return Status::Ok();
}

}  // namespace kvtier::storage
