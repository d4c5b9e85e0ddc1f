// `cellink demo`: a private daemon with the embedded config and, on its link
// 'demo', four acts:
//   1. two host peers in two processes ring doorbells and change states both
//      ways (the device layer, HostDevice);
//   2. two Sessions in two processes open channel "demo" and exchange
//      messages, one of them fragmented, with round-trip times (the message
//      layer);
//   3. the example programs, when they were built next to this binary
//      (CELLINK_EXAMPLES_DIR): ping-pong blocking and with Asio callbacks,
//      and Cap'n Proto telemetry received in a C++20 coroutine;
//   4. a Linux guest (demo_guest.cpp): QEMU (TCG) boots the test guest
//      image as cell "guest", whose cellink-guest-echo echoes this process's
//      messages through uio_ivshmem. Skipped, saying why, without QEMU,
//      without the image or with --no-guest;
//   5. a bare-metal inmate (demo_inmate.cpp): QEMU (TCG) boots
//      examples/inmate-echo as cell "guest", which echoes this process's
//      messages, woken by MSI-X doorbells. Skipped, saying why, without QEMU,
//      without the ELF or with --no-inmate.
// Then a clean exit that leaves no process and no socket behind.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cellink/ivshmem/peer_state.hpp"
#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/host_device.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"
#include "commands.hpp"
#include "demo_steps.hpp"

extern char** environ;

namespace cellink::cli {

namespace demo {

linux_uio::HostDeviceOptions peer_options(const std::filesystem::path& dir, const char* cell) {
  linux_uio::HostDeviceOptions options;
  options.runtime_dir = dir;
  options.link = "demo";
  options.cell = cell;
  return options;
}

int exit_code(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string text_of(const Message& message) {
  return {reinterpret_cast<const char*>(message.payload().data()), message.size()};
}

// Sends `message` and returns the echo and the round trip in microseconds.
std::pair<Message, double> round_trip(Channel& channel, std::span<const std::byte> message,
                                      milliseconds timeout) {
  const Clock::time_point start = Clock::now();
  if (const std::error_code error = channel.send(message, timeout)) {
    throw std::runtime_error("send: " + error.message());
  }
  Message echo = channel.receive(timeout);
  const double micros = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  if (!echo) throw std::runtime_error("echo: " + echo.error().message());
  return {std::move(echo), micros};
}

}  // namespace demo

namespace {

// The acts' shared pieces, with Channel, DeviceEvent, HostDevice, Message,
// milliseconds and Clock.
using namespace demo;  // NOLINT(google-build-using-namespace)

using linux_uio::MessageErrc;
using linux_uio::Session;

// How long one example program pair may run.
constexpr milliseconds kExampleTimeout{15000};

std::string describe_state(std::uint32_t raw) {
  ivshmem::PeerState state;
  if (!ivshmem::PeerState::decode(raw, state)) return fmt::format("invalid ({:#x})", raw);
  return fmt::format("{} epoch {}", ivshmem::phase_name(state.phase), state.epoch);
}

bool is_doorbell(const DeviceEvent& event, std::uint32_t vector) {
  return event.kind == DeviceEvent::Kind::doorbell && event.vector == vector;
}

// The guest cell, in its own process.
int run_guest(const std::filesystem::path& dir) {
  try {
    auto guest = HostDevice::connect(peer_options(dir, "guest"));
    say("guest", "attached to link '{}' as peer {} (pid {})", guest->link_name(), guest->id(),
        ::getpid());
    EventQueue events(*guest);
    // set_state() rings only the peers this device knows: a host whose join
    // is not processed yet would read state 0 and then miss the doorbell.
    if (!guest->peer_present(0)) {
      events.wait_for("the host to join", [](const DeviceEvent& event) {
        return event.kind == DeviceEvent::Kind::peer_joined && event.peer == 0;
      });
    }
    guest->set_state(ivshmem::PeerState{ivshmem::Phase::init, 1}.encode());
    say("guest", "state -> INIT epoch 1 (vector 0 rung on every present peer)");
    std::uint64_t received = 0;
    events.wait_for("3 doorbells on vector 1", [&](const DeviceEvent& event) {
      if (is_doorbell(event, 1)) received += event.count;
      return received >= 3;
    });
    say("guest", "got {} doorbell(s) on vector 1; ringing the host's vector 1 back", received);
    if (guest->doorbell(0, 1) != ivshmem::DoorbellStatus::ok) {
      throw std::runtime_error("doorbell to the host failed");
    }
    events.wait_for("the host to reach RUN", [&](const DeviceEvent& event) {
      ivshmem::PeerState host;
      return is_doorbell(event, 0) && ivshmem::PeerState::decode(guest->peer_state(0), host) &&
             host.phase == ivshmem::Phase::run;
    });
    say("guest", "sees the host in {}; leaving the link", describe_state(guest->peer_state(0)));
    return 0;
  } catch (const std::exception& error) {
    say("guest", "FAILED: {}", error.what());
    return 1;
  }
}

// The guest cell of act 2, in its own process: echoes every message on
// channel "demo" until the host leaves the link.
int run_channel_guest(const std::filesystem::path& dir) {
  try {
    std::unique_ptr<Session> session = Session::connect(peer_options(dir, "guest"));
    Channel channel = session->open("demo");
    say("guest", "session attached as peer {} (pid {}); opened channel 'demo', echoing",
        session->id(), ::getpid());
    std::uint64_t echoed = 0;
    for (;;) {
      Message message = channel.receive(kStepTimeout);
      // The host closes the channel, then leaves: either ends the echoing.
      if (message.error() == MessageErrc::channel_closed ||
          message.error() == MessageErrc::peer_reset) {
        break;
      }
      if (!message) throw std::runtime_error("receive: " + message.error().message());
      if (const std::error_code error = channel.send(message.payload(), kStepTimeout)) {
        throw std::runtime_error("echo: " + error.message());
      }
      ++echoed;
    }
    say("guest", "echoed {} messages; the host left, leaving too", echoed);
    return 0;
  } catch (const std::exception& error) {
    say("guest", "FAILED: {}", error.what());
    return 1;
  }
}

pid_t spawn(const std::function<int()>& body) {
  std::fflush(stdout);
  const pid_t pid = ::fork();
  if (pid == 0) std::_Exit(body());
  if (pid < 0) throw std::runtime_error("fork failed");
  return pid;
}

bool wait_for_daemon(const std::filesystem::path& dir, pid_t daemon) {
  const Clock::time_point deadline = Clock::now() + milliseconds(10000);
  while (Clock::now() < deadline) {
    std::string error;
    if (query_status(dir, error)) return true;
    int status = 0;
    if (::waitpid(daemon, &status, WNOHANG) == daemon) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

// A child process that is killed and reaped if it is still running when
// the Child goes away, so a failing act leaves nothing behind.
class Child {
 public:
  Child(std::string name, pid_t pid) : name_(std::move(name)), pid_(pid) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    (void)exit_code(pid_);
  }

  // Waits until `deadline` for the exit; throws unless it exited with 0.
  void expect_success(Clock::time_point deadline) {
    int status = 0;
    for (;;) {
      const pid_t reaped = ::waitpid(pid_, &status, WNOHANG);
      if (reaped == pid_) break;
      if (reaped < 0) throw std::runtime_error(name_ + ": waitpid failed");
      if (Clock::now() >= deadline) {
        throw std::runtime_error(fmt::format("{} did not finish in time; killed", name_));
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error(
          fmt::format("{} failed ({} {})", name_, WIFEXITED(status) ? "exit status" : "signal",
                      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)));
    }
  }

 private:
  std::string name_;
  pid_t pid_;
};

// Act 1: doorbells and peer states, straight on two HostDevices.
void demo_doorbells(const std::filesystem::path& dir) {
  Child guest("the guest", spawn([&] { return run_guest(dir); }));
  auto host = HostDevice::connect(peer_options(dir, "host"));
  say("host",
      "attached to link '{}' as peer {}: {} KiB memory, {} vectors, output section "
      "{} KiB",
      host->link_name(), host->id(), host->layout().memory_size() / 1024, host->vector_count(),
      host->own_output_section().size() / 1024);
  EventQueue events(*host);
  if (!host->peer_present(1)) {
    events.wait_for("the guest to join", [](const DeviceEvent& event) {
      return event.kind == DeviceEvent::Kind::peer_joined && event.peer == 1;
    });
  }
  say("host", "peer 1 (guest) is present");
  if (host->peer_state(1) == 0) {
    events.wait_for("the guest's INIT state", [&](const DeviceEvent& event) {
      return is_doorbell(event, 0) && host->peer_state(1) != 0;
    });
  }
  say("host", "vector 0 fired: guest state is {}", describe_state(host->peer_state(1)));
  for (int ring = 0; ring < 3; ++ring) {
    if (host->doorbell(1, 1) != ivshmem::DoorbellStatus::ok) {
      throw std::runtime_error("doorbell to the guest failed");
    }
  }
  say("host", "rang the guest's vector 1 three times");
  events.wait_for("the guest's answer on vector 1",
                  [](const DeviceEvent& event) { return is_doorbell(event, 1); });
  say("host", "vector 1 fired: the guest answered");

  fmt::print("\n$ cellink status --runtime-dir {}\n", dir.string());
  std::fflush(stdout);
  (void)run_status(dir, false);
  std::cout << std::endl;

  say("host", "state -> RUN epoch 1");
  host->set_state(ivshmem::PeerState{ivshmem::Phase::run, 1}.encode());
  events.wait_for("the guest to leave", [](const DeviceEvent& event) {
    return event.kind == DeviceEvent::Kind::peer_left && event.peer == 1;
  });
  say("host", "peer 1 left; the daemon reset its state entry to {} and rang vector 0",
      host->peer_state(1));
  if (host->peer_state(1) != 0) throw std::runtime_error("the guest's state entry is not 0");
  guest.expect_success(Clock::now() + kStepTimeout);
}

// Act 2: named channels over the link's rings, between two Sessions.
void demo_channels(const std::filesystem::path& dir) {
  fmt::print("\n");
  // Forked while this process has no other thread (the Session makes one).
  Child guest("the channel guest", spawn([&] { return run_channel_guest(dir); }));
  std::unique_ptr<Session> session = Session::connect(peer_options(dir, "host"));
  Channel channel = session->open("demo");
  if (const std::error_code error = channel.wait_connected(kStepTimeout)) {
    throw std::runtime_error("channel 'demo': the guest did not open it: " + error.message());
  }
  say("host", "session epoch {}: channel 'demo' connected; one record carries {} B",
      session->epoch(), session->max_record_payload());

  std::vector<double> round_trips;
  for (int n = 0; n < 5; ++n) {
    const std::string text = fmt::format("hello #{}", n);
    auto [echo, micros] = round_trip(channel, std::as_bytes(std::span{text.data(), text.size()}));
    if (text_of(echo) != text) throw std::runtime_error("echo '" + text_of(echo) + "' of " + text);
    round_trips.push_back(micros);
  }
  say("host", "5 messages 'hello #n' echoed; round trips {:.1f} us", fmt::join(round_trips, " "));

  const std::size_t record = session->max_record_payload();
  std::vector<std::byte> large(3 * record + 1000);
  for (std::size_t i = 0; i < large.size(); ++i) large[i] = static_cast<std::byte>(i * 7 + i / 251);
  auto [echo, micros] = round_trip(channel, large);
  if (echo.size() != large.size() ||
      !std::equal(large.begin(), large.end(), echo.payload().begin())) {
    throw std::runtime_error("the fragmented message came back different");
  }
  say("host", "a {} B message went as {} fragments each way and came back intact in {:.0f} us",
      large.size(), (large.size() + record - 1) / record, micros);
  echo.release();
  channel.close();  // the Session must outlive its Channels
  session.reset();  // leaves the link: the guest sees peer_reset and exits
  say("host", "left the link");
  guest.expect_success(Clock::now() + kStepTimeout);
}

// Starts `argv` (argv[0] a path) with this process's stdout and stderr.
pid_t start_program(const std::vector<std::string>& argv) {
  std::vector<char*> pointers;
  pointers.reserve(argv.size() + 1);
  for (const std::string& argument : argv) pointers.push_back(const_cast<char*>(argument.c_str()));
  pointers.push_back(nullptr);
  std::fflush(stdout);
  pid_t pid = -1;
  const int error =
      ::posix_spawn(&pid, argv[0].c_str(), nullptr, nullptr, pointers.data(), environ);
  if (error != 0) {
    throw std::runtime_error(fmt::format("cannot start {}: {}", argv[0], std::strerror(error)));
  }
  return pid;
}

// Runs an example pair: `guest` first (it waits for the host), then `host`.
void run_example(const std::string& what, const std::vector<std::string>& guest_argv,
                 const std::vector<std::string>& host_argv) {
  auto shown = [](const std::vector<std::string>& argv) {
    return fmt::format("{} {}", std::filesystem::path(argv[0]).filename().string(),
                       fmt::join(argv.begin() + 1, argv.end(), " "));
  };
  fmt::print("\n--- {}\n$ {} &\n$ {}\n", what, shown(guest_argv), shown(host_argv));
  const Clock::time_point deadline = Clock::now() + kExampleTimeout;
  Child guest(shown(guest_argv), start_program(guest_argv));
  Child host(shown(host_argv), start_program(host_argv));
  host.expect_success(deadline);
  guest.expect_success(deadline);
}

// Act 3: the example programs, when they were built next to this binary.
void demo_examples(const std::filesystem::path& dir) {
  const std::filesystem::path bin = CELLINK_EXAMPLES_DIR;
  const std::vector<std::string> programs = {"cellink-ping-pong", "cellink-ping-pong-async",
                                             "cellink-telemetry-producer",
                                             "cellink-telemetry-consumer"};
  std::vector<std::string> missing;
  for (const std::string& program : programs) {
    if (::access((bin / program).c_str(), X_OK) != 0) missing.push_back(program);
  }
  if (!missing.empty()) {
    say("demo",
        "skipping the example programs: {} not found in {} (build them with: cmake "
        "--build <build dir> --target {})",
        fmt::join(missing, ", "), bin.string(), fmt::join(programs, " "));
    return;
  }
  auto command = [&](const std::string& program, const char* cell,
                     std::vector<std::string> arguments) {
    std::vector<std::string> argv = {(bin / program).string(), "--runtime-dir", dir.string(),
                                     "--cell", cell};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    return argv;
  };
  run_example("ping-pong, blocking receive (adaptive: spin, then sleep)",
              command("cellink-ping-pong", "guest", {"--role", "pong"}),
              command("cellink-ping-pong", "host", {"--role", "ping", "--count", "2000"}));
  run_example("ping-pong with AsyncChannel and callbacks",
              command("cellink-ping-pong-async", "guest", {"--role", "pong"}),
              command("cellink-ping-pong-async", "host", {"--role", "ping", "--count", "2000"}));
  run_example("typed telemetry: Cap'n Proto built in the ring, read in a C++20 coroutine",
              command("cellink-telemetry-consumer", "guest", {"--count", "300"}),
              command("cellink-telemetry-producer", "host", {"--count", "300", "--rate", "2000"}));
}

}  // namespace

int run_demo(const DemoArgs& args) {
  const std::optional<std::filesystem::path>& requested_dir = args.runtime_dir;
  std::filesystem::path dir;
  if (requested_dir) {
    dir = *requested_dir;
  } else {
    std::string pattern = (std::filesystem::temp_directory_path() / "cellink-demo-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir = pattern;
  }
  fmt::print("cellink demo: private runtime dir {}\n", dir.string());

  const std::string dir_text = dir.string();
  const pid_t daemon = spawn([&] {
    ::execl("/proc/self/exe", "cellink", "daemon", "--runtime-dir", dir_text.c_str(), "--log-level",
            "warn", static_cast<char*>(nullptr));
    std::perror("cellink demo: exec cellink daemon");
    return 127;
  });
  int result = 1;
  try {
    if (!wait_for_daemon(dir, daemon)) throw std::runtime_error("the daemon did not start");
    say("daemon", "pid {} serves the embedded config: link 'demo', cells host=0 and guest=1",
        daemon);
    demo_doorbells(dir);
    demo_channels(dir);
    demo_examples(dir);
    demo_linux_guest(dir, args);
    demo_inmate(dir, args);
    result = 0;
  } catch (const std::exception& error) {
    std::fflush(stdout);
    say("host", "FAILED: {}", error.what());
  }
  fmt::print("\n");

  ::kill(daemon, SIGTERM);
  const int daemon_status = exit_code(daemon);
  say("daemon", "stopped by SIGTERM (exit status {})", daemon_status);
  if (daemon_status != 0) result = 1;

  std::error_code error;
  const bool leftovers = std::filesystem::exists(dir) && !std::filesystem::is_empty(dir, error);
  if (leftovers) {
    fmt::print("cellink demo: FAILED: the daemon left files in {}\n", dir.string());
    result = 1;
  } else if (!requested_dir) {
    std::filesystem::remove(dir, error);
  }
  fmt::print("cellink demo: {}\n", result == 0 ? "ok, no process or socket left behind" : "FAILED");
  return result;
}

}  // namespace cellink::cli
