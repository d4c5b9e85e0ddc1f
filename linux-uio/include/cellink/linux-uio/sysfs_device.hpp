// SysfsDevice: QEMU's ivshmem-doorbell through the PCI function's sysfs
// resource files, with no driver at all. The POLLING FALLBACK: no driver
// enables MSI-X, so no interrupt ever reaches this process; wait() wakes up
// once per poll interval (1 ms by default) and reports every vector as rung.
// That costs a wake-up per interval even on an idle link and adds up to one
// interval to every message's latency. Use it where neither uio_ivshmem
// (uio_device.hpp) nor vfio-pci with an IOMMU (vfio_device.hpp) can be had;
// open_ivshmem_device() (open_device.hpp) picks it last and says so.
//
//   auto device = SysfsDevice::open();   // the only QEMU ivshmem function
//   Session session(*device, {});
//
// open():
//   1. finds the v1 function (locate_ivshmem_v1(), vfio_binding.hpp);
//   2. reads its config space (<dev>/config): the MSI-X capability's table
//      size is the function's vector count (ivshmem-plain has none, and no
//      doorbells); if Memory Space decoding is off in the command register,
//      writes "1" to <dev>/enable (root only; it stays enabled);
//   3. maps <dev>/resource0 (the registers; a BAR smaller than a page is
//      mapped as the page it starts, at the offset <dev>/resource gives) and
//      <dev>/resource2 (the shared memory, whole);
//   4. copies the link descriptor the daemon wrote out once and validates it
//      against BAR2's size (v1_bar_link_geometry(), uio_geometry.hpp), as
//      VfioDevice does.
//
// Another driver may stay bound: the resource files belong to the PCI core.
// But a kernel built with CONFIG_IO_STRICT_DEVMEM (Debian's is) refuses to
// map a BAR that a driver has claimed (uio_ivshmem claims BAR0 and BAR2):
// mmap fails with EINVAL unless the kernel was booted with iomem=relaxed.
// Checked in a guest by tests/qemu/guest_channel_test.cpp.
//
// Only v1: a Jailhouse ivshmem 2.0 function keeps its sections outside its
// BARs; UioDevice handles those.
//
// Doorbells OUT are as VfioDevice's (bar_link_device.hpp): doorbell()
// writes peer << 16 | vector to BAR0 + 0x0c, and QEMU signals the peer's
// eventfd. set_state() release-stores this peer's state-table entry and
// rings vector 0 on the others.
//
// Interrupts IN: none. event_fd() is an epoll fd (InterruptEpoll) over a
// periodic timerfd (poll_interval) and the wake fd; wait() sleeps on it and,
// on each timer expiry, reports one doorbell event (count 1) for every
// vector, after the peer_joined / peer_left changes of the state table
// (StateTableView). The mapping is uncached (resource2, not resource2_wc).
//
// Teardown (destructor): the mappings and fds. The function stays as it
// was found, except that Memory Space decoding stays on if open() turned it
// on.
//
// Threading: wait() from one thread at a time. doorbell(), set_state(),
// peer_state(), peer_present(), stats() and the accessors may be called from
// any thread, concurrently with wait().
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/layout.hpp"
#include "cellink/linux-uio/bar_link_device.hpp"
#include "cellink/linux-uio/interrupt_epoll.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "cellink/linux-uio/waitable_device.hpp"

namespace cellink::linux_uio {

struct SysfsDeviceOptions {
  std::string pci_address;  // "0000:00:03.0"; empty: the only QEMU ivshmem function
  std::filesystem::path sysfs_root = "/sys";
  // How long wait() sleeps before it reports every vector as rung: the
  // latency added to a message, and the period of the idle wake-ups.
  std::chrono::microseconds poll_interval{1000};
};

// What wait() saw; relaxed counters for reports and tests.
struct SysfsDeviceStats {
  std::uint64_t polls = 0;         // timer expiries reported as "every vector rang"
  std::uint64_t poll_wakeups = 0;  // wait() calls with a timeout that a poll ended
};

class SysfsDevice final : public BarLinkDevice {
 public:
  // Throws std::system_error whose what() names the function, the problem
  // and a remedy.
  [[nodiscard]] static std::unique_ptr<SysfsDevice> open(const SysfsDeviceOptions& options = {});
  // As above; on failure returns nullptr and sets `error` and `detail`.
  [[nodiscard]] static std::unique_ptr<SysfsDevice> open(const SysfsDeviceOptions& options,
                                                         std::error_code& error,
                                                         std::string& detail) noexcept;
  ~SysfsDevice() override;

  // Blocks until the next poll, the wake fd, or `timeout` (0 = just poll:
  // reports the vectors only if a poll interval has passed). Throws
  // std::system_error on an unexpected epoll or timerfd failure.
  [[nodiscard]] std::vector<DeviceEvent> wait(std::chrono::milliseconds timeout) override;
  // An epoll fd over the poll timer (and the wake fd): readable once per
  // poll interval.
  [[nodiscard]] int event_fd() const noexcept override { return epoll_.fd(); }
  [[nodiscard]] bool add_wake_fd(int fd) override;

  // Always true: this backend polls. Callers print it (see description()).
  [[nodiscard]] static constexpr bool polling() noexcept { return true; }
  // "the polling fallback, every 1000 us: no driver enables MSI-X, ...".
  [[nodiscard]] std::string description() const;

  [[nodiscard]] const std::string& pci_address() const noexcept { return pci_address_; }
  [[nodiscard]] std::chrono::microseconds poll_interval() const noexcept { return poll_interval_; }
  [[nodiscard]] SysfsDeviceStats stats() const noexcept;

 private:
  struct Mapping {
    std::byte* base = nullptr;
    std::size_t length = 0;
  };

  SysfsDevice() = default;
  void open_device(const SysfsDeviceOptions& options);
  void start_poll_timer();
  [[nodiscard]] std::uint32_t read_register(std::size_t offset) const noexcept;
  void write_doorbell(std::uint32_t value) const noexcept override;
  // Reads the timerfd; false when it had not expired.
  bool collect_poll(std::vector<DeviceEvent>& events);

  std::string pci_address_;
  std::string where_;  // "sysfs 0000:00:03.0", for messages
  std::uint64_t page_size_ = 0;
  std::chrono::microseconds poll_interval_{0};

  UniqueFd timer_;        // periodic, every poll_interval_
  InterruptEpoll epoll_;  // over timer_ and the wake fd
  Mapping register_map_;
  Mapping shmem_map_;
  volatile std::uint32_t* registers_ = nullptr;  // MMIO: volatile, aligned 32-bit accesses

  // Relaxed: a counter for reports, it orders nothing.
  std::atomic<std::uint64_t> polls_{0};
};

}  // namespace cellink::linux_uio
