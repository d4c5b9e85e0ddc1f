// What sysfs says about ivshmem devices and their UIO maps (docs/guests.md).
//
// UioDevice (uio_device.hpp) is built on these; they are separate so that
// the parsing can be tested against a fake sysfs tree, and so that a tool can
// list the devices and tell the user what to do with each.
//
//   /sys/bus/pci/devices/<address>/{vendor,device,class}   "0x1af4\n" ...
//   /sys/bus/pci/devices/<address>/driver -> .../drivers/uio_ivshmem
//   /sys/bus/pci/devices/<address>/uio/uioN/
//   /sys/bus/pci/devices/<address>/msi_irqs/<irq>...      one entry per vector
//   /sys/class/uio/uioN/{name,device}
//   /sys/class/uio/uioN/maps/mapM/{name,addr,size,offset} dense, M = 0..4
//
// sysfs is the kernel's, but every value is still checked before it becomes
// a length: a wrong module, a fake tree or a future kernel must not turn
// into an out-of-bounds mapping. Numbers must be whole non-negative
// integers (decimal, or hex with 0x) with nothing after them but a newline.
//
// Errors: std::system_error whose what() names the file or device, what is
// wrong and what to do about it.
//
// Threading: free functions without shared state.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cellink::linux_uio {

inline constexpr std::string_view kUioIvshmemDriver = "uio_ivshmem";
// MAX_UIO_MAPS in <linux/uio_driver.h>.
inline constexpr unsigned kMaxUioMaps = 5;

enum class IvshmemVersion : std::uint8_t {
  v1 = 1,  // QEMU ivshmem, 1af4:1110
  v2 = 2,  // Jailhouse ivshmem 2.0, 110a:4106
};

[[nodiscard]] const char* version_name(IvshmemVersion version) noexcept;

// One entry of /sys/class/uio/uioN/maps.
struct UioMap {
  unsigned index = 0;        // mmap offset = index * page size
  std::string name;          // "registers", "shmem", "state_table", ...
  std::uint64_t addr = 0;    // physical address (informational)
  std::uint64_t size = 0;    // bytes, from `offset` on
  std::uint64_t offset = 0;  // where the map starts inside its first page
};

// Reads maps/map0, map1, ... of `uio_dir` (/sys/class/uio/uioN) until the
// first missing index. Throws when a map lacks a file, holds a malformed
// number, has size 0, or an offset of a page or more; when there is no map
// at all; or when maps are numbered beyond kMaxUioMaps or not densely.
[[nodiscard]] std::vector<UioMap> read_uio_maps(const std::filesystem::path& uio_dir,
                                                std::uint64_t page_size);

// One ivshmem PCI function, as sysfs describes it.
struct IvshmemPciDevice {
  std::string address;  // "0000:00:03.0"
  std::filesystem::path sysfs_path;
  IvshmemVersion version = IvshmemVersion::v1;
  std::uint16_t vendor = 0;
  std::uint16_t device = 0;
  std::uint32_t class_code = 0;
  std::string driver;              // the bound driver's name; empty when unbound
  std::string uio;                 // "uio0" when uio_ivshmem registered one, else empty
  std::uint32_t msix_vectors = 0;  // entries in msi_irqs/: vectors with an interrupt
};

// Every 1af4:1110 and 110a:4106 function under sysfs_root/bus/pci/devices,
// sorted by address. Entries whose ids cannot be read are skipped. Throws
// only when the directory itself cannot be listed.
[[nodiscard]] std::vector<IvshmemPciDevice> find_ivshmem_devices(
    const std::filesystem::path& sysfs_root);

// Reads one function's description; nullopt when `pci_dir` is not an
// ivshmem function (or its ids cannot be read).
[[nodiscard]] std::optional<IvshmemPciDevice> read_ivshmem_device(
    const std::filesystem::path& pci_dir);

// The ivshmem function behind /sys/class/uio/<uio>. Throws when `uio` is
// not a UIO device name ("uio" and digits), there is no such device, it
// belongs to another UIO driver, or its PCI function is not ivshmem.
[[nodiscard]] IvshmemPciDevice describe_uio(const std::filesystem::path& sysfs_root,
                                            const std::string& uio);

// The device a UioDevice should open: the one at `pci_address`, or else the
// only ivshmem function bound to uio_ivshmem. Throws, saying what to do,
// when there is none (no device: QEMU options; unbound: modprobe or
// new_id/drivers_probe; bound to another driver: driver_override), when it
// has no UIO device, or when several qualify and none was named.
[[nodiscard]] IvshmemPciDevice locate_ivshmem_uio(const std::filesystem::path& sysfs_root,
                                                  std::string_view pci_address = {});

// What to do to get `device` bound to uio_ivshmem, in one sentence with the
// commands; empty when it already is.
[[nodiscard]] std::string binding_remedy(const IvshmemPciDevice& device,
                                         const std::filesystem::path& sysfs_root);

}  // namespace cellink::linux_uio
