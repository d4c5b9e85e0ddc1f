// AsyncChannel: the steps of its operations, its safety poll, cancel and
// close. The contract is in async_channel.hpp.
#include "cellink/linux-uio/async_channel.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <string>

#include <boost/system/system_error.hpp>

namespace cellink::linux_uio {
namespace detail {
namespace {

// Tries a receive makes before it waits without an armed ring.
// prepare_wait() says false when a record slipped in while it armed the
// ring, which the next try receives; but it keeps saying so while the peer's
// ring is held back (another channel's queue is full), and no doorbell will
// come then: the safety poll wakes the receive instead of a busy loop.
constexpr int kImmediateRetries = 4;

// The send errors that only mean "not now".
bool send_may_succeed_later(std::error_code error) {
  return error == MessageErrc::would_block || error == MessageErrc::not_connected ||
         error == MessageErrc::loan_in_progress;
}

}  // namespace

AsyncChannelState::AsyncChannelState(const boost::asio::any_io_executor& executor,
                                     Channel& channel_in, int event_fd)
    : channel(&channel_in), descriptor(executor), safety_poll(executor), send_timer(executor) {
  boost::system::error_code error;
  descriptor.assign(event_fd, error);
  if (error) {
    ::close(event_fd);
    throw std::system_error(std::error_code(error),
                            "AsyncChannel: channel '" + channel_in.name() +
                                "': the io_context refused the Session's event fd");
  }
}

AsyncStep AsyncChannelState::receive_step(std::uint64_t operation_generation, bool woken,
                                          Message& message, std::error_code& error) {
  if (woken) --waiting_receives;
  if (operation_generation != generation) {
    error = operation_aborted();
    return AsyncStep::complete;
  }
  if (closed) {
    error = MessageErrc::shut_down;
    return AsyncStep::complete;
  }
  if (woken) (void)channel->process_events();
  for (int attempt = 0; attempt < kImmediateRetries; ++attempt) {
    message = channel->try_receive();
    error = message.error();
    if (message || error != MessageErrc::would_block) return AsyncStep::complete;
    if (channel->prepare_wait()) break;
  }
  ++waiting_receives;
  arm_safety_poll();
  return AsyncStep::wait;
}

AsyncStep AsyncChannelState::send_step(std::uint64_t operation_generation, bool woken,
                                       std::span<const std::byte> bytes,
                                       std::chrono::microseconds& backoff, std::error_code& error) {
  if (woken) --waiting_sends;
  if (operation_generation != generation) {
    error = operation_aborted();
    return AsyncStep::complete;
  }
  if (closed) {
    error = MessageErrc::shut_down;
    return AsyncStep::complete;
  }
  if (woken && channel->process_events() && waiting_receives > 0) {
    // Between retries the Session's events are ours to handle (a peer's open
    // or reset reaches a non-blocking send no other way). Messages that
    // moved into queues meanwhile would wait for the safety poll: wake our
    // receives now.
    boost::system::error_code ignored;
    descriptor.cancel(ignored);
  }
  error = channel->send(bytes, kNoWait);
  if (!send_may_succeed_later(error)) return AsyncStep::complete;
  backoff = backoff.count() == 0 ? AsyncChannel::kFirstSendBackoff
                                 : std::min(backoff * 2, AsyncChannel::kMaxSendBackoff);
  // Concurrent sends share the timer: re-arming it would cancel the others'
  // waits, so a later send waits for the expiry already set.
  if (waiting_sends == 0) send_timer.expires_after(backoff);
  ++waiting_sends;
  return AsyncStep::wait;
}

void AsyncChannelState::cancel_locked() noexcept {
  ++generation;
  boost::system::error_code ignored;
  descriptor.cancel(ignored);
  cancel_timer(send_timer);
}

void AsyncChannelState::close_locked() noexcept {
  if (closed) return;
  closed = true;
  ++generation;
  channel = nullptr;
  boost::system::error_code ignored;
  descriptor.close(ignored);  // the dup only; pending waits complete with operation_aborted
  cancel_timer(safety_poll);
  cancel_timer(send_timer);
}

void AsyncChannelState::cancel_timer(boost::asio::steady_timer& timer) noexcept {
  try {
    timer.cancel();
  } catch (const boost::system::system_error&) {
    // Unreachable: the timer service's cancel() reports no error. (The
    // error_code overload is deprecated in Boost 1.74.)
  }
}

void AsyncChannelState::arm_safety_poll() {
  if (safety_poll_armed) return;
  safety_poll_armed = true;
  // It stays armed after the receive completes: a receive loop then costs
  // one timer expiry per kSafetyPoll, not a timer update per message.
  safety_poll.expires_after(AsyncChannel::kSafetyPoll);
  safety_poll.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    self->on_safety_poll(error);
  });
}

void AsyncChannelState::on_safety_poll(const boost::system::error_code& error) {
  const std::lock_guard lock(mutex);
  safety_poll_armed = false;
  if (error || closed || waiting_receives == 0) return;
  // Wakes every waiting receive with operation_aborted; their generation is
  // unchanged, so they re-check the channel and wait again (re-arming this).
  boost::system::error_code ignored;
  descriptor.cancel(ignored);
}

}  // namespace detail

AsyncChannel::AsyncChannel(const executor_type& executor, Channel& channel)
    : executor_(executor), channel_(&channel) {
  open("AsyncChannel");
}

AsyncChannel::AsyncChannel(const executor_type& executor, Channel&& channel) : executor_(executor) {
  if (channel) {
    owned_ = std::make_unique<Channel>(std::move(channel));
    channel_ = owned_.get();
  }
  open("AsyncChannel");
}

AsyncChannel::AsyncChannel(AsyncChannel&& other) noexcept
    : executor_(std::move(other.executor_)),
      owned_(std::move(other.owned_)),
      channel_(std::exchange(other.channel_, nullptr)),
      state_(std::move(other.state_)) {}

AsyncChannel& AsyncChannel::operator=(AsyncChannel&& other) noexcept {
  if (this != &other) {
    close();
    executor_ = std::move(other.executor_);
    owned_ = std::move(other.owned_);
    channel_ = std::exchange(other.channel_, nullptr);
    state_ = std::move(other.state_);
  }
  return *this;
}

AsyncChannel::~AsyncChannel() {
  close();
}

void AsyncChannel::open(const char* what) {
  if (channel_ == nullptr || !*channel_) {
    throw std::invalid_argument(std::string(what) +
                                ": the Channel is empty (moved from or default-constructed); "
                                "pass one that Session::open() returned");
  }
  const int event_fd = ::fcntl(channel_->event_fd(), F_DUPFD_CLOEXEC, 0);
  if (event_fd < 0) {
    throw std::system_error(errno, std::generic_category(),
                            std::string(what) + ": channel '" + channel_->name() +
                                "': cannot dup() the Session's event fd " +
                                std::to_string(channel_->event_fd()) +
                                " (too many open files? raise `ulimit -n`)");
  }
  state_ = std::make_shared<detail::AsyncChannelState>(executor_, *channel_, event_fd);
}

const std::shared_ptr<detail::AsyncChannelState>& AsyncChannel::checked_state(
    const char* operation) const {
  if (!state_) {
    throw std::logic_error(std::string("AsyncChannel::") + operation +
                           ": this AsyncChannel was moved from; use the one it was moved to");
  }
  return state_;
}

bool AsyncChannel::is_open() const {
  if (!state_) return false;
  const std::lock_guard lock(state_->mutex);
  return !state_->closed;
}

void AsyncChannel::cancel() {
  if (!state_) return;
  const std::lock_guard lock(state_->mutex);
  state_->cancel_locked();
}

void AsyncChannel::close() {
  if (!state_) return;
  {
    const std::lock_guard lock(state_->mutex);
    state_->close_locked();
  }
  owned_.reset();  // Channel::close() announces it to the peer
}

}  // namespace cellink::linux_uio
