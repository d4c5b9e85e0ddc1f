// Endpoint: an inmate's side of a cellink link. It runs the same channel
// core as a Linux Session (transports::ChannelCore), sized for an inmate,
// and adds only what a single-CPU program without a heap needs:
//   - an inbox of received messages: whole records read in place (zero
//     copy) and reassembled ones, in fixed reassembly slots;
//   - sends that fragment and that wait for room by calling the program's
//     wait hook (an inmate halts there until its next interrupt);
//   - the drain of a peer that reset, with a deadline on the program's clock;
//   - a queue of events (peer up, reset, broken, a protocol fault) for the
//     program to print.
// Spec of the protocol: docs/link.md; the inmate side: docs/inmates.md.
//
// It knows nothing of PCI, interrupts or serial ports: the program gives it
// an ivshmem::Device, a clock and a wait function (EndpointHooks). So the
// same code runs in an inmate and, for tests, in a Linux process against a
// Session.
//
// Every size below is fixed at build time; the whole Endpoint is one object
// (put it in .bss). Shared memory is hostile: the core checks every record,
// name, credit and index, and a broken ring stops that peer only.
//
// Threading: one thread (the inmate's main loop). Nothing here may be called
// from an interrupt handler: handlers only note that something happened.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/device.hpp"
#include "cellink/transports/channel_core.hpp"

namespace cellink::inmate {

// Limits of an inmate's endpoint (docs/inmates.md, "Footprint").
inline constexpr std::size_t kEndpointMaxPeers = 4;         // peers of the link, us included
inline constexpr std::size_t kEndpointMaxChannels = 8;      // channel ids per peer
inline constexpr std::size_t kEndpointMaxHeld = 32;         // zero-copy records held per peer
inline constexpr std::size_t kReassemblySlots = 2;          // fragmented messages at once
inline constexpr std::uint32_t kMaxInboundMessage = 32768;  // largest message we accept
inline constexpr std::size_t kInboxSize = 8;                // received, not yet taken

using EndpointCore = transports::ChannelCore<kEndpointMaxHeld, kEndpointMaxChannels,
                                             kEndpointMaxPeers, /*MaxInFlight=*/2,
                                             /*MaxControlQueued=*/2 * kEndpointMaxChannels + 2>;

struct EndpointHooks {
  // Nanoseconds on a monotonic clock.
  std::uint64_t (*now_ns)() = nullptr;
  // Returns after the next interrupt (at once when one arrived since the last
  // call). A periodic timer interrupt bounds the wait.
  void (*wait)(void* context) = nullptr;
  void* context = nullptr;
};

struct EndpointOptions {
  // How long the messages of a peer's ended session may stay unreleased
  // before they are dropped and the peer's new incarnation is acked.
  std::uint64_t drain_timeout_ns = 1'000'000'000;
  // Bytes each channel's sender may have outstanding toward us (0: the ring).
  std::uint32_t credit_window = 0;
};

// A received message, readable until release().
struct Inbound {
  std::uint32_t peer = 0;
  std::uint16_t channel = 0;  // our local id (open() returned it)
  std::span<const std::byte> data;
  // The Endpoint's bookkeeping.
  std::uint64_t sequence = EndpointCore::kNoRecord;  // the ring record (zero copy)
  std::uint32_t credit = 0;
  std::uint32_t peer_epoch = 0;
  std::int8_t slot = -1;  // the reassembly slot, or -1
};

struct EndpointEvent {
  enum class Kind : std::uint8_t {
    peer_up,          // the pair runs (again): channels are re-announced
    peer_reset,       // the peer left or restarted; see core().last_reset(peer)
    peer_broken,      // the peer's ring broke; see core().link().ring_diagnostic(peer)
    protocol_fault,   // a peer broke a rule; see core().diagnostic()
    message_dropped,  // a message could not be delivered (status says why)
  };
  Kind kind = Kind::peer_up;
  std::uint32_t peer = 0;
  std::uint16_t channel = 0;
  transports::ChannelStatus status = transports::ChannelStatus::ok;
};

[[nodiscard]] constexpr const char* describe(EndpointEvent::Kind kind) noexcept {
  switch (kind) {
    case EndpointEvent::Kind::peer_up: return "peer up";
    case EndpointEvent::Kind::peer_reset: return "peer reset";
    case EndpointEvent::Kind::peer_broken: return "peer broken";
    case EndpointEvent::Kind::protocol_fault: return "protocol fault";
    case EndpointEvent::Kind::message_dropped: return "message dropped";
  }
  return "unknown event";
}

class Endpoint {
 public:
  Endpoint() noexcept = default;
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Joins the link on `device` (the handshake goes on in service()).
  [[nodiscard]] transports::LinkInitStatus start(ivshmem::Device& device,
                                                 const EndpointHooks& hooks,
                                                 const EndpointOptions& options = {}) noexcept;
  // Leaves the link: our state entry reads RESET.
  void leave() noexcept { core_.leave(); }

  // Does what interrupts and time made due: the handshake, resets, drains.
  // Call after every wake-up.
  void service() noexcept;
  // Answers a sender's request for room that a release did not see (the
  // core's idle()). A program that polls calls it now and then.
  void answer_space_requests() noexcept;
  // Before sleeping: answers requests for room, then asks every peer whose
  // ring we read for a doorbell on its next record (the ring's wake-up
  // index). False when a record arrived meanwhile: do not sleep, read.
  [[nodiscard]] bool prepare_to_sleep() noexcept;

  // Opens channel `name` (NUL-terminated) toward `peer`. 0: the name is
  // invalid, already open toward that peer, or no id is free.
  [[nodiscard]] std::uint16_t open(std::uint32_t peer, const char* name) noexcept;

  // The next received message from any peer, without waiting.
  [[nodiscard]] bool receive(Inbound& out) noexcept;
  // Gives a message back (its ring space and its credit); `delivered` says
  // whether the program used it, for the sender's delivery counter.
  void release(Inbound& message, bool delivered = true) noexcept;

  // Sends `bytes` on local channel `channel` toward `peer`, in fragments when
  // it is larger than a record. Waits (hooks.wait) up to `timeout_ns` for
  // the rendezvous, credit and ring room; 0 never waits.
  [[nodiscard]] transports::ChannelStatus send(std::uint32_t peer, std::uint16_t channel,
                                               std::span<const std::byte> bytes,
                                               std::uint64_t timeout_ns) noexcept;

  // Sends `bytes` back to where `message` came from (its peer and channel).
  // A send reports each reset of its peer once (peer_reset); when that
  // reset came before `message`, the reply belongs to the new session and
  // is sent anyway.
  [[nodiscard]] transports::ChannelStatus reply(const Inbound& message,
                                                std::span<const std::byte> bytes,
                                                std::uint64_t timeout_ns) noexcept;

  // The next event to report, oldest first. A full queue drops the newest
  // and counts it (events_lost()).
  [[nodiscard]] bool next_event(EndpointEvent& out) noexcept;
  [[nodiscard]] std::uint64_t events_lost() const noexcept { return events_lost_; }

  [[nodiscard]] EndpointCore& core() noexcept { return core_; }
  [[nodiscard]] const EndpointCore& core() const noexcept { return core_; }
  [[nodiscard]] bool running(std::uint32_t peer) const noexcept { return core_.running(peer); }

 private:
  struct Sink;  // what the core's rx side reports to (endpoint.cpp)

  struct Slot {
    bool busy = false;      // assembling or in the inbox
    bool complete = false;  // handed to the inbox
    std::uint32_t peer = 0;
    std::uint16_t channel = 0;
    std::uint32_t size = 0;
    bool overflow = false;
    alignas(8) std::byte bytes[kMaxInboundMessage];
  };

  [[nodiscard]] int find_slot(std::uint32_t peer, std::uint16_t channel) const noexcept;
  void push_event(EndpointEvent::Kind kind, std::uint32_t peer, std::uint16_t channel = 0,
                  transports::ChannelStatus status = transports::ChannelStatus::ok) noexcept;
  [[nodiscard]] bool push_inbox(const Inbound& message) noexcept;
  void read_peer(std::uint32_t peer) noexcept;
  void drop_inbox(std::uint32_t peer) noexcept;
  void check_faults() noexcept;

  EndpointCore core_;
  EndpointHooks hooks_;
  EndpointOptions options_;
  Inbound inbox_[kInboxSize];
  std::size_t inbox_head_ = 0;
  std::size_t inbox_count_ = 0;
  Slot slots_[kReassemblySlots];
  std::uint64_t drain_deadline_[kEndpointMaxPeers] = {};
  std::uint32_t next_peer_ = 0;  // round robin of receive()
  EndpointEvent events_[16];
  std::size_t event_head_ = 0;
  std::size_t event_count_ = 0;
  std::uint64_t events_lost_ = 0;
  std::uint64_t faults_seen_ = 0;
};

}  // namespace cellink::inmate
