// pci: PCI configuration space through configuration mechanism #1 (ports
// 0xcf8/0xcfc), device lookup, BAR sizing and the capability list.
//
// Only the first 256 bytes of each function's configuration space are
// reachable this way (no extended capabilities); that is all the runtime
// needs (MSI-X and the ivshmem vendor capability live there).
//
// pci_find() scans every bus 0..255 and device 0..31, and functions 1..7 only
// when function 0 has the multi-function bit; it follows no bridges, so
// functions behind a bridge are found only if the firmware gave the bridge
// its bus numbers (SeaBIOS does).
//
// pci_bar() sizes a BAR the standard way (decode off in COMMAND, all ones
// written, read back, original value and COMMAND restored) and returns what
// the firmware assigned. A memory BAR the firmware left at 0 gets an address
// from a window the library manages: 64-bit BARs from kPciWindow64Base
// upward, 32-bit ones from kPciWindow32Base up to kPciWindow32Limit, each
// aligned to its size. Unimplemented BARs (size 0) and the upper half of a
// 64-bit BAR return false.
//
// Threading and interrupts: the 0xcf8/0xcfc pair is one shared address
// register, so every access runs with interrupts disabled; call from thread
// context or handlers alike.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::inmate {

struct PciAddress {
  std::uint8_t bus, device, function;
};

// Configuration-space offsets of the type 0 header that the runtime uses.
inline constexpr std::uint16_t kPciVendorId = 0x00;
inline constexpr std::uint16_t kPciDeviceId = 0x02;
inline constexpr std::uint16_t kPciCommand = 0x04;
inline constexpr std::uint16_t kPciStatus = 0x06;
inline constexpr std::uint16_t kPciRevisionClass = 0x08;  // revision, prog-if, subclass, class
inline constexpr std::uint16_t kPciHeaderType = 0x0e;
inline constexpr std::uint16_t kPciBar0 = 0x10;
inline constexpr std::uint16_t kPciCapabilityPointer = 0x34;

inline constexpr std::uint16_t kPciCommandIo = 1u << 0;
inline constexpr std::uint16_t kPciCommandMemory = 1u << 1;
inline constexpr std::uint16_t kPciCommandBusMaster = 1u << 2;
inline constexpr std::uint16_t kPciCommandIntxDisable = 1u << 10;
inline constexpr std::uint16_t kPciStatusCapabilityList = 1u << 4;

inline constexpr std::uint8_t kPciCapabilityMsi = 0x05;
inline constexpr std::uint8_t kPciCapabilityVendor = 0x09;
inline constexpr std::uint8_t kPciCapabilityMsix = 0x11;

// The windows for BARs the firmware left at 0. On q35, MMCONFIG sits at
// 0xb0000000..0xbfffffff and SeaBIOS places 32-bit BARs top-down from just
// below the IOAPIC (0xfec00000), so the bottom of the hole above MMCONFIG
// stays free; the 64-bit window starts at 512 GiB, above any RAM the
// library's users configure and below a 40-bit physical address width.
inline constexpr std::uint64_t kPciWindow64Base = 0x8000000000;
inline constexpr std::uint64_t kPciWindow32Base = 0xc0000000;
inline constexpr std::uint64_t kPciWindow32Limit = 0xe0000000;

std::uint32_t pci_read32(PciAddress function, std::uint16_t offset);
std::uint16_t pci_read16(PciAddress function, std::uint16_t offset);
std::uint8_t pci_read8(PciAddress function, std::uint16_t offset);
void pci_write32(PciAddress function, std::uint16_t offset, std::uint32_t value);
void pci_write16(PciAddress function, std::uint16_t offset, std::uint16_t value);
void pci_write8(PciAddress function, std::uint16_t offset, std::uint8_t value);

// Calls visit(function, context) for every function present, in bus, device,
// function order; stops early when visit returns false.
using PciVisitor = bool (*)(PciAddress function, void* context);
void pci_for_each_function(PciVisitor visit, void* context);

// The index-th function (0-based) with this vendor:device; false when none.
bool pci_find(std::uint16_t vendor, std::uint16_t device, unsigned index, PciAddress& out);

struct PciBar {
  std::uint64_t address;
  std::uint64_t size;
  bool io;
  bool is_64bit;
  bool prefetchable;
};
// BAR `index` (0..5) of a type 0 function; false for an unimplemented BAR,
// an index past the end, or the upper half of a 64-bit BAR.
bool pci_bar(PciAddress function, unsigned index, PciBar& out);

// Sets COMMAND bit 1 (memory decode) when `memory` and bit 2 (bus master)
// plus bit 10 (INTx disable: the runtime uses MSI-X only) when `bus_master`;
// never clears a bit.
void pci_enable(PciAddress function, bool memory, bool bus_master);

// The configuration-space offset of the first capability with this id, 0
// when absent. Walks at most 48 entries, so a looping list ends.
std::uint8_t pci_find_capability(PciAddress function, std::uint8_t capability_id);

}  // namespace cellink::inmate
