// Endpoint (endpoint.hpp): the inmate's loop around the channel core.
//
// Everything here runs on the inmate's one thread, so the core's rx and tx
// sides need no lock: the program plays both.
#include "cellink/inmate-lib/endpoint.hpp"

namespace cellink::inmate {

using transports::ChannelStatus;
using transports::PairState;

// What the core's rx side reports, turned into inbox entries and events.
struct Endpoint::Sink {
  Endpoint& self;

  // Reading stops while the inbox or the reassembly slots are full: a
  // message that found no room would otherwise have to be dropped.
  [[nodiscard]] bool full() const noexcept {
    if (self.inbox_count_ >= kInboxSize) return true;
    for (const Slot& slot : self.slots_) {
      if (!slot.busy) return false;
    }
    return true;
  }

  void peer_up(std::uint32_t peer) noexcept {
    self.drain_deadline_[peer] = 0;
    self.push_event(EndpointEvent::Kind::peer_up, peer);
  }
  void peer_reset(std::uint32_t peer) noexcept {
    // A broken pair has no drain, and its ring is rewritten once the peer
    // restarts: what we still hold from it is dropped now.
    if (self.core_.broken(peer)) {
      self.drop_inbox(peer);
      self.push_event(EndpointEvent::Kind::peer_broken, peer);
      return;
    }
    self.push_event(EndpointEvent::Kind::peer_reset, peer);
  }
  bool deliver(std::uint32_t peer, std::uint16_t id, const transports::Record& record,
               std::uint32_t credit) noexcept {
    Inbound message;
    message.peer = peer;
    message.channel = id;
    message.data = record.payload;
    message.sequence = record.sequence;
    message.credit = credit;
    message.peer_epoch = self.core_.link().peer_epoch(peer);
    (void)self.push_inbox(message);  // room is checked before every read: full() below
    return full();
  }
  void append(std::uint32_t peer, std::uint16_t id, std::span<const std::byte> bytes) noexcept {
    int index = self.find_slot(peer, id);
    if (index < 0) {
      // The core discards a channel's old reassembly before the first
      // fragment of a new one, so a missing slot means a new message.
      for (int free = 0; free < static_cast<int>(kReassemblySlots); ++free) {
        Slot& slot = self.slots_[free];
        if (slot.busy) continue;
        slot.busy = true;
        slot.complete = slot.overflow = false;
        slot.peer = peer;
        slot.channel = id;
        slot.size = 0;
        index = free;
        break;
      }
      // Reading stops while no slot is free (full()), so this cannot
      // happen; if it did, the message is dropped at complete().
      if (index < 0) return;
    }
    Slot& slot = self.slots_[index];
    // The core bounds the message by kMaxInboundMessage (its
    // max_message_size) before it appends: this check is the last guard.
    if (slot.overflow || bytes.size() > kMaxInboundMessage - slot.size) {
      slot.overflow = true;
      return;
    }
    // One copy: the peer may rewrite the ring under us, the copy is stable.
    for (std::size_t i = 0; i < bytes.size(); ++i) slot.bytes[slot.size + i] = bytes[i];
    slot.size += static_cast<std::uint32_t>(bytes.size());
  }
  bool complete(std::uint32_t peer, std::uint16_t id, std::uint32_t credit) noexcept {
    const int index = self.find_slot(peer, id);
    const std::uint32_t epoch = self.core_.link().peer_epoch(peer);
    if (index < 0 || self.slots_[index].overflow) {
      if (index >= 0) self.slots_[index].busy = false;
      self.core_.release_message(peer, epoch, id, EndpointCore::kNoRecord, credit, false);
      self.push_event(EndpointEvent::Kind::message_dropped, peer, id,
                      ChannelStatus::message_too_large);
      return full();
    }
    Slot& slot = self.slots_[index];
    slot.complete = true;
    Inbound message;
    message.peer = peer;
    message.channel = id;
    message.data = {slot.bytes, slot.size};
    message.credit = credit;
    message.peer_epoch = epoch;
    message.slot = static_cast<std::int8_t>(index);
    (void)self.push_inbox(message);
    return full();
  }
  void fail(std::uint32_t peer, std::uint16_t id, ChannelStatus status) noexcept {
    discard(peer, id);
    self.push_event(EndpointEvent::Kind::message_dropped, peer, id, status);
  }
  void discard(std::uint32_t peer, std::uint16_t id) noexcept {
    const int index = self.find_slot(peer, id);
    if (index >= 0) self.slots_[index].busy = false;
  }
  // Nothing is copied off the ring: the inbox holds few records, and the
  // program releases them before it reads on.
  bool spill(std::uint32_t) noexcept { return false; }
  void changed() noexcept {}
};

transports::LinkInitStatus Endpoint::start(ivshmem::Device& device, const EndpointHooks& hooks,
                                           const EndpointOptions& options) noexcept {
  hooks_ = hooks;
  options_ = options;
  transports::ChannelCoreOptions core_options;
  core_options.max_message_size = kMaxInboundMessage;
  core_options.credit_window = options.credit_window;
  const transports::LinkInitStatus status = core_.init(device, core_options);
  if (status == transports::LinkInitStatus::ok) service();
  return status;
}

void Endpoint::service() noexcept {
  Sink sink{*this};
  core_.poll(sink);
  auto& link = core_.link();
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer == link.id() || link.state(peer) != PairState::draining) continue;
    // The ended session's records are still delivered; once none is left
    // unreleased (or the deadline passed) the peer's new incarnation is acked.
    const std::uint64_t now = hooks_.now_ns();
    if (drain_deadline_[peer] == 0) drain_deadline_[peer] = now + options_.drain_timeout_ns;
    read_peer(peer);
    if (!core_.drained(peer) && now < drain_deadline_[peer]) continue;
    drop_inbox(peer);
    core_.finish_drain(peer, sink);
    drain_deadline_[peer] = 0;
    core_.poll(sink);
  }
  check_faults();
}

void Endpoint::answer_space_requests() noexcept {
  const auto& link = core_.link();
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer != link.id()) core_.idle(peer);
  }
}

bool Endpoint::prepare_to_sleep() noexcept {
  answer_space_requests();
  auto& link = core_.link();
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    // arm_wakeup() publishes the index after which the producer must ring
    // us, then re-reads `produced` (its fence pairs with the producer's in
    // publish()): false when a record slipped in before the request.
    if (peer != link.id() && link.readable(peer) && !link.consumer(peer).arm_wakeup()) {
      return false;
    }
  }
  return true;
}

std::uint16_t Endpoint::open(std::uint32_t peer, const char* name) noexcept {
  if (peer >= core_.link().peer_count() || peer == core_.link().id() || name == nullptr) return 0;
  std::size_t length = 0;
  while (length <= transports::kMaxChannelName && name[length] != '\0') ++length;
  return core_.open(peer, name, length);
}

bool Endpoint::receive(Inbound& out) noexcept {
  const auto& link = core_.link();
  const std::uint32_t peers = link.peer_count();
  // Round robin, so that one busy peer does not starve another.
  for (std::uint32_t step = 0; step < peers && inbox_count_ == 0; ++step) {
    const std::uint32_t peer = (next_peer_ + step) % peers;
    if (peer != link.id()) read_peer(peer);
    if (inbox_count_ != 0) next_peer_ = (peer + 1) % peers;
  }
  // A fault a read latched is reported by the next service(), not here: an
  // empty receive is the polling loop's hot path.
  if (inbox_count_ == 0) return false;
  out = inbox_[inbox_head_];
  inbox_head_ = (inbox_head_ + 1) % kInboxSize;
  --inbox_count_;
  return true;
}

void Endpoint::release(Inbound& message, bool delivered) noexcept {
  if (message.slot >= 0 && static_cast<std::size_t>(message.slot) < kReassemblySlots) {
    slots_[message.slot].busy = false;
  }
  core_.release_message(message.peer, message.peer_epoch, message.channel, message.sequence,
                        message.credit, delivered);
  message = Inbound{};
}

ChannelStatus Endpoint::send(std::uint32_t peer, std::uint16_t channel,
                             std::span<const std::byte> bytes, std::uint64_t timeout_ns) noexcept {
  if (peer >= core_.link().peer_count() || peer == core_.link().id() || channel == 0 ||
      channel > kEndpointMaxChannels || !core_.channel(peer, channel).open) {
    return ChannelStatus::not_connected;
  }
  const std::uint64_t deadline = timeout_ns == 0 ? 0 : hooks_.now_ns() + timeout_ns;
  Sink sink{*this};
  std::size_t offset = 0;
  ChannelStatus status = ChannelStatus::ok;
  bool rechecked = false;  // want_space() said "try again" and we did, without progress
  for (;;) {
    std::uint16_t remote = 0;
    status = core_.preflight(peer, channel, bytes.size(), remote);
    std::uint32_t chunk_limit = status == ChannelStatus::ok ? core_.max_chunk(peer, channel) : 0;
    if (status == ChannelStatus::ok && chunk_limit == 0) status = ChannelStatus::not_connected;
    if (status == ChannelStatus::ok) {
      const std::size_t left = bytes.size() - offset;
      const std::size_t chunk = left < chunk_limit ? left : chunk_limit;
      const bool more = offset + chunk < bytes.size();
      status = core_.write(peer, channel, remote, bytes.subspan(offset, chunk), more,
                           core_.resets(peer));
      if (status == ChannelStatus::ok) {
        offset += chunk;
        rechecked = false;
        if (!more) return ChannelStatus::ok;
        continue;
      }
      if (status == ChannelStatus::retry || status == ChannelStatus::peer_reset) continue;
      if (status == ChannelStatus::ring_broken) {
        core_.report_broken(peer, sink);
        if (core_.broken(peer)) break;
        continue;  // the peer restarted under us: preflight() reports the reset
      }
      if (status == ChannelStatus::credit_fault) break;
      // would_block or loan_in_progress: ask for a space-freed doorbell, and
      // try once more at once if room may have appeared meanwhile; a second
      // "try again" without progress waits like any other (and so meets the
      // deadline).
      if (core_.want_space(peer, channel, static_cast<std::uint32_t>(chunk)) && !rechecked) {
        rechecked = true;
        continue;
      }
    } else if (status != ChannelStatus::not_connected) {
      break;  // peer_reset, channel_closed, message_too_large
    }
    if (timeout_ns == 0 || hooks_.now_ns() >= deadline) break;
    rechecked = false;
    if (prepare_to_sleep()) hooks_.wait(hooks_.context);
    service();
    if (status == ChannelStatus::not_connected) {
      // The peer's open may be waiting in its ring behind messages.
      read_peer(peer);
    }
  }
  // Fragments already out owe the receiver an abort, so that it never joins
  // the next message onto this one.
  if (offset != 0) core_.give_up(peer, channel);
  check_faults();
  return status;
}

ChannelStatus Endpoint::reply(const Inbound& message, std::span<const std::byte> bytes,
                              std::uint64_t timeout_ns) noexcept {
  ChannelStatus status = send(message.peer, message.channel, bytes, timeout_ns);
  if (status == ChannelStatus::peer_reset && running(message.peer) &&
      core_.link().peer_epoch(message.peer) == message.peer_epoch) {
    status = send(message.peer, message.channel, bytes, timeout_ns);
  }
  return status;
}

bool Endpoint::next_event(EndpointEvent& out) noexcept {
  if (event_count_ == 0) return false;
  out = events_[event_head_];
  event_head_ = (event_head_ + 1) % (sizeof(events_) / sizeof(events_[0]));
  --event_count_;
  return true;
}

int Endpoint::find_slot(std::uint32_t peer, std::uint16_t channel) const noexcept {
  for (std::size_t i = 0; i < kReassemblySlots; ++i) {
    const Slot& slot = slots_[i];
    if (slot.busy && !slot.complete && slot.peer == peer && slot.channel == channel) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

void Endpoint::push_event(EndpointEvent::Kind kind, std::uint32_t peer, std::uint16_t channel,
                          ChannelStatus status) noexcept {
  constexpr std::size_t capacity = sizeof(events_) / sizeof(events_[0]);
  if (event_count_ == capacity) {
    ++events_lost_;
    return;
  }
  events_[(event_head_ + event_count_) % capacity] = {kind, peer, channel, status};
  ++event_count_;
}

bool Endpoint::push_inbox(const Inbound& message) noexcept {
  if (inbox_count_ == kInboxSize) return false;
  inbox_[(inbox_head_ + inbox_count_) % kInboxSize] = message;
  ++inbox_count_;
  return true;
}

void Endpoint::read_peer(std::uint32_t peer) noexcept {
  Sink sink{*this};
  if (sink.full()) return;
  if (core_.read(peer, sink) == EndpointCore::ReadStatus::broken) core_.report_broken(peer, sink);
}

void Endpoint::drop_inbox(std::uint32_t peer) noexcept {
  // Keeps the other peers' messages in their order.
  std::size_t kept = 0;
  for (std::size_t i = 0; i < inbox_count_; ++i) {
    Inbound message = inbox_[(inbox_head_ + i) % kInboxSize];
    if (message.peer == peer) {
      release(message, false);
      continue;
    }
    inbox_[(inbox_head_ + kept) % kInboxSize] = message;
    ++kept;
  }
  inbox_count_ = kept;
  // Reassemblies in progress go; a complete one the program holds is freed
  // by its release().
  for (Slot& slot : slots_) {
    if (slot.busy && !slot.complete && slot.peer == peer) slot.busy = false;
  }
}

void Endpoint::check_faults() noexcept {
  const std::uint64_t faults = core_.stats().protocol_faults;
  if (faults == faults_seen_) return;
  faults_seen_ = faults;
  const transports::ChannelDiagnostic diagnostic = core_.diagnostic();
  push_event(EndpointEvent::Kind::protocol_fault, diagnostic.peer, diagnostic.channel);
}

}  // namespace cellink::inmate
