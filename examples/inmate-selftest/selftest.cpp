// selftest: an inmate that exercises the runtime on real (emulated) hardware
// and says so on the console, each line prefixed "selftest: ".
//
// Checks, in order: the command line; the CPU vendor and APIC mode; the TSC
// frequency; format(); a PCI scan with every BAR (the q35 host bridge must be
// there); 20 ticks of a 100 Hz LAPIC timer waited for with
// enable_interrupts_and_halt() (the timer then keeps running as the wake-up
// for later waits); for each ivshmem function (1af4:1110): with MSI-X
// (ivshmem-doorbell), a self-interrupt through the doorbell; without
// (ivshmem-plain), BAR2 sizing, map_range(), a write/read of the shared
// memory, and pci_bar() placing zeroed BARs in its own windows; an MSI-X
// interrupt from the e1000e NIC when present. Then, on request (fault=1
// unmapped write, fault=2 null read, fault=3 stack overflow), a fault whose
// report ends the run. Prints "selftest: PASS" and returns 0, so QEMU exits
// with status 1; any failed check is fatal() (status 253).
//
// Threading and interrupts: one CPU; the counters `ticks` and `doorbells`
// are the only state the handlers share with the main loop (see their
// comment).
#include <atomic>
#include <cstdint>

#include "cellink/inmate-lib/boot.hpp"
#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/exit.hpp"
#include "cellink/inmate-lib/interrupts.hpp"
#include "cellink/inmate-lib/lapic.hpp"
#include "cellink/inmate-lib/mmio.hpp"
#include "cellink/inmate-lib/msix.hpp"
#include "cellink/inmate-lib/paging.hpp"
#include "cellink/inmate-lib/pci.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/timing.hpp"

namespace cellink::inmate {
namespace {

constexpr std::uint16_t kIvshmemVendor = 0x1af4;
constexpr std::uint16_t kIvshmemDevice = 0x1110;
// ivshmem v1 BAR0 registers (ivshmem/include/cellink/ivshmem/registers_v1.hpp
// has the full map); the selftest needs only these two.
constexpr std::uint64_t kIvshmemIvPosition = 8;
constexpr std::uint64_t kIvshmemDoorbell = 12;
constexpr std::uint32_t kTimerHz = 100;
constexpr std::uint32_t kTimerTicks = 20;
// An address no boot mapping covers (31.75 GiB), for fault=1.
constexpr std::uint64_t kUnmappedAddress = 0x7f0000000;

// Incremented by the handler, read by the main loop, on one CPU: relaxed is
// enough, because the main loop reads it with interrupts disabled and the
// hlt/cli asm statements are compiler barriers, so the read is never hoisted
// out of the loop.
std::atomic<std::uint32_t> ticks{0};
std::atomic<std::uint32_t> doorbells{0};

void count(void* counter) {
  static_cast<std::atomic<std::uint32_t>*>(counter)->fetch_add(1, std::memory_order_relaxed);
}

// Waits with interrupts enabled only inside the halt, until `counter`
// reaches `target` or the deadline passes. Returns with interrupts disabled.
// The 100 Hz timer check_timer() starts keeps running until the end of the
// run, so every halt ends within 10 ms and the deadline is always checked,
// even when the awaited interrupt never comes.
bool wait_for(const std::atomic<std::uint32_t>& counter, std::uint32_t target, Deadline deadline) {
  interrupts_disable();
  while (counter.load(std::memory_order_relaxed) < target) {
    if (deadline.passed()) return false;
    // The awaited interrupt or the next timer tick wakes us; the check above
    // ran with interrupts off, so an interrupt cannot slip in before the hlt.
    enable_interrupts_and_halt();
    interrupts_disable();
  }
  return true;
}

void check_command_line() {
  print("selftest: command line: \"%s\"\n", command_line());
}

void check_cpu() {
  const CpuidResult leaf0 = cpuid(0);
  char vendor[13];
  const std::uint32_t parts[3] = {leaf0.ebx, leaf0.edx, leaf0.ecx};
  for (int i = 0; i < 12; ++i) vendor[i] = static_cast<char>(parts[i / 4] >> (8 * (i % 4)));
  vendor[12] = '\0';
  lapic_init();
  print("selftest: cpu vendor %s, max leaf %#x, %s, apic id %u\n", vendor, leaf0.eax,
        lapic_is_x2apic() ? "x2APIC (MSRs)" : "xAPIC (MMIO)", lapic_id());
  print("selftest: tsc %llu Hz (from %s)\n", static_cast<unsigned long long>(tsc_hz()),
        tsc_source());
}

void check_format() {
  char text[8];
  const int length = format(text, sizeof(text), "%s-%d", "abcdef", -42);
  char wide[64];
  format(wide, sizeof(wide), "[%5d|%-5d|%05x|%#X|%zu|%c|%%|%lld]", 42, 42, 0xbeef, 0xabcu,
         std::size_t{7}, 'q', -9000000000ll);
  const char* expected = "[   42|42   |0beef|0XABC|7|q|%|-9000000000]";
  bool same = true;
  for (int i = 0; expected[i] != '\0' || wide[i] != '\0'; ++i) {
    if (expected[i] != wide[i]) {
      same = false;
      break;
    }
  }
  if (length != 10 || text[7] != '\0' || text[6] != '-' || !same) {
    fatal("selftest: format() is wrong: length %d, \"%s\", \"%s\"", length, text, wide);
  }
  print("selftest: format ok: %s\n", wide);
}

struct PciScan {
  unsigned functions = 0;
  bool host_bridge = false;
};

void check_pci() {
  PciScan scan;
  pci_for_each_function(
      [](PciAddress function, void* context) {
        auto& state = *static_cast<PciScan*>(context);
        const std::uint16_t vendor = pci_read16(function, kPciVendorId);
        const std::uint16_t device = pci_read16(function, kPciDeviceId);
        const std::uint32_t class_code = pci_read32(function, kPciRevisionClass) >> 8;
        print("selftest: pci %02x:%02x.%x %04x:%04x class %06x\n", function.bus, function.device,
              function.function, vendor, device, class_code);
        for (unsigned index = 0; index < 6; ++index) {
          PciBar bar{};
          if (!pci_bar(function, index, bar)) continue;
          print("selftest:   bar%u %s%s%s at %#llx size %#llx\n", index, bar.io ? "io" : "mem",
                bar.is_64bit ? " 64-bit" : "", bar.prefetchable ? " prefetchable" : "",
                static_cast<unsigned long long>(bar.address),
                static_cast<unsigned long long>(bar.size));
        }
        ++state.functions;
        // Q35's host bridge (MCH) is 8086:29c0 at 00:00.0.
        if (function.bus == 0 && function.device == 0 && vendor == 0x8086 && device == 0x29c0) {
          state.host_bridge = true;
        }
        return true;
      },
      &scan);
  if (!scan.host_bridge) fatal("selftest: no q35 host bridge 8086:29c0 at 00:00.0");
  print("selftest: pci functions: %u\n", scan.functions);
}

void check_timer() {
  const std::uint8_t vector = allocate_vector();
  if (vector == 0) fatal("selftest: no free vector");
  set_interrupt_handler(vector, count, &ticks);
  const std::uint64_t start = now_ns();
  if (!lapic_timer_periodic(kTimerHz, vector)) fatal("selftest: timer did not start");
  const bool arrived = wait_for(ticks, kTimerTicks, Deadline::after_ms(5000));
  const std::uint64_t elapsed = now_ns() - start;
  if (!arrived) {
    fatal("selftest: %u of %u timer ticks in %llu ms", ticks.load(std::memory_order_relaxed),
          kTimerTicks, static_cast<unsigned long long>(elapsed / 1000000));
  }
  print(
      "selftest: timer: %u ticks at %u Hz on vector %#x in %llu.%03llu ms (timer clock %llu Hz)\n",
      ticks.load(std::memory_order_relaxed), kTimerHz, vector,
      static_cast<unsigned long long>(elapsed / 1000000),
      static_cast<unsigned long long>(elapsed / 1000 % 1000),
      static_cast<unsigned long long>(lapic_timer_hz()));
  // 20 periods of 10 ms; the first may start late, and TCG may lag.
  if (elapsed < 150000000 || elapsed > 2000000000) {
    fatal("selftest: 20 ticks at 100 Hz took %llu us, expected about 200 ms",
          static_cast<unsigned long long>(elapsed / 1000));
  }
}

void check_ivshmem_doorbell(PciAddress function) {
  MsixTable table;
  if (!table.attach(function)) fatal("selftest: ivshmem MSI-X attach failed");
  PciBar registers{};
  if (!pci_bar(function, 0, registers) ||
      !map_range(registers.address, registers.size, Access::read_write, Caching::uncached)) {
    fatal("selftest: ivshmem BAR0 unusable");
  }
  const std::uint8_t vector = allocate_vector();
  set_interrupt_handler(vector, count, &doorbells);
  if (!table.route(0, vector)) fatal("selftest: MSI-X route failed");
  table.enable();
  pci_enable(function, true, true);
  const std::uint32_t own_id = mmio_read32(registers.address + kIvshmemIvPosition);
  mmio_write32(registers.address + kIvshmemDoorbell, own_id << 16 | 0);
  if (!wait_for(doorbells, 1, Deadline::after_ms(2000))) {
    fatal("selftest: no MSI-X interrupt after ringing our own doorbell (peer %u)", own_id);
  }
  print("selftest: msi-x: self-interrupt on vector %#x through %u-entry table (peer id %u)\n",
        vector, table.size(), own_id);
}

// QEMU's e1000e (8086:10d3, q35's default NIC) has a 5-entry MSI-X table in
// BAR3 and can interrupt on request: with the "other" cause routed through
// IVAR to MSI-X entry 0 and unmasked in IMS, a write of that cause to ICS
// sends entry 0's message. That exercises MsixTable and msi_message() end to
// end without an ivshmem server.
void check_msix_e1000e(PciAddress function) {
  constexpr std::uint64_t kInterruptCauseSet = 0xc8;      // ICS
  constexpr std::uint64_t kInterruptMaskSet = 0xd0;       // IMS
  constexpr std::uint64_t kInterruptMaskClear = 0xd8;     // IMC
  constexpr std::uint64_t kInterruptVectorMap = 0xe4;     // IVAR
  constexpr std::uint32_t kCauseOther = 1u << 24;         // ICR.OTHER
  constexpr std::uint32_t kIvarOtherEntry0 = 0x8u << 16;  // valid, MSI-X entry 0
  MsixTable table;
  if (!table.attach(function)) fatal("selftest: e1000e MSI-X attach failed");
  PciBar registers{};
  if (!pci_bar(function, 0, registers) || registers.io ||
      !map_range(registers.address, registers.size, Access::read_write, Caching::uncached)) {
    fatal("selftest: e1000e BAR0 unusable");
  }
  const std::uint8_t vector = allocate_vector();
  set_interrupt_handler(vector, count, &doorbells);
  if (!table.route(0, vector)) fatal("selftest: MSI-X route failed");
  table.enable();
  pci_enable(function, true, true);  // an MSI is a bus-master write
  mmio_write32(registers.address + kInterruptVectorMap, kIvarOtherEntry0);
  mmio_write32(registers.address + kInterruptMaskSet, kCauseOther);
  const std::uint32_t before = doorbells.load(std::memory_order_relaxed);
  mmio_write32(registers.address + kInterruptCauseSet, kCauseOther);
  const bool arrived = wait_for(doorbells, before + 1, Deadline::after_ms(2000));
  mmio_write32(registers.address + kInterruptMaskClear, ~0u);
  table.mask(0, true);
  if (!arrived) fatal("selftest: no MSI-X interrupt from e1000e on vector %#x", vector);
  const MsiMessage message = msi_message(vector);
  print(
      "selftest: msi-x: e1000e %02x:%02x.%x entry 0 of %u -> vector %#x (address %#llx data "
      "%#x)\n",
      function.bus, function.device, function.function, table.size(), vector,
      static_cast<unsigned long long>(message.address), message.data);
}

std::uint64_t pattern(std::uint64_t index) {
  return index * 0x9e3779b97f4a7c15ull;
}

void check_bar_relocation(PciAddress function, std::uint64_t words_written);

void check_ivshmem_plain(PciAddress function) {
  PciBar memory{};
  if (!pci_bar(function, 2, memory) || memory.io) fatal("selftest: ivshmem-plain has no BAR2");
  if (!map_range(memory.address, memory.size, Access::read_write, Caching::write_back)) {
    fatal("selftest: cannot map ivshmem BAR2");
  }
  pci_enable(function, true, false);
  // Identity map: the BAR's physical address is its virtual one.
  auto* words =
      reinterpret_cast<std::uint64_t*>(memory.address);  // NOLINT(performance-no-int-to-ptr)
  const std::uint64_t count_words = memory.size / sizeof(std::uint64_t);
  for (std::uint64_t i = 0; i < count_words; ++i) words[i] = pattern(i);
  for (std::uint64_t i = 0; i < count_words; ++i) {
    if (words[i] != pattern(i)) {
      fatal("selftest: shared memory word %llu reads %#llx", static_cast<unsigned long long>(i),
            static_cast<unsigned long long>(words[i]));
    }
  }
  print("selftest: ivshmem-plain: BAR2 at %#llx size %#llx%s: wrote and read back %llu words\n",
        static_cast<unsigned long long>(memory.address),
        static_cast<unsigned long long>(memory.size), memory.is_64bit ? " (64-bit)" : "",
        static_cast<unsigned long long>(count_words));
  check_bar_relocation(function, count_words);
}

// A firmware that assigns nothing leaves BARs at 0: zero BAR0 (32-bit
// registers) and BAR2 (64-bit memory) and let pci_bar() place them in the
// library's windows. BAR2 is the same RAM at its new address, so the words
// written before must be there; BAR0's IntrMask register must hold a write.
void check_bar_relocation(PciAddress function, std::uint64_t words_written) {
  const std::uint16_t command = pci_read16(function, kPciCommand);
  pci_write16(function, kPciCommand, static_cast<std::uint16_t>(command & ~kPciCommandMemory));
  pci_write32(function, kPciBar0, 0);
  pci_write32(function, kPciBar0 + 8, 0);
  pci_write32(function, kPciBar0 + 12, 0);
  PciBar registers{};
  PciBar memory{};
  if (!pci_bar(function, 0, registers) || !pci_bar(function, 2, memory)) {
    fatal("selftest: pci_bar() failed on zeroed BARs");
  }
  if (registers.address != kPciWindow32Base || memory.address != kPciWindow64Base) {
    fatal("selftest: zeroed BARs placed at %#llx and %#llx, expected %#llx and %#llx",
          static_cast<unsigned long long>(registers.address),
          static_cast<unsigned long long>(memory.address),
          static_cast<unsigned long long>(kPciWindow32Base),
          static_cast<unsigned long long>(kPciWindow64Base));
  }
  if (!map_range(registers.address, registers.size, Access::read_write, Caching::uncached) ||
      !map_range(memory.address, memory.size, Access::read_write, Caching::write_back)) {
    fatal("selftest: cannot map the relocated BARs");
  }
  pci_enable(function, true, false);
  constexpr std::uint64_t kIntrMask = 0;
  mmio_write32(registers.address + kIntrMask, 0x5a5a5a5a);
  const std::uint32_t mask = mmio_read32(registers.address + kIntrMask);
  const auto* words =
      reinterpret_cast<const std::uint64_t*>(memory.address);  // NOLINT(performance-no-int-to-ptr)
  for (std::uint64_t i = 0; i < words_written; ++i) {
    if (words[i] != pattern(i)) {
      fatal("selftest: relocated BAR2 word %llu reads %#llx", static_cast<unsigned long long>(i),
            static_cast<unsigned long long>(words[i]));
    }
  }
  if (mask != 0x5a5a5a5a) fatal("selftest: relocated BAR0 IntrMask reads %#x", mask);
  print("selftest: relocated zeroed BARs: bar0 at %#llx, bar2 at %#llx, contents intact\n",
        static_cast<unsigned long long>(registers.address),
        static_cast<unsigned long long>(memory.address));
}

void check_ivshmem() {
  PciAddress function{};
  unsigned found = 0;
  while (pci_find(kIvshmemVendor, kIvshmemDevice, found, function)) {
    ++found;
    if (pci_find_capability(function, kPciCapabilityMsix) != 0) {
      check_ivshmem_doorbell(function);
    } else {
      check_ivshmem_plain(function);
    }
  }
  if (found == 0) print("selftest: no ivshmem device; MSI-X and shared-memory checks skipped\n");
  if (pci_find(0x8086, 0x10d3, 0, function)) {
    check_msix_e1000e(function);
  } else {
    print("selftest: no e1000e; MSI-X self-interrupt check skipped\n");
  }
}

[[gnu::noinline]] std::uint64_t recurse(std::uint64_t depth, std::uint64_t limit) {
  volatile std::uint8_t frame[512];
  frame[0] = static_cast<std::uint8_t>(depth);
  if (depth >= limit) return frame[0];
  return recurse(depth + 1, limit) + frame[0];
}

void fault_on_request() {
  std::uint64_t fault = 0;
  if (!command_line_u64("fault", fault) || fault == 0) return;
  if (fault == 1) {
    print("selftest: writing to unmapped address %#llx\n",
          static_cast<unsigned long long>(kUnmappedAddress));
    mmio_write32(kUnmappedAddress, 1);
  } else if (fault == 2) {
    print("selftest: reading through a null pointer\n");
    volatile std::uint32_t* null = nullptr;
    asm volatile("" : "+r"(null));  // hide the null from the optimizer
    print("selftest: read %u\n", *null);
  } else if (fault == 3) {
    print("selftest: overflowing the stack\n");
    print("selftest: recursion returned %llu\n",
          static_cast<unsigned long long>(recurse(0, ~std::uint64_t{0})));
  }
  fatal("selftest: fault=%llu did not fault", static_cast<unsigned long long>(fault));
}

}  // namespace

int inmate_main() {
  check_command_line();
  check_cpu();
  check_format();
  check_pci();
  check_timer();
  check_ivshmem();
  fault_on_request();
  lapic_timer_periodic(0, 0);
  print("selftest: PASS\n");
  return 0;
}

}  // namespace cellink::inmate
