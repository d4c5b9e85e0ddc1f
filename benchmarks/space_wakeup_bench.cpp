// space_wakeup_bench: throughput of a sender that blocks on a full credit
// window, against a reader that releases in bursts, with the two ways a
// blocked sender can learn that room came back (docs/benchmarks.md,
// "Space-freed wake-up"):
//   (a) space-freed doorbell: Channel::send(message, long timeout), the
//       library's blocking send: it spins for spin_budget, then asks the
//       receiver for a doorbell (WakeLine::space_wanted) and sleeps on the
//       device until the receiver's release rings it;
//   (b) nap loop (previous behaviour): Channel::send(message, kNoWait) and,
//       on would_block, the algorithm the library used before the doorbell
//       (SpaceWait in linux-uio/src/channel.cpp at commit c13fa83),
//       reimplemented here: spin for the same spin_budget, then sleep in
//       doubling naps from 10 us to 1 ms, processing device events after
//       each nap, and try again.
// Both run in one process, in one run, on the same two pinned CPUs: two
// Sessions over a LoopbackLink, a sender thread (cpus.first) and a reader
// thread (cpus.second). The reader receives a burst of messages, holding
// each (so their credit stays out), releases them back-to-back, then pauses;
// by default a burst is the whole credit window, so the sender is blocked
// whenever the reader releases.
//
//   space_wakeup_bench [--quick] [--cpus A,B] [--messages N] [--runs R]
//                      [--size B] [--window B] [--burst N] [--pause-us U]
//                      [--pause-sleep] [--spin-us U] [--timeout-s S]
//
// Every message carries its sequence number and is checked: a lost,
// duplicated or reordered message, or a blocking send or receive that does
// not complete within --timeout-s, aborts the run with what both sides saw.
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/transports/channel_credit.hpp"
#include "cellink/transports/link_format.hpp"
#include "cellink/transports/ring_format.hpp"
#include "channel_bench.hpp"
#include "harness.hpp"
#include "workload.hpp"

namespace cellink::bench {
namespace {

using linux_uio::Channel;
using linux_uio::Message;
using linux_uio::MessageErrc;
using Clock = std::chrono::steady_clock;

// The previous algorithm's naps (kMaxSpaceNap and the first nap of the old
// SpaceWait in linux-uio/src/channel.cpp).
constexpr std::chrono::microseconds kFirstNap{10};
constexpr std::chrono::microseconds kMaxNap{1000};
// 128 KiB output sections: 64 KiB rings, as channel_bench's; the credit
// window, not the ring, is what fills.
constexpr std::uint64_t kOutputSection = kChannelOutputSection;
constexpr std::uint64_t kRingCapacity = kRttRingCapacity;
static_assert([] {
  transports::LinkGeometry geometry;
  return transports::LinkGeometry::compute(2, kOutputSection, geometry) &&
         geometry.ring_capacity_bytes() == kRingCapacity;
}());

// A run during which other processes (or the hypervisor) used more than
// this much of a CPU is flagged in the summary.
constexpr double kDisturbedPercent = 5.0;

enum class Mode : std::uint8_t { doorbell, naps };

[[nodiscard]] const char* label(Mode mode) noexcept {
  return mode == Mode::doorbell ? "(a) space-freed doorbell" : "(b) nap loop (previous)";
}

struct Options {
  bool quick = false;
  std::string cpus;
  std::uint64_t messages = 0;  // 0: 300000, --quick 20000
  unsigned runs = 0;           // 0: 3, --quick 1
  std::uint32_t size = 128;
  std::uint32_t window = 4096;
  std::uint32_t burst = 0;  // 0: the whole window
  std::uint32_t pause_us = 100;
  bool pause_sleeps = false;
  std::chrono::nanoseconds spin_budget = linux_uio::kDefaultSpinBudget;
  std::uint32_t timeout_s = 10;
};

// What both runs use, derived from Options.
struct Plan {
  std::uint32_t size = 0;
  std::uint32_t window = 0;
  std::uint64_t stride = 0;           // credit per message
  std::uint32_t window_messages = 0;  // how many fit the window
  std::uint32_t burst = 0;
  std::chrono::microseconds pause{0};
  bool pause_sleeps = false;
  std::chrono::nanoseconds spin_budget{0};
  std::chrono::nanoseconds timeout{0};
  std::uint64_t messages = 0;
  std::uint64_t warmup = 0;  // a multiple of burst
  unsigned runs = 0;
};

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

[[nodiscard]] double thread_cpu_seconds() noexcept {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// CPU time this process and the rest of the machine used, to tell a run
// that other tasks disturbed (the two measured threads share their CPUs
// with whatever else runs).
struct CpuUse {
  double busy = 0;   // seconds of every CPU not idle (steal excluded), from /proc/stat
  double steal = 0;  // seconds the hypervisor ran something else on our vCPUs
  double self = 0;   // this process's user + system seconds

  [[nodiscard]] static CpuUse now() {
    CpuUse use;
    std::ifstream stat("/proc/stat");
    std::string cpu;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                       steal = 0;
    if (stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) {
      const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
      use.busy = static_cast<double>(user + nice + system + irq + softirq) / hz;
      use.steal = static_cast<double>(steal) / hz;
    }
    rusage usage{};
    if (::getrusage(RUSAGE_SELF, &usage) == 0) {
      use.self = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                 static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
    }
    return use;
  }
};

// Two Sessions over one LoopbackLink, channel "space" open and connected:
// the sender is peer 0, the reader peer 1. Both use the same options (the
// reader's credit_window is the one the sender sees).
class Pair {
 public:
  explicit Pair(const Plan& plan)
      : link_(2, kOutputSection),
        sender_session_(link_.device(0), options(plan)),
        reader_session_(link_.device(1), options(plan)),
        tx_(sender_session_.open("space")),
        rx_(reader_session_.open("space")) {
    std::error_code rx_error;
    std::thread rx_waits([&] { rx_error = rx_.wait_connected(std::chrono::seconds{5}); });
    const std::error_code tx_error = tx_.wait_connected(std::chrono::seconds{5});
    rx_waits.join();
    if (tx_error || rx_error) fail("channel 'space' did not connect within 5 s");
  }

  [[nodiscard]] Channel& tx() noexcept { return tx_; }
  [[nodiscard]] Channel& rx() noexcept { return rx_; }
  [[nodiscard]] linux_uio::Session& sender() noexcept { return sender_session_; }
  [[nodiscard]] linux_uio::Session& reader() noexcept { return reader_session_; }

 private:
  [[nodiscard]] static linux_uio::SessionOptions options(const Plan& plan) {
    linux_uio::SessionOptions options;
    options.spin_budget = plan.spin_budget;
    options.credit_window = plan.window;
    return options;
  }
  linux_uio::LoopbackLink link_;
  linux_uio::Session sender_session_;
  linux_uio::Session reader_session_;
  Channel tx_;
  Channel rx_;
};

// What the two threads share, for the wake-up delay and for the report
// when something hangs.
struct Shared {
  alignas(64) std::atomic<std::uint64_t> release_tick{0};  // the reader's latest burst release
  alignas(64) std::atomic<std::uint64_t> sent{0};
  alignas(64) std::atomic<std::uint64_t> received{0};
  alignas(64) std::atomic<std::uint64_t> released{0};
};

struct RunResult {
  double seconds = 0;           // reader: from the warm-up boundary to the last release
  std::uint64_t timed = 0;      // messages in that interval
  std::uint64_t blocked = 0;    // timed sends whose kNoWait attempt found no room
  std::uint64_t naps = 0;       // (b): sleeps of the nap loop in timed sends
  std::uint64_t doorbells = 0;  // reader Session's space_doorbells over the timed interval
  double wake_p50_us = 0;       // blocked send: from room coming back to the send returning
  double wake_p99_us = 0;
  double wake_max_us = 0;
  double sender_cpu = 0;        // sender thread CPU time / wall time, timed section
  double rx_wait_us = 0;        // reader: mean time to collect a burst
  double release_first_us = 0;  // reader: mean time of a burst's first release (the one
                                // that rings a doorbell the sender asked for)
  double release_rest_us = 0;   // reader: mean time of the burst's other releases together
  std::uint64_t switches = 0;   // involuntary context switches, whole run
  double others = 0;            // CPU other processes used during the run, % of one CPU
  double steal = 0;             // steal time during the run, % of one CPU

  [[nodiscard]] double rate() const noexcept { return static_cast<double>(timed) / seconds; }
};

std::string session_report(linux_uio::Session& session) {
  const linux_uio::SessionStats stats = session.stats();
  char text[512];
  std::snprintf(text, sizeof text,
                "doorbells_rung %llu, space_doorbells %llu, spilled_records %llu, "
                "protocol_faults %llu, dropped_undelivered %llu, unroutable %llu",
                static_cast<unsigned long long>(stats.doorbells_rung),
                static_cast<unsigned long long>(stats.space_doorbells),
                static_cast<unsigned long long>(stats.spilled_records),
                static_cast<unsigned long long>(stats.protocol_faults),
                static_cast<unsigned long long>(stats.dropped_undelivered),
                static_cast<unsigned long long>(stats.unroutable));
  std::string report = text;
  const std::string diagnostic = session.diagnostic();
  if (!diagnostic.empty()) report += "; diagnostic: " + diagnostic;
  return report;
}

// A blocking call that failed or did not complete in time: everything both
// sides saw, then abort (a misbehaving send must not yield a figure).
[[noreturn]] void report_failure(Mode mode, const char* what, std::uint64_t sequence,
                                 std::error_code error, Clock::duration waited, Shared& shared,
                                 Pair& pair) {
  const std::string sender = session_report(pair.sender());
  const std::string reader = session_report(pair.reader());
  fail(
      "%s: %s of message %llu failed: %s after %.3f s.\n"
      "  sender thread: %llu messages sent; reader thread: %llu received, %llu released\n"
      "  sender Session: %s\n"
      "  reader Session: %s",
      label(mode), what, static_cast<unsigned long long>(sequence), error.message().c_str(),
      std::chrono::duration<double>(waited).count(),
      static_cast<unsigned long long>(shared.sent.load()),
      static_cast<unsigned long long>(shared.received.load()),
      static_cast<unsigned long long>(shared.released.load()), sender.c_str(), reader.c_str());
}

// (b): the previous SpaceWait::wait(), on top of kNoWait sends. Spins (16 pauses per
// round) until spin_budget has passed since the send began, then sleeps
// 10 us, 20 us, ... up to 1 ms per nap, processing device events after each
// (the old code called Core::process_events_locked() under the Session's
// lock, which is what Channel::process_events() does).
std::error_code send_napping(Channel& channel, std::span<const std::byte> message, const Plan& plan,
                             std::uint64_t& naps) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point spin_until = start + plan.spin_budget;
  const Clock::time_point deadline = start + plan.timeout;
  std::chrono::microseconds nap = kFirstNap;
  for (;;) {
    const std::error_code error = channel.send(message, linux_uio::kNoWait);
    if (error != MessageErrc::would_block) return error;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return make_error_code(MessageErrc::timed_out);
    if (now < spin_until) {
      for (int i = 0; i < 16; ++i) cpu_relax();
      continue;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(nap, deadline - now));
    nap = std::min(nap * 2, kMaxNap);
    ++naps;
    (void)channel.process_events();
  }
}

RunResult run_once(const Settings& settings, const Plan& plan, Mode mode) {
  Pair pair(plan);
  Shared shared;
  RunResult result;
  auto wake = std::make_unique<Histogram>();
  AlignedBuffer staging(plan.size, 64);
  const std::uint64_t switches_before = involuntary_switches();
  const CpuUse use_before = CpuUse::now();
  const Clock::time_point wall_before = Clock::now();

  std::uint64_t rx_begin = 0, rx_end = 0, rx_collect_ticks = 0;
  std::uint64_t rx_first_ticks = 0, rx_rest_ticks = 0;
  std::uint64_t rx_bursts = 0;
  std::uint64_t doorbells_before = 0, doorbells_after = 0;
  std::uint64_t tx_begin = 0, tx_end = 0;
  double tx_cpu_begin = 0, tx_cpu_end = 0;
  std::uint64_t sink = 0;
  StartGate gate;

  const auto sender = [&] {
    Channel& tx = pair.tx();
    gate.arrive_and_wait();
    for (std::uint64_t sequence = 0; sequence < plan.messages; ++sequence) {
      const bool timed = sequence >= plan.warmup;
      if (sequence == plan.warmup) {
        tx_begin = TickClock::now();
        tx_cpu_begin = thread_cpu_seconds();
      }
      write_payload(staging.data(), plan.size, sequence, Workload::fill);
      const std::span<const std::byte> message{staging.data(), plan.size};
      // Both modes try without waiting first: the count of blocked sends.
      std::error_code error = tx.send(message, linux_uio::kNoWait);
      if (error == MessageErrc::would_block) {
        const std::uint64_t blocked_at = TickClock::now();
        const Clock::time_point since = Clock::now();
        std::uint64_t naps = 0;
        if (mode == Mode::doorbell) {
          error = tx.send(message, plan.timeout);  // the library's blocking send
        } else {
          error = send_napping(tx, message, plan, naps);
        }
        if (error)
          report_failure(mode, "blocked send", sequence, error, Clock::now() - since, shared, pair);
        const std::uint64_t done = TickClock::now();
        if (timed) {
          ++result.blocked;
          result.naps += naps;
          const std::uint64_t released = shared.release_tick.load(std::memory_order_acquire);
          const std::uint64_t from = std::max(released, blocked_at);
          wake->record(done > from ? done - from : 0);
        }
      } else if (error) {
        report_failure(mode, "send(kNoWait)", sequence, error, {}, shared, pair);
      }
      shared.sent.store(sequence + 1, std::memory_order_relaxed);
    }
    tx_end = TickClock::now();
    tx_cpu_end = thread_cpu_seconds();
  };

  const auto reader = [&] {
    Channel& rx = pair.rx();
    std::vector<Message> held(plan.burst);
    gate.arrive_and_wait();
    std::uint64_t sequence = 0;
    while (sequence < plan.messages) {
      const auto count =
          static_cast<std::uint32_t>(std::min<std::uint64_t>(plan.burst, plan.messages - sequence));
      const std::uint64_t collect_begin = TickClock::now();
      for (std::uint32_t i = 0; i < count; ++i) {
        const Clock::time_point since = Clock::now();
        // Longer than the sender's timeout: a stuck send reports itself first.
        Message message = rx.receive(plan.timeout + std::chrono::seconds{5});
        if (!message) {
          report_failure(mode, "receive", sequence, message.error(), Clock::now() - since, shared,
                         pair);
        }
        const std::uint64_t first =
            read_payload(message.payload().data(), message.size(), Workload::fill, sink);
        if (first != sequence || message.size() != plan.size) {
          fail("%s: expected message %llu of %u bytes, received message %llu of %zu bytes",
               label(mode), static_cast<unsigned long long>(sequence), plan.size,
               static_cast<unsigned long long>(first), message.size());
        }
        held[i] = std::move(message);
        ++sequence;
        shared.received.store(sequence, std::memory_order_relaxed);
      }
      // The burst: every held message released back-to-back.
      const std::uint64_t release_begin = TickClock::now();
      shared.release_tick.store(release_begin, std::memory_order_release);
      held[0].release();
      const std::uint64_t first_released = TickClock::now();
      for (std::uint32_t i = 1; i < count; ++i) held[i].release();
      const std::uint64_t release_end = TickClock::now();
      shared.released.store(sequence, std::memory_order_relaxed);
      if (sequence - count >= plan.warmup) {
        rx_collect_ticks += release_begin - collect_begin;
        rx_first_ticks += first_released - release_begin;
        rx_rest_ticks += release_end - first_released;
        ++rx_bursts;
      }
      if (sequence == plan.warmup) {
        doorbells_before = pair.reader().stats().space_doorbells;
        rx_begin = TickClock::now();
      }
      if (sequence == plan.messages) break;
      if (plan.pause_sleeps) {
        std::this_thread::sleep_for(plan.pause);
      } else {
        const Clock::time_point until = Clock::now() + plan.pause;
        while (Clock::now() < until) cpu_relax();
      }
    }
    rx_end = TickClock::now();
    doorbells_after = pair.reader().stats().space_doorbells;
  };

  run_pinned(settings.cpus, sender, reader);
  const CpuUse use_after = CpuUse::now();
  const double wall = std::chrono::duration<double>(Clock::now() - wall_before).count();
  result.others =
      std::max(0.0, (use_after.busy - use_before.busy) - (use_after.self - use_before.self)) /
      wall * 100;
  result.steal = (use_after.steal - use_before.steal) / wall * 100;
  keep(sink);

  // Nothing beyond the last message arrived (no duplicate), and nothing
  // was dropped or refused on the way.
  const Message extra = pair.rx().try_receive();
  if (extra || extra.error() != MessageErrc::would_block) {
    fail("%s: after the last message, try_receive() returned %s", label(mode),
         extra ? "another message" : extra.error().message().c_str());
  }
  const linux_uio::SessionStats reader_stats = pair.reader().stats();
  if (reader_stats.protocol_faults != 0 || reader_stats.dropped_undelivered != 0 ||
      reader_stats.unroutable != 0) {
    fail("%s: reader Session: %s", label(mode), session_report(pair.reader()).c_str());
  }

  result.timed = plan.messages - plan.warmup;
  result.seconds = settings.clock.seconds(rx_end - rx_begin);
  result.doorbells = doorbells_after - doorbells_before;
  result.wake_p50_us = settings.clock.ns(wake->percentile(50)) / 1e3;
  result.wake_p99_us = settings.clock.ns(wake->percentile(99)) / 1e3;
  result.wake_max_us = settings.clock.ns(wake->max()) / 1e3;
  const double tx_wall = settings.clock.seconds(tx_end - tx_begin);
  result.sender_cpu = tx_wall > 0 ? (tx_cpu_end - tx_cpu_begin) / tx_wall : 0;
  const double bursts = rx_bursts == 0 ? 1 : static_cast<double>(rx_bursts);
  result.rx_wait_us = settings.clock.ns(rx_collect_ticks) / 1e3 / bursts;
  result.release_first_us = settings.clock.ns(rx_first_ticks) / 1e3 / bursts;
  result.release_rest_us = settings.clock.ns(rx_rest_ticks) / 1e3 / bursts;
  result.switches = involuntary_switches() - switches_before;
  return result;
}

void print_columns() {
  std::printf("  %-26s %3s %9s %7s %7s %9s %6s %8s %8s %8s %6s %7s %7s %7s %5s %6s %5s\n", "mode",
              "run", "msgs/s", "MB/s", "blocked", "doorbells", "naps", "wake p50", "wake p99",
              "wake max", "tx CPU", "rx wait", "rel 1st", "rel rest", "ctxsw", "others", "steal");
  std::printf("  %-26s %3s %9s %7s %7s %9s %6s %8s %8s %8s %6s %7s %7s %7s %5s %6s %5s\n", "", "",
              "", "", "", "", "", "us", "us", "us", "%", "us", "us", "us", "", "%", "%");
}

void print_row(Mode mode, unsigned run, const RunResult& result, const Plan& plan) {
  std::printf(
      "  %-26s %3u %9.0f %7.2f %7llu %9llu %6llu %8.1f %8.1f %8.1f %6.1f %7.1f %7.1f %7.1f "
      "%5llu %6.1f %5.1f\n",
      label(mode), run, result.rate(), result.rate() * plan.size / 1e6,
      static_cast<unsigned long long>(result.blocked),
      static_cast<unsigned long long>(result.doorbells),
      static_cast<unsigned long long>(result.naps), result.wake_p50_us, result.wake_p99_us,
      result.wake_max_us, result.sender_cpu * 100, result.rx_wait_us, result.release_first_us,
      result.release_rest_us, static_cast<unsigned long long>(result.switches), result.others,
      result.steal);
}

[[nodiscard]] const RunResult& median(std::vector<RunResult>& results) {
  std::sort(results.begin(), results.end(),
            [](const RunResult& x, const RunResult& y) { return x.rate() < y.rate(); });
  return results[results.size() / 2];
}

void print_header(const Options& options, const Settings& settings, const Plan& plan) {
  const Latency timer = timer_overhead(settings);
  print_run_header({"space_wakeup_bench", options.quick ? "quick" : "full", "sender", "reader",
                    "ctxsw: involuntary context switches of the process during a run (both "
                    "Sessions'\n"
                    "       progress threads wake every 20 ms); thousands mean another task "
                    "took a CPU\n"},
                   settings, timer);
  std::printf(
      "\nsetup: two Sessions (Threading::multi) over a LoopbackLink, %llu KiB rings, one\n"
      "  channel; credit_window %u B; %u B messages take %llu B of credit each, so %u fit\n"
      "  the window; spin_budget %.1f us in both Sessions and in the nap loop.\n",
      static_cast<unsigned long long>(kRingCapacity / 1024), plan.window, plan.size,
      static_cast<unsigned long long>(plan.stride), plan.window_messages,
      std::chrono::duration<double, std::micro>(plan.spin_budget).count());
  std::printf(
      "reader: receive()s %u messages one by one, holding each (their credit stays out),\n"
      "  releases them back-to-back, then %s %u us; %s.\n",
      plan.burst, plan.pause_sleeps ? "sleeps (sleep_for)" : "busy-waits",
      static_cast<unsigned>(plan.pause.count()),
      plan.burst == plan.window_messages
          ? "a burst is the whole window, so the sender is blocked when it releases"
          : "a burst is part of the window");
  std::printf(
      "sender: send(kNoWait) first in both modes (counts 'blocked'); on would_block:\n"
      "  (a) send(message, %u s): the library's blocking send (spin, then ask for the\n"
      "      space-freed doorbell and sleep on the device until the release rings it);\n"
      "  (b) the OLD algorithm, reimplemented: send(kNoWait) in a loop, spinning for\n"
      "      spin_budget, then sleep_for 10 us, 20 us, ... 1 ms, process_events() after\n"
      "      each nap (SpaceWait, c13fa83).\n",
      static_cast<unsigned>(
          std::chrono::duration_cast<std::chrono::seconds>(plan.timeout).count()));
  std::printf(
      "%llu messages per run, of which the first %llu are warm-up (not timed); %u run%s per\n"
      "mode, interleaved (a), (b), (a), ...; each run has fresh Sessions.\n",
      static_cast<unsigned long long>(plan.messages), static_cast<unsigned long long>(plan.warmup),
      plan.runs, plan.runs == 1 ? "" : "s");
  std::printf(
      "columns: msgs/s and MB/s (10^6 payload bytes) timed on the reader; blocked: timed\n"
      "  sends that found no room; doorbells: the reader Session's stats().space_doorbells\n"
      "  (space-freed doorbells it rang, each waking a blocked sender); naps: (b)'s sleeps;\n"
      "  wake: from room coming back (the reader starting its release burst, or the block\n"
      "  if later) to the blocked send returning; tx CPU: sender thread CPU time / wall\n"
      "  time; rx wait: the reader's mean time to collect a burst (waiting for the sender);\n"
      "  rel 1st: its mean time for a burst's first release (which rings the doorbell\n"
      "  when the sender asked for one); rel rest: for the burst's other releases;\n"
      "  others: CPU time other processes used during the run (/proc/stat), steal: the\n"
      "  hypervisor's, both in %% of one CPU: above a few %%, the run was disturbed.\n");
}

int run(const Options& options) {
  Settings settings;
  std::string error;
  const auto cpus = choose_cpus(options.cpus, error);
  if (!cpus) {
    std::fprintf(stderr, "space_wakeup_bench: %s\n", error.c_str());
    return 2;
  }
  settings.cpus = *cpus;
  settings.rtt_samples = options.quick ? 10'000 : 100'000;
  settings.rtt_warmup = 1'000;

  Plan plan;
  plan.size = options.size;
  plan.window = options.window;
  plan.stride = transports::record_stride(plan.size);
  if (plan.size < 8 || plan.size > 4096) {
    std::fprintf(stderr, "space_wakeup_bench: --size %u: expected 8..4096 bytes\n", plan.size);
    return 2;
  }
  if (plan.window < transports::kMinCreditWindow || plan.window > kRingCapacity ||
      plan.stride > plan.window) {
    std::fprintf(stderr,
                 "space_wakeup_bench: --window %u: expected %u..%llu bytes and at least one "
                 "%llu-byte record\n",
                 plan.window, transports::kMinCreditWindow,
                 static_cast<unsigned long long>(kRingCapacity),
                 static_cast<unsigned long long>(plan.stride));
    return 2;
  }
  plan.window_messages = static_cast<std::uint32_t>(plan.window / plan.stride);
  plan.burst = options.burst == 0 ? plan.window_messages : options.burst;
  if (plan.burst > plan.window_messages) {
    // The reader holds a whole burst before releasing any of it, and the
    // sender can have only window_messages outstanding: that never ends.
    std::fprintf(stderr,
                 "space_wakeup_bench: --burst %u: at most %u (the messages that fit the "
                 "window), or the reader would wait forever for a burst\n",
                 plan.burst, plan.window_messages);
    return 2;
  }
  plan.pause = std::chrono::microseconds{options.pause_us};
  plan.pause_sleeps = options.pause_sleeps;
  plan.spin_budget = options.spin_budget;
  plan.timeout = std::chrono::seconds{options.timeout_s};
  plan.messages = options.messages != 0 ? options.messages : options.quick ? 20'000 : 300'000;
  plan.runs = options.runs != 0 ? options.runs : options.quick ? 1 : 3;
  plan.warmup = std::max<std::uint64_t>(plan.messages / 20 / plan.burst, 1) * plan.burst;
  if (plan.warmup >= plan.messages) {
    std::fprintf(stderr, "space_wakeup_bench: --messages %llu: too few for a warm-up of %llu\n",
                 static_cast<unsigned long long>(plan.messages),
                 static_cast<unsigned long long>(plan.warmup));
    return 2;
  }

  settings.clock.calibrate(options.quick ? 50 : 200);
  print_header(options, settings, plan);

  std::printf("\n== Blocking-sender throughput, reader releasing in bursts ==\n");
  print_columns();
  std::vector<RunResult> doorbell, naps;
  for (unsigned run = 1; run <= plan.runs; ++run) {
    doorbell.push_back(run_once(settings, plan, Mode::doorbell));
    print_row(Mode::doorbell, run, doorbell.back(), plan);
    naps.push_back(run_once(settings, plan, Mode::naps));
    print_row(Mode::naps, run, naps.back(), plan);
  }

  const RunResult a = median(doorbell);
  const RunResult b = median(naps);
  std::printf("\n== Summary (%s of %u run%s per mode) ==\n", plan.runs == 1 ? "one" : "median",
              plan.runs, plan.runs == 1 ? "" : "s");
  std::printf("  %-36s %10.0f msgs/s %8.2f MB/s, blocked %llu, space_doorbells %llu\n",
              "(a) space-freed doorbell:", a.rate(), a.rate() * plan.size / 1e6,
              static_cast<unsigned long long>(a.blocked),
              static_cast<unsigned long long>(a.doorbells));
  std::printf("  %-36s %10.0f msgs/s %8.2f MB/s, blocked %llu, naps %llu\n",
              "(b) nap loop (previous behaviour):", b.rate(), b.rate() * plan.size / 1e6,
              static_cast<unsigned long long>(b.blocked), static_cast<unsigned long long>(b.naps));
  std::printf("  ratio (a)/(b): %.2fx (throughput of the blocking sender)\n", a.rate() / b.rate());
  unsigned disturbed = 0;
  for (const std::vector<RunResult>* runs : {&doorbell, &naps}) {
    for (const RunResult& result : *runs) {
      if (result.others > kDisturbedPercent || result.steal > kDisturbedPercent) ++disturbed;
    }
  }
  if (disturbed != 0) {
    std::printf(
        "  WARNING: %u of %u runs were disturbed (other processes or steal above %.0f %% of a "
        "CPU):\n  the figures mean little; rerun on an idle machine\n",
        disturbed, 2 * plan.runs, kDisturbedPercent);
  }
  std::printf("\nload average at the end: %s\n", load_average().c_str());
  return 0;
}

void print_usage(std::FILE* stream) {
  std::fputs(
      "usage: space_wakeup_bench [--quick] [--cpus A,B] [--messages N] [--runs R] [--size B]\n"
      "                          [--window B] [--burst N] [--pause-us U] [--pause-sleep]\n"
      "                          [--spin-us U] [--timeout-s S]\n"
      "  --quick        20000 messages, one run per mode (the ctest; a second or so)\n"
      "  --cpus A,B     the sender's and the reader's CPU (default: the first two allowed)\n"
      "  --messages N   messages per run (default 300000), the first 5 % warm-up\n"
      "  --runs R       runs per mode, interleaved; the summary takes the median (default 3)\n"
      "  --size B       message payload bytes (default 128)\n"
      "  --window B     SessionOptions::credit_window of both Sessions (default 4096)\n"
      "  --burst N      messages the reader collects before releasing them (default: as many\n"
      "                 as fit the window, so the sender is blocked at every release)\n"
      "  --pause-us U   the reader's pause after each burst (default 100)\n"
      "  --pause-sleep  sleep_for the pause instead of busy-waiting\n"
      "  --spin-us U    spin_budget of both Sessions and of the nap loop (default 20)\n"
      "  --timeout-s S  a blocking send or receive taking longer fails the run (default 10)\n",
      stream);
}

template <typename T>
[[nodiscard]] bool number(std::string_view text, T& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc{} && end == text.data() + text.size();
}

[[nodiscard]] bool parse(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    const bool has_value = i + 1 < argc;
    const auto value = [&] { return std::string_view(argv[++i]); };
    bool ok = true;
    if (argument == "--quick") {
      options.quick = true;
    } else if (argument == "--pause-sleep") {
      options.pause_sleeps = true;
    } else if (argument == "--cpus" && has_value) {
      options.cpus = value();
    } else if (argument == "--messages" && has_value) {
      ok = number(value(), options.messages) && options.messages > 0;
    } else if (argument == "--runs" && has_value) {
      ok = number(value(), options.runs) && options.runs > 0;
    } else if (argument == "--size" && has_value) {
      ok = number(value(), options.size);
    } else if (argument == "--window" && has_value) {
      ok = number(value(), options.window);
    } else if (argument == "--burst" && has_value) {
      ok = number(value(), options.burst) && options.burst > 0;
    } else if (argument == "--pause-us" && has_value) {
      ok = number(value(), options.pause_us);
    } else if (argument == "--spin-us" && has_value) {
      std::uint32_t microseconds = 0;
      ok = number(value(), microseconds);
      options.spin_budget = std::chrono::microseconds{microseconds};
    } else if (argument == "--timeout-s" && has_value) {
      ok = number(value(), options.timeout_s) && options.timeout_s > 0;
    } else {
      std::fprintf(stderr, "space_wakeup_bench: unknown argument '%s'\n", argv[i]);
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "space_wakeup_bench: bad value '%s' for %s\n", argv[i],
                   std::string(argument).c_str());
      return false;
    }
  }
  return true;
}

}  // namespace
}  // namespace cellink::bench

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  cellink::bench::set_program_name("space_wakeup_bench");
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    cellink::bench::print_usage(stdout);
    return 0;
  }
  cellink::bench::Options options;
  if (!cellink::bench::parse(argc, argv, options)) {
    cellink::bench::print_usage(stderr);
    return 2;
  }
  return cellink::bench::run(options);
}
