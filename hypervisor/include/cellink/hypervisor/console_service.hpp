// ConsoleService: the host side of every configured console, on one loop.
//
// `cellink console serve` runs one. It claims RUNTIME_DIR/console/
// (serve.lock, flock'ed: one service per runtime dir) and keeps there, per
// console cell:
//
//   <cell>.pty           symlink to the cell's PTY (/dev/pts/N)
//   <cell>.sock          the viewer socket (`cellink console CELL`)
//   <cell>.status.json   the console's status, rewritten (write + rename) on
//                        a change: at once for viewers, state and PTY
//                        changes, within status_interval for byte counts
//
// and the logs in `log_dir` (default RUNTIME_DIR/console). It removes the
// first three and the lock when it stops; the logs stay.
//
// A back end plugs in through console(cell) (the interface is in
// console.hpp) and loop() (its own fds: loop().watch(fd, EPOLLIN, ...);
// periodic work: loop().every(period, ...)). Everything runs on the thread
// that calls run().
//
// Threading: construct, set up the back end, then run() on one thread;
// request_stop() from any thread. SIGTERM and SIGINT stop it when
// handle_signals (blocked while run() runs and taken through a signalfd).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cellink/hypervisor/console.hpp"
#include "cellink/hypervisor/console_loop.hpp"
#include "cellink/hypervisor/pid_lock.hpp"
#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::hypervisor {

struct ConsoleServiceOptions {
  std::filesystem::path runtime_dir;
  std::filesystem::path log_dir;  // empty: RUNTIME_DIR/console
  std::vector<ConsoleSettings> consoles;
  std::size_t viewer_queue_limit = ConsoleViewers::kDefaultQueueLimit;
  std::size_t pty_pending_limit = ConsolePty::kDefaultPendingLimit;
  std::chrono::milliseconds status_interval{250};
  bool handle_signals = true;
};

class ConsoleService {
 public:
  // Claims the console directory and opens every console. Throws
  // std::runtime_error with a remedy (another service holds the directory,
  // a duplicate cell, a path too long, a PTY that cannot be opened);
  // nothing is left behind then.
  explicit ConsoleService(ConsoleServiceOptions options);
  ~ConsoleService();
  ConsoleService(const ConsoleService&) = delete;
  ConsoleService& operator=(const ConsoleService&) = delete;

  // Throws std::out_of_range naming the cell and the consoles there are.
  [[nodiscard]] Console& console(std::string_view cell);
  [[nodiscard]] std::vector<std::string> cells() const;
  [[nodiscard]] ConsoleLoop& loop() noexcept { return loop_; }
  [[nodiscard]] const std::filesystem::path& console_dir() const noexcept { return console_dir_; }

  // Serves until request_stop() or a signal.
  void run();
  void request_stop() noexcept { loop_.stop(); }

 private:
  void claim();
  void release() noexcept;
  void changed(std::size_t index, bool urgent);
  void write_status(std::size_t index);
  void write_all_status();

  ConsoleServiceOptions options_;
  std::filesystem::path console_dir_;
  ConsoleLoop loop_;
  PidLock lock_;
  std::vector<std::unique_ptr<Console>> consoles_;
  std::vector<bool> dirty_;
};

}  // namespace cellink::hypervisor
