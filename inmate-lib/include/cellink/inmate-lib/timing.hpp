// timing: time from the TSC, calibrated once at boot.
//
// tsc_calibrate() takes the TSC frequency from CPUID leaf 0x15 when it
// reports both the crystal clock and the ratio; otherwise it measures the TSC
// against PIT channel 2 (gate through port 0x61, about 10 ms, best of three
// runs); if the PIT does not count, it falls back to CPUID leaf 0x16 (base
// MHz), and fatal()s when nothing gives a frequency. The runtime assumes an
// invariant TSC, as on every CPU Jailhouse supports and under QEMU.
//
// Contract: tsc_calibrate() runs once at boot, before inmate_main(), and
// sets the zero of now_ns(). Everything else may be called afterwards from
// anywhere, handlers included.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::inmate {

void tsc_calibrate();
std::uint64_t tsc_hz();
// How the frequency was found: "cpuid 0x15", "pit" or "cpuid 0x16".
const char* tsc_source();
// Nanoseconds since tsc_calibrate().
std::uint64_t now_ns();
// Busy-waits at least `us` microseconds.
void delay_us(std::uint64_t us);
std::uint64_t tsc_to_ns(std::uint64_t ticks);
std::uint64_t ns_to_tsc(std::uint64_t ns);

// A point in time to wait for, as a TSC value. Cheap to copy and to test.
class Deadline {
 public:
  static Deadline after_ns(std::uint64_t ns);
  static Deadline after_us(std::uint64_t us) { return after_ns(us * 1000); }
  static Deadline after_ms(std::uint64_t ms) { return after_ns(ms * 1000000); }
  static Deadline never() { return Deadline(~std::uint64_t{0}); }

  bool passed() const;
  // 0 once passed; ~0 for never().
  std::uint64_t remaining_ns() const;
  bool is_never() const { return tsc_ == ~std::uint64_t{0}; }

 private:
  explicit Deadline(std::uint64_t tsc) : tsc_(tsc) {}
  std::uint64_t tsc_;
};

}  // namespace cellink::inmate
