// UioDevice's sysfs parsing, map classification, geometry checks and open()
// against a fake sysfs tree (uio_sysfs.hpp, uio_geometry.hpp,
// uio_device.hpp). A real /dev/uioN needs a guest: the QEMU test
// (tests/qemu/guest_channel_test.cpp) covers that; here /dev/uio0 is a plain
// file holding the register page and the shared memory, so open() runs every
// check up to the interrupt setup, which a plain file cannot pass.
#include "cellink/linux-uio/uio_device.hpp"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/ivshmem/protocol.hpp"
#include "cellink/linux-uio/uio_geometry.hpp"
#include "cellink/linux-uio/uio_sysfs.hpp"
#include "fake_sysfs.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;
using testing_support::expect_error;
using testing_support::FakeSysfs;
using testing_support::kAddress;
using testing_support::kPage;
using testing_support::options_for;

std::vector<std::byte> v1_memory(ivshmem::Layout& layout, std::uint32_t vectors = 2) {
  return testing_support::v1_link_memory(layout, vectors);
}

// --- sysfs ------------------------------------------------------------------

TEST(UioSysfs, ReadsDenseMapsWithHexAndDecimalNumbers) {
  FakeSysfs fake;
  fake.add_uio({{"registers", "0x100", "0x800"}, {"shmem", "262144"}});
  const std::vector<UioMap> maps = read_uio_maps(fake.uio_dir(), kPage);
  ASSERT_EQ(maps.size(), 2U);
  EXPECT_EQ(maps[0].name, "registers");
  EXPECT_EQ(maps[0].size, 0x100U);
  EXPECT_EQ(maps[0].offset, 0x800U);
  EXPECT_EQ(maps[0].addr, 0xfe000000U);
  EXPECT_EQ(maps[1].index, 1U);
  EXPECT_EQ(maps[1].size, 262144U);
}

TEST(UioSysfs, RejectsNumbersThatAreNotWholeNonNegativeIntegers) {
  for (const std::string bad : {"-1", "0x", "12abc", " 12", "+4", "99999999999999999999999", ""}) {
    FakeSysfs fake;
    fake.add_uio({{"registers", bad}});
    expect_error([&] { (void)read_uio_maps(fake.uio_dir(), kPage); }, "size");
  }
}

TEST(UioSysfs, RejectsAnEmptyMapAndAnOffsetOutsideTheFirstPage) {
  FakeSysfs empty;
  empty.add_uio({{"registers", "0"}});
  expect_error([&] { (void)read_uio_maps(empty.uio_dir(), kPage); }, "size is 0");
  FakeSysfs far;
  far.add_uio({{"registers", "0x100", "4096"}});
  expect_error([&] { (void)read_uio_maps(far.uio_dir(), kPage); },
               "not inside the map's first page");
}

TEST(UioSysfs, RejectsMapsThatAreNotNumberedDensely) {
  FakeSysfs fake;
  fake.add_uio({{"registers", "0x100"}});
  FakeSysfs::write(fake.uio_dir() / "maps/map2/size", "0x1000\n");
  expect_error([&] { (void)read_uio_maps(fake.uio_dir(), kPage); }, "numbered densely");
}

TEST(UioSysfs, RejectsADeviceWithoutMaps) {
  FakeSysfs fake;
  fake.add_uio({});
  expect_error([&] { (void)read_uio_maps(fake.uio_dir(), kPage); }, "no maps");
}

TEST(UioSysfs, FindsIvshmemFunctionsOnlyWithTheirDriverUioAndVectors) {
  FakeSysfs fake;
  fake.add_v1(std::vector<std::byte>(0x40000), 1);
  fake.add_function("0000:00:01.0", "0x8086", "0x100e", "0x020000", "e1000", 1);
  fake.add_function("0000:00:05.0", "0x110a", "0x4106", "0xff4c11", "", 0);
  const std::vector<IvshmemPciDevice> devices = find_ivshmem_devices(fake.sys());
  ASSERT_EQ(devices.size(), 2U);
  EXPECT_EQ(devices[0].address, kAddress);
  EXPECT_EQ(devices[0].version, IvshmemVersion::v1);
  EXPECT_EQ(devices[0].driver, "uio_ivshmem");
  EXPECT_EQ(devices[0].uio, "uio0");
  EXPECT_EQ(devices[0].msix_vectors, 2U);
  EXPECT_EQ(devices[1].version, IvshmemVersion::v2);
  EXPECT_EQ(devices[1].class_code, 0xff4c11U);
  EXPECT_TRUE(devices[1].driver.empty());
  EXPECT_EQ(locate_ivshmem_uio(fake.sys()).address, kAddress);
}

TEST(UioSysfs, LocateWithoutADeviceSaysHowToGiveTheGuestOne) {
  FakeSysfs fake;
  fs::create_directories(fake.sys() / "bus/pci/devices");
  expect_error([&] { (void)locate_ivshmem_uio(fake.sys()); }, "cellink qemu-args");
}

TEST(UioSysfs, LocateWithTheModuleMissingSaysModprobe) {
  FakeSysfs fake;
  fs::remove(fake.sys() / "bus/pci/drivers/uio_ivshmem");
  fake.add_function(kAddress, "0x1af4", "0x1110", "0x050000", "", 2);
  expect_error([&] { (void)locate_ivshmem_uio(fake.sys()); }, "modprobe uio_ivshmem");
}

TEST(UioSysfs, LocateWithAnotherDriverSaysDriverOverride) {
  FakeSysfs fake;
  fake.add_function(kAddress, "0x1af4", "0x1110", "0x050000", "vfio-pci", 2);
  expect_error([&] { (void)locate_ivshmem_uio(fake.sys()); },
               "echo uio_ivshmem > " + (fake.sys() / "bus/pci/devices" / kAddress).string() +
                   "/driver_override");
}

TEST(UioSysfs, LocateWithAnUnboundVirtioProtocolSaysNewId) {
  FakeSysfs fake;
  fake.add_function(kAddress, "0x110a", "0x4106", "0xffc003", "", 2);
  expect_error([&] { (void)locate_ivshmem_uio(fake.sys()); }, "110a 4106 110a 4106 ffc003 ffffff");
}

TEST(UioSysfs, LocateWithAnUnboundDeviceAndTheModuleLoadedSaysDriversProbe) {
  FakeSysfs fake;
  fake.add_function(kAddress, "0x1af4", "0x1110", "0x050000", "", 2);
  expect_error([&] { (void)locate_ivshmem_uio(fake.sys()); },
               std::string("echo ") + kAddress + " > ");
}

TEST(UioSysfs, LocateWithoutAUioDeviceSaysDmesg) {
  FakeSysfs fake;
  fake.add_function(kAddress, "0x1af4", "0x1110", "0x050000", "uio_ivshmem", 2);
  expect_error([&] { (void)locate_ivshmem_uio(fake.sys()); }, "dmesg");
}

TEST(UioSysfs, LocateWithSeveralDevicesNeedsAnAddress) {
  FakeSysfs fake;
  fake.add_v1(std::vector<std::byte>(0x40000), 1);
  const fs::path second =
      fake.add_function("0000:00:03.0", "0x1af4", "0x1110", "0x050000", "uio_ivshmem", 2);
  fs::create_directories(second / "uio/uio1");
  expect_error([&] { (void)locate_ivshmem_uio(fake.sys()); }, "several ivshmem devices");
  EXPECT_EQ(locate_ivshmem_uio(fake.sys(), "0000:00:03.0").uio, "uio1");
  expect_error([&] { (void)locate_ivshmem_uio(fake.sys(), "0000:00:09.0"); },
               "no ivshmem function at 0000:00:09.0");
}

// --- maps and geometry -------------------------------------------------------

std::vector<UioMap> maps_of(std::initializer_list<std::pair<const char*, std::uint64_t>> list) {
  std::vector<UioMap> maps;
  for (const auto& [name, size] : list) {
    maps.push_back({static_cast<unsigned>(maps.size()), name, 0, size, 0});
  }
  return maps;
}

TEST(UioGeometry, ClassifiesV1MapsAndKeepsTheRegistersOffsetInsideTheirPage) {
  std::vector<UioMap> maps = maps_of({{"registers", 0x100}, {"shmem", 0x40000}});
  maps[0].offset = 0xf00;
  const UioMapSet set = classify_uio_maps(maps, kPage, "uio0");
  EXPECT_EQ(set.version, IvshmemVersion::v1);
  EXPECT_EQ(set.registers.offset, 0xf00U);
  EXPECT_EQ(set.registers.mapped_length, kPage);
  EXPECT_EQ(set.shmem.map, 1U);
  EXPECT_EQ(set.shmem.size, 0x40000U);
}

TEST(UioGeometry, ClassifiesV2MapsWithAndWithoutAnRwSection) {
  const UioMapSet with = classify_uio_maps(maps_of({{"registers", 0x1000},
                                                    {"state_table", 0x1000},
                                                    {"rw_section", 0x4000},
                                                    {"input_sections", 0x20000},
                                                    {"output_section", 0x10000}}),
                                           kPage, "uio0");
  EXPECT_EQ(with.version, IvshmemVersion::v2);
  EXPECT_EQ(with.rw_section.size, 0x4000U);
  EXPECT_EQ(with.output_section.map, 4U);
  const UioMapSet without = classify_uio_maps(maps_of({{"registers", 0x1000},
                                                       {"state_table", 0x1000},
                                                       {"input_sections", 0x20000},
                                                       {"output_section", 0x10000}}),
                                              kPage, "uio0");
  EXPECT_EQ(without.rw_section.size, 0U);
  EXPECT_EQ(without.input_sections.map, 2U);
  EXPECT_EQ(without.output_section.map, 3U);
}

TEST(UioGeometry, RejectsHostileMapSizes) {
  expect_error(
      [] {
        (void)classify_uio_maps(maps_of({{"registers", 8}, {"shmem", 0x40000}}), kPage, "uio0");
      },
      "cannot hold the 16-byte register block");
  expect_error(
      [] {
        (void)classify_uio_maps(maps_of({{"registers", 0x100}, {"shmem", 0x30000}}), kPage, "uio0");
      },
      "not a power of two");
  expect_error(
      [] {
        (void)classify_uio_maps(maps_of({{"registers", 0x100}, {"shmem", std::uint64_t{1} << 41}}),
                                kPage, "uio0");
      },
      "at most 1 TiB");
  expect_error(
      [] {
        (void)classify_uio_maps(maps_of({{"registers", 0x100}, {"shmem", 0x40000 + 8}}), kPage,
                                "uio0");
      },
      "not whole pages");
  expect_error(
      [] {
        (void)classify_uio_maps(maps_of({{"bar0", 0x100}, {"bar2", 0x40000}}), kPage, "uio0");
      },
      "'bar0', 'bar2' are neither");
}

TEST(UioGeometry, V1LayoutIsTheDaemonsByteForByte) {
  ivshmem::Layout expected;
  const std::vector<std::byte> memory = v1_memory(expected, 2);
  ivshmem::LinkDescriptor descriptor{};
  std::memcpy(&descriptor, memory.data() + ivshmem::kLinkDescriptorOffset, sizeof(descriptor));
  const UioMapSet set =
      classify_uio_maps(maps_of({{"registers", 0x100}, {"shmem", memory.size()}}), kPage, "uio0");
  const UioLinkGeometry geometry = v1_link_geometry(set, descriptor, 1, 2, "uio0");
  EXPECT_EQ(geometry.layout, expected);
  EXPECT_EQ(geometry.id, 1U);
  EXPECT_EQ(geometry.vectors, 2U);
  EXPECT_EQ(geometry.protocol, ivshmem::protocol::kCellink);
  EXPECT_EQ(geometry.link_name, "vm");
}

TEST(UioGeometry, V1RejectsADescriptorThatFailsValidation) {
  ivshmem::Layout layout;
  const std::vector<std::byte> memory = v1_memory(layout);
  ivshmem::LinkDescriptor good{};
  std::memcpy(&good, memory.data() + ivshmem::kLinkDescriptorOffset, sizeof(good));
  const UioMapSet set =
      classify_uio_maps(maps_of({{"registers", 0x100}, {"shmem", memory.size()}}), kPage, "uio0");
  struct Case {
    void (*corrupt)(ivshmem::LinkDescriptor&);
    ivshmem::DescriptorError error;
  };
  const Case cases[] = {
      {[](ivshmem::LinkDescriptor& d) { d.magic = 0; }, ivshmem::DescriptorError::bad_magic},
      {[](ivshmem::LinkDescriptor& d) { d.version = 2; },
       ivshmem::DescriptorError::unsupported_version},
      {[](ivshmem::LinkDescriptor& d) { d.reserved1[31] = 1; },
       ivshmem::DescriptorError::nonzero_reserved},
      {[](ivshmem::LinkDescriptor& d) { std::memset(d.name, 'x', sizeof(d.name)); },
       ivshmem::DescriptorError::name_not_terminated},
      {[](ivshmem::LinkDescriptor& d) { d.vectors = 65; }, ivshmem::DescriptorError::bad_vectors},
      {[](ivshmem::LinkDescriptor& d) { d.peers = 17; }, ivshmem::DescriptorError::bad_layout},
      {[](ivshmem::LinkDescriptor& d) { d.output_section_size = std::uint64_t{1} << 61; },
       ivshmem::DescriptorError::bad_layout},
      {[](ivshmem::LinkDescriptor& d) { d.memory_size *= 2; },
       ivshmem::DescriptorError::memory_size_mismatch},
      {[](ivshmem::LinkDescriptor& d) { d.output_section_size = 0x40000; },
       ivshmem::DescriptorError::memory_size_mismatch},
  };
  for (const Case& test : cases) {
    ivshmem::LinkDescriptor bad = good;
    test.corrupt(bad);
    expect_error([&] { (void)v1_link_geometry(set, bad, 1, 2, "uio0"); },
                 ivshmem::describe(test.error));
  }
}

TEST(UioGeometry, V1RejectsAnIvPositionOutsideTheLinkAndTooFewVectors) {
  ivshmem::Layout layout;
  const std::vector<std::byte> memory = v1_memory(layout, 4);
  ivshmem::LinkDescriptor descriptor{};
  std::memcpy(&descriptor, memory.data() + ivshmem::kLinkDescriptorOffset, sizeof(descriptor));
  const UioMapSet set =
      classify_uio_maps(maps_of({{"registers", 0x100}, {"shmem", memory.size()}}), kPage, "uio0");
  expect_error([&] { (void)v1_link_geometry(set, descriptor, 2, 4, "uio0"); },
               "IVPosition 2 is not a peer of the 2-peer link 'vm'");
  expect_error([&] { (void)v1_link_geometry(set, descriptor, 1, 0, "uio0"); },
               "ivshmem-plain cannot ring doorbells");
  expect_error([&] { (void)v1_link_geometry(set, descriptor, 1, 2, "uio0"); },
               "ivshmem-doorbell,vectors=4");
}

UioMapSet v2_set(std::uint64_t state, std::uint64_t inputs, std::uint64_t output) {
  return classify_uio_maps(maps_of({{"registers", 0x1000},
                                    {"state_table", state},
                                    {"input_sections", inputs},
                                    {"output_section", output}}),
                           kPage, "uio0");
}

TEST(UioGeometry, V2GeometryComesFromTheRegistersAndTheMaps) {
  const UioLinkGeometry geometry = v2_link_geometry(
      v2_set(0x1000, std::uint64_t{3} * 0x10000, 0x10000), 2, 3, 16, 0xff4c11, "uio0");
  ivshmem::Layout expected;
  ASSERT_EQ(ivshmem::Layout::compute({3, 0, 0x10000}, expected), ivshmem::LayoutError::ok);
  EXPECT_EQ(geometry.layout, expected);
  EXPECT_EQ(geometry.id, 2U);
  EXPECT_EQ(geometry.vectors, 16U);
  EXPECT_EQ(geometry.protocol, ivshmem::protocol::kCellink);
}

TEST(UioGeometry, V2RejectsInconsistentDevices) {
  const UioMapSet two_peers = v2_set(0x1000, std::uint64_t{2} * 0x10000, 0x10000);
  expect_error([&] { (void)v2_link_geometry(two_peers, 0, 17, 2, 0xff0000, "uio0"); },
               "reports 17 peers");
  expect_error([&] { (void)v2_link_geometry(two_peers, 2, 2, 2, 0xff0000, "uio0"); },
               "ID register reads 2 on a 2-peer device");
  expect_error([&] { (void)v2_link_geometry(two_peers, 0, 3, 2, 0xff0000, "uio0"); },
               "not 3 output sections");
  expect_error([&] { (void)v2_link_geometry(two_peers, 0, 2, 2, 0xffc003, "uio0"); },
               "protocol c003");
  expect_error([&] { (void)v2_link_geometry(two_peers, 0, 2, 0, 0xff0000, "uio0"); }, "no MSI-X");
  const UioMapSet huge = v2_set(0x1000, 0x10000, std::uint64_t{1} << 39);
  expect_error([&] { (void)v2_link_geometry(huge, 0, 16, 2, 0xff0000, "uio0"); },
               "output sections of");
}

// --- open() ------------------------------------------------------------------

TEST(UioDeviceOpen, GetsPastEveryCheckOfAGoodV1DeviceThenRefusesAFileThatCannotBePolled) {
  FakeSysfs fake;
  ivshmem::Layout layout;
  fake.add_v1(v1_memory(layout), 1);
  expect_error([&] { (void)UioDevice::open(options_for<UioDeviceOptions>(fake)); },
               "cannot be polled");
}

TEST(UioDeviceOpen, RefusesACorruptDescriptorBeforeUsingTheMemory) {
  FakeSysfs fake;
  ivshmem::Layout layout;
  std::vector<std::byte> memory = v1_memory(layout);
  memory[ivshmem::kLinkDescriptorOffset] = std::byte{0};  // magic
  fake.add_v1(memory, 1);
  std::error_code error;
  std::string detail;
  EXPECT_EQ(UioDevice::open(options_for<UioDeviceOptions>(fake), error, detail), nullptr);
  EXPECT_EQ(error, std::errc::invalid_argument);
  EXPECT_NE(detail.find("bad magic"), std::string::npos) << detail;
}

TEST(UioDeviceOpen, RefusesAnIvPositionOutsideTheLink) {
  FakeSysfs fake;
  ivshmem::Layout layout;
  fake.add_v1(v1_memory(layout), 7);
  expect_error([&] { (void)UioDevice::open(options_for<UioDeviceOptions>(fake)); }, "IVPosition 7");
}

TEST(UioDeviceOpen, RefusesANameThatIsNotAUioDevice) {
  FakeSysfs fake;
  UioDeviceOptions options = options_for<UioDeviceOptions>(fake);
  options.uio = "../../etc";
  expect_error([&] { (void)UioDevice::open(options); }, "is not a UIO device name");
  options.uio = "uio3";
  expect_error([&] { (void)UioDevice::open(options); }, "no such UIO device");
}

TEST(UioDeviceOpen, RefusesAUioDeviceOfAnotherDriver) {
  FakeSysfs fake;
  ivshmem::Layout layout;
  fake.add_v1(v1_memory(layout), 1);
  FakeSysfs::write(fake.uio_dir() / "name", "uio_pci_generic\n");
  UioDeviceOptions options = options_for<UioDeviceOptions>(fake);
  options.uio = "uio0";
  expect_error([&] { (void)UioDevice::open(options); }, "'uio_pci_generic', not uio_ivshmem");
}

TEST(UioDeviceOpen, RefusesAMissingDeviceNode) {
  FakeSysfs fake;
  ivshmem::Layout layout;
  fake.add_v1(v1_memory(layout), 1);
  fs::remove(fake.dev() / "uio0");
  expect_error([&] { (void)UioDevice::open(options_for<UioDeviceOptions>(fake)); },
               "mount -t devtmpfs");
}

}  // namespace
}  // namespace cellink::linux_uio
