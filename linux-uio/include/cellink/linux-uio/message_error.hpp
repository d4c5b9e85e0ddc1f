// The errors the message layer (Session, Channel) reports, as std::error_code.
#pragma once

#include <system_error>
#include <type_traits>

namespace cellink::linux_uio {

enum class MessageErrc {
  would_block = 1,    // non-blocking call: the ring is full, or nothing has arrived
  timed_out,          // the timeout passed first
  peer_reset,         // the peer left or restarted; see Session::last_reset()
  not_connected,      // non-blocking send before the peer opened the channel
  channel_closed,     // the peer closed the channel
  message_too_large,  // larger than the receiver's (or our) maximum message size
  loan_too_large,     // larger than one record: use send(), which fragments
  link_broken,        // the peer's memory broke a ring (corrupt or hostile peer)
  shut_down,          // Session::shutdown() was called, or the channel was closed here
  malformed_message,  // a typed (Cap'n Proto) message failed validation
  loan_in_progress,   // another loan toward this peer is not committed yet
  channel_broken,     // the peer broke this channel's rules (Session::diagnostic()); others go on
};

[[nodiscard]] const std::error_category& message_category() noexcept;

[[nodiscard]] inline std::error_code make_error_code(MessageErrc errc) noexcept {
  return {static_cast<int>(errc), message_category()};
}

}  // namespace cellink::linux_uio

template <>
struct std::is_error_code_enum<cellink::linux_uio::MessageErrc> : std::true_type {};
