// The name service's tables for one peer: the channels we opened toward it
// (by our local id) and the names it announced to us (by its id). Spec:
// docs/link.md, section 6. Fixed storage, no heap: ChannelCore holds one
// ChannelNames per peer.
//
// Threading: the receiving side's lock (ChannelCore's rx functions) guards
// everything but the atomics of LocalChannel, which the sending side reads
// without it (each load says what it pairs with).
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "cellink/transports/channel_control.hpp"
#include "cellink/transports/channel_status.hpp"

namespace cellink::transports {

// A name as it travels: up to kMaxChannelName bytes, not NUL-terminated.
struct ChannelName {
  char bytes[kMaxChannelName] = {};
  std::uint16_t length = 0;

  [[nodiscard]] bool assign(const char* name, std::size_t name_length) noexcept {
    if (!valid_channel_name(name, name_length)) return false;
    for (std::size_t i = 0; i < kMaxChannelName; ++i) bytes[i] = i < name_length ? name[i] : 0;
    length = static_cast<std::uint16_t>(name_length);
    return true;
  }
  [[nodiscard]] bool equals(const char* name, std::size_t name_length) const noexcept {
    if (name_length != length) return false;
    for (std::size_t i = 0; i < name_length; ++i) {
      if (bytes[i] != name[i]) return false;
    }
    return true;
  }
};

// One channel we opened toward the peer, under our local id.
struct LocalChannel {
  bool open = false;
  ChannelName name;

  // What the peer announced for the same name; 0 while it has not (or
  // withdrew it). Written by the receiving side (rx lock) with release;
  // read by senders with acquire (A10 pairs with R10 in ChannelCore).
  std::atomic<std::uint16_t> remote_id{0};
  std::atomic<std::uint32_t> remote_max{0};     // its max_message_size; published by R10
  std::atomic<std::uint32_t> remote_window{0};  // its credit window; published by R10
  std::atomic<bool> remote_closed{false};       // it closed the name after announcing it

  // Receiving side (rx lock).
  bool close_reported = false;  // the peer's close was reported to a receiver
  std::uint64_t receive_resets_seen = 0;
  std::uint32_t in_window = 0;  // bytes received on this channel not yet given back
  // Reassembly bookkeeping; the bytes themselves live with the caller.
  bool partial_active = false;
  bool partial_overflow = false;
  std::uint32_t partial_size = 0;  // bytes of the message so far (up to max_message_size)

  // Sending side (the pair's tx lock), except send_resets_seen (atomic: a
  // sender reads it before it takes the lock).
  std::atomic<std::uint64_t> send_resets_seen{0};
  bool fragmenting = false;    // a fragmented message is half out
  bool abort_pending = false;  // it was given up half out: an abort is owed
  std::uint16_t sent_to = 0;   // the remote id the current session's records went to
};

// One name the peer announced, whether or not we opened it.
struct RemoteName {
  ChannelName name;
  std::uint16_t id = 0;  // the peer's id for it; 0: slot free
  std::uint32_t max_message_size = 0;
  std::uint32_t window = 0;
};

// Connects our channel to the peer's announcement of the same name.
inline void connect(LocalChannel& channel, const RemoteName& remote) noexcept {
  channel.remote_max.store(remote.max_message_size, std::memory_order_relaxed);
  channel.remote_window.store(remote.window, std::memory_order_relaxed);
  channel.remote_closed.store(false, std::memory_order_relaxed);
  channel.close_reported = false;
  // R10: the maximum and window are visible before the id; pairs with A10
  // in ChannelCore::preflight().
  channel.remote_id.store(remote.id, std::memory_order_release);
}

// What one valid control record did to the tables (ChannelNames::apply()).
struct NameUpdate {
  enum class Kind : std::uint8_t {
    announced,  // an open was recorded (and connected our channel, if `local`)
    withdrawn,  // a close withdrew the name (our channel `local`, if any, lost its peer)
    aborted,    // an abort for our channel `local`: drop its reassembly
    rejected,   // a contradiction: `fault`, `field`, `value` and `limit` say which
  };
  Kind kind = Kind::rejected;
  std::uint16_t local = 0;  // our id for the name, 0 when we did not open it
  ChannelFault fault = ChannelFault::none;
  const char* field = "";
  std::uint64_t value = 0;
  std::uint64_t limit = 0;
};

template <std::size_t MaxChannels>
struct ChannelNames {
  static_assert(MaxChannels >= 1 && MaxChannels <= kMaxChannelId);

  LocalChannel local[MaxChannels + 1];  // index: our id; [0] unused (control)
  RemoteName remote[MaxChannels];
  std::size_t remote_count = 0;

  // Our id for `name`, or 0.
  [[nodiscard]] std::uint16_t find_local(const ChannelName& name) const noexcept {
    for (std::uint16_t id = 1; id <= MaxChannels; ++id) {
      if (local[id].open && local[id].name.equals(name.bytes, name.length)) return id;
    }
    return 0;
  }
  [[nodiscard]] RemoteName* find_remote(const ChannelName& name) noexcept {
    for (std::size_t i = 0; i < remote_count; ++i) {
      if (remote[i].name.equals(name.bytes, name.length)) return &remote[i];
    }
    return nullptr;
  }
  [[nodiscard]] RemoteName* find_remote_id(std::uint16_t id) noexcept {
    for (std::size_t i = 0; i < remote_count; ++i) {
      if (remote[i].id == id) return &remote[i];
    }
    return nullptr;
  }
  // A free slot for a new announcement, or nullptr when the table is full.
  [[nodiscard]] RemoteName* add_remote() noexcept {
    return remote_count < MaxChannels ? &remote[remote_count++] : nullptr;
  }
  void erase_remote(RemoteName* entry) noexcept {
    *entry = remote[--remote_count];
    remote[remote_count] = {};
  }
  // The name service: applies one control record (decode_control() passed)
  // from the peer. Rejects contradictions without changing anything: a name
  // announced again under another id, an id announced for a second name,
  // a close or abort that matches no announcement, more names than fit.
  [[nodiscard]] NameUpdate apply(const ControlMessage& message) noexcept {
    ChannelName name;
    (void)name.assign(message.name, message.name_length);  // decode_control() checked it
    NameUpdate update;
    update.local = find_local(name);
    const auto reject = [&](ChannelFault fault, const char* field, std::uint64_t value,
                            std::uint64_t limit) {
      update.kind = NameUpdate::Kind::rejected;
      update.fault = fault;
      update.field = field;
      update.value = value;
      update.limit = limit;
      return update;
    };
    if (message.type == static_cast<std::uint16_t>(ControlType::abort)) {
      // Addressed by our id for the channel; the name must agree.
      if (message.channel > MaxChannels || !local[message.channel].open ||
          !local[message.channel].name.equals(name.bytes, name.length)) {
        return reject(ChannelFault::unknown_close, "channel", message.channel, MaxChannels);
      }
      update.kind = NameUpdate::Kind::aborted;
      update.local = message.channel;
      return update;
    }
    RemoteName* remote_entry = find_remote(name);
    if (message.type == static_cast<std::uint16_t>(ControlType::open)) {
      RemoteName* holder = find_remote_id(message.channel);
      if ((remote_entry != nullptr && remote_entry->id != message.channel) ||
          (holder != nullptr && holder != remote_entry)) {
        return reject(ChannelFault::announced_twice, "channel", message.channel,
                      remote_entry != nullptr ? remote_entry->id : holder->id);
      }
      if (remote_entry == nullptr) remote_entry = add_remote();
      if (remote_entry == nullptr) {
        return reject(ChannelFault::too_many_names, "name", MaxChannels + 1, MaxChannels);
      }
      remote_entry->name = name;
      remote_entry->id = message.channel;
      remote_entry->max_message_size = message.max_message_size;
      remote_entry->window = message.credit_window;
      if (update.local != 0) connect(local[update.local], *remote_entry);
      update.kind = NameUpdate::Kind::announced;
      return update;
    }
    if (remote_entry == nullptr || remote_entry->id != message.channel) {
      return reject(ChannelFault::unknown_close, "channel", message.channel,
                    remote_entry != nullptr ? remote_entry->id : 0);
    }
    erase_remote(remote_entry);
    if (update.local != 0) {
      LocalChannel& channel = local[update.local];
      channel.remote_id.store(0, std::memory_order_relaxed);
      channel.close_reported = false;
      // R13: the withdrawn id is visible with the close; pairs with A10.
      channel.remote_closed.store(true, std::memory_order_release);
    }
    update.kind = NameUpdate::Kind::withdrawn;
    return update;
  }

  void forget_remotes() noexcept {
    for (std::size_t i = 0; i < remote_count; ++i) remote[i] = {};
    remote_count = 0;
  }
};

}  // namespace cellink::transports
