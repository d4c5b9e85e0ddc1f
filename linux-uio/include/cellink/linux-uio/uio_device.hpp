// UioDevice: a Linux guest (or Jailhouse cell) as a cell, through an ivshmem
// PCI device bound to uio_ivshmem (linux-uio/kmod; docs/guests.md).
//
//   auto device = UioDevice::open();      // finds the one uio_ivshmem device
//   Session session(*device, {.spin_budget = std::chrono::nanoseconds{0}});
//
// open() finds /dev/uioN (uio_sysfs.hpp), reads its maps from sysfs, maps
// them once (map M at mmap offset M x page size, plus maps/mapM/offset for
// a register BAR smaller than a page) and learns the link's geometry
// (uio_geometry.hpp):
//   v1, QEMU ivshmem-doorbell: the link descriptor the daemon wrote is copied
//       out once and validated against the mapped size; the id is IVPosition.
//       Sections, state table and link layout are the ones HostDevice maps
//       from the daemon's memfd, byte for byte: it is the same memory.
//   v2, Jailhouse ivshmem 2.0 (untested: no v2 device is available to the
//       tests): the id and peer count come from the ID and Maximum Peers
//       registers, the section sizes from the maps, the vector count from the
//       function's MSI-X vectors.
//
// Doorbells: doorbell(peer, vector) writes peer << 16 | vector to the
// Doorbell register (BAR0 + 0x0c). set_state() on v1 release-stores this
// peer's state-table entry in shared memory and rings vector 0 on every
// other peer, as HostDevice does; on v2 it writes the State register and the
// device (the hypervisor) fires vector 0 on the others.
//
// Interrupts: uio_ivshmem coalesces every MSI-X vector into one UIO event:
// read() on /dev/uioN returns the device's interrupt count, never which
// vector fired. So wait() reports, per read, one DeviceEvent{doorbell} for
// every vector 0..vector_count()-1, each with `count` = interrupts since the
// last read (all vectors together). A Session therefore re-reads the state
// table (vector 0: membership) and its rings (the data vector) on every
// interrupt; a spurious vector-0 costs one pass over the peers' headers.
// v2's one-shot mode clears Interrupt Control on each delivery: wait()
// re-arms (write 1 to /dev/uioN) before it returns, so a doorbell dropped
// while disarmed is for data that the caller's re-check after wait() finds.
//
// Membership: a guest has no daemon socket. The state table is the truth: a
// peer is present while its entry is not 0 (the daemon, or the hypervisor,
// writes 0 for a peer that left, then rings vector 0 on the rest). Each
// wait() compares the entries with the previous call and reports
// peer_joined / peer_left for the changes, before the doorbell events.
// peer_present() reads the entry now. Doorbells are written whatever the
// state says (the device drops one to an absent peer), so doorbell() returns
// ok for any peer and vector in range.
//
// Ownership: the object owns the fd and the mappings; every span stays valid
// and at the same address until destruction. Closing a v2 device makes the
// driver write State 0 (the peers see a reset); on v1 a Session's leave()
// publishes RESET before that.
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
#include "cellink/linux-uio/interrupt_epoll.hpp"
#include "cellink/linux-uio/state_table_view.hpp"
#include "cellink/linux-uio/uio_geometry.hpp"
#include "cellink/linux-uio/uio_sysfs.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "cellink/linux-uio/waitable_device.hpp"

namespace cellink::linux_uio {

struct UioDeviceOptions {
  // "uio0": open that UIO device. Empty: the ivshmem function bound to
  // uio_ivshmem at `pci_address`, or the only one (locate_ivshmem_uio()).
  std::string uio;
  std::string pci_address;  // "0000:00:03.0"; only with an empty `uio`
  // Roots of sysfs and of the device nodes; tests point them at a fake tree.
  std::filesystem::path sysfs_root = "/sys";
  std::filesystem::path dev_root = "/dev";
};

// What wait() saw (InterruptStats in interrupt_epoll.hpp).
using UioDeviceStats = InterruptStats;

class UioDevice final : public WaitableDevice {
 public:
  // Throws std::system_error whose what() names the device, the problem and
  // a remedy (load the module, bind the device, fix the QEMU options ...).
  [[nodiscard]] static std::unique_ptr<UioDevice> open(const UioDeviceOptions& options = {});
  // As above; on failure returns nullptr and sets `error` and `detail`.
  [[nodiscard]] static std::unique_ptr<UioDevice> open(const UioDeviceOptions& options,
                                                       std::error_code& error,
                                                       std::string& detail) noexcept;
  ~UioDevice() override;

  // ivshmem::Device
  [[nodiscard]] std::uint32_t id() const noexcept override { return geometry_.id; }
  [[nodiscard]] std::uint32_t peer_count() const noexcept override {
    return geometry_.layout.peers();
  }
  [[nodiscard]] std::uint32_t vector_count() const noexcept override { return geometry_.vectors; }
  // This peer always; another while its state entry is not 0.
  [[nodiscard]] bool peer_present(std::uint32_t peer) const noexcept override;
  // v2: the sizes of the sections; each is mapped on its own, so the
  // offsets only describe the usual contiguous arrangement.
  [[nodiscard]] const ivshmem::Layout& layout() const noexcept override { return geometry_.layout; }
  [[nodiscard]] std::span<std::byte> rw_section() noexcept override { return rw_section_; }
  [[nodiscard]] std::span<std::byte> own_output_section() noexcept override { return own_output_; }
  [[nodiscard]] std::span<const std::byte> output_section(
      std::uint32_t peer) const noexcept override;
  [[nodiscard]] ivshmem::DoorbellStatus doorbell(std::uint32_t peer,
                                                 std::uint32_t vector) noexcept override;
  void set_state(std::uint32_t value) noexcept override;
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer) const noexcept override;

  // Blocks until an interrupt, a membership change, the wake fd, or
  // `timeout` (0 = just poll); see the file comment for the events. Throws
  // std::system_error on an unexpected epoll, read or re-arm failure.
  [[nodiscard]] std::vector<DeviceEvent> wait(std::chrono::milliseconds timeout) override;
  // An epoll fd over /dev/uioN (and the wake fd): readable when an
  // interrupt is pending. A membership change shows up with its vector-0
  // interrupt.
  [[nodiscard]] int event_fd() const noexcept override { return epoll_.fd(); }
  [[nodiscard]] bool add_wake_fd(int fd) override;

  [[nodiscard]] IvshmemVersion version() const noexcept { return maps_.version; }
  // "uio0"
  [[nodiscard]] const std::string& uio_name() const noexcept { return uio_name_; }
  // v1: the link's name from the descriptor; v2: empty.
  [[nodiscard]] const std::string& link_name() const noexcept { return geometry_.link_name; }
  [[nodiscard]] std::uint16_t protocol() const noexcept { return geometry_.protocol; }
  [[nodiscard]] UioDeviceStats stats() const noexcept { return epoll_.stats(); }

 private:
  struct Mapping {
    std::byte* base = nullptr;
    std::size_t length = 0;
  };

  UioDevice() = default;
  void open_device(const UioDeviceOptions& options);
  // Maps `region` with `protection`; records it for the destructor.
  std::byte* map(const UioRegion& region, int protection);
  void map_v1(std::uint32_t msix_vectors);
  void map_v2(std::uint32_t msix_vectors, std::uint32_t class_code);
  void watch_interrupts();
  [[nodiscard]] std::uint32_t read_register(std::size_t offset) const noexcept;
  void write_register(std::size_t offset, std::uint32_t value) const noexcept;
  // Reads the UIO event count; false when none was pending.
  bool collect_interrupt(std::vector<DeviceEvent>& events);

  std::string uio_name_;
  std::string where_;  // "/dev/uioN", for messages
  std::uint64_t page_size_ = 0;
  UioMapSet maps_;
  UioLinkGeometry geometry_;

  UniqueFd uio_;          // /dev/uioN, non-blocking
  InterruptEpoll epoll_;  // over uio_ and the wake fd
  std::vector<Mapping> mappings_;
  volatile std::uint32_t* registers_ = nullptr;  // MMIO: volatile, aligned 32-bit accesses
  std::byte* state_table_ = nullptr;             // v1: inside the shmem map; v2: the read-only map
  std::span<std::byte> rw_section_;
  std::span<std::byte> own_output_;
  const std::byte* outputs_ = nullptr;  // output section 0; peer p at p * section size

  // Touched by wait() only (one thread at a time).
  std::uint32_t last_count_ = 0;
  bool have_count_ = false;
  StateTableView states_;  // membership; prepend_changes() from wait() only
};

}  // namespace cellink::linux_uio
