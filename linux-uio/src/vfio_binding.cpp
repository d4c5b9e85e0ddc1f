// sysfs side of the VFIO backend: spec in vfio_binding.hpp.
#include "cellink/linux-uio/vfio_binding.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <system_error>
#include <vector>

#include "cellink/linux-uio/unique_fd.hpp"
#include "system_errors.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;

using detail::fail;

std::string describe(const IvshmemPciDevice& device) {
  return "ivshmem " + std::string(version_name(device.version)) + " at " + device.address +
         " (driver " + (device.driver.empty() ? std::string("none") : device.driver) + ")";
}

// One write(2) of `text`, as sysfs wants; throws with errno and a remedy.
void write_attribute(const fs::path& path, std::string_view text, std::string_view why) {
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  const ssize_t written =
      fd ? ::write(fd.get(), text.data(), text.size()) : static_cast<ssize_t>(-1);
  if (written == static_cast<ssize_t>(text.size())) return;
  const int error = written < 0 ? errno : EIO;
  std::string remedy;
  if (error == EACCES || error == EPERM) remedy = " (binding a device needs root)";
  throw std::system_error(error, std::generic_category(),
                          "writing '" + std::string(text) + "' to " + path.string() + " to " +
                              std::string(why) + remedy);
}

}  // namespace

IvshmemPciDevice locate_ivshmem_v1(const fs::path& sysfs_root, std::string_view pci_address) {
  const std::vector<IvshmemPciDevice> devices = find_ivshmem_devices(sysfs_root);
  std::string listing;
  for (const IvshmemPciDevice& device : devices) {
    listing += (listing.empty() ? "" : ", ") + describe(device);
  }
  auto check_version = [](const IvshmemPciDevice& device) {
    if (device.version == IvshmemVersion::v1) return;
    fail(std::errc::not_supported,
         describe(device) +
             " is a Jailhouse ivshmem 2.0 function: its shared memory is not in a BAR, so VFIO "
             "cannot map it; open it with UioDevice (uio_ivshmem) instead");
  };
  if (!pci_address.empty()) {
    for (const IvshmemPciDevice& device : devices) {
      if (device.address != pci_address) continue;
      check_version(device);
      return device;
    }
    fail(std::errc::no_such_device,
         "no ivshmem function at " + std::string(pci_address) +
             (devices.empty() ? std::string(": there is none") : "; there are: " + listing));
  }
  std::vector<const IvshmemPciDevice*> v1_devices;
  for (const IvshmemPciDevice& device : devices) {
    if (device.version == IvshmemVersion::v1) v1_devices.push_back(&device);
  }
  if (v1_devices.size() == 1) return *v1_devices.front();
  if (v1_devices.size() > 1) {
    fail(std::errc::invalid_argument,
         "several QEMU ivshmem functions (" + listing +
             "): name one (the pci_address option, or the program's option for it)");
  }
  if (!devices.empty()) check_version(devices.front());
  fail(std::errc::no_such_device,
       "no QEMU ivshmem PCI device (1af4:1110) under " +
           (sysfs_root / "bus" / "pci" / "devices").string() +
           ": start QEMU with the options `cellink qemu-args CELL` prints");
}

IvshmemPciDevice bind_to_vfio_pci(const fs::path& sysfs_root, const IvshmemPciDevice& device) {
  if (device.driver == kVfioPciDriver) return device;
  std::error_code error;
  if (!fs::is_directory(sysfs_root / "bus" / "pci" / "drivers" / kVfioPciDriver, error)) {
    fail(std::errc::no_such_device,
         describe(device) +
             ": vfio-pci is not loaded: `modprobe vfio-pci` (its chain, for insmod: irqbypass "
             "vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci)");
  }
  write_attribute(device.sysfs_path / "driver_override", kVfioPciDriver,
                  "make vfio-pci its only driver");
  if (!device.driver.empty()) {
    write_attribute(device.sysfs_path / "driver" / "unbind", device.address,
                    "release it from " + device.driver);
  }
  write_attribute(sysfs_root / "bus" / "pci" / "drivers_probe", device.address,
                  "probe it with vfio-pci");
  std::optional<IvshmemPciDevice> bound = read_ivshmem_device(device.sysfs_path);
  if (!bound || bound->driver != kVfioPciDriver) {
    fail(std::errc::no_such_device,
         describe(bound.value_or(device)) +
             ": vfio-pci did not bind it after drivers_probe: see `dmesg | grep vfio` (without "
             "an IOMMU vfio-pci refuses devices: boot with intel_iommu=on, and give QEMU "
             "-machine q35 -device intel-iommu,intremap=on)");
  }
  return *bound;
}

unsigned iommu_group(const IvshmemPciDevice& device) {
  std::error_code error;
  const fs::path group = fs::read_symlink(device.sysfs_path / "iommu_group", error);
  if (error) {
    fail(std::errc::no_such_device,
         describe(device) +
             " is in no IOMMU group: the kernel runs without an IOMMU. Boot it with "
             "intel_iommu=on, and give QEMU -machine q35 -device intel-iommu,intremap=on "
             "(cloud kernels lack CONFIG_VFIO_NOIOMMU)");
  }
  const std::string name = group.filename().string();
  unsigned number = 0;
  const auto [end, parsed] = std::from_chars(name.data(), name.data() + name.size(), number);
  if (parsed != std::errc{} || end != name.data() + name.size() || name.empty()) {
    fail(std::errc::invalid_argument, describe(device) + ": its iommu_group link points at '" +
                                          group.string() + "', not at a numbered group");
  }
  return number;
}

}  // namespace cellink::linux_uio
