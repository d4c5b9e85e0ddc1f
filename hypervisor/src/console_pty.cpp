// ConsolePty: PTY master, symlink, bounded output queue (contract in the
// header).
#include "cellink/hypervisor/console_pty.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

namespace cellink::hypervisor {
namespace {

std::string errno_text(int error) {
  return std::system_category().message(error);
}

}  // namespace

ConsolePty::ConsolePty(std::filesystem::path link, std::size_t pending_limit)
    : link_(std::move(link)), pending_limit_(pending_limit) {
  open_master();
}

ConsolePty::~ConsolePty() {
  std::error_code error;
  if (std::filesystem::read_symlink(link_, error) == slave_path_ && !error) {
    std::filesystem::remove(link_, error);
  }
}

void ConsolePty::open_master() {
  linux_uio::UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master) throw std::runtime_error(fmt::format("posix_openpt: {}", errno_text(errno)));
  char name[128];
  if (::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0 ||
      ::ptsname_r(master.get(), name, sizeof(name)) != 0) {
    throw std::runtime_error(fmt::format("cannot unlock a new PTY: {}", errno_text(errno)));
  }
  const int flags = ::fcntl(master.get(), F_GETFL);
  if (flags < 0 || ::fcntl(master.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    throw std::runtime_error(
        fmt::format("cannot make the PTY non-blocking: {}", errno_text(errno)));
  }
  // Termios calls on a master act on its slave: raw mode for the programs
  // that open it, so guest bytes pass unchanged in both directions.
  termios mode{};
  if (::tcgetattr(master.get(), &mode) != 0) {
    throw std::runtime_error(fmt::format("tcgetattr on {}: {}", name, errno_text(errno)));
  }
  ::cfmakeraw(&mode);
  if (::tcsetattr(master.get(), TCSANOW, &mode) != 0) {
    throw std::runtime_error(fmt::format("tcsetattr on {}: {}", name, errno_text(errno)));
  }

  // The link is replaced atomically: a program opening it gets the old PTY
  // or the new one, never nothing.
  std::filesystem::path staged = link_;
  staged += fmt::format(".new.{}", ::getpid());
  std::error_code error;
  std::filesystem::remove(staged, error);
  if (::symlink(name, staged.c_str()) != 0) {
    throw std::runtime_error(
        fmt::format("cannot create the symlink {}: {}", staged.string(), errno_text(errno)));
  }
  if (::rename(staged.c_str(), link_.c_str()) != 0) {
    const int saved = errno;
    std::filesystem::remove(staged, error);
    throw std::runtime_error(fmt::format("cannot rename {} to {}: {}", staged.string(),
                                         link_.string(), errno_text(saved)));
  }
  master_ = std::move(master);
  slave_path_ = name;
}

void ConsolePty::reopen() {
  const std::optional<console_protocol::TerminalSize> kept = size();
  open_master();  // closes the old master only once the new one is in place
  pending_.clear();
  ++reopens_;
  if (kept) set_size(*kept);
}

void ConsolePty::write(std::span<const std::byte> bytes) {
  const auto* data = reinterpret_cast<const char*>(bytes.data());
  std::size_t left = bytes.size();
  if (pending_.empty()) {
    const ssize_t wrote = ::write(master_.get(), data, left);
    if (wrote > 0) {
      data += wrote;
      left -= static_cast<std::size_t>(wrote);
    }
  }
  const std::size_t room = pending_limit_ - std::min(pending_limit_, pending_.size());
  const std::size_t kept = std::min(room, left);
  pending_.append(data, kept);
  dropped_ += left - kept;
}

void ConsolePty::flush() {
  while (!pending_.empty()) {
    const ssize_t wrote = ::write(master_.get(), pending_.data(), pending_.size());
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) return;  // EAGAIN: wait for writability again
    pending_.erase(0, static_cast<std::size_t>(wrote));
  }
}

ConsolePty::ReadResult ConsolePty::read(std::span<std::byte> into) {
  for (;;) {
    const ssize_t got = ::read(master_.get(), into.data(), into.size());
    if (got > 0) return {static_cast<std::size_t>(got), false};
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return {0, false};
    return {0, true};  // EIO: no program has the slave open any more
  }
}

void ConsolePty::set_size(console_protocol::TerminalSize size) {
  winsize window{};
  window.ws_col = size.cols;
  window.ws_row = size.rows;
  (void)::ioctl(master_.get(), TIOCSWINSZ, &window);
}

std::optional<console_protocol::TerminalSize> ConsolePty::size() const {
  winsize window{};
  if (::ioctl(master_.get(), TIOCGWINSZ, &window) != 0) return std::nullopt;
  if (window.ws_col == 0 && window.ws_row == 0) return std::nullopt;
  return console_protocol::TerminalSize{window.ws_col, window.ws_row};
}

}  // namespace cellink::hypervisor
