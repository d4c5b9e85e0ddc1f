// Process: a child program driven over pipes, for the integration tests.
//
// The child runs in its own process group with stdin, stdout and stderr on
// pipes. A reader thread keeps both output pipes drained (a chatty daemon
// never blocks on a full pipe) and splits them into lines. Tests wait for a
// line with expect_line(): it returns as soon as a matching line arrives, and
// when the timeout passes or the output ends first it throws
// ExpectationFailed whose what() holds everything the process printed. The
// destructor SIGKILLs the process group and reaps the child, so no test
// leaves a process behind, whatever it throws.
//
// TempDir: a fresh directory under /tmp, removed recursively on destruction.
//
// Threading: one test thread drives a Process; the reader thread only
// appends lines under the mutex.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::integration {

using linux_uio::UniqueFd;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// The longest a test waits for any one event; the suite fails, never hangs.
inline constexpr milliseconds kEventTimeout{5000};

// A wait that did not see its event; what() says what and shows the output.
class ExpectationFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `any` searches stdout and stderr; a process's output ends when both do.
enum class Stream { out, err, any };

class Process {
 public:
  // Starts argv[0] (a path) with `argv`. Throws std::system_error if it
  // cannot be spawned.
  explicit Process(std::vector<std::string> argv);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // The command line, for messages.
  [[nodiscard]] std::string command() const;

  // Waits for the first not yet consumed line of `stream` that matches the
  // ECMAScript regex `pattern` (std::regex_search), marks it consumed and
  // returns it. Lines are consumed out of order: skipped lines stay
  // available to later calls.
  std::string expect_line(const std::string& pattern, milliseconds timeout = kEventTimeout,
                          Stream stream = Stream::out);
  // Every not yet consumed matching line, consumed now. Never waits.
  std::vector<std::string> take_lines(const std::string& pattern, Stream stream = Stream::out);
  // Whether any line, consumed or not, matches. Never waits.
  [[nodiscard]] bool saw_line(const std::string& pattern, Stream stream = Stream::out) const;
  // Everything printed so far on `stream` (stdout first for Stream::any).
  [[nodiscard]] std::string output(Stream stream) const;
  // Both streams, labelled, for failure messages.
  [[nodiscard]] std::string transcript() const;

  void send_line(const std::string& line);
  void close_stdin() noexcept;
  // Sends `signal` to the process (not its group). No-op once reaped.
  void kill(int signal) noexcept;
  // Waits for the child to exit and reaps it. Returns the exit code, or 128
  // + the signal number, like a shell. Throws ExpectationFailed on timeout.
  int wait_exit(milliseconds timeout = kEventTimeout);
  [[nodiscard]] bool reaped() const noexcept { return exit_status_.has_value(); }
  // Waits until both output pipes reached end of file (every holder of the
  // write ends, grandchildren included, exited). False on timeout.
  bool wait_for_output_end(milliseconds timeout);

 private:
  struct Line {
    std::string text;
    bool consumed = false;
  };
  struct Capture {
    std::vector<Line> lines;
    std::string partial;  // bytes after the last newline
    bool ended = false;
  };

  void read_output();
  void append(Capture& capture, const char* bytes, std::size_t size);
  [[nodiscard]] std::string transcript_locked() const;
  // The captures a Stream stands for: one, or both for Stream::any.
  [[nodiscard]] std::vector<Capture*> captures(Stream stream);
  [[nodiscard]] std::vector<const Capture*> captures(Stream stream) const;

  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  UniqueFd pidfd_;
  UniqueFd stdin_;
  UniqueFd stdout_read_;
  UniqueFd stderr_read_;
  UniqueFd wake_read_;  // the destructor stops the reader thread through this pipe
  UniqueFd wake_write_;

  // Protects stdout_ and stderr_; orders appended lines before their waiters.
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  Capture stdout_;
  Capture stderr_;
  std::thread reader_;
};

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  // Writes `text` to path()/name and returns the file's path.
  std::filesystem::path write_file(const std::string& name, const std::string& text) const;

 private:
  std::filesystem::path path_;
};

// Runs a program to completion (at most `timeout`) and returns what it did.
struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
RunResult run(std::vector<std::string> argv, milliseconds timeout = milliseconds(10000));

}  // namespace cellink::integration
