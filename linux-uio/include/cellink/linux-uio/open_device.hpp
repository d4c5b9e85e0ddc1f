// open_ivshmem_device(): the best Linux backend for an ivshmem function,
// chosen from what sysfs says (docs/device-backends.md).
//
//   auto opened = open_ivshmem_device({.link_name = "vm"});
//   std::puts(opened.description.c_str());   // what was chosen, and why
//   Session session(*opened.device, {});
//
// The automatic order, for each function (find_ivshmem_devices()):
//   1. uio    bound to uio_ivshmem with a UIO device: UioDevice, MSI-X
//             interrupts, v1 and v2;
//   2. vfio   bound to vfio-pci, or vfio-pci loaded and the function in an
//             IOMMU group: VfioDevice (rebinds it to vfio-pci), MSI-X
//             interrupts, v1 only;
//   3. sysfs  its resource files: SysfsDevice, the polling fallback, v1 only.
//             Its description says so, and what to load to get interrupts.
// A backend that sysfs shows cannot work is skipped with the reason (what
// to load, bind or boot with); one that fails to open passes to the next.
// An explicit backend is tried alone. With several functions, the one whose
// link descriptor carries `link_name` is taken (each is opened to read it),
// else `pci_address` must name one.
//
// Errors: std::system_error whose what() lists what every backend of every
// function tried said, in order.
//
// Threading: free functions without shared state; opening may rebind a
// function (vfio), as VfioDevice::open does.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cellink/linux-uio/uio_sysfs.hpp"
#include "cellink/linux-uio/waitable_device.hpp"

namespace cellink::linux_uio {

enum class IvshmemBackend : std::uint8_t { automatic, uio, vfio, sysfs };

// "auto", "uio", "vfio", "sysfs".
[[nodiscard]] const char* backend_name(IvshmemBackend backend) noexcept;
// The inverse of backend_name(); nullopt for anything else.
[[nodiscard]] std::optional<IvshmemBackend> parse_backend(std::string_view name) noexcept;

struct IvshmemSelection {
  IvshmemBackend backend = IvshmemBackend::automatic;
  std::string pci_address;  // "0000:00:03.0"; empty: see the file comment
  std::string link_name;    // not empty: the v1 descriptor's name must be this
  // The link's protocol (v1: the descriptor's, v2: the class code's) must be
  // cellink's 4c11 or undefined 0000. UioDevice checks this of v2 anyway.
  bool check_protocol = true;
  std::filesystem::path sysfs_root = "/sys";
  std::filesystem::path dev_root = "/dev";
  std::chrono::microseconds poll_interval{1000};  // the sysfs backend's
};

// One backend's prospects for one function, judged from sysfs alone.
struct BackendOption {
  IvshmemBackend backend = IvshmemBackend::uio;
  bool usable = false;  // worth opening
  std::string reason;   // why it is, or what to do to make it so
};

// The backends for `function` in the automatic order (uio, vfio, sysfs),
// each judged without opening, binding or mapping anything.
[[nodiscard]] std::vector<BackendOption> choose_ivshmem_backend(const IvshmemSelection& selection,
                                                                const IvshmemPciDevice& function);

struct OpenedIvshmemDevice {
  std::unique_ptr<WaitableDevice> device;
  IvshmemBackend backend = IvshmemBackend::automatic;  // uio, vfio or sysfs
  std::string pci_address;
  std::string link_name;    // v2: empty
  std::string description;  // one line: the choice and why
};

// Opens the device `selection` describes (see the file comment). Throws
// std::system_error when nothing could be opened.
[[nodiscard]] OpenedIvshmemDevice open_ivshmem_device(const IvshmemSelection& selection = {});

}  // namespace cellink::linux_uio
