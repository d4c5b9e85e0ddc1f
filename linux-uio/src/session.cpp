// Session: the handshake, the name service, reassembly and waiting.
// Lock order and ownership: session_core.hpp. Spec: docs/link.md.
#include "cellink/linux-uio/session.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
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
  if (options.credit_window != 0 && options.credit_window < transports::kMinCreditWindow) {
    throw_invalid("cellink session: credit_window " + std::to_string(options.credit_window) +
                  " is below the minimum of " + std::to_string(transports::kMinCreditWindow) +
                  " bytes (0 picks the ring's capacity)");
  }
  const transports::LinkInitStatus status = protocol.init(
      device, {static_cast<std::uint32_t>(options.max_message_size), options.credit_window});
  if (status != transports::LinkInitStatus::ok) {
    throw_invalid(std::string("cellink session: ") + transports::describe(status));
  }
  max_record = protocol.max_record();
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

// ---- RxSink: the core's rx reports, as queue entries -------------------------

void RxSink::peer_up(std::uint32_t) {
  core.wake_sleepers();
}

void RxSink::peer_reset(std::uint32_t peer) {
  core.pairs[peer].drain_deadline = Clock::now() + core.options.drain_timeout;
  core.wake_sleepers();
}

bool RxSink::deliver(std::uint32_t peer, std::uint16_t id, const transports::Record& record,
                     std::uint32_t credit) {
  ChannelState& channel = *core.channels[peer][id];
  Inbound inbound;
  inbound.sequence = record.sequence;
  inbound.payload = record.payload;
  inbound.peer_epoch = core.protocol.link().peer_epoch(peer);
  inbound.credit = credit;
  if (&channel == wanted && direct != nullptr && channel.queue.empty()) {
    *direct = std::move(inbound);
    return true;
  }
  core.push_inbound(channel, std::move(inbound));
  if (&channel != wanted) core.wake_sleepers();
  return false;
}

void RxSink::append(std::uint32_t peer, std::uint16_t id, std::span<const std::byte> bytes) {
  if (bytes.empty()) return;  // an empty fragment adds nothing
  std::vector<std::byte>& partial = core.channels[peer][id]->partial;
  const std::size_t at = partial.size();
  partial.resize(at + bytes.size());
  // One copy: the peer may rewrite the ring under us, the copy is stable.
  std::memcpy(partial.data() + at, bytes.data(), bytes.size());
}

bool RxSink::complete(std::uint32_t peer, std::uint16_t id, std::uint32_t credit) {
  ChannelState& channel = *core.channels[peer][id];
  Inbound inbound;
  inbound.copy = std::move(channel.partial);
  channel.partial = {};
  inbound.peer_epoch = core.protocol.link().peer_epoch(peer);
  inbound.credit = credit;
  core.push_inbound(channel, std::move(inbound));
  if (&channel != wanted) core.wake_sleepers();
  return false;  // the queues grow: reading goes on
}

void RxSink::fail(std::uint32_t peer, std::uint16_t id, transports::ChannelStatus status) {
  ChannelState& channel = *core.channels[peer][id];
  Inbound inbound;
  inbound.error = status == transports::ChannelStatus::message_too_large
                      ? MessageErrc::message_too_large
                      : MessageErrc::channel_broken;
  core.push_inbound(channel, std::move(inbound));
  if (&channel != wanted) core.wake_sleepers();
}

void RxSink::discard(std::uint32_t peer, std::uint16_t id) {
  if (const std::shared_ptr<ChannelState>& channel = core.channels[peer][id]) {
    channel->partial.clear();
    channel->partial.shrink_to_fit();
  }
}

bool RxSink::spill(std::uint32_t peer) {
  bool freed = false;
  for (const std::shared_ptr<ChannelState>& channel : core.channels[peer]) {
    if (!channel) continue;
    for (Inbound& inbound : channel->queue) {
      if (inbound.sequence == Protocol::kNoRecord) continue;
      inbound.copy.assign(inbound.payload.begin(), inbound.payload.end());
      core.protocol.release_record(peer, inbound.sequence);
      inbound.sequence = Protocol::kNoRecord;
      inbound.payload = {};
      freed = true;
    }
  }
  return freed;
}

void RxSink::changed() {
  core.wake_sleepers();
}

// ---- Core --------------------------------------------------------------------

void Core::handle_events(const std::vector<DeviceEvent>& events) {
  bool membership = false;
  for (const DeviceEvent& event : events) {
    if (event.kind != DeviceEvent::Kind::doorbell || event.vector == 0) membership = true;
  }
  if (membership) poll_link();
  transports::Link<kMaxHeldRecords>& link = protocol.link();
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer != link.id() && link.state(peer) == transports::PairState::draining) {
      try_finish_drain(peer);
    }
  }
  // A data doorbell may be a space-freed one: senders waiting for room
  // sleep on `woken` when another thread waits on the device.
  if (!events.empty() && sleepers != 0) wake_sleepers();
}

void Core::poll_link() {
  std::array<std::unique_lock<SessionMutex>, ivshmem::kMaxPeers> tx_locks;
  const transports::Link<kMaxHeldRecords>& link = protocol.link();
  for (std::uint32_t peer = 0; peer < link.peer_count(); ++peer) {
    if (peer != link.id()) tx_locks[peer] = std::unique_lock(pairs[peer].tx_mutex);
  }
  RxSink sink{*this};
  protocol.poll(sink);
}

void Core::try_finish_drain(std::uint32_t peer) {
  (void)pump(peer);
  const bool drained = protocol.drained(peer);
  if (!drained && Clock::now() < pairs[peer].drain_deadline) return;
  {
    const std::lock_guard tx(pairs[peer].tx_mutex);
    if (protocol.loan_in_flight(peer) && Clock::now() < pairs[peer].drain_deadline) return;
  }
  // Whatever is still queued from the ended session is dropped, and not
  // counted as delivered: the peer's delivery counter stays exact.
  for (const std::shared_ptr<ChannelState>& channel : channels[peer]) {
    if (channel) drop_queue(*channel);
  }
  {
    std::array<std::unique_lock<SessionMutex>, ivshmem::kMaxPeers> tx_locks;
    for (std::uint32_t other = 0; other < protocol.link().peer_count(); ++other) {
      if (other != protocol.link().id()) tx_locks[other] = std::unique_lock(pairs[other].tx_mutex);
    }
    RxSink sink{*this};
    protocol.finish_drain(peer, sink);
  }
  poll_link();
}

void Core::drop_queue(ChannelState& channel) {
  while (!channel.queue.empty()) {
    const Inbound inbound = pop_inbound(channel);
    if (inbound.error != MessageErrc{}) continue;
    ++dropped_undelivered;
    protocol.release_message(channel.peer, inbound.peer_epoch, channel.local_id, inbound.sequence,
                             inbound.credit, false);
  }
}

bool Core::pump(std::uint32_t peer, ChannelState* wanted, Inbound* direct) {
  RxSink sink{*this, wanted, direct};
  const Protocol::ReadStatus status = protocol.read(peer, sink);
  if (status == Protocol::ReadStatus::broken) {
    const std::lock_guard tx(pairs[peer].tx_mutex);
    protocol.report_broken(peer, sink);
  }
  return status == Protocol::ReadStatus::stopped;
}

void Core::push_inbound(ChannelState& channel, Inbound&& inbound) {
  channel.queue.push_back(std::move(inbound));
}

Inbound Core::pop_inbound(ChannelState& channel) {
  Inbound inbound = std::move(channel.queue.front());
  channel.queue.pop_front();
  return inbound;
}

bool Core::process_events_locked() {
  if (waiter_active) return false;
  const std::uint64_t before = wake_serial;
  handle_events(device.wait(std::chrono::milliseconds{0}));
  for (std::uint32_t peer = 0; peer < protocol.link().peer_count(); ++peer) {
    if (peer != protocol.link().id()) (void)pump(peer);
  }
  return wake_serial != before;
}

void Core::block(std::unique_lock<SessionMutex>& lock, Clock::time_point deadline) {
  // About to sleep: answer any request for room our releases missed.
  for (std::uint32_t peer = 0; peer < protocol.link().peer_count(); ++peer) {
    if (peer != protocol.link().id()) protocol.idle(peer);
  }
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
  for (std::uint32_t peer = 0; peer < core_->protocol.link().peer_count(); ++peer) {
    if (peer != core_->protocol.link().id())
      tx_locks[peer] = std::unique_lock(core_->pairs[peer].tx_mutex);
  }
  core_->protocol.leave();
}

Channel Session::open(std::string_view name, std::optional<std::uint32_t> peer_id) {
  detail::Core& core = *core_;
  const std::uint32_t peer = peer_id ? *peer_id : only_peer();
  if (peer >= core.protocol.link().peer_count() || peer == core.protocol.link().id()) {
    throw_invalid("cellink: open('" + std::string(name) + "'): peer " + std::to_string(peer) +
                  " is not another peer of this " +
                  std::to_string(core.protocol.link().peer_count()) + "-peer link");
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
  for (const std::shared_ptr<detail::ChannelState>& open : table) {
    if (open && open->name == name) {
      throw_invalid("cellink: channel '" + std::string(name) + "' is already open toward peer " +
                    std::to_string(peer));
    }
  }
  std::uint16_t id = 0;
  {
    const std::lock_guard tx(core.pairs[peer].tx_mutex);
    id = core.protocol.open(peer, name.data(), name.size());
  }
  if (id == 0) {
    throw std::system_error(
        std::make_error_code(std::errc::too_many_files_open),
        "cellink: 255 channels are already open toward peer " + std::to_string(peer));
  }
  auto state = std::make_shared<detail::ChannelState>();
  state->core = core_;
  state->name = std::string(name);
  state->peer = peer;
  state->local_id = id;
  if (core.options.threading == Threading::single) state->send_mutex.disable();
  table[id] = state;
  return Channel(std::move(state));
}

std::error_code Session::wait_for_peer(std::uint32_t peer, std::chrono::nanoseconds timeout) {
  detail::Core& core = *core_;
  if (peer >= core.protocol.link().peer_count() || peer == core.protocol.link().id()) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  const Clock::time_point deadline = detail::deadline_after(timeout);
  std::unique_lock lock(core.mutex);
  for (;;) {
    if (core.shut_down.load()) return MessageErrc::shut_down;
    if (core.protocol.running(peer)) return {};
    if (Clock::now() >= deadline)
      return timeout == kNoWait ? MessageErrc::would_block : MessageErrc::timed_out;
    core.poll_link();
    if (core.protocol.running(peer)) return {};
    core.block(lock, deadline);
  }
}

bool Session::peer_running(std::uint32_t peer) const {
  return peer < ivshmem::kMaxPeers && core_->protocol.running(peer);
}

std::uint32_t Session::id() const noexcept {
  return core_->protocol.link().id();
}
std::uint32_t Session::peer_count() const noexcept {
  return core_->protocol.link().peer_count();
}
std::uint32_t Session::epoch() const noexcept {
  return core_->protocol.link().epoch();
}

std::uint32_t Session::only_peer() const {
  if (core_->protocol.link().peer_count() != 2) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "cellink: this link has " +
                                std::to_string(core_->protocol.link().peer_count()) +
                                " peers: name the peer to open a channel toward");
  }
  return core_->protocol.link().id() == 0 ? 1 : 0;
}

std::size_t Session::max_record_payload() const noexcept {
  return core_->max_record;
}

ResetReport Session::last_reset(std::uint32_t peer) const {
  const std::lock_guard lock(core_->mutex);
  if (peer >= ivshmem::kMaxPeers) return {};
  return core_->protocol.last_reset(peer);
}

std::optional<std::uint64_t> Session::delivered_from_previous_run(std::uint32_t peer) const {
  const std::lock_guard lock(core_->mutex);
  const transports::DeliveryCount count = core_->protocol.delivered_from_previous_run(peer);
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
  const transports::CoreStats& core = core_->protocol.stats();
  SessionStats stats;
  stats.unroutable = core.unroutable;
  stats.control_errors = core.control_errors;
  stats.oversized_messages = core.oversized_messages;
  stats.protocol_faults = core.protocol_faults;
  stats.dropped_undelivered = core_->dropped_undelivered;
  stats.doorbells_rung = core.doorbells_rung;
  stats.space_doorbells = core.space_doorbells;
  stats.spilled_records = core.spilled_records;
  return stats;
}

std::string Session::diagnostic() const {
  const std::lock_guard lock(core_->mutex);
  const transports::ChannelDiagnostic& found = core_->protocol.diagnostic();
  if (found.fault == transports::ChannelFault::none) return {};
  std::string text = "cellink: peer " + std::to_string(found.peer) + ", ";
  if (found.channel == 0 && found.name_length == 0) {
    text += "control channel";
  } else {
    text += "channel '" + std::string(found.name, found.name_length) + "'";
    if (found.channel != 0) text += " (id " + std::to_string(found.channel) + ")";
  }
  text += ": " + std::string(transports::describe(found.fault)) + ": " + found.field;
  if (found.fault != transports::ChannelFault::bad_control_record) {
    text += " = " + std::to_string(found.value) + " (limit " + std::to_string(found.limit) + ")";
  }
  return text + "; the peer is buggy or hostile, the other channels go on";
}

std::string Session::pair_fault(std::uint32_t peer) const {
  const std::lock_guard lock(core_->mutex);
  if (peer >= core_->protocol.link().peer_count() || peer == core_->protocol.link().id()) {
    return {};
  }
  const transports::PairFault fault = core_->protocol.link().fault(peer);
  if (fault == transports::PairFault::none) return {};
  std::string text = "cellink: peer " + std::to_string(peer) + ": " + transports::describe(fault);
  if (fault == transports::PairFault::version_mismatch) {
    text += ": it speaks link version " +
            std::to_string(core_->protocol.link().peer_version(peer)) + ", we speak " +
            std::to_string(transports::kLinkVersion);
  }
  return text;
}

WaitableDevice& Session::device() noexcept {
  return core_->device;
}

}  // namespace cellink::linux_uio
