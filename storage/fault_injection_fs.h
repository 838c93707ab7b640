// storage/fault_injection_fs.h — a FileSystem wrapper that injects faults, for tests.
//
// Thread safety: safe for concurrent use; fault settings may change while I/O is in flight (an
// operation sees either the old or the new setting).
//
// Faults: writes failing with an errno (ENOSPC, EIO, ...), short writes (half of the bytes land,
// the short count is returned), reads and syncs failing with an errno. Crash simulation: every
// file is cut back to what its last DataSync/Sync made durable (or torn at a random point after
// it), and files created since their directory's last SyncDir disappear — the state a power
// loss can leave. Modelled on the idea of LevelDB's FaultInjectionTestEnv and RocksDB's
// FaultInjectionTestFS; only append-style writers are modelled (data rewritten below the synced
// size is not rolled back).
//
// Files opened through it expose no native fd, so the io_uring engine routes their I/O through
// ReadAt/WriteAt here and every byte can be faulted.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "storage/file_system.h"

namespace kvtier::storage {

class FaultInjectionFileSystem final : public FileSystem {
 public:
  // `base` is borrowed and must outlive this object.
  explicit FaultInjectionFileSystem(FileSystem* base = FileSystem::Default(), uint64_t seed = 1);

  // The next `count` writes (all, while count < 0) fail with `err` and write nothing.
  void FailWrites(int err, int count = -1);
  // The next `count` writes (all, while count < 0) write only the first half of their bytes
  // (rounded down to 4 KiB on O_DIRECT files) and return that short count.
  void ShortWrites(int count = -1);
  // The next `count` reads fail with `err`.
  void FailReads(int err, int count = -1);
  // The next `count` DataSync/Sync/SyncDir calls fail with `err` (nothing becomes durable).
  void FailSyncs(int err, int count = -1);
  // Opens asking for O_DIRECT get a buffered file, as on a filesystem that refuses O_DIRECT.
  void RefuseDirectIo(bool refuse);
  // Clears the error and short-write faults (not RefuseDirectIo).
  void ClearFaults();
  // Faults injected so far.
  int64_t injected_faults() const;

  enum class CrashMode {
    kDropUnsynced,  // every file is cut back exactly to its last synced size
    kTornTail,      // cut at a random byte between the synced size and the current end
  };
  // Simulates a power loss. Call it with every file closed (the store closed or destroyed).
  Status SimulateCrash(CrashMode mode);

  // FileSystem:
  Result<std::unique_ptr<File>> Open(const std::string& path, const OpenOptions& options) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  Result<uint64_t> FileSize(const std::string& path) override;
  bool Exists(const std::string& path) override;
  Status CreateDirs(const std::string& dir) override;
  Status SyncDir(const std::string& dir) override;

 private:
  friend class FaultFile;
  struct FileState {
    uint64_t synced_bytes = 0;
    bool created_since_dir_sync = false;
  };
  struct Fault {
    int err = 0;
    int count = 0;  // remaining; < 0: unlimited
  };
  // Consumes one use of `fault`; returns its errno, or 0 when it is not armed.
  int Take(Fault& fault);
  int TakeWriteError();
  bool TakeShortWrite();
  int TakeReadError();
  int TakeSyncError();
  void MarkSynced(const std::string& path, uint64_t size_bytes);

  FileSystem* base_;
  mutable std::mutex mu_;
  std::map<std::string, FileState> files_;  // guarded by mu_
  Fault write_fault_;                       // guarded by mu_
  Fault short_write_;                       // guarded by mu_ (err unused)
  Fault read_fault_;                        // guarded by mu_
  Fault sync_fault_;                        // guarded by mu_
  int64_t injected_ = 0;                    // guarded by mu_
  bool refuse_direct_ = false;              // guarded by mu_
  std::mt19937_64 rng_;                     // guarded by mu_
};

}  // namespace kvtier::storage
