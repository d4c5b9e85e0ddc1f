// interrupts: the IDT, exception reports and interrupt handler dispatch.
//
// Every vector has a stub (interrupt_stubs_x86_64.S) that saves the general
// registers and calls the dispatcher in interrupts.cpp:
//   - exceptions (0..31) print "inmate: FATAL: exception <name> (#<vector>)
//     error=<code> rip=<rip> cr2=<cr2> rsp=<rsp>", for a page fault also the
//     access kind (read/write/fetch, present/not-present), and exit with
//     kFatalExitCode. A double fault runs on its own stack (IST 1), so a
//     stack overflow into the guard page is still reported.
//   - the spurious vector 0xff is ignored, without EOI (the LAPIC wants none);
//   - 32..254 call the installed handler, then send the LAPIC EOI;
//   - a vector without a handler is counted, reported once per vector, and
//     gets its EOI, so it cannot block lower-priority vectors.
//
// Handlers run with interrupts disabled (interrupt gates) on the interrupted
// stack; they must not enable interrupts. The code compiles with
// -mgeneral-regs-only, so the stubs save no SSE state.
//
// Contract: interrupts_init() once, at boot (before inmate_main()).
// set_interrupt_handler() and allocate_vector() may be called with interrupts
// enabled: they update the table with interrupts disabled.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::inmate {

using InterruptHandler = void (*)(void* context);

inline constexpr std::uint8_t kFirstAllocatableVector = 0x30;
inline constexpr std::uint8_t kSpuriousVector = 0xff;

// Builds and loads the IDT and the TSS. Called by the boot code.
void interrupts_init();

// Installs `handler` for `vector` (32..254); a null handler removes it.
// Returns false for a vector out of range.
bool set_interrupt_handler(std::uint8_t vector, InterruptHandler handler, void* context);

// Returns a vector that is neither allocated nor has a handler, from 0x30
// upward, and marks it allocated; 0 when none is left.
std::uint8_t allocate_vector();

// How many interrupts arrived on `vector` without a handler.
std::uint32_t unhandled_interrupt_count(std::uint8_t vector);

}  // namespace cellink::inmate
