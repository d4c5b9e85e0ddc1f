// exit: ending the inmate (exit.hpp): a console line, the isa-debug-exit
// write, then a halt with interrupts disabled for when no such device exists.
//
// fatal() may be reached again while it runs (a fault while formatting, an
// interrupt handler failing during a report). The nesting depth is counted:
// a nested call skips the message and goes straight to the exit, so a broken
// console or formatter cannot loop.
#include "cellink/inmate-lib/exit.hpp"

#include <cstdint>

#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/print.hpp"

namespace cellink::inmate {
namespace {

// Only this CPU touches it, and the exit paths run with interrupts disabled,
// so a plain counter suffices.
unsigned fatal_depth = 0;

[[noreturn]] void stop(std::uint8_t code) {
  outb(kDebugExitPort, code);
  halt_forever();
}

}  // namespace

void exit(std::uint8_t code) {
  interrupts_disable();
  print("inmate: exit %u\n", code);
  stop(code);
}

void fatal(const char* format, ...) {
  interrupts_disable();
  if (++fatal_depth > 1) stop(kFatalExitCode);
  print("inmate: FATAL: ");
  __builtin_va_list arguments;
  __builtin_va_start(arguments, format);
  vprint(format, arguments);
  __builtin_va_end(arguments);
  print("\n");
  exit(kFatalExitCode);
}

}  // namespace cellink::inmate
