// ConsoleLog: the log file of one cell's console, with timestamps and
// size-based rotation.
//
// Every line starts with the UTC time its first byte arrived, ISO 8601 with
// milliseconds and a space: "2026-12-08T01:32:07.123Z ". The bytes follow
// unchanged (a '\r' before the '\n' stays). A line is what ends with '\n'.
//
// Files: DIR/<cell>.log is current; at rotation it becomes <cell>.log.1,
// .1 becomes .2 and so on, and the oldest beyond `files` is removed. No
// file grows beyond `max_bytes`: a line that would cross the limit starts
// the next file, and only a single line longer than `max_bytes` is split.
// A service that restarts appends to the existing <cell>.log.
//
// Cost: one write(2) per write() call (two or more only when it rotates),
// to a file opened O_APPEND; nothing is buffered in memory, so a crash loses
// nothing that write() was given. Errors (a full disk, a removed directory)
// are logged once with spdlog and kept in error() until a write succeeds
// again; the bytes of a failed write are lost for the log only.
//
// Threading: one thread at a time (the console loop).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::hypervisor {

struct ConsoleLogOptions {
  std::filesystem::path dir;
  std::string cell;
  std::uint64_t max_bytes = std::uint64_t{1} << 20;
  // The current log plus the rotated ones kept: 3 keeps .log, .log.1, .log.2.
  // At least 1 (then rotation truncates).
  std::uint32_t files = 3;
};

class ConsoleLog {
 public:
  using Clock = std::chrono::system_clock;

  // Creates DIR if needed and opens DIR/<cell>.log for appending. A failure
  // is not thrown: it is reported through error() and retried on each write.
  explicit ConsoleLog(ConsoleLogOptions options);

  void write(std::span<const std::byte> bytes, Clock::time_point now = Clock::now());

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  // DIR/<cell>.log.<index>; index 0 is path().
  [[nodiscard]] std::filesystem::path file(std::uint32_t index) const;
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] std::uint64_t rotations() const noexcept { return rotations_; }
  // Empty while the log works; else what failed, with the path and errno text.
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

  // "2026-12-08T01:32:07.123Z ", as the log writes it.
  [[nodiscard]] static std::string timestamp(Clock::time_point when);

 private:
  bool open();
  void rotate();
  void write_out(const std::string& text);
  void fail(const std::string& what, int error);

  ConsoleLogOptions options_;
  std::filesystem::path path_;
  linux_uio::UniqueFd fd_;
  std::uint64_t size_ = 0;
  std::uint64_t rotations_ = 0;
  bool at_line_start_ = true;
  std::string error_;
};

}  // namespace cellink::hypervisor
