// The measurements ring_bench runs, one function per row of its report.
// latency.cpp holds the round trips, throughput.cpp the streaming rows for
// the cellink ring, boost::lockfree and memcpy, rte_ring.cpp the DPDK row.
//
// Every function runs on the caller's thread, starts its own two pinned
// threads where it needs them, and aborts with a message if a queue loses,
// duplicates or reorders a record: a broken queue never yields a figure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "cellink/transports/ring_consumer.hpp"
#include "cellink/transports/ring_producer.hpp"
#include "harness.hpp"
#include "workload.hpp"

namespace cellink::bench {

struct Settings {
  CpuPair cpus;
  TickClock clock;
  std::uint64_t rtt_samples = 0;  // round trips recorded per row
  std::uint64_t rtt_warmup = 0;   // round trips run first and not recorded
  unsigned repetitions = 1;       // throughput runs per row; the median is reported
  std::uint64_t divisor = 1;      // divides the throughput record counts (quick, smoke)
  bool untimed_pass = true;       // round trips: also run the pass timed in blocks
};

// One ring's memory as two cells see it: the producer area and the consumer
// area each start on their own page, as they would in two output sections.
class RingMemory {
 public:
  static constexpr std::size_t kPage = 4096;

  explicit RingMemory(std::uint64_t capacity)
      : producer_bytes_(transports::kProducerAreaOverhead + capacity),
        buffer_(page_round(producer_bytes_) + kPage, kPage) {}

  // Initialises `producer` and `consumer` on this memory; aborts on failure.
  template <typename Consumer>
  void attach(transports::RingProducer& producer, Consumer& consumer) {
    const std::span<std::byte> producer_area{buffer_.data(), producer_bytes_};
    const std::span<std::byte> consumer_area{buffer_.data() + page_round(producer_bytes_),
                                             transports::kConsumerAreaSize};
    if (!producer.init(producer_area, consumer_area) ||
        !consumer.init(producer_area, consumer_area)) {
      fail("ring init failed for a %zu-byte producer area", producer_bytes_);
    }
  }

 private:
  [[nodiscard]] static std::size_t page_round(std::size_t bytes) noexcept {
    return (bytes + kPage - 1) / kPage * kPage;
  }
  std::size_t producer_bytes_;
  AlignedBuffer buffer_;
};

// Round trips in nanoseconds. The percentiles time each round trip and so
// include one timer overhead (timer_overhead().p50). `untimed` comes from a
// second pass timed in blocks of 1000 round trips: the median block's mean,
// free of timer overhead.
struct Latency {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, p9999 = 0, max = 0, mean = 0;
  double untimed = 0;
  std::uint64_t switches = 0;  // involuntary context switches during both passes
  // The timed round trips' distribution in ticks (for CDF plots); null for
  // figures that do not come from round_trips().
  std::shared_ptr<const Histogram> histogram;
};

// What print_run_header() says about the run.
struct RunHeader {
  const char* program;      // "ring_bench"
  const char* mode;         // "full", "quick", "smoke (figures mean nothing)"
  const char* first_role;   // the thread on cpus.first, e.g. "A/producer"
  const char* second_role;  // the thread on cpus.second
  const char* ctxsw_note;   // how to read the ctxsw column, ending in a newline
};

// /proc/cpuinfo's first "model name", or "unknown CPU".
[[nodiscard]] std::string cpu_model();

// Prints the benchmark's header: program, machine, pinning, build, clock.
void print_run_header(const RunHeader& header, const Settings& settings, const Latency& timer);

[[nodiscard]] Latency timer_overhead(const Settings& settings);
// Two atomics on separate cache lines: write n, wait for the echo of n.
[[nodiscard]] Latency cacheline_rtt(const Settings& settings);
// The floor for any ring with a separate index: per direction, a data line
// is written, then an index line, and the reader needs both. `with_fence`
// adds what publish() adds: a seq_cst fence and a load of a wake-up line.
[[nodiscard]] Latency index_and_data_rtt(const Settings& settings, bool with_fence);
// Two cellink rings (A->B, B->A), polling; each side fills the whole
// payload and the receiver reads one word per 64 bytes of it.
inline constexpr std::uint64_t kRttRingCapacity = std::uint64_t{64} * 1024;
// `capacity` bytes per ring: at least four times the payload (a record may
// take half the ring).
[[nodiscard]] Latency ring_rtt(const Settings& settings, std::uint32_t payload_size,
                               std::uint64_t capacity = kRttRingCapacity);

// One streaming row: `records` records of `record_size` payload bytes through
// a queue of `capacity` bytes; the first `warmup` records are not timed.
struct StreamCase {
  std::size_t record_size = 0;
  std::size_t capacity = 0;
  Workload workload = Workload::touch;
  std::uint64_t records = 0;
  std::uint64_t warmup = 0;
};
inline constexpr std::uint32_t kPublishBatch = 32;

// Each returns records per second of one run, timed on the consumer.
[[nodiscard]] double cellink_ring_rate(const Settings& settings, const StreamCase& stream);
[[nodiscard]] double boost_spsc_rate(const Settings& settings, const StreamCase& stream);
[[nodiscard]] bool rte_ring_available() noexcept;
[[nodiscard]] const char* rte_ring_version() noexcept;
// Requires rte_ring_available().
[[nodiscard]] double rte_ring_rate(const Settings& settings, const StreamCase& stream);
// Round trips of one buffer per side passed by pointer on two SP/SC rings;
// the sender fills the whole payload, the receiver reads one word per 64
// bytes. Requires rte_ring_available().
[[nodiscard]] Latency rte_ring_rtt(const Settings& settings, std::size_t payload_size);
// One thread copying `record_size`-byte records into a `capacity`-byte area.
[[nodiscard]] double memcpy_rate(const Settings& settings, const StreamCase& stream);

// One thread playing both sides, batches of kPublishBatch records, so no
// cache line crosses cores: the pure instruction cost, ns per record.
[[nodiscard]] double single_thread_ring_ns(const Settings& settings, const StreamCase& stream);
[[nodiscard]] double single_thread_boost_ns(const Settings& settings, const StreamCase& stream);

}  // namespace cellink::bench
