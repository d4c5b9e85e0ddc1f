// What the channel core reports: call results, protocol faults a peer
// committed, reset reports and counters. Spec: docs/link.md.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cellink/transports/channel_control.hpp"

namespace cellink::transports {

enum class ChannelStatus : std::uint8_t {
  ok,
  retry,              // the session changed under the call: check again from the start
  peer_reset,         // the peer left or restarted (reported once per channel and side)
  not_connected,      // the peer has not opened the channel (yet)
  channel_closed,     // the peer closed the channel
  message_too_large,  // above the receiver's maximum
  would_block,        // no room now: ring full, no credit, or control records queued first
  loan_in_progress,   // too many reservations in flight, or a fragmented send behind a loan
  ring_broken,        // the pair's ring broke (corrupt or hostile peer)
  credit_fault,       // the receiver's credit table is impossible (see diagnostic())
};

[[nodiscard]] constexpr const char* describe(ChannelStatus status) noexcept {
  switch (status) {
    case ChannelStatus::ok: return "ok";
    case ChannelStatus::retry: return "the session changed; try again";
    case ChannelStatus::peer_reset: return "the peer reset";
    case ChannelStatus::not_connected: return "the peer has not opened the channel";
    case ChannelStatus::channel_closed: return "the peer closed the channel";
    case ChannelStatus::message_too_large: return "message larger than the receiver accepts";
    case ChannelStatus::would_block: return "no room in the ring or the channel's credit";
    case ChannelStatus::loan_in_progress: return "too many records in flight behind a loan";
    case ChannelStatus::ring_broken: return "the ring broke (corrupt or hostile peer)";
    case ChannelStatus::credit_fault: return "the receiver's credit table is corrupt";
  }
  return "unknown channel status";
}

// A protocol rule a peer broke. Each is counted; the first is latched with
// its details (ChannelDiagnostic) and the others continue.
enum class ChannelFault : std::uint8_t {
  none,
  bad_control_record,   // a control record failed decode_control() (field: which check)
  announced_twice,      // an open for a name (or id) the peer already announced
  too_many_names,       // more announced names than we have room for
  unknown_close,        // a close or abort for a name or id that does not match
  never_announced,      // a record on a channel the peer never opened
  over_window,          // a record beyond the credit window we granted
  reassembly_overflow,  // a fragmented message beyond our max_message_size
  credit_table,         // our receiver's credit table moved impossibly (sender side)
};

[[nodiscard]] constexpr const char* describe(ChannelFault fault) noexcept {
  switch (fault) {
    case ChannelFault::none: return "no fault";
    case ChannelFault::bad_control_record: return "malformed control record";
    case ChannelFault::announced_twice: return "channel announced twice";
    case ChannelFault::too_many_names: return "more channel names announced than fit";
    case ChannelFault::unknown_close: return "close or abort for a channel that was not announced";
    case ChannelFault::never_announced: return "record on a channel the peer never opened";
    case ChannelFault::over_window: return "record beyond the channel's credit window";
    case ChannelFault::reassembly_overflow: return "fragmented message beyond max_message_size";
    case ChannelFault::credit_table: return "impossible value in the receiver's credit table";
  }
  return "unknown channel fault";
}

struct ChannelDiagnostic {
  ChannelFault fault = ChannelFault::none;
  std::uint32_t peer = 0;
  std::uint16_t channel = 0;        // our local id (0: the control channel)
  const char* field = "";           // the field or rule, e.g. "credit_window", "returned"
  std::uint64_t value = 0;          // what the peer wrote
  std::uint64_t limit = 0;          // the bound it broke
  char name[kMaxChannelName] = {};  // the channel's name, when known
  std::uint16_t name_length = 0;
};

// What a peer reset ended, for the pair (ResetCounts) and per channel.
struct ResetCounts {
  std::uint64_t resets = 0;      // resets of this peer seen so far (0: none)
  std::uint32_t peer_epoch = 0;  // the peer's epoch in the ended session
  std::uint64_t sent = 0;        // messages we committed toward it in that session
  bool delivered_known = false;  // false: the peer's memory no longer says
  std::uint64_t delivered = 0;   // of those, how many the peer released
};

struct ChannelReset {
  std::uint64_t resets = 0;      // which reset of the peer this reports (0: none yet)
  std::uint32_t sent = 0;        // messages we sent on the channel in the ended session (mod 2^32)
  bool delivered_known = false;  // false: the receiver's table no longer says
  std::uint32_t delivered = 0;   // of those, how many the receiver released (mod 2^32)
};

struct CoreStats {
  std::uint64_t unroutable = 0;          // records for a channel id nobody opened here
  std::uint64_t control_errors = 0;      // malformed or contradictory control records
  std::uint64_t oversized_messages = 0;  // reassemblies above max_message_size
  std::uint64_t protocol_faults = 0;     // every ChannelFault, the latched one included
  std::uint64_t doorbells_rung = 0;      // data and space-freed doorbells
  std::uint64_t space_doorbells = 0;     // of those, space-freed ones
  std::uint64_t spilled_records = 0;     // queued records the caller copied off the ring
};

}  // namespace cellink::transports
