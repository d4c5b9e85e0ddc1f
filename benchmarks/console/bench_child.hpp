// BenchChild: a process console_bench starts (`cellink daemon`, `cellink
// console serve`, QEMU), with its stdin, stdout and stderr where the row
// wants them. Nothing outlives the bench: the child gets PR_SET_PDEATHSIG
// (SIGKILL when the bench dies) and a process group of its own, and the
// destructor signals the group, waits, SIGKILLs it and reaps the child.
//
// Threading: the main thread only (PR_SET_PDEATHSIG fires when the thread
// that forked exits).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <string>
#include <vector>

namespace cellink::bench::console {

struct ChildSpec {
  std::vector<std::string> argv;  // argv[0] is the program's path
  std::string log_file;           // stdout (unless stdout_fd) and stderr; empty: /dev/null
  int stdin_fd = -1;              // becomes stdin; -1: /dev/null
  int stdout_fd = -1;             // becomes stdout; -1: log_file
  int stop_signal = SIGTERM;      // SIGTERM: QEMU restores what -nographic changed
};

class BenchChild {
 public:
  // Throws std::runtime_error when fork fails; a failed exec exits with 127.
  explicit BenchChild(const ChildSpec& spec);
  BenchChild(const BenchChild&) = delete;
  BenchChild& operator=(const BenchChild&) = delete;
  ~BenchChild();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // True while it runs; once it exited, `status` is waitpid's.
  [[nodiscard]] bool running();
  [[nodiscard]] int status() const noexcept { return status_; }
  // stop_signal to the group, up to `grace`, then SIGKILL; reaps it.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  pid_t pid_ = -1;
  int stop_signal_;
  int status_ = 0;
  bool reaped_ = false;
};

// Gives the bench (the reader of every stream) the niceness `nice`, e.g.
// -10, while every child keeps the niceness the bench started with: a
// reader starved by QEMU and the console service on a small machine would
// make the PTY drop bytes (docs/console.md: the service never stalls the
// guest for a slow reader). False with errno when not permitted.
bool raise_reader_priority(int nice);

// "exit status 1", "signal 9".
[[nodiscard]] std::string describe_exit(int status);
// The executable `name` in $PATH; empty when there is none.
[[nodiscard]] std::string find_program(const std::string& name);
// Runs `argv` to its end (10 s at most) and returns its stdout; throws
// std::runtime_error with its output when it fails.
[[nodiscard]] std::string run_to_end(const std::vector<std::string>& argv);

}  // namespace cellink::bench::console
