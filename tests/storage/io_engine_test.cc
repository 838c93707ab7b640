#include "storage/io_engine.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "storage/fault_injection_fs.h"
#include "tests/storage/storage_test_util.h"

namespace kvtier::storage {
namespace {

using Kind = IoEngineOptions::Kind;

class IoEngineTest : public ::testing::TestWithParam<Kind> {
 protected:
  std::unique_ptr<IoEngine> Make(int queue_depth = 128) {
    IoEngineOptions o;
    o.kind = GetParam();
    o.queue_depth = queue_depth;
    o.log = [this](std::string_view line) { log_ += std::string(line) + "\n"; };
    Result<std::unique_ptr<IoEngine>> e = CreateIoEngine(o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(*e) : nullptr;
  }
  std::string log_;
};

TEST_P(IoEngineTest, ReportsWhichEngineIsInUse) {
  auto engine = Make();
  ASSERT_NE(engine, nullptr);
  if (GetParam() == Kind::kThreadPool) {
    EXPECT_EQ(engine->name(), "threads");
    EXPECT_NE(log_.find("I/O engine: threads"), std::string::npos) << log_;
  } else {
    EXPECT_EQ(engine->name(), "io_uring");
    EXPECT_NE(log_.find("I/O engine: io_uring"), std::string::npos) << log_;
  }
}

// Writes 256 blocks in one batch, reads them back in one batch (all in flight), O_DIRECT.
TEST_P(IoEngineTest, BatchedDirectWritesAndReads) {
  testutil::TempStoreDir dir;
  std::filesystem::create_directories(dir.root + "/cache");
  OpenOptions oo;
  oo.create = oo.writable = oo.direct = true;
  Result<std::unique_ptr<File>> file = FileSystem::Default()->Open(dir.root + "/cache/f", oo);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_TRUE((*file)->direct());
  auto engine = Make();
  constexpr int kBlocks = 256;
  constexpr size_t kBlock = 16384;
  AlignedBuffer out(kBlocks * kBlock);
  for (size_t i = 0; i < out.size(); ++i) out.data()[i] = static_cast<uint8_t>(i * 7 + i / 4096);
  std::vector<IoRequest> writes(kBlocks);
  for (int b = 0; b < kBlocks; ++b) {
    // Scattered order: block b goes to slot (b * 37) % kBlocks.
    uint64_t slot = (b * 37) % kBlocks;
    writes[b] = {IoRequest::Op::kWrite, file->get(), slot * kBlock, out.data() + b * kBlock,
                 kBlock};
  }
  engine->Run(writes);
  for (const IoRequest& r : writes) {
    ASSERT_EQ(r.error, 0) << std::strerror(r.error);
    ASSERT_EQ(r.done_bytes, kBlock);
  }
  AlignedBuffer in(kBlocks * kBlock);
  std::vector<IoRequest> reads(kBlocks);
  for (int b = 0; b < kBlocks; ++b) {
    uint64_t slot = (b * 37) % kBlocks;
    reads[b] = {IoRequest::Op::kRead, file->get(), slot * kBlock, in.data() + b * kBlock, kBlock};
  }
  engine->Run(reads);
  for (const IoRequest& r : reads) {
    ASSERT_EQ(r.error, 0);
    ASSERT_EQ(r.done_bytes, kBlock);
  }
  EXPECT_EQ(std::memcmp(in.data(), out.data(), in.size()), 0);
  EXPECT_GE(engine->max_in_flight(), 100u);
}

TEST_P(IoEngineTest, ShortReadAtEndAndErrors) {
  testutil::TempStoreDir dir;
  std::filesystem::create_directories(dir.root + "/cache");
  OpenOptions oo;
  oo.create = oo.writable = true;
  Result<std::unique_ptr<File>> file = FileSystem::Default()->Open(dir.root + "/cache/f", oo);
  ASSERT_TRUE(file.ok());
  std::vector<uint8_t> data(10000, 0xAB);
  ASSERT_EQ(*(*file)->WriteAt(0, data), data.size());
  auto engine = Make();
  AlignedBuffer buf(16384);
  IoRequest past_end{IoRequest::Op::kRead, file->get(), 8192, buf.data(), 8192};
  engine->Run({&past_end, 1});
  EXPECT_EQ(past_end.error, 0);
  EXPECT_EQ(past_end.done_bytes, 10000u - 8192u);

  // A file through the fault-injection layer: the engine goes through ReadAt/WriteAt.
  FaultInjectionFileSystem fs;
  oo.create = false;
  Result<std::unique_ptr<File>> ff = fs.Open(dir.root + "/cache/f", oo);
  ASSERT_TRUE(ff.ok());
  EXPECT_EQ((*ff)->native_fd(), -1);
  fs.FailReads(EIO, 1);
  IoRequest r1{IoRequest::Op::kRead, ff->get(), 0, buf.data(), 4096};
  IoRequest r2{IoRequest::Op::kRead, ff->get(), 0, buf.data() + 4096, 4096};
  IoRequest both[] = {r1, r2};
  engine->Run(both);
  EXPECT_EQ(both[0].error + both[1].error, EIO);  // exactly one failed
  fs.FailWrites(ENOSPC);
  IoRequest w{IoRequest::Op::kWrite, ff->get(), 0, buf.data(), 4096};
  engine->Run({&w, 1});
  EXPECT_EQ(w.error, ENOSPC);
  EXPECT_EQ(w.done_bytes, 0u);
}

INSTANTIATE_TEST_SUITE_P(Engines, IoEngineTest,
                         ::testing::Values(Kind::kIoUring, Kind::kThreadPool),
                         [](const auto& info) {
                           return info.param == Kind::kIoUring ? "io_uring" : "threads";
                         });

TEST(IoEngineAutoTest, AutoPicksAWorkingEngine) {
  IoEngineOptions o;
  o.log = [](std::string_view) {};
  Result<std::unique_ptr<IoEngine>> e = CreateIoEngine(o);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE((*e)->name() == "io_uring" || (*e)->name() == "threads");
}

}  // namespace
}  // namespace kvtier::storage
