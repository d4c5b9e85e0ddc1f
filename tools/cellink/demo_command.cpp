// `cellink demo`: a private daemon with the embedded config, two host peers
// in two processes, doorbells and state changes both ways, then a clean exit
// that leaves no process and no socket behind.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "cellink/ivshmem/peer_state.hpp"
#include "cellink/linux-uio/host_device.hpp"
#include "commands.hpp"

namespace cellink::cli {
namespace {

using linux_uio::DeviceEvent;
using linux_uio::HostDevice;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kStepTimeout{10000};

template <typename... Args>
void say(const char* who, fmt::format_string<Args...> format, Args&&... args) {
  fmt::print("[{:<6}] {}\n", who, fmt::format(format, std::forward<Args>(args)...));
  std::fflush(stdout);
}

std::string describe_state(std::uint32_t raw) {
  ivshmem::PeerState state;
  if (!ivshmem::PeerState::decode(raw, state)) return fmt::format("invalid ({:#x})", raw);
  return fmt::format("{} epoch {}", ivshmem::phase_name(state.phase), state.epoch);
}

// Waits until `done` accepts an event; prints nothing. Throws on timeout.
void wait_for(HostDevice& device, const char* what,
              const std::function<bool(const DeviceEvent&)>& done) {
  const Clock::time_point deadline = Clock::now() + kStepTimeout;
  while (Clock::now() < deadline) {
    for (const DeviceEvent& event : device.wait(milliseconds(100))) {
      if (done(event)) return;
    }
  }
  throw std::runtime_error(fmt::format("timed out after 10 s waiting for {}", what));
}

bool is_doorbell(const DeviceEvent& event, std::uint32_t vector) {
  return event.kind == DeviceEvent::Kind::doorbell && event.vector == vector;
}

linux_uio::HostDeviceOptions peer_options(const std::filesystem::path& dir, const char* cell) {
  linux_uio::HostDeviceOptions options;
  options.runtime_dir = dir;
  options.link = "demo";
  options.cell = cell;
  return options;
}

// The guest cell, in its own process.
int run_guest(const std::filesystem::path& dir) {
  try {
    auto guest = HostDevice::connect(peer_options(dir, "guest"));
    say("guest", "attached to link '{}' as peer {} (pid {})", guest->link_name(), guest->id(),
        ::getpid());
    guest->set_state(ivshmem::PeerState{ivshmem::Phase::init, 1}.encode());
    say("guest", "state -> INIT epoch 1 (vector 0 rung on every present peer)");
    std::uint64_t received = 0;
    wait_for(*guest, "3 doorbells on vector 1", [&](const DeviceEvent& event) {
      if (is_doorbell(event, 1)) received += event.count;
      return received >= 3;
    });
    say("guest", "got {} doorbell(s) on vector 1; ringing the host's vector 1 back", received);
    if (guest->doorbell(0, 1) != ivshmem::DoorbellStatus::ok) {
      throw std::runtime_error("doorbell to the host failed");
    }
    wait_for(*guest, "the host to reach RUN", [&](const DeviceEvent& event) {
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

int exit_code(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int run_demo(const std::optional<std::filesystem::path>& requested_dir) {
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
  pid_t guest = -1;
  int result = 1;
  try {
    if (!wait_for_daemon(dir, daemon)) throw std::runtime_error("the daemon did not start");
    say("daemon", "pid {} serves the embedded config: link 'demo', cells host=0 and guest=1",
        daemon);

    guest = spawn([&] { return run_guest(dir); });
    auto host = HostDevice::connect(peer_options(dir, "host"));
    say("host",
        "attached to link '{}' as peer {}: {} KiB memory, {} vectors, output section "
        "{} KiB",
        host->link_name(), host->id(), host->layout().memory_size() / 1024, host->vector_count(),
        host->own_output_section().size() / 1024);
    if (!host->peer_present(1)) {
      wait_for(*host, "the guest to join", [](const DeviceEvent& event) {
        return event.kind == DeviceEvent::Kind::peer_joined && event.peer == 1;
      });
    }
    say("host", "peer 1 (guest) is present");
    if (host->peer_state(1) == 0) {
      wait_for(*host, "the guest's INIT state", [&](const DeviceEvent& event) {
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
    wait_for(*host, "the guest's answer on vector 1",
             [](const DeviceEvent& event) { return is_doorbell(event, 1); });
    say("host", "vector 1 fired: the guest answered");

    fmt::print("\n$ cellink status --runtime-dir {}\n", dir.string());
    std::fflush(stdout);
    (void)run_status(dir, false);
    std::cout << std::endl;

    say("host", "state -> RUN epoch 1");
    host->set_state(ivshmem::PeerState{ivshmem::Phase::run, 1}.encode());
    wait_for(*host, "the guest to leave", [](const DeviceEvent& event) {
      return event.kind == DeviceEvent::Kind::peer_left && event.peer == 1;
    });
    say("host", "peer 1 left; the daemon reset its state entry to {} and rang vector 0",
        host->peer_state(1));
    if (host->peer_state(1) != 0) throw std::runtime_error("the guest's state entry is not 0");
    if (exit_code(guest) != 0) throw std::runtime_error("the guest process failed");
    guest = -1;
    result = 0;
  } catch (const std::exception& error) {
    say("host", "FAILED: {}", error.what());
  }

  if (guest > 0) {
    ::kill(guest, SIGKILL);
    (void)exit_code(guest);
  }
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
