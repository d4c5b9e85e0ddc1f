// What VfioDevice (vfio_device.hpp) needs from sysfs before it touches
// /dev/vfio: which ivshmem function to open, getting it bound to vfio-pci,
// and its IOMMU group (docs/guests.md, "The VfioDevice backend").
//
//   /sys/bus/pci/devices/<address>/driver_override   "vfio-pci" makes only
//                                                     vfio-pci probe it
//   /sys/bus/pci/devices/<address>/driver/unbind      releases it from the
//                                                     current driver
//   /sys/bus/pci/drivers_probe                        probes it again
//   /sys/bus/pci/devices/<address>/iommu_group -> .../iommu_groups/<N>
//   /sys/bus/pci/drivers/vfio-pci/                    exists once vfio-pci
//                                                     is loaded
//
// They are separate from VfioDevice so that a fake sysfs tree can test them
// (tests/unit/linux-uio/vfio_binding_test.cpp).
//
// Errors: std::system_error whose what() names the device, what is wrong and
// what to do (load a module, boot with intel_iommu=on, run as root ...).
//
// Threading: free functions without shared state. Binding changes the
// system: two processes binding the same function at once race in the
// kernel, not here.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "cellink/linux-uio/uio_sysfs.hpp"

namespace cellink::linux_uio {

inline constexpr std::string_view kVfioPciDriver = "vfio-pci";

// The function a VfioDevice (or any backend that maps BARs) should open: the
// one at `pci_address`, or else the only v1 (QEMU, 1af4:1110) function.
// Throws when there is none, when it is a v2 function (its memory is not in
// a BAR, so VFIO cannot map it: use UioDevice), or when several qualify and
// none was named.
[[nodiscard]] IvshmemPciDevice locate_ivshmem_v1(const std::filesystem::path& sysfs_root,
                                                 std::string_view pci_address = {});

// Hands `device` to vfio-pci unless vfio-pci has it already: writes
// "vfio-pci" to driver_override, unbinds the current driver (uio_ivshmem,
// say), writes the address to drivers_probe, and returns the function as
// sysfs then describes it. Throws, saying what to do, when vfio-pci is not
// loaded, a write fails (not root?) or the probe left it elsewhere.
[[nodiscard]] IvshmemPciDevice bind_to_vfio_pci(const std::filesystem::path& sysfs_root,
                                                const IvshmemPciDevice& device);

// The device's IOMMU group: the N of /dev/vfio/N. Throws when it has none
// (the kernel runs without an IOMMU), saying how to get one.
[[nodiscard]] unsigned iommu_group(const IvshmemPciDevice& device);

}  // namespace cellink::linux_uio
