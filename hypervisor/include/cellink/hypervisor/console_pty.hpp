// ConsolePty: the pseudo-terminal of one cell's console, and a stable
// symlink to it.
//
// The service holds the master (non-blocking, raw mode: no echo, no line
// editing, no CR/LF translation), and `link` (e.g.
// RUNTIME_DIR/console/<cell>.pty) points to the slave, /dev/pts/N. Programs
// open the link (screen, minicom, picocom, a test): what they write is guest
// input, what they read is guest output.
//
// Output: write() never blocks. What the PTY does not take at once waits in
// a bounded queue (`pending_limit`), flushed by flush() when the master is
// writable again; what does not fit there either is dropped for the PTY
// only (dropped() counts it; the log and the scrollback keep it). While no
// program has the slave open, the kernel still buffers about 20 KiB.
//
// Hang-up: when the last program closes the slave, the master reads EIO and
// polls HUP for ever. read() then reports `hung_up`, and the owner calls
// reopen(): a new PTY (stale output of the old one is gone), the symlink
// replaced atomically (rename over it), the terminal size carried over.
// So the link stays valid; /dev/pts/N may change, which is why programs
// should open the link.
//
// The destructor removes the symlink (if it still points to this PTY) and
// closes the master, which hangs up any program still on the slave.
//
// Threading: one thread at a time (the console loop).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>

#include "cellink/hypervisor/console_viewer_protocol.hpp"
#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::hypervisor {

class ConsolePty {
 public:
  static constexpr std::size_t kDefaultPendingLimit = std::size_t{64} * 1024;

  // Opens a PTY and points `link` to it. Throws std::runtime_error (naming
  // the path and the errno text) when either fails.
  explicit ConsolePty(std::filesystem::path link, std::size_t pending_limit = kDefaultPendingLimit);
  ~ConsolePty();
  ConsolePty(const ConsolePty&) = delete;
  ConsolePty& operator=(const ConsolePty&) = delete;

  [[nodiscard]] int master_fd() const noexcept { return master_.get(); }
  [[nodiscard]] const std::string& slave_path() const noexcept { return slave_path_; }
  [[nodiscard]] const std::filesystem::path& link() const noexcept { return link_; }

  // Queues guest output; what does not fit in the queue is dropped.
  void write(std::span<const std::byte> bytes);
  // Writes queued output; call when the master is writable.
  void flush();
  // True while output waits (watch the master for writability).
  [[nodiscard]] bool has_pending() const noexcept { return !pending_.empty(); }

  struct ReadResult {
    std::size_t bytes = 0;  // typed bytes stored in `into`
    bool hung_up = false;   // the last program closed the slave: reopen()
  };
  [[nodiscard]] ReadResult read(std::span<std::byte> into);

  // A new PTY behind the same link. Throws like the constructor; the old
  // one stays in place then.
  void reopen();

  // The window size programs on the slave see (TIOCSWINSZ on the master).
  void set_size(console_protocol::TerminalSize size);
  // TIOCGWINSZ; nullopt when 0x0 (nobody set it).
  [[nodiscard]] std::optional<console_protocol::TerminalSize> size() const;

  [[nodiscard]] std::uint64_t dropped() const noexcept { return dropped_; }
  [[nodiscard]] std::uint64_t reopens() const noexcept { return reopens_; }

 private:
  void open_master();

  std::filesystem::path link_;
  std::size_t pending_limit_;
  linux_uio::UniqueFd master_;
  std::string slave_path_;
  std::string pending_;
  std::uint64_t dropped_ = 0;
  std::uint64_t reopens_ = 0;
};

}  // namespace cellink::hypervisor
