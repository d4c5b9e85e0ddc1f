// Message: a received message's view, its moves and its release (which
// gives the record back and counts it as delivered). Contract: channel.hpp.
// Lock order and ownership: session_core.hpp.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "cellink/linux-uio/channel.hpp"
#include "session_core.hpp"

namespace cellink::linux_uio {
namespace {

using detail::ChannelState;
using detail::Core;

constexpr std::uint64_t kNoRecord = ~std::uint64_t{0};

}  // namespace

Message::Message(Message&& other) noexcept
    : error_(other.error_),
      owner_(other.owner_),
      payload_(other.payload_),
      record_sequence_(other.record_sequence_),
      peer_epoch_(other.peer_epoch_),
      credit_(other.credit_),
      copy_(std::move(other.copy_)) {
  if (record_sequence_ == kNoRecord && !copy_.empty()) payload_ = copy_;
  other.owner_ = nullptr;
  other.payload_ = {};
  other.record_sequence_ = kNoRecord;
}

Message& Message::operator=(Message&& other) noexcept {
  if (this != &other) {
    release();
    error_ = other.error_;
    owner_ = other.owner_;
    payload_ = other.payload_;
    record_sequence_ = other.record_sequence_;
    peer_epoch_ = other.peer_epoch_;
    credit_ = other.credit_;
    copy_ = std::move(other.copy_);
    if (record_sequence_ == kNoRecord && !copy_.empty()) payload_ = copy_;
    other.owner_ = nullptr;
    other.payload_ = {};
    other.record_sequence_ = kNoRecord;
  }
  return *this;
}

std::size_t Message::copy_out(std::span<std::byte> destination) const noexcept {
  const std::size_t size = std::min(destination.size(), payload_.size());
  std::copy_n(payload_.data(), size, destination.data());
  return size;
}

std::vector<std::byte> Message::copy() const {
  return {payload_.begin(), payload_.end()};
}

void Message::release() noexcept {
  ChannelState::release(*this);
}

Message ChannelState::make_message(ChannelState& owner, detail::Inbound&& inbound) {
  if (inbound.error != MessageErrc{}) return Message{inbound.error};
  Message message;
  message.owner_ = &owner;
  ++owner.held_messages;
  message.peer_epoch_ = inbound.peer_epoch;
  message.record_sequence_ = inbound.sequence;
  message.credit_ = inbound.credit;
  if (inbound.sequence != kNoRecord) {
    message.payload_ = inbound.payload;
  } else {
    message.copy_ = std::move(inbound.copy);
    message.payload_ = message.copy_;
  }
  return message;
}

Message ChannelState::make_message(ChannelState& owner, const transports::Record& record,
                                   std::uint32_t peer_epoch, std::uint32_t credit) {
  Message message;
  message.owner_ = &owner;
  ++owner.held_messages;
  message.peer_epoch_ = peer_epoch;
  message.record_sequence_ = record.sequence;
  message.credit_ = credit;
  message.payload_ = record.payload;
  return message;
}

void ChannelState::release(Message& message) noexcept {
  if (message.owner_ == nullptr) return;
  ChannelState& owner = *message.owner_;
  message.owner_ = nullptr;
  Core& core = *owner.core;
  std::shared_ptr<ChannelState> last;  // destroyed after the unlock, if the channel is closed
  {
    const std::lock_guard lock(core.mutex);
    core.protocol.release_message(owner.peer, message.peer_epoch_, owner.local_id,
                                  message.record_sequence_, message.credit_, true);
    if (core.sleepers != 0) core.wake_sleepers();
    if (--owner.held_messages == 0 && owner.closed.load(std::memory_order_relaxed)) {
      const auto parked = std::find_if(
          core.retired.begin(), core.retired.end(),
          [&](const std::shared_ptr<ChannelState>& state) { return state.get() == &owner; });
      if (parked != core.retired.end()) {
        last = std::move(*parked);
        core.retired.erase(parked);
      }
    }
  }
  message.record_sequence_ = kNoRecord;
  message.payload_ = {};
  message.copy_.clear();
}

}  // namespace cellink::linux_uio
