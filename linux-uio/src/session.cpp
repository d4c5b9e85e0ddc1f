// Session: the handshake, the name service, reassembly and waiting.
// Lock order and ownership: session_core.hpp. Spec: docs/link.md.
#include "cellink/linux-uio/session.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>

#include "session_core.hpp"

namespace cellink::linux_uio {
namespace {

[[noreturn]] void throw_invalid(const std::string& what) {
  throw std::system_error(std::make_error_code(std::errc::invalid_argument), what);
}

}  // namespace

namespace detail {
namespace {

// The waiter re-checks everything at least this often, so a lost interrupt
// (or a daemon restart) costs latency, never progress.
constexpr std::chrono::milliseconds kSafetyPoll{20};

}  // namespace

Core::Core(WaitableDevice& device_in, SessionOptions options_in)
    : device(device_in),
      options(options_in),
      spin_budget(options_in.spin_budget.count() < 0 ? kDefaultSpinBudget
                                                     : options_in.spin_budget) {
  if (options.max_message_size == 0 || options.max_message_size > 0xffffffffU) {
    throw_invalid("cellink session: max_message_size must be 1..4294967295 bytes");
  }
  const transports::LinkInitStatus status = link.init(device);
  if (status != transports::LinkInitStatus::ok) {
    throw_invalid(std::string("cellink session: ") + transports::describe(status));
  }
  max_record = transports::max_payload(link.geometry().ring_capacity_bytes());
  if (options.threading == Threading::single) {
    mutex.disable();
    for (PeerPair& pair : pairs) pair.tx_mutex.disable();
  }
  wake_fd = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_fd) throw std::system_error(errno, std::generic_category(), "eventfd");
  wake_fd_in_device = device.add_wake_fd(wake_fd.get());
}

Core::~Core() = default;

void Core::wake_sleepers() {
  ++wake_serial;
  woken.notify_all();
  if (waiter_active) {
    const std::uint64_t one = 1;
    // A full counter already wakes the waiter; nothing else can go wrong.
    (void)!::write(wake_fd.get(), &one, sizeof one);
  }
}

void Core::handle_events(const std::vector<DeviceEvent>& events) {
  bool membership = false;
  for (const DeviceEvent& event : events) {
    if (event.kind != DeviceEvent::Kind::doorbell || event.vector == 0) membership = true;
  }
  if (membership) poll_link();
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer != link.id() && link.state(peer) == transports::PairState::draining) {
      try_finish_drain(peer);
    }
  }
}

void Core::poll_link() {
  std::array<std::unique_lock<SessionMutex>, ivshmem::kMaxPeers> tx_locks;
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer != link.id()) tx_locks[peer] = std::unique_lock(pairs[peer].tx_mutex);
  }
  std::vector<transports::LinkEvent> events;
  link.poll([&](const transports::LinkEvent& event) { events.push_back(event); });
  for (const transports::LinkEvent& event : events) on_link_event(event);
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer != link.id() && pairs[peer].running.load(std::memory_order_relaxed)) {
      flush_control(peer);
    }
  }
}

void Core::on_link_event(const transports::LinkEvent& event) {
  PeerPair& pair = pairs[event.peer];
  switch (event.kind) {
    case transports::LinkEvent::Kind::peer_up:
      for (const std::shared_ptr<ChannelState>& channel : channels[event.peer]) {
        if (!channel) continue;
        discard_partial(*channel);
        channel->abort_pending = false;  // a new session has no half message
      }
      pair.outstanding = 0;
      pair.broken = false;
      pair.sent_in_session = 0;
      pair.control_queue.clear();
      pair.running.store(true, std::memory_order_release);
      announce_all(event.peer);
      break;
    case transports::LinkEvent::Kind::peer_reset:
    case transports::LinkEvent::Kind::peer_broken: {
      const bool was_running = pair.running.exchange(false, std::memory_order_acq_rel);
      if (event.kind == transports::LinkEvent::Kind::peer_broken) {
        pair.broken = true;
        if (!was_running) break;
      }
      ResetReport report;
      report.resets = pair.last_reset.resets + 1;
      report.peer_epoch = event.peer_epoch;
      report.sent = pair.sent_in_session;
      const transports::DeliveryCount count =
          link.delivered_in_session(event.peer, link.epoch(), event.peer_epoch);
      report.delivered_known = count.known;
      report.delivered = count.delivered;
      pair.last_reset = report;
      pair.remote_by_name.clear();
      pair.control_queue.clear();
      // A reassembly in progress stays: the drain may still bring the rest
      // of that message. try_finish_drain() discards what never completed.
      for (const std::shared_ptr<ChannelState>& channel : channels[event.peer]) {
        if (!channel) continue;
        channel->remote_id.store(0, std::memory_order_relaxed);
        channel->remote_closed.store(false, std::memory_order_relaxed);
      }
      pair.drain_deadline = Clock::now() + options.drain_timeout;
      pair.resets.fetch_add(1, std::memory_order_release);
      wake_sleepers();
      break;
    }
  }
}

void Core::try_finish_drain(std::uint32_t peer) {
  PeerPair& pair = pairs[peer];
  (void)pump(peer, nullptr, nullptr);
  transports::Record probe;
  auto& rx = link.consumer(peer);
  const transports::ConsumeStatus status =
      rx.broken() ? transports::ConsumeStatus::broken : rx.peek(probe);
  if (status == transports::ConsumeStatus::ok) {
    // pump() stopped (back-pressure); the record stays for the next pump.
    (void)rx.release(probe);
    return;
  }
  const bool drained = status != transports::ConsumeStatus::too_many_held && pair.outstanding == 0;
  if (!drained && Clock::now() < pair.drain_deadline) return;
  {
    const std::lock_guard tx(pair.tx_mutex);
    if (pair.loan_active && Clock::now() < pair.drain_deadline) return;
  }
  // Whatever is still queued from the ended session is dropped, and not
  // counted as delivered: the peer's delivery counter stays exact.
  // A message whose last fragment never came is not a message: the new
  // session's first fragment must start a fresh reassembly.
  for (const std::shared_ptr<ChannelState>& channel : channels[peer]) {
    if (!channel) continue;
    drop_queue(*channel);
    discard_partial(*channel);
  }
  pair.outstanding = 0;
  link.finish_drain(peer);
  poll_link();
}

void Core::discard_partial(ChannelState& channel) {
  channel.partial_active = false;
  channel.partial_overflow = false;
  channel.partial.clear();
}

void Core::drop_queue(ChannelState& channel) {
  while (!channel.queue.empty()) {
    const Inbound inbound = pop_inbound(channel);
    if (inbound.error == MessageErrc{}) {
      ++stats.dropped_undelivered;
      // No longer outstanding: a later drain must not wait for it.
      if (inbound.peer_epoch == link.peer_epoch(channel.peer) &&
          pairs[channel.peer].outstanding > 0) {
        --pairs[channel.peer].outstanding;
      }
    }
    if (inbound.sequence != ~std::uint64_t{0}) {
      release_record(channel.peer, inbound.sequence, inbound.peer_epoch, false);
    }
  }
}

void Core::release_record(std::uint32_t peer, std::uint64_t sequence, std::uint32_t peer_epoch,
                          bool counts_as_delivered) {
  const transports::PairState state = link.state(peer);
  const bool same_session =
      link.peer_epoch(peer) == peer_epoch &&
      (state == transports::PairState::running || state == transports::PairState::draining);
  if (!same_session) return;  // the ring was re-initialised: nothing to give back
  if (sequence != ~std::uint64_t{0}) {
    transports::Record record;
    record.sequence = sequence;
    (void)link.consumer(peer).release(record);
  }
  if (counts_as_delivered) {
    link.note_delivered(peer);
    if (pairs[peer].outstanding > 0) --pairs[peer].outstanding;
  }
}

bool Core::pump(std::uint32_t peer, ChannelState* wanted, Inbound* direct) {
  if (!link.readable(peer)) return false;
  auto& rx = link.consumer(peer);
  bool delivered_direct = false;
  for (;;) {
    // Back-pressure: a channel nobody reads stops this peer's ring.
    if (pairs[peer].full_channels != 0) return false;
    transports::Record record;
    const transports::ConsumeStatus status = rx.peek(record);
    if (status == transports::ConsumeStatus::ok) {
      dispatch(peer, record, wanted, direct, delivered_direct);
      if (delivered_direct) return true;
      continue;
    }
    if (status == transports::ConsumeStatus::too_many_held && spill(peer)) continue;
    if (status == transports::ConsumeStatus::broken) {
      std::array<std::unique_lock<SessionMutex>, ivshmem::kMaxPeers> tx_locks;
      tx_locks[peer] = std::unique_lock(pairs[peer].tx_mutex);
      link.report_ring_broken(peer,
                              [&](const transports::LinkEvent& event) { on_link_event(event); });
    }
    return false;
  }
}

bool Core::take_next(ChannelState& channel, transports::Record& out) {
  const std::uint32_t peer = channel.peer;
  if (!channel.queue.empty() || channel.partial_active || pairs[peer].full_channels != 0 ||
      !link.readable(peer) || link.consumer(peer).peek(out) != transports::ConsumeStatus::ok) {
    return false;
  }
  if (out.channel == channel.local_id && out.flags == 0 &&
      !channel.closed.load(std::memory_order_relaxed)) {
    ++pairs[peer].outstanding;
    return true;
  }
  bool delivered_direct = false;
  dispatch(peer, out, &channel, nullptr, delivered_direct);
  return false;
}

void Core::dispatch(std::uint32_t peer, const transports::Record& record, ChannelState* wanted,
                    Inbound* direct, bool& delivered_direct) {
  auto& rx = link.consumer(peer);
  if (record.channel == transports::kControlChannel) {
    handle_control(peer, record.payload);
    (void)rx.release(record);
    return;
  }
  ChannelState* const target =
      record.channel <= transports::kMaxChannelId ? channels[peer][record.channel].get() : nullptr;
  if (target == nullptr || target->closed.load(std::memory_order_relaxed)) {
    ++stats.unroutable;
    (void)rx.release(record);
    return;
  }
  ChannelState& channel = *target;
  const bool more = (record.flags & transports::kRecordMoreFragments) != 0;
  if (more || channel.partial_active) {
    if (!channel.partial_active) {
      channel.partial_active = true;
      channel.partial_overflow = false;
      channel.partial.clear();
    }
    if (!channel.partial_overflow) {
      if (record.payload.size() > options.max_message_size - channel.partial.size()) {
        channel.partial_overflow = true;
        channel.partial.clear();
        channel.partial.shrink_to_fit();
      } else {
        const std::size_t at = channel.partial.size();
        channel.partial.resize(at + record.payload.size());
        transports::RingConsumer<kMaxHeldRecords>::copy_out(record,
                                                            std::span(channel.partial).subspan(at));
      }
    }
    (void)rx.release(record);
    if (more) return;
    channel.partial_active = false;
    Inbound inbound;
    inbound.peer_epoch = link.peer_epoch(peer);
    if (channel.partial_overflow) {
      ++stats.oversized_messages;
      inbound.error = MessageErrc::message_too_large;
    } else {
      inbound.copy = std::move(channel.partial);
      channel.partial = {};
      ++pairs[peer].outstanding;
    }
    push_inbound(channel, std::move(inbound));
    if (&channel != wanted) wake_sleepers();
    return;
  }
  Inbound inbound;
  inbound.sequence = record.sequence;
  inbound.payload = record.payload;
  inbound.peer_epoch = link.peer_epoch(peer);
  ++pairs[peer].outstanding;
  if (&channel == wanted && direct != nullptr && channel.queue.empty()) {
    *direct = std::move(inbound);
    delivered_direct = true;
    return;
  }
  push_inbound(channel, std::move(inbound));
  if (&channel != wanted) wake_sleepers();
}

void Core::push_inbound(ChannelState& channel, Inbound&& inbound) {
  channel.queue.push_back(std::move(inbound));
  if (channel.queue.size() == options.max_queued_per_channel) ++pairs[channel.peer].full_channels;
}

Inbound Core::pop_inbound(ChannelState& channel) {
  if (channel.queue.size() == options.max_queued_per_channel) {
    // Back-pressure ends: receivers of the peer's other channels may go on.
    --pairs[channel.peer].full_channels;
    wake_sleepers();
  }
  Inbound inbound = std::move(channel.queue.front());
  channel.queue.pop_front();
  return inbound;
}

void Core::handle_control(std::uint32_t peer, std::span<const std::byte> payload) {
  transports::ControlMessage message;
  if (transports::decode_control(payload, message) != transports::ControlError::none) {
    ++stats.control_errors;
    return;
  }
  PeerPair& pair = pairs[peer];
  const std::string name(message.name, message.name_length);
  std::shared_ptr<ChannelState> local;
  for (const std::shared_ptr<ChannelState>& channel : channels[peer]) {
    if (channel && channel->name == name) local = channel;
  }
  if (message.type == static_cast<std::uint16_t>(transports::ControlType::abort)) {
    // Addressed by our id for the channel; the name must agree.
    ChannelState* const target = channels[peer][message.channel].get();
    if (target == nullptr || target->name != name) {
      ++stats.control_errors;
      return;
    }
    discard_partial(*target);
    return;
  }
  if (message.type == static_cast<std::uint16_t>(transports::ControlType::open)) {
    const auto found = pair.remote_by_name.find(name);
    if (found == pair.remote_by_name.end() &&
        pair.remote_by_name.size() >= transports::kMaxChannelId) {
      ++stats.control_errors;  // more names than ids: a hostile or broken peer
      return;
    }
    pair.remote_by_name[name] = {message.channel, message.max_message_size};
    if (local) {
      local->remote_max.store(message.max_message_size, std::memory_order_relaxed);
      local->remote_closed.store(false, std::memory_order_relaxed);
      local->close_reported = false;
      local->remote_id.store(message.channel, std::memory_order_release);
    }
  } else {
    const auto found = pair.remote_by_name.find(name);
    if (found == pair.remote_by_name.end() || found->second.id != message.channel) {
      ++stats.control_errors;
      return;
    }
    pair.remote_by_name.erase(found);
    if (local) {
      discard_partial(*local);
      local->remote_id.store(0, std::memory_order_relaxed);
      local->close_reported = false;
      local->remote_closed.store(true, std::memory_order_release);
    }
  }
  wake_sleepers();
}

bool Core::spill(std::uint32_t peer) {
  bool freed = false;
  for (const std::shared_ptr<ChannelState>& channel : channels[peer]) {
    if (!channel) continue;
    for (Inbound& inbound : channel->queue) {
      if (inbound.sequence == ~std::uint64_t{0}) continue;
      inbound.copy.assign(inbound.payload.begin(), inbound.payload.end());
      transports::Record record;
      record.sequence = inbound.sequence;
      (void)link.consumer(peer).release(record);
      inbound.sequence = ~std::uint64_t{0};
      inbound.payload = {};
      freed = true;
    }
  }
  return freed;
}

void Core::announce_all(std::uint32_t peer) {
  for (const std::shared_ptr<ChannelState>& channel : channels[peer]) {
    if (channel && !channel->closed.load(std::memory_order_relaxed)) {
      enqueue_control(peer, transports::ControlType::open, *channel);
    }
  }
}

void Core::enqueue_control(std::uint32_t peer, transports::ControlType type,
                           const ChannelState& channel) {
  transports::ControlMessage message;
  if (!transports::encode_control(type, channel.local_id, channel.name.data(), channel.name.size(),
                                  static_cast<std::uint32_t>(options.max_message_size), message)) {
    return;  // open() validated the name and id
  }
  pairs[peer].control_queue.push_back(message);
}

void Core::flush_control(std::uint32_t peer) {
  PeerPair& pair = pairs[peer];
  if (!pair.running.load(std::memory_order_relaxed) || pair.loan_active) return;
  transports::RingProducer& tx = link.producer(peer);
  bool wrote = false;
  while (!pair.control_queue.empty()) {
    const transports::ControlMessage& message = pair.control_queue.front();
    const auto bytes = std::as_bytes(std::span{&message, 1});
    if (tx.write(bytes, transports::kControlChannel) != transports::ProduceStatus::ok) break;
    pair.control_queue.pop_front();
    wrote = true;
  }
  if (wrote && tx.publish(device, peer, link.data_vector())) ++stats.doorbells_rung;
}

bool Core::process_events_locked() {
  if (waiter_active) return false;
  const std::uint64_t before = wake_serial;
  handle_events(device.wait(std::chrono::milliseconds{0}));
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer != link.id()) (void)pump(peer, nullptr, nullptr);
  }
  return wake_serial != before;
}

void Core::block(std::unique_lock<SessionMutex>& lock, Clock::time_point deadline) {
  const Clock::time_point now = Clock::now();
  const Clock::time_point until = std::min(deadline, now + kSafetyPoll);
  if (!waiter_active) {
    waiter_active = true;
    lock.unlock();
    const auto wait_ms = std::max<std::int64_t>(
        std::chrono::ceil<std::chrono::milliseconds>(until - now).count(), 0);
    std::vector<DeviceEvent> events;
    if (wake_fd_in_device) {
      events = device.wait(std::chrono::milliseconds{wait_ms});
      if (events.empty()) {
        // Woken (or timed out): reset wake_fd, non-blocking, so that the
        // next wait() sleeps again.
        std::uint64_t count = 0;
        (void)!::read(wake_fd.get(), &count, sizeof count);
      }
    } else {
      pollfd fds[2] = {{device.event_fd(), POLLIN, 0}, {wake_fd.get(), POLLIN, 0}};
      (void)::poll(fds, 2, static_cast<int>(wait_ms));
      if ((fds[1].revents & POLLIN) != 0) {
        std::uint64_t count = 0;
        (void)!::read(wake_fd.get(), &count, sizeof count);
      }
      events = device.wait(std::chrono::milliseconds{0});
    }
    lock.lock();
    waiter_active = false;
    // Every call to block() that brought no device event re-checks the
    // link: the safety net for a lost vector-0 interrupt.
    if (events.empty()) poll_link();
    handle_events(events);
    ++wake_serial;
    woken.notify_all();
    return;
  }
  const std::uint64_t serial = wake_serial;
  ++sleepers;
  woken.wait_until(lock, until, [&] {
    return wake_serial != serial || shut_down.load(std::memory_order_relaxed);
  });
  --sleepers;
}

}  // namespace detail

Session::Session(WaitableDevice& device, SessionOptions options)
    : core_(std::make_shared<detail::Core>(device, options)) {
  detail::Core& core = *core_;
  {
    const std::lock_guard lock(core.mutex);
    core.poll_link();
  }
  if (options.threading == Threading::single) return;  // the calls make progress
  core.progress = std::thread([&core] {
    std::unique_lock lock(core.mutex);
    while (!core.shut_down.load(std::memory_order_relaxed)) {
      // The mutex is free while it waits.
      core.progress_stop.wait_for(lock, detail::kSafetyPoll);
      if (core.shut_down.load(std::memory_order_relaxed)) break;
      // Reads the state table and the peers' headers only: it never takes
      // device events, which belong to whoever waits on the device's fd (a
      // blocked receiver, or an Asio AsyncChannel).
      core.poll_link();
      core.handle_events({});
    }
  });
}

std::unique_ptr<Session> Session::connect(const HostDeviceOptions& device_options,
                                          SessionOptions options) {
  std::unique_ptr<HostDevice> device = HostDevice::connect(device_options);
  HostDevice& reference = *device;
  auto session = std::make_unique<Session>(reference, options);
  session->core_->owned_device = std::move(device);
  return session;
}

Session::~Session() {
  shutdown();
  if (core_->progress.joinable()) core_->progress.join();
  const std::lock_guard lock(core_->mutex);
  std::array<std::unique_lock<detail::SessionMutex>, ivshmem::kMaxPeers> tx_locks;
  for (std::uint32_t peer = 0; peer < core_->link.peer_count(); ++peer) {
    if (peer != core_->link.id()) tx_locks[peer] = std::unique_lock(core_->pairs[peer].tx_mutex);
  }
  core_->link.leave();
}

Channel Session::open(std::string_view name, std::optional<std::uint32_t> peer_id) {
  detail::Core& core = *core_;
  const std::uint32_t peer = peer_id ? *peer_id : only_peer();
  if (peer >= core.link.peer_count() || peer == core.link.id()) {
    throw_invalid("cellink: open('" + std::string(name) + "'): peer " + std::to_string(peer) +
                  " is not another peer of this " + std::to_string(core.link.peer_count()) +
                  "-peer link");
  }
  if (!transports::valid_channel_name(name.data(), name.size())) {
    throw_invalid("cellink: channel name '" + std::string(name) +
                  "' must be 1..48 printable ASCII characters");
  }
  if (core.shut_down.load()) {
    throw std::system_error(MessageErrc::shut_down, "cellink: open('" + std::string(name) + "')");
  }
  const std::lock_guard lock(core.mutex);
  auto& table = core.channels[peer];
  std::uint16_t free_id = 0;
  for (std::uint16_t id = 1; id <= transports::kMaxChannelId; ++id) {
    if (table[id] && table[id]->name == name) {
      throw_invalid("cellink: channel '" + std::string(name) + "' is already open toward peer " +
                    std::to_string(peer));
    }
    if (!table[id] && free_id == 0) free_id = id;
  }
  if (free_id == 0) {
    throw std::system_error(
        std::make_error_code(std::errc::too_many_files_open),
        "cellink: 255 channels are already open toward peer " + std::to_string(peer));
  }
  auto state = std::make_shared<detail::ChannelState>();
  state->core = core_;
  state->name = std::string(name);
  state->peer = peer;
  state->local_id = free_id;
  if (core.options.threading == Threading::single) state->send_mutex.disable();
  detail::PeerPair& pair = core.pairs[peer];
  state->send_resets_seen = pair.resets.load();
  state->receive_resets_seen = state->send_resets_seen.load();
  if (const auto found = pair.remote_by_name.find(name); found != pair.remote_by_name.end()) {
    state->remote_id.store(found->second.id);
    state->remote_max.store(found->second.max_message_size);
  }
  table[free_id] = state;
  {
    const std::lock_guard tx(pair.tx_mutex);
    if (pair.running.load()) {
      core.enqueue_control(peer, transports::ControlType::open, *state);
      core.flush_control(peer);
    }
  }
  return Channel(std::move(state));
}

std::error_code Session::wait_for_peer(std::uint32_t peer, std::chrono::nanoseconds timeout) {
  detail::Core& core = *core_;
  if (peer >= core.link.peer_count() || peer == core.link.id()) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  const Clock::time_point deadline = detail::deadline_after(timeout);
  std::unique_lock lock(core.mutex);
  for (;;) {
    if (core.shut_down.load()) return MessageErrc::shut_down;
    if (core.pairs[peer].running.load()) return {};
    if (Clock::now() >= deadline)
      return timeout == kNoWait ? MessageErrc::would_block : MessageErrc::timed_out;
    core.poll_link();
    if (core.pairs[peer].running.load()) return {};
    core.block(lock, deadline);
  }
}

bool Session::peer_running(std::uint32_t peer) const {
  return peer < ivshmem::kMaxPeers && core_->pairs[peer].running.load();
}

std::uint32_t Session::id() const noexcept {
  return core_->link.id();
}
std::uint32_t Session::peer_count() const noexcept {
  return core_->link.peer_count();
}
std::uint32_t Session::epoch() const noexcept {
  return core_->link.epoch();
}

std::uint32_t Session::only_peer() const {
  if (core_->link.peer_count() != 2) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "cellink: this link has " + std::to_string(core_->link.peer_count()) +
                                " peers: name the peer to open a channel toward");
  }
  return core_->link.id() == 0 ? 1 : 0;
}

std::size_t Session::max_record_payload() const noexcept {
  return core_->max_record;
}

ResetReport Session::last_reset(std::uint32_t peer) const {
  const std::lock_guard lock(core_->mutex);
  return peer < ivshmem::kMaxPeers ? core_->pairs[peer].last_reset : ResetReport{};
}

std::optional<std::uint64_t> Session::delivered_from_previous_run(std::uint32_t peer) const {
  const std::lock_guard lock(core_->mutex);
  const std::uint32_t previous = core_->link.previous_epoch();
  if (previous == 0 || peer >= core_->link.peer_count() || peer == core_->link.id()) return {};
  const transports::DeliveryCount count = core_->link.delivered_in_session(peer, previous, 0);
  if (!count.known) return {};
  return count.delivered;
}

bool Session::process_events() {
  const std::lock_guard lock(core_->mutex);
  return core_->process_events_locked();
}

int Session::event_fd() const noexcept {
  return core_->device.event_fd();
}

void Session::shutdown() {
  detail::Core& core = *core_;
  const std::lock_guard lock(core.mutex);
  if (core.shut_down.exchange(true)) return;
  core.wake_sleepers();
  core.progress_stop.notify_all();
  const std::uint64_t one = 1;
  (void)!::write(core.wake_fd.get(), &one, sizeof one);
}

SessionStats Session::stats() const {
  const std::lock_guard lock(core_->mutex);
  return core_->stats;
}

WaitableDevice& Session::device() noexcept {
  return core_->device;
}

}  // namespace cellink::linux_uio
