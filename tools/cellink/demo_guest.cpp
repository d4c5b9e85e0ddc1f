// Act 4 of `cellink demo`: a Linux guest under QEMU as cell "guest"
// (docs/guests.md, "The guest in `cellink demo`"). QEMU (TCG) boots the test
// guest image (CELLINK_GUEST_IMAGE_DIR, or --guest-image), whose /init runs
// cellink-guest-echo (tests/qemu/guest/guest_echo.cpp); this process, as
// cell "host", sends it messages and checks the echoes, then leaves and waits
// for the guest to report and power off. Skipped, saying why, without QEMU,
// without the image or with --no-guest.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/ranges.h>

#include "cellink/hypervisor/config.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "demo_steps.hpp"

extern char** environ;

namespace cellink::cli::demo {
namespace {

using linux_uio::MessageErrc;
using linux_uio::Session;

// TCG boots the guest to /init in 3-5 s on an idle machine; these leave room
// for a loaded machine with 2 CPUs.
constexpr milliseconds kBootTimeout{120000};
constexpr milliseconds kGuestStepTimeout{60000};
constexpr const char* kGuestSkip = "skipping the Linux guest: ";

// The path of `program` in a directory of $PATH, or empty.
std::string find_on_path(std::string_view program) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::filesystem::path candidate =
        std::filesystem::path(dir.empty() ? "." : dir) / program;
    std::error_code error;
    if (std::filesystem::is_regular_file(candidate, error) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate.string();
    }
  }
  return {};
}

// QEMU's path, or empty after printing why the guest act is skipped.
std::string find_guest_runner(const DemoArgs& args, const std::filesystem::path& image) {
  if (!args.guest) {
    say("demo", "{}--no-guest was given", kGuestSkip);
    return {};
  }
  std::string qemu = find_on_path("qemu-system-x86_64");
  if (qemu.empty()) {
    say("demo",
        "{}QEMU is not installed (no qemu-system-x86_64 on PATH): apt install qemu-system-x86",
        kGuestSkip);
    return {};
  }
  if (std::ifstream reason_file{image / "unavailable.txt"}) {
    std::string reason((std::istreambuf_iterator<char>(reason_file)), {});
    std::replace(reason.begin(), reason.end(), '\n', ' ');
    while (!reason.empty() && std::isspace(static_cast<unsigned char>(reason.back()))) {
      reason.pop_back();
    }
    say("demo", "{}the build could not make the guest image in {}: {}", kGuestSkip, image.string(),
        reason);
    return {};
  }
  if (!std::filesystem::exists(image / "vmlinuz") ||
      !std::filesystem::exists(image / "initramfs.cpio.gz")) {
    say("demo",
        "{}no guest image (vmlinuz, initramfs.cpio.gz) in {}: build the target guest_image "
        "(cmake --build <build dir> --target guest_image; tests on) or pass --guest-image DIR",
        kGuestSkip, image.string());
    return {};
  }
  return qemu;
}

// A QEMU process and its serial console. A thread reads the console (QEMU's
// stdout and stderr), keeps every line for a failure report and shows the
// guest's "CELLINK-GUEST" lines as they come. The destructor kills QEMU if
// it still runs, so no exit path leaves it behind.
class GuestVm {
 public:
  explicit GuestVm(const std::vector<std::string>& argv) {
    int pipe_ends[2];
    if (::pipe2(pipe_ends, O_CLOEXEC) != 0) throw std::runtime_error("pipe for QEMU failed");
    linux_uio::UniqueFd read_end(pipe_ends[0]);
    linux_uio::UniqueFd write_end(pipe_ends[1]);
    std::vector<char*> pointers;
    for (const std::string& argument : argv) {
      pointers.push_back(const_cast<char*>(argument.c_str()));
    }
    pointers.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    // Not the terminal: -nographic would put it in raw mode.
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDERR_FILENO);
    std::fflush(stdout);
    const int error =
        ::posix_spawn(&pid_, argv[0].c_str(), &actions, nullptr, pointers.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) {
      throw std::runtime_error(fmt::format("cannot start {}: {}", argv[0], std::strerror(error)));
    }
    started_ = Clock::now();
    write_end.reset();  // the console ends when QEMU exits
    try {
      reader_ = std::thread([this, fd = std::move(read_end)] { read_console(fd.get()); });
    } catch (...) {
      ::kill(pid_, SIGKILL);
      (void)exit_code(pid_);
      throw;
    }
  }
  GuestVm(const GuestVm&) = delete;
  GuestVm& operator=(const GuestVm&) = delete;
  ~GuestVm() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      (void)exit_code(pid_);
    }
    reader_.join();
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] double seconds() const {
    return std::chrono::duration<double>(Clock::now() - started_).count();
  }

  // The first console line starting with `prefix`, or nullopt when the
  // console ended or `deadline` passed first.
  std::optional<std::string> wait_line(std::string_view prefix, Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    std::optional<std::string> found;
    changed_.wait_until(lock, deadline, [&] {
      const auto line = std::find_if(lines_.begin(), lines_.end(), [&](const std::string& each) {
        return each.starts_with(prefix);
      });
      if (line != lines_.end()) found = *line;
      return found || ended_;
    });
    return found;
  }
  [[nodiscard]] bool console_ended() const {
    std::lock_guard lock(mutex_);
    return ended_;
  }

  // Waits until `deadline` for QEMU to exit; returns its exit status, or
  // nullopt if it still runs.
  std::optional<int> wait_exit(Clock::time_point deadline) {
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    return std::nullopt;
  }

  void print_console() const {
    std::lock_guard lock(mutex_);
    fmt::print(
        "----- the guest's console (QEMU pid {}) -----\n{}\n----- end of the console -----\n", pid_,
        fmt::join(lines_, "\n"));
    std::fflush(stdout);
  }

 private:
  void read_console(int fd) {
    std::string partial;
    char bytes[4096];
    for (;;) {
      const ssize_t count = ::read(fd, bytes, sizeof(bytes));
      if (count < 0 && errno == EINTR) continue;
      if (count <= 0) break;
      partial.append(bytes, static_cast<std::size_t>(count));
      for (std::size_t end; (end = partial.find('\n')) != std::string::npos;) {
        add_line(partial.substr(0, end));
        partial.erase(0, end + 1);
      }
    }
    if (!partial.empty()) add_line(partial);
    std::lock_guard lock(mutex_);
    ended_ = true;
    changed_.notify_all();
  }

  void add_line(std::string line) {
    // Drops \r (the serial console ends lines with \r\n) and the firmware's
    // escape sequences, which glue to the first line of /init.
    std::erase_if(line, [](char c) { return std::iscntrl(static_cast<unsigned char>(c)) != 0; });
    if (const std::size_t start = line.find("CELLINK-GUEST"); start != std::string::npos) {
      line.erase(0, start);
      say("linux", "{:6.2f} s  {}", seconds(), line);
    }
    std::lock_guard lock(mutex_);
    lines_.push_back(std::move(line));
    changed_.notify_all();
  }

  pid_t pid_ = -1;
  Clock::time_point started_;
  // Protects lines_ and ended_; the reader thread appends, the demo waits.
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
  bool ended_ = false;
  std::thread reader_;  // last: it uses the members above
};

// The QEMU command line of cell "guest": `cellink qemu-args guest` for the
// embedded config, plus the guest image and what /init runs.
std::vector<std::string> guest_command(const std::string& qemu, const std::filesystem::path& image,
                                       const std::filesystem::path& dir) {
  const hypervisor::ConfigResult config = hypervisor::load_default_config();
  if (!config.ok()) throw std::runtime_error("the embedded config is invalid");
  std::uint32_t vectors = 0;
  for (const hypervisor::LinkConfig& link : config.config.links) {
    if (link.name == "demo") vectors = link.vectors;
  }
  // The machine of GuestTest::boot() (tests/qemu/guest_fixture.hpp).
  std::vector<std::string> argv = {qemu};
  std::istringstream machine(
      "-accel tcg -machine q35 -m 256M -smp 1 -nographic -no-reboot -nic none");
  for (std::string word; machine >> word;) argv.push_back(word);
  const std::string socket = (dir / "demo" / "guest.sock").string();
  argv.insert(argv.end(),
              {"-kernel", (image / "vmlinuz").string(), "-initrd",
               (image / "initramfs.cpio.gz").string(), "-append",
               fmt::format("console=ttyS0 quiet panic=-1 cellink.run=cellink-guest-echo "
                           "cellink.arg=--timeout-ms={}",
                           kGuestStepTimeout.count()),
               "-chardev", fmt::format("socket,path={},id=cellink-demo", socket), "-device",
               fmt::format("ivshmem-doorbell,chardev=cellink-demo,vectors={}", vectors)});
  return argv;
}

// Waits for the guest's echo program to open channel "demo", with progress.
void await_guest(GuestVm& vm, Channel& channel) {
  const Clock::time_point deadline = Clock::now() + kBootTimeout;
  Clock::time_point next_progress = Clock::now() + milliseconds(15000);
  for (;;) {
    const std::error_code error = channel.wait_connected(milliseconds(500));
    if (!error) return;
    if (error != MessageErrc::timed_out) {
      throw std::runtime_error("channel 'demo' toward the Linux guest: " + error.message());
    }
    if (vm.console_ended()) throw std::runtime_error("QEMU exited before the guest opened 'demo'");
    if (Clock::now() >= deadline) {
      throw std::runtime_error(fmt::format(
          "the Linux guest did not open channel 'demo' within {} s", kBootTimeout.count() / 1000));
    }
    if (Clock::now() >= next_progress) {
      say("host", "still waiting for the guest after {:.0f} s (TCG is slow on a busy machine)",
          vm.seconds());
      next_progress += milliseconds(15000);
    }
  }
}

void exchange_with_guest(const std::filesystem::path& dir, const std::filesystem::path& image,
                         const std::string& qemu) {
  std::unique_ptr<HostDevice> device = HostDevice::connect(peer_options(dir, "host"));
  // Act 3's guest program has exited, but the daemon may not have seen its
  // socket close yet: it would refuse QEMU as a second "guest".
  if (device->peer_present(1)) {
    EventQueue(*device).wait_for("act 3's guest to leave", [](const DeviceEvent& event) {
      return event.kind == DeviceEvent::Kind::peer_left && event.peer == 1;
    });
  }
  auto session = std::make_unique<Session>(*device);
  Channel channel = session->open("demo");
  GuestVm vm(guest_command(qemu, image, dir));
  say("linux", "booting Linux guest {} in QEMU (TCG, 1 CPU, 256 MiB) as cell 'guest' (pid {})",
      std::filesystem::canonical(image / "vmlinuz").filename().string(), vm.pid());
  try {
    await_guest(vm, channel);
    say("host",
        "Linux booted and its cellink-guest-echo connected channel 'demo' {:.1f} s after "
        "QEMU started",
        vm.seconds());
    const std::vector<std::string> texts = {"hello, Linux guest", "ping over ivshmem",
                                            "doorbells cross the VM boundary", "bye"};
    for (const std::string& text : texts) {
      auto [echo, micros] = round_trip(channel, std::as_bytes(std::span{text.data(), text.size()}),
                                       kGuestStepTimeout);
      if (text_of(echo) != "guest echo: " + text) {
        throw std::runtime_error("the guest answered '" + text_of(echo) + "' to '" + text + "'");
      }
      say("host", "sent '{}', got '{}' in {:.0f} us", text, text_of(echo), micros);
    }
    channel.close();  // the Session must outlive its Channels
    session.reset();  // the guest sees the channel close and the reset
    device.reset();   // leaves the link
    say("host", "left the link; the guest reports and powers off");
    const std::string expected =
        fmt::format("CELLINK-GUEST-RESULT: ok echo messages={}", texts.size());
    const std::optional<std::string> result =
        vm.wait_line("CELLINK-GUEST-RESULT", Clock::now() + kGuestStepTimeout);
    if (!result) throw std::runtime_error("the guest printed no result");
    if (*result != expected) throw std::runtime_error("the guest reported: " + *result);
    const std::optional<int> status = vm.wait_exit(Clock::now() + kGuestStepTimeout);
    if (!status) throw std::runtime_error("QEMU did not exit after the guest powered off");
    if (*status != 0) throw std::runtime_error(fmt::format("QEMU exited with status {}", *status));
    say("linux", "QEMU exited (status 0) {:.1f} s after it started", vm.seconds());
  } catch (const std::exception&) {
    vm.print_console();
    throw;
  }
}

}  // namespace

void demo_linux_guest(const std::filesystem::path& dir, const DemoArgs& args) {
  fmt::print("\n");
  const std::filesystem::path image = args.guest_image.value_or(CELLINK_GUEST_IMAGE_DIR);
  const std::string qemu = find_guest_runner(args, image);
  if (!qemu.empty()) exchange_with_guest(dir, image, qemu);
}

}  // namespace cellink::cli::demo
