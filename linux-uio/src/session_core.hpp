// Session internals shared by session.cpp and channel.cpp (private to
// linux-uio). Spec: docs/link.md.
//
// Locks, in the only order they are ever taken:
//   1. ChannelState::send_mutex  one message at a time per channel, so the
//                                fragments of one message are never interleaved
//   2. Core::mutex               the Link handshake, every consumer ring, the
//                                channel tables and queues, the waiting state
//   3. PeerPair::tx_mutex        our producer ring toward that peer and the
//                                pair's loan flag and control queue
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
#include "cellink/transports/channel_control.hpp"
#include "cellink/transports/link.hpp"

namespace cellink::linux_uio {

using Clock = std::chrono::steady_clock;

// Records held zero-copy per pair before queued ones are copied out.
inline constexpr std::size_t kMaxHeldRecords = 256;
using SessionLink = transports::Link<kMaxHeldRecords>;

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
  std::uint64_t sequence = ~std::uint64_t{0};  // ring record (zero copy), or none
  std::span<const std::byte> payload;          // into the ring, when zero copy
  std::vector<std::byte> copy;                 // reassembled or copied-out bytes
  std::uint32_t peer_epoch = 0;
  MessageErrc error{};  // an error to report in the stream's place instead (0: none)
};

struct RemoteChannel {
  std::uint16_t id = 0;
  std::uint32_t max_message_size = 0;
};

struct PeerPair {
  // Guarded by Core::mutex.
  std::map<std::string, RemoteChannel, std::less<>> remote_by_name;
  std::uint64_t outstanding = 0;    // current-session messages queued or held, unreleased
  std::uint32_t full_channels = 0;  // channels whose queue is at max_queued_per_channel
  Clock::time_point drain_deadline{};
  ResetReport last_reset;
  bool broken = false;

  // Written under Core::mutex and every tx_mutex; read by senders under tx_mutex
  // (atomic so that waiters may also peek without a lock).
  std::atomic<bool> running{false};
  std::atomic<std::uint64_t> resets{0};

  SessionMutex tx_mutex;
  // Guarded by tx_mutex.
  bool loan_active = false;
  std::uint64_t sent_in_session = 0;
  std::deque<transports::ControlMessage> control_queue;
};

struct Core;

struct ChannelState {
  std::shared_ptr<Core> core;
  std::string name;
  std::uint32_t peer = 0;
  std::uint16_t local_id = 0;

  SessionMutex send_mutex;   // held for a whole fragmented message
  bool fragmenting = false;  // guarded by the pair's tx_mutex: a fragmented message is half out
  // Guarded by the pair's tx_mutex: a fragmented message was given up half
  // out; the next send on the channel first tells the receiver to drop it.
  bool abort_pending = false;
  std::atomic<std::uint16_t> remote_id{0};
  std::atomic<std::uint32_t> remote_max{0};
  std::atomic<bool> remote_closed{false};
  std::atomic<bool> closed{false};
  std::atomic<std::uint64_t> send_resets_seen{0};  // the last reset a sender was told of

  // Guarded by Core::mutex.
  std::deque<Inbound> queue;
  // Received Messages not yet released; guarded by Core::mutex. They point
  // at this state, so a Channel closed meanwhile parks it in Core::retired.
  std::uint64_t held_messages = 0;
  std::vector<std::byte> partial;
  bool partial_active = false;
  bool partial_overflow = false;
  std::uint64_t receive_resets_seen = 0;
  bool close_reported = false;  // the peer's close was reported to a receiver

  // Friend access to Message and Loan (channel.cpp).
  // Caller holds Core::mutex.
  static Message make_message(ChannelState& owner, Inbound&& inbound);
  // Caller holds Core::mutex: a whole record read in place (zero copy).
  static Message make_message(ChannelState& owner, const transports::Record& record,
                              std::uint32_t peer_epoch);
  static Message make_error(MessageErrc error) { return Message{error}; }
  static void release(Message& message) noexcept;
  static Loan make_loan(const std::shared_ptr<LoanState>& state, std::span<std::byte> data);
  static Loan make_loan_error(std::error_code error) { return Loan{error}; }
  static std::error_code commit(Loan& loan, std::size_t used);
  static void abandon(Loan& loan) noexcept;
};

struct LoanState {
  std::shared_ptr<ChannelState> channel;
  transports::RingProducer::Reservation reservation;
  std::uint64_t resets_at_loan = 0;
  bool done = false;
};

struct Core {
  Core(WaitableDevice& device, SessionOptions options);
  ~Core();

  std::unique_ptr<WaitableDevice> owned_device;  // set by Session::connect()
  WaitableDevice& device;
  SessionOptions options;
  std::chrono::nanoseconds spin_budget;

  SessionMutex mutex;
  SessionLink link;
  std::size_t max_record = 0;  // largest record payload; fixed by the link's geometry
  std::array<PeerPair, ivshmem::kMaxPeers> pairs;
  // Index: [peer][local channel id]; guarded by mutex.
  std::array<std::array<std::shared_ptr<ChannelState>, transports::kMaxChannelId + 1>,
             ivshmem::kMaxPeers>
      channels;
  SessionStats stats;  // guarded by mutex
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
  void poll_link();
  void on_link_event(const transports::LinkEvent& event);
  void try_finish_drain(std::uint32_t peer);
  // Moves every record the peer published into channel queues; returns the
  // message for `wanted` directly when it is next and its queue is empty.
  bool pump(std::uint32_t peer, ChannelState* wanted, Inbound* direct);
  // receive()'s fast path: when `channel`'s queue is empty and the peer's
  // next record is a whole message for it, takes that record (counted as
  // outstanding) into `out`. Anything else it finds first is dispatched as
  // pump() would, and false returned.
  bool take_next(ChannelState& channel, transports::Record& out);
  void dispatch(std::uint32_t peer, const transports::Record& record, ChannelState* wanted,
                Inbound* direct, bool& delivered_direct);
  void handle_control(std::uint32_t peer, std::span<const std::byte> payload);
  bool spill(std::uint32_t peer);
  void push_inbound(ChannelState& channel, Inbound&& inbound);
  Inbound pop_inbound(ChannelState& channel);
  void release_record(std::uint32_t peer, std::uint64_t sequence, std::uint32_t peer_epoch,
                      bool counts_as_delivered);
  void drop_queue(ChannelState& channel);
  void discard_partial(ChannelState& channel);
  void announce_all(std::uint32_t peer);
  void enqueue_control(std::uint32_t peer, transports::ControlType type,
                       const ChannelState& channel);
  // Caller holds the pair's tx_mutex (not necessarily `mutex`).
  void flush_control(std::uint32_t peer);
  // Sleeps until an event, a local wake-up or `deadline`. Arms `peer`'s ring first.
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
