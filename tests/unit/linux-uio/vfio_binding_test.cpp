// The sysfs side of the VFIO backend (vfio_binding.hpp) and VfioDevice::open()
// up to /dev/vfio, against a fake sysfs tree (fake_sysfs.hpp). A real
// vfio-pci device needs a guest with an IOMMU: the QEMU test
// (tests/qemu/guest_channel_test.cpp, the Vfio case) covers that. Here the
// kernel is absent, so a bind writes the sysfs files but nothing rebinds:
// the tests check what was written and that the failure says so.
#include "cellink/linux-uio/vfio_binding.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "cellink/linux-uio/vfio_device.hpp"
#include "fake_sysfs.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;
using testing_support::expect_error;
using testing_support::FakeSysfs;
using testing_support::kAddress;
using testing_support::options_for;

std::string read_file(const fs::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// A v1 function at kAddress bound to `driver`, with vfio-pci loaded and the
// sysfs files a bind writes present (empty), in IOMMU group 7.
fs::path add_v1_function(FakeSysfs& fake, const std::string& driver) {
  const fs::path dir = fake.add_function(kAddress, "0x1af4", "0x1110", "0x050000", driver, 2);
  fs::create_directories(fake.sys() / "bus/pci/drivers/vfio-pci");
  FakeSysfs::write(dir / "driver_override", "");
  FakeSysfs::write(fake.sys() / "bus/pci/drivers_probe", "");
  if (!driver.empty()) {
    // FakeSysfs's relative link suits the depth of real sysfs, not this tree:
    // point it at the fake driver directory, so driver/unbind is writable.
    fs::remove(dir / "driver");
    fs::create_directory_symlink(fake.sys() / "bus/pci/drivers" / driver, dir / "driver");
    FakeSysfs::write(fake.sys() / "bus/pci/drivers" / driver / "unbind", "");
  }
  fs::create_directories(fake.sys() / "kernel/iommu_groups/7");
  fs::create_directory_symlink("../../../kernel/iommu_groups/7", dir / "iommu_group");
  return dir;
}

TEST(VfioBinding, LocatesTheOnlyV1FunctionAndRefusesAV2One) {
  FakeSysfs fake;
  fake.add_function("0000:00:05.0", "0x110a", "0x4106", "0xff4c11", "", 1);
  expect_error([&] { (void)locate_ivshmem_v1(fake.sys()); },
               "its shared memory is not in a BAR, so VFIO cannot map it; open it with UioDevice");
  expect_error([&] { (void)locate_ivshmem_v1(fake.sys(), "0000:00:05.0"); },
               "Jailhouse ivshmem 2.0");

  add_v1_function(fake, "uio_ivshmem");
  const IvshmemPciDevice device = locate_ivshmem_v1(fake.sys());
  EXPECT_EQ(device.address, kAddress);
  EXPECT_EQ(device.driver, "uio_ivshmem");
  EXPECT_EQ(locate_ivshmem_v1(fake.sys(), kAddress).address, kAddress);
  expect_error([&] { (void)locate_ivshmem_v1(fake.sys(), "0000:00:09.0"); },
               "no ivshmem function at 0000:00:09.0; there are: ivshmem v1 at 0000:00:02.0");
}

TEST(VfioBinding, WithoutADeviceSaysHowToGiveTheGuestOne) {
  FakeSysfs fake;
  fs::create_directories(fake.sys() / "bus/pci/devices");
  expect_error([&] { (void)locate_ivshmem_v1(fake.sys()); },
               "no QEMU ivshmem PCI device (1af4:1110)");
  expect_error([&] { (void)locate_ivshmem_v1(fake.sys()); }, "cellink qemu-args CELL");
}

TEST(VfioBinding, SeveralFunctionsNeedAnAddress) {
  FakeSysfs fake;
  add_v1_function(fake, "");
  fake.add_function("0000:00:03.0", "0x1af4", "0x1110", "0x050000", "", 2);
  expect_error([&] { (void)locate_ivshmem_v1(fake.sys()); }, "several QEMU ivshmem functions");
}

TEST(VfioBinding, BindingWritesOverrideUnbindAndProbeThenChecksTheResult) {
  FakeSysfs fake;
  const fs::path dir = add_v1_function(fake, "uio_ivshmem");
  const IvshmemPciDevice device = locate_ivshmem_v1(fake.sys());
  // Nothing rebinds a fake tree: the check after the probe must notice.
  expect_error([&] { (void)bind_to_vfio_pci(fake.sys(), device); },
               "vfio-pci did not bind it after drivers_probe");
  EXPECT_EQ(read_file(dir / "driver_override"), "vfio-pci");
  EXPECT_EQ(read_file(fake.sys() / "bus/pci/drivers/uio_ivshmem/unbind"), kAddress);
  EXPECT_EQ(read_file(fake.sys() / "bus/pci/drivers_probe"), kAddress);
}

TEST(VfioBinding, AnUnboundFunctionIsProbedWithoutAnUnbind) {
  FakeSysfs fake;
  const fs::path dir = add_v1_function(fake, "");
  const IvshmemPciDevice device = locate_ivshmem_v1(fake.sys());
  // It has no driver/unbind: writing one would fail with that file's name.
  expect_error([&] { (void)bind_to_vfio_pci(fake.sys(), device); },
               "ivshmem v1 at 0000:00:02.0 (driver none): vfio-pci did not bind it");
  EXPECT_EQ(read_file(dir / "driver_override"), "vfio-pci");
  EXPECT_EQ(read_file(fake.sys() / "bus/pci/drivers_probe"), kAddress);
}

TEST(VfioBinding, AFunctionThatVfioPciHasIsLeftAsItIs) {
  FakeSysfs fake;
  const fs::path dir = add_v1_function(fake, "vfio-pci");
  const IvshmemPciDevice device = locate_ivshmem_v1(fake.sys());
  EXPECT_EQ(bind_to_vfio_pci(fake.sys(), device).driver, "vfio-pci");
  EXPECT_EQ(read_file(dir / "driver_override"), "");
  EXPECT_EQ(read_file(fake.sys() / "bus/pci/drivers_probe"), "");
}

TEST(VfioBinding, WithoutVfioPciLoadedSaysModprobe) {
  FakeSysfs fake;
  add_v1_function(fake, "uio_ivshmem");
  fs::remove(fake.sys() / "bus/pci/drivers/vfio-pci");
  const IvshmemPciDevice device = locate_ivshmem_v1(fake.sys());
  expect_error([&] { (void)bind_to_vfio_pci(fake.sys(), device); },
               "vfio-pci is not loaded: `modprobe vfio-pci`");
}

TEST(VfioBinding, AFailedSysfsWriteNamesTheFileAndTheReason) {
  FakeSysfs fake;
  const fs::path dir = add_v1_function(fake, "uio_ivshmem");
  fs::remove(dir / "driver_override");
  fs::create_directory(dir / "driver_override");  // open(O_WRONLY) fails: EISDIR
  const IvshmemPciDevice device = locate_ivshmem_v1(fake.sys());
  expect_error([&] { (void)bind_to_vfio_pci(fake.sys(), device); },
               "writing 'vfio-pci' to " + (dir / "driver_override").string() +
                   " to make vfio-pci its only driver");
}

TEST(VfioBinding, ReadsTheIommuGroupAndExplainsItsAbsence) {
  FakeSysfs fake;
  const fs::path dir = add_v1_function(fake, "vfio-pci");
  EXPECT_EQ(iommu_group(locate_ivshmem_v1(fake.sys())), 7U);

  fs::remove(dir / "iommu_group");
  expect_error([&] { (void)iommu_group(locate_ivshmem_v1(fake.sys())); },
               "is in no IOMMU group: the kernel runs without an IOMMU. Boot it with "
               "intel_iommu=on");
  fs::create_directory_symlink("../../../kernel/iommu_groups/seven", dir / "iommu_group");
  expect_error([&] { (void)iommu_group(locate_ivshmem_v1(fake.sys())); },
               "not at a numbered group");
}

TEST(VfioDeviceOpen, RefusesToRebindWhenBindingIsNotAllowedAndSaysHow) {
  FakeSysfs fake;
  add_v1_function(fake, "uio_ivshmem");
  VfioDeviceOptions options = options_for<VfioDeviceOptions>(fake);
  options.bind = false;
  expect_error([&] { (void)VfioDevice::open(options); },
               "is bound to 'uio_ivshmem', not vfio-pci, and binding was not allowed");
  expect_error([&] { (void)VfioDevice::open(options); }, "driver_override");
}

TEST(VfioDeviceOpen, WithoutAnIommuGroupLeavesTheFunctionToItsDriver) {
  FakeSysfs fake;
  const fs::path dir = add_v1_function(fake, "uio_ivshmem");
  fs::remove(dir / "iommu_group");
  expect_error([&] { (void)VfioDevice::open(options_for<VfioDeviceOptions>(fake)); },
               "is in no IOMMU group");
  EXPECT_EQ(read_file(dir / "driver_override"), "");
  EXPECT_EQ(read_file(fake.sys() / "bus/pci/drivers/uio_ivshmem/unbind"), "");
}

TEST(VfioDeviceOpen, AMissingContainerNodeSaysLoadTheModule) {
  FakeSysfs fake;
  add_v1_function(fake, "vfio-pci");
  expect_error([&] { (void)VfioDevice::open(options_for<VfioDeviceOptions>(fake)); },
               "/vfio/vfio: no such node (is the vfio module loaded? modprobe vfio-pci)");
}

TEST(VfioDeviceOpen, TheNoThrowFormReportsTheErrorAndItsText) {
  FakeSysfs fake;
  fs::create_directories(fake.sys() / "bus/pci/devices");
  std::error_code error;
  std::string detail;
  EXPECT_EQ(VfioDevice::open(options_for<VfioDeviceOptions>(fake), error, detail), nullptr);
  EXPECT_EQ(error, std::errc::no_such_device);
  EXPECT_NE(detail.find("no QEMU ivshmem PCI device"), std::string::npos) << detail;
}

}  // namespace
}  // namespace cellink::linux_uio
