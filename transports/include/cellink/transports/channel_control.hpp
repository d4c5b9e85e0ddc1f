// The message layer's control channel: the wire format of the name service
// that channel 0 carries on every ring. Spec: docs/link.md.
//
// A peer that opens channel `name` picks a local id for it and sends
// ControlMessage{open, id, name, max_message_size, credit_window} to the
// other peer; from
// then on the other peer addresses that channel's records to `id`. Opening
// the same name on both sides is the rendezvous: each side sends to the id
// the other announced. `close` withdraws an id. After a peer reset, each side
// announces its open channels again once the pair is running.
//
// The peer may send anything: decode() checks the record length, the type,
// the id range, the name length and the reserved bytes, and rejects the
// record with a reason instead of trusting any field.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "cellink/transports/channel_credit.hpp"

namespace cellink::transports {

inline constexpr std::uint16_t kControlChannel = 0;
// Ids 1..kMaxChannelId name channels; each side picks ids for its own opens.
inline constexpr std::uint16_t kMaxChannelId = 255;
inline constexpr std::size_t kMaxChannelName = 48;

// abort: the sender gave up a message it was sending in fragments (its
// timeout passed with the ring full); `channel` is then the id the fragments
// were addressed to, and the receiver discards what arrived of that message.
enum class ControlType : std::uint16_t { open = 1, close = 2, abort = 3 };

struct ControlMessage {
  std::uint16_t type;              // ControlType: open, close or abort
  std::uint16_t channel;           // the sender's id for the channel, 1..kMaxChannelId
  std::uint32_t max_message_size;  // open: the largest message the sender accepts; close: 0
  std::uint16_t name_length;       // 1..kMaxChannelName
  std::uint16_t reserved;          // zero
  // open: the bytes of records the sender of this open lets the other side
  // have outstanding on the channel (channel_credit.hpp); close, abort: 0.
  std::uint32_t credit_window;
  char name[kMaxChannelName];  // not NUL-terminated; bytes past name_length are zero
};
static_assert(offsetof(ControlMessage, type) == 0);
static_assert(offsetof(ControlMessage, channel) == 2);
static_assert(offsetof(ControlMessage, max_message_size) == 4);
static_assert(offsetof(ControlMessage, name_length) == 8);
static_assert(offsetof(ControlMessage, reserved) == 10);
static_assert(offsetof(ControlMessage, credit_window) == 12);
static_assert(offsetof(ControlMessage, name) == 16);
static_assert(sizeof(ControlMessage) == 64);
static_assert(std::is_trivially_copyable_v<ControlMessage> &&
              std::is_standard_layout_v<ControlMessage>);

enum class ControlError : std::uint8_t {
  none,
  bad_length,        // the record is not sizeof(ControlMessage) bytes
  bad_type,          // neither open nor close
  bad_channel,       // id 0 or above kMaxChannelId
  bad_name,          // empty, too long, contains NUL or a control byte, or junk after it
  nonzero_reserved,  // reserved bytes are not zero
  bad_window,        // open: credit_window outside kMinCreditWindow..kMaxCreditWindow;
                     // close, abort: not zero
};

[[nodiscard]] constexpr const char* describe(ControlError error) noexcept {
  switch (error) {
    case ControlError::none: return "ok";
    case ControlError::bad_length: return "control record is not 64 bytes";
    case ControlError::bad_type: return "control record has an unknown type";
    case ControlError::bad_channel: return "control record names channel id 0 or above 255";
    case ControlError::bad_name: return "control record has an invalid channel name";
    case ControlError::nonzero_reserved: return "control record has non-zero reserved bytes";
    case ControlError::bad_window: return "control record has an invalid credit_window";
  }
  return "unknown control error";
}

// A channel name is 1..kMaxChannelName printable ASCII bytes.
[[nodiscard]] constexpr bool valid_channel_name(const char* name, std::size_t length) noexcept {
  if (length == 0 || length > kMaxChannelName) return false;
  for (std::size_t i = 0; i < length; ++i) {
    if (name[i] < 0x20 || name[i] > 0x7e) return false;
  }
  return true;
}

// Fills `out` for `type`; false when the name or id is invalid.
[[nodiscard]] constexpr bool encode_control(ControlType type, std::uint16_t channel,
                                            const char* name, std::size_t name_length,
                                            std::uint32_t max_message_size,
                                            std::uint32_t credit_window,
                                            ControlMessage& out) noexcept {
  if (channel == kControlChannel || channel > kMaxChannelId) return false;
  if (type == ControlType::open &&
      (credit_window < kMinCreditWindow || credit_window > kMaxCreditWindow)) {
    return false;
  }
  if (!valid_channel_name(name, name_length)) return false;
  out = {};
  out.type = static_cast<std::uint16_t>(type);
  out.channel = channel;
  out.max_message_size = type == ControlType::open ? max_message_size : 0;
  out.credit_window = type == ControlType::open ? credit_window : 0;
  out.name_length = static_cast<std::uint16_t>(name_length);
  for (std::size_t i = 0; i < name_length; ++i) out.name[i] = name[i];
  return true;
}

// Copies the record out once (the peer may change it meanwhile) and checks
// every field of the copy.
[[nodiscard]] inline ControlError decode_control(std::span<const std::byte> record,
                                                 ControlMessage& out) noexcept {
  if (record.size() != sizeof(ControlMessage)) return ControlError::bad_length;
  __builtin_memcpy(&out, record.data(), sizeof(ControlMessage));
  if (out.type != static_cast<std::uint16_t>(ControlType::open) &&
      out.type != static_cast<std::uint16_t>(ControlType::close) &&
      out.type != static_cast<std::uint16_t>(ControlType::abort)) {
    return ControlError::bad_type;
  }
  if (out.channel == kControlChannel || out.channel > kMaxChannelId) {
    return ControlError::bad_channel;
  }
  if (out.reserved != 0) return ControlError::nonzero_reserved;
  if (out.type == static_cast<std::uint16_t>(ControlType::open)
          ? out.credit_window < kMinCreditWindow || out.credit_window > kMaxCreditWindow
          : out.credit_window != 0 || out.max_message_size != 0) {
    return ControlError::bad_window;
  }
  if (!valid_channel_name(out.name, out.name_length)) return ControlError::bad_name;
  for (std::size_t i = out.name_length; i < kMaxChannelName; ++i) {
    if (out.name[i] != 0) return ControlError::bad_name;
  }
  return ControlError::none;
}

// Control records waiting for ring room, oldest first, in fixed storage.
// Threading: the sending side's lock toward the peer.
template <std::size_t Capacity>
class ControlQueue {
 public:
  void clear() noexcept { count_ = 0; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  // Room for one more record at the back, or nullptr when full; fill it,
  // then commit_push().
  [[nodiscard]] ControlMessage* back_slot() noexcept {
    return count_ == Capacity ? nullptr : &records_[(head_ + count_) % Capacity];
  }
  void commit_push() noexcept { ++count_; }
  [[nodiscard]] const ControlMessage& front() const noexcept { return records_[head_ % Capacity]; }
  void pop() noexcept {
    ++head_;
    --count_;
  }

 private:
  ControlMessage records_[Capacity] = {};
  std::uint64_t head_ = 0;
  std::size_t count_ = 0;
};

}  // namespace cellink::transports
