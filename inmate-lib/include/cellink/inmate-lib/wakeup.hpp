// wakeup: how interrupt handlers tell the inmate's main loop that something
// may have happened, and how the loop sleeps until then.
//
// A handler calls note_wakeup() and returns; it never touches a link (the
// channel core is the main loop's alone). The main loop processes
// everything, then calls wait_for_wakeup(), which halts the CPU unless a
// wake-up was noted since the previous call. Interrupts are disabled
// between the check and the halt ("sti; hlt" enables them and halts as one
// step), so a wake-up that arrives in between is never slept through.
//
// Threading and interrupts: one CPU. note_wakeup() from handlers (or the
// main loop); wait_for_wakeup() from the main loop only, with interrupts
// enabled or not (it returns with them enabled).
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::inmate {

void note_wakeup() noexcept;
void wait_for_wakeup() noexcept;
// How often wait_for_wakeup() halted (the CPU slept), and how often it
// found a wake-up already noted.
[[nodiscard]] std::uint64_t halts() noexcept;
[[nodiscard]] std::uint64_t wakeups_without_halt() noexcept;

}  // namespace cellink::inmate
