// The pieces the acts of `cellink demo` share (demo_command.cpp runs acts 1
// to 3 and the whole demo; demo_guest.cpp is act 4, the Linux guest;
// demo_inmate.cpp is act 5, the bare-metal inmate).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/host_device.hpp"
#include "commands.hpp"

namespace cellink::cli::demo {

using linux_uio::Channel;
using linux_uio::DeviceEvent;
using linux_uio::HostDevice;
using linux_uio::Message;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// How long one step of an act may take.
inline constexpr milliseconds kStepTimeout{10000};

// One line of the demo's output: "[who   ] text".
template <typename... Args>
void say(const char* who, fmt::format_string<Args...> format, Args&&... args) {
  fmt::print("[{:<6}] {}\n", who, fmt::format(format, std::forward<Args>(args)...));
  std::fflush(stdout);
}

// Hands a HostDevice's events to the demo's steps in order. One wait() may
// return several events; those after the one a step accepts stay queued for
// the next step instead of being dropped with the batch.
class EventQueue {
 public:
  explicit EventQueue(HostDevice& device) : device_(device) {}

  // Consumes events until `done` accepts one; prints nothing. Throws on
  // timeout.
  void wait_for(const char* what, const std::function<bool(const DeviceEvent&)>& done) {
    const Clock::time_point deadline = Clock::now() + kStepTimeout;
    for (;;) {
      while (!pending_.empty()) {
        const DeviceEvent event = std::move(pending_.front());
        pending_.pop_front();
        if (done(event)) return;
      }
      if (Clock::now() >= deadline) {
        throw std::runtime_error(fmt::format("timed out after 10 s waiting for {}", what));
      }
      for (DeviceEvent& event : device_.wait(milliseconds(100))) {
        pending_.push_back(std::move(event));
      }
    }
  }

 private:
  HostDevice& device_;
  std::deque<DeviceEvent> pending_;
};

// HostDevice options for `cell` on link 'demo' under `dir`.
[[nodiscard]] linux_uio::HostDeviceOptions peer_options(const std::filesystem::path& dir,
                                                        const char* cell);

// waitpid() for `pid`; its exit status, 128 + signal, or -1.
int exit_code(pid_t pid);

// A message's payload as text.
[[nodiscard]] std::string text_of(const Message& message);

// Sends `message` and returns the echo and the round trip in microseconds.
std::pair<Message, double> round_trip(Channel& channel, std::span<const std::byte> message,
                                      milliseconds timeout = kStepTimeout);

// Act 4 (demo_guest.cpp): a Linux guest under QEMU as cell "guest", or one
// line saying why it is skipped. Throws when the guest fails.
void demo_linux_guest(const std::filesystem::path& dir, const DemoArgs& args);

// Act 5 (demo_inmate.cpp): the bare-metal inmate-echo under QEMU as cell
// "guest", or one line saying why it is skipped. Throws when it fails.
void demo_inmate(const std::filesystem::path& dir, const DemoArgs& args);

}  // namespace cellink::cli::demo
