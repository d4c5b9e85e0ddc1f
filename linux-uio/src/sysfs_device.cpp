// SysfsDevice: QEMU's ivshmem-doorbell through its sysfs resource files,
// polling. Spec in sysfs_device.hpp.
#include "cellink/linux-uio/sysfs_device.hpp"

#include <fcntl.h>
#include <linux/pci_regs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "capture_errors.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/linux-uio/vfio_binding.hpp"
#include "system_errors.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;
using detail::fail;
using detail::fail_errno;

// The poll timer's epoll tag.
constexpr std::uint64_t kTimerTag = 0;
// A longer interval is a mistake, not a poll.
constexpr std::chrono::microseconds kMaxPollInterval = std::chrono::seconds{1};

// PCI config space: the standard header and the capabilities after it.
constexpr std::size_t kConfigSize = 256;
constexpr unsigned kMaxCapabilities = 48;  // (256 - 64) / 4: more is a loop

// What config space says: the command register and the MSI-X table size.
struct PciConfig {
  std::uint16_t command = 0;
  std::uint32_t msix_vectors = 0;  // 0: no MSI-X capability
};

PciConfig read_config(const fs::path& pci_dir, const std::string& where) {
  const fs::path path = pci_dir / "config";
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) fail_errno(errno, where + ": " + path.string() + ": cannot be opened");
  std::array<std::uint8_t, kConfigSize> config{};
  const ssize_t got = ::pread(fd.get(), config.data(), config.size(), 0);
  // Unprivileged reads stop at 64 bytes, before the capabilities.
  if (got < static_cast<ssize_t>(config.size())) {
    fail(std::errc::permission_denied,
         where + ": " + path.string() + ": read " + std::to_string(got < 0 ? 0 : got) + " of " +
             std::to_string(kConfigSize) +
             " bytes; the capabilities need the whole 256 (run as root)");
  }
  const auto u16_at = [&](std::size_t offset) {
    return static_cast<std::uint16_t>(config[offset] | (config[offset + 1] << 8));
  };
  PciConfig result;
  result.command = u16_at(PCI_COMMAND);
  if ((u16_at(PCI_STATUS) & PCI_STATUS_CAP_LIST) == 0) return result;
  std::size_t at = config[PCI_CAPABILITY_LIST] & ~3U;
  for (unsigned i = 0; i < kMaxCapabilities && at >= PCI_STD_HEADER_SIZEOF; ++i) {
    if (config[at + PCI_CAP_LIST_ID] == PCI_CAP_ID_MSIX) {
      result.msix_vectors = (u16_at(at + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_QSIZE) + 1U;
      break;
    }
    at = config[at + PCI_CAP_LIST_NEXT] & ~3U;
  }
  return result;
}

// pci_enable_device() through sysfs, for a function no driver ever enabled.
void enable_memory_decoding(const fs::path& pci_dir, const std::string& where) {
  const fs::path path = pci_dir / "enable";
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd && ::write(fd.get(), "1", 1) == 1) return;
  const int error = errno;
  const std::string memory_off = where + ": the function's memory decoding is off; writing 1 to " +
                                 path.string() + " to enable it failed";
  if (error == EACCES || error == EPERM) {
    fail_errno(error, memory_off + ": only root may (run as root, or once as root: `echo 1 > " +
                          path.string() + "`)");
  }
  fail_errno(error, memory_off);
}

// Where BAR `bar` starts inside its first page, from <dev>/resource (one
// "start end flags" line per resource). mmap of resourceN maps that page.
std::uint64_t page_offset_of_bar(const fs::path& pci_dir, unsigned bar, std::uint64_t page_size,
                                 const std::string& where) {
  std::ifstream file(pci_dir / "resource");
  std::string line;
  for (unsigned i = 0; i <= bar; ++i) {
    if (!std::getline(file, line)) {
      fail(std::errc::no_such_file_or_directory, where + ": " + (pci_dir / "resource").string() +
                                                     " has no line for BAR " + std::to_string(bar));
    }
  }
  std::uint64_t start = 0;
  try {
    start = std::stoull(line, nullptr, 16);
  } catch (const std::exception&) {
    fail(std::errc::invalid_argument, where + ": " + (pci_dir / "resource").string() + ": '" +
                                          line + "' does not start with an address");
  }
  return start % page_size;
}

// <dev>/resource<bar>, open read-write. sysfs gives the file the BAR's size.
struct Resource {
  fs::path path;
  UniqueFd fd;
  std::uint64_t size = 0;
};

Resource open_resource(const fs::path& pci_dir, unsigned bar, const std::string& where) {
  Resource resource;
  resource.path = pci_dir / ("resource" + std::to_string(bar));
  resource.fd = UniqueFd(::open(resource.path.c_str(), O_RDWR | O_CLOEXEC));
  if (!resource.fd) {
    const int error = errno;
    if (error == ENOENT) {
      fail_errno(error, where + ": " + resource.path.string() +
                            ": no such file (the function has no BAR " + std::to_string(bar) +
                            ": is it QEMU's ivshmem-doorbell?)");
    }
    if (error == EACCES || error == EPERM) {
      fail_errno(error, where + ": " + resource.path.string() +
                            ": permission denied (the PCI core lets only root open it: run as "
                            "root)");
    }
    fail_errno(error, where + ": " + resource.path.string() + ": open failed");
  }
  struct stat status {};
  if (::fstat(resource.fd.get(), &status) != 0) {
    fail_errno(errno, where + ": fstat of " + resource.path.string());
  }
  resource.size = static_cast<std::uint64_t>(status.st_size);
  return resource;
}

// Maps `length` bytes of `resource` from the start of the BAR's first page.
std::byte* map_resource(const Resource& resource, std::uint64_t length, const IvshmemPciDevice& pci,
                        const std::string& where) {
  // Uncached (resource2, not resource2_wc): write combining would weaken the
  // store order the rings rely on.
  void* base = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, resource.fd.get(), 0);
  if (base != MAP_FAILED) return static_cast<std::byte*>(base);
  const int error = errno;
  const std::string what =
      where + ": mmap of " + resource.path.string() + " (" + std::to_string(length) + " bytes)";
  if (error == EINVAL && !pci.driver.empty()) {
    fail_errno(error, what + " refused: the driver '" + pci.driver +
                          "' holds the BAR, and a kernel built with CONFIG_IO_STRICT_DEVMEM "
                          "maps a claimed BAR only when booted with iomem=relaxed; or unbind "
                          "it: `echo " +
                          pci.address + " > " + (pci.sysfs_path / "driver/unbind").string() +
                          "` (or use that driver's backend)");
  }
  if (error == EPERM) {
    fail_errno(error, what +
                          " refused: the kernel is locked down (secure boot?), which forbids "
                          "user-space BAR access; use uio_ivshmem or vfio-pci");
  }
  fail_errno(error, what);
}

}  // namespace

std::unique_ptr<SysfsDevice> SysfsDevice::open(const SysfsDeviceOptions& options) {
  std::unique_ptr<SysfsDevice> device(new SysfsDevice());
  device->open_device(options);
  return device;
}

std::unique_ptr<SysfsDevice> SysfsDevice::open(const SysfsDeviceOptions& options,
                                               std::error_code& error,
                                               std::string& detail) noexcept {
  return detail::capture_errors([&] { return open(options); }, error, detail);
}

SysfsDevice::~SysfsDevice() {
  if (register_map_.base != nullptr) ::munmap(register_map_.base, register_map_.length);
  if (shmem_map_.base != nullptr) ::munmap(shmem_map_.base, shmem_map_.length);
}

void SysfsDevice::open_device(const SysfsDeviceOptions& options) {
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page <= 0) fail(std::errc::io_error, "sysconf(_SC_PAGESIZE) failed");
  page_size_ = static_cast<std::uint64_t>(page);
  if (options.poll_interval <= std::chrono::microseconds{0} ||
      options.poll_interval > kMaxPollInterval) {
    fail(std::errc::invalid_argument, "SysfsDeviceOptions::poll_interval " +
                                          std::to_string(options.poll_interval.count()) +
                                          " us is not in 1 us .. 1 s");
  }
  poll_interval_ = options.poll_interval;

  const IvshmemPciDevice pci = locate_ivshmem_v1(options.sysfs_root, options.pci_address);
  pci_address_ = pci.address;
  where_ = "sysfs " + pci_address_;
  const PciConfig config = read_config(pci.sysfs_path, where_);
  if ((config.command & PCI_COMMAND_MEMORY) == 0) enable_memory_decoding(pci.sysfs_path, where_);

  const std::uint64_t registers_offset =
      page_offset_of_bar(pci.sysfs_path, ivshmem::v1::kRegistersBar, page_size_, where_);
  const Resource registers = open_resource(pci.sysfs_path, ivshmem::v1::kRegistersBar, where_);
  if (registers.size < sizeof(ivshmem::v1::Registers) || registers.size > kMaxUioRegisters) {
    fail(std::errc::invalid_argument, where_ + ": " + registers.path.string() + " is " +
                                          std::to_string(registers.size) +
                                          " bytes, not an ivshmem register block (" +
                                          std::to_string(ivshmem::v1::kRegistersSize) + ")");
  }
  // A BAR smaller than a page is mapped as the whole page it starts.
  register_map_.length =
      (registers_offset + registers.size + page_size_ - 1) / page_size_ * page_size_;
  register_map_.base = map_resource(registers, register_map_.length, pci, where_);
  registers_ = reinterpret_cast<volatile std::uint32_t*>(register_map_.base + registers_offset);

  const Resource bar2 = open_resource(pci.sysfs_path, ivshmem::v1::kSharedMemoryBar, where_);
  check_v1_bar2_size(bar2.size, page_size_, where_);
  shmem_map_.length = bar2.size;
  shmem_map_.base = map_resource(bar2, shmem_map_.length, pci, where_);
  const std::uint32_t iv_position = read_register(offsetof(ivshmem::v1::Registers, iv_position));
  const std::span<std::byte> shmem{shmem_map_.base, shmem_map_.length};
  attach_link(
      shmem, v1_bar_link_geometry(shmem, registers.size, iv_position, config.msix_vectors, where_));
  start_poll_timer();
}

void SysfsDevice::start_poll_timer() {
  epoll_.open(where_);
  timer_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_) fail_errno(errno, where_ + ": timerfd_create");
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(poll_interval_);
  const auto nanoseconds =
      std::chrono::duration_cast<std::chrono::nanoseconds>(poll_interval_ - seconds);
  itimerspec period{};
  period.it_interval.tv_sec = seconds.count();
  period.it_interval.tv_nsec = nanoseconds.count();
  period.it_value = period.it_interval;
  if (::timerfd_settime(timer_.get(), 0, &period, nullptr) != 0) {
    fail_errno(errno, where_ + ": timerfd_settime");
  }
  epoll_.watch(timer_.get(), kTimerTag);
}

std::uint32_t SysfsDevice::read_register(std::size_t offset) const noexcept {
  return registers_[offset / sizeof(std::uint32_t)];
}

void SysfsDevice::write_doorbell(std::uint32_t value) const noexcept {
  registers_[offsetof(ivshmem::v1::Registers, doorbell) / sizeof(std::uint32_t)] = value;
}

std::vector<DeviceEvent> SysfsDevice::wait(std::chrono::milliseconds timeout) {
  std::vector<DeviceEvent> events;
  // The timer is the only fd collected: InterruptEpoll counts a wait() it
  // ended as an interrupt wake-up, reported here as a poll wake-up.
  (void)epoll_.wait(timeout, [&](std::uint64_t) { return collect_poll(events); });
  prepend_membership(events);
  return events;
}

bool SysfsDevice::collect_poll(std::vector<DeviceEvent>& events) {
  std::uint64_t expirations = 0;
  const ssize_t got = ::read(timer_.get(), &expirations, sizeof(expirations));
  if (got < 0) {
    if (errno == EAGAIN || errno == EINTR) return false;
    fail_errno(errno, where_ + ": read of the poll timer");
  }
  if (got != static_cast<ssize_t>(sizeof(expirations)) || expirations == 0) return false;
  polls_.fetch_add(1, std::memory_order_relaxed);
  // Nothing says which vector rang, or whether any did: report every one
  // once, and the caller re-checks its rings and the state table.
  for (std::uint32_t vector = 0; vector < vector_count(); ++vector) {
    events.push_back({DeviceEvent::Kind::doorbell, vector, 1, 0, {}});
  }
  return true;
}

bool SysfsDevice::add_wake_fd(int fd) {
  epoll_.watch(fd, InterruptEpoll::kWakeTag);
  return true;
}

std::string SysfsDevice::description() const {
  return "the polling fallback, every " + std::to_string(poll_interval_.count()) +
         " us: no driver enables MSI-X, so no interrupt arrives; each interval costs a wake-up "
         "and adds up to that much latency";
}

SysfsDeviceStats SysfsDevice::stats() const noexcept {
  return {polls_.load(std::memory_order_relaxed), epoll_.stats().interrupt_wakeups};
}

}  // namespace cellink::linux_uio
