// Streaming through a Channel over a LoopbackLink: thread A (cpus.first)
// sends, thread B (cpus.second) receives, checks every message's size and
// sequence number and times the messages after the warm-up, as the ring's
// streaming rows do (throughput.cpp).
#include "channel_bench.hpp"
#include "channel_sides.hpp"
#include "streaming.hpp"

namespace cellink::bench {

double channel_rate(const Settings& settings, std::chrono::nanoseconds spin_budget,
                    ReceiveWith receive_with, const StreamCase& stream,
                    std::uint64_t output_section, linux_uio::Threading threading) {
  SessionPair pair(spin_budget, output_section, threading);
  const auto size = static_cast<std::uint32_t>(stream.record_size);
  RawSide producer(pair.a(), size, SendWith::send, receive_with);
  RawSide consumer(pair.b(), size, SendWith::send, receive_with);
  const double rate = stream_rate(
      settings, stream, [&](std::uint64_t i) { producer.send(i); },
      [&](std::uint64_t i) { consumer.receive(i); });
  keep(consumer.sink());
  return rate;
}

}  // namespace cellink::bench
