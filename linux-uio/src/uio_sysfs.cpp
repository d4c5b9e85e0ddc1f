// sysfs parsing for uio_ivshmem devices: spec in uio_sysfs.hpp.
#include "cellink/linux-uio/uio_sysfs.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <system_error>

#include "cellink/ivshmem/protocol.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/ivshmem/registers_v2.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;

// No sysfs attribute we read is longer; more is not a sysfs attribute.
constexpr std::size_t kMaxAttributeBytes = 256;

[[noreturn]] void fail(std::errc code, const std::string& what) {
  throw std::system_error(std::make_error_code(code), what);
}

// The attribute's text without its trailing newline; nullopt when the file
// cannot be read or is too long to be an attribute.
std::optional<std::string> read_attribute(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  std::string text(kMaxAttributeBytes + 1, '\0');
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (file.bad()) return std::nullopt;
  text.resize(static_cast<std::size_t>(file.gcount()));
  if (text.size() > kMaxAttributeBytes) return std::nullopt;
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// "4096", "0x1000" or "0X1000", whole; nothing else (no sign, no space).
std::optional<std::uint64_t> parse_number(std::string_view text) {
  int base = 10;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    base = 16;
    text.remove_prefix(2);
  }
  if (text.empty()) return std::nullopt;
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<std::uint64_t> read_number(const fs::path& path) {
  const std::optional<std::string> text = read_attribute(path);
  if (!text) return std::nullopt;
  return parse_number(*text);
}

std::uint64_t require_number(const fs::path& path) {
  const std::optional<std::string> text = read_attribute(path);
  if (!text) fail(std::errc::no_such_file_or_directory, path.string() + ": cannot be read");
  const std::optional<std::uint64_t> value = parse_number(*text);
  if (!value) {
    fail(std::errc::invalid_argument,
         path.string() + ": '" + *text + "' is not a non-negative integer");
  }
  return *value;
}

std::string hex(std::uint64_t value, int digits) {
  char text[24];
  std::snprintf(text, sizeof(text), "%0*llx", digits, static_cast<unsigned long long>(value));
  return text;
}

std::string ids(const IvshmemPciDevice& device) {
  return hex(device.vendor, 4) + ":" + hex(device.device, 4);
}

std::uint32_t count_entries(const fs::path& dir) {
  std::error_code error;
  std::uint32_t count = 0;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    ++count;
  }
  return count;
}

// The first entry of `dir` whose name starts with `prefix`, in name order.
std::string first_entry(const fs::path& dir, std::string_view prefix) {
  std::error_code error;
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    std::string name = it->path().filename().string();
    if (name.starts_with(prefix)) names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names.empty() ? std::string{} : names.front();
}

// The driver_override attribute, or empty when unset ("(null)").
std::string driver_override(const fs::path& pci_dir) {
  std::string text = read_attribute(pci_dir / "driver_override").value_or("");
  return text == "(null)" ? std::string{} : text;
}

// "uio" followed by digits only: the name becomes part of paths.
bool is_uio_name(std::string_view name) {
  if (!name.starts_with("uio") || name.size() == 3) return false;
  return std::all_of(name.begin() + 3, name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

const char* version_name(IvshmemVersion version) noexcept {
  switch (version) {
    case IvshmemVersion::v1: return "v1";
    case IvshmemVersion::v2: return "v2";
  }
  return "unknown";
}

std::vector<UioMap> read_uio_maps(const fs::path& uio_dir, std::uint64_t page_size) {
  const fs::path maps_dir = uio_dir / "maps";
  std::vector<UioMap> maps;
  for (unsigned index = 0; index < kMaxUioMaps; ++index) {
    const fs::path dir = maps_dir / ("map" + std::to_string(index));
    std::error_code error;
    if (!fs::is_directory(dir, error)) break;
    UioMap map;
    map.index = index;
    const std::optional<std::string> name = read_attribute(dir / "name");
    if (!name) fail(std::errc::no_such_file_or_directory, (dir / "name").string() + ": missing");
    map.name = *name;
    map.addr = require_number(dir / "addr");
    map.size = require_number(dir / "size");
    map.offset = require_number(dir / "offset");
    if (map.size == 0) fail(std::errc::invalid_argument, dir.string() + ": size is 0");
    if (map.offset >= page_size) {
      fail(std::errc::invalid_argument, dir.string() + ": offset " + std::to_string(map.offset) +
                                            " is not inside the map's first page");
    }
    maps.push_back(std::move(map));
  }
  // A map past the first gap, or past kMaxUioMaps, is not what the UIO core
  // produces: refuse to guess which numbering is meant.
  std::error_code error;
  for (fs::directory_iterator it(maps_dir, error), end; !error && it != end; it.increment(error)) {
    const std::string entry = it->path().filename().string();
    const std::optional<std::uint64_t> number =
        entry.starts_with("map") ? parse_number(std::string_view(entry).substr(3)) : std::nullopt;
    if (!number || *number >= maps.size() || entry != "map" + std::to_string(*number)) {
      fail(std::errc::invalid_argument,
           maps_dir.string() + ": unexpected entry '" + entry + "' (maps must be map0..map" +
               std::to_string(kMaxUioMaps - 1) + ", numbered densely)");
    }
  }
  if (maps.empty()) {
    fail(std::errc::no_such_device,
         maps_dir.string() + ": no maps: the device registered no memory (is it uio_ivshmem?)");
  }
  return maps;
}

std::optional<IvshmemPciDevice> read_ivshmem_device(const fs::path& pci_dir) {
  const std::optional<std::uint64_t> vendor = read_number(pci_dir / "vendor");
  const std::optional<std::uint64_t> device_id = read_number(pci_dir / "device");
  if (!vendor || !device_id) return std::nullopt;
  IvshmemPciDevice device;
  if (*vendor == ivshmem::v1::kVendorId && *device_id == ivshmem::v1::kDeviceId) {
    device.version = IvshmemVersion::v1;
  } else if (*vendor == ivshmem::v2::kVendorId && *device_id == ivshmem::v2::kDeviceId) {
    device.version = IvshmemVersion::v2;
  } else {
    return std::nullopt;
  }
  device.address = pci_dir.filename().string();
  device.sysfs_path = pci_dir;
  device.vendor = static_cast<std::uint16_t>(*vendor);
  device.device = static_cast<std::uint16_t>(*device_id);
  device.class_code = static_cast<std::uint32_t>(read_number(pci_dir / "class").value_or(0));
  std::error_code error;
  const fs::path driver = fs::read_symlink(pci_dir / "driver", error);
  if (!error) device.driver = driver.filename().string();
  if (device.driver == kUioIvshmemDriver) device.uio = first_entry(pci_dir / "uio", "uio");
  device.msix_vectors = count_entries(pci_dir / "msi_irqs");
  return device;
}

std::vector<IvshmemPciDevice> find_ivshmem_devices(const fs::path& sysfs_root) {
  const fs::path devices_dir = sysfs_root / "bus" / "pci" / "devices";
  std::error_code error;
  fs::directory_iterator it(devices_dir, error);
  if (error) {
    throw std::system_error(error, devices_dir.string() +
                                       ": cannot list PCI devices (is sysfs "
                                       "mounted? mount -t sysfs sysfs /sys)");
  }
  std::vector<IvshmemPciDevice> found;
  for (fs::directory_iterator end; !error && it != end; it.increment(error)) {
    if (std::optional<IvshmemPciDevice> device = read_ivshmem_device(it->path())) {
      found.push_back(std::move(*device));
    }
  }
  std::sort(found.begin(), found.end(), [](const IvshmemPciDevice& a, const IvshmemPciDevice& b) {
    return a.address < b.address;
  });
  return found;
}

std::string binding_remedy(const IvshmemPciDevice& device, const fs::path& sysfs_root) {
  const std::string pci_dir = (sysfs_root / "bus" / "pci" / "devices" / device.address).string();
  const std::string probe =
      "echo " + device.address + " > " + (sysfs_root / "bus" / "pci" / "drivers_probe").string();
  if (device.driver == kUioIvshmemDriver) {
    if (!device.uio.empty()) return {};
    return "uio_ivshmem is bound but registered no UIO device: see `dmesg | grep ivshmem` for "
           "why it refused the device";
  }
  if (!device.driver.empty()) {
    return "it is bound to the driver '" + device.driver + "': hand it to uio_ivshmem with `echo " +
           std::string(kUioIvshmemDriver) + " > " + pci_dir + "/driver_override; echo " +
           device.address + " > " + pci_dir + "/driver/unbind; " + probe + "`";
  }
  std::error_code error;
  const fs::path driver_dir = sysfs_root / "bus" / "pci" / "drivers" / kUioIvshmemDriver;
  if (!fs::is_directory(driver_dir, error)) {
    return "it has no driver and uio_ivshmem is not loaded: `modprobe uio_ivshmem` (or `insmod "
           "uio.ko; insmod uio_ivshmem.ko`, built from linux-uio/kmod)";
  }
  const std::string override_name = driver_override(device.sysfs_path);
  if (!override_name.empty() && override_name != kUioIvshmemDriver) {
    return "its driver_override is '" + override_name + "': `echo " +
           std::string(kUioIvshmemDriver) + " > " + pci_dir + "/driver_override; " + probe + "`";
  }
  const std::uint16_t protocol = ivshmem::protocol_from_class_code(device.class_code);
  if (device.version == IvshmemVersion::v2 && protocol != ivshmem::protocol::kUndefined &&
      protocol != ivshmem::protocol::kCellink) {
    return "uio_ivshmem binds v2 protocols 0000 and 4c11 only, and this one is " +
           hex(protocol, 4) + ": `echo \"110a 4106 110a 4106 " + hex(device.class_code, 6) +
           " ffffff\" > " + (driver_dir / "new_id").string() + "`";
  }
  return "it has no driver although uio_ivshmem is loaded: `" + probe +
         "`, then see `dmesg | grep "
         "ivshmem`";
}

IvshmemPciDevice describe_uio(const fs::path& sysfs_root, const std::string& uio) {
  if (!is_uio_name(uio)) {
    fail(std::errc::invalid_argument, "'" + uio + "' is not a UIO device name (uio0, uio1, ...)");
  }
  const fs::path uio_dir = sysfs_root / "class" / "uio" / uio;
  std::error_code error;
  if (!fs::is_directory(uio_dir, error)) {
    fail(std::errc::no_such_device,
         uio_dir.string() + ": no such UIO device (ls " + uio_dir.parent_path().string() + ")");
  }
  const std::string driver = read_attribute(uio_dir / "name").value_or("");
  if (driver != kUioIvshmemDriver) {
    fail(std::errc::no_such_device,
         uio + " belongs to the UIO driver '" + driver + "', not uio_ivshmem");
  }
  const fs::path pci_dir = fs::canonical(uio_dir / "device", error);
  std::optional<IvshmemPciDevice> device;
  if (!error) device = read_ivshmem_device(pci_dir);
  if (!device) {
    fail(std::errc::no_such_device,
         uio + ": " + (uio_dir / "device").string() + " is not an ivshmem PCI function");
  }
  return *device;
}

IvshmemPciDevice locate_ivshmem_uio(const fs::path& sysfs_root, std::string_view pci_address) {
  const std::vector<IvshmemPciDevice> devices = find_ivshmem_devices(sysfs_root);
  auto unusable = [&](const IvshmemPciDevice& device) {
    return "ivshmem " + ids(device) + " at " + device.address +
           " is not usable: " + binding_remedy(device, sysfs_root);
  };
  std::string listing;
  for (const IvshmemPciDevice& device : devices) {
    listing += (listing.empty() ? "" : ", ") + device.address + " (" + ids(device) + ", driver " +
               (device.driver.empty() ? std::string("none") : device.driver) + ")";
  }
  if (!pci_address.empty()) {
    for (const IvshmemPciDevice& device : devices) {
      if (device.address != pci_address) continue;
      if (device.driver == kUioIvshmemDriver && !device.uio.empty()) return device;
      fail(std::errc::no_such_device, unusable(device));
    }
    fail(std::errc::no_such_device,
         "no ivshmem function at " + std::string(pci_address) +
             (devices.empty() ? std::string(": there is none") : "; there are: " + listing));
  }
  std::vector<const IvshmemPciDevice*> usable;
  for (const IvshmemPciDevice& device : devices) {
    if (device.driver == kUioIvshmemDriver && !device.uio.empty()) usable.push_back(&device);
  }
  if (usable.size() == 1) return *usable.front();
  if (usable.size() > 1) {
    fail(std::errc::invalid_argument,
         "several ivshmem devices are bound to uio_ivshmem (" + listing +
             "): name one (UioDeviceOptions::pci_address, or the program's option for it)");
  }
  if (devices.empty()) {
    fail(std::errc::no_such_device,
         "no ivshmem PCI device (1af4:1110 or 110a:4106) under " +
             (sysfs_root / "bus" / "pci" / "devices").string() +
             ": give the machine one (QEMU: the options `cellink qemu-args CELL` prints; "
             "Jailhouse: an ivshmem device in the cell configuration)");
  }
  std::string reasons;
  for (const IvshmemPciDevice& device : devices) {
    reasons += (reasons.empty() ? "" : "; ") + unusable(device);
  }
  fail(std::errc::no_such_device, reasons);
}

}  // namespace cellink::linux_uio
