// `cellink console CELL`: attach this terminal (or a pipe) to a cell's
// console through the console service's viewer socket
// (RUNTIME_DIR/console/<cell>.sock, protocol in console_viewer_protocol.hpp).
//
// On a terminal: raw mode (restored on every way out: detach, EOF, error,
// SIGTERM/SIGINT/SIGHUP/SIGQUIT), the escape key (default Ctrl-], "^]")
// detaches, and the window size follows SIGWINCH when this viewer types.
// On a pipe: stdin is sent as typed input until its EOF; then output is
// still copied for `drain_ms` of quiet before exiting 0. The escape key
// applies to a pipe only when --escape was given.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "cellink/hypervisor/console_viewer_protocol.hpp"
#include "cellink/linux-uio/unix_socket.hpp"
#include "commands.hpp"

namespace cellink::cli {
namespace {

namespace protocol = hypervisor::console_protocol;
using Clock = std::chrono::steady_clock;
using linux_uio::UniqueFd;

constexpr std::size_t kMaxUnsent = std::size_t{64} * 1024;  // stop reading stdin beyond this
constexpr auto kHandshakeTimeout = std::chrono::seconds(5);

int signal_pipe_write = -1;

extern "C" void forward_signal(int signal) {
  const int saved = errno;
  const auto byte = static_cast<unsigned char>(signal);
  (void)::write(signal_pipe_write, &byte, 1);
  errno = saved;
}

// Raw mode on stdin's terminal for as long as it lives.
class RawTerminal {
 public:
  RawTerminal() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    active_ = ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  termios saved_{};
  bool active_ = false;
};

// The escape key as a byte, or kNoEscape. (An int, not an optional: GCC 12
// at -O3 warns about optionals copied around here, a false positive.)
constexpr int kNoEscape = -1;

// "^]" -> 0x1d, "^a" -> 0x01, "x" -> 'x', "none" -> kNoEscape. False when
// the text is none of these.
bool parse_escape(const std::string& text, int& key) {
  if (text == "none") {
    key = kNoEscape;
    return true;
  }
  if (text.size() == 1) {
    key = static_cast<unsigned char>(text[0]);
    return true;
  }
  if (text.size() == 2 && text[0] == '^') {
    const unsigned char c = static_cast<unsigned char>(std::toupper(text[1]));
    if (c >= '?' && c <= '_') {
      key = c ^ 0x40;
      return true;
    }
  }
  return false;
}

std::optional<protocol::TerminalSize> window_size(bool tty) {
  winsize window{};
  if (!tty || ::ioctl(STDIN_FILENO, TIOCGWINSZ, &window) != 0 || window.ws_col == 0) {
    return std::nullopt;
  }
  return protocol::TerminalSize{window.ws_col, window.ws_row};
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t wrote = ::write(fd, bytes.data(), bytes.size());
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(wrote));
  }
  return true;
}

// The viewer socket of `cell`, or an error that says what to do.
UniqueFd connect_console(const ConsoleAttachArgs& args, std::string& error) {
  const std::filesystem::path dir = args.runtime_dir / "console";
  const std::filesystem::path path = dir / (args.cell + ".sock");
  std::error_code ignored;
  if (!std::filesystem::exists(path, ignored)) {
    std::string cells;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ignored)) {
      if (entry.path().extension() != ".sock") continue;
      cells += (cells.empty() ? "" : ", ") + entry.path().stem().string();
    }
    if (!cells.empty()) {
      error = fmt::format("no console for cell '{}' in {} (consoles: {})", args.cell, dir.string(),
                          cells);
    } else {
      error = fmt::format(
          "no console service runs on {}: start `cellink console serve --runtime-dir {}` "
          "with a [[console]] for cell '{}' in its --config (or --cell {})",
          args.runtime_dir.string(), args.runtime_dir.string(), args.cell, args.cell);
    }
    return {};
  }
  int connect_error = 0;
  UniqueFd fd = linux_uio::connect_unix(path, connect_error);
  if (!fd) {
    error = connect_error == ECONNREFUSED
                ? fmt::format(
                      "the console service of {} is not running ({} is left over): start "
                      "`cellink console serve --runtime-dir {}`",
                      args.runtime_dir.string(), path.string(), args.runtime_dir.string())
                : fmt::format("cannot connect to {}: {}", path.string(),
                              std::system_category().message(connect_error));
  }
  return fd;
}

// Reads frames until one arrives; nullopt with `error` on EOF or timeout.
std::optional<protocol::Frame> next_frame(int fd, protocol::FrameReader& reader,
                                          Clock::time_point deadline, std::string& error) {
  for (;;) {
    if (auto frame = reader.next()) return frame;
    if (!reader.error().empty()) {
      error = "the console service sent a bad frame: " + reader.error();
      return std::nullopt;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd poll_fd{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&poll_fd, 1, static_cast<int>(left.count())) == 0) {
      error = "the console service did not answer";
      return std::nullopt;
    }
    char bytes[16 * 1024];
    const ssize_t got = ::recv(fd, bytes, sizeof(bytes), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      error = "the console service closed the connection";
      return std::nullopt;
    }
    reader.feed(bytes, static_cast<std::size_t>(got));
  }
}

class Attachment {
 public:
  Attachment(const ConsoleAttachArgs& args, UniqueFd socket, int signals, bool tty, int escape)
      : args_(args), socket_(std::move(socket)), signals_(signals), tty_(tty), escape_(escape) {}

  int run();

 private:
  void say(const std::string& text) const {
    const std::string line = tty_ ? "\r\n[" + text + "]\r\n" : text + "\n";
    (void)write_all(STDERR_FILENO, line);
  }
  int handshake();
  void read_stdin();
  std::optional<int> read_socket();
  std::optional<int> process_frames();
  bool flush_socket();

  const ConsoleAttachArgs& args_;
  UniqueFd socket_;
  int signals_;  // read end of the signal pipe
  bool tty_;
  int escape_ = kNoEscape;
  protocol::FrameReader reader_;
  bool writer_ = false;
  bool stdin_open_ = true;
  bool detached_ = false;
  bool told_read_only_ = false;
  std::string unsent_;
  Clock::time_point last_output_ = Clock::now();
};

int Attachment::handshake() {
  const std::optional<protocol::TerminalSize> size = window_size(tty_);
  protocol::Hello hello;
  hello.mode = args_.read_only ? protocol::ViewerMode::read_only : protocol::ViewerMode::read_write;
  if (size) hello.size = *size;
  if (!write_all(socket_.get(), protocol::encode_hello(hello))) {
    say("cellink console: the console service closed the connection");
    return 1;
  }
  std::string error;
  const auto frame = next_frame(socket_.get(), reader_, Clock::now() + kHandshakeTimeout, error);
  if (!frame) {
    say("cellink console: " + error);
    return 1;
  }
  if (frame->type == protocol::FrameType::refused) {
    say("cellink console: refused: " + frame->payload);
    return 1;
  }
  const auto welcome = frame->type == protocol::FrameType::welcome
                           ? protocol::decode_welcome(frame->payload)
                           : std::nullopt;
  if (!welcome) {
    say(fmt::format("cellink console: expected a welcome from the service, got {}",
                    protocol::describe(frame->type)));
    return 1;
  }
  writer_ = welcome->mode == protocol::ViewerMode::read_write;
  return 0;
}

void Attachment::read_stdin() {
  char bytes[4096];
  const ssize_t got = ::read(STDIN_FILENO, bytes, sizeof(bytes));
  if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (got <= 0) {
    stdin_open_ = false;
    last_output_ = Clock::now();  // the drain starts now
    return;
  }
  std::string_view typed(bytes, static_cast<std::size_t>(got));
  if (escape_ != kNoEscape) {
    if (const std::size_t at = typed.find(static_cast<char>(escape_)); at != typed.npos) {
      typed = typed.substr(0, at);
      detached_ = true;
    }
  }
  if (typed.empty()) return;
  if (!writer_) {
    if (tty_ && !told_read_only_) say("read-only: keys are not sent to the guest");
    told_read_only_ = true;
    return;
  }
  unsent_ += protocol::encode_data(protocol::FrameType::input, std::as_bytes(std::span(typed)));
}

// nullopt: go on; else the exit status.
std::optional<int> Attachment::read_socket() {
  char bytes[64 * 1024];
  const ssize_t got = ::recv(socket_.get(), bytes, sizeof(bytes), MSG_DONTWAIT);
  if (got < 0 && (errno == EINTR || errno == EAGAIN)) return std::nullopt;
  if (got <= 0) {
    say("cellink console: the console service closed the connection");
    return 1;
  }
  reader_.feed(bytes, static_cast<std::size_t>(got));
  return process_frames();
}

std::optional<int> Attachment::process_frames() {
  while (auto frame = reader_.next()) {
    switch (frame->type) {
      case protocol::FrameType::output:
        last_output_ = Clock::now();
        if (!write_all(STDOUT_FILENO, frame->payload)) return 1;
        break;
      case protocol::FrameType::notice: say(frame->payload); break;
      case protocol::FrameType::refused:
        say("cellink console: disconnected: " + frame->payload);
        return 1;
      default: break;  // nothing else is meant for a viewer; ignore it
    }
  }
  if (!reader_.error().empty()) {
    say("cellink console: the console service sent a bad frame: " + reader_.error());
    return 1;
  }
  return std::nullopt;
}

bool Attachment::flush_socket() {
  while (!unsent_.empty()) {
    const ssize_t wrote =
        ::send(socket_.get(), unsent_.data(), unsent_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0 && errno == EAGAIN) return true;
    if (wrote <= 0) return false;
    unsent_.erase(0, static_cast<std::size_t>(wrote));
  }
  return true;
}

int Attachment::run() {
  if (const int status = handshake(); status != 0) return status;
  if (tty_) {
    say(fmt::format(
        "connected to the console of '{}'{}{}", args_.cell, writer_ ? "" : " (read-only)",
        escape_ != kNoEscape ? fmt::format("; {} detaches", args_.escape) : std::string()));
  }
  // No --timeout: a deadline that never comes.
  const Clock::time_point deadline =
      args_.timeout_seconds > 0
          ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(args_.timeout_seconds))
          : Clock::time_point::max();
  const bool has_deadline = args_.timeout_seconds > 0;
  const auto drain = std::chrono::milliseconds(args_.drain_ms);
  // Output that came in the same read as the welcome.
  if (const auto status = process_frames()) return *status;
  for (;;) {
    if (detached_ && unsent_.empty()) {
      if (tty_) say("detached");
      return 0;
    }
    const Clock::time_point now = Clock::now();
    if (has_deadline && now >= deadline) return 0;
    if (!stdin_open_ && unsent_.empty() && now - last_output_ >= drain) return 0;
    // A negative fd is skipped: POLLHUP would be reported even with no events.
    const bool want_stdin = stdin_open_ && !detached_ && unsent_.size() < kMaxUnsent;
    pollfd fds[3] = {{want_stdin ? STDIN_FILENO : -1, POLLIN, 0},
                     {socket_.get(), POLLIN, 0},
                     {signals_, POLLIN, 0}};
    if (!unsent_.empty()) fds[1].events |= POLLOUT;
    auto wait = std::chrono::milliseconds(-1);
    if (!stdin_open_) {
      wait = std::chrono::duration_cast<std::chrono::milliseconds>(drain - (now - last_output_));
    }
    if (has_deadline) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      wait = wait.count() < 0 ? left : std::min(wait, left);
    }
    const int ready = ::poll(fds, 3, wait.count() < 0 ? -1 : static_cast<int>(wait.count() + 1));
    if (ready < 0 && errno != EINTR) return 1;
    if ((fds[2].revents & POLLIN) != 0) {
      unsigned char signal = 0;
      while (::read(signals_, &signal, 1) == 1) {
        if (signal == SIGWINCH) {
          if (const auto size = window_size(tty_); size && writer_) {
            unsent_ += protocol::encode_resize(*size);
          }
          continue;
        }
        say(fmt::format("cellink console: {}; detaching", ::strsignal(signal)));
        return 128 + signal;
      }
    }
    if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      if (const auto status = read_socket()) return *status;
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) read_stdin();
    if (!flush_socket()) {
      say("cellink console: the console service closed the connection");
      return 1;
    }
  }
}

}  // namespace

int run_console_attach(const ConsoleAttachArgs& args) {
  const bool tty = ::isatty(STDIN_FILENO) == 1;
  int escape = kNoEscape;
  if (!parse_escape(args.escape, escape)) {
    std::cerr << fmt::format(
        "cellink console: --escape '{}' is not a key; use \"^]\" (Ctrl-]), \"^A\", one "
        "character, or \"none\"\n",
        args.escape);
    return 2;
  }
  if (!tty && !args.escape_given) escape = kNoEscape;  // a pipe may carry any byte
  std::string error;
  UniqueFd socket = connect_console(args, error);
  if (!socket) {
    std::cerr << "cellink console: " << error << "\n";
    return 1;
  }
  // Signals are caught before the terminal goes raw, so that none can end
  // the process while it is raw: each reaches the loop through this pipe,
  // and the way out restores the mode.
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) return 1;
  UniqueFd signal_read(pipe_fds[0]);
  UniqueFd signal_write(pipe_fds[1]);
  signal_pipe_write = signal_write.get();
  struct sigaction action {};
  action.sa_handler = forward_signal;
  for (int signal : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGWINCH}) {
    ::sigaction(signal, &action, nullptr);
  }
  ::signal(SIGPIPE, SIG_IGN);
  std::optional<RawTerminal> raw;
  if (tty) raw.emplace();
  const int status = Attachment(args, std::move(socket), signal_read.get(), tty, escape).run();
  raw.reset();  // the terminal first, then the handlers: no signal ends it raw
  action.sa_handler = SIG_DFL;
  for (int signal : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGWINCH}) {
    ::sigaction(signal, &action, nullptr);
  }
  return status;
}

}  // namespace cellink::cli
