// Channel, Message and Loan: sending, receiving and waiting on one channel.
// Lock order and ownership: session_core.hpp. Spec: docs/link.md.
#include "cellink/linux-uio/channel.hpp"

#include <algorithm>
#include <optional>
#include <thread>

#include "session_core.hpp"

namespace cellink::linux_uio {
namespace {

using detail::ChannelState;
using detail::Core;
using detail::PeerPair;
using transports::ChannelStatus;

void cpu_relax() noexcept {
  __builtin_ia32_pause();
}

std::error_code timeout_error(std::chrono::nanoseconds timeout, MessageErrc if_no_wait) {
  return timeout == kNoWait ? make_error_code(if_no_wait) : make_error_code(MessageErrc::timed_out);
}

// Waits for the rendezvous or a session change on `channel`'s peer: pumps
// its ring (control records arrive there), arms it, sleeps.
void wait_for_peer_activity(ChannelState& channel, Clock::time_point deadline) {
  Core& core = *channel.core;
  std::unique_lock lock(core.mutex);
  (void)core.pump(channel.peer);
  if (core.protocol.channel(channel.peer, channel.local_id)
              .remote_id.load(std::memory_order_acquire) != 0 ||
      core.shut_down.load()) {
    return;
  }
  auto& link = core.protocol.link();
  if (link.readable(channel.peer) && !link.consumer(channel.peer).arm_wakeup()) return;
  core.block(lock, deadline);
}

// Reports a ring that broke while we wrote to it. Caller holds no lock.
void report_broken_tx(Core& core, std::uint32_t peer) {
  const std::lock_guard lock(core.mutex);
  const std::lock_guard tx(core.pairs[peer].tx_mutex);
  detail::RxSink sink{core};
  core.protocol.report_broken(peer, sink);
}

// One send, loan or fragment's wait for room: spins for the budget, then
// asks the receiver for a space-freed doorbell and sleeps until it (or any
// other event) comes. The clock is first read here, so a send that never
// waits never reads it.
class RoomWait {
 public:
  RoomWait(Core& core, std::chrono::nanoseconds timeout) : core_(core), timeout_(timeout) {}

  [[nodiscard]] Clock::time_point deadline() {
    start();
    return deadline_;
  }

  // False when the deadline passed.
  bool wait(ChannelState& channel, std::uint32_t size) {
    start();
    const Clock::time_point now = Clock::now();
    if (now >= deadline_) return false;
    if (now < spin_until_) {
      for (int i = 0; i < 16; ++i) cpu_relax();
      return true;
    }
    {
      const std::lock_guard tx(core_.pairs[channel.peer].tx_mutex);
      if (core_.protocol.want_space(channel.peer, channel.local_id, size)) return true;
    }
    std::unique_lock lock(core_.mutex);
    (void)core_.pump(channel.peer);  // our own receiving may be what frees the peer
    core_.block(lock, deadline_);
    return true;
  }

 private:
  void start() {
    if (started_) return;
    started_ = true;
    deadline_ = detail::deadline_after(timeout_);
    spin_until_ = Clock::now() + core_.spin_budget;
  }

  Core& core_;
  std::chrono::nanoseconds timeout_;
  bool started_ = false;
  Clock::time_point deadline_{};
  Clock::time_point spin_until_{};
};

// What a record carries when acquire_record() writes and seals it at once
// (a send or a fragment); a loan leaves `bytes` empty and keeps its ticket.
struct Fill {
  std::span<const std::byte> bytes;
  bool more = false;  // a fragment that the next record continues
  bool now = false;   // copy and seal under the same lock hold
};

// What acquire_record() hands back: a ticket in the ring, or why not.
struct Acquired {
  Acquired() = default;
  explicit Acquired(std::error_code failure) : error(failure) {}
  std::error_code error;
  Protocol::Ticket ticket;
  std::uint64_t resets = 0;
  bool behind_fragments = false;  // another thread's fragmented message is half out
};

// The one send preflight, for send(), each fragment and loan(): waits (as
// the timeout says) until local channel `channel` has a `size`-byte record
// reserved toward its peer, checking shutdown, close, reset, rendezvous,
// the receiver's maximum (`message_size`), credit and ring room.
// A single record (`whole`) yields to another thread's fragmented
// message instead of waiting inside it. With `fill.now`, the bytes are
// copied and sealed in the same hold of the pair's lock, so a thread that
// is preempted never holds back the other threads' records.
Acquired acquire_record(ChannelState& channel, std::size_t message_size, std::uint32_t size,
                        RoomWait& room, std::chrono::nanoseconds timeout, bool whole,
                        const Fill& fill = {}) {
  Core& core = *channel.core;
  PeerPair& pair = core.pairs[channel.peer];
  for (;;) {
    if (core.shut_down.load(std::memory_order_relaxed) ||
        channel.closed.load(std::memory_order_relaxed)) {
      return Acquired(make_error_code(MessageErrc::shut_down));
    }
    std::uint16_t remote = 0;
    ChannelStatus status =
        core.protocol.preflight(channel.peer, channel.local_id, message_size, remote);
    if (status == ChannelStatus::not_connected) {
      {
        const std::lock_guard lock(core.mutex);
        (void)core.pump(channel.peer);  // the peer's open may be waiting in the ring
      }
      status = core.protocol.preflight(channel.peer, channel.local_id, message_size, remote);
    }
    switch (status) {
      case ChannelStatus::ok: break;
      case ChannelStatus::peer_reset: return Acquired(make_error_code(MessageErrc::peer_reset));
      case ChannelStatus::channel_closed:
        return Acquired(make_error_code(MessageErrc::channel_closed));
      case ChannelStatus::message_too_large:
        return Acquired(make_error_code(MessageErrc::message_too_large));
      default:  // not_connected
        if (timeout == kNoWait || Clock::now() >= room.deadline()) {
          return Acquired(timeout_error(timeout, MessageErrc::not_connected));
        }
        wait_for_peer_activity(channel, room.deadline());
        continue;
    }
    if (size > core.protocol.max_chunk(channel.peer, channel.local_id)) {
      return Acquired(make_error_code(MessageErrc::loan_too_large));
    }
    Acquired acquired;
    acquired.resets = core.protocol.resets(channel.peer);
    {
      const std::lock_guard tx(pair.tx_mutex);
      const transports::LocalChannel& state = core.protocol.channel(channel.peer, channel.local_id);
      if (whole && state.fragmenting) {
        acquired.behind_fragments = true;
        return acquired;
      }
      // A fragmented message never queues behind a loan: its later
      // fragments could not be published until the loan is.
      if (!whole && core.protocol.loan_in_flight(channel.peer)) {
        status = ChannelStatus::loan_in_progress;
      } else {
        status = fill.now ? core.protocol.write(channel.peer, channel.local_id, remote, fill.bytes,
                                                fill.more, acquired.resets)
                          : core.protocol.reserve(channel.peer, channel.local_id, remote, size,
                                                  acquired.resets, acquired.ticket);
      }
    }
    switch (status) {
      case ChannelStatus::ok: return acquired;
      case ChannelStatus::retry:
      case ChannelStatus::peer_reset: continue;  // preflight() reports the reset
      case ChannelStatus::ring_broken:
        report_broken_tx(core, channel.peer);
        if (core.protocol.broken(channel.peer))
          return Acquired(make_error_code(MessageErrc::link_broken));
        continue;  // the peer restarted under us: reported as peer_reset
      case ChannelStatus::credit_fault:
        return Acquired(make_error_code(MessageErrc::channel_broken));
      default: break;  // would_block, loan_in_progress
    }
    if (timeout == kNoWait) {
      return Acquired(make_error_code(status == ChannelStatus::loan_in_progress
                                          ? MessageErrc::loan_in_progress
                                          : MessageErrc::would_block));
    }
    if (!room.wait(channel, size)) return Acquired(make_error_code(MessageErrc::timed_out));
  }
}

// The fast path: one record, no channel lock, no clock read unless it waits.
// Returns nothing when the channel is busy with another thread's fragmented
// message: the caller then queues behind it on send_mutex.
std::optional<std::error_code> send_record(ChannelState& channel,
                                           std::span<const std::byte> message,
                                           std::chrono::nanoseconds timeout) {
  Core& core = *channel.core;
  // First try: connected, room and credit at once. Everything else (waits,
  // resets, errors) takes acquire_record(), which checks it all again.
  if (!core.shut_down.load(std::memory_order_relaxed) &&
      !channel.closed.load(std::memory_order_relaxed)) {
    std::uint16_t remote = 0;
    const std::uint64_t resets = core.protocol.resets(channel.peer);
    const ChannelStatus checked =
        core.protocol.preflight(channel.peer, channel.local_id, message.size(), remote);
    // preflight() reports a reset once: it is this call's answer.
    if (checked == ChannelStatus::peer_reset) return make_error_code(MessageErrc::peer_reset);
    if (checked == ChannelStatus::ok &&
        message.size() <= core.protocol.max_chunk(channel.peer, channel.local_id)) {
      const std::lock_guard tx(core.pairs[channel.peer].tx_mutex);
      if (!core.protocol.channel(channel.peer, channel.local_id).fragmenting &&
          core.protocol.write(channel.peer, channel.local_id, remote, message, false, resets) ==
              ChannelStatus::ok) {
        return std::error_code{};
      }
    }
  }
  RoomWait room(core, timeout);
  const auto size = static_cast<std::uint32_t>(message.size());
  const Acquired acquired = acquire_record(channel, message.size(), size, room, timeout, true,
                                           Fill{message, false, true});
  if (acquired.behind_fragments) return std::nullopt;
  return acquired.error;
}

std::error_code send_fragments(ChannelState& channel, std::span<const std::byte> message,
                               std::chrono::nanoseconds timeout) {
  Core& core = *channel.core;
  RoomWait room(core, timeout);
  std::size_t offset = 0;
  while (offset < message.size() || message.empty()) {
    const std::size_t chunk_limit = core.protocol.max_chunk(channel.peer, channel.local_id);
    const std::size_t chunk =
        std::min(message.size() - offset, chunk_limit == 0 ? core.max_record : chunk_limit);
    const bool more = offset + chunk < message.size();
    const Acquired acquired =
        acquire_record(channel, message.size(), static_cast<std::uint32_t>(chunk), room, timeout,
                       false, Fill{message.subspan(offset, chunk), more, true});
    // The chunk was sized before the rendezvous (or before the peer
    // announced a smaller window): size it again now that it is known.
    if (acquired.error == MessageErrc::loan_too_large &&
        chunk > core.protocol.max_chunk(channel.peer, channel.local_id) &&
        core.protocol.max_chunk(channel.peer, channel.local_id) != 0) {
      continue;
    }
    if (acquired.error) {
      // Giving up with fragments already out owes the receiver an abort, so
      // it never joins the next message onto this one.
      if (offset != 0) {
        const std::lock_guard tx(core.pairs[channel.peer].tx_mutex);
        core.protocol.give_up(channel.peer, channel.local_id);
      }
      return acquired.error;
    }
    offset += chunk;
    if (message.empty()) break;
  }
  return {};
}

enum class SpinStatus : std::uint8_t { changed, budget_spent, timed_out, poll_due };

// A single-threaded Session has no progress thread: a receiver that spins
// looks at the device's events and the state table this often itself.
constexpr std::chrono::milliseconds kSingleThreadPoll{1};

// receive()'s spin phase. Called with `lock` (Core::mutex) held; returns
// with it held again. Spins without it until something receive() must look
// at may have changed: the peer's ring (a record or a control message), a
// reset, a close or shutdown; or until the spin budget or the deadline ends,
// or `poll_at` (single-threaded Sessions: time to look at the device). Reads
// the clock only every 64 rounds. A message that another thread's pump()
// queues for this channel needs no watch of its own: our pump() read the
// ring up to the watch's value under the lock, so that record moved
// `produced` past it. With no ring to watch (not running, or a full
// channel holding the ring back) it only naps briefly and returns.
SpinStatus spin_for_change(ChannelState& channel, std::uint64_t resets,
                           std::unique_lock<detail::SessionMutex>& lock,
                           Clock::time_point spin_until, Clock::time_point deadline,
                           Clock::time_point poll_at) {
  Core& core = *channel.core;
  auto& link = core.protocol.link();
  const transports::LocalChannel& state = core.protocol.channel(channel.peer, channel.local_id);
  const bool close_unreported = !state.close_reported;
  const transports::RingConsumer<kMaxHeldRecords>::Watch watch =
      link.readable(channel.peer) ? link.consumer(channel.peer).watch()
                                  : transports::RingConsumer<kMaxHeldRecords>::Watch{};
  lock.unlock();
  SpinStatus status = SpinStatus::changed;
  for (unsigned round = 1;; ++round) {
    // Relaxed: hints only; receive() re-checks each of them under the lock.
    if (watch.changed() || core.protocol.resets(channel.peer) != resets ||
        core.shut_down.load(std::memory_order_relaxed) ||
        channel.closed.load(std::memory_order_relaxed) ||
        (close_unreported && state.remote_closed.load(std::memory_order_relaxed))) {
      break;
    }
    if (round % 64 == 0 || watch.produced == nullptr) {
      const Clock::time_point now = Clock::now();
      if (now >= deadline) {
        status = SpinStatus::timed_out;
        break;
      }
      if (now >= spin_until) {
        status = SpinStatus::budget_spent;
        break;
      }
      if (now >= poll_at) {
        status = SpinStatus::poll_due;
        break;
      }
      if (watch.produced == nullptr) {
        for (int i = 0; i < 8; ++i) cpu_relax();
        break;
      }
    }
    cpu_relax();
  }
  lock.lock();
  return status;
}

}  // namespace

// ---- Loan --------------------------------------------------------------------

Loan::Loan(Loan&& other) noexcept
    : error_(other.error_), state_(std::move(other.state_)), data_(other.data_) {
  other.state_ = nullptr;
  other.data_ = {};
}

Loan& Loan::operator=(Loan&& other) noexcept {
  if (this != &other) {
    abandon();
    error_ = other.error_;
    state_ = std::move(other.state_);
    data_ = other.data_;
    other.state_ = nullptr;
    other.data_ = {};
  }
  return *this;
}

Loan::~Loan() {
  abandon();
}

std::error_code Loan::commit(std::size_t used) {
  return ChannelState::commit(*this, used);
}

void Loan::abandon() noexcept {
  ChannelState::abandon(*this);
}

Loan ChannelState::make_loan(const std::shared_ptr<detail::LoanState>& state,
                             std::span<std::byte> data) {
  Loan loan;
  loan.state_ = state;
  loan.data_ = data;
  return loan;
}

std::error_code ChannelState::commit(Loan& loan, std::size_t used) {
  if (!loan.state_) return loan.error_ ? loan.error_ : make_error_code(MessageErrc::shut_down);
  if (used > loan.data_.size()) return make_error_code(MessageErrc::loan_too_large);
  const std::shared_ptr<detail::LoanState> state = std::move(loan.state_);
  loan.state_ = nullptr;
  loan.data_ = {};
  ChannelState& channel = *state->channel;
  Core& core = *channel.core;
  ChannelStatus status = ChannelStatus::ok;
  {
    const std::lock_guard tx(core.pairs[channel.peer].tx_mutex);
    status = core.protocol.seal(channel.peer, state->ticket, static_cast<std::uint32_t>(used),
                                false, state->resets_at_loan);
  }
  // Sends queued behind the loan were published with it; a fragmented
  // send waiting for the loan may go on.
  if (core.options.threading == Threading::multi) {
    const std::lock_guard lock(core.mutex);
    if (core.sleepers != 0) core.wake_sleepers();
  }
  if (status == ChannelStatus::ok) return {};
  if (status == ChannelStatus::ring_broken) {
    report_broken_tx(core, channel.peer);
    return make_error_code(MessageErrc::link_broken);
  }
  return make_error_code(MessageErrc::peer_reset);
}

void ChannelState::abandon(Loan& loan) noexcept {
  if (!loan.state_) return;
  const std::shared_ptr<detail::LoanState> state = std::move(loan.state_);
  loan.state_ = nullptr;
  loan.data_ = {};
  ChannelState& channel = *state->channel;
  Core& core = *channel.core;
  const std::lock_guard tx(core.pairs[channel.peer].tx_mutex);
  core.protocol.abandon(channel.peer, state->ticket, state->resets_at_loan);
}

// ---- Channel -----------------------------------------------------------------

Channel::~Channel() {
  close();
}

Channel& Channel::operator=(Channel&& other) noexcept {
  if (this != &other) {
    close();  // the channel this handle named is given up, as by destruction
    state_ = std::move(other.state_);
  }
  return *this;
}

const std::string& Channel::name() const noexcept {
  return state_->name;
}
std::uint32_t Channel::peer() const noexcept {
  return state_->peer;
}

bool Channel::connected() const noexcept {
  if (!state_) return false;
  Protocol& protocol = state_->core->protocol;
  return protocol.channel(state_->peer, state_->local_id)
                 .remote_id.load(std::memory_order_acquire) != 0 &&
         protocol.running(state_->peer);
}

Channel::ResetReport Channel::last_reset() const {
  if (!state_) return {};
  Core& core = *state_->core;
  const std::lock_guard lock(core.mutex);
  return core.protocol.channel_reset(state_->peer, state_->local_id);
}

std::error_code Channel::wait_connected(std::chrono::nanoseconds timeout) {
  if (!state_) return MessageErrc::shut_down;
  const Clock::time_point deadline = detail::deadline_after(timeout);
  for (;;) {
    if (state_->core->shut_down.load() || state_->closed.load()) return MessageErrc::shut_down;
    if (connected()) return {};
    if (Clock::now() >= deadline) return timeout_error(timeout, MessageErrc::not_connected);
    wait_for_peer_activity(*state_, deadline);
  }
}

std::error_code Channel::send(std::span<const std::byte> message,
                              std::chrono::nanoseconds timeout) {
  if (!state_) return MessageErrc::shut_down;
  ChannelState& channel = *state_;
  Core& core = *channel.core;
  // One record needs no channel lock: it is written whole under tx_mutex.
  // A fragmented message holds the channel's send_mutex throughout, and marks
  // the channel `fragmenting` so single records wait for it (send_fragments).
  const std::size_t chunk = core.protocol.max_chunk(channel.peer, channel.local_id);
  if (message.size() <= (chunk == 0 ? core.max_record : chunk)) {
    const std::optional<std::error_code> sent = send_record(channel, message, timeout);
    // loan_too_large: the receiver's window is smaller than one record.
    if (sent && *sent != make_error_code(MessageErrc::loan_too_large)) return *sent;
  }
  const std::lock_guard send_lock(channel.send_mutex);
  return send_fragments(channel, message, timeout);
}

Loan Channel::loan(std::size_t size, std::chrono::nanoseconds timeout) {
  if (!state_) return ChannelState::make_loan_error(MessageErrc::shut_down);
  ChannelState& channel = *state_;
  Core& core = *channel.core;
  if (size > core.max_record) {
    return ChannelState::make_loan_error(MessageErrc::loan_too_large);
  }
  // Only one thread's record goes into this channel at a time: a loan waits
  // for a fragmented message on the same channel to finish.
  const std::lock_guard send_lock(channel.send_mutex);
  RoomWait room(core, timeout);
  const Acquired acquired =
      acquire_record(channel, size, static_cast<std::uint32_t>(size), room, timeout, true);
  if (acquired.error) return ChannelState::make_loan_error(acquired.error);
  auto state = std::make_shared<detail::LoanState>();
  state->channel = state_;
  state->ticket = acquired.ticket;
  state->resets_at_loan = acquired.resets;
  return ChannelState::make_loan(state, acquired.ticket.payload);
}

Message Channel::receive(std::chrono::nanoseconds timeout) {
  if (!state_) return ChannelState::make_error(MessageErrc::shut_down);
  ChannelState& channel = *state_;
  Core& core = *channel.core;
  Protocol& protocol = core.protocol;
  auto& link = protocol.link();
  transports::LocalChannel& state = protocol.channel(channel.peer, channel.local_id);
  // The clock is read only once nothing is there.
  Clock::time_point deadline{};
  Clock::time_point spin_until{};
  Clock::time_point poll_at = Clock::time_point::max();
  bool spinning = false;
  std::unique_lock lock(core.mutex);
  for (;;) {
    if (core.shut_down.load() || channel.closed.load()) {
      return ChannelState::make_error(MessageErrc::shut_down);
    }
    if (channel.queue.empty()) {
      detail::RxSink sink{core, &channel, nullptr};
      transports::Record record;
      std::uint32_t credit = 0;
      if (protocol.take_next(channel.peer, channel.local_id, record, credit, sink)) {
        return ChannelState::make_message(channel, record, link.peer_epoch(channel.peer), credit);
      }
    }
    if (!channel.queue.empty()) {
      return ChannelState::make_message(channel, core.pop_inbound(channel));
    }
    detail::Inbound direct;
    if (core.pump(channel.peer, &channel, &direct)) {
      return ChannelState::make_message(channel, std::move(direct));
    }
    if (!channel.queue.empty()) continue;
    const std::uint64_t resets = protocol.resets(channel.peer);
    if (resets != state.receive_resets_seen) {
      state.receive_resets_seen = resets;
      return ChannelState::make_error(MessageErrc::peer_reset);
    }
    if (protocol.broken(channel.peer)) return ChannelState::make_error(MessageErrc::link_broken);
    if (state.remote_closed.load(std::memory_order_acquire) && !state.close_reported) {
      state.close_reported = true;  // once per close, like peer_reset
      return ChannelState::make_error(MessageErrc::channel_closed);
    }
    if (timeout == kNoWait) {
      protocol.idle_poll(channel.peer);  // nothing to read: answer a missed request for room
      return ChannelState::make_error(MessageErrc::would_block);
    }
    if (!spinning) {
      spinning = true;
      deadline = detail::deadline_after(timeout);
      const Clock::time_point now = Clock::now();
      spin_until =
          core.spin_budget.count() == 0 ? Clock::time_point::min() : now + core.spin_budget;
      if (core.options.threading == Threading::single) poll_at = now + kSingleThreadPoll;
    }
    if (spin_until != Clock::time_point::min()) {
      // Spin without the lock, watching the ring's produced index and what
      // another thread could change for us; pump() again on any change.
      const SpinStatus spun = spin_for_change(channel, resets, lock, spin_until, deadline, poll_at);
      if (spun == SpinStatus::timed_out) return ChannelState::make_error(MessageErrc::timed_out);
      if (spun == SpinStatus::budget_spent) spin_until = Clock::time_point::min();
      if (spun == SpinStatus::poll_due) {
        // What the progress thread does for a multi-threaded Session.
        core.poll_link();
        (void)core.process_events_locked();
        poll_at = Clock::now() + kSingleThreadPoll;
      }
      continue;
    }
    if (Clock::now() >= deadline) return ChannelState::make_error(MessageErrc::timed_out);
    // Sleep: ask the peer for a doorbell first, then re-check (arm_wakeup
    // returns false when a record slipped in meanwhile).
    if (link.readable(channel.peer) && !link.consumer(channel.peer).arm_wakeup()) continue;
    core.block(lock, deadline);
  }
}

bool Channel::prepare_wait() {
  if (!state_) return false;
  ChannelState& channel = *state_;
  Core& core = *channel.core;
  Protocol& protocol = core.protocol;
  const transports::LocalChannel& state = protocol.channel(channel.peer, channel.local_id);
  const std::lock_guard lock(core.mutex);
  if (core.shut_down.load() || channel.closed.load() || !channel.queue.empty()) return false;
  (void)core.pump(channel.peer);
  if (!channel.queue.empty()) return false;
  if (protocol.resets(channel.peer) != state.receive_resets_seen) return false;
  if (protocol.broken(channel.peer) || (state.remote_closed.load() && !state.close_reported)) {
    return false;
  }
  auto& link = protocol.link();
  if (link.readable(channel.peer) && !link.consumer(channel.peer).arm_wakeup()) return false;
  protocol.idle(channel.peer);  // about to wait: answer a missed request for room
  return true;
}

void Channel::close() {
  if (!state_) return;
  ChannelState& channel = *state_;
  if (channel.closed.exchange(true)) return;
  Core& core = *channel.core;
  {
    const std::lock_guard lock(core.mutex);
    core.drop_queue(channel);
    if (core.channels[channel.peer][channel.local_id] == state_) {
      {
        const std::lock_guard tx(core.pairs[channel.peer].tx_mutex);
        if (core.shut_down.load()) {
          core.protocol.channel(channel.peer, channel.local_id).open = false;
        } else {
          core.protocol.close(channel.peer, channel.local_id);
        }
      }
      core.channels[channel.peer][channel.local_id] = nullptr;
    }
    // Held Messages point at the state: it lives until they are released.
    if (channel.held_messages != 0) core.retired.push_back(state_);
    core.wake_sleepers();
  }
}

int Channel::event_fd() const noexcept {
  return state_ ? state_->core->device.event_fd() : -1;
}

bool Channel::process_events() {
  if (!state_) return false;
  const std::lock_guard lock(state_->core->mutex);
  return state_->core->process_events_locked();
}

}  // namespace cellink::linux_uio
