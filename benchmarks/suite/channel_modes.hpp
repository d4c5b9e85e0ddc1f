// How a Channel waits in each Mode, for every cellink row (loopback and
// through the daemon) alike.
#pragma once

#include <chrono>

#include "../channel_bench.hpp"
#include "suite.hpp"

namespace cellink::bench::suite {

// The Session's spin budget: poll spins for ever, block never, adaptive
// uses the Session's default (kDefaultSpinBudget).
[[nodiscard]] inline std::chrono::nanoseconds spin_budget(Mode mode) noexcept {
  switch (mode) {
    case Mode::block: return std::chrono::nanoseconds{0};
    case Mode::adaptive: return std::chrono::nanoseconds{-1};
    default: return kSpinForever;
  }
}

// poll: a loop of try_receive(), so the receiver never arms its ring and the
// sender never rings a doorbell; otherwise receive() waits per the budget.
[[nodiscard]] inline ReceiveWith receive_with(Mode mode) noexcept {
  return mode == Mode::poll ? ReceiveWith::try_receive : ReceiveWith::receive;
}

}  // namespace cellink::bench::suite
