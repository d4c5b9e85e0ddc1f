// start: the C++ half of the boot, from inmate_start() (called by
// boot_x86_64.S in long mode on the boot stack) to inmate_main().
//
// Order, and why:
//   1. console_init(): every later step may need to report a failure;
//   2. interrupts_init(): from here on a fault prints a FATAL line instead of
//      a silent triple fault;
//   3. load_command_line(): copies the string out of the loader's memory;
//   4. unmaps page 0 (null pointers fault) and the boot-stack guard page;
//   5. the static constructors (.init_array), which may print and use the
//      command line;
//   6. tsc_calibrate();
//   7. inmate_main(), whose result goes to exit().
// .bss was zeroed by the assembly before any of this. Interrupts stay
// disabled throughout; inmate_main() starts with them disabled.
#include <cstdint>

#include "cellink/inmate-lib/boot.hpp"
#include "cellink/inmate-lib/console.hpp"
#include "cellink/inmate-lib/exit.hpp"
#include "cellink/inmate-lib/interrupts.hpp"
#include "cellink/inmate-lib/paging.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/timing.hpp"
#include "hvm_start_info.hpp"

extern "C" {
using StaticConstructor = void (*)();
// Defined by inmate.ld around the .init_array output section.
extern const StaticConstructor __init_array_start[];  // NOLINT(bugprone-reserved-identifier)
extern const StaticConstructor __init_array_end[];    // NOLINT(bugprone-reserved-identifier)
// Defined by boot_x86_64.S.
extern char boot_stack_guard[];

[[noreturn]] void inmate_start(std::uint32_t start_info_address);
}

namespace cellink::inmate {
namespace {

void run_static_constructors() {
  for (const StaticConstructor* constructor = __init_array_start; constructor != __init_array_end;
       ++constructor) {
    (*constructor)();
  }
}

}  // namespace
}  // namespace cellink::inmate

extern "C" [[noreturn]] void inmate_start(std::uint32_t start_info_address) {
  using namespace cellink::inmate;
  console_init();
  // The firmware may have left the cursor mid-line (SeaBIOS: "Booting from
  // ROM.."); start ours on a fresh one so every line keeps its prefix.
  console_write("\n", 1);
  interrupts_init();
  load_command_line(start_info_address);
  if (!unmap_range(0, kPageSize) ||
      !unmap_range(reinterpret_cast<std::uint64_t>(boot_stack_guard), kPageSize)) {
    fatal("boot: cannot unmap page 0 and the stack guard page");
  }
  run_static_constructors();
  tsc_calibrate();
  exit(static_cast<std::uint8_t>(inmate_main()));
}
