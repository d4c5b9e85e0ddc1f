// VfioDevice: a Linux guest as a cell, through QEMU's ivshmem-doorbell PCI
// function bound to vfio-pci (docs/guests.md, "The VfioDevice backend"). With an
// upstream kernel this is the standard way to get the device's MSI-X
// interrupts into user space: uio_pci_generic never sees one (the device has
// no INTx), and uio_ivshmem is our own module.
//
//   auto device = VfioDevice::open();    // the only ivshmem function
//   Session session(*device, {.spin_budget = std::chrono::nanoseconds{0}});
//
// open():
//   1. finds the v1 function and its IOMMU group (vfio_binding.hpp; without
//      a group it stops there, leaving the function to its driver) and,
//      unless `bind` is false, hands it to vfio-pci (driver_override,
//      unbind, drivers_probe);
//   2. opens the container /dev/vfio/vfio (Type 1 IOMMU) and the function's
//      group /dev/vfio/N, which must be viable (every function in the group
//      bound to vfio-pci or to no driver), then the device;
//   3. maps BAR0 (the registers; read and written with pread/pwrite on the
//      device fd when vfio-pci does not allow an mmap of a BAR smaller than a
//      page) and BAR2 (the shared memory, whole) through their region
//      offsets;
//   4. sets Memory Space and Bus Master in the command register through the
//      config region: MSI-X messages are bus-master writes, and without Bus
//      Master every doorbell is silently dropped (docs/machine-facts.md);
//   5. copies the link descriptor the daemon wrote out once and validates it
//      against BAR2's size (uio_geometry.hpp), as UioDevice does;
//   6. gives every doorbell vector of the link its own eventfd with
//      VFIO_DEVICE_SET_IRQS (MSI-X, action trigger).
//
// Only v1: a Jailhouse ivshmem 2.0 function keeps its sections outside its
// BARs, where VFIO cannot map them; UioDevice handles those.
//
// Doorbells, state and membership are as UioDevice's v1 (uio_device.hpp),
// and shared with SysfsDevice (bar_link_device.hpp): doorbell() writes
// peer << 16 | vector to BAR0 + 0x0c; set_state() release-stores this peer's
// state-table entry and rings vector 0 on every other peer; wait() reports
// peer_joined / peer_left from the state table (StateTableView). Unlike UIO,
// each vector has its own eventfd, so wait() reports exactly the vectors
// that fired, with their counts.
//
// Teardown (destructor): MSI-X off (SET_IRQS with no eventfds), the command
// register as it was found, the mappings, then the device, group and
// container fds. The function stays bound to vfio-pci.
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

struct VfioDeviceOptions {
  std::string pci_address;  // "0000:00:03.0"; empty: the only QEMU ivshmem function
  // Hand the function to vfio-pci when another driver (or none) has it.
  // False: fail instead, saying how to bind it.
  bool bind = true;
  // Roots of sysfs and of the device nodes.
  std::filesystem::path sysfs_root = "/sys";
  std::filesystem::path dev_root = "/dev";
};

// What wait() saw (InterruptStats in interrupt_epoll.hpp).
using VfioDeviceStats = InterruptStats;

class VfioDevice final : public BarLinkDevice {
 public:
  // Throws std::system_error whose what() names the device, the problem and
  // a remedy.
  [[nodiscard]] static std::unique_ptr<VfioDevice> open(const VfioDeviceOptions& options = {});
  // As above; on failure returns nullptr and sets `error` and `detail`.
  [[nodiscard]] static std::unique_ptr<VfioDevice> open(const VfioDeviceOptions& options,
                                                        std::error_code& error,
                                                        std::string& detail) noexcept;
  ~VfioDevice() override;

  // Blocks until an interrupt, a membership change, the wake fd, or
  // `timeout` (0 = just poll). Throws std::system_error on an unexpected
  // epoll or eventfd failure.
  [[nodiscard]] std::vector<DeviceEvent> wait(std::chrono::milliseconds timeout) override;
  // An epoll fd over the vectors' eventfds (and the wake fd).
  [[nodiscard]] int event_fd() const noexcept override { return epoll_.fd(); }
  [[nodiscard]] bool add_wake_fd(int fd) override;

  [[nodiscard]] const std::string& pci_address() const noexcept { return pci_address_; }
  [[nodiscard]] unsigned iommu_group() const noexcept { return iommu_group_; }
  // True when BAR0 is mmap'ed; false when registers go through pread/pwrite.
  [[nodiscard]] bool registers_mapped() const noexcept { return registers_ != nullptr; }
  [[nodiscard]] VfioDeviceStats stats() const noexcept { return epoll_.stats(); }

 private:
  struct Region {
    std::uint64_t size = 0;
    std::uint64_t offset = 0;  // in the device fd
    bool mappable = false;
  };

  VfioDevice() = default;
  void open_device(const VfioDeviceOptions& options);
  void attach_group(const VfioDeviceOptions& options);
  [[nodiscard]] Region region(std::uint32_t index, const char* what) const;
  void map_registers();
  void map_shared_memory();
  void enable_bus_master();
  void enable_interrupts(std::uint32_t vectors);
  void disable_interrupts() noexcept;
  [[nodiscard]] std::uint32_t msix_vector_count() const;
  [[nodiscard]] std::uint32_t read_register(std::size_t offset) const noexcept;
  void write_register(std::size_t offset, std::uint32_t value) const noexcept;
  void write_doorbell(std::uint32_t value) const noexcept override;
  // Reads vector's eventfd; false when it had nothing.
  bool collect_interrupt(std::uint32_t vector, std::vector<DeviceEvent>& events);

  std::string pci_address_;
  std::string where_;  // "vfio 0000:00:03.0", for messages
  unsigned iommu_group_ = 0;
  std::uint64_t page_size_ = 0;

  // Declared in the order they are opened: destroyed device first.
  UniqueFd container_;
  UniqueFd group_;
  UniqueFd device_;
  InterruptEpoll epoll_;              // over vector_fds_ (tag = vector) and the wake fd
  std::vector<UniqueFd> vector_fds_;  // index = MSI-X vector

  Region registers_region_;
  Region config_region_;
  std::byte* register_map_ = nullptr;  // mmap of BAR0, or nullptr
  std::size_t register_map_length_ = 0;
  volatile std::uint32_t* registers_ = nullptr;  // MMIO: volatile, aligned 32-bit accesses
  std::byte* shmem_ = nullptr;
  std::size_t shmem_length_ = 0;
  bool interrupts_enabled_ = false;
  bool restore_command_ = false;
  std::uint16_t original_command_ = 0;
};

}  // namespace cellink::linux_uio
