// FakeSysfs: a sysfs and /dev tree in a temporary directory, with ivshmem
// PCI functions in it, for the tests of the Linux device backends' sysfs side
// (uio_device_test.cpp, vfio_binding_test.cpp). The code under test takes
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
    std::ofstream(dev() / "uio0", std::ios::binary)
        .write(reinterpret_cast<const char*>(file.data()),
               static_cast<std::streamsize>(file.size()));
  }

  static std::string to_hex(std::uint64_t value) {
    char text[24];
    std::snprintf(text, sizeof(text), "%llx", static_cast<unsigned long long>(value));
    return text;
  }

 private:
  fs::path root_;
};

}  // namespace cellink::linux_uio::testing_support
