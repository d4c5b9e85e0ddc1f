// The streaming loop of the throughput rows that move one message per call
// (channel_throughput.cpp and cellink_bench's rows): the producer on
// cpus.first sends records 0..records-1, the consumer on cpus.second
// receives and checks each one and times those after the warm-up.
#pragma once

#include <cstdint>

#include "harness.hpp"
#include "ring_bench.hpp"

namespace cellink::bench {

// The consumer's clock readings: after record `warmup` - 1 and after the last.
struct StreamTicks {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;

  [[nodiscard]] double rate(const Settings& settings, const StreamCase& stream) const {
    return static_cast<double>(stream.records - stream.warmup) /
           settings.clock.seconds(end - begin);
  }
};

// The consumer's part, on the calling thread: consume(i) for every record.
template <typename Consume>
[[nodiscard]] StreamTicks time_consumer(const StreamCase& stream, Consume& consume) {
  StreamTicks ticks;
  for (std::uint64_t i = 0; i < stream.records; ++i) {
    consume(i);
    if (i + 1 == stream.warmup) ticks.begin = TickClock::now();
  }
  ticks.end = TickClock::now();
  return ticks;
}

// Both parts on two pinned threads; records per second.
template <typename Produce, typename Consume>
[[nodiscard]] double stream_rate(const Settings& settings, const StreamCase& stream,
                                 Produce produce, Consume consume) {
  StreamTicks ticks;
  StartGate gate;
  run_pinned(
      settings.cpus,
      [&] {
        gate.arrive_and_wait();
        for (std::uint64_t i = 0; i < stream.records; ++i) produce(i);
      },
      [&] {
        gate.arrive_and_wait();
        ticks = time_consumer(stream, consume);
      });
  return ticks.rate(settings, stream);
}

}  // namespace cellink::bench
