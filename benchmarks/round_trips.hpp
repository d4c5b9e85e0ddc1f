// The round-trip loop every latency row of ring_bench and channel_bench is
// timed with, so that a channel row and its ring baseline are measured the
// same way (docs/benchmarks.md).
#pragma once

#include <algorithm>
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
  latency.max = clock.ns(histogram.max());
  latency.mean = histogram.mean() * clock.ns(1);
  return latency;
}

// Round trips per block of the untimed pass.
inline constexpr std::uint64_t kBlock = 1000;

// Runs `initiate(i)` on A and `echo(i)` on B for every round trip i: first
// rtt_warmup untimed, then rtt_samples each timed on A, then rtt_samples
// more timed in blocks of kBlock (one timer read per block, so no timer
// overhead; the median block resists preemption).
template <typename Initiate, typename Echo>
[[nodiscard]] Latency round_trips(const Settings& settings, Initiate initiate, Echo echo) {
  auto histogram = std::make_unique<Histogram>();
  const std::uint64_t timed_end = settings.rtt_warmup + settings.rtt_samples;
  const std::uint64_t blocks = std::max<std::uint64_t>(settings.rtt_samples / kBlock, 1);
  const std::uint64_t total = timed_end + blocks * kBlock;
  std::vector<std::uint64_t> block_ticks(blocks);
  const std::uint64_t switches = involuntary_switches();
  StartGate gate;
  run_pinned(
      settings.cpus,
      [&] {
        gate.arrive_and_wait();
        for (std::uint64_t i = 0; i < timed_end; ++i) {
          const std::uint64_t begin = TickClock::now();
          initiate(i);
          const std::uint64_t end = TickClock::now();
          if (i >= settings.rtt_warmup) histogram->record(end - begin);
        }
        for (std::uint64_t block = 0; block < blocks; ++block) {
          const std::uint64_t first = timed_end + block * kBlock;
          const std::uint64_t begin = TickClock::now();
          for (std::uint64_t i = first; i < first + kBlock; ++i) initiate(i);
          block_ticks[block] = TickClock::now() - begin;
        }
      },
      [&] {
        gate.arrive_and_wait();
        for (std::uint64_t i = 0; i < total; ++i) echo(i);
      });
  Latency latency = summarize(*histogram, settings.clock);
  std::nth_element(block_ticks.begin(), block_ticks.begin() + blocks / 2, block_ticks.end());
  latency.untimed = settings.clock.ns(block_ticks[blocks / 2]) / static_cast<double>(kBlock);
  latency.switches = involuntary_switches() - switches;
  return latency;
}

}  // namespace cellink::bench
