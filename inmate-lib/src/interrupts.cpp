// interrupts: the IDT, the TSS (for the double-fault stack), the legacy PIC,
// and interrupt_dispatch(), which every stub in interrupt_stubs_x86_64.S
// calls with the saved frame.
//
// Contract and threading: see interrupts.hpp. The handler table is written
// with interrupts disabled, and only this CPU reads it (from the
// dispatcher, itself running with interrupts disabled), so an entry is never
// seen half-written and needs no atomics.
#include "cellink/inmate-lib/interrupts.hpp"

#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/exit.hpp"
#include "cellink/inmate-lib/lapic.hpp"
#include "cellink/inmate-lib/print.hpp"

extern "C" {
// boot_x86_64.S: the GDT slot for the TSS descriptor (selector 0x18).
extern std::uint64_t boot_gdt_tss[2];
// boot_x86_64.S: the unmapped page below the boot stack.
extern char boot_stack_guard[];
// interrupt_stubs_x86_64.S: 256 stubs, 16 bytes apart.
extern const char interrupt_stubs[];
}

namespace cellink::inmate {

// The frame interrupt_common builds; see interrupt_stubs_x86_64.S.
struct InterruptFrame {
  std::uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
  std::uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
  std::uint64_t vector, error_code;
  std::uint64_t rip, cs, rflags, rsp, ss;  // pushed by the CPU
};
static_assert(sizeof(InterruptFrame) == 22 * sizeof(std::uint64_t));
static_assert(offsetof(InterruptFrame, vector) == 15 * sizeof(std::uint64_t));
static_assert(offsetof(InterruptFrame, rip) == 17 * sizeof(std::uint64_t));

namespace {

constexpr std::uint16_t kCodeSelector = 0x08;
constexpr std::uint16_t kTssSelector = 0x18;
constexpr std::size_t kStubSize = 16;
constexpr std::uint8_t kFirstExternalVector = 32;
constexpr std::uint8_t kDoubleFault = 8;
constexpr std::uint8_t kPageFault = 14;
constexpr std::uint8_t kDoubleFaultIst = 1;
constexpr std::uint64_t kStackGuardSize = 4096;

// A 64-bit interrupt gate (Intel SDM vol. 3, 6.14.1).
struct IdtEntry {
  std::uint16_t offset_low;
  std::uint16_t selector;
  std::uint8_t ist;   // bits 2:0: interrupt stack table index, 0 = none
  std::uint8_t type;  // present, DPL 0, type 0xe (interrupt gate: clears IF)
  std::uint16_t offset_middle;
  std::uint32_t offset_high;
  std::uint32_t reserved;
};
static_assert(sizeof(IdtEntry) == 16);
constexpr std::uint8_t kInterruptGate = 0x8e;

// The 64-bit TSS (SDM vol. 3, 8.7); only ist[0] (IST 1) is used.
struct __attribute__((packed)) TaskStateSegment {
  std::uint32_t reserved0;
  std::uint64_t rsp[3];
  std::uint64_t reserved1;
  std::uint64_t ist[7];
  std::uint64_t reserved2;
  std::uint16_t reserved3;
  std::uint16_t io_map_base;
};
static_assert(sizeof(TaskStateSegment) == 104);

struct __attribute__((packed)) DescriptorTablePointer {
  std::uint16_t limit;
  std::uint64_t base;
};

struct HandlerSlot {
  InterruptHandler handler;
  void* context;
};

alignas(16) IdtEntry idt[256];
alignas(16) TaskStateSegment tss;
alignas(16) std::uint8_t double_fault_stack[8192];
HandlerSlot handlers[256];
bool allocated[256];
std::uint32_t unhandled_counts[256];
// Set while an exception report runs, so a fault inside it ends at once.
bool reporting_exception = false;

const char* const kExceptionNames[32] = {
    "divide-error",
    "debug",
    "nmi",
    "breakpoint",
    "overflow",
    "bound-range",
    "invalid-opcode",
    "device-not-available",
    "double-fault",
    "coprocessor-segment-overrun",
    "invalid-tss",
    "segment-not-present",
    "stack-fault",
    "general-protection",
    "page-fault",
    "reserved-15",
    "x87-floating-point",
    "alignment-check",
    "machine-check",
    "simd-floating-point",
    "virtualization",
    "control-protection",
    "reserved-22",
    "reserved-23",
    "reserved-24",
    "reserved-25",
    "reserved-26",
    "reserved-27",
    "hypervisor-injection",
    "vmm-communication",
    "security",
    "reserved-31",
};

void set_gate(std::uint8_t vector, std::uint8_t ist) {
  const auto address = reinterpret_cast<std::uint64_t>(interrupt_stubs + kStubSize * vector);
  idt[vector] = IdtEntry{
      .offset_low = static_cast<std::uint16_t>(address),
      .selector = kCodeSelector,
      .ist = ist,
      .type = kInterruptGate,
      .offset_middle = static_cast<std::uint16_t>(address >> 16),
      .offset_high = static_cast<std::uint32_t>(address >> 32),
      .reserved = 0,
  };
}

// Writes the available-64-bit-TSS descriptor (type 9) into the GDT and loads
// the task register. ltr marks the descriptor busy in the GDT (in .data).
void load_tss() {
  tss.ist[kDoubleFaultIst - 1] =
      reinterpret_cast<std::uint64_t>(double_fault_stack) + sizeof(double_fault_stack);
  tss.io_map_base = sizeof(TaskStateSegment);  // no I/O permission bitmap
  const auto base = reinterpret_cast<std::uint64_t>(&tss);
  const std::uint64_t limit = sizeof(TaskStateSegment) - 1;
  boot_gdt_tss[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (std::uint64_t{0x89} << 40) |
                    (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
  boot_gdt_tss[1] = base >> 32;
  asm volatile("ltr %0" : : "r"(kTssSelector) : "memory");
}

// The 8259 PICs: SeaBIOS leaves them at vectors 0x08 and 0x70 with the PIT on
// IRQ 0, which would arrive as a "double fault" once interrupts are enabled.
// Remap them to 0x20..0x2f (below the allocatable vectors) and mask every
// line; the runtime uses the LAPIC and MSI only.
void disable_legacy_pic() {
  constexpr std::uint16_t kMasterCommand = 0x20, kMasterData = 0x21;
  constexpr std::uint16_t kSlaveCommand = 0xa0, kSlaveData = 0xa1;
  outb(kMasterCommand, 0x11);  // ICW1: init, cascade, ICW4 follows
  outb(kSlaveCommand, 0x11);
  outb(kMasterData, 0x20);  // ICW2: vector base
  outb(kSlaveData, 0x28);
  outb(kMasterData, 0x04);  // ICW3: slave on IRQ 2
  outb(kSlaveData, 0x02);
  outb(kMasterData, 0x01);  // ICW4: 8086 mode
  outb(kSlaveData, 0x01);
  outb(kMasterData, 0xff);  // OCW1: mask everything
  outb(kSlaveData, 0xff);
}

[[noreturn]] void report_exception(const InterruptFrame& frame) {
  interrupts_disable();
  if (reporting_exception) {
    print("inmate: FATAL: exception #%llu while reporting an exception\n",
          static_cast<unsigned long long>(frame.vector));
    exit(kFatalExitCode);
  }
  reporting_exception = true;
  const auto vector = static_cast<unsigned>(frame.vector);
  if (vector == kPageFault) {
    const std::uint64_t error = frame.error_code;
    print(
        "inmate: FATAL: exception %s (#%u) error=0x%llx rip=0x%llx cr2=0x%llx rsp=0x%llx "
        "(%s, %s)\n",
        kExceptionNames[vector], vector, static_cast<unsigned long long>(error),
        static_cast<unsigned long long>(frame.rip), static_cast<unsigned long long>(read_cr2()),
        static_cast<unsigned long long>(frame.rsp),
        (error & 0x10) != 0 ? "instruction fetch" : ((error & 0x2) != 0 ? "write" : "read"),
        (error & 0x1) != 0 ? "protection violation on a present page" : "not-present page");
  } else {
    print("inmate: FATAL: exception %s (#%u) error=0x%llx rip=0x%llx rsp=0x%llx\n",
          kExceptionNames[vector], vector, static_cast<unsigned long long>(frame.error_code),
          static_cast<unsigned long long>(frame.rip), static_cast<unsigned long long>(frame.rsp));
  }
  const auto guard = reinterpret_cast<std::uint64_t>(boot_stack_guard);
  if (frame.rsp >= guard && frame.rsp < guard + kStackGuardSize) {
    print("inmate: rsp is in the guard page below the boot stack: stack overflow\n");
  }
  print(
      "inmate: rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n"
      "inmate: rsi=%016llx rdi=%016llx rbp=%016llx rflags=%016llx\n",
      static_cast<unsigned long long>(frame.rax), static_cast<unsigned long long>(frame.rbx),
      static_cast<unsigned long long>(frame.rcx), static_cast<unsigned long long>(frame.rdx),
      static_cast<unsigned long long>(frame.rsi), static_cast<unsigned long long>(frame.rdi),
      static_cast<unsigned long long>(frame.rbp), static_cast<unsigned long long>(frame.rflags));
  exit(kFatalExitCode);
}

}  // namespace

void interrupts_init() {
  disable_legacy_pic();
  for (unsigned vector = 0; vector < 256; ++vector) {
    set_gate(static_cast<std::uint8_t>(vector),
             vector == kDoubleFault ? kDoubleFaultIst : std::uint8_t{0});
  }
  load_tss();
  const DescriptorTablePointer pointer{.limit = sizeof(idt) - 1,
                                       .base = reinterpret_cast<std::uint64_t>(idt)};
  asm volatile("lidt %0" : : "m"(pointer) : "memory");
}

bool set_interrupt_handler(std::uint8_t vector, InterruptHandler handler, void* context) {
  if (vector < kFirstExternalVector || vector == kSpuriousVector) return false;
  const InterruptsDisabled guard;
  handlers[vector] = HandlerSlot{.handler = handler, .context = context};
  return true;
}

std::uint8_t allocate_vector() {
  const InterruptsDisabled guard;
  for (unsigned vector = kFirstAllocatableVector; vector < kSpuriousVector; ++vector) {
    if (!allocated[vector] && handlers[vector].handler == nullptr) {
      allocated[vector] = true;
      return static_cast<std::uint8_t>(vector);
    }
  }
  return 0;
}

std::uint32_t unhandled_interrupt_count(std::uint8_t vector) {
  const InterruptsDisabled guard;
  return unhandled_counts[vector];
}

}  // namespace cellink::inmate

extern "C" void interrupt_dispatch(cellink::inmate::InterruptFrame* frame) {
  using namespace cellink::inmate;
  const auto vector = static_cast<std::uint8_t>(frame->vector);
  if (vector < kFirstExternalVector) report_exception(*frame);
  if (vector == kSpuriousVector) return;  // the LAPIC wants no EOI for it
  const HandlerSlot slot = handlers[vector];
  if (slot.handler != nullptr) {
    slot.handler(slot.context);
  } else if (unhandled_counts[vector]++ == 0) {
    print("inmate: interrupt on vector %#x without a handler (reported once)\n", vector);
  }
  lapic_eoi();
}
