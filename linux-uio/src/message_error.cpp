#include "cellink/linux-uio/message_error.hpp"

#include <string>

namespace cellink::linux_uio {
namespace {

class MessageCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "cellink.message"; }

  [[nodiscard]] std::string message(int value) const override {
    switch (static_cast<MessageErrc>(value)) {
      case MessageErrc::would_block: return "would block: the ring is full or nothing arrived";
      case MessageErrc::timed_out: return "timed out";
      case MessageErrc::peer_reset:
        return "peer reset: it left or restarted (Session::last_reset() says what it got)";
      case MessageErrc::not_connected: return "the peer has not opened this channel yet";
      case MessageErrc::channel_closed: return "the peer closed this channel";
      case MessageErrc::message_too_large:
        return "message larger than the receiver's maximum message size";
      case MessageErrc::loan_too_large:
        return "loan larger than one record (use send(), which fragments)";
      case MessageErrc::link_broken:
        return "the peer's shared memory is corrupt (ring broken; waits for the peer to restart)";
      case MessageErrc::shut_down: return "the session or channel was shut down";
      case MessageErrc::malformed_message: return "malformed typed message";
      case MessageErrc::loan_in_progress: return "another loan toward this peer is still open";
      case MessageErrc::channel_broken:
        return "the peer broke this channel's protocol (Session::diagnostic() says how); the "
               "link's other channels go on";
    }
    return "unknown cellink message error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& message_category() noexcept {
  static const MessageCategory category;
  return category;
}

}  // namespace cellink::linux_uio
