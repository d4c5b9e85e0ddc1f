// pci: configuration mechanism #1, the bus scan, BAR sizing and the
// capability walk (pci.hpp).
//
// Mechanism #1: write 0x80000000 | bus << 16 | device << 11 | function << 8 |
// (offset & 0xfc) to 0xcf8, then access 0xcfc + (offset & 3) with the access
// width. 16- and 8-bit writes use 16- and 8-bit port writes so they never
// rewrite neighbouring registers (the STATUS register's bits are
// write-one-to-clear). The address/data pair is one shared register, so each
// access runs with interrupts disabled.
//
// Contract and threading: see pci.hpp. The BAR windows are only advanced in
// thread context (pci_bar() is not for handlers).
#include "cellink/inmate-lib/pci.hpp"

#include <cstdint>

#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/paging.hpp"
#include "cellink/inmate-lib/print.hpp"

namespace cellink::inmate {
namespace {

constexpr std::uint16_t kConfigAddress = 0xcf8;
constexpr std::uint16_t kConfigData = 0xcfc;
constexpr std::uint32_t kConfigEnable = 0x80000000;
constexpr std::uint8_t kHeaderTypeMultiFunction = 0x80;
constexpr std::uint8_t kHeaderTypeMask = 0x7f;
constexpr unsigned kBarCount = 6;  // type 0 header
constexpr std::uint32_t kBarIo = 0x1;
constexpr std::uint32_t kBarMemoryTypeMask = 0x6;
constexpr std::uint32_t kBarMemoryType64 = 0x4;
constexpr std::uint32_t kBarPrefetchable = 0x8;
constexpr std::uint32_t kBarMemoryAddressMask = 0xfffffff0;
constexpr std::uint32_t kBarIoAddressMask = 0xfffffffc;
constexpr int kCapabilityHops = 48;

// Next free address of each window the library hands out (pci.hpp).
std::uint64_t window32_next = kPciWindow32Base;
std::uint64_t window64_next = kPciWindow64Base;

void select(PciAddress function, std::uint16_t offset) {
  outl(kConfigAddress, kConfigEnable | std::uint32_t{function.bus} << 16 |
                           std::uint32_t{function.device} << 11 |
                           std::uint32_t{function.function} << 8 | (offset & 0xfc));
}

bool present(PciAddress function) {
  return pci_read16(function, kPciVendorId) != 0xffff;
}

// The end of the 64-bit window: what the CPU can address (CPUID 0x80000008
// EAX bits 7:0), and never past what paging.hpp maps.
std::uint64_t window64_limit() {
  unsigned bits = 36;  // the architectural minimum when the leaf is missing
  if (cpuid(0x80000000).eax >= 0x80000008) bits = cpuid(0x80000008).eax & 0xff;
  const std::uint64_t limit = std::uint64_t{1} << (bits < 46 ? bits : 46);
  return limit < kPhysicalAddressLimit ? limit : kPhysicalAddressLimit;
}

// Places a memory BAR the firmware left at 0; 0 when the window is full.
std::uint64_t assign_window(std::uint64_t size, bool is_64bit) {
  std::uint64_t& next = is_64bit ? window64_next : window32_next;
  const std::uint64_t limit = is_64bit ? window64_limit() : kPciWindow32Limit;
  const std::uint64_t address = (next + size - 1) & ~(size - 1);
  if (address < next || size > limit || address > limit - size) return 0;
  next = address + size;
  return address;
}

}  // namespace

std::uint32_t pci_read32(PciAddress function, std::uint16_t offset) {
  const InterruptsDisabled guard;
  select(function, offset);
  return inl(kConfigData);
}

std::uint16_t pci_read16(PciAddress function, std::uint16_t offset) {
  const InterruptsDisabled guard;
  select(function, offset);
  return inw(static_cast<std::uint16_t>(kConfigData + (offset & 2)));
}

std::uint8_t pci_read8(PciAddress function, std::uint16_t offset) {
  const InterruptsDisabled guard;
  select(function, offset);
  return inb(static_cast<std::uint16_t>(kConfigData + (offset & 3)));
}

void pci_write32(PciAddress function, std::uint16_t offset, std::uint32_t value) {
  const InterruptsDisabled guard;
  select(function, offset);
  outl(kConfigData, value);
}

void pci_write16(PciAddress function, std::uint16_t offset, std::uint16_t value) {
  const InterruptsDisabled guard;
  select(function, offset);
  outw(static_cast<std::uint16_t>(kConfigData + (offset & 2)), value);
}

void pci_write8(PciAddress function, std::uint16_t offset, std::uint8_t value) {
  const InterruptsDisabled guard;
  select(function, offset);
  outb(static_cast<std::uint16_t>(kConfigData + (offset & 3)), value);
}

void pci_for_each_function(PciVisitor visit, void* context) {
  for (unsigned bus = 0; bus < 256; ++bus) {
    for (std::uint8_t device = 0; device < 32; ++device) {
      PciAddress function{static_cast<std::uint8_t>(bus), device, 0};
      if (!present(function)) continue;
      const bool multi_function =
          (pci_read8(function, kPciHeaderType) & kHeaderTypeMultiFunction) != 0;
      for (unsigned number = 0; number < (multi_function ? 8u : 1u); ++number) {
        function.function = static_cast<std::uint8_t>(number);
        if (number != 0 && !present(function)) continue;
        if (!visit(function, context)) return;
      }
    }
  }
}

bool pci_find(std::uint16_t vendor, std::uint16_t device, unsigned index, PciAddress& out) {
  struct Search {
    std::uint32_t id;  // device << 16 | vendor, as config dword 0 reads
    unsigned remaining;
    PciAddress* out;
    bool found;
  } search{std::uint32_t{device} << 16 | vendor, index, &out, false};
  pci_for_each_function(
      [](PciAddress function, void* context) {
        auto& state = *static_cast<Search*>(context);
        if (pci_read32(function, kPciVendorId) != state.id) return true;
        if (state.remaining-- != 0) return true;
        *state.out = function;
        state.found = true;
        return false;
      },
      &search);
  return search.found;
}

bool pci_bar(PciAddress function, unsigned index, PciBar& out) {
  if (index >= kBarCount) return false;
  if ((pci_read8(function, kPciHeaderType) & kHeaderTypeMask) != 0) return false;
  const auto offset = static_cast<std::uint16_t>(kPciBar0 + 4 * index);
  // Walk from BAR 0: the upper half of a 64-bit BAR is not a BAR of its own.
  unsigned bar = 0;
  while (bar < index) {
    const std::uint32_t value =
        pci_read32(function, static_cast<std::uint16_t>(kPciBar0 + 4 * bar));
    const bool wide = (value & kBarIo) == 0 && (value & kBarMemoryTypeMask) == kBarMemoryType64;
    bar += wide ? 2 : 1;
  }
  if (bar != index) return false;

  const std::uint16_t command = pci_read16(function, kPciCommand);
  const std::uint32_t original = pci_read32(function, offset);
  const bool io = (original & kBarIo) != 0;
  const bool is_64bit = !io && (original & kBarMemoryTypeMask) == kBarMemoryType64;
  if (is_64bit && index + 1 >= kBarCount) return false;
  const auto upper_offset = static_cast<std::uint16_t>(offset + 4);
  const std::uint32_t original_upper = is_64bit ? pci_read32(function, upper_offset) : 0;

  // Decode off while the BAR holds all ones, so the device never answers at
  // that address; everything restored afterwards.
  pci_write16(function, kPciCommand,
              static_cast<std::uint16_t>(command & ~(kPciCommandIo | kPciCommandMemory)));
  pci_write32(function, offset, 0xffffffff);
  const std::uint32_t mask = pci_read32(function, offset);
  pci_write32(function, offset, original);
  std::uint32_t mask_upper = 0;
  if (is_64bit) {
    pci_write32(function, upper_offset, 0xffffffff);
    mask_upper = pci_read32(function, upper_offset);
    pci_write32(function, upper_offset, original_upper);
  }

  // The bits that read back as one are the address bits the BAR decodes;
  // the size is the lowest of them. No such bit: the BAR is unimplemented.
  std::uint64_t size_mask;
  std::uint64_t address;
  if (io) {
    std::uint32_t io_mask = mask & kBarIoAddressMask;
    if ((io_mask & 0xffff0000) == 0) io_mask |= 0xffff0000;  // a 16-bit I/O decoder
    size_mask = (mask & kBarIoAddressMask) == 0 ? 0 : (~std::uint64_t{0xffffffff} | io_mask);
    address = original & kBarIoAddressMask;
  } else if (is_64bit) {
    size_mask = (std::uint64_t{mask_upper} << 32) | (mask & kBarMemoryAddressMask);
    address = (std::uint64_t{original_upper} << 32) | (original & kBarMemoryAddressMask);
  } else {
    size_mask = (mask & kBarMemoryAddressMask) == 0
                    ? 0
                    : (~std::uint64_t{0xffffffff} | (mask & kBarMemoryAddressMask));
    address = original & kBarMemoryAddressMask;
  }
  if (size_mask == 0) {
    pci_write16(function, kPciCommand, command);
    return false;
  }
  const std::uint64_t size = ~size_mask + 1;

  if (!io && address == 0) {
    address = assign_window(size, is_64bit);
    if (address == 0) {
      pci_write16(function, kPciCommand, command);
      print("inmate: pci_bar: %02x:%02x.%x BAR%u: no room for %#llx bytes in the %s window\n",
            function.bus, function.device, function.function, index,
            static_cast<unsigned long long>(size), is_64bit ? "64-bit" : "32-bit");
      return false;
    }
    pci_write32(function, offset,
                static_cast<std::uint32_t>(address) | (original & ~kBarMemoryAddressMask));
    if (is_64bit) pci_write32(function, upper_offset, static_cast<std::uint32_t>(address >> 32));
  }
  pci_write16(function, kPciCommand, command);

  out = PciBar{.address = address,
               .size = size,
               .io = io,
               .is_64bit = is_64bit,
               .prefetchable = !io && (original & kBarPrefetchable) != 0};
  return true;
}

void pci_enable(PciAddress function, bool memory, bool bus_master) {
  std::uint16_t command = pci_read16(function, kPciCommand);
  if (memory) command |= kPciCommandMemory;
  if (bus_master) command |= kPciCommandBusMaster | kPciCommandIntxDisable;
  pci_write16(function, kPciCommand, command);
}

std::uint8_t pci_find_capability(PciAddress function, std::uint8_t capability_id) {
  if ((pci_read16(function, kPciStatus) & kPciStatusCapabilityList) == 0) return 0;
  std::uint8_t offset = pci_read8(function, kPciCapabilityPointer) & 0xfc;
  for (int hop = 0; hop < kCapabilityHops && offset >= 0x40; ++hop) {
    if (pci_read8(function, offset) == capability_id) return offset;
    offset = pci_read8(function, static_cast<std::uint16_t>(offset + 1)) & 0xfc;
  }
  return 0;
}

}  // namespace cellink::inmate
