// QemuVm: a QEMU process of `cellink demo` and its console, shared by act 4
// (the Linux guest, demo_guest.cpp) and act 5 (the bare-metal inmate,
// demo_inmate.cpp). The console is QEMU's stdout and stderr; QEMU's stdin
// is /dev/null, so -nographic never puts the terminal in raw mode.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "demo_steps.hpp"

namespace cellink::cli::demo {

// The path of `program` in a directory of $PATH, or empty.
[[nodiscard]] std::string find_on_path(std::string_view program);

// The ivshmem device of cell "guest" on link 'demo' of the embedded config
// under `dir`, as `cellink qemu-args guest` prints it: -chardev ... -device
// ivshmem-doorbell,...
[[nodiscard]] std::vector<std::string> guest_cell_devices(const std::filesystem::path& dir);

// A QEMU process and its console. A thread reads the console, keeps every
// line for a failure report and shows, as they come, the lines that
// contain one of `shown` (from that marker on) as `who`, with the seconds
// since QEMU started. The destructor kills QEMU if it still runs, so no
// exit path leaves it behind.
//
// Threading: one demo thread calls the methods; the reader thread only
// appends lines. `who` must outlive the QemuVm.
class QemuVm {
 public:
  QemuVm(const std::vector<std::string>& argv, std::vector<std::string> shown, const char* who);
  QemuVm(const QemuVm&) = delete;
  QemuVm& operator=(const QemuVm&) = delete;
  ~QemuVm();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] double seconds() const;

  // The first console line starting with `prefix`, or nullopt when the
  // console ended or `deadline` passed first.
  std::optional<std::string> wait_line(std::string_view prefix, Clock::time_point deadline);
  [[nodiscard]] bool console_ended() const;

  // Waits until `deadline` for QEMU to exit; returns its exit status, or
  // nullopt if it still runs.
  std::optional<int> wait_exit(Clock::time_point deadline);
  // SIGTERM, then SIGKILL after `grace`; returns the exit status.
  int stop(milliseconds grace);

  void print_console() const;

 private:
  void read_console(int fd);
  void add_line(std::string line);

  pid_t pid_ = -1;
  Clock::time_point started_;
  const std::vector<std::string> shown_;
  const char* who_;
  // Protects lines_ and ended_; the reader thread appends, the demo waits.
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
  bool ended_ = false;
  std::thread reader_;  // last: it uses the members above
};

}  // namespace cellink::cli::demo
