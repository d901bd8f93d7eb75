// Durable files (schema/durable.h): what keys, captures and results files are written with.
#include "schema/durable.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "tests/contains.h"
#include "tests/support.h"
#include "tools/process.h"

namespace tally {
namespace {

namespace fs = std::filesystem;

class DurableTest : public ::testing::Test {
 protected:
  test::TempDir temp_;
  const fs::path& dir_ = temp_.path();
};

// An append file is created with its mode, keeps what was there, and holds each append whole.
TEST_F(DurableTest, AppendFileCreatesWithItsModeAndAppendsWholeLines) {
  const fs::path path = dir_ / "results.jsonl";
  {
    auto file = AppendFile::Open(path, 0600, "the results file");
    ASSERT_TRUE(file.ok()) << file.message();
    ASSERT_TRUE(file->Append("one\n").ok());
  }
  EXPECT_EQ(FileMode(path), 0600u);
  auto again = AppendFile::Open(path, 0600, "the results file");
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(again->Append(std::string(100000, 'x') + "\n").ok());
  EXPECT_EQ(ReadText(path), "one\n" + std::string(100000, 'x') + "\n");

  auto missing = AppendFile::Open(dir_ / "no" / "such.jsonl", 0600, "the results file");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.message(), "cannot open the results file " +
                                   (dir_ / "no" / "such.jsonl").string() +
                                   ": No such file or directory");
}

// Without replace, an existing file is never clobbered and nothing is left behind; with it, the
// new contents take its place whole; a temporary file left by an interrupted run is no obstacle.
TEST_F(DurableTest, AtomicWriteReplacesOnlyWhenAskedAndLeavesNoTemporaryFile) {
  const fs::path target = dir_ / "alice.key";
  ASSERT_TRUE(WriteFileAtomically(target, AsBytes("first"), 0644, false).ok());
  Status again = WriteFileAtomically(target, AsBytes("second"), 0644, false);
  EXPECT_EQ(again.message(), target.string() + " exists; use --force to replace it");
  EXPECT_EQ(ReadText(target), "first");
  std::ofstream(dir_ / ".alice.key.tmp") << "leftover";  // as an interrupted run leaves it
  ASSERT_TRUE(WriteFileAtomically(target, AsBytes("second"), 0640, true).ok());
  EXPECT_EQ(ReadText(target), "second");
  EXPECT_EQ(FileMode(target), 0640u);
  EXPECT_FALSE(fs::exists(dir_ / ".alice.key.tmp"));
}

// Pieces are written in order and whole, even through a pipe that takes them in parts.
TEST_F(DurableTest, WriteAllWritesEveryPieceInOrder) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string a(40000, 'a'), b = "bb", c(30000, 'c');
  std::string read;
  std::thread reader([&] {
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) read.append(buf, n);
  });
  EXPECT_TRUE(WriteAll(fds[1], {AsBytes(a), AsBytes(""), AsBytes(b), AsBytes(c)}, "a pipe").ok());
  ::close(fds[1]);
  reader.join();
  ::close(fds[0]);
  EXPECT_EQ(read, a + b + c);
  EXPECT_EQ(WriteAll(fds[1], AsBytes(a), "a closed pipe").message(),
            "cannot write a closed pipe: Bad file descriptor");
}

}  // namespace
}  // namespace tally
