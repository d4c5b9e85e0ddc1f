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
  bool fragmenting = false;     // a fragmented message is half out
  bool abort_pending = false;   // it was given up half out: an abort is owed
  std::uint16_t sent_to = 0;    // the remote id the current session's records went to
};

// One name the peer announced, whether or not we opened it.
struct RemoteName {
  ChannelName name;
  std::uint16_t id = 0;  // the peer's id for it; 0: slot free
  std::uint32_t max_message_size = 0;
  std::uint32_t window = 0;
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
  void forget_remotes() noexcept {
    for (std::size_t i = 0; i < remote_count; ++i) remote[i] = {};
    remote_count = 0;
  }
};

}  // namespace cellink::transports
