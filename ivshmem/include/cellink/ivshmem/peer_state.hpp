// PeerState: the u32 each peer publishes in its state-table entry.
//
//   31                              8 7         0
//  +---------------------------------+-----------+
//  |             epoch (24)          | phase (8) |
//  +---------------------------------+-----------+
//
// The phase is RESET 0, INIT 1, READY 2 or RUN 3. A peer bumps its epoch on
// every restart, so a survivor notices a restart even when it never observed
// the intermediate zero. Raw 0 (RESET, epoch 0) is what the hypervisor or the
// daemon writes for a peer that left. The table lives in shared memory and may
// hold anything: decode() rejects phases above RUN.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::ivshmem {

enum class Phase : std::uint8_t { reset = 0, init = 1, ready = 2, run = 3 };

[[nodiscard]] constexpr const char* phase_name(Phase phase) noexcept {
  switch (phase) {
    case Phase::reset: return "RESET";
    case Phase::init: return "INIT";
    case Phase::ready: return "READY";
    case Phase::run: return "RUN";
  }
  return "INVALID";
}

struct PeerState {
  static constexpr std::uint32_t kPhaseBits = 8;
  static constexpr std::uint32_t kPhaseMask = (1U << kPhaseBits) - 1;
  static constexpr std::uint32_t kEpochMask = 0x00ffffffU;

  Phase phase = Phase::reset;
  std::uint32_t epoch = 0;  // 0..kEpochMask; wraps to 0 after kEpochMask

  [[nodiscard]] constexpr std::uint32_t encode() const noexcept {
    return ((epoch & kEpochMask) << kPhaseBits) | static_cast<std::uint32_t>(phase);
  }

  // Decodes a raw value read once from shared memory. Returns false, leaving
  // `out` untouched, when the phase field is not a known phase.
  [[nodiscard]] static constexpr bool decode(std::uint32_t raw, PeerState& out) noexcept {
    const std::uint32_t phase_bits = raw & kPhaseMask;
    if (phase_bits > static_cast<std::uint32_t>(Phase::run)) return false;
    out.phase = static_cast<Phase>(phase_bits);
    out.epoch = raw >> kPhaseBits;
    return true;
  }

  [[nodiscard]] static constexpr std::uint32_t next_epoch(std::uint32_t epoch) noexcept {
    return (epoch + 1) & kEpochMask;
  }

  friend constexpr bool operator==(const PeerState&, const PeerState&) = default;
};

static_assert(PeerState{Phase::run, 5}.encode() == 0x503);
static_assert(PeerState{}.encode() == 0);

}  // namespace cellink::ivshmem
