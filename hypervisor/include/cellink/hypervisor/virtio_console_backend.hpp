// VirtioConsoleBackend: one cell's virtio-console device on the host, the
// back end that `cellink console serve` runs per [[console]] (spec:
// docs/console.md, docs/virtio-over-ivshmem.md).
//
// It attaches to the console link as the link's other cell (a HostDevice on
// the daemon's socket), runs the transport's device half
// (VirtioIvshmemDevice) on it and moves bytes between the device's two
// queues and the cell's Console:
//   - transmit queue (1): every readable buffer the guest offers goes to
//     Console::guest_output(), and the chain is returned at once;
//   - receive queue (0): while the Console holds typed input, it fills the
//     guest's writable buffers with Console::take_input().
// The terminal size of the typing viewer (or the PTY) is the device config
// (VIRTIO_CONSOLE_F_SIZE), updated on every resize.
//
// It wakes on the link's doorbells (the HostDevice's event fd on the
// service's loop), on typed input, and on a slow safety poll. After it moved
// data it keeps polling for a short spin before it arms the queues and
// sleeps: a guest that streams output then rarely waits for a wake-up.
//
// Restarts: the guest leaving (its state drops to 0) resets the device and
// the back end waits for the next boot on the same Console, so the new
// boot's output lands on the same PTY and log. The daemon being away is
// survived by HostDevice's re-attach. This object going away (the service
// stops) sets its state to 0: the guest's front end then sees a device
// reset and probes again when a new back end is READY.
//
// Threading: the service's loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cellink/hypervisor/console.hpp"
#include "cellink/hypervisor/console_loop.hpp"
#include "cellink/linux-uio/host_device.hpp"
#include "cellink/transports/virtio_ivshmem_device.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"

namespace cellink::hypervisor {

struct VirtioConsoleBackendOptions {
  std::filesystem::path runtime_dir;  // the daemon's runtime dir
  std::string link;                   // the console link
  std::string backend_cell;           // our cell on that link
  // How long to keep polling the queues after the last byte moved.
  std::chrono::microseconds spin{100};
  // Retry interval while the daemon or the link cannot be reached.
  std::chrono::milliseconds connect_retry{250};
};

class VirtioConsoleBackend {
 public:
  // The largest queue the device offers.
  static constexpr std::uint16_t kMaxQueueSize = 256;

  // Starts connecting at once (and again every connect_retry while it fails).
  VirtioConsoleBackend(ConsoleLoop& loop, Console& console, VirtioConsoleBackendOptions options);
  ~VirtioConsoleBackend();
  VirtioConsoleBackend(const VirtioConsoleBackend&) = delete;
  VirtioConsoleBackend& operator=(const VirtioConsoleBackend&) = delete;

  // The queue size offered for an R/W section of `rw_bytes`: half of the pool
  // is enough for a Linux guest's page-sized receive buffers, one per entry.
  [[nodiscard]] static std::uint16_t queue_size_for(std::uint64_t rw_bytes) noexcept;

  [[nodiscard]] bool running() const noexcept { return device_.running(); }

 private:
  using Device =
      transports::VirtioIvshmemDevice<transports::virtio_console::kQueueCount, kMaxQueueSize, 16>;

  void try_connect();
  void on_link_event();
  // Services the device and moves data until nothing moved for `spin`.
  void pump();
  // Guest output: returns the chains taken from the transmit queue.
  std::uint64_t drain_transmit();
  // Typed input: returns the chains of the receive queue it filled.
  std::uint64_t fill_receive();
  void resize_guest();
  void report_state();
  [[nodiscard]] transports::VirtioConsoleConfig device_config() const;

  ConsoleLoop& loop_;
  Console& console_;
  VirtioConsoleBackendOptions options_;
  std::unique_ptr<linux_uio::HostDevice> link_;
  Device device_;
  std::vector<std::byte> output_;  // one drain's guest output, reused
  int poll_timer_ = -1;
  std::string connect_error_;
  std::string last_state_;
  bool pumping_ = false;
};

}  // namespace cellink::hypervisor
