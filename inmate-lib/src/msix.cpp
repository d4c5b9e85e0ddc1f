// msix: MsixTable (msix.hpp).
//
// Entry updates follow the PCI spec's rule for a live entry: mask it, write
// address and data, then unmask, so the function never sends a message
// assembled from an old address and a new data word. The table is mapped
// uncached and accessed through mmio.hpp, so the writes reach the device in
// program order.
//
// Contract and threading: see msix.hpp.
#include "cellink/inmate-lib/msix.hpp"

#include <cstdint>

#include "cellink/inmate-lib/lapic.hpp"
#include "cellink/inmate-lib/mmio.hpp"
#include "cellink/inmate-lib/paging.hpp"
#include "cellink/inmate-lib/print.hpp"

namespace cellink::inmate {
namespace {

constexpr std::uint16_t kMessageControl = 2;  // from the capability
constexpr std::uint16_t kTableLocation = 4;
constexpr std::uint16_t kTableSizeMask = 0x7ff;
constexpr std::uint16_t kFunctionMask = 1u << 14;
constexpr std::uint16_t kEnable = 1u << 15;
constexpr std::uint32_t kBirMask = 0x7;

constexpr std::uint64_t kEntrySize = 16;
constexpr std::uint64_t kAddressLow = 0;
constexpr std::uint64_t kAddressHigh = 4;
constexpr std::uint64_t kData = 8;
constexpr std::uint64_t kVectorControl = 12;
constexpr std::uint32_t kEntryMasked = 1u << 0;

}  // namespace

bool MsixTable::attach(PciAddress function) {
  const std::uint8_t capability = pci_find_capability(function, kPciCapabilityMsix);
  if (capability == 0) {
    print("inmate: msix: %02x:%02x.%x has no MSI-X capability\n", function.bus, function.device,
          function.function);
    return false;
  }
  const std::uint16_t control =
      pci_read16(function, static_cast<std::uint16_t>(capability + kMessageControl));
  const std::uint32_t location =
      pci_read32(function, static_cast<std::uint16_t>(capability + kTableLocation));
  const unsigned bir = location & kBirMask;
  const std::uint64_t offset = location & ~kBirMask;
  const std::uint32_t entries = (control & kTableSizeMask) + 1u;
  PciBar bar{};
  if (!pci_bar(function, bir, bar) || bar.io) {
    print("inmate: msix: %02x:%02x.%x: the table's BAR%u is missing or not memory\n", function.bus,
          function.device, function.function, bir);
    return false;
  }
  if (offset + entries * kEntrySize > bar.size) {
    print("inmate: msix: %02x:%02x.%x: table (%u entries at %#llx) exceeds BAR%u (%#llx bytes)\n",
          function.bus, function.device, function.function, entries,
          static_cast<unsigned long long>(offset), bir, static_cast<unsigned long long>(bar.size));
    return false;
  }
  const std::uint64_t table = bar.address + offset;
  if (!map_range(table, entries * kEntrySize, Access::read_write, Caching::uncached)) {
    print("inmate: msix: cannot map the table at %#llx\n", static_cast<unsigned long long>(table));
    return false;
  }
  pci_enable(function, true, false);
  function_ = function;
  capability_ = capability;
  entries_ = entries;
  table_ = table;
  return true;
}

bool MsixTable::route(std::uint32_t entry, std::uint8_t vector) {
  if (capability_ == 0 || entry >= entries_ || vector < 32 || vector == 0xff) return false;
  const MsiMessage message = msi_message(vector);
  const std::uint64_t base = table_ + entry * kEntrySize;
  mask(entry, true);
  mmio_write32(base + kAddressLow, static_cast<std::uint32_t>(message.address));
  mmio_write32(base + kAddressHigh, static_cast<std::uint32_t>(message.address >> 32));
  mmio_write32(base + kData, message.data);
  mask(entry, false);
  return true;
}

void MsixTable::mask(std::uint32_t entry, bool masked) {
  if (capability_ == 0 || entry >= entries_) return;
  const std::uint64_t control = table_ + entry * kEntrySize + kVectorControl;
  const std::uint32_t value = mmio_read32(control);
  mmio_write32(control, masked ? (value | kEntryMasked) : (value & ~kEntryMasked));
}

void MsixTable::enable() {
  if (capability_ == 0) return;
  const auto offset = static_cast<std::uint16_t>(capability_ + kMessageControl);
  const std::uint16_t control = pci_read16(function_, offset);
  pci_write16(function_, offset, static_cast<std::uint16_t>((control | kEnable) & ~kFunctionMask));
}

}  // namespace cellink::inmate
