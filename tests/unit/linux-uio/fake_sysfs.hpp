// FakeSysfs: a sysfs and /dev tree in a temporary directory, with ivshmem
// PCI functions in it, for the tests of the Linux device backends' sysfs side
// (uio_device_test.cpp, vfio_binding_test.cpp, sysfs_device_test.cpp,
// open_device_test.cpp). The code under test takes
// the roots as options, so it reads and writes here instead of /sys.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <cstdio>
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

namespace cellink::linux_uio::testing_support {

namespace fs = std::filesystem;

inline constexpr std::uint64_t kPage = 4096;
inline constexpr const char* kAddress = "0000:00:02.0";

// Runs `body`, which must throw std::system_error whose what() contains
// `needle`.
template <typename Body>
void expect_error(Body&& body, const std::string& needle) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const std::system_error& error) {
    EXPECT_NE(std::string(error.what()).find(needle), std::string::npos)
        << "message: " << error.what() << "\nexpected to contain: " << needle;
  }
}

// A daemon-style v1 memory object: 2 peers, 64 KiB output sections, the
// descriptor of link `name` at 0x800. `size` 0 is the layout's size; a
// larger one is what QEMU maps (a power of two). `layout` receives the layout.
inline std::vector<std::byte> v1_link_memory(ivshmem::Layout& layout, std::uint32_t vectors = 2,
                                             const char* name = "vm",
                                             std::uint16_t protocol = ivshmem::protocol::kCellink,
                                             std::uint64_t size = 0) {
  EXPECT_EQ(ivshmem::Layout::compute({2, 0, 0x10000}, layout), ivshmem::LayoutError::ok);
  ivshmem::LinkDescriptor descriptor =
      ivshmem::make_link_descriptor(layout, vectors, protocol, name);
  if (size != 0) descriptor.memory_size = size;
  std::vector<std::byte> memory(descriptor.memory_size);
  std::memcpy(memory.data() + ivshmem::kLinkDescriptorOffset, &descriptor, sizeof(descriptor));
  return memory;
}

// A sysfs and /dev tree in a temporary directory, with one ivshmem function
// (v1 by default) bound to uio_ivshmem as uio0.
class FakeSysfs {
 public:
  FakeSysfs() {
    char pattern[] = "/tmp/cellink-uio-test-XXXXXX";
    root_ = ::mkdtemp(pattern);
    fs::create_directories(sys() / "bus/pci/drivers/uio_ivshmem");
    fs::create_directories(root_ / "dev");
  }
  ~FakeSysfs() {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }
  FakeSysfs(const FakeSysfs&) = delete;
  FakeSysfs& operator=(const FakeSysfs&) = delete;

  [[nodiscard]] fs::path sys() const { return root_ / "sys"; }
  [[nodiscard]] fs::path dev() const { return root_ / "dev"; }
  [[nodiscard]] fs::path uio_dir() const { return sys() / "class/uio/uio0"; }

  static void write(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }

  static void write_bytes(const fs::path& path, const std::vector<std::byte>& bytes) {
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
  }

  // A PCI function; `driver` empty leaves it unbound.
  fs::path add_function(const std::string& address, const std::string& vendor,
                        const std::string& device, const std::string& class_code,
                        const std::string& driver, unsigned vectors) {
    fs::path dir = sys() / "bus/pci/devices" / address;
    write(dir / "vendor", vendor + "\n");
    write(dir / "device", device + "\n");
    write(dir / "class", class_code + "\n");
    if (!driver.empty()) {
      fs::create_directories(sys() / "bus/pci/drivers" / driver);
      fs::create_directory_symlink("../../../bus/pci/drivers/" + driver, dir / "driver");
    }
    for (unsigned v = 0; v < vectors; ++v)
      write(dir / "msi_irqs" / std::to_string(24 + v), "msix\n");
    return dir;
  }

  // uio0 for the function at kAddress, with these maps: {name, size, offset}.
  struct Map {
    std::string name;
    std::string size;
    std::string offset = "0x0";
  };
  void add_uio(const std::vector<Map>& maps) {
    const fs::path pci = sys() / "bus/pci/devices" / kAddress;
    fs::create_directories(pci / "uio/uio0");
    write(uio_dir() / "name", "uio_ivshmem\n");
    fs::create_directory_symlink("../../../bus/pci/devices/" + std::string(kAddress),
                                 uio_dir() / "device");
    for (std::size_t i = 0; i < maps.size(); ++i) {
      const fs::path dir = uio_dir() / "maps" / ("map" + std::to_string(i));
      write(dir / "name", maps[i].name + "\n");
      write(dir / "addr", "0x00000000fe000000\n");
      write(dir / "size", maps[i].size + "\n");
      write(dir / "offset", maps[i].offset + "\n");
    }
  }

  // The standard v1 device: 2 vectors, registers in page 0 at offset 0,
  // `memory` as map 1 (page 1 on of /dev/uio0).
  void add_v1(const std::vector<std::byte>& memory, std::uint32_t iv_position) {
    add_function(kAddress, "0x1af4", "0x1110", "0x050000", "uio_ivshmem", 2);
    add_uio({{"registers", "0x100"}, {"shmem", "0x" + to_hex(memory.size())}});
    std::vector<std::byte> file(kPage + memory.size());
    std::memcpy(file.data() + 8, &iv_position, sizeof(iv_position));
    std::memcpy(file.data() + kPage, memory.data(), memory.size());
    write_bytes(dev() / "uio0", file);
  }

  // The sysfs files of a QEMU ivshmem-doorbell function's BARs, as regular
  // files (which mmap like the real ones): config (an MSI-X capability with
  // `vectors` entries, or none for 0; Memory Space decoding on or off),
  // resource (BAR0 at a page-aligned address), resource0 (256 bytes holding
  // IVPosition) and resource2, a hard link to `memory`: functions given the
  // same file share the memory, as QEMU guests on one link do.
  static void add_v1_bars(const fs::path& pci_dir, const fs::path& memory,
                          std::uint32_t iv_position, unsigned vectors = 2,
                          bool memory_decoding = true) {
    std::vector<std::byte> config(256);
    const auto put16 = [&](std::size_t at, unsigned value) {
      config[at] = static_cast<std::byte>(value & 0xff);
      config[at + 1] = static_cast<std::byte>(value >> 8);
    };
    put16(0x00, 0x1af4);
    put16(0x02, 0x1110);
    put16(0x04, memory_decoding ? 0x0002 : 0x0000);  // command: Memory Space
    if (vectors > 0) {
      put16(0x06, 0x0010);  // status: capability list
      config[0x34] = std::byte{0x40};
      config[0x40] = std::byte{0x11};  // MSI-X, last in the list
      put16(0x42, vectors - 1);
    }
    write_bytes(pci_dir / "config", config);
    write(pci_dir / "resource",
          "0x00000000fe000000 0x00000000fe0000ff 0x0000000000040200\n"
          "0x00000000fe001000 0x00000000fe001fff 0x0000000000040200\n"
          "0x0000000800000000 0x00000008003fffff 0x000000000014220c\n");
    std::vector<std::byte> registers(256);
    std::memcpy(registers.data() + 8, &iv_position, sizeof(iv_position));
    write_bytes(pci_dir / "resource0", registers);
    fs::create_hard_link(memory, pci_dir / "resource2");
  }

  static std::string to_hex(std::uint64_t value) {
    char text[24];
    std::snprintf(text, sizeof(text), "%llx", static_cast<unsigned long long>(value));
    return text;
  }

 private:
  fs::path root_;
};

// Options of a backend (UioDeviceOptions, VfioDeviceOptions,
// IvshmemSelection ...) pointed at `fake`'s sysfs and /dev.
template <typename Options>
[[nodiscard]] Options options_for(const FakeSysfs& fake) {
  Options options;
  options.sysfs_root = fake.sys();
  options.dev_root = fake.dev();
  return options;
}

}  // namespace cellink::linux_uio::testing_support
