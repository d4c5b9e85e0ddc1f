// LinkLoop: what every inmate on a cellink link does around its Endpoint:
//   - start(): the LAPIC, a periodic tick (so that waits and drain
//     deadlines end even when no doorbell comes), the ivshmem function
//     (ivshmem_probe.hpp) and the Endpoint on it;
//   - wait(): re-arms a one-shot v2 device, answers pending requests for
//     room, asks every peer for a doorbell on its next record, and halts
//     until the next interrupt (unless a record arrived meanwhile);
//   - report_events(): prints every Endpoint event on the console with
//     what the core latched (a broken ring's diagnostic, a protocol fault's
//     peer, channel, field, value and bound), so that the inmate never
//     stops a pair silently.
// A program owns one LinkLoop per link, as a global.
//
// Threading: the main loop only.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstdint>

#include "cellink/inmate-lib/endpoint.hpp"
#include "cellink/inmate-lib/ivshmem_probe.hpp"

namespace cellink::inmate {

class LinkLoop {
 public:
  // Probes the `device_index`-th ivshmem function and joins its link.
  // `tick_hz`: the periodic timer (0: none). Prints what it did or why it
  // failed; false on failure.
  bool start(const char* who, unsigned device_index, std::uint32_t tick_hz,
             const EndpointOptions& options = {});

  [[nodiscard]] Endpoint& endpoint() noexcept { return endpoint_; }
  [[nodiscard]] IvshmemFunction& function() noexcept { return function_; }
  [[nodiscard]] std::uint64_t ticks() const noexcept {
    return ticks_.load(std::memory_order_relaxed);
  }

  // Opens channel `name` toward every other peer of the link; ids[peer] is
  // its local id toward that peer (0 for ourselves). Prints why and returns
  // false when a name is invalid or no id is free.
  bool open_everywhere(const char* name, std::uint16_t (&ids)[kEndpointMaxPeers]);

  // Halts until the next interrupt (a doorbell or the tick).
  void wait() noexcept;
  // Prints and consumes every pending event; returns how many.
  unsigned report_events() noexcept;
  // One line: interrupts per vector, halts, ticks.
  void print_interrupts() noexcept;

 private:
  static void on_tick(void* context) noexcept;
  static void wait_hook(void* context) noexcept;

  const char* who_ = "inmate";
  IvshmemFunction function_;
  Endpoint endpoint_;
  std::atomic<std::uint64_t> ticks_{0};  // counted by the tick handler
  std::uint64_t events_lost_reported_ = 0;
};

}  // namespace cellink::inmate
