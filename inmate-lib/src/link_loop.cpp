// LinkLoop (link_loop.hpp).
#include "cellink/inmate-lib/link_loop.hpp"

#include <cstddef>

#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/interrupts.hpp"
#include "cellink/inmate-lib/lapic.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/timing.hpp"
#include "cellink/inmate-lib/wakeup.hpp"

namespace cellink::inmate {

using transports::ChannelDiagnostic;
using transports::ChannelFault;

void LinkLoop::on_tick(void* context) noexcept {
  // Relaxed: a count; the main loop learns of the tick through note_wakeup().
  static_cast<LinkLoop*>(context)->ticks_.fetch_add(1, std::memory_order_relaxed);
  note_wakeup();
}

void LinkLoop::wait_hook(void* context) noexcept {
  static_cast<LinkLoop*>(context)->wait();
}

bool LinkLoop::start(const char* who, unsigned device_index, std::uint32_t tick_hz,
                     const EndpointOptions& options) {
  who_ = who;
  lapic_init();
  if (!probe_ivshmem(device_index, function_)) return false;
  if (tick_hz != 0) {
    const std::uint8_t vector = allocate_vector();
    if (vector == 0 || !set_interrupt_handler(vector, on_tick, this) ||
        !lapic_timer_periodic(tick_hz, vector)) {
      print("%s: cannot start the %u Hz tick\n", who_, tick_hz);
      return false;
    }
  }
  const EndpointHooks hooks{now_ns, wait_hook, this};
  const transports::LinkInitStatus status = endpoint_.start(*function_.device(), hooks, options);
  if (status != transports::LinkInitStatus::ok) {
    print("%s: cannot join the link: %s\n", who_, transports::describe(status));
    return false;
  }
  interrupts_enable();
  return true;
}

bool LinkLoop::open_everywhere(const char* name, std::uint16_t (&ids)[kEndpointMaxPeers]) {
  const auto& link = endpoint_.core().link();
  for (std::uint32_t peer = 0; peer < kEndpointMaxPeers; ++peer) ids[peer] = 0;
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer == link.id()) continue;
    ids[peer] = endpoint_.open(peer, name);
    if (ids[peer] == 0) {
      print(
          "%s: cannot open channel '%s' toward peer %u (a valid name is 1..48 printable "
          "characters, open once per peer)\n",
          who_, name, peer);
      return false;
    }
  }
  return true;
}

void LinkLoop::wait() noexcept {
  // Re-armed first: a one-shot v2 device delivers nothing until then, and a
  // doorbell that the wake-up request below provokes must get through.
  function_.device()->rearm_interrupts();
  if (!endpoint_.prepare_to_sleep()) return;  // a record came: read it first
  wait_for_wakeup();
}

unsigned LinkLoop::report_events() noexcept {
  unsigned reported = 0;
  EndpointEvent event;
  while (endpoint_.next_event(event)) {
    ++reported;
    const auto& core = endpoint_.core();
    switch (event.kind) {
      case EndpointEvent::Kind::peer_up:
        print("%s: peer %u up (its epoch %u)\n", who_, event.peer,
              core.link().peer_epoch(event.peer));
        break;
      case EndpointEvent::Kind::peer_reset: {
        const transports::ResetCounts& reset = core.last_reset(event.peer);
        print(
            "%s: peer %u reset (reset #%llu, its epoch %u): we sent %llu in that session, it "
            "released %s%llu\n",
            who_, event.peer, static_cast<unsigned long long>(reset.resets), reset.peer_epoch,
            static_cast<unsigned long long>(reset.sent), reset.delivered_known ? "" : "(unknown) ",
            static_cast<unsigned long long>(reset.delivered));
        break;
      }
      case EndpointEvent::Kind::peer_broken: {
        const transports::RingDiagnostic ring = core.link().ring_diagnostic(event.peer);
        print(
            "%s: peer %u BROKEN: %s: %s at index %llu: found %llu, bound %llu; this pair stops "
            "until the peer restarts, the others go on\n",
            who_, event.peer, transports::describe(core.link().fault(event.peer)),
            transports::describe(ring.error), static_cast<unsigned long long>(ring.index),
            static_cast<unsigned long long>(ring.value),
            static_cast<unsigned long long>(ring.limit));
        break;
      }
      case EndpointEvent::Kind::protocol_fault: {
        const ChannelDiagnostic found = core.diagnostic();
        char name[transports::kMaxChannelName + 1] = {};
        for (std::size_t i = 0; i < found.name_length && i < transports::kMaxChannelName; ++i) {
          name[i] = found.name[i];
        }
        print(
            "%s: peer %u protocol fault #%llu (first: %s on channel %u '%s', %s = %llu, "
            "bound %llu)\n",
            who_, found.peer, static_cast<unsigned long long>(core.stats().protocol_faults),
            transports::describe(found.fault), found.channel, name, found.field,
            static_cast<unsigned long long>(found.value),
            static_cast<unsigned long long>(found.limit));
        break;
      }
      case EndpointEvent::Kind::message_dropped:
        print("%s: peer %u channel %u: a message was dropped: %s\n", who_, event.peer,
              event.channel, transports::describe(event.status));
        break;
    }
  }
  if (endpoint_.events_lost() != events_lost_reported_) {
    events_lost_reported_ = endpoint_.events_lost();
    print("%s: %llu event(s) lost (the queue was full)\n", who_,
          static_cast<unsigned long long>(endpoint_.events_lost()));
  }
  return reported;
}

void LinkLoop::print_interrupts() noexcept {
  print("%s: interrupts: %llu doorbell (", who_,
        static_cast<unsigned long long>(function_.interrupts()));
  for (std::uint32_t vector = 0; vector < function_.routed_vectors(); ++vector) {
    print("%svector %u: %llu", vector == 0 ? "" : ", ", vector,
          static_cast<unsigned long long>(function_.interrupts(vector)));
  }
  print("), %llu tick, %llu halts\n", static_cast<unsigned long long>(ticks()),
        static_cast<unsigned long long>(halts()));
}

}  // namespace cellink::inmate
