// ConsoleLog: timestamps, rotation, errors.
#include "cellink/hypervisor/console_log.hpp"

#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>

#include <gtest/gtest.h>

namespace cellink::hypervisor {
namespace {

namespace fs = std::filesystem;
using Clock = ConsoleLog::Clock;

class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/cellink-console-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

// 2026-12-08T01:02:03.456Z
Clock::time_point sample_time() {
  using namespace std::chrono;
  return sys_days{year{2026} / 12 / 8} + hours{1} + minutes{2} + seconds{3} + milliseconds{456};
}

const std::regex kStampedLine(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z .*$)");

TEST(ConsoleLog, TimestampIsUtcIso8601WithMilliseconds) {
  EXPECT_EQ(ConsoleLog::timestamp(sample_time()), "2026-12-08T01:02:03.456Z ");
}

TEST(ConsoleLog, EachLineGetsTheTimeItsFirstByteArrived) {
  TempDir dir;
  ConsoleLog log({dir.path(), "rt"});
  const Clock::time_point first = sample_time();
  const Clock::time_point later = first + std::chrono::seconds(5);
  log.write(bytes_of("boot: hel"), first);
  log.write(bytes_of("lo\r\nsecond line\r\nthi"), later);
  log.write(bytes_of("rd\n"), later + std::chrono::seconds(1));
  EXPECT_EQ(read_file(dir.path() / "rt.log"),
            "2026-12-08T01:02:03.456Z boot: hello\r\n"
            "2026-12-08T01:02:08.456Z second line\r\n"
            "2026-12-08T01:02:08.456Z third\n");
  EXPECT_TRUE(log.error().empty());
}

TEST(ConsoleLog, RotatesBySizeKeepingTheConfiguredNumberOfFiles) {
  TempDir dir;
  constexpr std::uint64_t kLimit = 1000;
  ConsoleLog log({dir.path(), "rt", kLimit, 3});
  std::string everything;
  for (int line = 0; line < 200; ++line) {
    const std::string text = "line " + std::to_string(line) + " of the guest's output\n";
    everything += text;
    log.write(bytes_of(text));
  }
  EXPECT_GT(log.rotations(), 2u);
  EXPECT_TRUE(fs::exists(dir.path() / "rt.log"));
  EXPECT_TRUE(fs::exists(dir.path() / "rt.log.1"));
  EXPECT_TRUE(fs::exists(dir.path() / "rt.log.2"));
  EXPECT_FALSE(fs::exists(dir.path() / "rt.log.3"));
  // Oldest first: .2, .1, then the current file; whole stamped lines, each
  // file within the limit, and together the newest lines in order.
  std::string kept;
  for (const char* name : {"rt.log.2", "rt.log.1", "rt.log"}) {
    const std::string text = read_file(dir.path() / name);
    EXPECT_LE(text.size(), kLimit) << name;
    EXPECT_EQ(text.back(), '\n') << name;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      EXPECT_TRUE(std::regex_match(line, kStampedLine)) << name << ": " << line;
      kept += line.substr(25) + "\n";
    }
  }
  EXPECT_TRUE(everything.ends_with(kept)) << kept;
  EXPECT_TRUE(kept.ends_with("line 199 of the guest's output\n"));
}

TEST(ConsoleLog, SplitsOnlyALineLongerThanTheLimit) {
  TempDir dir;
  ConsoleLog log({dir.path(), "rt", 100, 5});
  log.write(bytes_of(std::string(250, 'x') + "\n"));
  std::uint64_t total = 0;
  for (std::uint32_t index = 0; index < 5; ++index) {
    const fs::path file = log.file(index);
    if (!fs::exists(file)) continue;
    EXPECT_LE(fs::file_size(file), 100u) << file;
    total += fs::file_size(file);
  }
  EXPECT_EQ(total, 25u + 251u);  // one stamp, the line, the newline
}

TEST(ConsoleLog, OneFileMeansRotationTruncates) {
  TempDir dir;
  ConsoleLog log({dir.path(), "rt", 64, 1});
  for (int i = 0; i < 10; ++i) log.write(bytes_of("0123456789\n"));
  EXPECT_LE(fs::file_size(dir.path() / "rt.log"), 64u);
  EXPECT_FALSE(fs::exists(dir.path() / "rt.log.1"));
}

TEST(ConsoleLog, AppendsToTheLogOfAnEarlierRun) {
  TempDir dir;
  ConsoleLog({dir.path(), "rt"}).write(bytes_of("first run\n"));
  ConsoleLog second({dir.path(), "rt"});
  second.write(bytes_of("second run\n"));
  const std::string text = read_file(dir.path() / "rt.log");
  EXPECT_NE(text.find("first run\n"), std::string::npos);
  EXPECT_NE(text.find("second run\n"), std::string::npos);
}

TEST(ConsoleLog, AnUnwritableDirectoryIsReportedNotThrown) {
  TempDir dir;
  const fs::path not_a_dir = dir.path() / "file";
  std::ofstream(not_a_dir) << "x";
  ConsoleLog log({not_a_dir / "logs", "rt"});
  EXPECT_NE(log.error().find((not_a_dir / "logs").string()), std::string::npos) << log.error();
  for (int i = 0; i < 1000; ++i) log.write(bytes_of("lost\n"));  // no throw, no flood
  EXPECT_FALSE(log.error().empty());
}

}  // namespace
}  // namespace cellink::hypervisor
