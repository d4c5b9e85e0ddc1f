// InterruptEpoll: how the kernel-device backends (UioDevice, VfioDevice)
// sleep. One epoll set holds the device's interrupt fds, each with a tag the
// backend chooses, and at most one wake-up fd (WaitableDevice::add_wake_fd)
// under kWakeTag. It also keeps the interrupt counters the backends report
// (InterruptStats). A building block of the backends, like StateTableView.
//
// Threading: open() and watch() before the first wait(); wait() and
// count_interrupts() (from collect) from one thread at a time; fd() and
// stats() from any thread.
#pragma once

#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::linux_uio {

// The deadline of a wait(timeout). A timeout of years is "forever":
// now() + milliseconds::max() would overflow into the past.
[[nodiscard]] inline std::chrono::steady_clock::time_point wait_deadline(
    std::chrono::milliseconds timeout) noexcept {
  constexpr std::chrono::milliseconds kNoDeadline = std::chrono::hours{24 * 365 * 100};
  return timeout >= kNoDeadline ? std::chrono::steady_clock::time_point::max()
                                : std::chrono::steady_clock::now() + timeout;
}

// epoll_wait()'s timeout (an int of milliseconds, rounded up) from now until
// `deadline`: 0 once it passed, INT_MAX at most (the caller loops).
[[nodiscard]] inline int epoll_timeout_until(
    std::chrono::steady_clock::time_point deadline) noexcept {
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(
      std::clamp<std::int64_t>(left.count(), 0, std::numeric_limits<int>::max()));
}

// What a kernel-device backend's wait() saw; relaxed counters for reports
// and tests.
struct InterruptStats {
  std::uint64_t interrupts = 0;         // interrupts, as the kernel counted them
  std::uint64_t interrupt_wakeups = 0;  // wait() calls with a timeout that an interrupt ended
  std::uint64_t reads = 0;              // reads of an interrupt fd that returned a count
};

class InterruptEpoll {
 public:
  static constexpr std::uint64_t kWakeTag = std::numeric_limits<std::uint64_t>::max();

  // `where` ("/dev/uio0", "vfio 0000:00:02.0") starts every error message.
  void open(std::string where) {
    where_ = std::move(where);
    epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) fail(errno, ": epoll_create1");
  }

  [[nodiscard]] int fd() const noexcept { return epoll_.get(); }

  // Adds `fd` (readable = something to collect) under `tag`. `unpollable`
  // is the message for an fd that epoll refuses (EPERM: a regular file).
  void watch(int fd, std::uint64_t tag, const char* unpollable = "cannot be polled") {
    epoll_event watch{};
    watch.events = EPOLLIN;
    watch.data.u64 = tag;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &watch) != 0) {
      const int error = errno;
      fail(error, std::string(": ") + (error == EPERM ? unpollable : "epoll_ctl failed"));
    }
  }

  // Sleeps until `collect(tag)` returns true for a ready fd, the wake fd is
  // readable (wait() never reads it), or `timeout` passes (0 = just look).
  // Returns true when collect() did. Level-triggered: fds beyond one batch
  // stay readable for the next call. Throws on an epoll failure.
  template <typename Collect>
  bool wait(std::chrono::milliseconds timeout, Collect&& collect) {
    const std::chrono::steady_clock::time_point deadline = wait_deadline(timeout);
    bool collected = false;
    for (;;) {
      std::array<epoll_event, 8> ready{};
      const int count = ::epoll_wait(epoll_.get(), ready.data(), static_cast<int>(ready.size()),
                                     epoll_timeout_until(deadline));
      if (count < 0) {
        if (errno == EINTR) continue;
        fail(errno, ": epoll_wait");
      }
      bool woken = false;
      for (int i = 0; i < count; ++i) {
        const std::uint64_t tag = ready[static_cast<std::size_t>(i)].data.u64;
        if (tag == kWakeTag) {
          woken = true;
        } else if (collect(tag)) {
          collected = true;
        }
      }
      if (collected || woken || std::chrono::steady_clock::now() >= deadline) break;
    }
    if (collected && timeout.count() > 0) {
      interrupt_wakeups_.fetch_add(1, std::memory_order_relaxed);
    }
    return collected;
  }

  // For collect: one read of an interrupt fd returned `interrupts`.
  void count_interrupts(std::uint64_t interrupts) noexcept {
    reads_.fetch_add(1, std::memory_order_relaxed);
    interrupts_.fetch_add(interrupts, std::memory_order_relaxed);
  }

  [[nodiscard]] InterruptStats stats() const noexcept {
    return {interrupts_.load(std::memory_order_relaxed),
            interrupt_wakeups_.load(std::memory_order_relaxed),
            reads_.load(std::memory_order_relaxed)};
  }

 private:
  [[noreturn]] void fail(int error, const std::string& what) const {
    throw std::system_error(error, std::generic_category(), where_ + what);
  }

  UniqueFd epoll_;
  std::string where_;
  // Relaxed: counters for reports, they order nothing.
  std::atomic<std::uint64_t> interrupts_{0};
  std::atomic<std::uint64_t> interrupt_wakeups_{0};
  std::atomic<std::uint64_t> reads_{0};
};

}  // namespace cellink::linux_uio
