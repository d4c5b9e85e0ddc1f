// ConsoleServiceProcess: `cellink console serve` as a real process for the
// console tests, plus what a test does with a console: open its PTY through
// the stable symlink, read it until a pattern shows up, read its status file
// and its log.
//
// Threading: one test thread.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cellink/linux-uio/unique_fd.hpp"
#include "process.hpp"

namespace cellink::integration {

inline std::string read_whole_file(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

class ConsoleServiceProcess {
 public:
  ConsoleServiceProcess(std::filesystem::path config, std::filesystem::path runtime_dir)
      : config_(std::move(config)), runtime_dir_(std::move(runtime_dir)) {}

  // Starts the service and waits until `cells` have a status file.
  void start(const std::vector<std::string>& cells, std::chrono::milliseconds timeout) {
    process_ = std::make_unique<Process>(
        std::vector<std::string>{CELLINK_BIN, "console", "serve", "--config", config_.string(),
                                 "--runtime-dir", runtime_dir_.string()});
    for (const std::string& cell : cells) (void)wait_for_state(cell, "", timeout);
  }

  [[nodiscard]] Process& process() { return *process_; }
  [[nodiscard]] bool started() const noexcept { return process_ != nullptr; }
  [[nodiscard]] std::filesystem::path console_dir() const { return runtime_dir_ / "console"; }
  [[nodiscard]] std::filesystem::path log_path(const std::string& cell) const {
    return console_dir() / (cell + ".log");
  }

  [[nodiscard]] nlohmann::json status(const std::string& cell) const {
    return nlohmann::json::parse(read_whole_file(console_dir() / (cell + ".status.json")), nullptr,
                                 false);
  }

  // Waits until the console's state starts with `prefix`; returns the last
  // state seen (a failure is recorded when it never matched).
  std::string wait_for_state(const std::string& cell, const std::string& prefix,
                             std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string state;
    while (std::chrono::steady_clock::now() < deadline) {
      const nlohmann::json doc = status(cell);
      if (doc.is_object() && doc.contains("state")) {
        state = doc["state"].get<std::string>();
        if (state.starts_with(prefix)) return state;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    ADD_FAILURE() << "console '" << cell << "' never reached state '" << prefix
                  << "'; last state: '" << state << "'";
    return state;
  }

  // The cell's PTY, through its stable symlink.
  [[nodiscard]] linux_uio::UniqueFd open_pty(const std::string& cell) const {
    const std::filesystem::path link = console_dir() / (cell + ".pty");
    linux_uio::UniqueFd fd{::open(link.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)};
    EXPECT_TRUE(fd) << "cannot open " << link;
    return fd;
  }

 private:
  std::filesystem::path config_;
  std::filesystem::path runtime_dir_;
  std::unique_ptr<Process> process_;
};

// Reads a PTY, keeping everything read, until a regex matches it.
class PtyReader {
 public:
  explicit PtyReader(int fd) : fd_(fd) {}

  // True when `pattern` matched everything read so far before the deadline.
  bool wait_for(const std::string& pattern, std::chrono::milliseconds timeout) {
    const std::regex wanted(pattern);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (std::regex_search(seen_.substr(from_), wanted)) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      read_some(std::chrono::milliseconds{50});
    }
  }

  // Writes `text` to the PTY (the keys a user types).
  bool type(const std::string& text) {
    return ::write(fd_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  }

  // Later wait_for() calls look only at what arrives from now on.
  void forget_seen() noexcept { from_ = seen_.size(); }
  [[nodiscard]] const std::string& seen() const noexcept { return seen_; }

  // Reads what is there within `timeout`; returns the bytes read.
  std::size_t read_some(std::chrono::milliseconds timeout) {
    pollfd entry{fd_, POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(timeout.count())) <= 0) return 0;
    char chunk[65536];
    const ssize_t got = ::read(fd_, chunk, sizeof chunk);
    if (got <= 0) return 0;
    seen_.append(chunk, static_cast<std::size_t>(got));
    return static_cast<std::size_t>(got);
  }

 private:
  int fd_;
  std::string seen_;
  std::size_t from_ = 0;
};

}  // namespace cellink::integration
