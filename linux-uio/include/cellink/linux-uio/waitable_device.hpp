// WaitableDevice: an ivshmem::Device that a Linux thread can sleep on.
//
// The message layer (Session) needs more than the freestanding Device: a way
// to block until a doorbell or a membership change arrives, and an fd that
// Boost.Asio or epoll can watch. HostDevice (daemon socket) and
// LoopbackDevice (in-process links for tests and benchmarks) implement it;
// the UIO and VFIO backends will too.
//
// Threading: wait() from one thread at a time; event_fd() from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "cellink/ivshmem/device.hpp"

namespace cellink::linux_uio {

struct DeviceEvent {
  enum class Kind : std::uint8_t {
    doorbell,           // `vector` fired `count` times since the last wait()
    peer_joined,        // `peer` is now present
    peer_left,          // `peer` left (its state entry reads 0)
    daemon_lost,        // the daemon connection closed; doorbells still work
    daemon_reattached,  // a (restarted) daemon accepted us again
    reattach_refused,   // the daemon refused to re-attach us; `detail` says why
  };
  Kind kind = Kind::doorbell;
  std::uint32_t vector = 0;
  std::uint64_t count = 0;
  std::uint32_t peer = 0;
  std::string detail;
};

[[nodiscard]] const char* event_kind_name(DeviceEvent::Kind kind) noexcept;

class WaitableDevice : public ivshmem::Device {
 public:
  virtual ~WaitableDevice() = default;

  // Blocks until at least one event is available or `timeout` passes
  // (0 = just poll), and returns every event collected, in arrival order.
  [[nodiscard]] virtual std::vector<DeviceEvent> wait(std::chrono::milliseconds timeout) = 0;

  // An fd that becomes readable whenever wait() would return events.
  [[nodiscard]] virtual int event_fd() const noexcept = 0;

  // Makes wait() also return (maybe with no events) once `fd` is readable.
  // wait() never reads `fd`: the caller resets it. Lets one thread sleep in
  // a single system call on the device and on its own wake-up eventfd.
  // False when the device cannot; the caller then polls event_fd() and its
  // fd together. At most one fd, added before the first wait().
  [[nodiscard]] virtual bool add_wake_fd(int fd) {
    (void)fd;
    return false;
  }

 protected:
  WaitableDevice() = default;
};

}  // namespace cellink::linux_uio
