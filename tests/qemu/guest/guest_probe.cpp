// guest_probe: the program the QEMU test guest runs (tests/qemu/guest_boot_test.cpp,
// docs/guests.md). Statically linked: the guest has busybox and nothing else.
//
// It proves, step by step, that a Linux guest can use an ivshmem-doorbell
// device through linux-uio/kmod/uio_ivshmem.ko:
//   1. finds the device in sysfs by PCI id and reports it;
//   2. opens its /dev/uioN and maps map 0 (registers) and map 1 (shmem);
//   3. reads IVPosition and the link descriptor the daemon wrote, both
//      validated before use: the shared memory is writable by every peer;
//   4. rings its own doorbell and waits in poll() + read() on /dev/uioN for
//      the MSI-X interrupt; then masks through irqcontrol (write 0), rings
//      again, sees nothing, unmasks (write 1) and sees the held interrupt;
//   5. with --host-peer=P: publishes its state (INIT, epoch 1) in its
//      state-table entry, rings P on vector 0 as the state-change protocol
//      says, and waits for P to ring back.
// Each step prints a "CELLINK-GUEST: " line on the console; the last line is
// "CELLINK-GUEST-RESULT: ok ..." or "CELLINK-GUEST-RESULT: fail <reason>".
//
// Usage: guest_probe [--vector=V] [--irq-wait-ms=MS] [--host-peer=P] [--host-wait-ms=MS]
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/ivshmem/peer_state.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/ivshmem/registers_v2.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "guest_console.hpp"

namespace {

namespace ivshmem = cellink::ivshmem;
using cellink::guest_test::fail;
using cellink::guest_test::parse_option;
using cellink::guest_test::say;
using cellink::linux_uio::UniqueFd;

constexpr std::string_view kPciDevices = "/sys/bus/pci/devices";
constexpr std::string_view kDriverName = "uio_ivshmem";
// The largest shared memory the probe agrees to map (1 TiB): a size read
// from sysfs is still checked before it is used as a length.
constexpr std::uint64_t kMaxSharedMemory = std::uint64_t{1} << 40;
// How long a masked doorbell must stay undelivered. Under TCG an unmasked
// self-doorbell arrives within milliseconds.
constexpr int kMaskedWaitMs = 500;

struct Options {
  std::uint32_t vector = 1;
  int irq_wait_ms = 10000;
  std::optional<std::uint32_t> host_peer;
  int host_wait_ms = 30000;
};

std::string errno_text() {
  return std::strerror(errno);
}

// The first line of a sysfs file, without the newline.
std::optional<std::string> read_line(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char text[256];
  const ssize_t got = ::read(fd, text, sizeof(text) - 1);
  ::close(fd);
  if (got < 0) return std::nullopt;
  std::string line(text, static_cast<std::size_t>(got));
  if (const std::size_t end = line.find('\n'); end != std::string::npos) line.resize(end);
  return line;
}

// A sysfs number such as "0x1af4" or "4096".
std::optional<std::uint64_t> read_number(const std::string& path) {
  const std::optional<std::string> line = read_line(path);
  if (!line || line->empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(line->c_str(), &end, 0);
  if (errno != 0 || end == nullptr || *end != '\0') return std::nullopt;
  return value;
}

// The single entry of a directory whose name starts with `prefix`.
std::optional<std::string> find_entry(const std::string& dir, std::string_view prefix) {
  DIR* stream = ::opendir(dir.c_str());
  if (stream == nullptr) return std::nullopt;
  std::optional<std::string> found;
  while (const dirent* entry = ::readdir(stream)) {
    if (std::string_view(entry->d_name).starts_with(prefix)) found = entry->d_name;
  }
  ::closedir(stream);
  return found;
}

struct PciDevice {
  std::string path;  // /sys/bus/pci/devices/<bdf>
  std::string bdf;
  std::uint64_t vendor = 0;
  std::uint64_t device = 0;
  std::uint64_t class_code = 0;
  std::string driver;  // empty when unbound
};

std::optional<PciDevice> find_ivshmem() {
  DIR* stream = ::opendir(std::string(kPciDevices).c_str());
  if (stream == nullptr) return std::nullopt;
  std::optional<PciDevice> found;
  while (const dirent* entry = ::readdir(stream)) {
    if (entry->d_name[0] == '.') continue;
    PciDevice device;
    device.bdf = entry->d_name;
    device.path = std::string(kPciDevices) + "/" + device.bdf;
    device.vendor = read_number(device.path + "/vendor").value_or(0);
    device.device = read_number(device.path + "/device").value_or(0);
    const bool v1 =
        device.vendor == ivshmem::v1::kVendorId && device.device == ivshmem::v1::kDeviceId;
    const bool v2 =
        device.vendor == ivshmem::v2::kVendorId && device.device == ivshmem::v2::kDeviceId;
    if (!v1 && !v2) continue;
    device.class_code = read_number(device.path + "/class").value_or(0);
    char target[256];
    const std::string link = device.path + "/driver";
    const ssize_t length = ::readlink(link.c_str(), target, sizeof(target) - 1);
    if (length > 0) {
      const std::string_view driver(target, static_cast<std::size_t>(length));
      device.driver = std::string(driver.substr(driver.rfind('/') + 1));
    }
    found = device;
    break;
  }
  ::closedir(stream);
  return found;
}

struct UioMap {
  std::string name;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;  // where the map starts inside its first page
};

std::optional<UioMap> read_map(const std::string& uio, unsigned index) {
  const std::string dir = "/sys/class/uio/" + uio + "/maps/map" + std::to_string(index);
  UioMap map;
  map.name = read_line(dir + "/name").value_or("");
  const std::optional<std::uint64_t> size = read_number(dir + "/size");
  const std::optional<std::uint64_t> offset = read_number(dir + "/offset");
  if (!size || !offset) return std::nullopt;
  map.size = *size;
  map.offset = *offset;
  return map;
}

// A shared mapping of one UIO map; unmapped on destruction.
class Mapping {
 public:
  Mapping(int fd, unsigned index, std::size_t length)
      : length_(length),
        base_(::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                     static_cast<off_t>(index) * ::sysconf(_SC_PAGESIZE))) {}
  ~Mapping() {
    if (ok()) ::munmap(base_, length_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  [[nodiscard]] bool ok() const noexcept { return base_ != MAP_FAILED; }
  [[nodiscard]] std::uint8_t* bytes() const noexcept { return static_cast<std::uint8_t*>(base_); }

 private:
  std::size_t length_;
  void* base_;
};

// Waits for the next UIO event and re-arms through irqcontrol. Returns the
// device's total interrupt count, or a failure reason.
struct Wait {
  std::optional<std::uint32_t> count;
  std::string error;
};

Wait wait_for_interrupt(int fd, int timeout_ms) {
  pollfd ready{.fd = fd, .events = POLLIN, .revents = 0};
  const int polled = ::poll(&ready, 1, timeout_ms);
  if (polled < 0) return {std::nullopt, "poll /dev/uio: " + errno_text()};
  if (polled == 0)
    return {std::nullopt, "no interrupt within " + std::to_string(timeout_ms) + " ms"};
  std::uint32_t count = 0;
  if (::read(fd, &count, sizeof(count)) != static_cast<ssize_t>(sizeof(count))) {
    return {std::nullopt, "read /dev/uio: " + errno_text()};
  }
  const std::int32_t arm = 1;
  if (::write(fd, &arm, sizeof(arm)) != static_cast<ssize_t>(sizeof(arm))) {
    return {std::nullopt, "re-arming through irqcontrol: " + errno_text()};
  }
  return {count, ""};
}

std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (const auto v = parse_option(arg, "--vector=")) {
      options.vector = static_cast<std::uint32_t>(*v);
    } else if (const auto ms = parse_option(arg, "--irq-wait-ms=")) {
      options.irq_wait_ms = static_cast<int>(*ms);
    } else if (const auto peer = parse_option(arg, "--host-peer=")) {
      options.host_peer = static_cast<std::uint32_t>(*peer);
    } else if (const auto wait = parse_option(arg, "--host-wait-ms=")) {
      options.host_wait_ms = static_cast<int>(*wait);
    } else {
      return std::nullopt;
    }
  }
  return options;
}

// Zero-padded lower-case hex without a prefix, as lspci prints ids.
std::string hex(std::uint64_t value, int digits) {
  char text[24];
  std::snprintf(text, sizeof(text), "%0*" PRIx64, digits, value);
  return text;
}

int probe(const Options& options) {
  const std::optional<PciDevice> device = find_ivshmem();
  if (!device) return fail("no ivshmem PCI device (1af4:1110 or 110a:4106) in /sys/bus/pci");
  say("found ivshmem " + hex(device->vendor, 4) + ":" + hex(device->device, 4) + " class " +
      hex(device->class_code, 6) + " at " + device->bdf + ", driver " +
      (device->driver.empty() ? "none" : device->driver));
  if (device->vendor != ivshmem::v1::kVendorId) {
    return fail("this probe drives the v1 (QEMU) device only");
  }
  if (device->driver != kDriverName) {
    return fail("the device is not bound to uio_ivshmem (did the module load?)");
  }

  const std::optional<std::string> uio = find_entry(device->path + "/uio", "uio");
  if (!uio) return fail("uio_ivshmem bound the device but registered no uio device");
  const std::optional<UioMap> registers = read_map(*uio, 0);
  const std::optional<UioMap> shmem = read_map(*uio, 1);
  if (!registers || !shmem) return fail(*uio + " lacks map 0 or map 1");
  if (registers->name != "registers" || shmem->name != "shmem") {
    return fail(*uio + " maps are '" + registers->name + "' and '" + shmem->name +
                "', expected 'registers' and 'shmem'");
  }
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  if (registers->size < sizeof(ivshmem::v1::Registers) || registers->offset >= page ||
      registers->offset % alignof(std::uint32_t) != 0 ||
      registers->offset + registers->size > page) {
    return fail("register map of " + std::to_string(registers->size) + " bytes at page offset " +
                std::to_string(registers->offset) + " is not a v1 register block");
  }
  if (!ivshmem::is_power_of_two(shmem->size) || shmem->size < page ||
      shmem->size > kMaxSharedMemory || shmem->offset != 0) {
    return fail("shared memory map of " + std::to_string(shmem->size) +
                " bytes is not a page-"
                "aligned power of two up to 1 TiB");
  }
  say(*uio + ": map 0 registers " + std::to_string(registers->size) + " bytes, map 1 shmem " +
      std::to_string(shmem->size) + " bytes");

  const std::string dev_path = "/dev/" + *uio;
  const UniqueFd fd(::open(dev_path.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) return fail("open " + dev_path + ": " + errno_text());
  const Mapping register_page(fd.get(), 0, page);
  const Mapping memory(fd.get(), 1, shmem->size);
  if (!register_page.ok() || !memory.ok()) return fail("mmap " + dev_path + ": " + errno_text());
  // MMIO: volatile, one aligned 32-bit access per register.
  auto* regs = reinterpret_cast<volatile std::uint32_t*>(register_page.bytes() + registers->offset);
  constexpr std::size_t kIvPosition = offsetof(ivshmem::v1::Registers, iv_position) / 4;
  constexpr std::size_t kDoorbell = offsetof(ivshmem::v1::Registers, doorbell) / 4;

  // Every peer may write any byte: copy the descriptor out once, then
  // validate the copy against the mapped size.
  ivshmem::LinkDescriptor descriptor{};
  std::memcpy(&descriptor, memory.bytes() + ivshmem::kLinkDescriptorOffset, sizeof(descriptor));
  ivshmem::Layout layout;
  const ivshmem::DescriptorError error = ivshmem::validate(descriptor, shmem->size, layout);
  if (error != ivshmem::DescriptorError::ok) {
    return fail(std::string("link descriptor: ") + ivshmem::describe(error));
  }
  const std::uint32_t own_id = regs[kIvPosition];
  if (own_id >= layout.peers()) {
    return fail("IVPosition " + std::to_string(own_id) + " is not a peer of a " +
                std::to_string(layout.peers()) + "-peer link");
  }
  const std::uint32_t vector = options.vector < descriptor.vectors ? options.vector : 0;
  say("link '" + std::string(descriptor.name) + "': " + std::to_string(layout.peers()) +
      " peers, " + std::to_string(descriptor.vectors) + " vectors, IVPosition " +
      std::to_string(own_id));

  regs[kDoorbell] = ivshmem::v1::doorbell_value(own_id, vector);
  const Wait self = wait_for_interrupt(fd.get(), options.irq_wait_ms);
  if (!self.count)
    return fail("self-doorbell on vector " + std::to_string(vector) + ": " + self.error);
  std::printf("CELLINK-GUEST-SELF: ok irq=%" PRIu32 " ivposition=%" PRIu32 " vector=%" PRIu32 "\n",
              *self.count, own_id, vector);
  std::fflush(stdout);

  // irqcontrol 0 masks every vector on v1; a doorbell rung meanwhile must
  // be held, not lost, and arrive once 1 unmasks.
  const std::int32_t mask = 0;
  if (::write(fd.get(), &mask, sizeof(mask)) != static_cast<ssize_t>(sizeof(mask))) {
    return fail("masking through irqcontrol: " + errno_text());
  }
  regs[kDoorbell] = ivshmem::v1::doorbell_value(own_id, vector);
  pollfd masked_poll{.fd = fd.get(), .events = POLLIN, .revents = 0};
  if (::poll(&masked_poll, 1, kMaskedWaitMs) != 0) {
    return fail("an interrupt arrived while irqcontrol had masked the vectors");
  }
  const std::int32_t unmask = 1;
  if (::write(fd.get(), &unmask, sizeof(unmask)) != static_cast<ssize_t>(sizeof(unmask))) {
    return fail("unmasking through irqcontrol: " + errno_text());
  }
  const Wait held = wait_for_interrupt(fd.get(), options.irq_wait_ms);
  if (!held.count) return fail("the doorbell rung while masked was lost: " + held.error);
  say("doorbell rung while masked arrived after unmask, interrupt count " +
      std::to_string(*held.count));

  std::string host_result;
  if (options.host_peer) {
    const std::uint32_t host = *options.host_peer;
    if (host >= layout.peers() || host == own_id) {
      return fail("--host-peer=" + std::to_string(host) + " is not another peer of the link");
    }
    const std::uint32_t state = ivshmem::PeerState{ivshmem::Phase::init, 1}.encode();
    std::atomic_ref<std::uint32_t> entry(
        *reinterpret_cast<std::uint32_t*>(memory.bytes() + layout.state_entry_offset(own_id)));
    // R1: the state must be visible before the vector-0 doorbell that
    // announces it; pairs with the host's acquire load of our entry.
    entry.store(state, std::memory_order_release);
    regs[kDoorbell] = ivshmem::v1::doorbell_value(host, 0);
    say("published state 0x" + hex(state, 8) + ", rang peer " + std::to_string(host) +
        " on vector 0; waiting up to " + std::to_string(options.host_wait_ms) +
        " ms for its doorbell");
    const Wait reply = wait_for_interrupt(fd.get(), options.host_wait_ms);
    if (!reply.count)
      return fail("doorbell from peer " + std::to_string(host) + ": " + reply.error);
    say("doorbell from peer " + std::to_string(host) + " arrived, interrupt count " +
        std::to_string(*reply.count));
    host_result = " host-doorbell=ok irq-total=" + std::to_string(*reply.count);
  }
  std::printf("CELLINK-GUEST-RESULT: ok uio irq=%" PRIu32 " ivposition=%" PRIu32
              " masked-held=ok%s\n",
              *self.count, own_id, host_result.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Options> options = parse_options(argc, argv);
  if (!options) {
    return fail(
        "usage: guest_probe [--vector=V] [--irq-wait-ms=MS] [--host-peer=P] "
        "[--host-wait-ms=MS]");
  }
  return probe(*options);
}
