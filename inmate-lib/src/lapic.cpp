// lapic: the local APIC in xAPIC (MMIO) or x2APIC (MSR) mode (lapic.hpp).
//
// Registers are named by their xAPIC MMIO offset; in x2APIC mode the same
// register is MSR 0x800 + offset / 16 (Intel SDM vol. 3, 11.12.1.2). MMIO
// accesses go through mmio.hpp to the uncached mapping lapic_init() makes.
// x2APIC MSR writes to the timer and EOI registers are not serializing, but
// they are ordered after earlier stores to memory for the purpose that
// matters here: the EOI is sent after the handler's work, and interrupt
// delivery happens after both.
//
// Timer calibration: count down from 0xffffffff with divide-by-16 for 10 ms
// of TSC time, then scale by the exact TSC time that passed.
//
// Contract and threading: see lapic.hpp. The state below is written by
// lapic_init() and the first lapic_timer_periodic() in thread context, and
// only read by handlers.
#include "cellink/inmate-lib/lapic.hpp"

#include <cstdint>

#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/exit.hpp"
#include "cellink/inmate-lib/mmio.hpp"
#include "cellink/inmate-lib/paging.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/timing.hpp"

namespace cellink::inmate {
namespace {

constexpr std::uint32_t kApicBaseMsr = 0x1b;
constexpr std::uint64_t kApicBaseGlobalEnable = 1ull << 11;
constexpr std::uint64_t kApicBaseX2apicEnable = 1ull << 10;
constexpr std::uint64_t kApicBaseAddressMask = 0x000ffffffffff000ull;
constexpr std::uint32_t kX2apicMsrBase = 0x800;
constexpr std::uint32_t kCpuidX2apic = 1u << 21;  // CPUID.1:ECX

// Register offsets (xAPIC MMIO).
constexpr std::uint32_t kId = 0x20;
constexpr std::uint32_t kTaskPriority = 0x80;
constexpr std::uint32_t kEoi = 0xb0;
constexpr std::uint32_t kSpuriousVectorRegister = 0xf0;
constexpr std::uint32_t kLvtTimer = 0x320;
constexpr std::uint32_t kLvtLint0 = 0x350;
constexpr std::uint32_t kTimerInitialCount = 0x380;
constexpr std::uint32_t kTimerCurrentCount = 0x390;
constexpr std::uint32_t kTimerDivide = 0x3e0;

constexpr std::uint32_t kSoftwareEnable = 1u << 8;
constexpr std::uint32_t kLvtMasked = 1u << 16;
constexpr std::uint32_t kLvtTimerPeriodic = 1u << 17;
constexpr std::uint32_t kTimerDivideBy16 = 0x3;
constexpr std::uint64_t kCalibrationNs = 10000000;  // 10 ms

constexpr std::uint64_t kMsiAddressBase = 0xfee00000;
constexpr unsigned kMsiDestinationShift = 12;

bool initialized = false;
bool x2apic = false;
std::uint64_t mmio_base = 0;
std::uint64_t timer_frequency = 0;  // after the divide-by-16

std::uint32_t read_register(std::uint32_t offset) {
  if (x2apic) return static_cast<std::uint32_t>(rdmsr(kX2apicMsrBase + offset / 16));
  return mmio_read32(mmio_base + offset);
}

void write_register(std::uint32_t offset, std::uint32_t value) {
  if (x2apic) {
    wrmsr(kX2apicMsrBase + offset / 16, value);
  } else {
    mmio_write32(mmio_base + offset, value);
  }
}

void calibrate_timer() {
  write_register(kTimerDivide, kTimerDivideBy16);
  write_register(kLvtTimer, kLvtMasked);
  const std::uint64_t start = rdtsc();
  write_register(kTimerInitialCount, 0xffffffff);
  const std::uint64_t wait = ns_to_tsc(kCalibrationNs);
  while (rdtsc() - start < wait) cpu_relax();
  const std::uint32_t remaining = read_register(kTimerCurrentCount);
  const std::uint64_t elapsed_tsc = rdtsc() - start;
  write_register(kTimerInitialCount, 0);
  const std::uint64_t counted = 0xffffffffull - remaining;
  // counted * hz / elapsed_tsc, split so that no product overflows:
  // counted < 2^32 and hz % elapsed_tsc < elapsed_tsc (about 2^25).
  const std::uint64_t hz = tsc_hz();
  timer_frequency = counted * (hz / elapsed_tsc) + counted * (hz % elapsed_tsc) / elapsed_tsc;
}

}  // namespace

void lapic_init() {
  x2apic = (cpuid(1).ecx & kCpuidX2apic) != 0;
  const std::uint64_t base = rdmsr(kApicBaseMsr);
  if (x2apic) {
    // xAPIC -> x2APIC is a legal transition while globally enabled; setting
    // both bits at once from disabled is too (SDM vol. 3, 11.12.5).
    wrmsr(kApicBaseMsr, base | kApicBaseGlobalEnable | kApicBaseX2apicEnable);
  } else {
    if ((base & kApicBaseGlobalEnable) == 0) wrmsr(kApicBaseMsr, base | kApicBaseGlobalEnable);
    mmio_base = base & kApicBaseAddressMask;
    if (!map_range(mmio_base, kPageSize, Access::read_write, Caching::uncached)) {
      fatal("lapic: cannot map the xAPIC registers at %#llx",
            static_cast<unsigned long long>(mmio_base));
    }
  }
  initialized = true;
  write_register(kTaskPriority, 0);
  // LINT0 carries the 8259's ExtINT in virtual-wire mode; the PIC is masked
  // (interrupts.cpp), and this keeps it out for good.
  write_register(kLvtLint0, kLvtMasked);
  write_register(kLvtTimer, kLvtMasked);
  write_register(kSpuriousVectorRegister, kSoftwareEnable | 0xff);
}

bool lapic_is_x2apic() {
  return x2apic;
}

std::uint32_t lapic_id() {
  if (!initialized) fatal("lapic_id() before lapic_init()");
  const std::uint32_t id = read_register(kId);
  return x2apic ? id : id >> 24;
}

void lapic_eoi() {
  // Without lapic_init() no LAPIC interrupt can be in service, and the
  // registers are not mapped.
  if (initialized) write_register(kEoi, 0);
}

bool lapic_timer_periodic(std::uint32_t hz, std::uint8_t vector) {
  if (!initialized) {
    print("inmate: lapic_timer_periodic: lapic_init() has not run\n");
    return false;
  }
  if (hz == 0) {
    write_register(kTimerInitialCount, 0);
    write_register(kLvtTimer, kLvtMasked);
    return true;
  }
  if (vector < 32 || vector == 0xff) {
    print("inmate: lapic_timer_periodic: vector %#x is not 0x20..0xfe\n", vector);
    return false;
  }
  if (timer_frequency == 0) calibrate_timer();
  const std::uint64_t count = timer_frequency / hz;
  if (count == 0 || count > 0xffffffffull) {
    print("inmate: lapic_timer_periodic: %u Hz is out of reach of the %llu Hz timer clock\n", hz,
          static_cast<unsigned long long>(timer_frequency));
    return false;
  }
  // The LVT first, then the initial count: writing the count starts the timer.
  write_register(kLvtTimer, kLvtTimerPeriodic | vector);
  write_register(kTimerInitialCount, static_cast<std::uint32_t>(count));
  return true;
}

std::uint64_t lapic_timer_hz() {
  return timer_frequency;
}

MsiMessage msi_message(std::uint8_t vector) {
  const std::uint32_t id = lapic_id();
  if (id > 0xff) fatal("msi_message: APIC id %u does not fit an MSI address (no remapping)", id);
  // Address: 0xfee, destination id in bits 19:12, RH = 0, DM = 0 (physical).
  // Data: vector in bits 7:0, delivery mode 000 (fixed), trigger bit 15 = 0
  // (edge; the level bit 14 is then ignored).
  return MsiMessage{.address = kMsiAddressBase | (std::uint64_t{id} << kMsiDestinationShift),
                    .data = vector};
}

}  // namespace cellink::inmate
