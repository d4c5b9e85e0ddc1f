// The choice of a Linux ivshmem backend (open_device.hpp) against a fake
// sysfs tree (fake_sysfs.hpp): choose_ivshmem_backend() judges from sysfs
// alone, and open_ivshmem_device() then opens the SysfsDevice the fake
// resource files allow (a fake /dev/uio0 or /dev/vfio cannot be opened for
// real; the QEMU test, GuestChannel's Auto case, covers uio_ivshmem).
#include "cellink/linux-uio/open_device.hpp"

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/ivshmem/protocol.hpp"
#include "fake_sysfs.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;
using testing_support::expect_error;
using testing_support::FakeSysfs;
using testing_support::kAddress;
using testing_support::options_for;

// An unbound QEMU function at `address` whose BARs hold link `link`, as
// peer 1; no module loaded (FakeSysfs's uio_ivshmem directory removed).
IvshmemPciDevice add_unbound_v1(FakeSysfs& fake, const char* address, const char* link = "vm",
                                std::uint16_t protocol = ivshmem::protocol::kCellink) {
  std::error_code ignored;
  fs::remove_all(fake.sys() / "bus/pci/drivers/uio_ivshmem", ignored);
  const fs::path dir = fake.add_function(address, "0x1af4", "0x1110", "0x050000", "", 0);
  const fs::path memory = fake.dev() / (std::string("shmem-") + link);
  ivshmem::Layout layout;
  if (!fs::exists(memory)) {
    FakeSysfs::write_bytes(memory, testing_support::v1_link_memory(layout, 2, link, protocol));
  }
  FakeSysfs::add_v1_bars(dir, memory, 1);
  return *read_ivshmem_device(dir);
}

TEST(BackendChoice, NamesRoundTrip) {
  for (const IvshmemBackend backend : {IvshmemBackend::automatic, IvshmemBackend::uio,
                                       IvshmemBackend::vfio, IvshmemBackend::sysfs}) {
    EXPECT_EQ(parse_backend(backend_name(backend)), backend);
  }
  EXPECT_EQ(parse_backend("uio_ivshmem"), std::nullopt);
}

TEST(BackendChoice, AFunctionBoundToUioIvshmemWithADeviceNodeGoesToUioFirst) {
  FakeSysfs fake;
  fake.add_function(kAddress, "0x1af4", "0x1110", "0x050000", "uio_ivshmem", 2);
  fake.add_uio({{"registers", "0x100"}, {"shmem", "0x40000"}});
  FakeSysfs::write(fake.dev() / "uio0", "");
  const auto options = choose_ivshmem_backend(options_for<IvshmemSelection>(fake),
                                              find_ivshmem_devices(fake.sys()).front());
  ASSERT_EQ(options.size(), 3U);
  EXPECT_EQ(options[0].backend, IvshmemBackend::uio);
  EXPECT_TRUE(options[0].usable) << options[0].reason;
  EXPECT_EQ(options[0].reason, "bound to uio_ivshmem as uio0: MSI-X interrupts");
  EXPECT_EQ(options[1].backend, IvshmemBackend::vfio);
  EXPECT_EQ(options[2].backend, IvshmemBackend::sysfs);

  fs::remove(fake.dev() / "uio0");
  const auto without_node = choose_ivshmem_backend(options_for<IvshmemSelection>(fake),
                                                   find_ivshmem_devices(fake.sys()).front());
  EXPECT_FALSE(without_node[0].usable);
  EXPECT_NE(without_node[0].reason.find("mount -t devtmpfs"), std::string::npos);
}

TEST(BackendChoice, WithNoModuleOnlyTheSysfsFallbackIsUsableAndTheOthersSayWhatToLoad) {
  FakeSysfs fake;
  const IvshmemPciDevice function = add_unbound_v1(fake, kAddress);
  const auto options = choose_ivshmem_backend(options_for<IvshmemSelection>(fake), function);
  ASSERT_EQ(options.size(), 3U);
  EXPECT_FALSE(options[0].usable);
  EXPECT_NE(options[0].reason.find("modprobe uio_ivshmem"), std::string::npos) << options[0].reason;
  EXPECT_FALSE(options[1].usable);
  EXPECT_NE(options[1].reason.find("modprobe vfio-pci"), std::string::npos) << options[1].reason;
  EXPECT_NE(options[1].reason.find("intel_iommu=on"), std::string::npos) << options[1].reason;
  EXPECT_TRUE(options[2].usable);
  EXPECT_EQ(options[2].reason, "the polling fallback");
}

TEST(BackendChoice, VfioPciLoadedAndAnIommuGroupComeBeforeSysfs) {
  FakeSysfs fake;
  const IvshmemPciDevice unbound = add_unbound_v1(fake, kAddress);
  fs::create_directories(fake.sys() / "bus/pci/drivers/vfio-pci");
  const auto without_group = choose_ivshmem_backend(options_for<IvshmemSelection>(fake), unbound);
  EXPECT_FALSE(without_group[1].usable);
  EXPECT_NE(without_group[1].reason.find("is in no IOMMU group"), std::string::npos)
      << without_group[1].reason;

  fs::create_directories(fake.sys() / "kernel/iommu_groups/7");
  fs::create_directory_symlink("../../../kernel/iommu_groups/7",
                               unbound.sysfs_path / "iommu_group");
  const auto options = choose_ivshmem_backend(options_for<IvshmemSelection>(fake), unbound);
  EXPECT_TRUE(options[1].usable);
  EXPECT_EQ(options[1].reason,
            "vfio-pci is loaded and the function is in IOMMU group 7: MSI-X interrupts");
}

TEST(BackendChoice, AV2FunctionCanOnlyGoToUio) {
  FakeSysfs fake;
  fake.add_function("0000:00:05.0", "0x110a", "0x4106", "0xff4c11", "", 1);
  const auto options = choose_ivshmem_backend(options_for<IvshmemSelection>(fake),
                                              find_ivshmem_devices(fake.sys()).front());
  EXPECT_FALSE(options[0].usable);
  EXPECT_NE(options[0].reason.find("uio_ivshmem"), std::string::npos) << options[0].reason;
  for (std::size_t i = 1; i < 3; ++i) {
    EXPECT_FALSE(options[i].usable);
    EXPECT_EQ(options[i].reason, "a v2 function's memory is not in a BAR");
  }
}

TEST(OpenIvshmemDevice, FallsBackToSysfsAndSaysWhatToLoadForInterrupts) {
  FakeSysfs fake;
  add_unbound_v1(fake, kAddress);
  const OpenedIvshmemDevice opened = open_ivshmem_device(options_for<IvshmemSelection>(fake));
  ASSERT_TRUE(opened.device);
  EXPECT_EQ(opened.backend, IvshmemBackend::sysfs);
  EXPECT_EQ(opened.pci_address, kAddress);
  EXPECT_EQ(opened.link_name, "vm");
  EXPECT_EQ(opened.device->id(), 1U);
  const std::string& line = opened.description;
  EXPECT_EQ(line.rfind("sysfs 0000:00:02.0, link 'vm': the polling fallback, every 1000 us", 0), 0U)
      << line;
  EXPECT_NE(line.find("; for interrupts: not uio: "), std::string::npos) << line;
  EXPECT_NE(line.find("modprobe uio_ivshmem"), std::string::npos) << line;
  EXPECT_NE(line.find("; not vfio: vfio-pci is not loaded"), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line";
}

TEST(OpenIvshmemDevice, PicksAmongSeveralFunctionsByLinkName) {
  FakeSysfs fake;
  add_unbound_v1(fake, "0000:00:02.0", "first");
  add_unbound_v1(fake, "0000:00:03.0", "second");
  IvshmemSelection selection = options_for<IvshmemSelection>(fake);
  expect_error([&] { (void)open_ivshmem_device(selection); },
               "several ivshmem functions (0000:00:02.0 (v1, driver none), 0000:00:03.0 (v1, "
               "driver none)): name one by its PCI address, or give the link's name");
  selection.link_name = "second";
  const OpenedIvshmemDevice opened = open_ivshmem_device(selection);
  EXPECT_EQ(opened.pci_address, "0000:00:03.0");
  EXPECT_EQ(opened.link_name, "second");
  selection.link_name = "third";
  expect_error([&] { (void)open_ivshmem_device(selection); },
               "0000:00:02.0: it carries link 'first', not 'third'; 0000:00:03.0 uio: ");
}

TEST(OpenIvshmemDevice, RefusesALinkOfAnotherProtocolUnlessTheCheckIsOff) {
  FakeSysfs fake;
  add_unbound_v1(fake, kAddress, "vm", ivshmem::protocol::kVirtualEthernet);
  IvshmemSelection selection = options_for<IvshmemSelection>(fake);
  expect_error([&] { (void)open_ivshmem_device(selection); },
               "its link carries protocol 0001, not cellink's 4c11 (or undefined 0000)");
  selection.check_protocol = false;
  EXPECT_EQ(open_ivshmem_device(selection).backend, IvshmemBackend::sysfs);
}

TEST(OpenIvshmemDevice, WhenEveryBackendFailsOneErrorListsWhatEachSaid) {
  FakeSysfs fake;
  add_unbound_v1(fake, kAddress, "vm");
  fs::remove(fake.sys() / "bus/pci/devices" / kAddress / "resource0");
  try {
    (void)open_ivshmem_device(options_for<IvshmemSelection>(fake));
    ADD_FAILURE() << "opened a function with no backend";
  } catch (const std::system_error& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("no backend could open an ivshmem function (auto): 0000:00:02.0 uio: it "
                        "has no driver and uio_ivshmem is not loaded"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("; 0000:00:02.0 vfio: vfio-pci is not loaded"), std::string::npos) << what;
    EXPECT_NE(what.find("; 0000:00:02.0 sysfs: the function has no resource0 and resource2 files"),
              std::string::npos)
        << what;
  }
}

TEST(OpenIvshmemDevice, AnExplicitBackendIsTriedAlone) {
  FakeSysfs fake;
  add_unbound_v1(fake, kAddress);
  IvshmemSelection selection = options_for<IvshmemSelection>(fake);
  selection.backend = IvshmemBackend::uio;
  try {
    (void)open_ivshmem_device(selection);
    ADD_FAILURE() << "uio opened an unbound function";
  } catch (const std::system_error& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("(uio): 0000:00:02.0 uio: ivshmem 1af4:1110"), std::string::npos) << what;
    EXPECT_EQ(what.find("sysfs"), std::string::npos) << what;
  }
  selection.backend = IvshmemBackend::sysfs;
  EXPECT_EQ(open_ivshmem_device(selection).description.rfind("sysfs 0000:00:02.0, link 'vm'", 0),
            0U);
}

TEST(OpenIvshmemDevice, WithoutAnyFunctionSaysHowToGiveTheMachineOne) {
  FakeSysfs fake;
  fs::create_directories(fake.sys() / "bus/pci/devices");
  expect_error([&] { (void)open_ivshmem_device(options_for<IvshmemSelection>(fake)); },
               "no ivshmem PCI device (1af4:1110 or 110a:4106)");
  IvshmemSelection named = options_for<IvshmemSelection>(fake);
  named.pci_address = "0000:00:09.0";
  expect_error([&] { (void)open_ivshmem_device(named); },
               "no ivshmem function at 0000:00:09.0: there is none");
}

}  // namespace
}  // namespace cellink::linux_uio
