// msix: a PCI function's MSI-X table, programmed to interrupt this CPU.
//
// MSI-X capability (PCI Local Bus 3.0, 6.8.2), as MsixTable uses it:
//   cap+2  Message Control: bits 10:0 table size - 1, bit 14 Function Mask,
//          bit 15 MSI-X Enable
//   cap+4  Table offset (bits 31:3) and BIR (bits 2:0, the BAR holding it)
// Each table entry is 16 bytes: address low, address high, data, vector
// control (bit 0 masked).
//
// Contract: attach() once per function, from thread context. It finds the
// capability, sizes the table's BAR (pci_bar()), maps the table's pages
// uncached and turns on memory decode; it prints why and returns false when
// any step fails. After attach(), route() and mask() program entries (an
// entry stays masked until route()), and enable() turns MSI-X on for the
// function. The device still needs bus mastering to send its messages:
// pci_enable(function, true, true).
//
// Threading and interrupts: one CPU; route() and mask() may be called from a
// handler, but not concurrently with each other on the same entry.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

#include "cellink/inmate-lib/pci.hpp"

namespace cellink::inmate {

class MsixTable {
 public:
  bool attach(PciAddress function);
  std::uint32_t size() const { return entries_; }
  // Programs entry `entry` with msi_message(vector) and unmasks it; false
  // when not attached, the entry is out of range or the vector is not 32..254.
  bool route(std::uint32_t entry, std::uint8_t vector);
  void mask(std::uint32_t entry, bool masked);
  // Sets MSI-X Enable and clears Function Mask in Message Control.
  void enable();

 private:
  PciAddress function_{};
  std::uint8_t capability_ = 0;  // 0 while not attached
  std::uint32_t entries_ = 0;
  std::uint64_t table_ = 0;  // physical (= virtual) address of entry 0
};

}  // namespace cellink::inmate
