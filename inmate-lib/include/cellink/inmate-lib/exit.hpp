// exit: how an inmate ends, and what QEMU reports when it does.
//
// exit(code) prints "inmate: exit <code>", then writes `code` to the
// isa-debug-exit device at port 0xf4 (QEMU with
// `-device isa-debug-exit,iobase=0xf4,iosize=0x04`), which ends QEMU with
// status (code << 1) | 1: exit(0) gives status 1, fatal() gives 253. Where
// that device is absent (real hardware, a Jailhouse cell) the write does
// nothing, and the CPU stops with interrupts disabled.
//
// fatal() prints "inmate: FATAL: <message>" and exits with kFatalExitCode.
// The runtime calls it for every exception and broken invariant, so an
// inmate never hangs silently.
//
// Threading and interrupts: callable anywhere, handlers included; neither
// returns.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::inmate {

inline constexpr std::uint8_t kFatalExitCode = 0x7e;
// The I/O port of QEMU's isa-debug-exit device as the tests configure it.
inline constexpr std::uint16_t kDebugExitPort = 0xf4;

[[noreturn]] void exit(std::uint8_t code);
[[noreturn]] void fatal(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace cellink::inmate
