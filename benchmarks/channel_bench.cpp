// channel_bench: what the message layer (Session and Channel over a
// LoopbackLink, linux-uio/) adds to a round trip, measured in one process on
// the same two pinned CPUs as its baselines:
//   1. polling: Channel ping-pong against two raw record rings (ring_rtt(),
//      the ring_bench row itself);
//   2. blocking (spin_budget 0): Channel ping-pong against two threads
//      ping-ponging a token through two eventfds with blocking read()/write();
//   3. Cap'n Proto: a telemetry Sample built in place with send_capnp() and
//      read with receive_capnp() against raw bytes of the same size;
//   4. one thread playing both sides: the instruction cost per message.
// The rows are in channel_latency.cpp. Run by hand; docs/benchmarks.md
// explains the report.
//
//   channel_bench [--quick] [--smoke] [--cost-only] [--cpus A,B]
//
// Every ratio and verdict is computed from figures measured in this run.
#include "channel_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace cellink::bench {
namespace {

constexpr std::uint32_t kRttSizes[] = {8, 64, 1024};
constexpr std::size_t kPrimarySize = 1;  // 64 B: the size the blocking section uses
constexpr double kTarget = 1.2;
// Telemetry samples of about 64 B and 1 KiB (section 3).
constexpr std::uint32_t kSampleTemperatures[] = {0, 240};
// Blocking round trips cost tens of microseconds: a tenth of the samples.
constexpr std::uint64_t kBlockingDivisor = 10;

struct Options {
  bool quick = false;
  bool smoke = false;
  bool cost_only = false;
  std::string cpus;
};

void print_header(const Options& options, const Settings& settings, const Latency& timer) {
  print_run_header({"channel_bench",
                    options.smoke   ? "smoke (figures mean nothing)"
                    : options.quick ? "quick"
                                    : "full",
                    "A/initiator", "B/echoer",
                    "ctxsw: involuntary context switches during a row. Each Session's progress "
                    "thread\n"
                    "       wakes every 20 ms and preempts a spinning thread: channel rows count a "
                    "few\n"
                    "       hundred even on an idle machine; thousands mean another task took a "
                    "CPU\n"},
                   settings, timer);
}

void print_columns() {
  std::printf("  %-40s %8s %8s %8s %8s %10s %8s %8s %6s\n", "ns", "p50", "p90", "p99", "p99.9",
              "max", "mean", "untimed", "ctxsw");
}

void print_row(const std::string& what, const Latency& latency) {
  std::printf("  %-40s %8.1f %8.1f %8.1f %8.1f %10.1f %8.1f %8.1f %6llu\n", what.c_str(),
              latency.p50, latency.p90, latency.p99, latency.p999, latency.max, latency.mean,
              latency.untimed, static_cast<unsigned long long>(latency.switches));
}

// "label: p50 X / Y = r, untimed X' / Y' = r' (target <= T for both:
// PASS|MISS); p90 and p99 ratios". A target of 0 means none is set. Both the
// p50 and the untimed ratio must pass: the two passes of a row run one after
// the other, so a row that a host vCPU move sped up for one pass only (a
// 2-vCPU guest sees this) cannot pass on that pass alone.
void print_ratio(const std::string& label, const Latency& x, const Latency& y, double target) {
  const double ratio = x.p50 / y.p50;
  const double untimed = x.untimed / y.untimed;
  std::string verdict = "no target";
  if (target > 0) {
    char text[64];
    std::snprintf(text, sizeof text, "target ≤ %.1f for both: %s", target,
                  ratio <= target && untimed <= target ? "PASS" : "MISS");
    verdict = text;
  }
  std::printf(
      "%-42s: p50 %.1f ns / %.1f ns = %.2fx, untimed %.1f ns / %.1f ns = %.2fx (%s); "
      "p90 %.2fx  p99 %.2fx",
      label.c_str(), x.p50, y.p50, ratio, x.untimed, y.untimed, untimed, verdict.c_str(),
      x.p90 / y.p90, x.p99 / y.p99);
  const std::uint64_t switches = x.switches + y.switches;
  if (switches != 0) {
    std::printf("  (disturbed: %llu ctxsw)", static_cast<unsigned long long>(switches));
  }
  std::printf("\n");
}

[[nodiscard]] std::string size_label(std::uint32_t bytes) {
  return bytes >= 1024 && bytes % 1024 == 0 ? std::to_string(bytes / 1024) + " KiB"
                                            : std::to_string(bytes) + " B";
}

struct PollingResults {
  Latency ring[std::size(kRttSizes)];
  Latency channel[std::size(kRttSizes)];  // send + receive (spinning inside receive)
  Latency single[std::size(kRttSizes)];   // the same, single-threaded Sessions
};

constexpr linux_uio::Threading kSingle = linux_uio::Threading::single;

PollingResults run_polling(const Settings& settings) {
  std::printf("\n== 1. Channel vs raw ring RTT, polling, %llu samples after %llu warm-up ==\n",
              static_cast<unsigned long long>(settings.rtt_samples),
              static_cast<unsigned long long>(settings.rtt_warmup));
  std::printf(
      "  ring: ring_bench's row (two 64 KiB rings, reserve/fill/commit/publish, peek/release).\n"
      "  channel: two Sessions over a LoopbackLink (64 KiB rings), channel 'bench', spin_budget\n"
      "  24 h; the sender fills the whole payload, the receiver reads one word per 64 bytes.\n"
      "  send: Channel::send() of a staged buffer; loan: loan(), fill in place, commit().\n"
      "  receive: receive() spinning inside; try_receive: a loop of try_receive().\n"
      "  single-threaded: both Sessions with Threading::single (no locks, no progress thread).\n");
  print_columns();
  PollingResults results;
  for (std::size_t i = 0; i < std::size(kRttSizes); ++i) {
    const std::uint32_t size = kRttSizes[i];
    const std::string bytes = size_label(size);
    results.ring[i] = ring_rtt(settings, size);
    print_row("ring " + bytes, results.ring[i]);
    results.channel[i] =
        channel_rtt(settings, kSpinForever, size, SendWith::send, ReceiveWith::receive);
    print_row("channel " + bytes + " send + receive", results.channel[i]);
    const Latency try_loop =
        channel_rtt(settings, kSpinForever, size, SendWith::send, ReceiveWith::try_receive);
    print_row("channel " + bytes + " send + try_receive", try_loop);
    const Latency loan =
        channel_rtt(settings, kSpinForever, size, SendWith::loan, ReceiveWith::receive);
    print_row("channel " + bytes + " loan + receive", loan);
    results.single[i] = channel_rtt(settings, kSpinForever, size, SendWith::send,
                                    ReceiveWith::receive, kChannelOutputSection, kSingle);
    print_row("channel " + bytes + " single-thr. Session", results.single[i]);
    print_ratio("  channel/ring " + bytes + " send+receive", results.channel[i], results.ring[i],
                kTarget);
    print_ratio("  channel/ring " + bytes + " single-threaded", results.single[i], results.ring[i],
                kTarget);
    print_ratio("  channel/ring " + bytes + " send+try_receive", try_loop, results.ring[i],
                kTarget);
    print_ratio("  channel/ring " + bytes + " loan+receive", loan, results.ring[i], kTarget);
  }
  return results;
}

struct BlockingResults {
  Latency eventfd;
  Latency channel;
  Latency single;  // single-threaded Sessions
};

BlockingResults run_blocking(const Settings& polling) {
  Settings settings = polling;
  settings.rtt_samples = std::max<std::uint64_t>(polling.rtt_samples / kBlockingDivisor, 100);
  settings.rtt_warmup = std::max<std::uint64_t>(polling.rtt_warmup / kBlockingDivisor, 10);
  const std::uint32_t size = kRttSizes[kPrimarySize];
  std::printf(
      "\n== 2. Blocking RTT: Channel (spin_budget 0) vs eventfd, %llu samples after %llu ==\n",
      static_cast<unsigned long long>(settings.rtt_samples),
      static_cast<unsigned long long>(settings.rtt_warmup));
  std::printf(
      "  eventfd: A write()s B's eventfd and read()s its own (blocking); B the reverse.\n"
      "  eventfd via epoll: each read() preceded by poll() on an epoll fd watching the eventfd,\n"
      "  the way a Session sleeps on a LoopbackDevice. channel: as in section 1 with\n"
      "  spin_budget 0: every receive() arms the ring and sleeps until the doorbell eventfd.\n");
  print_columns();
  BlockingResults results;
  results.eventfd = eventfd_rtt(settings, false);
  print_row("eventfd ping-pong", results.eventfd);
  const Latency through_epoll = eventfd_rtt(settings, true);
  print_row("eventfd ping-pong via epoll", through_epoll);
  results.channel = channel_rtt(settings, std::chrono::nanoseconds{0}, size, SendWith::send,
                                ReceiveWith::receive);
  print_row("channel " + size_label(size) + " send + receive, blocking", results.channel);
  results.single = channel_rtt(settings, std::chrono::nanoseconds{0}, size, SendWith::send,
                               ReceiveWith::receive, kChannelOutputSection, kSingle);
  print_row("channel " + size_label(size) + " blocking, single-thr.", results.single);
  print_ratio("  blocking channel/eventfd " + size_label(size), results.channel, results.eventfd,
              kTarget);
  print_ratio("  blocking single-threaded/eventfd", results.single, results.eventfd, kTarget);
  print_ratio("  eventfd via epoll/eventfd", through_epoll, results.eventfd, 0);
  return results;
}

struct CapnpResults {
  Latency raw[2];
  Latency capnp[2];
};

CapnpResults run_capnp(const Settings& settings) {
  const CapnpCase cases[2] = {{kSampleTemperatures[0], sample_bytes(kSampleTemperatures[0])},
                              {kSampleTemperatures[1], sample_bytes(kSampleTemperatures[1])}};
  std::printf("\n== 3. Cap'n Proto vs raw bytes of the same size, polling, %llu samples ==\n",
              static_cast<unsigned long long>(settings.rtt_samples));
  std::printf(
      "  capnp: send_capnp<Sample>() builds sequence, timestampNs, cell, status and N\n"
      "  temperatures in a loan; receive_capnp<Sample>() validates, the receiver reads every\n"
      "  field. raw: the same bytes written (8-byte sequence, then 4-byte elements) and read\n"
      "  back in full, sent with send() or written in place in a loan.\n");
  print_columns();
  CapnpResults results;
  for (std::size_t i = 0; i < std::size(cases); ++i) {
    const std::string shape = size_label(cases[i].bytes) + " (" +
                              std::to_string(cases[i].temperatures) + " temperatures)";
    results.raw[i] = sample_rtt(settings, cases[i], Encoding::raw_send);
    print_row("raw send " + shape, results.raw[i]);
    const Latency loan = sample_rtt(settings, cases[i], Encoding::raw_loan);
    print_row("raw loan " + shape, loan);
    results.capnp[i] = sample_rtt(settings, cases[i], Encoding::capnp);
    print_row("capnp " + shape, results.capnp[i]);
    print_ratio("  capnp/raw send " + size_label(cases[i].bytes), results.capnp[i], results.raw[i],
                0);
    print_ratio("  capnp/raw loan " + size_label(cases[i].bytes), results.capnp[i], loan, 0);
  }
  return results;
}

void run_cost(const Settings& settings) {
  std::printf("\n== 4. One thread plays both sides, one message in flight: cost per message ==\n");
  std::printf(
      "  channel: send() + receive() + release; ring: reserve, fill, commit, publish, peek,\n"
      "  read, release. No line crosses cores: the instruction cost the RTT pays twice.\n");
  for (const std::uint32_t size : kRttSizes) {
    const Cost cost = single_thread_cost(settings, size);
    std::printf("  %-7s channel %8.1f ns   ring %8.1f ns   channel - ring %8.1f ns\n",
                size_label(size).c_str(), cost.channel_ns, cost.ring_ns,
                cost.channel_ns - cost.ring_ns);
    const Cost single = single_thread_cost(settings, size, kSingle);
    std::printf("  %-7s single  %8.1f ns   ring %8.1f ns   single - ring  %8.1f ns\n",
                size_label(size).c_str(), single.channel_ns, single.ring_ns,
                single.channel_ns - single.ring_ns);
  }
  for (const std::uint32_t temperatures : kSampleTemperatures) {
    const CapnpCase shape{temperatures, sample_bytes(temperatures)};
    const double capnp = single_thread_sample_ns(settings, shape, Encoding::capnp);
    const double raw = single_thread_sample_ns(settings, shape, Encoding::raw_send);
    std::printf("  %-7s capnp   %8.1f ns   raw send %6.1f ns   capnp - raw %11.1f ns\n",
                size_label(shape.bytes).c_str(), capnp, raw, capnp - raw);
  }
}

void print_summary(const PollingResults& polling, const BlockingResults& blocking,
                   const CapnpResults& capnp) {
  std::printf("\n== Target checks (ratios from this run; PASS needs p50 and untimed) ==\n");
  for (std::size_t i = 0; i < std::size(kRttSizes); ++i) {
    print_ratio("channel/ring RTT " + size_label(kRttSizes[i]) + ", polling", polling.channel[i],
                polling.ring[i], kTarget);
    print_ratio("  single-threaded Sessions", polling.single[i], polling.ring[i], kTarget);
  }
  print_ratio("blocking channel/eventfd RTT " + size_label(kRttSizes[kPrimarySize]),
              blocking.channel, blocking.eventfd, kTarget);
  print_ratio("  single-threaded Sessions", blocking.single, blocking.eventfd, kTarget);
  print_ratio("capnp/raw RTT 64 B", capnp.capnp[0], capnp.raw[0], 0);
  print_ratio("capnp/raw RTT 1 KiB", capnp.capnp[1], capnp.raw[1], 0);
}

void print_usage(std::FILE* stream) {
  std::fputs(
      "usage: channel_bench [--quick] [--smoke] [--cost-only] [--cpus A,B]\n"
      "  --quick      1e5 polling round trips per row (blocking: 1e4)\n"
      "  --smoke      tiny counts: proves that it runs; the figures mean nothing\n"
      "  --cost-only  only section 4 (one thread), e.g. under valgrind --tool=callgrind\n"
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
      std::fprintf(stderr, "channel_bench: unknown argument '%s'\n", argv[i]);
      return false;
    }
  }
  return true;
}

int run(const Options& options) {
  Settings settings;
  std::string error;
  const auto cpus = choose_cpus(options.cpus, error);
  if (!cpus) {
    std::fprintf(stderr, "channel_bench: %s\n", error.c_str());
    return 2;
  }
  settings.cpus = *cpus;
  if (options.smoke) {
    settings.rtt_samples = 2'000;
    settings.rtt_warmup = 200;
  } else if (options.quick) {
    settings.rtt_samples = 100'000;
    settings.rtt_warmup = 10'000;
  } else {
    settings.rtt_samples = 1'000'000;
    settings.rtt_warmup = 100'000;
  }
  settings.clock.calibrate(options.smoke ? 20 : 200);
  const Latency timer = timer_overhead(settings);
  print_header(options, settings, timer);
  if (options.cost_only) {
    run_cost(settings);
    return 0;
  }
  const PollingResults polling = run_polling(settings);
  const BlockingResults blocking = run_blocking(settings);
  const CapnpResults capnp = run_capnp(settings);
  run_cost(settings);
  print_summary(polling, blocking, capnp);
  std::printf("\nload average at the end: %s\n", load_average().c_str());
  return 0;
}

}  // namespace
}  // namespace cellink::bench

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows as each row completes
  cellink::bench::set_program_name("channel_bench");
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
