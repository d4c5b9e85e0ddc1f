// The channel core as an inmate would build it: every entry point
// instantiated with a sink that keeps nothing, for a 2-peer link with 8
// channels, compiled -Os with the freestanding flags. The test
// freestanding.channel_core_needs_no_library checks that the object asks the
// linker for nothing (no libc, no memcpy, no operator new) and prints its size.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/transports/channel_core.hpp"

namespace {

using cellink::transports::ChannelCore;
using cellink::transports::ChannelStatus;
using cellink::transports::Record;

using InmateCore = ChannelCore</*MaxHeld=*/64, /*MaxChannels=*/8, /*MaxPeers=*/2,
                               /*MaxInFlight=*/8, /*MaxControlQueued=*/20>;

// What an inmate's loop does with what the core reads: takes whole messages
// in place and keeps no copies (no reassembly store, no spill).
struct KeepNothing {
  void peer_up(std::uint32_t) {}
  void peer_reset(std::uint32_t) {}
  bool deliver(std::uint32_t, std::uint16_t, const Record&, std::uint32_t) { return true; }
  void append(std::uint32_t, std::uint16_t, std::span<const std::byte>) {}
  bool complete(std::uint32_t, std::uint16_t, std::uint32_t) { return false; }
  void fail(std::uint32_t, std::uint16_t, ChannelStatus) {}
  void discard(std::uint32_t, std::uint16_t) {}
  bool spill(std::uint32_t) { return false; }
  void changed() {}
};

InmateCore core;
KeepNothing sink;

}  // namespace

// One pass over every entry point; never called, only compiled.
extern "C" int cellink_inmate_channel_step(cellink::ivshmem::Device* device, std::uint32_t peer) {
  if (core.init(*device, {}) != cellink::transports::LinkInitStatus::ok) return -1;
  core.poll(sink);
  const std::uint16_t id = core.open(peer, "telemetry", 9);
  std::uint16_t remote = 0;
  if (core.preflight(peer, id, 8, remote) == ChannelStatus::ok) {
    InmateCore::Ticket ticket;
    const std::uint64_t resets = core.resets(peer);
    if (core.reserve(peer, id, remote, 8, resets, ticket) == ChannelStatus::ok) {
      (void)core.seal(peer, ticket, 8, false, resets);
    } else if (!core.want_space(peer, id, 8)) {
      core.give_up(peer, id);
    }
  }
  if (core.read(peer, sink) == InmateCore::ReadStatus::broken) core.report_broken(peer, sink);
  Record record;
  std::uint32_t credit = 0;
  if (core.take_next(peer, id, record, credit, sink)) {
    core.release_message(peer, core.link().peer_epoch(peer), id, record.sequence, credit, true);
  }
  if (core.drained(peer)) core.finish_drain(peer, sink);
  core.close(peer, id);
  return 0;
}
