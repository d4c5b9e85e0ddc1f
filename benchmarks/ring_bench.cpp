// ring_bench: latency and throughput of the cellink record ring against the
// physical limit (a cache line bouncing between two CPUs), boost::lockfree,
// DPDK rte_ring and memcpy, all in one process on the same two pinned CPUs.
// Run by hand; docs/benchmarks.md explains every line of the report.
//
//   ring_bench [--quick] [--smoke] [--cost-only] [--cpus A,B]
//
// Every ratio and PASS/MISS verdict is computed from figures measured in
// this run; nothing is compared against a stored number.
#include "ring_bench.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace cellink::bench {
namespace {

constexpr std::size_t KiB = 1024;

struct Options {
  bool quick = false;
  bool smoke = false;
  bool cost_only = false;
  std::string cpus;
};

// A record size of the throughput section and the byte capacity every
// queue gets for it (for the ring: its data area).
struct SizeCase {
  std::size_t record_size;
  std::size_t capacity;
  std::uint64_t records;  // in a full run
};
constexpr SizeCase kSizeCases[] = {
    {64, 64 * KiB, 10'000'000}, {4 * KiB, 256 * KiB, 1'000'000}, {64 * KiB, 1024 * KiB, 100'000}};
constexpr Workload kWorkloads[] = {Workload::touch, Workload::fill, Workload::handoff};
constexpr std::uint32_t kRttSizes[] = {8, 64, 1024};

enum Queue : std::size_t { kCellink, kBoost, kRteRing, kQueues };
constexpr const char* kQueueNames[kQueues] = {"cellink ring (zero copy)", "boost spsc_queue (copy)",
                                              "rte_ring (pointers)"};

struct RateStats {
  double median = 0, min = 0, max = 0;  // records per second
  std::uint64_t switches = 0;           // involuntary context switches, all runs
  bool measured = false;
};

struct Results {
  Latency timer;
  Latency cacheline;
  Latency index_and_data;
  Latency index_data_fence;
  Latency ring[std::size(kRttSizes)];
  RateStats rates[std::size(kSizeCases)][std::size(kWorkloads)][kQueues];
  RateStats copies[std::size(kSizeCases)];
  double ring_ns = 0;
  double boost_ns = 0;
};

// Collects the rate of each run of `measure` and the context switches
// during them.
class RateSamples {
 public:
  template <typename Measure>
  void add(Measure measure) {
    const std::uint64_t before = involuntary_switches();
    rates_.push_back(measure());
    switches_ += involuntary_switches() - before;
  }
  [[nodiscard]] bool empty() const noexcept { return rates_.empty(); }
  [[nodiscard]] RateStats summarize() {
    std::sort(rates_.begin(), rates_.end());
    return {rates_[rates_.size() / 2], rates_.front(), rates_.back(), switches_, true};
  }

 private:
  std::vector<double> rates_;
  std::uint64_t switches_ = 0;
};

[[nodiscard]] std::string bytes(std::size_t count) {
  if (count >= KiB * KiB && count % (KiB * KiB) == 0) return std::to_string(count >> 20) + " MiB";
  if (count >= KiB && count % KiB == 0) return std::to_string(count >> 10) + " KiB";
  return std::to_string(count) + " B";
}

[[nodiscard]] double gigabytes(const RateStats& stats, std::size_t record_size) {
  return stats.median * static_cast<double>(record_size) * 1e-9;
}

// A note for a verdict whose inputs ran while another task held our CPUs.
[[nodiscard]] std::string disturbance(std::uint64_t switches) {
  if (switches == 0) return "";
  return "  (disturbed: " + std::to_string(switches) + " context switches in its rows)";
}

[[nodiscard]] const char* verdict(bool pass) {
  return pass ? "PASS" : "MISS";
}

void print_usage(std::FILE* stream) {
  std::fputs(
      "usage: ring_bench [--quick] [--smoke] [--cost-only] [--cpus A,B]\n"
      "  --quick      1e5 round trips and a tenth of the records\n"
      "  --smoke      tiny counts: proves that it runs; the figures mean nothing\n"
      "  --cost-only  only section 3 (one thread), e.g. under valgrind --tool=callgrind\n"
      "  --cpus A,B   the two CPUs to pin to (default: the first two allowed)\n",
      stream);
}

[[nodiscard]] bool parse(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument == "--quick") {
      options.quick = true;
    } else if (argument == "--smoke") {
      options.smoke = true;
    } else if (argument == "--cost-only") {
      options.cost_only = true;
    } else if (argument == "--cpus" && i + 1 < argc) {
      options.cpus = argv[++i];
    } else if (argument.rfind("--cpus=", 0) == 0) {
      options.cpus = argument.substr(7);
    } else {
      std::fprintf(stderr, "ring_bench: unknown argument '%s'\n", argv[i]);
      return false;
    }
  }
  return true;
}

void configure(const Options& options, Settings& settings) {
  if (options.smoke) {
    settings.rtt_samples = 2'000;
    settings.rtt_warmup = 200;
    settings.divisor = 1'000;
  } else if (options.quick) {
    settings.rtt_samples = 100'000;
    settings.rtt_warmup = 10'000;
    settings.repetitions = 3;
    settings.divisor = 10;
  } else {
    settings.rtt_samples = 1'000'000;
    settings.rtt_warmup = 100'000;
    settings.repetitions = 3;
  }
  settings.clock.calibrate(options.smoke ? 20 : 200);
}

void print_header(const Options& options, const Settings& settings, const Latency& timer) {
  print_run_header(
      {"ring_bench",
       options.smoke   ? "smoke (figures mean nothing)"
       : options.quick ? "quick"
                       : "full",
       "A/producer", "B/consumer",
       "ctxsw: involuntary context switches during a row: another task ran on one of "
       "our CPUs\n"
       "       while a peer spun; the more there are, the more the row was disturbed\n"},
      settings, timer);
}

void print_latency_row(const std::string& what, const Latency& latency) {
  std::printf("  %-34s %8.1f %8.1f %8.1f %8.1f %10.1f %8.1f %8.1f %6llu\n", what.c_str(),
              latency.p50, latency.p90, latency.p99, latency.p999, latency.max, latency.mean,
              latency.untimed, static_cast<unsigned long long>(latency.switches));
}

// Ratio of two round trips, with one timer overhead taken off each.
[[nodiscard]] double corrected(double ring, double cacheline, const Latency& timer) {
  return (ring - timer.p50) / (cacheline - timer.p50);
}

void print_ratio(const std::string& label, const Latency& rtt, const Results& results) {
  const Latency& line = results.cacheline;
  std::printf(
      "%-40s: p50 %.2fx  p99 %.2fx  (timer removed: p50 %.2fx  p99 %.2fx; "
      "untimed %.2fx)\n",
      label.c_str(), rtt.p50 / line.p50, rtt.p99 / line.p99,
      corrected(rtt.p50, line.p50, results.timer), corrected(rtt.p99, line.p99, results.timer),
      rtt.untimed / line.untimed);
}

void run_round_trips(const Settings& settings, Results& results) {
  std::printf("\n== 1. Round-trip time (RTT), polling, %llu samples after %llu warm-up ==\n",
              static_cast<unsigned long long>(settings.rtt_samples),
              static_cast<unsigned long long>(settings.rtt_warmup));
  std::printf(
      "  percentiles time each round trip (timer overhead included); 'untimed': another\n"
      "  %llu round trips timed in blocks of 1000, mean of the median block (no timer\n"
      "  overhead). Ring: %s per direction; the sender fills the whole payload, the\n"
      "  receiver reads one word per 64 bytes.\n",
      static_cast<unsigned long long>(settings.rtt_samples), bytes(kRttRingCapacity).c_str());
  std::printf("  %-34s %8s %8s %8s %8s %10s %8s %8s %6s\n", "ns", "p50", "p90", "p99", "p99.9",
              "max", "mean", "untimed", "ctxsw");
  results.cacheline = cacheline_rtt(settings);
  print_latency_row("cache-line ping-pong (1 line/dir)", results.cacheline);
  results.index_and_data = index_and_data_rtt(settings, false);
  print_latency_row("index+data ping-pong (2 lines/dir)", results.index_and_data);
  results.index_data_fence = index_and_data_rtt(settings, true);
  print_latency_row("index+data+fence (publish pattern)", results.index_data_fence);
  for (std::size_t i = 0; i < std::size(kRttSizes); ++i) {
    results.ring[i] = ring_rtt(settings, kRttSizes[i]);
    print_latency_row("cellink ring ping-pong " + std::to_string(kRttSizes[i]) + " B",
                      results.ring[i]);
  }
  for (std::size_t i = 0; i < std::size(kRttSizes); ++i) {
    print_ratio("ratio ring_rtt/cacheline_rtt " + std::to_string(kRttSizes[i]) + " B",
                results.ring[i], results);
  }
  print_ratio("ratio index+data/cacheline_rtt", results.index_and_data, results);
  print_ratio("ratio index+data+fence/cacheline_rtt", results.index_data_fence, results);
}

void print_rate_row(std::size_t record_size, std::size_t capacity, const char* queue,
                    const char* workload, const RateStats& stats) {
  std::printf("  %-7s %-8s %-25s %-8s %9.3f %8.2f  %8.3f..%-8.3f %6llu\n",
              bytes(record_size).c_str(), bytes(capacity).c_str(), queue, workload,
              stats.median * 1e-6, gigabytes(stats, record_size), stats.min * 1e-6,
              stats.max * 1e-6, static_cast<unsigned long long>(stats.switches));
}

void run_streaming(const Settings& settings, Results& results) {
  std::printf("\n== 2. Throughput: producer on CPU %d, consumer on CPU %d; median of %u runs ==\n",
              settings.cpus.first, settings.cpus.second, settings.repetitions);
  std::printf(
      "  touch: producer writes one 8-byte word per 64 payload bytes, consumer reads one\n"
      "  fill: producer memsets the whole payload, consumer reads one word per 64 bytes\n"
      "  handoff: producer writes and consumer reads only the first word\n"
      "  cellink: reserve, write in place, commit; publish every %u records or when full\n"
      "  boost: spsc_queue of 64-byte aligned N-byte elements; push copies a staged element\n"
      "  GB/s counts payload bytes, 1 GB = 1e9 bytes\n",
      kPublishBatch);
  if (rte_ring_available()) {
    std::printf("  rte_ring: %s, pointers to pooled buffers written in place, bursts of %u\n",
                rte_ring_version(), kPublishBatch);
  } else {
    std::printf("  rte_ring: %s\n", rte_ring_version());
  }
  std::printf("  %-7s %-8s %-25s %-8s %9s %8s  %-18s %6s\n", "record", "capacity", "queue",
              "workload", "Mrec/s", "GB/s", "Mrec/s min..max", "ctxsw");
  for (std::size_t s = 0; s < std::size(kSizeCases); ++s) {
    const SizeCase& size = kSizeCases[s];
    const std::uint64_t records = std::max<std::uint64_t>(size.records / settings.divisor, 100);
    for (std::size_t w = 0; w < std::size(kWorkloads); ++w) {
      const StreamCase stream{size.record_size, size.capacity, kWorkloads[w], records,
                              std::max<std::uint64_t>(records / 10, 1)};
      // Runs interleave the queues, so that a noisy second hurts them alike.
      RateSamples samples[kQueues];
      for (unsigned r = 0; r < settings.repetitions; ++r) {
        samples[kCellink].add([&] { return cellink_ring_rate(settings, stream); });
        samples[kBoost].add([&] { return boost_spsc_rate(settings, stream); });
        if (rte_ring_available()) {
          samples[kRteRing].add([&] { return rte_ring_rate(settings, stream); });
        }
      }
      for (std::size_t q = 0; q < kQueues; ++q) {
        if (samples[q].empty()) continue;
        results.rates[s][w][q] = samples[q].summarize();
        print_rate_row(size.record_size, size.capacity, kQueueNames[q], name(kWorkloads[w]),
                       results.rates[s][w][q]);
      }
    }
    const StreamCase copy{size.record_size, size.capacity, Workload::fill, records * 4,
                          records / 2};
    RateSamples samples;
    for (unsigned r = 0; r < settings.repetitions; ++r) {
      samples.add([&] { return memcpy_rate(settings, copy); });
    }
    results.copies[s] = samples.summarize();
    print_rate_row(size.record_size, size.capacity, "memcpy, one thread", "copy",
                   results.copies[s]);
  }
}

void run_cost(const Settings& settings, Results& results) {
  const std::uint64_t records = 10'000'000 / settings.divisor;
  const StreamCase stream{64, 64 * KiB, Workload::touch,
                          (records + kPublishBatch - 1) / kPublishBatch * kPublishBatch, 0};
  results.ring_ns = single_thread_ring_ns(settings, stream);
  results.boost_ns = single_thread_boost_ns(settings, stream);
  std::printf(
      "\n== 3. One thread plays both sides, 64 B touch, batches of %u: cost per record ==\n",
      kPublishBatch);
  std::printf("  cellink ring: reserve, commit, publish per batch; peek, release  %6.2f ns\n",
              results.ring_ns);
  std::printf("  boost spsc_queue: push, consume_one                              %6.2f ns\n",
              results.boost_ns);
}

void print_summary(const Results& results) {
  constexpr std::size_t kTouch = 0;
  std::printf("\n== 4. Summary (touch workload, medians) ==\n");
  std::printf("  %-28s", "");
  for (const SizeCase& size : kSizeCases) std::printf(" %21s", bytes(size.record_size).c_str());
  std::printf("\n");
  for (std::size_t q = 0; q <= kQueues; ++q) {
    std::printf("  %-28s", q == kQueues ? "memcpy, one thread" : kQueueNames[q]);
    for (std::size_t s = 0; s < std::size(kSizeCases); ++s) {
      const RateStats& stats = q == kQueues ? results.copies[s] : results.rates[s][kTouch][q];
      if (!stats.measured) {
        std::printf(" %21s", "-");
        continue;
      }
      std::printf(" %7.3f Mr/s %6.2f GB/s", stats.median * 1e-6,
                  gigabytes(stats, kSizeCases[s].record_size));
    }
    std::printf("\n");
  }
  std::printf("  %-28s", "RTT p50 / p99, ns");
  for (std::size_t i = 0; i < std::size(kRttSizes); ++i) {
    std::printf("  %u B %.0f / %.0f", kRttSizes[i], results.ring[i].p50, results.ring[i].p99);
  }
  std::printf("  cache line %.0f / %.0f\n", results.cacheline.p50, results.cacheline.p99);
  std::printf("  %-28s  cellink %.2f ns, boost %.2f ns\n", "one-thread cost per record",
              results.ring_ns, results.boost_ns);

  std::printf("\n== Target checks (ratios from this run) ==\n");
  const Latency& ring64 = results.ring[1];
  const double raw = ring64.p50 / results.cacheline.p50;
  const double without_timer = corrected(ring64.p50, results.cacheline.p50, results.timer);
  std::printf(
      "[%s] 64 B polling RTT <= 1.5x cache-line RTT (p50): %.1f ns / %.1f ns = %.2fx, "
      "%.2fx with the timer removed (both must pass)%s\n",
      verdict(raw <= 1.5 && without_timer <= 1.5), ring64.p50, results.cacheline.p50, raw,
      without_timer, disturbance(ring64.switches + results.cacheline.switches).c_str());
  const double ring_rate = results.rates[0][kTouch][kCellink].median;
  const double boost_rate = results.rates[0][kTouch][kBoost].median;
  std::printf(
      "[%s] 64 B throughput >= 20 Mrec/s and >= boost::lockfree (touch): %.2f Mrec/s = "
      "%.2fx of 20 Mrec/s, %.2fx of boost's %.2f Mrec/s%s\n",
      verdict(ring_rate >= 20e6 && ring_rate >= boost_rate), ring_rate * 1e-6, ring_rate / 20e6,
      ring_rate / boost_rate, boost_rate * 1e-6,
      disturbance(results.rates[0][kTouch][kCellink].switches +
                  results.rates[0][kTouch][kBoost].switches)
          .c_str());
  const std::size_t large = std::size(kSizeCases) - 1;
  const double copy = gigabytes(results.copies[large], kSizeCases[large].record_size);
  for (std::size_t w = 0; w < std::size(kWorkloads); ++w) {
    const RateStats& zero_copy = results.rates[large][w][kCellink];
    const double ring = gigabytes(zero_copy, kSizeCases[large].record_size);
    std::printf("[%s] zero-copy 64 KiB (%s) GB/s >= memcpy 64 KiB GB/s: %.2f / %.2f = %.2fx%s\n",
                verdict(ring >= copy), name(kWorkloads[w]), ring, copy, ring / copy,
                disturbance(zero_copy.switches + results.copies[large].switches).c_str());
  }
}

int run(const Options& options) {
  Settings settings;
  std::string error;
  const auto cpus = choose_cpus(options.cpus, error);
  if (!cpus) {
    std::fprintf(stderr, "ring_bench: %s\n", error.c_str());
    return 2;
  }
  settings.cpus = *cpus;
  configure(options, settings);
  Results results;
  results.timer = timer_overhead(settings);
  print_header(options, settings, results.timer);
  if (options.cost_only) {
    run_cost(settings, results);
    return 0;
  }
  run_round_trips(settings, results);
  run_streaming(settings, results);
  run_cost(settings, results);
  print_summary(results);
  std::printf("\nload average at the end: %s\n", load_average().c_str());
  return 0;
}

}  // namespace
}  // namespace cellink::bench

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows as each row completes
  cellink::bench::Options options;
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    cellink::bench::print_usage(stdout);
    return 0;
  }
  if (!cellink::bench::parse(argc, argv, options)) {
    cellink::bench::print_usage(stderr);
    return 2;
  }
  return cellink::bench::run(options);
}
