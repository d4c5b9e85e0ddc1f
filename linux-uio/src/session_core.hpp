// Session internals shared by session.cpp, channel.cpp and message.cpp
// (private to linux-uio). Spec: docs/link.md.
//
// The protocol is transports::ChannelCore (names, fragmentation, credits,
// resets, drain): this file adds only what is hosted. The core's rx side is
// guarded by Core::mutex and its tx side toward a peer by that pair's
// tx_mutex.
//
// Locks, in the only order they are ever taken:
//   1. ChannelState::send_mutex  one message at a time per channel, so the
//                                fragments of one message are never interleaved
//   2. Core::mutex               the core's rx side (handshake, consumer rings,
//                                name tables), the channel queues, the waiting state
//   3. PeerPair::tx_mutex        the core's tx side toward that peer: our
//                                producer ring, credits, tickets, control queue
// A sender takes 1 then 3 and never 2 while it holds 3. The handshake (under
// 2) takes every 3 while it may re-initialise producer rings. All three are
// SessionMutex: a single-threaded Session (Threading::single) disables them,
// and receive() spins with none held (spin_for_change() in channel.cpp).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "cellink/transports/channel_core.hpp"

namespace cellink::linux_uio {

using Clock = std::chrono::steady_clock;

// Records held zero-copy per pair before queued ones are copied out.
inline constexpr std::size_t kMaxHeldRecords = 256;
using Protocol = transports::ChannelCore<kMaxHeldRecords>;

namespace detail {

// The Session's locks: a std::mutex that a single-threaded Session
// (Threading::single) switches off, so that lock() and unlock() cost a
// predictable branch and no atomic read-modify-write.
class SessionMutex {
 public:
  void lock() {
    if (enabled_) mutex_.lock();
  }
  [[nodiscard]] bool try_lock() { return !enabled_ || mutex_.try_lock(); }
  void unlock() {
    if (enabled_) mutex_.unlock();
  }
  // Only while no other thread can reach the mutex.
  void disable() noexcept { enabled_ = false; }

 private:
  std::mutex mutex_;
  bool enabled_ = true;
};

// One message waiting in a channel's queue.
struct Inbound {
  std::uint64_t sequence = Protocol::kNoRecord;  // ring record (zero copy), or none
  std::span<const std::byte> payload;            // into the ring, when zero copy
  std::vector<std::byte> copy;                   // reassembled or copied-out bytes
  std::uint32_t peer_epoch = 0;
  std::uint32_t credit = 0;  // channel credit given back at release
  MessageErrc error{};       // an error to report in the stream's place instead (0: none)
};

struct PeerPair {
  SessionMutex tx_mutex;               // the core's tx side toward this peer
  Clock::time_point drain_deadline{};  // guarded by Core::mutex
};

struct Core;

struct ChannelState {
  std::shared_ptr<Core> core;
  std::string name;
  std::uint32_t peer = 0;
  std::uint16_t local_id = 0;

  SessionMutex send_mutex;  // held for a whole fragmented message
  std::atomic<bool> closed{false};

  // Guarded by Core::mutex.
  std::deque<Inbound> queue;
  // Received Messages not yet released. They point at this state, so a
  // Channel closed meanwhile parks it in Core::retired.
  std::uint64_t held_messages = 0;
  std::vector<std::byte> partial;  // the reassembly's bytes (the core keeps its bookkeeping)

  // Friend access to Message and Loan (channel.cpp, message.cpp).
  // Caller holds Core::mutex.
  static Message make_message(ChannelState& owner, Inbound&& inbound);
  // Caller holds Core::mutex: a whole record read in place (zero copy).
  static Message make_message(ChannelState& owner, const transports::Record& record,
                              std::uint32_t peer_epoch, std::uint32_t credit);
  static Message make_error(MessageErrc error) { return Message{error}; }
  static void release(Message& message) noexcept;
  static Loan make_loan(const std::shared_ptr<LoanState>& state, std::span<std::byte> data);
  static Loan make_loan_error(std::error_code error) { return Loan{error}; }
  static std::error_code commit(Loan& loan, std::size_t used);
  static void abandon(Loan& loan) noexcept;
};

struct LoanState {
  std::shared_ptr<ChannelState> channel;
  Protocol::Ticket ticket;
  std::uint64_t resets_at_loan = 0;
};

// What the core's rx side reports, turned into queue entries and wake-ups.
// `wanted`/`direct`: a receiver that takes a whole message for its own
// channel directly when its queue is empty.
struct RxSink {
  Core& core;
  ChannelState* wanted = nullptr;
  Inbound* direct = nullptr;

  void peer_up(std::uint32_t peer);
  void peer_reset(std::uint32_t peer);
  bool deliver(std::uint32_t peer, std::uint16_t id, const transports::Record& record,
               std::uint32_t credit);
  void append(std::uint32_t peer, std::uint16_t id, std::span<const std::byte> bytes);
  bool complete(std::uint32_t peer, std::uint16_t id, std::uint32_t credit);
  void fail(std::uint32_t peer, std::uint16_t id, transports::ChannelStatus status);
  void discard(std::uint32_t peer, std::uint16_t id);
  bool spill(std::uint32_t peer);
  void changed();
};

struct Core {
  Core(WaitableDevice& device, SessionOptions options);
  ~Core();

  std::unique_ptr<WaitableDevice> owned_device;  // set by Session::connect()
  WaitableDevice& device;
  SessionOptions options;
  std::chrono::nanoseconds spin_budget;

  SessionMutex mutex;
  Protocol protocol;
  std::size_t max_record = 0;  // largest record payload; fixed by the link's geometry
  std::array<PeerPair, ivshmem::kMaxPeers> pairs;
  // Index: [peer][local channel id]; guarded by mutex.
  std::array<std::array<std::shared_ptr<ChannelState>, transports::kMaxChannelId + 1>,
             ivshmem::kMaxPeers>
      channels;
  std::uint64_t dropped_undelivered = 0;  // guarded by mutex
  // Closed channels whose received Messages are not all released yet
  // (ChannelState::held_messages); guarded by mutex.
  std::vector<std::shared_ptr<ChannelState>> retired;

  // Waiting: one thread (the waiter) sleeps on the device's fd; the others on
  // `woken`. Guarded by mutex.
  std::condition_variable_any woken;
  bool waiter_active = false;
  std::uint64_t wake_serial = 0;
  std::uint32_t sleepers = 0;
  UniqueFd wake_fd;  // eventfd: interrupts the waiter for local events
  // The device's wait() watches wake_fd too (WaitableDevice::add_wake_fd):
  // the waiter sleeps in one system call instead of poll() then wait().
  bool wake_fd_in_device = false;

  std::atomic<bool> shut_down{false};
  std::thread progress;  // keeps the handshake moving while the application is busy
  std::condition_variable_any progress_stop;  // wakes `progress` at shutdown only

  // All below: caller holds `mutex` (a std::unique_lock named lock where it
  // may be released).
  void handle_events(const std::vector<DeviceEvent>& events);
  void poll_link();  // takes every tx_mutex
  void try_finish_drain(std::uint32_t peer);
  // Reads the peer's ring into channel queues; returns true when `wanted`
  // got its next message in `direct`.
  bool pump(std::uint32_t peer, ChannelState* wanted = nullptr, Inbound* direct = nullptr);
  void push_inbound(ChannelState& channel, Inbound&& inbound);
  Inbound pop_inbound(ChannelState& channel);
  // Gives back a queued message that nobody will receive.
  void drop_queue(ChannelState& channel);
  // Sleeps until an event, a local wake-up or `deadline`.
  void block(std::unique_lock<SessionMutex>& lock, Clock::time_point deadline);
  void wake_sleepers();
  bool process_events_locked();
};

// kForever (or anything above a year) never reads the clock.
[[nodiscard]] inline Clock::time_point deadline_after(std::chrono::nanoseconds timeout) {
  if (timeout >= std::chrono::hours{24 * 365}) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
}

}  // namespace detail
}  // namespace cellink::linux_uio
