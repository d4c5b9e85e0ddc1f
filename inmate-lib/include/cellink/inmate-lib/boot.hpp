// boot: what an inmate program defines, and what the runtime has done before
// calling it.
//
// Every inmate program defines, in namespace cellink::inmate (C++ linkage):
//
//   int cellink::inmate::inmate_main() { ... }
//
// and its return value goes to exit() (so 0 ends QEMU with status 1).
//
// Before inmate_main() runs, the boot code (boot_x86_64.S, start.cpp) has:
//   - entered long mode through the PVH entry point (QEMU `-kernel`),
//   - identity-mapped the first 1 GiB write-back (see paging.hpp), except
//     page 0 (so a null pointer faults) and a guard page below the stack,
//   - zeroed .bss and run the C++ static constructors,
//   - called console_init() and interrupts_init() (IDT loaded, exceptions
//     reported), copied the command line and calibrated the TSC,
// and left interrupts DISABLED. The stack is 64 KiB.
//
// Threading and interrupts: command_line() and its parsers read a copy made
// at boot; they may be called from anywhere.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cellink::inmate {

// Defined by the inmate program, not by the runtime.
int inmate_main();

// The longest command line kept; a longer one is cut (with a warning at boot).
inline constexpr std::size_t kCommandLineCapacity = 1024;

// The command line QEMU passed (-append), "" if none.
const char* command_line();
// The value of the word "key=value" on the command line, decimal or 0x hex;
// false when the key is absent or its value is malformed or overflows.
bool command_line_u64(const char* key, std::uint64_t& value);
// Copies the value of "key=value" into out (NUL-terminated); false when the
// key is absent or the value does not fit in `size` bytes with its NUL.
bool command_line_string(const char* key, char* out, std::size_t size);

}  // namespace cellink::inmate
