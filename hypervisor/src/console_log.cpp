// ConsoleLog: timestamped lines, rotation by size (contract in the header).
#include "cellink/hypervisor/console_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace cellink::hypervisor {

ConsoleLog::ConsoleLog(ConsoleLogOptions options)
    : options_(std::move(options)), path_(options_.dir / (options_.cell + ".log")) {
  options_.files = std::max<std::uint32_t>(options_.files, 1);
  options_.max_bytes = std::max<std::uint64_t>(options_.max_bytes, 1);
  (void)open();
}

std::filesystem::path ConsoleLog::file(std::uint32_t index) const {
  if (index == 0) return path_;
  return options_.dir / fmt::format("{}.log.{}", options_.cell, index);
}

std::string ConsoleLog::timestamp(Clock::time_point when) {
  const auto since_epoch = when.time_since_epoch();
  const auto seconds = std::chrono::floor<std::chrono::seconds>(since_epoch);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds);
  const std::time_t time = seconds.count();
  std::tm utc{};
  ::gmtime_r(&time, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z ", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                     millis.count());
}

bool ConsoleLog::open() {
  std::error_code error;
  std::filesystem::create_directories(options_.dir, error);
  if (error) {
    fail(fmt::format("cannot create the log directory {}", options_.dir.string()), error.value());
    return false;
  }
  fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!fd_) {
    fail(fmt::format("cannot open {}", path_.string()), errno);
    return false;
  }
  struct stat info {};
  size_ = ::fstat(fd_.get(), &info) == 0 ? static_cast<std::uint64_t>(info.st_size) : 0;
  return true;
}

void ConsoleLog::rotate() {
  fd_.reset();
  std::error_code ignored;
  if (options_.files == 1) {
    std::filesystem::remove(path_, ignored);
  } else {
    std::filesystem::remove(file(options_.files - 1), ignored);
    for (std::uint32_t index = options_.files - 1; index > 0; --index) {
      if (std::filesystem::exists(file(index - 1), ignored)) {
        std::filesystem::rename(file(index - 1), file(index), ignored);
      }
    }
  }
  ++rotations_;
  size_ = 0;
  (void)open();
}

void ConsoleLog::fail(const std::string& what, int error) {
  if (!error_.empty()) return;  // reported once, until a write succeeds again
  error_ = fmt::format("{}: {}", what, std::system_category().message(error));
  spdlog::error("console '{}': log: {}; log output is lost until it works again", options_.cell,
                error_);
}

void ConsoleLog::write_out(const std::string& text) {
  if (text.empty()) return;
  if (!fd_ && !open()) return;
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t wrote = ::write(fd_.get(), text.data() + done, text.size() - done);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      fail(fmt::format("cannot write {}", path_.string()), wrote < 0 ? errno : ENOSPC);
      return;
    }
    done += static_cast<std::size_t>(wrote);
    size_ += static_cast<std::uint64_t>(wrote);
  }
  if (!error_.empty()) {
    spdlog::info("console '{}': log {} works again", options_.cell, path_.string());
    error_.clear();
  }
}

void ConsoleLog::write(std::span<const std::byte> bytes, Clock::time_point now) {
  const std::string_view input(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const std::uint64_t limit = options_.max_bytes;
  std::string pending;
  std::string stamp;
  std::size_t at = 0;
  while (at < input.size()) {
    const std::size_t newline = input.find('\n', at);
    const std::size_t end = newline == std::string_view::npos ? input.size() : newline + 1;
    const bool starts_line = at_line_start_;
    std::string segment;
    if (starts_line) {
      if (stamp.empty()) stamp = timestamp(now);
      segment = stamp;
    }
    segment.append(input.substr(at, end - at));
    at_line_start_ = input[end - 1] == '\n';
    at = end;

    // A whole line that does not fit starts the next file.
    const std::uint64_t used = size_ + pending.size();
    if (starts_line && used > 0 && used + segment.size() > limit) {
      write_out(pending);
      pending.clear();
      rotate();
    }
    // Only a line longer than the limit, or one that arrived in pieces
    // across it, is split.
    while (size_ + pending.size() + segment.size() > limit) {
      const std::uint64_t room = limit - std::min(limit, size_ + pending.size());
      pending.append(segment, 0, room);
      segment.erase(0, room);
      write_out(pending);
      pending.clear();
      rotate();
    }
    pending += segment;
  }
  write_out(pending);
}

}  // namespace cellink::hypervisor
