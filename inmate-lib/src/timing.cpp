// timing: the TSC frequency and everything derived from it (timing.hpp).
//
// PIT calibration (the method Linux's pit_calibrate_tsc() also uses): channel
// 2 in mode 0 counts down from kPitTicks once its gate (port 0x61 bit 0) is
// high, and raises its output (port 0x61 bit 5) at zero. The TSC ticks
// between arming and the output rising, over the known PIT period, give the
// TSC frequency. The speaker output (port 0x61 bit 1) stays off. A delay
// between the output rising and our read can only make a run longer, so the
// shortest of three runs is the best estimate.
//
// Conversions split ticks into whole seconds and a remainder, so that
// neither product overflows 64 bits for any TSC below 18 GHz and no 128-bit
// division (a libgcc call) is needed.
//
// Contract and threading: see timing.hpp. The calibration results are
// written once at boot, before interrupts are enabled, and only read after.
#include "cellink/inmate-lib/timing.hpp"

#include <cstdint>

#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/exit.hpp"
#include "cellink/inmate-lib/print.hpp"

namespace cellink::inmate {
namespace {

constexpr std::uint64_t kPitHz = 1193182;
constexpr std::uint64_t kNanosecondsPerSecond = 1000000000;
constexpr std::uint16_t kPitChannel2 = 0x42;
constexpr std::uint16_t kPitCommand = 0x43;
constexpr std::uint16_t kSystemControlB = 0x61;
constexpr std::uint8_t kGate2 = 0x01;
constexpr std::uint8_t kSpeaker = 0x02;
constexpr std::uint8_t kOutput2 = 0x20;
// Channel 2, low then high byte, mode 0 (interrupt on terminal count), binary.
constexpr std::uint8_t kChannel2Mode0 = 0xb0;
constexpr std::uint64_t kPitTicks = kPitHz / 100;  // 10 ms
constexpr int kPitRuns = 3;
// A PIT run that has not ended after 10^10 TSC ticks (seconds at any real
// TSC frequency, against the 10 ms it should take) means there is no PIT.
constexpr std::uint64_t kPitGiveUpTicks = 10000000000ull;

std::uint64_t frequency = 0;
std::uint64_t zero_tsc = 0;
const char* source = "none";

// TSC ticks over one PIT period of kPitTicks, or 0 when the PIT never fires.
std::uint64_t pit_run() {
  const std::uint8_t control = inb(kSystemControlB);
  outb(kSystemControlB, static_cast<std::uint8_t>((control & ~(kSpeaker | kGate2))));
  outb(kPitCommand, kChannel2Mode0);
  outb(kPitChannel2, kPitTicks & 0xff);
  outb(kPitChannel2, static_cast<std::uint8_t>(kPitTicks >> 8));
  // Raising the gate starts the count.
  outb(kSystemControlB, static_cast<std::uint8_t>((control & ~kSpeaker) | kGate2));
  const std::uint64_t start = rdtsc();
  while ((inb(kSystemControlB) & kOutput2) == 0) {
    if (rdtsc() - start > kPitGiveUpTicks) return 0;
  }
  const std::uint64_t now = rdtsc();
  outb(kSystemControlB, static_cast<std::uint8_t>(control & ~(kSpeaker | kGate2)));
  return now - start;
}

std::uint64_t calibrate_with_pit() {
  std::uint64_t best = 0;
  for (int run = 0; run < kPitRuns; ++run) {
    const std::uint64_t ticks = pit_run();
    if (ticks == 0) return 0;
    if (best == 0 || ticks < best) best = ticks;
  }
  return best * kPitHz / kPitTicks;
}

}  // namespace

void tsc_calibrate() {
  const std::uint32_t max_leaf = cpuid(0).eax;
  if (max_leaf >= 0x15) {
    const CpuidResult tsc = cpuid(0x15);  // eax: denominator, ebx: numerator, ecx: crystal Hz
    if (tsc.eax != 0 && tsc.ebx != 0 && tsc.ecx != 0) {
      frequency = std::uint64_t{tsc.ecx} * tsc.ebx / tsc.eax;
      source = "cpuid 0x15";
    }
  }
  if (frequency == 0) {
    frequency = calibrate_with_pit();
    if (frequency != 0) source = "pit";
  }
  if (frequency == 0 && max_leaf >= 0x16) {
    frequency = std::uint64_t{cpuid(0x16).eax & 0xffff} * 1000000;  // base MHz
    if (frequency != 0) source = "cpuid 0x16";
  }
  if (frequency == 0)
    fatal("timing: no TSC frequency: CPUID 0x15/0x16 give none and the PIT does not count");
  zero_tsc = rdtsc();
}

std::uint64_t tsc_hz() {
  return frequency;
}
const char* tsc_source() {
  return source;
}

std::uint64_t tsc_to_ns(std::uint64_t ticks) {
  return ticks / frequency * kNanosecondsPerSecond +
         ticks % frequency * kNanosecondsPerSecond / frequency;
}

std::uint64_t ns_to_tsc(std::uint64_t ns) {
  return ns / kNanosecondsPerSecond * frequency +
         ns % kNanosecondsPerSecond * frequency / kNanosecondsPerSecond;
}

std::uint64_t now_ns() {
  return tsc_to_ns(rdtsc() - zero_tsc);
}

void delay_us(std::uint64_t us) {
  const Deadline deadline = Deadline::after_us(us);
  while (!deadline.passed()) cpu_relax();
}

Deadline Deadline::after_ns(std::uint64_t ns) {
  const std::uint64_t now = rdtsc();
  const std::uint64_t ticks = ns_to_tsc(ns);
  // Saturate instead of wrapping: a huge timeout behaves like never().
  return Deadline(ticks > ~std::uint64_t{0} - now ? ~std::uint64_t{0} : now + ticks);
}

bool Deadline::passed() const {
  return !is_never() && rdtsc() >= tsc_;
}

std::uint64_t Deadline::remaining_ns() const {
  if (is_never()) return ~std::uint64_t{0};
  const std::uint64_t now = rdtsc();
  return now >= tsc_ ? 0 : tsc_to_ns(tsc_ - now);
}

}  // namespace cellink::inmate
