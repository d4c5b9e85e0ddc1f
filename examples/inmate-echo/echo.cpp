// inmate-echo: a bare-metal cell that echoes every message it receives on a
// channel, toward every other peer of its link, halted between doorbells.
//
// Command line (QEMU's -append), every word optional:
//   channel=NAME   the channel to echo (default "echo")
//   device=N       which ivshmem function (default 0, the first)
//   report=N       print a status line every N echoes (default 500)
//   poll=1         never halt: spin on the rings (for latency benchmarks;
//                  the handshake still advances on the 100 Hz tick)
//   write-other=1  a test of the memory protection: once joined, write one
//                  byte into the next peer's output section, which the
//                  inmate maps read-only; the page fault must stop it
//                  ("inmate: FATAL: exception page-fault ... (write, ...)")
//
// What it prints (tests and `cellink demo` read these lines):
//   echo: ready: peer P of N, channel 'NAME'
//   echo: peer J up / reset / BROKEN ... (LinkLoop::report_events)
//   echo: echoed M messages (B bytes) ...        every `report` echoes,
//   echo: interrupts: ...                        and after a quiet second
// A message it cannot echo is reported with the reason and released.
#include <cstdint>

#include "cellink/inmate-lib/boot.hpp"
#include "cellink/inmate-lib/link_loop.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/timing.hpp"

namespace {

using cellink::inmate::Inbound;
using cellink::inmate::kEndpointMaxPeers;
using cellink::inmate::LinkLoop;
using cellink::inmate::print;
using cellink::transports::ChannelStatus;

constexpr std::uint64_t kReplyTimeoutNs = 5'000'000'000;  // a host that stops reading
constexpr std::uint64_t kQuietNs = 1'000'000'000;

LinkLoop loop;

struct Counts {
  std::uint64_t echoed = 0;
  std::uint64_t bytes = 0;
  std::uint64_t failed = 0;
  std::uint64_t reported_at = 0;  // `echoed` at the last status line
};

void print_status(const Counts& counts) {
  print("echo: echoed %llu messages (%llu bytes), %llu not echoed\n",
        static_cast<unsigned long long>(counts.echoed),
        static_cast<unsigned long long>(counts.bytes),
        static_cast<unsigned long long>(counts.failed));
  loop.print_interrupts();
}

}  // namespace

int cellink::inmate::inmate_main() {
  char channel[transports::kMaxChannelName + 1] = "echo";
  if (command_line_string("channel", channel, sizeof(channel)) && channel[0] == '\0') {
    print("echo: channel= is empty\n");
    return 2;
  }
  std::uint64_t device = 0;
  std::uint64_t report_every = 500;
  std::uint64_t poll = 0;
  std::uint64_t write_other = 0;
  (void)command_line_u64("write-other", write_other);
  (void)command_line_u64("device", device);
  (void)command_line_u64("poll", poll);
  (void)command_line_u64("report", report_every);
  if (report_every == 0) report_every = 500;

  if (!loop.start("echo", static_cast<unsigned>(device), /*tick_hz=*/100)) return 3;
  Endpoint& endpoint = loop.endpoint();
  const auto& link = endpoint.core().link();
  std::uint16_t ids[kEndpointMaxPeers];
  if (!loop.open_everywhere(channel, ids)) return 2;
  print("echo: ready: peer %u of %u, channel '%s'%s\n", link.id(), link.peer_count(), channel,
        poll != 0 ? ", polling" : "");

  if (write_other != 0) {
    const std::uint32_t other = (link.id() + 1) % link.peer_count();
    const auto section = endpoint.core().link().device().output_section(other);
    print("echo: writing into peer %u's output section at 0x%llx (mapped read-only)\n", other,
          static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(section.data())));
    // The cast is the point: a buggy inmate, which the page tables stop.
    *const_cast<volatile std::byte*>(section.data()) = std::byte{0x5a};
    print("echo: the write went through: the memory protection is missing\n");
    return 4;
  }

  Counts counts;
  std::uint64_t last_activity = now_ns();
  bool quiet_reported = true;
  std::uint64_t serviced_at_tick = ~std::uint64_t{0};
  for (;;) {
    // Polling: the handshake's work (state tables, drains) once per tick;
    // the rings on every turn.
    if (poll == 0 || loop.ticks() != serviced_at_tick) {
      serviced_at_tick = loop.ticks();
      endpoint.service();
      if (poll != 0) endpoint.answer_space_requests();  // one the releases missed
    }
    Inbound message;
    while (endpoint.receive(message)) {
      if (message.channel == ids[message.peer]) {
        const ChannelStatus status = endpoint.reply(message, message.data, kReplyTimeoutNs);
        if (status == ChannelStatus::ok) {
          ++counts.echoed;
          counts.bytes += message.data.size();
        } else {
          ++counts.failed;
          print("echo: could not echo %llu bytes to peer %u: %s\n",
                static_cast<unsigned long long>(message.data.size()), message.peer,
                transports::describe(status));
        }
      }
      endpoint.release(message);
      last_activity = now_ns();
      quiet_reported = false;
      if (counts.echoed - counts.reported_at >= report_every) {
        counts.reported_at = counts.echoed;
        print_status(counts);
      }
    }
    loop.report_events();
    if (!quiet_reported && now_ns() - last_activity > kQuietNs) {
      quiet_reported = true;
      print_status(counts);
    }
    if (poll == 0) loop.wait();
  }
}
