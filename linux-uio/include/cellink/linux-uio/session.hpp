// Session: one Linux process's attachment to a link, with named channels on
// top of the Link handshake and rings (transports/link.hpp). Spec:
// docs/link.md.
//
//   auto session = Session::connect({.runtime_dir = dir, .link = "demo", .cell = "host"});
//   Channel pings = session->open("ping");        // the other peer of a 2-peer link
//   pings.send(std::as_bytes(std::span{"hello"}));
//   Message reply = pings.receive(std::chrono::seconds{1});
//
// What a Session does for its channels:
//   - hand-shakes with every peer, in either start order, and again whenever
//     a peer restarts (new epoch);
//   - runs the name service on channel 0: open(name) announces the name, and
//     the channel connects once the peer opened the same name;
//   - fragments messages larger than one record and reassembles them, up to
//     SessionOptions::max_message_size;
//   - waits adaptively: it spins for spin_budget, then arms the ring's
//     notification and sleeps on the device's interrupt fd.
//
// Peer reset: operations toward a peer that reset fail once with
// MessageErrc::peer_reset (each channel reports it once to its sender and
// once to its receiver). Messages the peer committed before it reset stay
// receivable. last_reset() then says how many messages we had sent in the
// ended session and how many the peer had released (the delivery counter),
// so the sender knows exactly what to send again.
//
// Threading: every member may be called from any thread. Channels may be
// used from several threads (sends to one peer are serialised; a fragmented
// message is never interleaved with another on the same channel). The
// Session must outlive its Channels, Messages and Loans.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/host_device.hpp"
#include "cellink/linux-uio/waitable_device.hpp"
#include "cellink/transports/channel_status.hpp"

namespace cellink::linux_uio {

namespace detail {
struct Core;  // private to linux-uio/src
}  // namespace detail

// Who may call into a Session (SessionOptions::threading).
enum class Threading : std::uint8_t {
  // Any thread may call any member at any time (the default). Every call
  // takes the Session's locks, and a progress thread keeps the handshake
  // and reset detection going while the application does not call in.
  multi,
  // One thread at a time uses the Session and everything it made (its
  // Channels, Messages, Loans and AsyncChannels); a hand-over between
  // threads is synchronised by the application. No locks are taken and no
  // progress thread runs: the handshake, reset detection and the other
  // side's drain move on inside the application's calls (receive, send,
  // process_events, or an AsyncChannel's waits), so an application that
  // stops calling in for long delays its peers' handshakes. In exchange a
  // message costs no atomic read-modify-write beyond the ring's own.
  single,
};

struct SessionOptions {
  // Largest message this side accepts (announced to the peer; a larger send
  // fails with message_too_large before anything is written).
  std::size_t max_message_size = std::size_t{1} << 20;
  // How long a blocking call spins before it arms the ring and sleeps.
  // Negative: the default, kDefaultSpinBudget, chosen from the measured
  // cost of a wake-up through an eventfd (docs/benchmarks.md). Zero: never
  // spin.
  std::chrono::nanoseconds spin_budget{-1};
  // Bytes of records each channel's sender may have outstanding toward us
  // (its credit window, docs/link.md section 7): a channel nobody reads
  // holds at most this much and never stalls the others (its records are
  // copied off the ring once they pin half of it). 0: the ring's capacity.
  std::uint32_t credit_window = 0;
  // After a peer reset, how long messages of the ended session may wait to
  // be received before they are dropped (and not counted as delivered) so
  // the peer's new incarnation can hand-shake.
  std::chrono::milliseconds drain_timeout{2000};
  Threading threading = Threading::multi;
};

// A blocking call sleeps about 5 us in the kernel when it has to wait for an
// eventfd; spinning longer than a few wake-ups costs CPU for nothing.
inline constexpr std::chrono::nanoseconds kDefaultSpinBudget{20'000};

// What a peer reset ended, as seen from this side: resets, peer_epoch,
// sent, delivered_known, delivered (the channel core's report).
using ResetReport = transports::ResetCounts;

struct SessionStats {
  std::uint64_t unroutable = 0;          // records for a channel id nobody opened here
  std::uint64_t control_errors = 0;      // malformed control records (ignored)
  std::uint64_t oversized_messages = 0;  // reassemblies above max_message_size
  std::uint64_t protocol_faults = 0;     // rules a peer broke; see Session::diagnostic()
  std::uint64_t dropped_undelivered =
      0;  // dropped unreceived: ended-session leftovers or a closed channel
  std::uint64_t doorbells_rung = 0;
  std::uint64_t space_doorbells = 0;  // of those, space-freed doorbells that woke a blocked sender
  std::uint64_t spilled_records = 0;  // queued records copied off the ring to keep it moving
};

class Session {
 public:
  // Attaches to `device`, which must outlive the Session. Throws
  // std::system_error when the link's geometry cannot carry rings.
  explicit Session(WaitableDevice& device, SessionOptions options = {});
  // Connects to `cellink daemon` and owns the HostDevice.
  [[nodiscard]] static std::unique_ptr<Session> connect(const HostDeviceOptions& device_options,
                                                        SessionOptions options = {});
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  // Leaves the link: the peers see a reset.
  ~Session();

  // Opens channel `name` (1..48 printable ASCII bytes) toward `peer`; on a
  // 2-peer link the peer may be omitted. Throws std::system_error
  // (invalid_argument) for a bad name or peer, a name already open toward
  // that peer, or more than 255 channels.
  [[nodiscard]] Channel open(std::string_view name, std::optional<std::uint32_t> peer = {});

  // Waits until the pair with `peer` is running. timed_out or shut_down.
  [[nodiscard]] std::error_code wait_for_peer(std::uint32_t peer,
                                              std::chrono::nanoseconds timeout = kForever);
  [[nodiscard]] bool peer_running(std::uint32_t peer) const;

  [[nodiscard]] std::uint32_t id() const noexcept;
  [[nodiscard]] std::uint32_t peer_count() const noexcept;
  [[nodiscard]] std::uint32_t epoch() const noexcept;
  // The other peer of a 2-peer link.
  [[nodiscard]] std::uint32_t only_peer() const;
  // The largest message one record carries (a loan's limit).
  [[nodiscard]] std::size_t max_record_payload() const noexcept;

  [[nodiscard]] ResetReport last_reset(std::uint32_t peer) const;
  // For a restarted process: how many of the messages its previous
  // incarnation sent `peer` in their last session the peer released. Final
  // once the pair is running again (the peer drained that session first).
  [[nodiscard]] std::optional<std::uint64_t> delivered_from_previous_run(std::uint32_t peer) const;

  // Processes pending device events without blocking (the Asio integration
  // calls this when event_fd() is readable). Returns whether anything
  // happened that could wake a receiver.
  bool process_events();
  // Readable when process_events() has work.
  [[nodiscard]] int event_fd() const noexcept;

  // Wakes every blocked call, which then fails with shut_down; later calls
  // fail at once. Idempotent.
  void shutdown();

  [[nodiscard]] SessionStats stats() const;
  // The first protocol rule a peer broke (a lie about credits, a channel
  // announced twice, a record on a channel it never opened, a reassembly
  // overflow, a malformed control record), naming the peer, the channel and
  // the field; empty while none was. Latched: later faults are counted in
  // stats().protocol_faults only.
  [[nodiscard]] std::string diagnostic() const;
  // Why the pair with `peer` is broken, or empty.
  [[nodiscard]] std::string pair_fault(std::uint32_t peer) const;
  [[nodiscard]] WaitableDevice& device() noexcept;

 private:
  std::shared_ptr<detail::Core> core_;
};

}  // namespace cellink::linux_uio
