// Streaming rows: one producer thread (cpus.first) and one consumer thread
// (cpus.second) move `records` records through a queue; the consumer times
// the records after the warm-up. Plus the one-thread rows: memcpy of the
// same records, and each queue's instruction cost with no cross-core traffic.
#include <cstring>
#include <memory>

#include <boost/lockfree/spsc_queue.hpp>

#include "ring_bench.hpp"

namespace cellink::bench {
namespace {

using transports::ConsumeStatus;
using transports::ProduceStatus;
using transports::Record;
using transports::RingConsumer;
using transports::RingProducer;

void check_sequence(const char* queue, std::uint64_t got, std::uint64_t expected) {
  if (got != expected) {
    fail("%s: record %llu arrived where %llu was expected", queue,
         static_cast<unsigned long long>(got), static_cast<unsigned long long>(expected));
  }
}

[[nodiscard]] double rate(const Settings& settings, std::uint64_t records, std::uint64_t begin,
                          std::uint64_t end) {
  return static_cast<double>(records) / settings.clock.seconds(end - begin);
}

// Reserves, retrying while full; publishes first so the consumer can drain.
void reserve_or_publish(RingProducer& producer, std::uint32_t size,
                        RingProducer::Reservation& reservation) {
  for (;;) {
    const ProduceStatus status = producer.reserve(size, 1, reservation);
    if (status == ProduceStatus::ok) return;
    if (status != ProduceStatus::full) fail("reserve(%u): status %d", size, int(status));
    (void)producer.publish();  // polling consumer: no doorbell is ever due
  }
}

// The one copy a copying queue adds: boost::lockfree pushes a whole element.
// Aligned so that every element starts a cache line, which is boost's best
// case (std::array<std::byte, N> would straddle lines).
template <std::size_t N>
struct alignas(64) Slot {
  std::byte bytes[N];
};

template <std::size_t N>
[[nodiscard]] double boost_spsc_rate_for(const Settings& settings, const StreamCase& stream) {
  boost::lockfree::spsc_queue<Slot<N>> queue(stream.capacity / N);
  auto staging = std::make_unique<Slot<N>>();
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::uint64_t sink = 0;
  StartGate gate;
  run_pinned(
      settings.cpus,
      [&] {
        gate.arrive_and_wait();
        for (std::uint64_t i = 0; i < stream.records; ++i) {
          write_payload(staging->bytes, N, i, stream.workload);
          while (!queue.push(*staging)) {
          }
        }
      },
      [&] {
        gate.arrive_and_wait();
        for (std::uint64_t i = 0; i < stream.records; ++i) {
          std::uint64_t first = 0;
          while (!queue.consume_one([&](const Slot<N>& slot) {
            first = read_payload(slot.bytes, N, stream.workload, sink);
          })) {
          }
          check_sequence("boost::lockfree::spsc_queue", first, i);
          if (i + 1 == stream.warmup) begin = TickClock::now();
        }
        end = TickClock::now();
      });
  keep(sink);
  return rate(settings, stream.records - stream.warmup, begin, end);
}

template <std::size_t N>
[[nodiscard]] __attribute__((noinline)) double single_thread_boost_loop(const Settings& settings,
                                                                        const StreamCase& stream) {
  boost::lockfree::spsc_queue<Slot<N>> queue(stream.capacity / N);
  auto staging = std::make_unique<Slot<N>>();
  std::uint64_t sink = 0;
  const std::uint64_t begin = TickClock::now();
  for (std::uint64_t done = 0; done < stream.records; done += kPublishBatch) {
    for (std::uint64_t i = done; i < done + kPublishBatch; ++i) {
      write_payload(staging->bytes, N, i, stream.workload);
      if (!queue.push(*staging)) fail("boost::lockfree::spsc_queue: full in one thread");
    }
    for (std::uint64_t i = done; i < done + kPublishBatch; ++i) {
      std::uint64_t first = 0;
      if (!queue.consume_one([&](const Slot<N>& slot) {
            first = read_payload(slot.bytes, N, stream.workload, sink);
          })) {
        fail("boost::lockfree::spsc_queue: empty in one thread");
      }
      check_sequence("boost::lockfree::spsc_queue", first, i);
    }
  }
  const std::uint64_t end = TickClock::now();
  keep(sink);
  return settings.clock.ns(end - begin) / static_cast<double>(stream.records);
}

[[nodiscard]] __attribute__((noinline)) double single_thread_ring_loop(const Settings& settings,
                                                                       const StreamCase& stream) {
  RingMemory memory(stream.capacity);
  RingProducer producer;
  RingConsumer<> consumer;
  memory.attach(producer, consumer);
  const auto size = static_cast<std::uint32_t>(stream.record_size);
  std::uint64_t sink = 0;
  RingProducer::Reservation reservation;
  Record record;
  const std::uint64_t begin = TickClock::now();
  for (std::uint64_t done = 0; done < stream.records; done += kPublishBatch) {
    for (std::uint64_t i = done; i < done + kPublishBatch; ++i) {
      if (producer.reserve(size, 1, reservation) != ProduceStatus::ok) fail("one thread: full");
      write_payload(reservation.payload.data(), size, i, stream.workload);
      if (producer.commit(reservation, size) != ProduceStatus::ok) fail("commit failed");
    }
    (void)producer.publish();
    for (std::uint64_t i = done; i < done + kPublishBatch; ++i) {
      if (consumer.peek(record) != ConsumeStatus::ok) fail("one thread: peek failed");
      check_sequence("cellink ring",
                     read_payload(record.payload.data(), size, stream.workload, sink), i);
      if (consumer.release(record) != ConsumeStatus::ok) fail("release failed");
    }
  }
  const std::uint64_t end = TickClock::now();
  keep(sink);
  return settings.clock.ns(end - begin) / static_cast<double>(stream.records);
}

}  // namespace

double cellink_ring_rate(const Settings& settings, const StreamCase& stream) {
  RingMemory memory(stream.capacity);
  RingProducer producer;
  RingConsumer<> consumer;
  memory.attach(producer, consumer);
  const auto size = static_cast<std::uint32_t>(stream.record_size);
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::uint64_t sink = 0;
  StartGate gate;
  run_pinned(
      settings.cpus,
      [&] {
        gate.arrive_and_wait();
        RingProducer::Reservation reservation;
        std::uint32_t unpublished = 0;
        for (std::uint64_t i = 0; i < stream.records; ++i) {
          reserve_or_publish(producer, size, reservation);
          write_payload(reservation.payload.data(), size, i, stream.workload);
          if (producer.commit(reservation, size) != ProduceStatus::ok) fail("commit failed");
          if (++unpublished == kPublishBatch) {
            (void)producer.publish();
            unpublished = 0;
          }
        }
        (void)producer.publish();
      },
      [&] {
        gate.arrive_and_wait();
        Record record;
        for (std::uint64_t i = 0; i < stream.records;) {
          const ConsumeStatus status = consumer.peek(record);
          if (status == ConsumeStatus::empty) continue;
          if (status != ConsumeStatus::ok) fail("peek: status %d", int(status));
          check_sequence("cellink ring",
                         read_payload(record.payload.data(), size, stream.workload, sink), i);
          if (record.payload.size() != size) fail("cellink ring: record of the wrong size");
          if (consumer.release(record) != ConsumeStatus::ok) fail("release failed");
          if (++i == stream.warmup) begin = TickClock::now();
        }
        end = TickClock::now();
      });
  keep(sink);
  return rate(settings, stream.records - stream.warmup, begin, end);
}

double boost_spsc_rate(const Settings& settings, const StreamCase& stream) {
  switch (stream.record_size) {
    case 64: return boost_spsc_rate_for<64>(settings, stream);
    case 4096: return boost_spsc_rate_for<4096>(settings, stream);
    case 65536: return boost_spsc_rate_for<65536>(settings, stream);
    default: fail("boost row: no element type for %zu-byte records", stream.record_size);
  }
}

double memcpy_rate(const Settings& settings, const StreamCase& stream) {
  const std::size_t size = stream.record_size;
  AlignedBuffer source(size, 64);
  AlignedBuffer area(stream.capacity, 64);
  std::memset(source.data(), 0x5a, size);
  const std::size_t slots = stream.capacity / size;
  std::uint64_t begin = 0;
  for (std::uint64_t i = 0; i < stream.records; ++i) {
    std::memcpy(area.data() + (i % slots) * size, source.data(), size);
    keep(area.data());  // the copy must happen: the clobber makes it observable
    if (i + 1 == stream.warmup) begin = TickClock::now();
  }
  const std::uint64_t end = TickClock::now();
  return rate(settings, stream.records - stream.warmup, begin, end);
}

double single_thread_ring_ns(const Settings& settings, const StreamCase& stream) {
  return single_thread_ring_loop(settings, stream);
}

double single_thread_boost_ns(const Settings& settings, const StreamCase& stream) {
  if (stream.record_size != 64) fail("one-thread boost row: 64-byte records only");
  return single_thread_boost_loop<64>(settings, stream);
}

}  // namespace cellink::bench
