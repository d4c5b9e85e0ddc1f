// wakeup (wakeup.hpp). One CPU: the flag is shared only with interrupt
// handlers on this CPU, so ordering needs the compiler's cooperation only
// (signal fences), never a CPU fence.
#include "cellink/inmate-lib/wakeup.hpp"

#include <atomic>

#include "cellink/inmate-lib/cpu.hpp"

namespace cellink::inmate {
namespace {

// Written by handlers and the main loop; relaxed atomics on one CPU.
std::atomic<bool> pending{false};
std::uint64_t halt_count = 0;
std::uint64_t early_count = 0;

}  // namespace

void note_wakeup() noexcept {
  pending.store(true, std::memory_order_relaxed);
}

void wait_for_wakeup() noexcept {
  interrupts_disable();
  if (pending.load(std::memory_order_relaxed)) {
    ++early_count;
  } else {
    do {
      ++halt_count;
      enable_interrupts_and_halt();  // returns after a handler ran
      interrupts_disable();
    } while (!pending.load(std::memory_order_relaxed));
  }
  pending.store(false, std::memory_order_relaxed);
  // The handlers' writes (made before they set `pending`) are seen by the
  // loads that follow: on one CPU only the compiler could reorder them.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  interrupts_enable();
}

std::uint64_t halts() noexcept {
  return halt_count;
}
std::uint64_t wakeups_without_halt() noexcept {
  return early_count;
}

}  // namespace cellink::inmate
