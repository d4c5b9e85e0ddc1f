#include "console_rows.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "bench_child.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "console_bulk_format.hpp"
#include "inmate_bulk_checker.hpp"
#include "viewer_stream.hpp"

namespace cellink::bench::console {
namespace {

using linux_uio::UniqueFd;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

// TCG boots the guest to /init in about 3 s on an idle machine, an inmate in
// a fraction of one; a loaded 2-CPU machine gets minutes.
constexpr seconds kBootTimeout{180};
// The longest the stream may pause once the transfer began.
constexpr seconds kStallTimeout{60};
constexpr seconds kServiceTimeout{10};
constexpr auto kProgressEvery = seconds{3};
constexpr const char* kCell = "cell";

std::string read_file(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

std::string file_tail(const std::filesystem::path& path, std::size_t bytes = 600) {
  const std::string text = read_file(path);
  return text.size() > bytes ? "..." + text.substr(text.size() - bytes) : text;
}

// Polls `ready` every 10 ms for up to `timeout`; false when it never was.
bool wait_until(const std::function<bool()>& ready, Clock::duration timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!ready()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// A row failed: what went wrong, and where its logs are.
struct RowFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string guest_missing(const Context& context) {
  if (context.qemu.empty())
    return "qemu-system-x86_64 is not in PATH (apt-get install qemu-system-x86)";
  const std::filesystem::path unavailable = context.guest_dir / "unavailable.txt";
  if (std::filesystem::exists(unavailable)) {
    return "no guest image: " + read_file(unavailable);
  }
  for (const char* file : {"vmlinuz", "initramfs.cpio.gz"}) {
    if (!std::filesystem::exists(context.guest_dir / file)) {
      return "no guest image " + (context.guest_dir / file).string() +
             " (build the target guest_image)";
    }
  }
  return {};
}

std::filesystem::path inmate_elf(const Context& context) {
  return context.inmate_dir / "inmate-console.elf";
}

std::string inmate_missing(const Context& context) {
  if (context.qemu.empty())
    return "qemu-system-x86_64 is not in PATH (apt-get install qemu-system-x86)";
  if (!std::filesystem::exists(inmate_elf(context))) {
    return "no inmate image " + inmate_elf(context).string() + " (build the target inmate-console)";
  }
  return {};
}

std::filesystem::path row_dir(const Context& context, const std::string& name) {
  const std::filesystem::path dir = context.work_dir / name;
  std::filesystem::create_directories(dir / "run");
  return dir;
}

// The console link of docs/guests.md, "A console guest", for cell kCell.
std::filesystem::path write_console_config(const std::filesystem::path& dir) {
  const std::filesystem::path config = dir / "cells.toml";
  std::ofstream(config) << "[[cell]]\nname = \"console\"\n\n[[cell]]\nname = \"" << kCell
                        << "\"\n\n[[link]]\nname = \"con\"\ncells = [\"console\", \"" << kCell
                        << "\"]\nprotocol = \"virtio-front:console\"\nrw_section = \"1MiB\"\n"
                           "output_section = \"0\"\nvectors = 2\n\n[[console]]\ncell = \""
                        << kCell << "\"\nlink = \"con\"\n";
  return config;
}

// `cellink daemon` and `cellink console serve` for kCell's console, and
// its PTY opened raw and non-blocking.
struct ConsoleHost {
  std::unique_ptr<BenchChild> daemon;
  std::unique_ptr<BenchChild> service;
  UniqueFd pty;
  std::unique_ptr<ViewerStream> viewer;  // null when the row reads the PTY
  std::filesystem::path config;
  std::filesystem::path runtime_dir;
};

ConsoleHost start_console_host(const Context& context, const std::filesystem::path& dir) {
  ConsoleHost host;
  host.config = write_console_config(dir);
  host.runtime_dir = dir / "run";
  const std::string config = host.config.string();
  const std::string runtime_dir = host.runtime_dir.string();
  host.daemon =
      std::make_unique<BenchChild>(ChildSpec{{context.cellink_cli, "daemon", "--config", config,
                                              "--runtime-dir", runtime_dir, "--log-level", "warn"},
                                             (dir / "daemon.log").string()});
  if (!wait_until([&] { return std::filesystem::exists(host.runtime_dir / "control.sock"); },
                  kServiceTimeout)) {
    throw RowFailure("cellink daemon did not get ready: " + file_tail(dir / "daemon.log"));
  }
  host.service = std::make_unique<BenchChild>(ChildSpec{
      {context.cellink_cli, "console", "serve", "--config", config, "--runtime-dir", runtime_dir},
      (dir / "console-serve.log").string()});
  const std::filesystem::path pty = host.runtime_dir / "console" / (std::string(kCell) + ".pty");
  if (!wait_until([&] { return std::filesystem::exists(pty); }, kServiceTimeout)) {
    throw RowFailure("cellink console serve made no " + pty.string() + ": " +
                     file_tail(dir / "console-serve.log"));
  }
  host.pty = UniqueFd{::open(pty.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)};
  if (!host.pty) throw RowFailure("cannot open " + pty.string() + ": " + std::strerror(errno));
  termios mode{};
  if (::tcgetattr(host.pty.get(), &mode) == 0) {
    ::cfmakeraw(&mode);
    (void)::tcsetattr(host.pty.get(), TCSANOW, &mode);
  }
  if (!context.via_pty) {
    const std::filesystem::path socket =
        host.runtime_dir / "console" / (std::string(kCell) + ".sock");
    if (!wait_until([&] { return std::filesystem::exists(socket); }, kServiceTimeout)) {
      throw RowFailure("cellink console serve made no " + socket.string());
    }
    try {
      host.viewer = std::make_unique<ViewerStream>(socket);
    } catch (const std::exception& failure) {
      throw RowFailure(failure.what());
    }
  }
  return host;
}

std::vector<std::string> qemu_args_for(const Context& context, const ConsoleHost& host,
                                       const std::vector<std::string>& extra) {
  std::vector<std::string> argv{context.cellink_cli,
                                "qemu-args",
                                kCell,
                                "--config",
                                host.config.string(),
                                "--runtime-dir",
                                host.runtime_dir.string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::istringstream words(run_to_end(argv));
  std::vector<std::string> out;
  for (std::string word; words >> word;) out.push_back(word);
  return out;
}

// The Linux guest of GuestTest, running cellink-guest-bulk on `device`.
std::vector<std::string> linux_guest_argv(const Context& context, const std::string& device) {
  return {context.qemu,
          "-accel",
          "tcg",
          "-machine",
          "q35",
          "-m",
          "256M",
          "-smp",
          "1",
          "-nographic",
          "-no-reboot",
          "-nic",
          "none",
          "-kernel",
          (context.guest_dir / "vmlinuz").string(),
          "-initrd",
          (context.guest_dir / "initramfs.cpio.gz").string(),
          "-append",
          "console=ttyS0 quiet panic=-1 cellink.run=cellink-guest-bulk cellink.arg=--wait "
          "cellink.arg=" +
              device + " cellink.arg=" + std::to_string(context.bytes)};
}

// What the inmate rows type once the banner line `prompt` arrived.
struct Command {
  std::string prompt;
  int fd = -1;
  std::string text;
};

// A read that gave less than this is followed by a nap of kNap, so that the
// reader is not woken for every few bytes (QEMU's 16550 sends them one by
// one) at the expense of QEMU on a small machine; the buffers behind every
// stream (socket, pipe, the viewer's queue) hold far more than kNap's worth.
constexpr std::size_t kSmallRead = 16 * 1024;
constexpr std::chrono::microseconds kNap{1000};

// Reads `fd` (through `viewer`'s frames when not null) into `checker` until
// the END marker; the seconds from the read that held the BEGIN marker to
// the one that held the END marker.
template <class Checker>
RowResult pump(const std::string& row, int fd, BenchChild& qemu, const std::filesystem::path& log,
               std::uint64_t bytes, const Command* command, ViewerStream* viewer = nullptr) {
  Checker checker;
  std::string preamble;  // what came before the BEGIN marker (a prompt, boot lines)
  bool typed = command == nullptr;
  std::vector<char> chunk(1 << 20);
  const Clock::time_point started = Clock::now();
  Clock::time_point begun{};
  Clock::time_point last_byte = started;
  Clock::time_point next_progress = started + kProgressEvery;
  bool nap = false;
  while (!checker.done()) {
    if (nap) std::this_thread::sleep_for(kNap);
    nap = false;
    pollfd entry{fd, POLLIN, 0};
    (void)::poll(&entry, 1, 100);
    const Clock::time_point now = Clock::now();
    for (;;) {
      const ssize_t got = ::read(fd, chunk.data(), chunk.size());
      if (got == 0 && !checker.done()) {
        throw RowFailure("the stream ended after " + std::to_string(checker.payload_received()) +
                         " payload bytes; QEMU's log: " + file_tail(log));
      }
      if (got < 0) break;
      last_byte = now;
      std::string_view data(chunk.data(), static_cast<std::size_t>(got));
      if (viewer != nullptr) data = viewer->decode(data);
      if (static_cast<std::size_t>(got) < kSmallRead) nap = true;
      const bool was_begun = checker.begun();
      if (!checker.feed(data)) {
        throw RowFailure(
            "byte error: " + checker.failure() +
            "; payload bytes checked before it: " + std::to_string(checker.payload_received()));
      }
      if (!was_begun) {
        if (checker.begun()) {
          begun = now;
        } else if (preamble.size() < (1 << 16)) {
          preamble.append(data);
        }
      }
      if (checker.done()) break;
    }
    if (checker.done()) break;
    if (!typed && preamble.find(command->prompt) != std::string::npos) {
      typed = ::write(command->fd, command->text.data(), command->text.size()) ==
              static_cast<ssize_t>(command->text.size());
      if (!typed) throw RowFailure("cannot type '" + command->text + "': " + std::strerror(errno));
    }
    if (!qemu.running()) {
      throw RowFailure("QEMU exited (" + describe_exit(qemu.status()) + ") after " +
                       std::to_string(checker.payload_received()) +
                       " payload bytes; the stream began with '" + preamble.substr(0, 300) +
                       "'; QEMU's log: " + file_tail(log));
    }
    if (!checker.begun() && now - started > kBootTimeout) {
      throw RowFailure("no BEGIN marker within " + std::to_string(kBootTimeout.count()) +
                       " s; the console showed: '" + preamble.substr(0, 400) +
                       "'; QEMU's log: " + file_tail(log));
    }
    if (checker.begun() && now - last_byte > kStallTimeout) {
      throw RowFailure("the transfer stalled for " + std::to_string(kStallTimeout.count()) +
                       " s after " + std::to_string(checker.payload_received()) + " payload bytes");
    }
    if (checker.begun() && now >= next_progress) {
      const double elapsed = std::chrono::duration<double>(now - begun).count();
      std::printf(
          "  %s: %.1f of %.1f MiB, %.3f MB/s so far\n", row.c_str(),
          static_cast<double>(checker.payload_received()) / 1048576.0,
          static_cast<double>(bytes) / 1048576.0,
          elapsed > 0 ? static_cast<double>(checker.payload_received()) / elapsed / 1e6 : 0);
      std::fflush(stdout);
      next_progress = now + kProgressEvery;
    }
  }
  if (checker.expected_bytes() != bytes) {
    throw RowFailure("the transfer announced " + std::to_string(checker.expected_bytes()) +
                     " bytes, " + std::to_string(bytes) + " were asked for");
  }
  RowResult result{
      row, Outcome::measured, std::chrono::duration<double>(Clock::now() - begun).count(), {}};
  char note[96];
  std::snprintf(note, sizeof note, "BEGIN %.1f s after QEMU started",
                std::chrono::duration<double>(begun - started).count());
  result.note = note;
  return result;
}

// The guest's own figure ("CELLINK-GUEST: bulk DEV N bytes written in S s"),
// appended to the note when it shows up on the serial console within 5 s.
void add_guest_figure(RowResult& result, const std::filesystem::path& log) {
  const std::regex line(R"(bulk \S+ \d+ bytes written in ([0-9.]+) s)");
  std::smatch match;
  std::string text;
  (void)wait_until(
      [&] {
        text = read_file(log);
        return std::regex_search(text, match, line);
      },
      seconds(5));
  if (!match.empty()) result.note += "; the guest's writes took " + match[1].str() + " s";
}

// After a failure on a PTY: what the console service counted (its status
// file is rewritten about once a second), e.g. bytes the PTY dropped.
std::string service_counters(const ConsoleHost& host) {
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const std::string status =
      read_file(host.runtime_dir / "console" / (std::string(kCell) + ".status.json"));
  std::string counters;
  for (const char* key : {"bytes_from_guest", "pty_dropped_bytes", "state"}) {
    std::smatch match;
    if (std::regex_search(status, match, std::regex("\"" + std::string(key) + "\": ([^,\n]+)"))) {
      counters += std::string(counters.empty() ? "" : ", ") + key + " " + match[1].str();
    }
  }
  return counters.empty() ? "no status file" : counters;
}

// pump() on the console's viewer socket or its PTY; a failure adds the
// service's counters.
template <class Checker>
RowResult pump_console(const std::string& row, ConsoleHost& host, BenchChild& qemu,
                       const std::filesystem::path& log, std::uint64_t bytes,
                       const Command* command) {
  try {
    RowResult result = host.viewer ? pump<Checker>(row, host.viewer->fd(), qemu, log, bytes,
                                                   command, host.viewer.get())
                                   : pump<Checker>(row, host.pty.get(), qemu, log, bytes, command);
    result.note += host.viewer ? "; read as a viewer" : "; read from the PTY";
    return result;
  } catch (const std::exception& failure) {
    throw RowFailure(std::string(failure.what()) + "; console service: " + service_counters(host));
  }
}

RowResult run_linux_virtio(const Context& context, const std::string& name) {
  const std::filesystem::path dir = row_dir(context, name);
  ConsoleHost host = start_console_host(context, dir);
  std::vector<std::string> argv = linux_guest_argv(context, "/dev/hvc0");
  for (std::string& word : qemu_args_for(context, host, {})) argv.push_back(std::move(word));
  BenchChild qemu({argv, (dir / "qemu.log").string()});
  RowResult result = pump_console<guest_test::BulkChecker>(name, host, qemu, dir / "qemu.log",
                                                           context.bytes, nullptr);
  add_guest_figure(result, dir / "qemu.log");
  return result;
}

// A UNIX socket the 16550's chardev connects to (server=off): the bench reads
// the bytes as they arrive, as it reads the PTY, and a slow reader stalls
// QEMU's transmitter instead of losing bytes. A file would need polling.
UniqueFd listen_unix(const std::filesystem::path& path) {
  UniqueFd fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (!fd || path.string().size() >= sizeof address.sun_path) {
    throw RowFailure("cannot make a socket at " + path.string());
  }
  std::strcpy(address.sun_path, path.c_str());
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(fd.get(), 1) != 0) {
    throw RowFailure("cannot listen on " + path.string() + ": " + std::strerror(errno));
  }
  return fd;
}

UniqueFd accept_from(int listener, BenchChild& qemu, const std::filesystem::path& log) {
  pollfd entry{listener, POLLIN, 0};
  if (::poll(&entry, 1, 30000) <= 0) {
    throw RowFailure("QEMU's 16550 never connected (" +
                     std::string(qemu.running() ? "running" : describe_exit(qemu.status())) +
                     "): " + file_tail(log));
  }
  UniqueFd fd{::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)};
  if (!fd) throw RowFailure(std::string("accept: ") + std::strerror(errno));
  return fd;
}

RowResult run_linux_16550(const Context& context, const std::string& name) {
  const std::filesystem::path dir = row_dir(context, name);
  const std::filesystem::path socket = dir / "16550.sock";
  const UniqueFd listener = listen_unix(socket);
  std::vector<std::string> argv = linux_guest_argv(context, "/dev/ttyS1");
  // Explicit -serial for both ports: a -device isa-serial would turn off
  // -nographic's default ttyS0 and become ttyS0 itself.
  argv.insert(argv.end(), {"-chardev", "socket,id=bulk,path=" + socket.string() + ",server=off",
                           "-serial", "mon:stdio", "-serial", "chardev:bulk"});
  BenchChild qemu({argv, (dir / "qemu.log").string()});
  const UniqueFd serial = accept_from(listener.get(), qemu, dir / "qemu.log");
  RowResult result = pump<guest_test::BulkChecker>(name, serial.get(), qemu, dir / "qemu.log",
                                                   context.bytes, nullptr);
  add_guest_figure(result, dir / "qemu.log");
  return result;
}

constexpr const char* kInmatePrompt = "'bulk N' sends N bytes";

RowResult run_inmate_virtio(const Context& context, const std::string& name) {
  const std::filesystem::path dir = row_dir(context, name);
  ConsoleHost host = start_console_host(context, dir);
  std::vector<std::string> argv{context.qemu};
  for (std::string& word :
       qemu_args_for(context, host, {"--inmate", inmate_elf(context).string()})) {
    argv.push_back(std::move(word));
  }
  BenchChild qemu({argv, (dir / "qemu.log").string()});
  const Command command{kInmatePrompt, host.pty.get(),
                        "bulk " + std::to_string(context.bytes) + "\r"};
  return pump_console<InmateBulkChecker>(name, host, qemu, dir / "qemu.log", context.bytes,
                                         &command);
}

// No ivshmem device at all: the inmate finds no console link and uses its
// 16550, which -nographic puts on QEMU's stdin and stdout (two pipes here).
RowResult run_inmate_16550(const Context& context, const std::string& name) {
  const std::filesystem::path dir = row_dir(context, name);
  int in[2];
  int out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) throw RowFailure("pipe2 failed");
  const UniqueFd to_qemu{in[1]};
  const UniqueFd from_qemu{out[0]};
  (void)::fcntl(from_qemu.get(), F_SETFL, O_NONBLOCK);
  const std::vector<std::string> argv{context.qemu,
                                      "-accel",
                                      "tcg",
                                      "-machine",
                                      "q35",
                                      "-m",
                                      "32M",
                                      "-nographic",
                                      "-no-reboot",
                                      "-nic",
                                      "none",
                                      "-device",
                                      "isa-debug-exit,iobase=0xf4,iosize=0x04",
                                      "-kernel",
                                      std::filesystem::absolute(inmate_elf(context)).string()};
  BenchChild qemu({argv, (dir / "qemu.log").string(), in[0], out[1]});
  ::close(in[0]);
  ::close(out[1]);
  const Command command{kInmatePrompt, to_qemu.get(),
                        "bulk " + std::to_string(context.bytes) + "\r"};
  return pump<InmateBulkChecker>(name, from_qemu.get(), qemu, dir / "qemu.log", context.bytes,
                                 &command);
}

template <RowResult (*Measure)(const Context&, const std::string&),
          std::string (*Missing)(const Context&)>
RowResult guarded(const Context& context, const std::string& name) {
  const std::string missing = Missing(context);
  if (!missing.empty()) return {name, Outcome::skipped, 0, missing};
  try {
    return Measure(context, name);
  } catch (const std::exception& failure) {
    return {name, Outcome::failed, 0,
            std::string(failure.what()) + " (logs in " + (context.work_dir / name).string() + ")"};
  }
}

}  // namespace

std::vector<Row> console_rows() {
  return {
      {"linux-virtio",
       "Linux guest, /dev/hvc0: virtio_console over ivshmem, `cellink console serve`, read as a "
       "viewer (--via pty: its PTY)",
       guarded<run_linux_virtio, guest_missing>},
      {"linux-16550",
       "Linux guest, /dev/ttyS1: QEMU's emulated 16550 (a second -serial), a UNIX socket chardev",
       guarded<run_linux_16550, guest_missing>},
      {"inmate-virtio",
       "inmate-console 'bulk N' (typed on its PTY) over the virtio console, read as a viewer",
       guarded<run_inmate_virtio, inmate_missing>},
      {"inmate-16550", "inmate-console 'bulk N' on its 16550 (no console link), QEMU's stdout",
       guarded<run_inmate_16550, inmate_missing>},
  };
}

}  // namespace cellink::bench::console
