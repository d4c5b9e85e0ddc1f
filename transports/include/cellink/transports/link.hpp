// Link: the handshake that turns a Device into one record ring per ordered
// peer pair, and the reset rules when a peer restarts. Spec: docs/link.md.
//
// Each peer publishes a phase and an epoch in its state-table entry
// (ivshmem/peer_state.hpp) and a LinkHeader plus one PeerSlot per peer in its
// output section (link_format.hpp). For every other peer j, this side runs:
//
//   idle --ack--> acked --j acked us--> tx_ready --j's ring ready--> running
//     ^                                                                |
//     +---- finish_drain() <---- draining <--- j's epoch changed ------+
//
//   ack:      reset our consumer area of ring j -> us, write acked_epoch = E_j
//   tx_ready: initialise our ring us -> j, write tx_ready_epoch = E_j
//   running:  attach to j's ring toward us (its tx_ready_epoch names our epoch)
//
// Each step is a store in our own memory followed by vector 0 on j, so either
// side may start first. A restart shows as a new epoch even when the zero in
// between was never seen. When j resets, the records it had committed stay
// readable (consumer(j)) until the caller calls finish_drain(j); only then do
// we ack j's new incarnation, which is what lets it rewrite its ring. A ring
// that breaks (hostile peer) parks the pair in `broken` until j's epoch
// changes.
//
// Delivery counter: the receiver counts the messages it released per session
// (note_delivered) in its PeerSlot, and keeps the previous session's count, so
// a sender can learn how far the peer got (delivered_in_session).
//
// Credits and room: each pair also has a CreditLedger (our table of credits
// given back to j) and a CreditGauge (j's table for what we send it), both
// reset with the session (channel_credit.hpp). A sender that waits for room
// calls want_space(j) and re-checks; a receiver that freed room calls
// space_freed(j), which rings j only when j asked since the last ring.
//
// Threading: one thread at a time, for everything. The Device must outlive
// the Link.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/peer_state.hpp"
#include "cellink/transports/channel_credit.hpp"
#include "cellink/transports/link_format.hpp"
#include "cellink/transports/ring_consumer.hpp"
#include "cellink/transports/ring_producer.hpp"

namespace cellink::transports {

enum class PairState : std::uint8_t { idle, acked, tx_ready, running, draining, broken };

[[nodiscard]] constexpr const char* pair_state_name(PairState state) noexcept {
  switch (state) {
    case PairState::idle: return "idle";
    case PairState::acked: return "acked";
    case PairState::tx_ready: return "tx-ready";
    case PairState::running: return "running";
    case PairState::draining: return "draining";
    case PairState::broken: return "broken";
  }
  return "invalid";
}

enum class LinkInitStatus : std::uint8_t {
  ok,
  bad_geometry,    // the output section cannot hold a ring toward every peer
  misaligned,      // the output sections are not 64-byte aligned
  too_many_peers,  // the link has more peers than this Link was built for (MaxPeers)
};

[[nodiscard]] constexpr const char* describe(LinkInitStatus status) noexcept {
  switch (status) {
    case LinkInitStatus::ok: return "ok";
    case LinkInitStatus::bad_geometry:
      return "output section too small for a ring toward every peer (needs 4 KiB plus 2240 "
             "bytes per other peer)";
    case LinkInitStatus::misaligned: return "output sections are not 64-byte aligned";
    case LinkInitStatus::too_many_peers:
      return "the link has more peers than this build supports (raise MaxPeers)";
  }
  return "unknown link init status";
}

// Why a pair is broken.
enum class PairFault : std::uint8_t {
  none,
  header_mismatch,   // the peer's LinkHeader disagrees with our geometry
  version_mismatch,  // the peer speaks another link protocol version
  ring_broken,       // one of the pair's rings broke; see ring_diagnostic()
};

struct LinkEvent {
  enum class Kind : std::uint8_t {
    peer_up,      // the pair reached running: send and receive work
    peer_reset,   // the peer left or restarted; its records stay readable until finish_drain()
    peer_broken,  // the peer's memory is corrupt; see fault()
  };
  Kind kind = Kind::peer_up;
  std::uint32_t peer = 0;
  std::uint32_t peer_epoch = 0;  // the epoch of the session that went up or ended
};

[[nodiscard]] constexpr const char* describe(PairFault fault) noexcept {
  switch (fault) {
    case PairFault::none: return "no fault";
    case PairFault::header_mismatch:
      return "the peer's link header disagrees with ours (peer count or ring size: the two "
             "sides were configured differently)";
    case PairFault::version_mismatch:
      return "the peer speaks another link protocol version (run the same cellink release on "
             "both sides)";
    case PairFault::ring_broken: return "a ring of this pair broke (corrupt or hostile peer)";
  }
  return "unknown pair fault";
}

// How many of the messages one side sent in a session the receiver released.
struct DeliveryCount {
  bool known = false;  // false: the receiver's slot no longer holds that session
  std::uint64_t delivered = 0;
};

// MaxPeers: the largest link this Link can join (an inmate that knows its
// links sets it low to keep its per-pair state small).
template <std::size_t MaxHeld = 64, std::size_t MaxPeers = ivshmem::kMaxPeers>
class Link {
  static_assert(MaxPeers >= ivshmem::kMinPeers && MaxPeers <= ivshmem::kMaxPeers);

 public:
  Link() noexcept = default;
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Starts this peer's incarnation: picks an epoch above the previous one
  // (from our own header and state entry), publishes INIT, rewrites our
  // header and peer slots (keeping the previous session's delivery counts),
  // then publishes READY. Rings are set up later, per peer, by poll().
  [[nodiscard]] LinkInitStatus init(ivshmem::Device& device) noexcept {
    const std::uint32_t peers = device.peer_count();
    if (peers > MaxPeers) return LinkInitStatus::too_many_peers;
    const std::span<std::byte> own = device.own_output_section();
    if (!LinkGeometry::compute(peers, own.size(), geometry_)) return LinkInitStatus::bad_geometry;
    for (std::uint32_t peer = 0; peer < peers; ++peer) {
      if (reinterpret_cast<std::uintptr_t>(device.output_section(peer).data()) % kCacheLine != 0) {
        return LinkInitStatus::misaligned;
      }
    }
    device_ = &device;
    self_ = device.id();
    own_ = own.data();
    data_vector_ = device.vector_count() > 1 ? 1 : 0;
    running_pairs_ = 0;

    LinkHeader& header = own_header();
    // Our own memory, but read as shared: a previous incarnation wrote it.
    // header.epoch keeps the last published epoch even through a crash in
    // the middle of init() (only the magic is withdrawn while rewriting).
    std::uint32_t previous = load_shared(header.epoch, std::memory_order_relaxed);
    ivshmem::PeerState last;
    if (ivshmem::PeerState::decode(device.peer_state(self_), last) && last.epoch > previous) {
      previous = last.epoch;
    }
    previous_epoch_ = previous;
    epoch_ = ivshmem::PeerState::next_epoch(previous);
    if (epoch_ == 0) epoch_ = 1;

    device.set_state(ivshmem::PeerState{ivshmem::Phase::init, epoch_}.encode());
    store(header.magic, 0U, std::memory_order_relaxed);
    // F3: the withdrawn magic is visible before any slot changes below;
    // pairs with the re-check in read_peer() (A4).
    std::atomic_thread_fence(std::memory_order_release);
    for (std::uint32_t peer = 0; peer < MaxPeers; ++peer) {
      pairs_[peer] = {};
      if (peer < peers && peer != self_) retire_session(own_slot(peer));
    }
    header.version = kLinkVersion;
    header.header_size = sizeof(LinkHeader);
    header.peer_count = peers;
    header.ring_slot_size = geometry_.ring_slot_size();
    for (std::uint64_t& word : header.reserved) word = 0;
    store(header.magic, kLinkMagic, std::memory_order_relaxed);
    // R3: the header and slots are complete before the new epoch shows;
    // pairs with A3 in read_peer().
    store(header.epoch, epoch_, std::memory_order_release);
    device.set_state(ivshmem::PeerState{ivshmem::Phase::ready, epoch_}.encode());
    return LinkInitStatus::ok;
  }

  // Withdraws from the link: every pair ends and our state reads RESET, so
  // the peers see a reset. init() starts a new incarnation.
  void leave() noexcept {
    if (device_ == nullptr) return;
    device_->set_state(ivshmem::PeerState{ivshmem::Phase::reset, epoch_}.encode());
    for (Pair& pair : pairs_) pair = {};
    running_pairs_ = 0;
  }

  // Advances the handshake with every peer from what the state table and
  // their headers say now, calling sink(const LinkEvent&) for each event.
  // Call it after every vector-0 interrupt (and now and then as a safety net).
  template <typename Sink>
  void poll(Sink&& sink) noexcept {
    for (std::uint32_t peer = 0; peer < geometry_.peers(); ++peer) {
      if (peer != self_) poll_peer(peer, sink);
    }
  }

  [[nodiscard]] std::uint32_t id() const noexcept { return self_; }
  [[nodiscard]] std::uint32_t peer_count() const noexcept { return geometry_.peers(); }
  [[nodiscard]] std::uint32_t epoch() const noexcept { return epoch_; }
  // The epoch of this peer's previous incarnation (0 when there was none).
  [[nodiscard]] std::uint32_t previous_epoch() const noexcept { return previous_epoch_; }
  [[nodiscard]] const LinkGeometry& geometry() const noexcept { return geometry_; }
  [[nodiscard]] std::uint32_t data_vector() const noexcept { return data_vector_; }
  [[nodiscard]] ivshmem::Device& device() noexcept { return *device_; }

  // The peer's link protocol version, when fault() is version_mismatch.
  [[nodiscard]] std::uint16_t peer_version(std::uint32_t peer) const noexcept {
    return pairs_[peer].peer_version;
  }

  // Precondition for the per-peer accessors: peer < peer_count(), peer != id().
  [[nodiscard]] PairState state(std::uint32_t peer) const noexcept { return pairs_[peer].state; }
  [[nodiscard]] bool running(std::uint32_t peer) const noexcept {
    return pairs_[peer].state == PairState::running;
  }
  // The peer's epoch of the current (or, while draining, the ended) session.
  [[nodiscard]] std::uint32_t peer_epoch(std::uint32_t peer) const noexcept {
    return pairs_[peer].peer_epoch;
  }
  [[nodiscard]] PairFault fault(std::uint32_t peer) const noexcept { return pairs_[peer].fault; }
  // The broken ring's diagnostic, when fault() is ring_broken.
  [[nodiscard]] RingDiagnostic ring_diagnostic(std::uint32_t peer) const noexcept {
    const Pair& pair = pairs_[peer];
    return pair.tx.broken() ? pair.tx.diagnostic() : pair.rx.diagnostic();
  }

  // Our ring toward `peer`; usable while running(peer).
  [[nodiscard]] RingProducer& producer(std::uint32_t peer) noexcept { return pairs_[peer].tx; }
  // `peer`'s ring toward us; readable while running or draining.
  [[nodiscard]] RingConsumer<MaxHeld>& consumer(std::uint32_t peer) noexcept {
    return pairs_[peer].rx;
  }
  // Our credit table for what `peer` sends us (valid while readable()).
  [[nodiscard]] CreditLedger& ledger(std::uint32_t peer) noexcept { return pairs_[peer].ledger; }
  // `peer`'s credit table for what we send it (valid while running()).
  [[nodiscard]] CreditGauge& gauge(std::uint32_t peer) noexcept { return pairs_[peer].gauge; }

  // A sender about to wait for room toward `peer` (ring space or credit):
  // asks `peer` to ring us when it frees some. Re-check the room after it
  // returns; sleep only if there is still none.
  // Threading: the sending side toward `peer`.
  void want_space(std::uint32_t peer) noexcept {
    Pair& pair = pairs_[peer];
    ++pair.space_wanted;
    // In our consumer area of ring peer -> us: its wake line, which the
    // peer's producer reads on every publish anyway.
    auto* area = reinterpret_cast<ConsumerArea*>(own_ + LinkGeometry::consumer_area_offset(peer));
    store(area->wake_after.space_wanted, pair.space_wanted, std::memory_order_relaxed);
    // F8: the request is ordered before the caller's re-read of `consumed`
    // and the credit table; pairs with F9 in space_freed(fenced).
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }

  // After freeing room for `peer` (a ring release or credit given back):
  // rings `peer`'s data vector if it asked for room since we last rang.
  // Returns whether it rang. Threading: the receiving side.
  //
  // Unfenced (the hot path: every release), the load of the request may be
  // served before our release stores are visible, so a request made just
  // then can be missed once. The receiver therefore also calls it fenced
  // whenever it goes idle (it found nothing to read, before it sleeps, and
  // in every poll): a missed request is answered by the next release or the
  // next idle moment, never lost.
  bool space_freed(std::uint32_t peer, bool fenced = false) noexcept {
    Pair& pair = pairs_[peer];
    if (!pair.rx_attached) return false;
    if (fenced) {
      // F9: our `consumed` and `returned` stores are ordered before the
      // load of the request; pairs with F8 in want_space() (store, fence,
      // load on both sides, so one of them sees the other's store).
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    // Relaxed: ordered by F9 when fenced; a hostile value only costs it doorbells.
    const auto* area = reinterpret_cast<const ConsumerArea*>(
        section(peer) + LinkGeometry::consumer_area_offset(self_));
    const std::uint32_t wanted =
        load_shared(area->wake_after.space_wanted, std::memory_order_relaxed);
    if (wanted == pair.space_rung) return false;
    pair.space_rung = wanted;
    return device_->doorbell(peer, data_vector_) == ivshmem::DoorbellStatus::ok;
  }

  [[nodiscard]] bool readable(std::uint32_t peer) const noexcept {
    const Pair& pair = pairs_[peer];
    return pair.rx_attached &&
           (pair.state == PairState::running || pair.state == PairState::draining);
  }

  // Publishes our committed records toward `peer` and rings its data vector
  // if its consumer asked. Returns whether a doorbell was rung.
  bool publish(std::uint32_t peer) noexcept {
    if (pairs_[peer].state != PairState::running) return false;
    return pairs_[peer].tx.publish(*device_, peer, data_vector_);
  }

  // Marks a pair broken after its ring reported `broken` to the caller.
  // A ring that breaks because the peer restarted under it (its new
  // incarnation reset the consumer index we read) is a reset, not a fault:
  // the peer is re-read first, and an ended session ends as a reset.
  template <typename Sink>
  void report_ring_broken(std::uint32_t peer, Sink&& sink) noexcept {
    Pair& pair = pairs_[peer];
    if (pair.state == PairState::broken) return;
    const PeerView view = read_peer(peer);
    if (pair.state != PairState::draining && !(view.valid && view.epoch == pair.peer_epoch)) {
      end_session(peer, sink);
      return;
    }
    if (pair.state == PairState::running) --running_pairs_;
    pair.state = PairState::broken;
    pair.fault = PairFault::ring_broken;
    sink(LinkEvent{LinkEvent::Kind::peer_broken, peer, pair.peer_epoch});
  }

  // Whether `peer` still runs the session we have with it: a credit table or
  // ring that looks impossible may only mean that the peer restarted and
  // rewrote its memory. Re-reads the peer.
  [[nodiscard]] bool session_intact(std::uint32_t peer) const noexcept {
    const PeerView view = read_peer(peer);
    return view.valid && view.epoch == pairs_[peer].peer_epoch;
  }

  // Ends a drain: whatever the reset peer committed has been taken. The next
  // poll() acks the peer's new incarnation.
  void finish_drain(std::uint32_t peer) noexcept {
    Pair& pair = pairs_[peer];
    if (pair.state == PairState::draining) pair.state = PairState::idle;
  }

  // Counts `count` more messages from `peer` as released in this session.
  void note_delivered(std::uint32_t peer, std::uint64_t count = 1) noexcept {
    Pair& pair = pairs_[peer];
    pair.delivered += count;
    // Relaxed: a progress counter only; the sender reads it after a reset.
    store(own_slot(peer).delivered, pair.delivered, std::memory_order_relaxed);
  }

  // How many of the messages we sent `peer` while we had epoch `our_epoch`
  // (and it had `their_epoch`, or any epoch when 0) the peer released, read
  // from its slot for us. Works after the peer died or restarted, as long as
  // its memory still holds that session (it keeps the previous one).
  [[nodiscard]] DeliveryCount delivered_in_session(std::uint32_t peer, std::uint32_t our_epoch,
                                                   std::uint32_t their_epoch) const noexcept {
    const PeerSlot& slot = peer_slot(peer, self_);
    const auto matches = [&](std::uint32_t acked, std::uint32_t session) {
      return acked == our_epoch && (their_epoch == 0 || session == their_epoch);
    };
    const std::uint32_t acked = load_shared(slot.acked_epoch, std::memory_order_acquire);
    const std::uint32_t session = load_shared(slot.session_epoch, std::memory_order_relaxed);
    if (our_epoch != 0 && matches(acked, session)) {
      const std::uint64_t delivered = load_shared(slot.delivered, std::memory_order_relaxed);
      // F21: the re-read below sees any retirement whose zeroes we read;
      // pairs with F20 in retire_session().
      std::atomic_thread_fence(std::memory_order_acquire);
      // A20: and then `previous` as it was written before; pairs with R20.
      if (load_shared(slot.acked_epoch, std::memory_order_acquire) == acked) {
        return {true, delivered};
      }
      // The peer retired that session meanwhile: it is `previous` now.
    }
    const std::uint32_t previous =
        load_shared(slot.previous_acked_epoch, std::memory_order_relaxed);
    const std::uint32_t previous_session =
        load_shared(slot.previous_session_epoch, std::memory_order_relaxed);
    if (our_epoch != 0 && matches(previous, previous_session)) {
      return {true, load_shared(slot.previous_delivered, std::memory_order_relaxed)};
    }
    return {};
  }

 private:
  struct Pair {
    PairState state = PairState::idle;
    PairFault fault = PairFault::none;
    std::uint32_t peer_epoch = 0;
    bool rx_attached = false;
    std::uint64_t delivered = 0;
    std::uint16_t peer_version = 0;
    std::uint32_t space_rung = 0;    // receiving side: the peer's space_wanted we last rang for
    std::uint32_t space_wanted = 0;  // sending side: shadow of our WakeLine::space_wanted
    RingProducer tx;
    RingConsumer<MaxHeld> rx;
    CreditLedger ledger;
    CreditGauge gauge;
  };

  // One validated read of peer j's state entry and header.
  struct PeerView {
    bool valid = false;  // READY or RUN, header written for that epoch, geometry agrees
    bool mismatch = false;
    std::uint16_t version = kLinkVersion;  // the peer's, when mismatch
    std::uint32_t epoch = 0;
    std::uint32_t acked_epoch = 0;     // j's slot for us
    std::uint32_t tx_ready_epoch = 0;  // j's slot for us
  };

  template <typename T>
  static void store(T& field, T value, std::memory_order order) noexcept {
    std::atomic_ref<T>(field).store(value, order);
  }

  [[nodiscard]] LinkHeader& own_header() noexcept {
    return *reinterpret_cast<LinkHeader*>(own_ + kLinkHeaderOffset);
  }
  [[nodiscard]] PeerSlot& own_slot(std::uint32_t peer) noexcept {
    return *reinterpret_cast<PeerSlot*>(own_ + LinkGeometry::peer_slot_offset(peer));
  }
  [[nodiscard]] const std::byte* section(std::uint32_t peer) const noexcept {
    return device_->output_section(peer).data();
  }
  // `owner`'s slot about `about`, in owner's (read-only to us) section.
  [[nodiscard]] const PeerSlot& peer_slot(std::uint32_t owner, std::uint32_t about) const noexcept {
    return *reinterpret_cast<const PeerSlot*>(section(owner) +
                                              LinkGeometry::peer_slot_offset(about));
  }

  // Moves the slot's session into `previous` (when it had one) and clears it.
  // Only we write our slot, but the peer it describes reads it at any time
  // (delivered_in_session()), so every store is atomic, and in an order
  // that lets that reader notice a retirement it raced with.
  static void retire_session(PeerSlot& slot) noexcept {
    const std::uint32_t acked = slot.acked_epoch;  // our own value: a plain read
    if (acked != 0) {
      store(slot.previous_acked_epoch, acked, std::memory_order_relaxed);
      store(slot.previous_session_epoch, slot.session_epoch, std::memory_order_relaxed);
      store(slot.previous_delivered, slot.delivered, std::memory_order_relaxed);
    }
    // R20: `previous` is visible before acked_epoch changes; pairs with A20
    // in delivered_in_session().
    store(slot.acked_epoch, 0U, std::memory_order_release);
    store(slot.tx_ready_epoch, 0U, std::memory_order_relaxed);
    // F20: acked_epoch's zero is ordered before the zeroes below, so a reader
    // that saw a zeroed count sees the changed epoch too; pairs with F21.
    std::atomic_thread_fence(std::memory_order_release);
    store(slot.reserved0, 0U, std::memory_order_relaxed);
    store(slot.session_epoch, 0U, std::memory_order_relaxed);
    store(slot.delivered, std::uint64_t{0}, std::memory_order_relaxed);
    for (std::uint64_t& word : slot.reserved)
      store(word, std::uint64_t{0}, std::memory_order_relaxed);
  }

  [[nodiscard]] PeerView read_peer(std::uint32_t peer) const noexcept {
    PeerView view;
    ivshmem::PeerState state;
    if (!ivshmem::PeerState::decode(device_->peer_state(peer), state)) return view;
    view.epoch = state.epoch;
    if (state.phase < ivshmem::Phase::ready || state.epoch == 0) return view;
    const auto* header = reinterpret_cast<const LinkHeader*>(section(peer) + kLinkHeaderOffset);
    // A3: the header and slots written before the epoch are visible; pairs
    // with R3 in init().
    if (load_shared(header->epoch, std::memory_order_acquire) != state.epoch) return view;
    // No magic: the peer is rewriting its header (or never wrote one).
    if (load_shared(header->magic, std::memory_order_relaxed) != kLinkMagic) return view;
    view.version = load_shared(header->version, std::memory_order_relaxed);
    if (view.version != kLinkVersion ||
        load_shared(header->peer_count, std::memory_order_relaxed) != geometry_.peers() ||
        load_shared(header->ring_slot_size, std::memory_order_relaxed) !=
            geometry_.ring_slot_size()) {
      view.mismatch = true;
      return view;
    }
    const PeerSlot& slot = peer_slot(peer, self_);
    // A5: pairs with R5/R6 below (the peer's ack and tx-ready stores): what
    // the peer did before them (consumer reset, ring init) is visible.
    view.acked_epoch = load_shared(slot.acked_epoch, std::memory_order_acquire);
    view.tx_ready_epoch = load_shared(slot.tx_ready_epoch, std::memory_order_acquire);
    // A4: the slots were not rewritten under us; pairs with F3 in init().
    std::atomic_thread_fence(std::memory_order_acquire);
    if (load_shared(header->epoch, std::memory_order_relaxed) != state.epoch ||
        load_shared(header->magic, std::memory_order_relaxed) != kLinkMagic) {
      return view;
    }
    view.valid = true;
    return view;
  }

  template <typename Sink>
  void end_session(std::uint32_t peer, Sink& sink) noexcept {
    Pair& pair = pairs_[peer];
    if (pair.state == PairState::running && --running_pairs_ == 0) {
      device_->set_state(ivshmem::PeerState{ivshmem::Phase::ready, epoch_}.encode());
    }
    const bool was_running = pair.state == PairState::running;
    // Records from the ended session stay readable only if we had attached.
    pair.state = pair.rx_attached ? PairState::draining : PairState::idle;
    if (was_running) sink(LinkEvent{LinkEvent::Kind::peer_reset, peer, pair.peer_epoch});
  }

  template <typename Sink>
  void poll_peer(std::uint32_t peer, Sink& sink) noexcept {
    Pair& pair = pairs_[peer];
    const PeerView view = read_peer(peer);
    const bool same_session = view.valid && view.epoch == pair.peer_epoch;
    switch (pair.state) {
      case PairState::broken:
        if (view.epoch == pair.peer_epoch) return;
        pair.state = PairState::idle;
        pair.fault = PairFault::none;
        pair.rx_attached = false;
        break;
      case PairState::acked:
      case PairState::tx_ready:
      case PairState::running:
        if (!same_session) end_session(peer, sink);
        break;
      case PairState::idle:
      case PairState::draining: break;
    }
    if (pair.state == PairState::draining) return;
    if (pair.state == PairState::idle) {
      const PairFault mismatch =
          view.version != kLinkVersion ? PairFault::version_mismatch : PairFault::header_mismatch;
      if (view.mismatch && pair.fault != mismatch) {
        pair.fault = mismatch;
        pair.peer_version = view.version;
        pair.peer_epoch = view.epoch;
        pair.state = PairState::broken;
        sink(LinkEvent{LinkEvent::Kind::peer_broken, peer, view.epoch});
        return;
      }
      if (!view.valid) return;
      ack(peer, view.epoch);
    }
    if (pair.state == PairState::acked && view.acked_epoch == epoch_) start_tx(peer);
    if (pair.state == PairState::tx_ready && view.tx_ready_epoch == epoch_) attach_rx(peer, sink);
  }

  // Resets our consumer half of ring peer -> us for the peer's `epoch` and
  // tells it so.
  void ack(std::uint32_t peer, std::uint32_t epoch) noexcept {
    Pair& pair = pairs_[peer];
    auto* area = reinterpret_cast<ConsumerArea*>(own_ + LinkGeometry::consumer_area_offset(peer));
    store(area->wake_after.value, kNotArmed, std::memory_order_relaxed);
    store(area->wake_after.space_wanted, 0U, std::memory_order_relaxed);
    store(area->consumed.value, std::uint64_t{0}, std::memory_order_relaxed);
    PeerSlot& slot = own_slot(peer);
    retire_session(slot);
    slot.session_epoch = epoch_;
    pair.state = PairState::idle;
    pair.fault = PairFault::none;
    pair.rx_attached = false;
    pair.delivered = 0;
    pair.peer_version = 0;
    pair.space_rung = 0;
    pair.tx = {};
    pair.rx = {};
    pair.gauge.detach();
    pair.ledger.attach(
        reinterpret_cast<CreditTable*>(own_ + LinkGeometry::credit_table_offset(self_, peer)));
    pair.peer_epoch = epoch;
    // R5: the consumer-area and credit-table resets are visible before the
    // ack; pairs with A5 in the peer's read_peer().
    store(slot.acked_epoch, epoch, std::memory_order_release);
    pair.state = PairState::acked;
    (void)device_->doorbell(peer, 0);
  }

  // The peer reset its consumer area for us: (re)initialise our ring toward it.
  void start_tx(std::uint32_t peer) noexcept {
    Pair& pair = pairs_[peer];
    const std::span<std::byte> ring{own_ + geometry_.ring_slot_offset(self_, peer),
                                    geometry_.ring_slot_size()};
    const std::span<const std::byte> consumer{
        section(peer) + LinkGeometry::consumer_area_offset(self_), kConsumerAreaSize};
    (void)pair.tx.init(ring, consumer);  // geometry and alignment were checked in init()
    // The peer zeroed this table before its ack, which A5 acquired.
    pair.gauge.attach(reinterpret_cast<const CreditTable*>(
        section(peer) + LinkGeometry::credit_table_offset(peer, self_)));
    // R6: the ring's header and produced = 0 are visible before tx-ready;
    // pairs with A5 in the peer's read_peer().
    store(own_slot(peer).tx_ready_epoch, pair.peer_epoch, std::memory_order_release);
    pair.state = PairState::tx_ready;
    (void)device_->doorbell(peer, 0);
  }

  // The peer initialised its ring toward us for our epoch: attach to it.
  template <typename Sink>
  void attach_rx(std::uint32_t peer, Sink& sink) noexcept {
    Pair& pair = pairs_[peer];
    const std::span<const std::byte> ring{section(peer) + geometry_.ring_slot_offset(peer, self_),
                                          geometry_.ring_slot_size()};
    const std::span<std::byte> consumer{own_ + LinkGeometry::consumer_area_offset(peer),
                                        kConsumerAreaSize};
    (void)pair.rx.init(ring, consumer);
    pair.rx_attached = true;
    pair.state = PairState::running;
    if (running_pairs_++ == 0) {
      device_->set_state(ivshmem::PeerState{ivshmem::Phase::run, epoch_}.encode());
    }
    sink(LinkEvent{LinkEvent::Kind::peer_up, peer, pair.peer_epoch});
  }

  ivshmem::Device* device_ = nullptr;
  std::byte* own_ = nullptr;
  LinkGeometry geometry_;
  std::uint32_t self_ = 0;
  std::uint32_t epoch_ = 0;
  std::uint32_t previous_epoch_ = 0;
  std::uint32_t data_vector_ = 0;
  std::uint32_t running_pairs_ = 0;
  Pair pairs_[MaxPeers];
};

}  // namespace cellink::transports
