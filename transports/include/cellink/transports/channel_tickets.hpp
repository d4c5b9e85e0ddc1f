// TicketQueue: the records a sender has reserved toward one peer, in ring
// order, sealed in any order and committed in ring order. Spec:
// docs/link.md, section 8.
//
// The ring commits and publishes its reservations oldest first. A Loan is a
// reservation that stays open while the application fills it; the records
// reserved after it (sends on other channels, control records) are sealed
// at once and wait here until every record before them is sealed or
// abandoned. So a Loan never blocks another channel's send: it only delays
// when that send becomes visible.
//
//   head                      tail
//    | open(loan) | sealed | sealed |        drain() stops at the open one
//
// Credit: each data record took its stride from the channel's window at
// reserve time; drain() settles it with the CreditGauge (the part a shorter
// commit did not use, or an abandoned record, goes back).
//
// Threading: the sending side's lock toward that peer.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/transports/channel_credit.hpp"
#include "cellink/transports/ring_producer.hpp"

namespace cellink::transports {

template <std::size_t MaxInFlight>
class TicketQueue {
  static_assert(MaxInFlight >= 2);

 public:
  static constexpr std::uint64_t kNoTicket = ~std::uint64_t{0};

  // What the owner of a reservation holds: hand it back to seal() or abandon().
  struct Ticket {
    std::uint64_t serial = kNoTicket;
    std::span<std::byte> payload;
  };

  void clear() noexcept {
    head_ = tail_ = 0;
    open_ = 0;
  }
  [[nodiscard]] bool full() const noexcept { return tail_ - head_ == MaxInFlight; }
  [[nodiscard]] bool empty() const noexcept { return tail_ == head_; }
  // Tickets handed out and neither sealed nor abandoned (Loans, mostly).
  [[nodiscard]] std::uint32_t open() const noexcept { return open_; }

  // Queues `reservation` (made on the ring just now) for local channel `id`
  // (0: a control record, which takes no credit), sent to the receiver's id
  // `remote`, with `charged` bytes of credit taken. Precondition: !full().
  Ticket add(const RingProducer::Reservation& reservation, std::uint16_t id, std::uint16_t remote,
             std::uint32_t charged) noexcept {
    Slot& slot = slots_[tail_ % MaxInFlight];
    slot = {};
    slot.reservation = reservation;
    slot.id = id;
    slot.remote = remote;
    slot.charged = charged;
    ++open_;
    return {tail_++, reservation.payload};
  }

  // Seals a ticket with `used` bytes and record flags; `message_end` counts
  // a whole message for the credit gauge. Returns the channel id it was
  // for, or -1 when the ticket is not an open one of this queue.
  int seal(const Ticket& ticket, std::uint32_t used, std::uint16_t flags,
           bool message_end) noexcept {
    Slot* slot = find(ticket.serial);
    if (slot == nullptr || used > slot->reservation.payload.size()) return -1;
    slot->used = used;
    slot->flags = flags;
    slot->message_end = message_end;
    slot->state = State::sealed;
    --open_;
    return slot->id;
  }

  // Gives a ticket up: its record becomes padding. False when not open.
  bool abandon(const Ticket& ticket) noexcept {
    Slot* slot = find(ticket.serial);
    if (slot == nullptr) return false;
    slot->state = State::abandoned;
    --open_;
    return true;
  }

  // Commits the sealed prefix to `producer` in ring order and settles its
  // credit with `gauge`. Returns false when the ring refused a commit
  // (it broke); `committed` says whether anything went to the ring.
  [[nodiscard]] bool drain(RingProducer& producer, CreditGauge& gauge, bool& committed) noexcept {
    committed = false;
    while (head_ != tail_) {
      Slot& slot = slots_[head_ % MaxInFlight];
      if (slot.state == State::open) break;
      if (slot.state == State::sealed) {
        if (producer.commit(slot.reservation, slot.used, slot.flags) != ProduceStatus::ok) {
          return false;
        }
        if (slot.id != 0) {
          const auto stride = static_cast<std::uint32_t>(record_stride(slot.used));
          gauge.untake(slot.remote, slot.charged - stride);
          gauge.sent(slot.remote, stride, slot.message_end ? 1 : 0);
        }
      } else {
        (void)producer.abandon(slot.reservation);
        if (slot.id != 0) gauge.untake(slot.remote, slot.charged);
      }
      ++head_;
      committed = true;
    }
    return true;
  }

 private:
  enum class State : std::uint8_t { open, sealed, abandoned };
  struct Slot {
    RingProducer::Reservation reservation;
    std::uint16_t id = 0;       // our local id; 0: a control record (no credit)
    std::uint16_t remote = 0;   // the receiver's id
    std::uint32_t charged = 0;  // credit taken at reserve time
    std::uint32_t used = 0;
    std::uint16_t flags = 0;
    State state = State::open;
    bool message_end = false;  // the last record of a message
  };

  [[nodiscard]] Slot* find(std::uint64_t serial) noexcept {
    if (serial < head_ || serial >= tail_) return nullptr;
    Slot& slot = slots_[serial % MaxInFlight];
    return slot.state == State::open ? &slot : nullptr;
  }

  Slot slots_[MaxInFlight] = {};  // [head_, tail_) in ring order
  std::uint64_t head_ = 0;
  std::uint64_t tail_ = 0;
  std::uint32_t open_ = 0;
};

}  // namespace cellink::transports
