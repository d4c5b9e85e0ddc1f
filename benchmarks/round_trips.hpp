// The round-trip loop every latency row of ring_bench, channel_bench and
// cellink_bench is timed with, so that a channel row and its ring baseline
// are measured the same way (docs/benchmarks.md).
//
// One measurement runs, on thread A: rtt_warmup untimed round trips, then
// rtt_samples each timed, then rtt_samples more timed in blocks of kBlock
// (one timer read per block, so no timer overhead; the median block resists
// preemption), unless Settings::untimed_pass is off. round_trips() runs both
// sides in this process; time_initiator() runs only A's part, for an echo in
// another process.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "harness.hpp"
#include "ring_bench.hpp"

namespace cellink::bench {

[[nodiscard]] inline Latency summarize(const Histogram& histogram, const TickClock& clock) {
  Latency latency;
  latency.p50 = clock.ns(histogram.percentile(50));
  latency.p90 = clock.ns(histogram.percentile(90));
  latency.p99 = clock.ns(histogram.percentile(99));
  latency.p999 = clock.ns(histogram.percentile(99.9));
  latency.p9999 = clock.ns(histogram.percentile(99.99));
  latency.max = clock.ns(histogram.max());
  latency.mean = histogram.mean() * clock.ns(1);
  return latency;
}

// Round trips per block of the untimed pass.
inline constexpr std::uint64_t kBlock = 1000;

// How many round trips one measurement runs; the echo side runs `total`.
struct RoundTripPlan {
  std::uint64_t timed_end = 0;  // warm-up plus the individually timed ones
  std::uint64_t blocks = 0;
  std::uint64_t total = 0;

  explicit RoundTripPlan(const Settings& settings)
      : timed_end(settings.rtt_warmup + settings.rtt_samples),
        blocks(settings.untimed_pass ? std::max<std::uint64_t>(settings.rtt_samples / kBlock, 1)
                                     : 0),
        total(timed_end + blocks * kBlock) {}
};

// What thread A measured, in ticks: the histogram of the individually timed
// round trips and the median block of the untimed pass (0 without one).
struct InitiatorTicks {
  std::shared_ptr<Histogram> histogram = std::make_shared<Histogram>();
  std::uint64_t median_block = 0;
};

// Thread A's part of a measurement: runs `initiate(i)` for every round trip
// i of the plan and times them. Allocates before the first round trip only.
template <typename Initiate>
[[nodiscard]] InitiatorTicks time_initiator(const Settings& settings, Initiate& initiate,
                                            StartGate* gate = nullptr) {
  const RoundTripPlan plan(settings);
  InitiatorTicks ticks;
  std::vector<std::uint64_t> block_ticks(plan.blocks);
  if (gate != nullptr) gate->arrive_and_wait();
  for (std::uint64_t i = 0; i < plan.timed_end; ++i) {
    const std::uint64_t begin = TickClock::now();
    initiate(i);
    const std::uint64_t end = TickClock::now();
    if (i >= settings.rtt_warmup) ticks.histogram->record(end - begin);
  }
  for (std::uint64_t block = 0; block < plan.blocks; ++block) {
    const std::uint64_t first = plan.timed_end + block * kBlock;
    const std::uint64_t begin = TickClock::now();
    for (std::uint64_t i = first; i < first + kBlock; ++i) initiate(i);
    block_ticks[block] = TickClock::now() - begin;
  }
  if (plan.blocks == 0) return ticks;
  const auto middle = block_ticks.begin() + static_cast<std::ptrdiff_t>(plan.blocks / 2);
  std::nth_element(block_ticks.begin(), middle, block_ticks.end());
  ticks.median_block = *middle;
  return ticks;
}

// The figures of a measurement, in nanoseconds of `clock`.
[[nodiscard]] inline Latency summarize(const InitiatorTicks& ticks, const TickClock& clock) {
  Latency latency = summarize(*ticks.histogram, clock);
  latency.untimed = clock.ns(ticks.median_block) / static_cast<double>(kBlock);
  latency.histogram = ticks.histogram;
  return latency;
}

// Runs `initiate(i)` on A and `echo(i)` on B for every round trip i.
template <typename Initiate, typename Echo>
[[nodiscard]] Latency round_trips(const Settings& settings, Initiate initiate, Echo echo) {
  const RoundTripPlan plan(settings);
  InitiatorTicks ticks;
  const std::uint64_t switches = involuntary_switches();
  StartGate gate;
  run_pinned(
      settings.cpus, [&] { ticks = time_initiator(settings, initiate, &gate); },
      [&] {
        gate.arrive_and_wait();
        for (std::uint64_t i = 0; i < plan.total; ++i) echo(i);
      });
  Latency latency = summarize(ticks, settings.clock);
  latency.switches = involuntary_switches() - switches;
  return latency;
}

}  // namespace cellink::bench
