#include "storage/file_system.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "storage/fault_injection_fs.h"
#include "tests/storage/storage_test_util.h"

namespace kvtier::storage {
namespace {

std::vector<uint8_t> Bytes(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

TEST(PosixFileSystemTest, BasicOperations) {
  testutil::TempStoreDir dir;
  FileSystem* fs = FileSystem::Default();
  std::string d = dir.root + "/a/b/c";
  ASSERT_TRUE(fs->CreateDirs(d).ok());
  ASSERT_TRUE(fs->CreateDirs(d).ok());  // idempotent
  OpenOptions oo;
  oo.create = oo.writable = true;
  Result<std::unique_ptr<File>> f = fs->Open(d + "/x", oo);
  ASSERT_TRUE(f.ok());
  auto data = Bytes(5000, 3);
  EXPECT_EQ(*(*f)->WriteAt(100, data), 5000u);
  EXPECT_EQ(*(*f)->Size(), 5100u);
  ASSERT_TRUE((*f)->DataSync().ok());
  ASSERT_TRUE((*f)->Truncate(200).ok());
  EXPECT_EQ(*fs->FileSize(d + "/x"), 200u);
  std::vector<uint8_t> back(300);
  EXPECT_EQ(*(*f)->ReadAt(0, back), 200u);  // short at end of file
  EXPECT_EQ(back[150], 3);
  EXPECT_EQ(back[50], 0);
  f->reset();
  ASSERT_TRUE(fs->Rename(d + "/x", d + "/y").ok());
  EXPECT_FALSE(fs->Exists(d + "/x"));
  auto names = fs->ListDir(d);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"y"});
  ASSERT_TRUE(fs->SyncDir(d).ok());
  ASSERT_TRUE(fs->Remove(d + "/y").ok());
  EXPECT_EQ(fs->Remove(d + "/y").code(), StatusCode::kNotFound);
  oo.create = false;
  EXPECT_EQ(fs->Open(d + "/missing", oo).status().code(), StatusCode::kNotFound);
}

TEST(FaultInjectionFileSystemTest, InjectsErrorsAndShortWrites) {
  testutil::TempStoreDir dir;
  FaultInjectionFileSystem fs;
  OpenOptions oo;
  oo.create = oo.writable = true;
  auto f = fs.Open(dir.root + "/f", oo);
  ASSERT_TRUE(f.ok());
  auto data = Bytes(1000, 9);
  fs.FailWrites(ENOSPC, 2);
  EXPECT_EQ((*f)->WriteAt(0, data).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ((*f)->WriteAt(0, data).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(*(*f)->WriteAt(0, data), 1000u);  // the count ran out
  fs.FailWrites(EIO, 1);
  EXPECT_EQ((*f)->WriteAt(0, data).status().code(), StatusCode::kIOError);
  fs.ShortWrites(1);
  EXPECT_EQ(*(*f)->WriteAt(1000, data), 500u);
  EXPECT_EQ(*(*f)->Size(), 1500u);
  fs.FailReads(EIO, 1);
  std::vector<uint8_t> back(10);
  EXPECT_FALSE((*f)->ReadAt(0, back).ok());
  EXPECT_TRUE((*f)->ReadAt(0, back).ok());
  fs.FailSyncs(EIO, 1);
  EXPECT_FALSE((*f)->DataSync().ok());
  EXPECT_EQ(fs.injected_faults(), 6);
}

TEST(FaultInjectionFileSystemTest, CrashDropsUnsyncedDataAndFiles) {
  testutil::TempStoreDir dir;
  FaultInjectionFileSystem fs;
  OpenOptions oo;
  oo.create = oo.writable = true;
  std::string a = dir.root + "/a", b = dir.root + "/b";
  {
    auto fa = fs.Open(a, oo);
    ASSERT_EQ(*(*fa)->WriteAt(0, Bytes(4096, 1)), 4096u);
    ASSERT_TRUE((*fa)->DataSync().ok());
    ASSERT_TRUE(fs.SyncDir(dir.root).ok());
    ASSERT_EQ(*(*fa)->WriteAt(4096, Bytes(4096, 2)), 4096u);  // never synced
    auto fb = fs.Open(b, oo);                                 // created, dir never synced
    ASSERT_EQ(*(*fb)->WriteAt(0, Bytes(100, 3)), 100u);
    ASSERT_TRUE((*fb)->DataSync().ok());
  }
  ASSERT_TRUE(fs.SimulateCrash(FaultInjectionFileSystem::CrashMode::kDropUnsynced).ok());
  EXPECT_EQ(std::filesystem::file_size(a), 4096u);
  EXPECT_FALSE(std::filesystem::exists(b));
}

TEST(FaultInjectionFileSystemTest, TornTailKeepsSyncedPrefix) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    testutil::TempStoreDir dir;
    FaultInjectionFileSystem fs(FileSystem::Default(), seed);
    OpenOptions oo;
    oo.create = oo.writable = true;
    std::string a = dir.root + "/a";
    {
      auto fa = fs.Open(a, oo);
      ASSERT_EQ(*(*fa)->WriteAt(0, Bytes(1000, 1)), 1000u);
      ASSERT_TRUE((*fa)->Sync().ok());
      ASSERT_TRUE(fs.SyncDir(dir.root).ok());
      ASSERT_EQ(*(*fa)->WriteAt(1000, Bytes(9000, 2)), 9000u);
    }
    ASSERT_TRUE(fs.SimulateCrash(FaultInjectionFileSystem::CrashMode::kTornTail).ok());
    uint64_t size = std::filesystem::file_size(a);
    EXPECT_GE(size, 1000u);
    EXPECT_LT(size, 10000u);
  }
}

}  // namespace
}  // namespace kvtier::storage
