// Round trips between two pinned threads, polling: the cache-line floor and
// the cellink ring. Thread A (on cpus.first) starts each round trip and
// times it; thread B (on cpus.second) echoes. The first rtt_warmup round
// trips are run but not recorded.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "ring_bench.hpp"
#include "round_trips.hpp"

namespace cellink::bench {
namespace {

using transports::ConsumeStatus;
using transports::ProduceStatus;
using transports::Record;
using transports::RingConsumer;
using transports::RingProducer;

// 128 bytes, not 64: the adjacent-line prefetcher fetches 64-byte lines in
// pairs, which would make two neighbouring lines behave as one.
struct alignas(128) SharedWord {
  std::atomic<std::uint64_t> value{0};
};

void send(RingProducer& producer, std::uint32_t size, std::uint64_t sequence) {
  RingProducer::Reservation reservation;
  for (;;) {
    const ProduceStatus status = producer.reserve(size, 1, reservation);
    if (status == ProduceStatus::ok) break;
    if (status != ProduceStatus::full) fail("reserve(%u) failed: status %d", size, int(status));
  }
  write_payload(reservation.payload.data(), size, sequence, Workload::fill);
  if (producer.commit(reservation, size) != ProduceStatus::ok) fail("commit failed");
  // Polling mode: no consumer arms a wake-up, so no doorbell is ever due.
  (void)producer.publish();
}

void receive(RingConsumer<>& consumer, std::uint32_t size, std::uint64_t sequence,
             std::uint64_t& sink) {
  Record record;
  ConsumeStatus status;
  while ((status = consumer.peek(record)) == ConsumeStatus::empty) {
  }
  if (status != ConsumeStatus::ok) fail("peek failed: status %d", int(status));
  const std::uint64_t first =
      read_payload(record.payload.data(), record.payload.size(), Workload::fill, sink);
  if (first != sequence || record.payload.size() != size) {
    fail("ring round trip %llu: got record %llu of %zu bytes, expected %u bytes",
         static_cast<unsigned long long>(sequence), static_cast<unsigned long long>(first),
         record.payload.size(), size);
  }
  if (consumer.release(record) != ConsumeStatus::ok) fail("release failed");
}

}  // namespace

Latency timer_overhead(const Settings& settings) {
  auto histogram = std::make_unique<Histogram>();
  for (std::uint64_t i = 0; i < settings.rtt_warmup + settings.rtt_samples; ++i) {
    const std::uint64_t begin = TickClock::now();
    const std::uint64_t end = TickClock::now();
    histogram->record(end - begin);
  }
  return summarize(*histogram, settings.clock);
}

Latency cacheline_rtt(const Settings& settings) {
  auto ping = std::make_unique<SharedWord>();
  auto pong = std::make_unique<SharedWord>();
  // Round trip i carries i + 1, so that the initial 0 is never an echo.
  return round_trips(
      settings,
      [&](std::uint64_t i) {
        ping->value.store(i + 1, std::memory_order_release);            // R1: pairs with A1 on B
        while (pong->value.load(std::memory_order_acquire) != i + 1) {  // A2: pairs with R2
        }
      },
      [&](std::uint64_t i) {
        while (ping->value.load(std::memory_order_acquire) != i + 1) {  // A1: pairs with R1
        }
        pong->value.store(i + 1, std::memory_order_release);  // R2: pairs with A2 on A
      });
}

Latency index_and_data_rtt(const Settings& settings, bool with_fence) {
  auto data_ab = std::make_unique<SharedWord>();
  auto index_ab = std::make_unique<SharedWord>();
  auto data_ba = std::make_unique<SharedWord>();
  auto index_ba = std::make_unique<SharedWord>();
  auto wake_a = std::make_unique<SharedWord>();  // never written, as in steady polling
  auto wake_b = std::make_unique<SharedWord>();
  std::uint64_t a_sink = 0;  // one per thread: a shared sink would be a data race
  std::uint64_t b_sink = 0;
  // What RingProducer::publish() does after its release store: a full fence,
  // then a load of the consumer's wake_after line.
  const auto notify_check = [with_fence](const SharedWord& wake, std::uint64_t& sink) {
    if (!with_fence) return;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Relaxed: only the fence's cost is being measured; nothing is ordered.
    sink += wake.value.load(std::memory_order_relaxed);
  };
  const Latency latency = round_trips(
      settings,
      [&](std::uint64_t i) {
        // Relaxed data stores: published by the release store of the index.
        data_ab->value.store(i + 1, std::memory_order_relaxed);
        index_ab->value.store(i + 1, std::memory_order_release);  // R1: pairs with A1 on B
        notify_check(*wake_b, a_sink);
        while (index_ba->value.load(std::memory_order_acquire) != i + 1) {  // A2: pairs with R2
        }
        if (data_ba->value.load(std::memory_order_relaxed) != i + 1) fail("index+data: bad echo");
      },
      [&](std::uint64_t i) {
        while (index_ab->value.load(std::memory_order_acquire) != i + 1) {  // A1: pairs with R1
        }
        if (data_ab->value.load(std::memory_order_relaxed) != i + 1) fail("index+data: bad data");
        data_ba->value.store(i + 1, std::memory_order_relaxed);
        index_ba->value.store(i + 1, std::memory_order_release);  // R2: pairs with A2 on A
        notify_check(*wake_a, b_sink);
      });
  keep(a_sink + b_sink);
  return latency;
}

Latency ring_rtt(const Settings& settings, std::uint32_t payload_size, std::uint64_t capacity) {
  RingMemory forward_memory(capacity);
  RingMemory backward_memory(capacity);
  RingProducer a_out;
  RingProducer b_out;
  RingConsumer<> b_in;
  RingConsumer<> a_in;
  forward_memory.attach(a_out, b_in);
  backward_memory.attach(b_out, a_in);
  std::uint64_t a_sink = 0;
  std::uint64_t b_sink = 0;
  const Latency latency = round_trips(
      settings,
      [&](std::uint64_t i) {
        send(a_out, payload_size, i);
        receive(a_in, payload_size, i, a_sink);
      },
      [&](std::uint64_t i) {
        receive(b_in, payload_size, i, b_sink);
        send(b_out, payload_size, i);
      });
  keep(a_sink + b_sink);
  return latency;
}

}  // namespace cellink::bench
