// storage/file_system.h — the one file-system interface all of storage/'s disk I/O goes through.
//
// Thread safety: FileSystem implementations are safe for concurrent use from many threads. A File
// may be read and written concurrently at different offsets (pread/pwrite semantics); Sync and
// Truncate must not race with writes to the same range.
//
// Tests swap the POSIX implementation for FaultInjectionFileSystem (storage/fault_injection_fs.h)
// to inject ENOSPC, EIO, short writes, torn tails and lost unsynced data. The io_uring engine uses
// File::native_fd() when a file exposes one; the fault-injection files expose none, so every byte
// they move goes through ReadAt/WriteAt and can be faulted.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace kvtier::storage {

// O_DIRECT needs buffers, offsets and lengths aligned to this many bytes.
inline constexpr size_t kDirectIoAlignment = 4096;

struct OpenOptions {
  bool create = false;    // create the file if missing
  bool truncate = false;  // empty an existing file
  bool writable = false;  // open read-write (read-only otherwise)
  // Ask for O_DIRECT. A filesystem that refuses it (EINVAL, e.g. tmpfs) gives a buffered file;
  // File::direct() tells which one was obtained.
  bool direct = false;
};

class File {
 public:
  virtual ~File() = default;

  // Reads up to out.size() bytes at `offset`; the count is short only at end of file.
  virtual Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) = 0;
  // Writes `data` at `offset`; returns the bytes written, which may be fewer than data.size()
  // (a short write): the caller decides what a partial write means.
  virtual Result<size_t> WriteAt(uint64_t offset, std::span<const uint8_t> data) = 0;
  // fdatasync: the data written so far (and the size) is durable when this returns OK.
  virtual Status DataSync() = 0;
  // fsync: data and all metadata.
  virtual Status Sync() = 0;
  virtual Result<uint64_t> Size() = 0;
  virtual Status Truncate(uint64_t size_bytes) = 0;

  // True when opened with O_DIRECT.
  virtual bool direct() const = 0;
  // The kernel file descriptor for asynchronous engines, or -1 when all I/O must go through
  // ReadAt/WriteAt (fault injection).
  virtual int native_fd() const = 0;
  virtual const std::string& path() const = 0;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // The process-wide POSIX file system. Never null, never destroyed.
  static FileSystem* Default();

  virtual Result<std::unique_ptr<File>> Open(const std::string& path,
                                             const OpenOptions& options) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Remove(const std::string& path) = 0;
  // Names (not paths) of the entries in `dir`, without "." and "..".
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  virtual Result<uint64_t> FileSize(const std::string& path) = 0;
  virtual bool Exists(const std::string& path) = 0;
  // mkdir -p.
  virtual Status CreateDirs(const std::string& dir) = 0;
  // fsync of a directory: makes creations, renames and removals inside it durable.
  virtual Status SyncDir(const std::string& dir) = 0;
};

// Turns an errno into a Status: ENOSPC/EDQUOT → ResourceExhausted, ENOENT → NotFound, the
// rest → IOError. `what` names the operation and path.
Status ErrnoStatus(int err, const std::string& what);

}  // namespace kvtier::storage
