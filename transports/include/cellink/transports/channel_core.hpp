// ChannelCore: the message layer's protocol, the same in a Linux process and
// in an inmate. Spec: docs/link.md, sections 6 to 8.
//
// On top of a Link (handshake and one ring per ordered peer pair) it runs:
//   - the name service on channel 0 (channel ids, open, close, abort);
//   - fragmentation and the bookkeeping of reassembly (the bytes themselves
//     are the caller's: the core tells it what to append, keep or drop);
//   - per-channel credits (channel_credit.hpp), so a channel whose reader
//     stops fills only its own window, and queued records that pin more
//     than half a ring are handed to the caller to copy out (spill);
//   - the space-freed doorbell: a sender that waits for room asks for one,
//     and the receiver rings only when asked (Link::want_space);
//   - peer reset: per-channel reset reports, the drain of the ended session,
//     and the per-pair and per-channel delivery counters;
//   - sends that do not block one another: records are reserved in ring
//     order and published in that order once sealed, so a Loan in flight on
//     one channel lets sends on other channels go on (they become visible
//     when the loan is committed or abandoned).
//
// It has no clock, no lock and no memory of its own beyond fixed arrays.
// Waiting, timeouts and the bytes of copied messages belong to the caller
// (the hosted Session in linux-uio/, or an inmate's loop).
//
// Threading: two sides, each serialised by the caller.
//   - rx: init(), poll(), read(), take_next(), release_*(), open(), close(),
//     finish_drain() and the accessors that say "rx";
//   - tx(peer): preflight() needs no lock (atomics); write(), reserve(),
//     seal(), abandon(), give_up(), want_space(), flush_control() need the
//     caller's lock for that peer.
//   open(), close() and report_broken() also need the peer's tx lock (they
//   queue control records or end its session); poll() and finish_drain()
//   need every tx lock (they re-initialise rings).
// One thread may play both sides (an inmate, a single-threaded Session).
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/device.hpp"
#include "cellink/transports/channel_control.hpp"
#include "cellink/transports/channel_credit.hpp"
#include "cellink/transports/channel_names.hpp"
#include "cellink/transports/channel_status.hpp"
#include "cellink/transports/channel_tickets.hpp"
#include "cellink/transports/link.hpp"

namespace cellink::transports {

struct ChannelCoreOptions {
  std::uint32_t max_message_size = 1U << 20;  // the largest message we accept
  // Bytes each channel's sender may have outstanding toward us; 0: the
  // ring's capacity. A stalled channel's records are copied off the ring
  // once they pin half of it (spill), so the window bounds that copy, and
  // the ring keeps moving for the other channels. Clamped to
  // kMinCreditWindow..the ring's capacity.
  std::uint32_t credit_window = 0;
};

template <std::size_t MaxHeld = 64, std::size_t MaxChannels = kMaxChannelId,
          std::size_t MaxPeers = ivshmem::kMaxPeers, std::size_t MaxInFlight = 16,
          std::size_t MaxControlQueued = 2 * kMaxChannelId + 2>
class ChannelCore {
 public:
  using Names = ChannelNames<MaxChannels>;
  static constexpr std::uint64_t kNoRecord = ~std::uint64_t{0};

  // A reservation handed out by reserve(): seal() or abandon() it.
  using Ticket = typename TicketQueue<MaxInFlight>::Ticket;

  ChannelCore() noexcept = default;
  ChannelCore(const ChannelCore&) = delete;
  ChannelCore& operator=(const ChannelCore&) = delete;

  [[nodiscard]] LinkInitStatus init(ivshmem::Device& device, ChannelCoreOptions options) noexcept {
    const LinkInitStatus status = link_.init(device);
    if (status != LinkInitStatus::ok) return status;
    options_ = options;
    const std::uint64_t capacity = link_.geometry().ring_capacity_bytes();
    std::uint64_t window = options.credit_window == 0 ? capacity : options.credit_window;
    if (window > capacity) window = capacity;
    if (window < kMinCreditWindow) window = kMinCreditWindow;
    window_ = static_cast<std::uint32_t>(window);
    max_record_ = static_cast<std::uint32_t>(max_payload(link_.geometry().ring_capacity_bytes()));
    return LinkInitStatus::ok;
  }
  void leave() noexcept { link_.leave(); }

  [[nodiscard]] Link<MaxHeld, MaxPeers>& link() noexcept { return link_; }
  [[nodiscard]] const Link<MaxHeld, MaxPeers>& link() const noexcept { return link_; }
  // The largest payload of one record on this link.
  [[nodiscard]] std::uint32_t max_record() const noexcept { return max_record_; }
  [[nodiscard]] LocalChannel& channel(std::uint32_t peer, std::uint16_t id) noexcept {
    return names_[peer].local[id];
  }
  // Whether the pair with `peer` runs; senders read it without a lock.
  [[nodiscard]] bool running(std::uint32_t peer) const noexcept {
    // A11: the fresh pair state is visible; pairs with R11 in on_link_event().
    return pairs_[peer].running.load(std::memory_order_acquire);
  }
  // Resets of `peer` seen so far; senders read it without a lock.
  [[nodiscard]] std::uint64_t resets(std::uint32_t peer) const noexcept {
    // A12: the reset's bookkeeping is visible; pairs with R12 in on_link_event().
    return pairs_[peer].resets.load(std::memory_order_acquire);
  }
  // rx: what the last reset of `peer` ended.
  [[nodiscard]] const ResetCounts& last_reset(std::uint32_t peer) const noexcept {
    return pairs_[peer].last_reset;
  }
  // rx: for a restarted cell, how many of the messages its previous
  // incarnation sent `peer` in their last session the peer released. Final
  // once the pair runs again (the peer drained that session first).
  [[nodiscard]] DeliveryCount delivered_from_previous_run(std::uint32_t peer) const noexcept {
    const std::uint32_t previous = link_.previous_epoch();
    if (previous == 0 || peer >= link_.peer_count() || peer == link_.id()) return {};
    return link_.delivered_in_session(peer, previous, 0);
  }
  // rx: whether `peer` broke the pair (its memory is corrupt or hostile).
  [[nodiscard]] bool broken(std::uint32_t peer) const noexcept { return pairs_[peer].broken; }
  // rx: the counters. The sending side's ones are atomics, read here relaxed.
  [[nodiscard]] CoreStats stats() const noexcept {
    CoreStats stats = stats_;
    stats.doorbells_rung += tx_doorbells_.load(std::memory_order_relaxed);
    stats.protocol_faults = faults_.load(std::memory_order_relaxed);
    return stats;
  }
  // The first protocol fault a peer committed, latched (fault == none: none
  // yet). Any thread: both sides latch faults, under a small spin lock.
  [[nodiscard]] ChannelDiagnostic diagnostic() const noexcept {
    const DiagnosticGuard guard(diagnostic_busy_);
    return diagnostic_;
  }
  // tx(peer): a Loan or a reservation is in flight, unsealed.
  [[nodiscard]] bool loan_in_flight(std::uint32_t peer) const noexcept {
    return pairs_[peer].tickets.open() != 0;
  }

  // ---- names (rx and the peer's tx lock) -------------------------------------

  // Opens `name` toward `peer` under a free local id, announcing it if the
  // pair runs. 0 when the name is already open toward that peer or no id is free.
  [[nodiscard]] std::uint16_t open(std::uint32_t peer, const char* name,
                                   std::size_t name_length) noexcept {
    ChannelName wanted;
    if (!wanted.assign(name, name_length)) return 0;
    Names& names = names_[peer];
    if (names.find_local(wanted) != 0) return 0;
    std::uint16_t id = 1;
    while (id <= MaxChannels && names.local[id].open) ++id;
    if (id > MaxChannels) return 0;
    LocalChannel& channel = names.local[id];
    channel.open = true;
    channel.name = wanted;
    channel.close_reported = false;
    channel.in_window = 0;
    channel.partial_active = channel.partial_overflow = false;
    channel.partial_size = 0;
    channel.fragmenting = channel.abort_pending = false;
    channel.remote_closed.store(false, std::memory_order_relaxed);
    const std::uint64_t resets_now = resets(peer);
    channel.receive_resets_seen = resets_now;
    channel.send_resets_seen.store(resets_now, std::memory_order_relaxed);
    if (RemoteName* remote = names.find_remote(wanted)) {
      connect(channel, *remote);
    } else {
      channel.remote_id.store(0, std::memory_order_relaxed);
    }
    if (running(peer)) {
      (void)queue_control(peer, ControlType::open, id, channel);
      flush_control(peer);
    }
    return id;
  }

  // Withdraws local channel `id`; the caller dropped its queue first
  // (release_message() for each). The id may be reused at once.
  void close(std::uint32_t peer, std::uint16_t id) noexcept {
    LocalChannel& channel = names_[peer].local[id];
    if (!channel.open) return;
    if (running(peer)) {
      (void)queue_control(peer, ControlType::close, id, channel);
      flush_control(peer);
    }
    channel.open = false;
    channel.remote_id.store(0, std::memory_order_relaxed);
  }

  // ---- sending ---------------------------------------------------------------

  // The checks every send and loan makes first, with no lock: a reset not
  // yet reported (reported once, then forgotten), the rendezvous, and the
  // receiver's maximum. (A local close is the caller's to check.) On ok,
  // `remote` is the id to send to.
  [[nodiscard]] ChannelStatus preflight(std::uint32_t peer, std::uint16_t id, std::size_t size,
                                        std::uint16_t& remote) noexcept {
    LocalChannel& channel = names_[peer].local[id];
    const std::uint64_t resets_now = resets(peer);
    if (resets_now != channel.send_resets_seen.load(std::memory_order_relaxed)) {
      channel.send_resets_seen.store(resets_now, std::memory_order_relaxed);
      return ChannelStatus::peer_reset;
    }
    // A10: the maximum and window stored before the id are visible; pairs
    // with R10 in connect().
    remote = channel.remote_id.load(std::memory_order_acquire);
    if (remote == 0) {
      return channel.remote_closed.load(std::memory_order_acquire) ? ChannelStatus::channel_closed
                                                                   : ChannelStatus::not_connected;
    }
    if (size > channel.remote_max.load(std::memory_order_relaxed)) {
      return ChannelStatus::message_too_large;
    }
    return ChannelStatus::ok;
  }

  // The largest payload one record may carry on local channel `id` (the
  // ring's limit and the receiver's window); 0 before the rendezvous.
  [[nodiscard]] std::uint32_t max_chunk(std::uint32_t peer, std::uint16_t id) const noexcept {
    const std::uint32_t window =
        names_[peer].local[id].remote_window.load(std::memory_order_relaxed);
    if (window < kMinCreditWindow) return 0;
    const std::uint32_t by_window = max_payload_for_window(window);
    return by_window < max_record_ ? by_window : max_record_;
  }

  // tx(peer): reserves a `size`-byte record on local channel `id`, sent to
  // `remote` (from preflight()), for the caller to fill and seal() (a Loan).
  // Writes any control records owed first (the name service, an abort for
  // a message given up).
  [[nodiscard]] ChannelStatus reserve(std::uint32_t peer, std::uint16_t id, std::uint16_t remote,
                                      std::uint32_t size, std::uint64_t resets_seen,
                                      Ticket& out) noexcept {
    Pair& pair = pairs_[peer];
    if (pair.tickets.full()) return ChannelStatus::loan_in_progress;
    RingProducer::Reservation reservation;
    const ChannelStatus status = prepare(peer, id, remote, size, resets_seen, reservation);
    if (status != ChannelStatus::ok) return status;
    out =
        pair.tickets.add(reservation, id, remote, static_cast<std::uint32_t>(record_stride(size)));
    return ChannelStatus::ok;
  }

  // tx(peer): writes `bytes` as one record on local channel `id` (a whole
  // message, or a fragment that the next record continues when `more`) and
  // publishes it. The fast path: with no Loan in flight the record goes
  // straight to the ring; behind a Loan it waits in the ticket queue.
  [[nodiscard]] ChannelStatus write(std::uint32_t peer, std::uint16_t id, std::uint16_t remote,
                                    std::span<const std::byte> bytes, bool more,
                                    std::uint64_t resets_seen) noexcept {
    Pair& pair = pairs_[peer];
    const auto size = static_cast<std::uint32_t>(bytes.size());
    if (!pair.tickets.empty()) {
      Ticket ticket;
      const ChannelStatus status = reserve(peer, id, remote, size, resets_seen, ticket);
      if (status != ChannelStatus::ok) return status;
      copy_bytes(ticket.payload, bytes);
      return seal(peer, ticket, size, more, resets_seen);
    }
    RingProducer::Reservation reservation;
    const ChannelStatus status = prepare(peer, id, remote, size, resets_seen, reservation);
    if (status != ChannelStatus::ok) return status;
    copy_bytes(reservation.payload, bytes);
    RingProducer& producer = link_.producer(peer);
    if (producer.commit(reservation, size, more ? kRecordMoreFragments : std::uint16_t{0}) !=
        ProduceStatus::ok) {
      return ChannelStatus::ring_broken;
    }
    link_.gauge(peer).sent(remote, static_cast<std::uint32_t>(record_stride(size)), more ? 0 : 1);
    names_[peer].local[id].fragmenting = more;
    if (!more) ++pair.sent_in_session;
    if (producer.publish(link_.device(), peer, link_.data_vector())) {
      // Relaxed: a count, summed by stats().
      tx_doorbells_.fetch_add(1, std::memory_order_relaxed);
    }
    return ChannelStatus::ok;
  }

  // tx(peer): seals a ticket with `used` bytes; `more` marks a fragment that
  // the next record of the channel continues. Publishes every sealed record
  // in ring order and rings the receiver if it asked. A ticket of an ended
  // session (`resets_seen` differs) is dropped: peer_reset.
  ChannelStatus seal(std::uint32_t peer, const Ticket& ticket, std::uint32_t used, bool more,
                     std::uint64_t resets_seen) noexcept {
    Pair& pair = pairs_[peer];
    if (resets(peer) != resets_seen || !running(peer)) return ChannelStatus::peer_reset;
    const int id =
        pair.tickets.seal(ticket, used, more ? kRecordMoreFragments : std::uint16_t{0}, !more);
    if (id < 0) return ChannelStatus::retry;
    names_[peer].local[id].fragmenting = more;
    if (!more) ++pair.sent_in_session;
    return drain_tickets(peer) ? ChannelStatus::ok : ChannelStatus::ring_broken;
  }

  // tx(peer): gives a ticket up; its record becomes padding.
  void abandon(std::uint32_t peer, const Ticket& ticket, std::uint64_t resets_seen) noexcept {
    Pair& pair = pairs_[peer];
    if (resets(peer) != resets_seen || !running(peer)) return;
    if (pair.tickets.abandon(ticket)) (void)drain_tickets(peer);
  }

  // tx(peer): a fragmented message on `id` was given up half out: the next
  // record on the channel is preceded by an abort so the receiver drops it.
  void give_up(std::uint32_t peer, std::uint16_t id) noexcept {
    LocalChannel& channel = names_[peer].local[id];
    if (channel.fragmenting) channel.abort_pending = true;
    channel.fragmenting = false;
  }

  // tx(peer): before waiting for room, asks the receiver for a space-freed
  // doorbell, then re-checks: true when room may have appeared meanwhile
  // (try again instead of sleeping).
  [[nodiscard]] bool want_space(std::uint32_t peer, std::uint16_t id, std::uint32_t size) noexcept {
    if (!running(peer)) return true;
    link_.want_space(peer);
    const LocalChannel& channel = names_[peer].local[id];
    const std::uint16_t remote = channel.remote_id.load(std::memory_order_acquire);  // A10
    if (remote == 0) return true;
    const std::uint64_t stride = record_stride(size);
    CreditGauge& gauge = link_.gauge(peer);
    if (!gauge.refresh(remote)) return true;  // reserve() reports the fault
    if (gauge.in_use(remote) + stride > channel.remote_window.load(std::memory_order_relaxed)) {
      return false;
    }
    return link_.producer(peer).has_room(size);
  }

  // tx(peer): writes queued control records (announcements after a reset,
  // opens, closes) while the ring has room.
  void flush_control(std::uint32_t peer) noexcept {
    Pair& pair = pairs_[peer];
    if (!running(peer)) return;
    while (!pair.control.empty()) {
      const ControlMessage& message = pair.control.front();
      if (!write_record(peer, std::as_bytes(std::span{&message, 1}))) break;
      pair.control.pop();
    }
  }

  // tx(peer): messages sent in the current session of the pair.
  [[nodiscard]] std::uint64_t sent_in_session(std::uint32_t peer) const noexcept {
    return pairs_[peer].sent_in_session;
  }

  // ---- receiving (rx) --------------------------------------------------------
  //
  // The rx functions report what they find to a Sink the caller provides:
  //   void peer_up(u32 peer);  void peer_reset(u32 peer);
  //   bool deliver(u32 peer, u16 id, const Record&, u32 credit)
  //        a whole message in the ring, zero copy; true: stop reading;
  //   void append(u32 peer, u16 id, std::span<const std::byte> bytes)
  //        add a fragment's bytes to the channel's reassembly;
  //   bool complete(u32 peer, u16 id, u32 credit)   the reassembly is a message;
  //        true: stop reading (a caller with fixed reassembly room is full);
  //   void fail(u32 peer, u16 id, ChannelStatus)    an error in a message's place;
  //   void discard(u32 peer, u16 id)                drop the reassembly's bytes;
  //   bool spill(u32 peer)   copy queued zero-copy records off the ring
  //        (release_record() each); false when there was none;
  //   void changed()         the name service changed something.
  // Every message handed out (deliver, complete) is given back with
  // release_message(), with its credit, whether it was read or dropped.

  enum class ReadStatus : std::uint8_t { idle, stopped, broken };

  // rx and every tx lock: advances the handshake with every peer.
  template <typename Sink>
  void poll(Sink& sink) noexcept {
    link_.poll([&](const LinkEvent& event) { on_link_event(event, sink); });
    for (std::uint32_t peer = 0; peer < link_.peer_count(); ++peer) {
      if (peer == link_.id()) continue;
      if (running(peer)) flush_control(peer);
      idle(peer);
    }
  }

  // rx: the receiving side has nothing to do for `peer` now (it found its
  // ring empty, or is about to sleep): answers a request for room that the
  // releases' unfenced check may have missed (Link::space_freed()).
  void idle(std::uint32_t peer) noexcept { ring_if_space_wanted(peer, true); }
  // rx: the same for a caller that polls in a loop: the fence is paid on
  // every 64th empty poll only, so polling stays cheap and a missed
  // request waits at most 64 polls.
  void idle_poll(std::uint32_t peer) noexcept {
    if ((++pairs_[peer].empty_polls & 63U) == 0) idle(peer);
  }

  // rx: reads `peer`'s ring until it is empty or the sink says stop.
  // broken: call report_broken() with the peer's tx lock.
  template <typename Sink>
  [[nodiscard]] ReadStatus read(std::uint32_t peer, Sink& sink) noexcept {
    Pair& pair = pairs_[peer];
    if (!link_.readable(peer)) {
      pair.ring_drained = true;
      return ReadStatus::idle;
    }
    auto& rx = link_.consumer(peer);
    for (;;) {
      if (!pair.spill_futile && rx.pinned() > rx.capacity() / 2) spill(peer, sink);
      Record record;
      const ConsumeStatus status = rx.peek(record);
      pair.ring_drained = status != ConsumeStatus::ok && status != ConsumeStatus::too_many_held;
      if (status == ConsumeStatus::ok) {
        if (dispatch(peer, record, sink)) return ReadStatus::stopped;
        continue;
      }
      if (status == ConsumeStatus::too_many_held && spill(peer, sink)) continue;
      return status == ConsumeStatus::broken ? ReadStatus::broken : ReadStatus::idle;
    }
  }

  // rx: receive()'s fast path. When the next record of `peer` is a whole
  // message for local channel `id`, takes it (zero copy) into `out` with its
  // credit; anything else it finds first is dispatched as read() would, and
  // false returned. The caller checks first that the channel's own queue is
  // empty.
  template <typename Sink>
  [[nodiscard]] bool take_next(std::uint32_t peer, std::uint16_t id, Record& out,
                               std::uint32_t& credit, Sink& sink) noexcept {
    LocalChannel& channel = names_[peer].local[id];
    if (channel.partial_active || !link_.readable(peer)) return false;
    auto& rx = link_.consumer(peer);
    if (rx.pinned() > rx.capacity() / 2 || rx.peek(out) != ConsumeStatus::ok) return false;
    credit = static_cast<std::uint32_t>(record_stride(out.payload.size()));
    if (out.channel == id && out.flags == 0 && channel.open && announced(peer, channel) &&
        std::uint64_t{channel.in_window} + credit <= window_) {
      channel.in_window += credit;
      ++pairs_[peer].outstanding;
      return true;
    }
    (void)dispatch(peer, out, sink);
    return false;
  }

  // rx with the peer's tx lock: the ring reported `broken`.
  template <typename Sink>
  void report_broken(std::uint32_t peer, Sink& sink) noexcept {
    link_.report_ring_broken(peer, [&](const LinkEvent& event) { on_link_event(event, sink); });
  }

  // rx: gives a message back: its ring record (zero copy) or nothing (a
  // copy), its credit, and whether the application received it (delivered)
  // or it was dropped. A message of an ended session gives nothing back.
  void release_message(std::uint32_t peer, std::uint32_t peer_epoch, std::uint16_t id,
                       std::uint64_t sequence, std::uint32_t credit, bool delivered) noexcept {
    const PairState state = link_.state(peer);
    if (link_.peer_epoch(peer) != peer_epoch ||
        (state != PairState::running && state != PairState::draining)) {
      return;  // the ring was re-initialised: nothing to give back
    }
    Pair& pair = pairs_[peer];
    if (sequence != kNoRecord) {
      Record record;
      record.sequence = sequence;
      (void)link_.consumer(peer).release(record);
      pair.spill_futile = false;
    }
    if (credit != 0) {
      LocalChannel& channel = names_[peer].local[id];
      channel.in_window = channel.in_window > credit ? channel.in_window - credit : 0;
    }
    link_.ledger(peer).give_back(id, credit, delivered ? 1 : 0);
    if (delivered) link_.note_delivered(peer);
    if (pair.outstanding > 0) --pair.outstanding;
    ring_if_space_wanted(peer);
  }

  // rx: the caller copied a queued record off the ring (spill): its ring
  // space is free, its credit stays with the message.
  void release_record(std::uint32_t peer, std::uint64_t sequence) noexcept {
    Record record;
    record.sequence = sequence;
    if (link_.consumer(peer).release(record) == ConsumeStatus::ok) ++stats_.spilled_records;
  }

  // rx: whether the ended session of a draining `peer` left nothing in its
  // ring and nothing handed out (so finish_drain() may run now).
  [[nodiscard]] bool drained(std::uint32_t peer) const noexcept {
    return pairs_[peer].ring_drained && pairs_[peer].outstanding == 0;
  }

  // rx and every tx lock: ends the drain of `peer` (drained(), or the
  // caller's deadline passed); the caller dropped its queues first. The next
  // poll() acks the peer's new incarnation.
  template <typename Sink>
  void finish_drain(std::uint32_t peer, Sink& sink) noexcept {
    Names& names = names_[peer];
    for (std::uint16_t id = 1; id <= MaxChannels; ++id) {
      LocalChannel& channel = names.local[id];
      if (channel.open && channel.partial_active) discard_partial(peer, id, sink);
      channel.in_window = 0;
    }
    pairs_[peer].outstanding = 0;
    link_.finish_drain(peer);
  }

  // rx: per channel, what the last reset of its peer ended: messages we sent
  // on it in that session and how many the receiver had released.
  [[nodiscard]] const ChannelReset& channel_reset(std::uint32_t peer,
                                                  std::uint16_t id) const noexcept {
    return pairs_[peer].channel_resets[id];
  }

 private:
  struct Pair {
    // Both sides (atomics; written with every lock held).
    std::atomic<bool> running{false};
    std::atomic<std::uint64_t> resets{0};
    // rx.
    std::uint64_t outstanding = 0;  // current-session messages handed out, not released
    bool broken = false;
    bool ring_drained = true;       // the last read found the ring empty (or broken)
    bool spill_futile = false;      // the last spill freed nothing; retry after a release
    std::uint32_t empty_polls = 0;  // idle_poll()'s count
    ResetCounts last_reset;
    ChannelReset channel_resets[MaxChannels + 1] = {};
    // tx(peer).
    std::uint64_t sent_in_session = 0;
    TicketQueue<MaxInFlight> tickets;
    ControlQueue<MaxControlQueued> control;
  };

  // An empty message may come with a null data pointer, which memcpy must
  // never see, even for zero bytes.
  static void copy_bytes(std::span<std::byte> to, std::span<const std::byte> from) noexcept {
    if (!from.empty()) __builtin_memcpy(to.data(), from.data(), from.size());
  }

  // tx(peer): the checks and the ring reservation every record makes:
  // the session, control records owed first, credit, ring room.
  [[nodiscard]] ChannelStatus prepare(std::uint32_t peer, std::uint16_t id, std::uint16_t remote,
                                      std::uint32_t size, std::uint64_t resets_seen,
                                      RingProducer::Reservation& reservation) noexcept {
    Pair& pair = pairs_[peer];
    LocalChannel& channel = names_[peer].local[id];
    if (!running(peer) || resets(peer) != resets_seen) return ChannelStatus::retry;
    if (!pair.control.empty()) {
      flush_control(peer);
      if (!pair.control.empty()) return ChannelStatus::would_block;  // control goes first
    }
    if (channel.abort_pending) {
      if (!write_control(peer, ControlType::abort, channel.sent_to, channel)) {
        return tx_failure(peer);
      }
      channel.abort_pending = false;
    }
    CreditGauge& gauge = link_.gauge(peer);
    if (gauge.fault(remote) != CreditFault::none) {
      // Reported when it was latched; a restarted peer is a reset instead.
      return link_.session_intact(peer) ? ChannelStatus::credit_fault : ChannelStatus::would_block;
    }
    const auto stride = static_cast<std::uint32_t>(record_stride(size));
    if (!gauge.take(remote, stride, channel.remote_window.load(std::memory_order_relaxed))) {
      if (gauge.fault(remote) == CreditFault::none) return ChannelStatus::would_block;
      return credit_fault(peer, id, remote);
    }
    const ProduceStatus status = link_.producer(peer).reserve(size, remote, reservation);
    if (status != ProduceStatus::ok) {
      gauge.untake(remote, stride);
      if (status == ProduceStatus::full) return ChannelStatus::would_block;
      return status == ProduceStatus::broken ? ChannelStatus::ring_broken
                                             : ChannelStatus::message_too_large;
    }
    channel.sent_to = remote;
    return ChannelStatus::ok;
  }

  // tx(peer): commits the sealed prefix of the reservations in ring order,
  // then publishes it and rings the receiver if it asked. False: ring broke.
  bool drain_tickets(std::uint32_t peer) noexcept {
    bool committed = false;
    if (!pairs_[peer].tickets.drain(link_.producer(peer), link_.gauge(peer), committed)) {
      return false;
    }
    if (committed && link_.producer(peer).publish(link_.device(), peer, link_.data_vector())) {
      // Relaxed: a count, summed by stats().
      tx_doorbells_.fetch_add(1, std::memory_order_relaxed);
    }
    return true;
  }

  // tx(peer): writes one control record now (behind any tickets in flight).
  [[nodiscard]] bool write_record(std::uint32_t peer, std::span<const std::byte> bytes) noexcept {
    Pair& pair = pairs_[peer];
    if (pair.tickets.full()) return false;
    RingProducer::Reservation reservation;
    const auto size = static_cast<std::uint32_t>(bytes.size());
    if (link_.producer(peer).reserve(size, kControlChannel, reservation) != ProduceStatus::ok) {
      return false;
    }
    __builtin_memcpy(reservation.payload.data(), bytes.data(), bytes.size());
    (void)pair.tickets.seal(pair.tickets.add(reservation, 0, 0, 0), size, 0, false);
    return drain_tickets(peer);
  }

  [[nodiscard]] bool encode(ControlType type, std::uint16_t id, const LocalChannel& channel,
                            ControlMessage& out) const noexcept {
    return encode_control(type, id, channel.name.bytes, channel.name.length,
                          options_.max_message_size, window_, out);
  }

  bool write_control(std::uint32_t peer, ControlType type, std::uint16_t id,
                     const LocalChannel& channel) noexcept {
    ControlMessage message;
    if (!encode(type, id, channel, message)) return true;  // open() validated the name
    return write_record(peer, std::as_bytes(std::span{&message, 1}));
  }

  bool queue_control(std::uint32_t peer, ControlType type, std::uint16_t id,
                     const LocalChannel& channel) noexcept {
    ControlMessage* slot = pairs_[peer].control.back_slot();
    if (slot == nullptr || !encode(type, id, channel, *slot)) return false;
    pairs_[peer].control.commit_push();
    return true;
  }

  [[nodiscard]] ChannelStatus tx_failure(std::uint32_t peer) noexcept {
    return link_.producer(peer).broken() ? ChannelStatus::ring_broken : ChannelStatus::would_block;
  }

  // A credit table that moved impossibly is a fault only if the peer still
  // runs our session; after a restart it is the new incarnation's zeroes,
  // and the next poll() sees the reset.
  [[nodiscard]] ChannelStatus credit_fault(std::uint32_t peer, std::uint16_t id,
                                           std::uint16_t remote) noexcept {
    if (!link_.session_intact(peer)) return ChannelStatus::would_block;
    const CreditGauge& gauge = link_.gauge(peer);
    diagnose(peer, id, ChannelFault::credit_table,
             gauge.fault(remote) == CreditFault::returned_went_backwards ||
                     gauge.fault(remote) == CreditFault::returned_beyond_sent
                 ? "returned"
                 : "delivered",
             gauge.fault_value(remote), gauge.fault_limit(remote));
    return ChannelStatus::credit_fault;
  }

  // Serialises the two sides' latching of diagnostic_ (faults are rare).
  class DiagnosticGuard {
   public:
    explicit DiagnosticGuard(std::atomic_flag& busy) noexcept : busy_(busy) {
      // Acquire: the previous holder's writes are visible; pairs with the
      // release in the destructor.
      while (busy_.test_and_set(std::memory_order_acquire)) {
      }
    }
    ~DiagnosticGuard() { busy_.clear(std::memory_order_release); }
    DiagnosticGuard(const DiagnosticGuard&) = delete;
    DiagnosticGuard& operator=(const DiagnosticGuard&) = delete;

   private:
    std::atomic_flag& busy_;
  };

  // Either side: counts a fault and latches the first one, with `name`
  // when the channel is not ours (a rejected announcement).
  void diagnose(std::uint32_t peer, std::uint16_t id, ChannelFault fault, const char* field,
                std::uint64_t value, std::uint64_t limit,
                const ChannelName* name = nullptr) noexcept {
    // Relaxed: a count; the details are published by the guard.
    faults_.fetch_add(1, std::memory_order_relaxed);
    const DiagnosticGuard guard(diagnostic_busy_);
    if (diagnostic_.fault != ChannelFault::none) return;
    diagnostic_.fault = fault;
    diagnostic_.peer = peer;
    diagnostic_.channel = id;
    diagnostic_.field = field;
    diagnostic_.value = value;
    diagnostic_.limit = limit;
    if (name == nullptr && id != 0 && id <= MaxChannels) name = &names_[peer].local[id].name;
    if (name != nullptr) {
      for (std::size_t i = 0; i < kMaxChannelName; ++i) diagnostic_.name[i] = name->bytes[i];
      diagnostic_.name_length = name->length;
    }
  }

  void ring_if_space_wanted(std::uint32_t peer, bool fenced = false) noexcept {
    if (link_.space_freed(peer, fenced)) {
      ++stats_.doorbells_rung;
      ++stats_.space_doorbells;
    }
  }

  template <typename Sink>
  bool spill(std::uint32_t peer, Sink& sink) noexcept {
    const bool freed = sink.spill(peer);
    pairs_[peer].spill_futile = !freed;
    if (freed) ring_if_space_wanted(peer);
    return freed;
  }

  template <typename Sink>
  void discard_partial(std::uint32_t peer, std::uint16_t id, Sink& sink) noexcept {
    LocalChannel& channel = names_[peer].local[id];
    channel.partial_active = channel.partial_overflow = false;
    channel.partial_size = 0;
    sink.discard(peer, id);
  }

  // rx: whether the peer opened `channel` before sending on it. A draining
  // pair forgot the peer's ids, but what it committed still counts.
  [[nodiscard]] bool announced(std::uint32_t peer, const LocalChannel& channel) const noexcept {
    return link_.state(peer) != PairState::running ||
           channel.remote_id.load(std::memory_order_relaxed) != 0;
  }

  // rx: one record. True when the sink took a message and asked to stop.
  template <typename Sink>
  bool dispatch(std::uint32_t peer, const Record& record, Sink& sink) noexcept {
    auto& rx = link_.consumer(peer);
    if (record.channel == kControlChannel) {
      handle_control(peer, record.payload, sink);
      (void)rx.release(record);
      return false;
    }
    const auto credit = static_cast<std::uint32_t>(record_stride(record.payload.size()));
    const std::uint16_t id = record.channel;
    LocalChannel* target =
        id <= MaxChannels && names_[peer].local[id].open ? &names_[peer].local[id] : nullptr;
    const auto refuse = [&] {
      (void)rx.release(record);
      link_.ledger(peer).give_back(id, credit, 0);
      ring_if_space_wanted(peer);
      return false;
    };
    if (target == nullptr) {
      ++stats_.unroutable;  // closed here meanwhile, or never opened
      return refuse();
    }
    LocalChannel& channel = *target;
    if (!announced(peer, channel)) {
      ++stats_.unroutable;
      diagnose(peer, id, ChannelFault::never_announced, "channel", id, 0);
      if (channel.partial_active) discard_partial(peer, id, sink);
      return refuse();
    }
    if (std::uint64_t{channel.in_window} + credit > window_) {
      diagnose(peer, id, ChannelFault::over_window, "credit_window",
               std::uint64_t{channel.in_window} + credit, window_);
      if (channel.partial_active) {
        discard_partial(peer, id, sink);
        sink.fail(peer, id, ChannelStatus::credit_fault);
      }
      return refuse();
    }
    const bool more = (record.flags & kRecordMoreFragments) != 0;
    if (!more && !channel.partial_active) {
      channel.in_window += credit;
      ++pairs_[peer].outstanding;
      return sink.deliver(peer, id, record, credit);
    }
    if (!channel.partial_active) {
      discard_partial(peer, id, sink);
      channel.partial_active = true;
    }
    if (!channel.partial_overflow) {
      if (record.payload.size() > options_.max_message_size - channel.partial_size) {
        channel.partial_overflow = true;
        sink.discard(peer, id);
        diagnose(peer, id, ChannelFault::reassembly_overflow, "max_message_size",
                 std::uint64_t{channel.partial_size} + record.payload.size(),
                 options_.max_message_size);
      } else {
        sink.append(peer, id, record.payload);
        channel.partial_size += static_cast<std::uint32_t>(record.payload.size());
      }
    }
    (void)rx.release(record);
    if (more) {
      link_.ledger(peer).give_back(id, credit, 0);  // the bytes live in the reassembly now
      ring_if_space_wanted(peer);
      return false;
    }
    const bool overflow = channel.partial_overflow;
    channel.partial_active = channel.partial_overflow = false;
    channel.partial_size = 0;
    if (overflow) {
      ++stats_.oversized_messages;
      link_.ledger(peer).give_back(id, credit, 0);
      ring_if_space_wanted(peer);
      sink.fail(peer, id, ChannelStatus::message_too_large);
      return false;
    }
    channel.in_window += credit;
    ++pairs_[peer].outstanding;
    return sink.complete(peer, id, credit);
  }

  template <typename Sink>
  void handle_control(std::uint32_t peer, std::span<const std::byte> payload, Sink& sink) noexcept {
    ControlMessage message;
    const ControlError error = decode_control(payload, message);
    if (error != ControlError::none) {
      ++stats_.control_errors;
      diagnose(peer, 0, ChannelFault::bad_control_record, describe(error), payload.size(), 0);
      return;
    }
    // A draining pair reads what the ended session committed: its aborts
    // still matter (a reassembly in progress), its announcements do not.
    if (!running(peer) && message.type != static_cast<std::uint16_t>(ControlType::abort)) return;
    const NameUpdate update = names_[peer].apply(message);
    switch (update.kind) {
      case NameUpdate::Kind::rejected: {
        ++stats_.control_errors;
        ChannelName name;
        (void)name.assign(message.name, message.name_length);
        diagnose(peer, update.local, update.fault, update.field, update.value, update.limit, &name);
        return;
      }
      case NameUpdate::Kind::aborted: discard_partial(peer, update.local, sink); return;
      case NameUpdate::Kind::withdrawn:
        if (update.local != 0 && names_[peer].local[update.local].partial_active) {
          discard_partial(peer, update.local, sink);
        }
        break;
      case NameUpdate::Kind::announced: break;
    }
    sink.changed();
  }

  // rx and every tx lock.
  template <typename Sink>
  void on_link_event(const LinkEvent& event, Sink& sink) noexcept {
    const std::uint32_t peer = event.peer;
    Pair& pair = pairs_[peer];
    Names& names = names_[peer];
    if (event.kind == LinkEvent::Kind::peer_up) {
      for (std::uint16_t id = 1; id <= MaxChannels; ++id) {
        LocalChannel& channel = names.local[id];
        if (!channel.open) continue;
        if (channel.partial_active) discard_partial(peer, id, sink);
        channel.abort_pending = channel.fragmenting = false;  // a new session has no half message
        channel.in_window = 0;
      }
      names.forget_remotes();  // nothing the ended session announced carries over
      pair.outstanding = 0;
      pair.broken = false;
      pair.sent_in_session = 0;
      pair.tickets.clear();
      pair.control.clear();
      pair.ring_drained = true;
      pair.spill_futile = false;
      // R11: the pair's fresh state is visible before senders see it run;
      // pairs with A11 in running().
      pair.running.store(true, std::memory_order_release);
      for (std::uint16_t id = 1; id <= MaxChannels; ++id) {
        if (names.local[id].open) (void)queue_control(peer, ControlType::open, id, names.local[id]);
      }
      flush_control(peer);
      sink.peer_up(peer);
      return;
    }
    const bool was_running = pair.running.exchange(false, std::memory_order_acq_rel);
    if (event.kind == LinkEvent::Kind::peer_broken) {
      pair.broken = true;
      if (!was_running) return;
      // A broken pair has no drain: once the peer restarts, its new
      // incarnation rewrites the ring, so queued records are copied off now.
      (void)sink.spill(peer);
    }
    ResetCounts report;
    report.resets = pair.last_reset.resets + 1;
    report.peer_epoch = event.peer_epoch;
    report.sent = pair.sent_in_session;
    const DeliveryCount count = link_.delivered_in_session(peer, link_.epoch(), event.peer_epoch);
    report.delivered_known = count.known;
    report.delivered = count.delivered;
    pair.last_reset = report;
    CreditGauge& gauge = link_.gauge(peer);
    for (std::uint16_t id = 1; id <= MaxChannels; ++id) {
      LocalChannel& channel = names.local[id];
      ChannelReset& channel_report = pair.channel_resets[id];
      channel_report = {};
      if (channel.open && channel.sent_to != 0) {
        // The receiver's table still holds the ended session (it zeroes it
        // only when it acks a new one), unless the peer already restarted.
        channel_report.resets = report.resets;
        channel_report.sent = gauge.messages_sent(channel.sent_to);
        channel_report.delivered_known =
            gauge.refresh(channel.sent_to) && link_.session_intact(peer);
        channel_report.delivered = gauge.messages_delivered(channel.sent_to);
      }
      channel.sent_to = 0;
      channel.remote_id.store(0, std::memory_order_relaxed);
      channel.remote_closed.store(false, std::memory_order_relaxed);
    }
    // A reassembly in progress stays: the drain may still bring the rest of
    // that message. finish_drain() discards what never completed.
    names.forget_remotes();
    pair.control.clear();
    pair.tickets.clear();
    // R12: the bookkeeping above is visible to whoever sees the new count;
    // pairs with A12 in resets().
    pair.resets.fetch_add(1, std::memory_order_release);
    sink.peer_reset(peer);
  }

  Link<MaxHeld, MaxPeers> link_;
  ChannelCoreOptions options_;
  std::uint32_t window_ = 0;
  std::uint32_t max_record_ = 0;
  Names names_[MaxPeers];
  Pair pairs_[MaxPeers];
  CoreStats stats_;                             // rx side, but for the two atomics below
  std::atomic<std::uint64_t> tx_doorbells_{0};  // data doorbells rung by senders
  std::atomic<std::uint64_t> faults_{0};        // every ChannelFault
  mutable std::atomic_flag diagnostic_busy_ = ATOMIC_FLAG_INIT;
  ChannelDiagnostic diagnostic_;  // guarded by diagnostic_busy_
};

}  // namespace cellink::transports
