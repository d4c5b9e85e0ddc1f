// Choosing and opening a Linux ivshmem backend: spec in open_device.hpp.
#include "cellink/linux-uio/open_device.hpp"

#include <cstdio>
#include <exception>
#include <system_error>
#include <utility>

#include "cellink/ivshmem/protocol.hpp"
#include "cellink/linux-uio/sysfs_device.hpp"
#include "cellink/linux-uio/uio_device.hpp"
#include "cellink/linux-uio/vfio_binding.hpp"
#include "cellink/linux-uio/vfio_device.hpp"
#include "system_errors.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;
using detail::fail;

std::string hex4(std::uint16_t value) {
  char text[8];
  std::snprintf(text, sizeof(text), "%04x", value);
  return text;
}

std::string listing(const std::vector<IvshmemPciDevice>& functions) {
  std::string text;
  for (const IvshmemPciDevice& function : functions) {
    text += (text.empty() ? "" : ", ") + function.address + " (" + version_name(function.version) +
            ", driver " + (function.driver.empty() ? std::string("none") : function.driver) + ")";
  }
  return text;
}

// The functions to try, in address order.
std::vector<IvshmemPciDevice> candidates(const IvshmemSelection& selection) {
  std::vector<IvshmemPciDevice> functions = find_ivshmem_devices(selection.sysfs_root);
  if (!selection.pci_address.empty()) {
    for (IvshmemPciDevice& function : functions) {
      if (function.address == selection.pci_address) return {std::move(function)};
    }
    fail(std::errc::no_such_device, "no ivshmem function at " + selection.pci_address +
                                        (functions.empty() ? std::string(": there is none")
                                                           : "; there are: " + listing(functions)));
  }
  if (functions.empty()) {
    fail(std::errc::no_such_device,
         "no ivshmem PCI device (1af4:1110 or 110a:4106) under " +
             (selection.sysfs_root / "bus" / "pci" / "devices").string() +
             ": give the machine one (QEMU: the options `cellink qemu-args CELL` prints)");
  }
  if (functions.size() > 1 && selection.link_name.empty()) {
    fail(std::errc::invalid_argument,
         "several ivshmem functions (" + listing(functions) +
             "): name one by its PCI address, or give the link's name to pick it by");
  }
  return functions;
}

BackendOption judge_uio(const IvshmemSelection& selection, const IvshmemPciDevice& function) {
  const std::string remedy = binding_remedy(function, selection.sysfs_root);
  if (!remedy.empty()) return {IvshmemBackend::uio, false, remedy};
  std::error_code error;
  if (!fs::exists(selection.dev_root / function.uio, error)) {
    return {IvshmemBackend::uio, false,
            "bound to uio_ivshmem as " + function.uio + ", but " +
                (selection.dev_root / function.uio).string() +
                " is missing (mount -t devtmpfs devtmpfs /dev)"};
  }
  return {IvshmemBackend::uio, true,
          "bound to uio_ivshmem as " + function.uio + ": MSI-X interrupts"};
}

BackendOption judge_vfio(const IvshmemSelection& selection, const IvshmemPciDevice& function) {
  if (function.version != IvshmemVersion::v1) {
    return {IvshmemBackend::vfio, false, "a v2 function's memory is not in a BAR"};
  }
  if (function.driver == kVfioPciDriver) {
    return {IvshmemBackend::vfio, true, "bound to vfio-pci: MSI-X interrupts"};
  }
  std::error_code error;
  if (!fs::is_directory(selection.sysfs_root / "bus/pci/drivers" / kVfioPciDriver, error)) {
    return {IvshmemBackend::vfio, false,
            "vfio-pci is not loaded (`modprobe vfio-pci`, with the kernel booted with "
            "intel_iommu=on)"};
  }
  try {
    const unsigned group = iommu_group(function);
    return {IvshmemBackend::vfio, true,
            "vfio-pci is loaded and the function is in IOMMU group " + std::to_string(group) +
                ": MSI-X interrupts"};
  } catch (const std::system_error& failure) {
    return {IvshmemBackend::vfio, false, failure.what()};
  }
}

BackendOption judge_sysfs(const IvshmemPciDevice& function) {
  if (function.version != IvshmemVersion::v1) {
    return {IvshmemBackend::sysfs, false, "a v2 function's memory is not in a BAR"};
  }
  std::error_code error;
  if (!fs::exists(function.sysfs_path / "resource0", error) ||
      !fs::exists(function.sysfs_path / "resource2", error)) {
    return {IvshmemBackend::sysfs, false, "the function has no resource0 and resource2 files"};
  }
  return {IvshmemBackend::sysfs, true, "the polling fallback"};
}

// An opened backend, with what the description and the link checks need.
struct Attempt {
  std::unique_ptr<WaitableDevice> device;
  std::string link_name;
  std::uint16_t protocol = 0;
  std::string detail;  // the backend's words for the description
};

template <typename Device>
Attempt attempt(std::unique_ptr<Device> device, std::string detail) {
  Attempt opened;
  opened.link_name = device->link_name();
  opened.protocol = device->protocol();
  opened.detail = std::move(detail);
  opened.device = std::move(device);
  return opened;
}

Attempt open_backend(IvshmemBackend backend, const IvshmemSelection& selection,
                     const IvshmemPciDevice& function) {
  if (backend == IvshmemBackend::uio) {
    auto device = UioDevice::open({{}, function.address, selection.sysfs_root, selection.dev_root});
    std::string detail = device->uio_name() + ", uio_ivshmem's MSI-X interrupts";
    return attempt(std::move(device), std::move(detail));
  }
  if (backend == IvshmemBackend::vfio) {
    auto device =
        VfioDevice::open({function.address, true, selection.sysfs_root, selection.dev_root});
    std::string detail =
        "vfio-pci, IOMMU group " + std::to_string(device->iommu_group()) + ", MSI-X interrupts";
    return attempt(std::move(device), std::move(detail));
  }
  auto device =
      SysfsDevice::open({function.address, selection.sysfs_root, selection.poll_interval});
  std::string detail = device->description();
  return attempt(std::move(device), std::move(detail));
}

// Why the link on an opened function is not the one wanted; empty when it is.
std::string link_mismatch(const IvshmemSelection& selection, const Attempt& opened) {
  if (!selection.link_name.empty() && opened.link_name != selection.link_name) {
    return "it carries link '" + opened.link_name + "', not '" + selection.link_name + "'";
  }
  if (selection.check_protocol && opened.protocol != ivshmem::protocol::kCellink &&
      opened.protocol != ivshmem::protocol::kUndefined) {
    return "its link carries protocol " + hex4(opened.protocol) + ", not cellink's " +
           hex4(ivshmem::protocol::kCellink) + " (or undefined 0000)";
  }
  return {};
}

}  // namespace

const char* backend_name(IvshmemBackend backend) noexcept {
  switch (backend) {
    case IvshmemBackend::automatic: return "auto";
    case IvshmemBackend::uio: return "uio";
    case IvshmemBackend::vfio: return "vfio";
    case IvshmemBackend::sysfs: return "sysfs";
  }
  return "unknown";
}

std::optional<IvshmemBackend> parse_backend(std::string_view name) noexcept {
  for (const IvshmemBackend backend : {IvshmemBackend::automatic, IvshmemBackend::uio,
                                       IvshmemBackend::vfio, IvshmemBackend::sysfs}) {
    if (name == backend_name(backend)) return backend;
  }
  return std::nullopt;
}

std::vector<BackendOption> choose_ivshmem_backend(const IvshmemSelection& selection,
                                                  const IvshmemPciDevice& function) {
  return {judge_uio(selection, function), judge_vfio(selection, function), judge_sysfs(function)};
}

OpenedIvshmemDevice open_ivshmem_device(const IvshmemSelection& selection) {
  std::string failures;  // "address backend: what it said" for each try
  const auto note = [&](const std::string& who, const std::string& what) {
    failures += (failures.empty() ? "" : "; ") + who + ": " + what;
  };
  for (const IvshmemPciDevice& function : candidates(selection)) {
    const std::vector<BackendOption> options =
        selection.backend == IvshmemBackend::automatic
            ? choose_ivshmem_backend(selection, function)
            : std::vector<BackendOption>{{selection.backend, true, "asked for"}};
    std::string passed_over;  // the better backends and why they were not used
    for (const BackendOption& option : options) {
      const std::string who = function.address + " " + backend_name(option.backend);
      std::string why_not = option.reason;
      Attempt opened;
      if (option.usable) {
        try {
          opened = open_backend(option.backend, selection, function);
        } catch (const std::exception& failure) {
          why_not = failure.what();
        }
      }
      if (!opened.device) {
        note(who, why_not);
        passed_over += std::string("; not ") + backend_name(option.backend) + ": " + why_not;
        continue;
      }
      if (const std::string mismatch = link_mismatch(selection, opened); !mismatch.empty()) {
        note(function.address, mismatch);  // no other backend changes the link
        break;
      }
      std::string description = std::string(backend_name(option.backend)) + " " + function.address +
                                ", link '" + opened.link_name + "': " + opened.detail;
      if (option.backend == IvshmemBackend::sysfs && !passed_over.empty()) {
        description += "; for interrupts:" + passed_over.substr(1);
      } else {
        description += passed_over;
      }
      return {std::move(opened.device), option.backend, function.address,
              std::move(opened.link_name), std::move(description)};
    }
  }
  fail(std::errc::no_such_device, "no backend could open an ivshmem function (" +
                                      std::string(backend_name(selection.backend)) +
                                      "): " + failures);
}

}  // namespace cellink::linux_uio
