// UioDevice: an ivshmem device through uio_ivshmem. Spec in uio_device.hpp.
#include "cellink/linux-uio/uio_device.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "capture_errors.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/ivshmem/registers_v2.hpp"
#include "system_errors.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;
using detail::fail;
using detail::fail_errno;

// epoll tag of /dev/uioN.
constexpr std::uint64_t kUioTag = 0;

}  // namespace

std::unique_ptr<UioDevice> UioDevice::open(const UioDeviceOptions& options) {
  std::unique_ptr<UioDevice> device(new UioDevice());
  device->open_device(options);
  return device;
}

std::unique_ptr<UioDevice> UioDevice::open(const UioDeviceOptions& options, std::error_code& error,
                                           std::string& detail) noexcept {
  return detail::capture_errors([&] { return open(options); }, error, detail);
}

UioDevice::~UioDevice() {
  for (const Mapping& mapping : mappings_) ::munmap(mapping.base, mapping.length);
}

void UioDevice::open_device(const UioDeviceOptions& options) {
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page <= 0) fail(std::errc::io_error, "sysconf(_SC_PAGESIZE) failed");
  page_size_ = static_cast<std::uint64_t>(page);

  IvshmemPciDevice pci;
  if (options.uio.empty()) {
    pci = locate_ivshmem_uio(options.sysfs_root, options.pci_address);
    uio_name_ = pci.uio;
  } else {
    pci = describe_uio(options.sysfs_root, options.uio);
    uio_name_ = options.uio;
  }
  const fs::path uio_dir = options.sysfs_root / "class" / "uio" / uio_name_;
  where_ = (options.dev_root / uio_name_).string();
  maps_ = classify_uio_maps(read_uio_maps(uio_dir, page_size_), page_size_, where_);
  if ((maps_.version == IvshmemVersion::v2) != (pci.version == IvshmemVersion::v2)) {
    fail(std::errc::no_such_device, where_ + ": the maps are " + version_name(maps_.version) +
                                        " but the PCI function is " + version_name(pci.version));
  }

  mappings_.reserve(kMaxUioMaps);  // map() then never fails to record a mapping
  uio_ = UniqueFd(::open(where_.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK));
  if (!uio_) {
    const int error = errno;
    if (error == ENOENT) {
      fail_errno(error, where_ +
                            ": no device node (is devtmpfs mounted? mount -t devtmpfs "
                            "devtmpfs /dev)");
    }
    if (error == EACCES || error == EPERM) {
      fail_errno(error, where_ +
                            ": permission denied (run as root, or give the user access "
                            "with a udev rule or chmod)");
    }
    fail_errno(error, where_ + ": open failed");
  }
  registers_ = reinterpret_cast<volatile std::uint32_t*>(
      map(maps_.registers, PROT_READ | PROT_WRITE) + maps_.registers.offset);
  if (maps_.version == IvshmemVersion::v1) {
    map_v1(pci.msix_vectors);
  } else {
    map_v2(pci.msix_vectors, pci.class_code);
  }
  watch_interrupts();
  states_ = StateTableView(state_table_, peer_count(), id());
}

std::byte* UioDevice::map(const UioRegion& region, int protection) {
  void* base = ::mmap(nullptr, region.mapped_length, protection, MAP_SHARED, uio_.get(),
                      static_cast<off_t>(region.map * page_size_));
  if (base == MAP_FAILED) {
    fail_errno(errno, where_ + ": mmap of map " + std::to_string(region.map) + " (" +
                          std::to_string(region.mapped_length) + " bytes)");
  }
  mappings_.push_back({static_cast<std::byte*>(base), region.mapped_length});
  return static_cast<std::byte*>(base);
}

void UioDevice::map_v1(std::uint32_t msix_vectors) {
  std::byte* shmem = map(maps_.shmem, PROT_READ | PROT_WRITE);
  if (maps_.shmem.size < ivshmem::kLinkDescriptorOffset + sizeof(ivshmem::LinkDescriptor)) {
    fail(std::errc::invalid_argument, where_ + ": the shared memory cannot hold a descriptor");
  }
  // Every peer may write any byte of a v1 link: copy the descriptor out
  // once and use only the validated copy.
  ivshmem::LinkDescriptor descriptor{};
  std::memcpy(&descriptor, shmem + ivshmem::kLinkDescriptorOffset, sizeof(descriptor));
  const std::uint32_t iv_position = read_register(offsetof(ivshmem::v1::Registers, iv_position));
  geometry_ = v1_link_geometry(maps_, descriptor, iv_position, msix_vectors, where_);

  const ivshmem::Layout& layout = geometry_.layout;
  state_table_ = shmem;
  rw_section_ = {shmem + layout.rw_section().offset, layout.rw_section().size};
  const ivshmem::Section own = layout.output_section(geometry_.id);
  own_output_ = {shmem + own.offset, own.size};
  outputs_ = shmem + layout.output_section(0).offset;
}

void UioDevice::map_v2(std::uint32_t msix_vectors, std::uint32_t class_code) {
  const std::uint32_t id = read_register(offsetof(ivshmem::v2::Registers, id));
  const std::uint32_t max_peers = read_register(offsetof(ivshmem::v2::Registers, max_peers));
  geometry_ = v2_link_geometry(maps_, id, max_peers, msix_vectors, class_code, where_);
  // The driver refuses PROT_WRITE on the read-only maps.
  state_table_ = map(maps_.state_table, PROT_READ);
  if (maps_.rw_section.size != 0) {
    rw_section_ = {map(maps_.rw_section, PROT_READ | PROT_WRITE), maps_.rw_section.size};
  }
  outputs_ = map(maps_.input_sections, PROT_READ);
  own_output_ = {map(maps_.output_section, PROT_READ | PROT_WRITE), maps_.output_section.size};
}

void UioDevice::watch_interrupts() {
  epoll_.open(where_);
  epoll_.watch(uio_.get(), kUioTag, "cannot be polled, so it is not a UIO device");
  // v2: arm (one-shot mode may have left Interrupt Control clear); v1:
  // unmask, in case a previous user masked and the driver kept it.
  const std::int32_t on = 1;
  if (::write(uio_.get(), &on, sizeof(on)) != static_cast<ssize_t>(sizeof(on))) {
    fail_errno(errno, where_ + ": enabling interrupts through irqcontrol failed");
  }
}

std::uint32_t UioDevice::read_register(std::size_t offset) const noexcept {
  return registers_[offset / sizeof(std::uint32_t)];
}

void UioDevice::write_register(std::size_t offset, std::uint32_t value) const noexcept {
  registers_[offset / sizeof(std::uint32_t)] = value;
}

bool UioDevice::peer_present(std::uint32_t peer) const noexcept {
  return states_.present(peer);
}

std::span<const std::byte> UioDevice::output_section(std::uint32_t peer) const noexcept {
  const std::uint64_t size = geometry_.layout.output_section(0).size;
  return {outputs_ + std::uint64_t{peer} * size, size};
}

ivshmem::DoorbellStatus UioDevice::doorbell(std::uint32_t peer, std::uint32_t vector) noexcept {
  if (peer >= peer_count()) return ivshmem::DoorbellStatus::no_such_peer;
  if (vector >= vector_count()) return ivshmem::DoorbellStatus::no_such_vector;
  // F1: every store to shared memory before this call is visible before the
  // MMIO write that raises the peer's interrupt; pairs with the acquire
  // loads the peer makes after its wait() returns.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::uint32_t value = maps_.version == IvshmemVersion::v1
                                  ? ivshmem::v1::doorbell_value(peer, vector)
                                  : ivshmem::v2::doorbell_value(peer, vector);
  write_register(offsetof(ivshmem::v1::Registers, doorbell), value);
  static_assert(offsetof(ivshmem::v1::Registers, doorbell) ==
                offsetof(ivshmem::v2::Registers, doorbell));
  return ivshmem::DoorbellStatus::ok;
}

void UioDevice::set_state(std::uint32_t value) noexcept {
  if (maps_.version == IvshmemVersion::v2) {
    // F2: our section writes are visible before the hypervisor publishes
    // the state and interrupts the peers; pairs with their acquire load.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    write_register(offsetof(ivshmem::v2::Registers, state), value);
    return;
  }
  // v1: this peer writes its own entry, as HostDevice does on the same
  // memory (StateTableView::store_own, barrier R1 there), then tells the others.
  states_.store_own(value);
  for (std::uint32_t peer = 0; peer < peer_count(); ++peer) {
    if (peer != id()) (void)doorbell(peer, 0);
  }
}

std::uint32_t UioDevice::peer_state(std::uint32_t peer) const noexcept {
  return states_.load(peer);  // A1 in StateTableView::load
}

std::vector<DeviceEvent> UioDevice::wait(std::chrono::milliseconds timeout) {
  std::vector<DeviceEvent> events;
  (void)epoll_.wait(timeout, [&](std::uint64_t) { return collect_interrupt(events); });
  states_.prepend_changes(events);
  return events;
}

bool UioDevice::collect_interrupt(std::vector<DeviceEvent>& events) {
  std::uint32_t count = 0;
  const ssize_t got = ::read(uio_.get(), &count, sizeof(count));
  if (got < 0) {
    if (errno == EAGAIN || errno == EINTR) return false;
    fail_errno(errno, where_ + ": read of the interrupt count");
  }
  if (got != static_cast<ssize_t>(sizeof(count))) {
    fail(std::errc::io_error, where_ + ": short read of the interrupt count");
  }
  // The driver's count wraps at 2^32; the first read only tells "some".
  std::uint32_t fired = have_count_ ? count - last_count_ : 1;
  if (fired == 0) fired = 1;
  last_count_ = count;
  have_count_ = true;
  epoll_.count_interrupts(fired);
  if (maps_.version == IvshmemVersion::v2) {
    // One-shot mode cleared Interrupt Control on delivery: re-arm before the
    // caller re-checks its rings, so nothing committed after that re-check
    // can go unannounced.
    const std::int32_t arm = 1;
    if (::write(uio_.get(), &arm, sizeof(arm)) != static_cast<ssize_t>(sizeof(arm))) {
      fail_errno(errno, where_ + ": re-arming interrupts through irqcontrol");
    }
  }
  // Which vector fired is unknown: report every one (see the file comment).
  for (std::uint32_t vector = 0; vector < vector_count(); ++vector) {
    events.push_back({DeviceEvent::Kind::doorbell, vector, fired, 0, {}});
  }
  return true;
}

bool UioDevice::add_wake_fd(int fd) {
  epoll_.watch(fd, InterruptEpoll::kWakeTag);
  return true;
}

}  // namespace cellink::linux_uio
