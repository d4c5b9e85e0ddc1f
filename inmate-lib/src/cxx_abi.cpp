// cxx_abi: the few C++ ABI entry points GCC emits calls to, for an inmate
// that has no libstdc++, no heap and never returns from inmate_main().
//
//   __cxa_pure_virtual     a pure virtual call: fatal().
//   __cxa_atexit           registration of a static object's destructor: a
//                          no-op, because an inmate never runs static
//                          destructors (exit() stops the CPU).
//   __dso_handle           the "shared object" handle passed to it.
//   __cxa_guard_*          function-local statics: one CPU, so a flag byte
//                          suffices; a handler and the code it interrupted
//                          must not both initialise the same static.
//   operator delete        referenced by virtual destructors; the inmate
//                          has no heap, so reaching it is fatal.
#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/exit.hpp"

// The names are the ABI's, reserved identifiers by design.
// NOLINTBEGIN(bugprone-reserved-identifier)
extern "C" {

__attribute__((visibility("hidden"))) void* __dso_handle = nullptr;

void __cxa_pure_virtual() {
  cellink::inmate::fatal("pure virtual function called");
}

int __cxa_atexit(void (*)(void*), void*, void*) {
  return 0;
}

// The guard's first byte is "initialised", as the Itanium C++ ABI specifies.
int __cxa_guard_acquire(std::uint64_t* guard) {
  return *reinterpret_cast<std::uint8_t*>(guard) == 0 ? 1 : 0;
}
void __cxa_guard_release(std::uint64_t* guard) {
  *reinterpret_cast<std::uint8_t*>(guard) = 1;
}
void __cxa_guard_abort(std::uint64_t*) {}

}  // extern "C"
// NOLINTEND(bugprone-reserved-identifier)

void operator delete(void*) noexcept {
  cellink::inmate::fatal("operator delete: the inmate has no heap");
}
void operator delete(void*, std::size_t) noexcept {
  cellink::inmate::fatal("operator delete: the inmate has no heap");
}
