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

void cpu_relax() noexcept {
  __builtin_ia32_pause();
}

// Waiting for ring space: the ring has no "space freed" interrupt, so a
// blocked sender spins for the budget, then sleeps in growing steps up to
// this, handling device events between naps so that a peer reset ends the wait.
constexpr std::chrono::microseconds kMaxSpaceNap{1000};

class SpaceWait {
 public:
  SpaceWait(Core& core, std::chrono::nanoseconds timeout) : core_(core), timeout_(timeout) {}

  // False when the deadline passed. The clock is first read here, so a send
  // that never waits never reads it.
  bool wait() {
    const Clock::time_point now = Clock::now();
    if (!started_) {
      started_ = true;
      deadline_ = detail::deadline_after(timeout_);
      spin_until_ = now + core_.spin_budget;
    }
    if (now >= deadline_) return false;
    if (now < spin_until_) {
      for (int i = 0; i < 16; ++i) cpu_relax();
      return true;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(nap_, deadline_ - now));
    nap_ = std::min<std::chrono::microseconds>(nap_ * 2, kMaxSpaceNap);
    const std::lock_guard lock(core_.mutex);
    (void)core_.process_events_locked();
    return true;
  }

  [[nodiscard]] Clock::time_point deadline() {
    if (!started_) {
      started_ = true;
      deadline_ = detail::deadline_after(timeout_);
      spin_until_ = Clock::now() + core_.spin_budget;
    }
    return deadline_;
  }

 private:
  Core& core_;
  std::chrono::nanoseconds timeout_;
  bool started_ = false;
  Clock::time_point deadline_{};
  Clock::time_point spin_until_{};
  std::chrono::microseconds nap_{10};
};

// Waits for the rendezvous or a session change on `channel`'s peer: pumps
// its ring (control records arrive there), arms it, sleeps.
void wait_for_peer_activity(ChannelState& channel, Clock::time_point deadline) {
  Core& core = *channel.core;
  std::unique_lock lock(core.mutex);
  (void)core.pump(channel.peer, nullptr, nullptr);
  if (channel.remote_id.load(std::memory_order_acquire) != 0 || core.shut_down.load()) return;
  if (core.link.readable(channel.peer) && !core.link.consumer(channel.peer).arm_wakeup()) return;
  core.block(lock, deadline);
}

// Reads the peer's ring for control records (its open may be waiting
// there), then returns the channel's remote id.
std::uint16_t take_announcements(ChannelState& channel) {
  Core& core = *channel.core;
  const std::lock_guard lock(core.mutex);
  (void)core.pump(channel.peer, nullptr, nullptr);
  return channel.remote_id.load(std::memory_order_acquire);
}

// Caller holds the pair's tx_mutex. Writes the abort owed for a fragmented
// message given up earlier on `channel`, if any, before anything else goes
// to that channel. False when the ring has no room for it yet.
bool settle_abort(Core& core, ChannelState& channel, std::uint16_t remote) {
  if (!channel.abort_pending) return true;
  transports::ControlMessage message;
  if (transports::encode_control(transports::ControlType::abort, remote, channel.name.data(),
                                 channel.name.size(), 0, message) &&
      core.link.producer(channel.peer)
              .write(std::as_bytes(std::span{&message, 1}), transports::kControlChannel) !=
          transports::ProduceStatus::ok) {
    return false;
  }
  channel.abort_pending = false;
  return true;
}

std::error_code timeout_error(std::chrono::nanoseconds timeout, MessageErrc if_no_wait) {
  return timeout == kNoWait ? make_error_code(if_no_wait) : make_error_code(MessageErrc::timed_out);
}

// Reports a ring that broke while we wrote to it. Caller holds no lock.
void report_broken_tx(Core& core, std::uint32_t peer) {
  const std::lock_guard lock(core.mutex);
  const std::lock_guard tx(core.pairs[peer].tx_mutex);
  core.link.report_ring_broken(
      peer, [&](const transports::LinkEvent& event) { core.on_link_event(event); });
}

// The fast path: one record, no channel lock, no clock read unless it waits.
// Returns nothing when the channel is busy with another thread's fragmented
// message: the caller then queues behind it on send_mutex.
std::optional<std::error_code> send_record(ChannelState& channel,
                                           std::span<const std::byte> message,
                                           std::chrono::nanoseconds timeout) {
  Core& core = *channel.core;
  PeerPair& pair = core.pairs[channel.peer];
  std::optional<SpaceWait> space;
  for (;;) {
    if (core.shut_down.load(std::memory_order_relaxed) ||
        channel.closed.load(std::memory_order_relaxed)) {
      return make_error_code(MessageErrc::shut_down);
    }
    const std::uint64_t resets = pair.resets.load(std::memory_order_acquire);
    if (resets != channel.send_resets_seen.load(std::memory_order_relaxed)) {
      channel.send_resets_seen.store(resets, std::memory_order_relaxed);
      return make_error_code(MessageErrc::peer_reset);
    }
    std::uint16_t remote = channel.remote_id.load(std::memory_order_acquire);
    if (remote == 0) remote = take_announcements(channel);
    if (remote == 0) {
      if (channel.remote_closed.load()) return make_error_code(MessageErrc::channel_closed);
      if (!space) space.emplace(core, timeout);
      if (timeout == kNoWait || Clock::now() >= space->deadline()) {
        return timeout_error(timeout, MessageErrc::not_connected);
      }
      wait_for_peer_activity(channel, space->deadline());
      continue;
    }
    if (message.size() > channel.remote_max.load(std::memory_order_relaxed)) {
      return make_error_code(MessageErrc::message_too_large);
    }
    transports::ProduceStatus status = transports::ProduceStatus::full;
    bool loan_busy = false;
    {
      const std::lock_guard tx(pair.tx_mutex);
      if (channel.fragmenting) return std::nullopt;
      if (!pair.running.load(std::memory_order_acquire) ||
          pair.resets.load(std::memory_order_acquire) != resets) {
        continue;
      }
      loan_busy = pair.loan_active;
      if (!loan_busy) {
        if (!pair.control_queue.empty()) core.flush_control(channel.peer);
        transports::RingProducer& producer = core.link.producer(channel.peer);
        transports::RingProducer::Reservation reservation;
        if (settle_abort(core, channel, remote)) {
          status =
              producer.reserve(static_cast<std::uint32_t>(message.size()), remote, reservation);
        }
        if (status == transports::ProduceStatus::ok) {
          std::copy_n(message.data(), message.size(), reservation.payload.data());
          (void)producer.commit(reservation, static_cast<std::uint32_t>(message.size()));
          ++pair.sent_in_session;
          (void)producer.publish(core.device, channel.peer, core.link.data_vector());
          return std::error_code{};
        }
      }
    }
    if (status == transports::ProduceStatus::broken) {
      report_broken_tx(core, channel.peer);
      continue;  // a reset (reported above next time round) or a broken pair
    }
    if (core.pairs[channel.peer].broken) return make_error_code(MessageErrc::link_broken);
    if (timeout == kNoWait) {
      return make_error_code(loan_busy ? MessageErrc::loan_in_progress : MessageErrc::would_block);
    }
    if (!space) space.emplace(core, timeout);
    if (!space->wait()) return make_error_code(MessageErrc::timed_out);
  }
}

void give_up(PeerPair& pair, ChannelState& channel) {
  const std::lock_guard tx(pair.tx_mutex);
  channel.abort_pending = true;
}

std::error_code send_fragments(ChannelState& channel, std::span<const std::byte> message,
                               std::chrono::nanoseconds timeout) {
  Core& core = *channel.core;
  PeerPair& pair = core.pairs[channel.peer];
  SpaceWait space(core, timeout);
  std::size_t offset = 0;
  bool started = false;  // a fragment is in the ring: the message must be finished
  // Clears `fragmenting` on every way out.
  struct Fragmenting {
    PeerPair& pair;
    ChannelState& channel;
    ~Fragmenting() {
      const std::lock_guard tx(pair.tx_mutex);
      channel.fragmenting = false;
    }
  } fragmenting{pair, channel};
  for (;;) {
    if (core.shut_down.load() || channel.closed.load()) return MessageErrc::shut_down;
    const std::uint64_t resets = pair.resets.load(std::memory_order_acquire);
    if (resets != channel.send_resets_seen.load(std::memory_order_relaxed)) {
      channel.send_resets_seen.store(resets, std::memory_order_relaxed);
      return MessageErrc::peer_reset;
    }
    std::uint16_t remote = channel.remote_id.load(std::memory_order_acquire);
    if (remote == 0) remote = take_announcements(channel);
    if (remote == 0) {
      if (channel.remote_closed.load()) return MessageErrc::channel_closed;
      if (timeout == kNoWait || Clock::now() >= space.deadline()) {
        return timeout_error(timeout, MessageErrc::not_connected);
      }
      wait_for_peer_activity(channel, space.deadline());
      continue;
    }
    if (message.size() > channel.remote_max.load(std::memory_order_relaxed)) {
      return MessageErrc::message_too_large;
    }
    bool broken = false;
    bool loan_busy = false;
    {
      const std::lock_guard tx(pair.tx_mutex);
      if (!pair.running.load(std::memory_order_acquire) ||
          pair.resets.load(std::memory_order_acquire) != resets) {
        continue;
      }
      loan_busy = pair.loan_active;
      if (!loan_busy) {
        if (!pair.control_queue.empty()) core.flush_control(channel.peer);
        transports::RingProducer& producer = core.link.producer(channel.peer);
        for (bool settled = started || settle_abort(core, channel, remote); settled;) {
          const std::size_t chunk = std::min(message.size() - offset, core.max_record);
          const bool more = offset + chunk < message.size();
          transports::RingProducer::Reservation reservation;
          const transports::ProduceStatus status =
              producer.reserve(static_cast<std::uint32_t>(chunk), remote, reservation);
          if (status == transports::ProduceStatus::ok) {
            std::copy_n(message.data() + offset, chunk, reservation.payload.data());
            (void)producer.commit(reservation, static_cast<std::uint32_t>(chunk),
                                  more ? transports::kRecordMoreFragments : std::uint16_t{0});
            offset += chunk;
            started = true;
            channel.fragmenting = more;
            if (more) continue;
            ++pair.sent_in_session;
            (void)producer.publish(core.device, channel.peer, core.link.data_vector());
            return {};
          }
          // Full: let the receiver start on what is there, then wait.
          if (status == transports::ProduceStatus::full) {
            (void)producer.publish(core.device, channel.peer, core.link.data_vector());
          }
          broken = status == transports::ProduceStatus::broken;
          break;
        }
      }
    }
    if (broken) {
      report_broken_tx(core, channel.peer);
      if (pair.broken) return MessageErrc::link_broken;
      continue;  // the peer restarted under us: reported as peer_reset above
    }
    // Giving up with fragments already out owes the receiver an abort, so it
    // never joins the next message onto this one (settle_abort()).
    if (timeout == kNoWait) {
      if (started) give_up(pair, channel);
      return loan_busy ? MessageErrc::loan_in_progress : MessageErrc::would_block;
    }
    if (!space.wait()) {
      if (started) give_up(pair, channel);
      return MessageErrc::timed_out;
    }
  }
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
  PeerPair& pair = core.pairs[channel.peer];
  const bool watchable = pair.full_channels == 0 && core.link.readable(channel.peer);
  const bool close_unreported = !channel.close_reported;
  const transports::RingConsumer<kMaxHeldRecords>::Watch watch =
      watchable ? core.link.consumer(channel.peer).watch()
                : transports::RingConsumer<kMaxHeldRecords>::Watch{};
  lock.unlock();
  SpinStatus status = SpinStatus::changed;
  for (unsigned round = 1;; ++round) {
    if (watch.changed() || pair.resets.load(std::memory_order_relaxed) != resets ||
        core.shut_down.load(std::memory_order_relaxed) ||
        channel.closed.load(std::memory_order_relaxed) ||
        (close_unreported && channel.remote_closed.load(std::memory_order_relaxed))) {
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
  PeerPair& pair = core.pairs[channel.peer];
  bool broken = false;
  {
    const std::lock_guard tx(pair.tx_mutex);
    pair.loan_active = false;
    if (pair.resets.load(std::memory_order_acquire) != state->resets_at_loan ||
        !pair.running.load(std::memory_order_acquire)) {
      return make_error_code(MessageErrc::peer_reset);
    }
    transports::RingProducer& producer = core.link.producer(channel.peer);
    if (producer.commit(state->reservation, static_cast<std::uint32_t>(used)) !=
        transports::ProduceStatus::ok) {
      broken = producer.broken();
    } else {
      ++pair.sent_in_session;
      (void)producer.publish(core.device, channel.peer, core.link.data_vector());
      return {};
    }
  }
  if (broken) report_broken_tx(core, channel.peer);
  return make_error_code(MessageErrc::link_broken);
}

void ChannelState::abandon(Loan& loan) noexcept {
  if (!loan.state_) return;
  const std::shared_ptr<detail::LoanState> state = std::move(loan.state_);
  loan.state_ = nullptr;
  loan.data_ = {};
  ChannelState& channel = *state->channel;
  Core& core = *channel.core;
  PeerPair& pair = core.pairs[channel.peer];
  const std::lock_guard tx(pair.tx_mutex);
  pair.loan_active = false;
  if (pair.resets.load(std::memory_order_acquire) == state->resets_at_loan &&
      pair.running.load(std::memory_order_acquire)) {
    (void)core.link.producer(channel.peer).abandon(state->reservation);
  }
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
  return state_ && state_->remote_id.load(std::memory_order_acquire) != 0 &&
         state_->core->pairs[state_->peer].running.load(std::memory_order_acquire);
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
  if (message.size() <= core.max_record) {
    const std::optional<std::error_code> sent = send_record(channel, message, timeout);
    if (sent) return *sent;
  }
  const std::lock_guard send_lock(channel.send_mutex);
  return send_fragments(channel, message, timeout);
}

Loan Channel::loan(std::size_t size, std::chrono::nanoseconds timeout) {
  if (!state_) return ChannelState::make_loan_error(MessageErrc::shut_down);
  ChannelState& channel = *state_;
  Core& core = *channel.core;
  PeerPair& pair = core.pairs[channel.peer];
  if (size > core.max_record) {
    return ChannelState::make_loan_error(MessageErrc::loan_too_large);
  }
  const std::lock_guard send_lock(channel.send_mutex);
  SpaceWait space(core, timeout);
  for (;;) {
    if (core.shut_down.load() || channel.closed.load()) {
      return ChannelState::make_loan_error(MessageErrc::shut_down);
    }
    const std::uint64_t resets = pair.resets.load(std::memory_order_acquire);
    if (resets != channel.send_resets_seen.load(std::memory_order_relaxed)) {
      channel.send_resets_seen.store(resets, std::memory_order_relaxed);
      return ChannelState::make_loan_error(MessageErrc::peer_reset);
    }
    std::uint16_t remote = channel.remote_id.load(std::memory_order_acquire);
    if (remote == 0) remote = take_announcements(channel);
    if (remote == 0) {
      if (channel.remote_closed.load()) {
        return ChannelState::make_loan_error(MessageErrc::channel_closed);
      }
      if (timeout == kNoWait || Clock::now() >= space.deadline()) {
        return ChannelState::make_loan_error(timeout_error(timeout, MessageErrc::not_connected));
      }
      wait_for_peer_activity(channel, space.deadline());
      continue;
    }
    if (size > channel.remote_max.load(std::memory_order_relaxed)) {
      return ChannelState::make_loan_error(MessageErrc::message_too_large);
    }
    bool broken = false;
    bool loan_busy = false;
    {
      const std::lock_guard tx(pair.tx_mutex);
      if (!pair.running.load(std::memory_order_acquire) ||
          pair.resets.load(std::memory_order_acquire) != resets) {
        continue;
      }
      loan_busy = pair.loan_active;
      if (!loan_busy) {
        core.flush_control(channel.peer);
        auto state = std::make_shared<detail::LoanState>();
        const transports::ProduceStatus status =
            settle_abort(core, channel, remote)
                ? core.link.producer(channel.peer)
                      .reserve(static_cast<std::uint32_t>(size), remote, state->reservation)
                : transports::ProduceStatus::full;
        if (status == transports::ProduceStatus::ok) {
          pair.loan_active = true;
          state->channel = state_;
          state->resets_at_loan = resets;
          return ChannelState::make_loan(state, state->reservation.payload);
        }
        broken = status == transports::ProduceStatus::broken;
      }
    }
    if (broken) {
      report_broken_tx(core, channel.peer);
      return ChannelState::make_loan_error(MessageErrc::link_broken);
    }
    if (timeout == kNoWait) {
      return ChannelState::make_loan_error(loan_busy ? MessageErrc::loan_in_progress
                                                     : MessageErrc::would_block);
    }
    if (!space.wait()) return ChannelState::make_loan_error(MessageErrc::timed_out);
  }
}

Message Channel::receive(std::chrono::nanoseconds timeout) {
  if (!state_) return ChannelState::make_error(MessageErrc::shut_down);
  ChannelState& channel = *state_;
  Core& core = *channel.core;
  PeerPair& pair = core.pairs[channel.peer];
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
    if (transports::Record record; core.take_next(channel, record)) {
      return ChannelState::make_message(channel, record, core.link.peer_epoch(channel.peer));
    }
    if (!channel.queue.empty()) {
      return ChannelState::make_message(channel, core.pop_inbound(channel));
    }
    detail::Inbound direct;
    if (core.pump(channel.peer, &channel, &direct)) {
      return ChannelState::make_message(channel, std::move(direct));
    }
    if (!channel.queue.empty()) continue;
    const std::uint64_t resets = pair.resets.load(std::memory_order_acquire);
    if (resets != channel.receive_resets_seen) {
      channel.receive_resets_seen = resets;
      return ChannelState::make_error(MessageErrc::peer_reset);
    }
    if (pair.broken) return ChannelState::make_error(MessageErrc::link_broken);
    if (channel.remote_closed.load(std::memory_order_acquire) && !channel.close_reported) {
      channel.close_reported = true;  // once per close, like peer_reset
      return ChannelState::make_error(MessageErrc::channel_closed);
    }
    if (timeout == kNoWait) return ChannelState::make_error(MessageErrc::would_block);
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
    // returns false when a record slipped in meanwhile). Under back-pressure
    // the ring holds records nobody may read yet: sleep until a receiver of
    // the full channel makes room (pop_inbound() wakes us).
    if (pair.full_channels == 0 && core.link.readable(channel.peer) &&
        !core.link.consumer(channel.peer).arm_wakeup()) {
      continue;
    }
    core.block(lock, deadline);
  }
}

bool Channel::prepare_wait() {
  if (!state_) return false;
  ChannelState& channel = *state_;
  Core& core = *channel.core;
  const std::lock_guard lock(core.mutex);
  if (core.shut_down.load() || channel.closed.load() || !channel.queue.empty()) return false;
  (void)core.pump(channel.peer, nullptr, nullptr);
  if (!channel.queue.empty()) return false;
  if (core.pairs[channel.peer].resets.load() != channel.receive_resets_seen) return false;
  if (core.pairs[channel.peer].broken ||
      (channel.remote_closed.load() && !channel.close_reported)) {
    return false;
  }
  if (core.pairs[channel.peer].full_channels == 0 && core.link.readable(channel.peer) &&
      !core.link.consumer(channel.peer).arm_wakeup()) {
    return false;
  }
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
      core.channels[channel.peer][channel.local_id] = nullptr;
    }
    // Held Messages point at the state: it lives until they are released.
    if (channel.held_messages != 0) core.retired.push_back(state_);
    if (!core.shut_down.load()) {
      PeerPair& pair = core.pairs[channel.peer];
      const std::lock_guard tx(pair.tx_mutex);
      if (pair.running.load()) {
        core.enqueue_control(channel.peer, transports::ControlType::close, channel);
        core.flush_control(channel.peer);
      }
    }
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
