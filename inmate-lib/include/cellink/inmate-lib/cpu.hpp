// cpu: the x86-64 instructions the inmate runtime needs, one inline function
// each: port I/O, MSRs, the TSC, CPUID, and the interrupt flag.
//
// Contract: every function is a thin wrapper around one instruction (or the
// "sti; hlt" pair); none of them touches memory other than what it names.
// The asm statements that order against memory (port I/O, MSR writes,
// sti/cli/hlt) carry a "memory" clobber, so the compiler neither caches
// memory values across them nor moves memory accesses over them: a device
// access or an interrupt window is a compiler barrier. The CPU itself never
// reorders port I/O, wrmsr, cli or sti against earlier stores (they are
// serializing or at least ordered on x86), so no fence instruction is needed.
//
// Threading and interrupts: the inmate runs on one CPU; every function here
// may be called from thread context and from interrupt handlers.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::inmate {

inline void outb(std::uint16_t port, std::uint8_t value) {
  asm volatile("outb %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
inline std::uint8_t inb(std::uint16_t port) {
  std::uint8_t value;
  asm volatile("inb %1, %0" : "=a"(value) : "Nd"(port) : "memory");
  return value;
}
inline void outw(std::uint16_t port, std::uint16_t value) {
  asm volatile("outw %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
inline std::uint16_t inw(std::uint16_t port) {
  std::uint16_t value;
  asm volatile("inw %1, %0" : "=a"(value) : "Nd"(port) : "memory");
  return value;
}
inline void outl(std::uint16_t port, std::uint32_t value) {
  asm volatile("outl %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
inline std::uint32_t inl(std::uint16_t port) {
  std::uint32_t value;
  asm volatile("inl %1, %0" : "=a"(value) : "Nd"(port) : "memory");
  return value;
}

inline std::uint64_t rdmsr(std::uint32_t msr) {
  std::uint32_t low, high;
  asm volatile("rdmsr" : "=a"(low), "=d"(high) : "c"(msr) : "memory");
  return (static_cast<std::uint64_t>(high) << 32) | low;
}
inline void wrmsr(std::uint32_t msr, std::uint64_t value) {
  asm volatile("wrmsr"
               :
               : "c"(msr), "a"(static_cast<std::uint32_t>(value)),
                 "d"(static_cast<std::uint32_t>(value >> 32))
               : "memory");
}

// Not serializing: a read may execute before earlier instructions finish,
// which is fine at the microsecond scale the runtime measures.
inline std::uint64_t rdtsc() {
  std::uint32_t low, high;
  asm volatile("rdtsc" : "=a"(low), "=d"(high));
  return (static_cast<std::uint64_t>(high) << 32) | low;
}

// Spin-wait hint; also a compiler barrier, so a polled value is re-read.
inline void cpu_relax() {
  asm volatile("pause" : : : "memory");
}

inline void interrupts_enable() {
  asm volatile("sti" : : : "memory");
}
inline void interrupts_disable() {
  asm volatile("cli" : : : "memory");
}

// Atomically enables interrupts and halts ("sti; hlt"), so an interrupt that
// arrives between a check made with interrupts disabled and the halt still
// wakes it: sti takes effect only after the next instruction, and the CPU
// recognises a pending interrupt in the hlt. Returns with interrupts ENABLED,
// after the handler of the interrupt that woke it has run.
inline void enable_interrupts_and_halt() {
  asm volatile("sti; hlt" : : : "memory");
}

inline bool interrupts_enabled() {
  std::uint64_t flags;
  asm volatile("pushfq; popq %0" : "=r"(flags) : : "memory");
  return (flags & (1u << 9)) != 0;  // RFLAGS.IF
}

// Disables interrupts for its lifetime and restores the previous state, so it
// nests and may be used in handlers (where interrupts are already off).
class InterruptsDisabled {
 public:
  InterruptsDisabled() : were_enabled_(interrupts_enabled()) { interrupts_disable(); }
  ~InterruptsDisabled() {
    if (were_enabled_) interrupts_enable();
  }
  InterruptsDisabled(const InterruptsDisabled&) = delete;
  InterruptsDisabled& operator=(const InterruptsDisabled&) = delete;

 private:
  bool were_enabled_;
};

struct CpuidResult {
  std::uint32_t eax, ebx, ecx, edx;
};
inline CpuidResult cpuid(std::uint32_t leaf, std::uint32_t subleaf = 0) {
  CpuidResult result{};
  asm volatile("cpuid"
               : "=a"(result.eax), "=b"(result.ebx), "=c"(result.ecx), "=d"(result.edx)
               : "a"(leaf), "c"(subleaf));
  return result;
}

inline std::uint64_t read_cr2() {
  std::uint64_t value;
  asm volatile("mov %%cr2, %0" : "=r"(value));
  return value;
}
inline std::uint64_t read_cr3() {
  std::uint64_t value;
  asm volatile("mov %%cr3, %0" : "=r"(value) : : "memory");
  return value;
}
// Loading CR3 flushes every non-global TLB entry (the runtime uses no global
// pages). The "memory" clobber makes page-table stores happen before it.
inline void write_cr3(std::uint64_t value) {
  asm volatile("mov %0, %%cr3" : : "r"(value) : "memory");
}

// Stops the CPU for good: interrupts off, then hlt in a loop (an NMI or SMI
// can still resume a hlt).
[[noreturn]] inline void halt_forever() {
  for (;;) asm volatile("cli; hlt" : : : "memory");
}

}  // namespace cellink::inmate
