// VfioDevice: QEMU's ivshmem-doorbell through vfio-pci. Spec in vfio_device.hpp.
#include "cellink/linux-uio/vfio_device.hpp"

#include <fcntl.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "capture_errors.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/linux-uio/vfio_binding.hpp"
#include "system_errors.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;
using detail::fail;
using detail::fail_errno;

// open(2) of a VFIO node, with what to do for the usual failures.
UniqueFd open_node(const fs::path& path, const std::string& absent_remedy) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (fd) return fd;
  const int error = errno;
  if (error == ENOENT) fail_errno(error, path.string() + ": no such node (" + absent_remedy + ")");
  if (error == EACCES || error == EPERM) {
    fail_errno(error, path.string() +
                          ": permission denied (run as root, or give the user the "
                          "group's node with a udev rule)");
  }
  if (error == EBUSY) {
    fail_errno(error, path.string() + ": busy: another process has this IOMMU group open");
  }
  fail_errno(error, path.string() + ": open failed");
}

}  // namespace

std::unique_ptr<VfioDevice> VfioDevice::open(const VfioDeviceOptions& options) {
  std::unique_ptr<VfioDevice> device(new VfioDevice());
  device->open_device(options);
  return device;
}

std::unique_ptr<VfioDevice> VfioDevice::open(const VfioDeviceOptions& options,
                                             std::error_code& error, std::string& detail) noexcept {
  return detail::capture_errors([&] { return open(options); }, error, detail);
}

VfioDevice::~VfioDevice() {
  disable_interrupts();
  if (restore_command_) {
    // Best effort: the function is going back to nobody.
    (void)::pwrite(device_.get(), &original_command_, sizeof(original_command_),
                   static_cast<off_t>(config_region_.offset + PCI_COMMAND));
  }
  if (register_map_ != nullptr) ::munmap(register_map_, register_map_length_);
  if (shmem_ != nullptr) ::munmap(shmem_, shmem_length_);
}

void VfioDevice::open_device(const VfioDeviceOptions& options) {
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page <= 0) fail(std::errc::io_error, "sysconf(_SC_PAGESIZE) failed");
  page_size_ = static_cast<std::uint64_t>(page);

  IvshmemPciDevice pci = locate_ivshmem_v1(options.sysfs_root, options.pci_address);
  pci_address_ = pci.address;
  where_ = "vfio " + pci_address_;
  // Before any rebinding: without an IOMMU vfio-pci would refuse the
  // function, and it would be left with no driver at all.
  iommu_group_ = linux_uio::iommu_group(pci);
  if (pci.driver != kVfioPciDriver) {
    if (!options.bind) {
      fail(std::errc::no_such_device,
           where_ + ": the function is bound to " +
               (pci.driver.empty() ? std::string("no driver") : "'" + pci.driver + "'") +
               ", not vfio-pci, and binding was not allowed (VfioDeviceOptions::bind): `echo "
               "vfio-pci > " +
               (pci.sysfs_path / "driver_override").string() +
               (pci.driver.empty() ? std::string()
                                   : "; echo " + pci_address_ + " > " +
                                         (pci.sysfs_path / "driver/unbind").string()) +
               "; echo " + pci_address_ + " > " +
               (options.sysfs_root / "bus/pci/drivers_probe").string() + "`");
    }
    pci = bind_to_vfio_pci(options.sysfs_root, pci);
  }
  attach_group(options);

  vfio_device_info info{};
  info.argsz = sizeof(info);
  if (::ioctl(device_.get(), VFIO_DEVICE_GET_INFO, &info) != 0) {
    fail_errno(errno, where_ + ": VFIO_DEVICE_GET_INFO");
  }
  if ((info.flags & VFIO_DEVICE_FLAGS_PCI) == 0 ||
      info.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX ||
      info.num_irqs <= VFIO_PCI_MSIX_IRQ_INDEX) {
    fail(std::errc::no_such_device, where_ +
                                        ": not a vfio-pci device with a config region and "
                                        "MSI-X (flags " +
                                        std::to_string(info.flags) + ")");
  }
  map_registers();
  map_shared_memory();
  enable_bus_master();
  enable_interrupts(vector_count());
}

void VfioDevice::attach_group(const VfioDeviceOptions& options) {
  const fs::path vfio_dir = options.dev_root / "vfio";
  container_ = open_node(vfio_dir / "vfio", "is the vfio module loaded? modprobe vfio-pci");
  if (::ioctl(container_.get(), VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
    fail(std::errc::not_supported,
         where_ + ": the kernel's VFIO API version is not " + std::to_string(VFIO_API_VERSION));
  }
  // Type 1 v2 where the kernel has it (any kernel since 3.x); Type 1 else.
  unsigned long iommu_type = VFIO_TYPE1v2_IOMMU;
  if (::ioctl(container_.get(), VFIO_CHECK_EXTENSION, iommu_type) <= 0) {
    iommu_type = VFIO_TYPE1_IOMMU;
    if (::ioctl(container_.get(), VFIO_CHECK_EXTENSION, iommu_type) <= 0) {
      fail(std::errc::not_supported,
           where_ + ": the VFIO container offers no Type 1 IOMMU: load vfio_iommu_type1");
    }
  }
  const fs::path group_node = vfio_dir / std::to_string(iommu_group_);
  group_ = open_node(group_node, "vfio-pci creates it when it binds a device of the group");
  vfio_group_status status{};
  status.argsz = sizeof(status);
  if (::ioctl(group_.get(), VFIO_GROUP_GET_STATUS, &status) != 0) {
    fail_errno(errno, group_node.string() + ": VFIO_GROUP_GET_STATUS");
  }
  if ((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0) {
    fail(std::errc::device_or_resource_busy,
         where_ + ": IOMMU group " + std::to_string(iommu_group_) +
             " is not viable: every function in it must be bound to vfio-pci or to no driver "
             "(ls " +
             (options.sysfs_root / "kernel/iommu_groups" / std::to_string(iommu_group_) / "devices")
                 .string() +
             ")");
  }
  const int container_fd = container_.get();
  if (::ioctl(group_.get(), VFIO_GROUP_SET_CONTAINER, &container_fd) != 0) {
    fail_errno(errno, group_node.string() + ": VFIO_GROUP_SET_CONTAINER");
  }
  if (::ioctl(container_.get(), VFIO_SET_IOMMU, iommu_type) != 0) {
    fail_errno(errno, where_ + ": VFIO_SET_IOMMU");
  }
  device_ = UniqueFd(::ioctl(group_.get(), VFIO_GROUP_GET_DEVICE_FD, pci_address_.c_str()));
  if (!device_) {
    const int error = errno;
    fail_errno(error, where_ + ": VFIO_GROUP_GET_DEVICE_FD" +
                          (error == EBUSY ? std::string(": another process has the device open")
                                          : std::string()));
  }
}

VfioDevice::Region VfioDevice::region(std::uint32_t index, const char* what) const {
  vfio_region_info info{};
  info.argsz = sizeof(info);
  info.index = index;
  if (::ioctl(device_.get(), VFIO_DEVICE_GET_REGION_INFO, &info) != 0) {
    fail_errno(errno, where_ + ": VFIO_DEVICE_GET_REGION_INFO for " + what);
  }
  if ((info.flags & VFIO_REGION_INFO_FLAG_READ) == 0 ||
      (info.flags & VFIO_REGION_INFO_FLAG_WRITE) == 0) {
    fail(std::errc::permission_denied, where_ + ": " + what + " is not readable and writable");
  }
  return {info.size, info.offset, (info.flags & VFIO_REGION_INFO_FLAG_MMAP) != 0};
}

void VfioDevice::map_registers() {
  registers_region_ = region(VFIO_PCI_BAR0_REGION_INDEX, "BAR0 (registers)");
  if (registers_region_.size < sizeof(ivshmem::v1::Registers) ||
      registers_region_.size > kMaxUioRegisters) {
    fail(std::errc::invalid_argument, where_ + ": BAR0 is " +
                                          std::to_string(registers_region_.size) +
                                          " bytes, not an ivshmem register block (" +
                                          std::to_string(ivshmem::v1::kRegistersSize) + ")");
  }
  config_region_ = region(VFIO_PCI_CONFIG_REGION_INDEX, "the config space");
  if (!registers_region_.mappable) return;  // pread/pwrite, see read_register()
  // vfio-pci maps a BAR smaller than a page as the whole page it starts.
  const std::size_t length = (registers_region_.size + page_size_ - 1) / page_size_ * page_size_;
  void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, device_.get(),
                      static_cast<off_t>(registers_region_.offset));
  if (base == MAP_FAILED) return;  // the kernel refused: pread/pwrite still work
  register_map_ = static_cast<std::byte*>(base);
  register_map_length_ = length;
  registers_ = reinterpret_cast<volatile std::uint32_t*>(register_map_);
}

void VfioDevice::map_shared_memory() {
  const Region bar2 = region(VFIO_PCI_BAR2_REGION_INDEX, "BAR2 (shared memory)");
  check_v1_bar2_size(bar2.size, page_size_, where_);
  if (!bar2.mappable) {
    fail(std::errc::not_supported, where_ +
                                       ": vfio-pci does not allow mapping BAR2, and cellink "
                                       "needs the shared memory mapped");
  }
  void* base = ::mmap(nullptr, bar2.size, PROT_READ | PROT_WRITE, MAP_SHARED, device_.get(),
                      static_cast<off_t>(bar2.offset));
  if (base == MAP_FAILED) {
    fail_errno(errno, where_ + ": mmap of BAR2 (" + std::to_string(bar2.size) + " bytes)");
  }
  shmem_ = static_cast<std::byte*>(base);
  shmem_length_ = bar2.size;
  const std::uint32_t iv_position = read_register(offsetof(ivshmem::v1::Registers, iv_position));
  attach_link({shmem_, shmem_length_},
              v1_bar_link_geometry({shmem_, shmem_length_}, registers_region_.size, iv_position,
                                   msix_vector_count(), where_));
}

void VfioDevice::enable_bus_master() {
  const auto at = static_cast<off_t>(config_region_.offset + PCI_COMMAND);
  std::uint16_t command = 0;
  if (::pread(device_.get(), &command, sizeof(command), at) != sizeof(command)) {
    fail_errno(errno, where_ + ": reading the PCI command register");
  }
  const std::uint16_t wanted = command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
  if (wanted == command) return;
  if (::pwrite(device_.get(), &wanted, sizeof(wanted), at) != sizeof(wanted)) {
    fail_errno(errno, where_ + ": setting Bus Master in the PCI command register");
  }
  original_command_ = command;
  restore_command_ = true;
}

std::uint32_t VfioDevice::msix_vector_count() const {
  vfio_irq_info info{};
  info.argsz = sizeof(info);
  info.index = VFIO_PCI_MSIX_IRQ_INDEX;
  if (::ioctl(device_.get(), VFIO_DEVICE_GET_IRQ_INFO, &info) != 0) {
    fail_errno(errno, where_ + ": VFIO_DEVICE_GET_IRQ_INFO (MSI-X)");
  }
  if ((info.flags & VFIO_IRQ_INFO_EVENTFD) == 0) return 0;
  return info.count;
}

void VfioDevice::enable_interrupts(std::uint32_t vectors) {
  epoll_.open(where_);
  std::vector<std::byte> request(sizeof(vfio_irq_set) + vectors * sizeof(std::int32_t));
  vfio_irq_set header{};
  header.argsz = static_cast<std::uint32_t>(request.size());
  header.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  header.index = VFIO_PCI_MSIX_IRQ_INDEX;
  header.start = 0;
  header.count = vectors;
  std::memcpy(request.data(), &header, sizeof(header));
  vector_fds_.reserve(vectors);
  for (std::uint32_t vector = 0; vector < vectors; ++vector) {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) fail_errno(errno, where_ + ": eventfd for MSI-X vector " + std::to_string(vector));
    epoll_.watch(fd.get(), vector);
    const std::int32_t raw = fd.get();
    std::memcpy(request.data() + sizeof(header) + vector * sizeof(raw), &raw, sizeof(raw));
    vector_fds_.push_back(std::move(fd));
  }
  if (::ioctl(device_.get(), VFIO_DEVICE_SET_IRQS, request.data()) != 0) {
    fail_errno(errno,
               where_ + ": VFIO_DEVICE_SET_IRQS (MSI-X, " + std::to_string(vectors) + " eventfds)");
  }
  interrupts_enabled_ = true;
}

void VfioDevice::disable_interrupts() noexcept {
  if (!interrupts_enabled_) return;
  vfio_irq_set off{};
  off.argsz = sizeof(off);
  off.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  off.index = VFIO_PCI_MSIX_IRQ_INDEX;
  off.start = 0;
  off.count = 0;
  (void)::ioctl(device_.get(), VFIO_DEVICE_SET_IRQS, &off);
  interrupts_enabled_ = false;
}

void VfioDevice::write_doorbell(std::uint32_t value) const noexcept {
  write_register(offsetof(ivshmem::v1::Registers, doorbell), value);
}

std::uint32_t VfioDevice::read_register(std::size_t offset) const noexcept {
  if (registers_ != nullptr) return registers_[offset / sizeof(std::uint32_t)];
  std::uint32_t value = 0;
  // A failed read leaves 0, which no caller takes for more than "nothing".
  (void)::pread(device_.get(), &value, sizeof(value),
                static_cast<off_t>(registers_region_.offset + offset));
  return value;
}

void VfioDevice::write_register(std::size_t offset, std::uint32_t value) const noexcept {
  if (registers_ != nullptr) {
    registers_[offset / sizeof(std::uint32_t)] = value;
    return;
  }
  (void)::pwrite(device_.get(), &value, sizeof(value),
                 static_cast<off_t>(registers_region_.offset + offset));
}

std::vector<DeviceEvent> VfioDevice::wait(std::chrono::milliseconds timeout) {
  std::vector<DeviceEvent> events;
  (void)epoll_.wait(timeout, [&](std::uint64_t vector) {
    return collect_interrupt(static_cast<std::uint32_t>(vector), events);
  });
  prepend_membership(events);
  return events;
}

bool VfioDevice::collect_interrupt(std::uint32_t vector, std::vector<DeviceEvent>& events) {
  std::uint64_t count = 0;
  const ssize_t got = ::read(vector_fds_[vector].get(), &count, sizeof(count));
  if (got < 0) {
    if (errno == EAGAIN || errno == EINTR) return false;
    fail_errno(errno, where_ + ": read of MSI-X vector " + std::to_string(vector) + "'s eventfd");
  }
  if (got != static_cast<ssize_t>(sizeof(count)) || count == 0) return false;
  epoll_.count_interrupts(count);
  events.push_back({DeviceEvent::Kind::doorbell, vector, count, 0, {}});
  return true;
}

bool VfioDevice::add_wake_fd(int fd) {
  epoll_.watch(fd, InterruptEpoll::kWakeTag);
  return true;
}

}  // namespace cellink::linux_uio
