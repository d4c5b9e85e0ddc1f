// AsyncChannel: a Channel (channel.hpp) as a Boost.Asio I/O object, so that
// a receive works with callbacks, std::future and C++20 coroutines.
//
//   boost::asio::io_context io;
//   AsyncChannel pings(io, channel);  // borrows `channel`
//   pings.async_receive([](std::error_code error, Message message) { ... });
//   // In a coroutine. Boost 1.74's use_awaitable and use_future turn only a
//   // boost::system::error_code into an exception, so they hand a
//   // std::error_code back in a tuple:
//   auto [error, message] = co_await pings.async_receive(boost::asio::use_awaitable);
//
// Contract:
//   - async_receive(token), completion void(std::error_code, Message): the
//     channel's next message, or the error Channel::receive() would report
//     (peer_reset, link_broken, shut_down, ...) with an empty Message. Never
//     would_block or timed_out: for a deadline, let a steady_timer call
//     cancel().
//   - async_send(bytes, token), completion void(std::error_code): sends like
//     Channel::send(); waits (without blocking the thread) while the ring is
//     full, the peer has not opened the channel yet, or a loan toward the
//     peer is open. Other errors complete the operation. A message larger
//     than one record goes as fragments; once its first fragment is in the
//     ring, Channel::send() finishes it before returning, and that may block
//     the calling thread until the receiver makes room.
//   - cancel(): every operation pending at the call completes with
//     boost::asio::error::operation_aborted (as std::error_code), except one
//     that already has its result: a message taken off the ring is always
//     delivered, never dropped, and a send that happened reports success.
//     Boost 1.74 (Asio 1.18) has no per-operation cancellation slots, so
//     cancel() is also how a co_await is cancelled (from a timer or another
//     coroutine). After cancel() the AsyncChannel is usable again.
//   - close(), and the destructor: cancel(), then the AsyncChannel lets go of
//     the Channel (an owned one is closed, which the peer sees); later
//     operations complete with MessageErrc::shut_down. Operations still
//     pending complete with operation_aborted when the io_context runs them,
//     and touch nothing but their own shared state: destroying an
//     AsyncChannel with operations pending is safe.
//
// How a receive waits: try_receive(); on would_block, prepare_wait() arms
// the ring (false: something arrived meanwhile, try again at once); then wait
// until the Session's event fd is readable, process_events() and try again.
// The wait is on a dup() of that fd, registered with the io_context; the
// Session's own fd is never closed here. Other users of the Session consume
// its device events too (its progress thread, a blocking receive on another
// thread), so an interrupt meant for us can be taken before our wait sees
// it. A safety poll therefore re-checks every kSafetyPoll while a receive
// waits, the bound the Session uses for its own waits: a lost interrupt costs
// latency, never progress. The safety poll also serves a receive whose
// records are held back behind another channel's full queue (prepare_wait()
// keeps saying false then, and no doorbell will come): it waits for the
// poll instead of spinning.
//
// How a send waits: the ring has no "space freed" interrupt (a consumer
// rings no doorbell when it releases records), so there is no fd to wait on.
// async_send retries on a steady_timer backing off from kFirstSendBackoff to
// kMaxSendBackoff, the way Channel::send() naps while it waits for space.
//
// Ownership: AsyncChannel(executor, channel) borrows `channel`, which must
// outlive the AsyncChannel; AsyncChannel(executor, std::move(channel)) owns
// it. Either way the Session must outlive the AsyncChannel, and the
// execution context must outlive it too. The bytes given to async_send must
// stay valid until its completion. A Message keeps the rules of channel.hpp.
//
// Threading: completion handlers run on the io_context's threads, through
// each handler's associated executor (by default the AsyncChannel's), never
// inside the initiating call. async_receive(), async_send(), cancel(),
// close(), is_open() and the destructor may be called from any thread: one
// mutex orders each operation's steps against them, so a multi-threaded
// io_context needs no strand for the AsyncChannel's sake (moving one is not
// thread-safe, as for any object). The Channel may be used by synchronous
// code at the same time (a send() from another thread while async_receive()
// waits is the usual split). Several operations may be outstanding; each
// completes once, but which of two concurrent receives gets which message is
// unspecified, so start the next receive from the previous one's completion
// to keep a stream in order.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <system_error>
#include <type_traits>
// Before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it.
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/message_error.hpp"

namespace cellink::linux_uio {

// What an operation pending at cancel() or close() completes with.
[[nodiscard]] inline std::error_code operation_aborted() noexcept {
  return boost::system::error_code(boost::asio::error::operation_aborted);
}

namespace detail {

// What an operation does after one step under AsyncChannelState::mutex.
enum class AsyncStep : std::uint8_t {
  complete,  // the result is in the operation: deliver it
  wait,      // wait on the descriptor (receive) or send_timer (send), then step again
};

// Shared by an AsyncChannel and its pending operations, so that the
// operations outlive the AsyncChannel safely.
struct AsyncChannelState : std::enable_shared_from_this<AsyncChannelState> {
  // Takes ownership of `event_fd` (a dup of the Session's event fd).
  AsyncChannelState(const boost::asio::any_io_executor& executor, Channel& channel, int event_fd);

  // One step of a receive or a send. Caller holds `mutex`. `woken`: the
  // operation comes back from a wait this step started before.
  AsyncStep receive_step(std::uint64_t operation_generation, bool woken, Message& message,
                         std::error_code& error);
  AsyncStep send_step(std::uint64_t operation_generation, bool woken,
                      std::span<const std::byte> bytes, std::chrono::microseconds& backoff,
                      std::error_code& error);
  // cancel() and close(). Caller holds `mutex`.
  void cancel_locked() noexcept;
  void close_locked() noexcept;

  // Protects every member below, and orders each operation's steps against
  // cancel(), close() and the destructor, which may run on other threads.
  std::mutex mutex;
  Channel* channel;              // null once closed
  std::uint64_t generation = 0;  // bumped by cancel() and close(): older operations abort
  bool closed = false;
  std::uint32_t waiting_receives = 0;  // receives waiting on `descriptor`
  std::uint32_t waiting_sends = 0;     // sends waiting on `send_timer`
  bool safety_poll_armed = false;
  boost::asio::posix::stream_descriptor descriptor;  // the dup of the Session's event fd
  boost::asio::steady_timer safety_poll;
  boost::asio::steady_timer send_timer;

 private:
  void arm_safety_poll();
  void on_safety_poll(const boost::system::error_code& error);
  static void cancel_timer(boost::asio::steady_timer& timer) noexcept;
};

struct AsyncReceiveOp {
  std::shared_ptr<AsyncChannelState> state;
  std::uint64_t generation = 0;
  bool started = false;
  bool waiting = false;
  bool delivering = false;
  std::error_code error{};
  Message message{};

  template <typename Self>
  void operator()(Self& self, const boost::system::error_code& /*wait_result*/ = {}) {
    if (delivering) {
      self.complete(error, std::move(message));
      return;
    }
    const std::shared_ptr<AsyncChannelState> shared = state;
    std::unique_lock lock(shared->mutex);
    if (!started) generation = shared->generation;
    const bool woken = std::exchange(waiting, false);
    if (shared->receive_step(generation, woken, message, error) == AsyncStep::wait) {
      started = waiting = true;
      shared->descriptor.async_wait(boost::asio::posix::descriptor_base::wait_read,
                                    std::move(self));
      return;
    }
    lock.unlock();
    if (!started) {
      // Never complete inside the initiating call (Asio's rule; it also
      // keeps a callback that receives again from recursing).
      started = delivering = true;
      boost::asio::post(std::move(self));
      return;
    }
    self.complete(error, std::move(message));
  }
};

struct AsyncSendOp {
  std::shared_ptr<AsyncChannelState> state;
  std::span<const std::byte> bytes;
  std::uint64_t generation = 0;
  std::chrono::microseconds backoff{0};
  bool started = false;
  bool waiting = false;
  bool delivering = false;
  std::error_code error{};

  template <typename Self>
  void operator()(Self& self, const boost::system::error_code& /*wait_result*/ = {}) {
    if (delivering) {
      self.complete(error);
      return;
    }
    const std::shared_ptr<AsyncChannelState> shared = state;
    std::unique_lock lock(shared->mutex);
    if (!started) generation = shared->generation;
    const bool woken = std::exchange(waiting, false);
    if (shared->send_step(generation, woken, bytes, backoff, error) == AsyncStep::wait) {
      started = waiting = true;
      shared->send_timer.async_wait(std::move(self));
      return;
    }
    lock.unlock();
    if (!started) {
      started = delivering = true;
      boost::asio::post(std::move(self));
      return;
    }
    self.complete(error);
  }
};

}  // namespace detail

class AsyncChannel {
 public:
  using executor_type = boost::asio::any_io_executor;

  // While a receive waits, how often it re-checks the channel in case its
  // interrupt was consumed by another user of the Session (see above).
  static constexpr std::chrono::milliseconds kSafetyPoll{20};
  // async_send's retry interval while it waits: doubles from the first to
  // the last.
  static constexpr std::chrono::microseconds kFirstSendBackoff{10};
  static constexpr std::chrono::microseconds kMaxSendBackoff{1000};

  // Borrows `channel`. Throws std::invalid_argument for an empty Channel and
  // std::system_error when the event fd cannot be duplicated or registered.
  AsyncChannel(const executor_type& executor, Channel& channel);
  // Owns `channel` (closed by close() or the destructor). Throws as above.
  AsyncChannel(const executor_type& executor, Channel&& channel);
  template <typename ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> AsyncChannel(
      ExecutionContext& context, Channel& channel)
      : AsyncChannel(executor_type(context.get_executor()), channel) {}
  template <typename ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> AsyncChannel(
      ExecutionContext& context, Channel&& channel)
      : AsyncChannel(executor_type(context.get_executor()), std::move(channel)) {}

  AsyncChannel(AsyncChannel&& other) noexcept;
  AsyncChannel& operator=(AsyncChannel&& other) noexcept;
  AsyncChannel(const AsyncChannel&) = delete;
  AsyncChannel& operator=(const AsyncChannel&) = delete;
  // close(); see the file comment for pending operations.
  ~AsyncChannel();

  [[nodiscard]] const executor_type& get_executor() const noexcept { return executor_; }
  // The wrapped Channel, for synchronous calls. Not after close() when owned.
  [[nodiscard]] Channel& channel() const noexcept { return *channel_; }
  [[nodiscard]] bool is_open() const;

  // Completion: void(std::error_code, Message).
  template <typename CompletionToken>
  auto async_receive(CompletionToken&& token) {
    return boost::asio::async_compose<CompletionToken, void(std::error_code, Message)>(
        detail::AsyncReceiveOp{checked_state("async_receive")}, token, executor_);
  }

  // Completion: void(std::error_code). `bytes` must stay valid until then.
  template <typename CompletionToken>
  auto async_send(std::span<const std::byte> bytes, CompletionToken&& token) {
    return boost::asio::async_compose<CompletionToken, void(std::error_code)>(
        detail::AsyncSendOp{checked_state("async_send"), bytes}, token, executor_);
  }
  template <typename CompletionToken>
  auto async_send(std::string_view text, CompletionToken&& token) {
    return async_send(std::as_bytes(std::span{text.data(), text.size()}),
                      std::forward<CompletionToken>(token));
  }

  // Pending operations complete with operation_aborted (see the file comment).
  void cancel();
  // cancel(), then lets go of the Channel. Idempotent.
  void close();

 private:
  void open(const char* what);
  [[nodiscard]] const std::shared_ptr<detail::AsyncChannelState>& checked_state(
      const char* operation) const;

  executor_type executor_;
  std::unique_ptr<Channel> owned_;  // set when constructed from Channel&&
  Channel* channel_ = nullptr;      // owned_.get() or the borrowed Channel
  std::shared_ptr<detail::AsyncChannelState> state_;
};

}  // namespace cellink::linux_uio
