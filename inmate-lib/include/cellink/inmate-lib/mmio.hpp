// mmio: reads and writes of memory-mapped device registers.
//
// Contract: each call is exactly one access of the named width to the given
// address (an asm statement: never merged, split or elided), and the "memory"
// clobber keeps the compiler from moving ordinary memory accesses across it,
// so data written before a doorbell write is in memory before the device
// sees the doorbell. The CPU side needs no fence: the runtime maps every
// register range uncached (map_range(..., Caching::uncached)), and x86 keeps
// UC accesses in program order with respect to all other loads and stores.
//
// The address is an integer: the registers are reached by physical address
// through the identity map, and no C++ object lives there. (docs/style.md
// reserves `volatile` for MMIO; asm does the same job here without a cast.)
//
// Threading and interrupts: callable anywhere.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::inmate {

inline std::uint32_t mmio_read32(std::uint64_t address) {
  std::uint32_t value;
  asm volatile("movl (%1), %0" : "=r"(value) : "r"(address) : "memory");
  return value;
}
inline void mmio_write32(std::uint64_t address, std::uint32_t value) {
  asm volatile("movl %0, (%1)" : : "r"(value), "r"(address) : "memory");
}

}  // namespace cellink::inmate
