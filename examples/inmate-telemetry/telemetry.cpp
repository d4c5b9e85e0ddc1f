// inmate-telemetry: a bare-metal cell that publishes a TelemetrySample
// (telemetry_sample.hpp) to every other peer of its link at a fixed rate,
// driven by the LAPIC timer.
//
// The timer's interrupt handler takes the sample (its time and the tick
// count) into a small queue and wakes the main loop; the main loop sends
// the queued samples. Handlers never touch the link: the channel core
// belongs to the main loop. A send never waits: a sample that finds the
// ring or the channel's credit full, or its peer away, is counted in
// `dropped`, and the next sample carries the count.
//
// Command line (QEMU's -append), every word optional:
//   rate=HZ        samples per second per peer (default 100, 1..10000)
//   channel=NAME   the channel (default "telemetry")
//   device=N       which ivshmem function (default 0)
//   count=N        stop after N ticks and exit 0 (default: run forever)
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/boot.hpp"
#include "cellink/inmate-lib/interrupts.hpp"
#include "cellink/inmate-lib/lapic.hpp"
#include "cellink/inmate-lib/link_loop.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/timing.hpp"
#include "cellink/inmate-lib/wakeup.hpp"
#include "telemetry_sample.hpp"

namespace {

using cellink::examples::kTelemetryMagic;
using cellink::examples::kTelemetryVersion;
using cellink::examples::TelemetrySample;
using cellink::inmate::Inbound;
using cellink::inmate::kEndpointMaxPeers;
using cellink::inmate::LinkLoop;
using cellink::inmate::print;
using cellink::transports::ChannelStatus;

LinkLoop loop;

// Ticks taken by the handler, sent by the main loop: a single-producer,
// single-consumer queue between one handler and the loop on one CPU.
struct Tick {
  std::uint64_t time_ns;
  std::uint64_t ticks;
};
constexpr std::uint32_t kTickQueue = 64;  // a power of two
Tick tick_queue[kTickQueue];
std::atomic<std::uint32_t> ticks_taken{0};  // written by the handler
std::uint32_t ticks_sent = 0;               // the loop's
std::atomic<std::uint64_t> ticks_lost{0};   // the queue was full

void on_sample_tick(void*) noexcept {
  const std::uint32_t taken = ticks_taken.load(std::memory_order_relaxed);
  static std::uint64_t count = 0;
  ++count;
  if (taken - ticks_sent == kTickQueue) {
    ticks_lost.fetch_add(1, std::memory_order_relaxed);
  } else {
    tick_queue[taken % kTickQueue] = {cellink::inmate::now_ns(), count};
    // Release: the entry is written before the loop sees it (on one CPU,
    // this orders the compiler only); pairs with the acquire in the loop.
    ticks_taken.store(taken + 1, std::memory_order_release);
  }
  cellink::inmate::note_wakeup();
}

}  // namespace

int cellink::inmate::inmate_main() {
  char channel[transports::kMaxChannelName + 1] = "telemetry";
  (void)command_line_string("channel", channel, sizeof(channel));
  std::uint64_t rate = 100;
  std::uint64_t device = 0;
  std::uint64_t stop_after = 0;
  (void)command_line_u64("rate", rate);
  (void)command_line_u64("device", device);
  (void)command_line_u64("count", stop_after);
  if (rate == 0 || rate > 10000) {
    print("telemetry: rate=%llu is outside 1..10000 Hz\n", static_cast<unsigned long long>(rate));
    return 2;
  }
  // The link's own tick stays slow; the samples have their own timer.
  if (!loop.start("telemetry", static_cast<unsigned>(device), /*tick_hz=*/0)) return 3;
  const std::uint8_t vector = allocate_vector();
  if (vector == 0 || !set_interrupt_handler(vector, on_sample_tick, nullptr) ||
      !lapic_timer_periodic(static_cast<std::uint32_t>(rate), vector)) {
    print("telemetry: cannot start the %llu Hz timer\n", static_cast<unsigned long long>(rate));
    return 3;
  }
  Endpoint& endpoint = loop.endpoint();
  const auto& link = endpoint.core().link();
  std::uint16_t ids[kEndpointMaxPeers];
  std::uint64_t sequence[kEndpointMaxPeers] = {};
  std::uint64_t dropped[kEndpointMaxPeers] = {};
  if (!loop.open_everywhere(channel, ids)) return 2;
  print("telemetry: ready: peer %u of %u, channel '%s', %llu Hz\n", link.id(), link.peer_count(),
        channel, static_cast<unsigned long long>(rate));

  std::uint64_t last_report = 0;
  for (;;) {
    endpoint.service();
    // Acquire: pairs with the handler's release of ticks_taken.
    while (ticks_sent != ticks_taken.load(std::memory_order_acquire)) {
      const Tick tick = tick_queue[ticks_sent % kTickQueue];
      ++ticks_sent;
      for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
        if (ids[peer] == 0) continue;
        TelemetrySample sample{};
        sample.magic = kTelemetryMagic;
        sample.version = kTelemetryVersion;
        sample.size = sizeof(TelemetrySample);
        sample.sequence = sequence[peer]++;
        sample.time_ns = tick.time_ns;
        sample.rate_hz = static_cast<std::uint32_t>(rate);
        sample.peer = link.id();
        sample.dropped = dropped[peer] + ticks_lost.load(std::memory_order_relaxed);
        sample.ticks = tick.ticks;
        sample.checksum = cellink::examples::telemetry_checksum(
            reinterpret_cast<const unsigned char*>(&sample), offsetof(TelemetrySample, checksum));
        const ChannelStatus status = endpoint.send(
            peer, ids[peer], {reinterpret_cast<const std::byte*>(&sample), sizeof(sample)}, 0);
        if (status != ChannelStatus::ok) ++dropped[peer];
      }
      if (stop_after != 0 && tick.ticks >= stop_after) {
        print("telemetry: %llu ticks done\n", static_cast<unsigned long long>(tick.ticks));
        return 0;
      }
      if (tick.ticks - last_report >= 10 * rate) {
        last_report = tick.ticks;
        for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
          if (ids[peer] == 0) continue;
          print("telemetry: peer %u: %llu samples, %llu dropped\n", peer,
                static_cast<unsigned long long>(sequence[peer]),
                static_cast<unsigned long long>(dropped[peer]));
        }
      }
    }
    // Nothing is received on this channel; whatever a peer sends is released.
    Inbound message;
    while (endpoint.receive(message)) endpoint.release(message, false);
    loop.report_events();
    loop.wait();
  }
}
