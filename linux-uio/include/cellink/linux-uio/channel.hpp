// Channel, Message and Loan: the calls an application makes on one named
// channel of a Session (session.hpp). Spec: docs/link.md.
//
// Sending:
//   - send(bytes, timeout) copies a message of any size up to the peer's
//     maximum; larger than one record, it goes as fragments. A send that
//     gives up half way (timeout, or kNoWait on a full ring) sends nothing
//     that the receiver would deliver: it drops the fragments it got.
//   - loan(n, timeout) hands out n writable bytes inside the ring (zero
//     copy, n <= Session::max_record_payload()); commit(used) sends them.
//     While a loan is open, other sends to the same peer wait.
// Receiving:
//   - receive(timeout) / try_receive() return a Message: a read-only view of
//     the record in the peer's memory (or of a reassembled copy) that stays
//     valid until release() or destruction. The peer may be hostile and may
//     rewrite the bytes under the view: copy_out() takes a stable copy.
//
// Timeouts: kForever blocks, kNoWait never blocks (would_block), anything
// else blocks at most that long (timed_out). A full ring is never a silent
// drop: the sender waits or gets the error.
//
// Threading: a Channel may be used from several threads; Messages and Loans
// belong to the thread that holds them. The Session must outlive all three.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "cellink/linux-uio/message_error.hpp"
#include "cellink/transports/channel_status.hpp"

namespace cellink::linux_uio {

inline constexpr std::chrono::nanoseconds kForever = std::chrono::nanoseconds::max();
inline constexpr std::chrono::nanoseconds kNoWait{0};

namespace detail {
struct ChannelState;
struct LoanState;
}  // namespace detail

class Message {
 public:
  Message() = default;
  Message(Message&& other) noexcept;
  Message& operator=(Message&& other) noexcept;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  ~Message() { release(); }

  // True when a message was received; otherwise error() says why not.
  [[nodiscard]] explicit operator bool() const noexcept {
    return error_ == MessageErrc{} && owner_ != nullptr;
  }
  [[nodiscard]] std::error_code error() const noexcept {
    return error_ == MessageErrc{} ? std::error_code{} : make_error_code(error_);
  }

  // The bytes, valid until release(). 8-byte aligned.
  [[nodiscard]] std::span<const std::byte> payload() const noexcept { return payload_; }
  [[nodiscard]] std::size_t size() const noexcept { return payload_.size(); }
  // Whether payload() points into the peer's memory (not a copy).
  [[nodiscard]] bool zero_copy() const noexcept { return record_sequence_ != kNoRecord; }

  // Copies up to destination.size() bytes; the copy is stable.
  std::size_t copy_out(std::span<std::byte> destination) const noexcept;
  [[nodiscard]] std::vector<std::byte> copy() const;

  // Gives the message back (its ring space becomes reusable) and counts it
  // as delivered to the sender. Idempotent.
  void release() noexcept;

 private:
  friend struct detail::ChannelState;
  static constexpr std::uint64_t kNoRecord = ~std::uint64_t{0};

  explicit Message(MessageErrc error) noexcept : error_(error) {}

  // MessageErrc{} (0) for none: a std::error_code would cost a call into
  // the standard library for every message received.
  MessageErrc error_{};
  // Not owning: a Channel closed while Messages are held keeps its state
  // alive until the last is released (Core::retired).
  detail::ChannelState* owner_ = nullptr;
  std::span<const std::byte> payload_;
  std::uint64_t record_sequence_ = kNoRecord;  // ring record to release, if zero copy
  std::uint32_t peer_epoch_ = 0;               // the session it came from
  std::uint32_t credit_ = 0;                   // channel credit (bytes) given back at release
  std::vector<std::byte> copy_;                // reassembled or copied bytes
};

class Loan {
 public:
  Loan() = default;
  Loan(Loan&& other) noexcept;
  Loan& operator=(Loan&& other) noexcept;
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  // An uncommitted loan is abandoned: nothing is sent.
  ~Loan();

  [[nodiscard]] explicit operator bool() const noexcept { return state_ != nullptr; }
  [[nodiscard]] std::error_code error() const noexcept { return error_; }
  // Write the message here (8-byte aligned, inside our output section).
  [[nodiscard]] std::span<std::byte> data() const noexcept { return data_; }

  // Sends the first `used` bytes (at most data().size()). peer_reset when
  // the peer reset since the loan was made (nothing is sent then).
  std::error_code commit(std::size_t used);
  // Gives the space back without sending anything.
  void abandon() noexcept;

 private:
  friend struct detail::ChannelState;
  explicit Loan(std::error_code error) noexcept : error_(error) {}

  std::error_code error_;
  std::shared_ptr<detail::LoanState> state_;
  std::span<std::byte> data_;
};

class Channel {
 public:
  Channel() = default;
  Channel(Channel&&) noexcept = default;
  // Closes the channel this handle held before taking over `other`'s.
  Channel& operator=(Channel&& other) noexcept;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  // Closes the channel (announced to the peer).
  ~Channel();

  [[nodiscard]] explicit operator bool() const noexcept { return state_ != nullptr; }
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] std::uint32_t peer() const noexcept;
  // True once the peer has opened the same name (in the current session).
  [[nodiscard]] bool connected() const noexcept;
  // Waits for the rendezvous. timed_out, shut_down.
  std::error_code wait_connected(std::chrono::nanoseconds timeout = kForever);

  // What the peer's last reset ended on this channel: the messages we had
  // sent on it in that session and how many the peer released (the
  // per-channel delivery counter; counts are modulo 2^32). Fields: resets,
  // sent, delivered_known, delivered (the channel core's report).
  using ResetReport = transports::ChannelReset;

  [[nodiscard]] ResetReport last_reset() const;

  std::error_code send(std::span<const std::byte> message,
                       std::chrono::nanoseconds timeout = kForever);
  std::error_code send(std::string_view text, std::chrono::nanoseconds timeout = kForever) {
    return send(std::as_bytes(std::span{text.data(), text.size()}), timeout);
  }
  [[nodiscard]] Loan loan(std::size_t size, std::chrono::nanoseconds timeout = kForever);

  [[nodiscard]] Message receive(std::chrono::nanoseconds timeout = kForever);
  [[nodiscard]] Message try_receive() { return receive(kNoWait); }

  // Announces the close to the peer; later calls fail with shut_down.
  void close();

  // For event loops (Asio): arms the ring so that the peer's next record
  // rings our doorbell. Returns false when a message (or an error) is ready
  // now: call try_receive() instead of waiting for event_fd().
  [[nodiscard]] bool prepare_wait();

  // The Session's event fd (for Asio): readable when receive() may progress.
  [[nodiscard]] int event_fd() const noexcept;
  // Processes pending events without blocking; see Session::process_events().
  bool process_events();

 private:
  friend class Session;
  explicit Channel(std::shared_ptr<detail::ChannelState> state) noexcept
      : state_(std::move(state)) {}

  std::shared_ptr<detail::ChannelState> state_;
};

}  // namespace cellink::linux_uio
