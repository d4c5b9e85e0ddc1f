// lapic: this CPU's local APIC: its id, EOI, the periodic timer, and the MSI
// message that targets it.
//
// lapic_init() uses x2APIC (MSR access) when CPUID.1:ECX bit 21 says the CPU
// has it, else xAPIC through MMIO at the base in IA32_APIC_BASE, which it
// maps uncached. It software-enables the APIC with spurious vector 0xff and
// sets the task priority to 0 (accept every vector).
//
// Contract: lapic_init() once, from thread context, before the other calls
// (the boot code does not call it: an inmate that wants interrupts does).
// lapic_eoi() is for the interrupt dispatcher; handlers do not call it.
// lapic_timer_periodic() calibrates the timer against the TSC on first use
// (about 10 ms of busy-waiting) and needs tsc_calibrate() done (boot does it).
//
// msi_message(): fixed delivery, edge trigger, physical destination mode,
// destination lapic_id(). The MSI address carries an 8-bit destination, so an
// APIC id above 255 (possible with x2APIC) cannot be targeted without
// interrupt remapping; msi_message() then fatal()s rather than misroute.
//
// Threading and interrupts: lapic_id(), lapic_is_x2apic(), lapic_eoi() and
// msi_message() may be called from handlers.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::inmate {

void lapic_init();
bool lapic_is_x2apic();
std::uint32_t lapic_id();
void lapic_eoi();

// Periodic timer interrupts at `hz` on `vector` (32..254); hz == 0 stops the
// timer. False (with a printed reason) when hz is beyond what the timer can
// count or lapic_init() has not run.
bool lapic_timer_periodic(std::uint32_t hz, std::uint8_t vector);
// The timer's input clock after its divider, as calibrated; 0 before the
// first lapic_timer_periodic().
std::uint64_t lapic_timer_hz();

struct MsiMessage {
  std::uint64_t address;
  std::uint32_t data;
};
MsiMessage msi_message(std::uint8_t vector);

}  // namespace cellink::inmate
