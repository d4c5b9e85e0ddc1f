// Per-channel flow control: the credit table a receiver publishes, and the
// two halves that use it. Spec: docs/link.md, section 7.
//
// Receiver r grants every channel it opened toward sender s a window of W
// bytes (announced in its open control record, channel_control.hpp). s may
// have at most W bytes of records (record_stride(), header and padding
// included) on that channel that r has not returned yet. r returns a
// record's bytes once the record no longer costs it memory on that channel:
// the application released the message, it was dropped, or it was a
// fragment copied into a reassembly. So a channel whose reader stops can
// fill only its own window, never the ring that its siblings share.
//
//  CreditTable: in r's output section, one per other peer s (link_format.hpp)
//  +0x000  CreditEntry[0]      unused: channel 0 (control) needs no credit
//  +0x008  CreditEntry[c]      returned u32, delivered u32, for r's channel id c
//  ...     CreditEntry[255]                                  written by r only
//
// `returned` counts bytes and `delivered` counts whole messages the
// application released, both for the current session of the pair (the
// table is zeroed when r acks a new session of s). They are free-running u32
// and wrap: every comparison is modulo 2^32, exact while W < 2^31.
//
// The sender treats the table as hostile: each read is checked (never
// backwards, never past what was sent) and a bad value latches a
// CreditFault on that channel alone.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cellink/transports/ring_format.hpp"

namespace cellink::transports {

inline constexpr std::size_t kCreditEntries = 256;  // one per channel id (0..kMaxChannelId)

struct CreditEntry {
  std::uint32_t returned;   // bytes of records given back (mod 2^32)
  std::uint32_t delivered;  // messages the application released (mod 2^32)
};
static_assert(offsetof(CreditEntry, returned) == 0);
static_assert(offsetof(CreditEntry, delivered) == 4);
static_assert(sizeof(CreditEntry) == 8);

struct CreditTable {
  CreditEntry entry[kCreditEntries];
};
static_assert(sizeof(CreditTable) == 2048);
static_assert(sizeof(CreditTable) % kCacheLine == 0);
static_assert(std::is_trivially_copyable_v<CreditTable> && std::is_standard_layout_v<CreditTable>);

// The smallest window a receiver may grant: one record of 56 payload bytes.
inline constexpr std::uint32_t kMinCreditWindow = 64;
// The largest: comparisons modulo 2^32 stay exact below 2^31.
inline constexpr std::uint32_t kMaxCreditWindow = 0x7fffffc0U;

// The largest payload one record may carry on a channel with `window`.
[[nodiscard]] constexpr std::uint32_t max_payload_for_window(std::uint32_t window) noexcept {
  return (window & ~static_cast<std::uint32_t>(kRecordAlignment - 1)) -
         static_cast<std::uint32_t>(sizeof(RecordHeader));
}
static_assert(record_stride(max_payload_for_window(kMinCreditWindow)) == kMinCreditWindow);
static_assert(record_stride(max_payload_for_window(1000)) <= 1000);

enum class CreditFault : std::uint8_t {
  none,
  returned_went_backwards,   // `returned` fell below a value already seen
  returned_beyond_sent,      // `returned` claims more bytes than were sent
  delivered_went_backwards,  // `delivered` fell below a value already seen
  delivered_beyond_sent,     // `delivered` claims more messages than were sent
};

[[nodiscard]] constexpr const char* describe(CreditFault fault) noexcept {
  switch (fault) {
    case CreditFault::none: return "no fault";
    case CreditFault::returned_went_backwards: return "credit 'returned' moved backwards";
    case CreditFault::returned_beyond_sent: return "credit 'returned' exceeds the bytes sent";
    case CreditFault::delivered_went_backwards: return "credit 'delivered' moved backwards";
    case CreditFault::delivered_beyond_sent: return "credit 'delivered' exceeds the messages sent";
  }
  return "unknown credit fault";
}

// The receiver's half: publishes what it gave back, per channel, in its own
// table. Threading: whoever serialises the receiving side.
class CreditLedger {
 public:
  // Zeroes `table` (our memory) for a new session. The caller's next release
  // store (the link's ack, R5) publishes the zeros.
  void attach(CreditTable* table) noexcept {
    table_ = table;
    for (std::size_t id = 0; id < kCreditEntries; ++id) {
      returned_[id] = 0;
      delivered_[id] = 0;
      std::atomic_ref<std::uint32_t>(table->entry[id].returned).store(0, std::memory_order_relaxed);
      std::atomic_ref<std::uint32_t>(table->entry[id].delivered)
          .store(0, std::memory_order_relaxed);
    }
  }
  void detach() noexcept { table_ = nullptr; }

  // Gives `bytes` back on `channel` and counts `messages` more delivered.
  void give_back(std::uint16_t channel, std::uint32_t bytes, std::uint32_t messages) noexcept {
    if (table_ == nullptr || channel >= kCreditEntries) return;
    if (messages != 0) {
      delivered_[channel] += messages;
      // Relaxed: a progress count; ordered before `returned` by R7.
      std::atomic_ref<std::uint32_t>(table_->entry[channel].delivered)
          .store(delivered_[channel], std::memory_order_relaxed);
    }
    if (bytes != 0) {
      returned_[channel] += bytes;
      // R7: our reads of the records behind these bytes are done before the
      // sender reuses the credit; pairs with A7 in CreditGauge::refresh().
      std::atomic_ref<std::uint32_t>(table_->entry[channel].returned)
          .store(returned_[channel], std::memory_order_release);
    }
  }

 private:
  CreditTable* table_ = nullptr;
  std::uint32_t returned_[kCreditEntries] = {};  // shadows: never read back from shared memory
  std::uint32_t delivered_[kCreditEntries] = {};
};

// The sender's half: per remote channel id, the window the receiver
// granted, what was sent and what the receiver's table says came back.
// Threading: whoever serialises the sending side toward that receiver.
class CreditGauge {
 public:
  // A new session: the receiver zeroed `table` before it acked.
  void attach(const CreditTable* table) noexcept {
    table_ = table;
    for (std::size_t id = 0; id < kCreditEntries; ++id) channels_[id] = {};
  }
  void detach() noexcept { table_ = nullptr; }

  // Takes `bytes` of credit for a record on channel `id`, whose receiver
  // granted `window` (its open announcement). False when the window has no
  // room even after re-reading the receiver's table, or when the channel's
  // credit is faulted (see fault()). Counters carry on across
  // announcements: the receiver's table counts per session.
  [[nodiscard]] bool take(std::uint16_t id, std::uint32_t bytes, std::uint32_t window) noexcept {
    Channel& channel = channels_[id];
    if (channel.fault != CreditFault::none) return false;
    if (std::uint64_t{in_use(channel)} + bytes > window) {
      if (!refresh(id) || std::uint64_t{in_use(channel)} + bytes > window) return false;
    }
    channel.taken += bytes;
    return true;
  }
  // Returns credit taken for a reservation that shrank or was abandoned.
  void untake(std::uint16_t id, std::uint32_t bytes) noexcept { channels_[id].taken -= bytes; }
  // A record of `bytes` went out on `id`; `messages` is 1 for a message's last record.
  void sent(std::uint16_t id, std::uint32_t bytes, std::uint32_t messages) noexcept {
    Channel& channel = channels_[id];
    channel.taken -= bytes;
    channel.sent += bytes;
    channel.messages += messages;
  }

  // Re-reads the receiver's entry for `id` and checks it. False (and the
  // channel's fault latched) when it is impossible.
  [[nodiscard]] bool refresh(std::uint16_t id) noexcept {
    Channel& channel = channels_[id];
    if (channel.fault != CreditFault::none) return false;
    if (table_ == nullptr) return true;
    // A7: the receiver is done with the bytes it returned; pairs with R7 in
    // CreditLedger::give_back().
    const std::uint32_t returned =
        load_shared(table_->entry[id].returned, std::memory_order_acquire);
    const std::uint32_t delivered =
        load_shared(table_->entry[id].delivered, std::memory_order_relaxed);
    // Modulo 2^32: a value below the last one seen wraps to huge.
    if (returned - channel.returned > channel.sent - channel.returned) {
      return latch(channel,
                   returned - channel.returned > 0x80000000U ? CreditFault::returned_went_backwards
                                                             : CreditFault::returned_beyond_sent,
                   returned, channel.sent);
    }
    if (delivered - channel.delivered > channel.messages - channel.delivered) {
      return latch(channel,
                   delivered - channel.delivered > 0x80000000U
                       ? CreditFault::delivered_went_backwards
                       : CreditFault::delivered_beyond_sent,
                   delivered, channel.messages);
    }
    channel.returned = returned;
    channel.delivered = delivered;
    return true;
  }

  [[nodiscard]] CreditFault fault(std::uint16_t id) const noexcept { return channels_[id].fault; }
  // The offending value read from the table and the bound it broke.
  [[nodiscard]] std::uint32_t fault_value(std::uint16_t id) const noexcept {
    return channels_[id].fault_value;
  }
  [[nodiscard]] std::uint32_t fault_limit(std::uint16_t id) const noexcept {
    return channels_[id].fault_limit;
  }
  // Messages sent on `id` this session, and how many the receiver said it
  // delivered when last read (refresh() first for a fresh value).
  [[nodiscard]] std::uint32_t messages_sent(std::uint16_t id) const noexcept {
    return channels_[id].messages;
  }
  [[nodiscard]] std::uint32_t messages_delivered(std::uint16_t id) const noexcept {
    return channels_[id].delivered;
  }
  // Bytes of the window in use: sent and not returned, plus taken for
  // reservations in flight.
  [[nodiscard]] std::uint32_t in_use(std::uint16_t id) const noexcept {
    return in_use(channels_[id]);
  }

 private:
  struct Channel {
    std::uint32_t sent = 0;       // bytes of committed records (mod 2^32)
    std::uint32_t taken = 0;      // bytes held by reservations in flight
    std::uint32_t returned = 0;   // validated `returned` last read
    std::uint32_t messages = 0;   // whole messages committed (mod 2^32)
    std::uint32_t delivered = 0;  // validated `delivered` last read
    CreditFault fault = CreditFault::none;
    std::uint32_t fault_value = 0;
    std::uint32_t fault_limit = 0;
  };

  [[nodiscard]] static std::uint32_t in_use(const Channel& channel) noexcept {
    return channel.sent - channel.returned + channel.taken;
  }
  static bool latch(Channel& channel, CreditFault fault, std::uint32_t value,
                    std::uint32_t limit) noexcept {
    channel.fault = fault;
    channel.fault_value = value;
    channel.fault_limit = limit;
    return false;
  }

  const CreditTable* table_ = nullptr;
  Channel channels_[kCreditEntries] = {};
};

}  // namespace cellink::transports
