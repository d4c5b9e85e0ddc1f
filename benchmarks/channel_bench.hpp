// The rows channel_bench measures (channel_latency.cpp); channel_bench.cpp
// prints them. Each function runs on the caller's thread, starts its own two
// pinned threads (ring_bench.hpp's harness) where it needs them, and aborts
// with a message if a message is lost, duplicated, reordered or fails: a
// broken path never yields a figure.
#pragma once

#include <chrono>
#include <cstdint>

#include "cellink/linux-uio/session.hpp"
#include "ring_bench.hpp"

namespace cellink::bench {

// Polling: receive() spins this long before it would sleep, i.e. never here.
inline constexpr std::chrono::nanoseconds kSpinForever = std::chrono::hours{24};

// 128 KiB output sections give each direction a 64 KiB ring, the size of
// ring_rtt()'s rings, so that both walk the same amount of memory.
inline constexpr std::uint64_t kChannelOutputSection = std::uint64_t{128} * 1024;

// How a message is put on the channel and taken off it.
enum class SendWith : std::uint8_t { send, loan };
enum class ReceiveWith : std::uint8_t { receive, try_receive };

// Round trips between two Sessions over a LoopbackLink with 64 KiB rings (or
// the rings `output_section`-byte sections give), as ring_rtt() over two raw
// rings: the sender fills the whole payload, the receiver reads one word per
// 64 bytes, checks the sequence number and releases the message before it
// replies.
// `threading`: both Sessions' SessionOptions::threading (single: no locks,
// no progress thread; each Session is used by its one measuring thread).
[[nodiscard]] Latency channel_rtt(const Settings& settings, std::chrono::nanoseconds spin_budget,
                                  std::uint32_t size, SendWith send_with, ReceiveWith receive_with,
                                  std::uint64_t output_section = kChannelOutputSection,
                                  linux_uio::Threading threading = linux_uio::Threading::multi);

// Streaming over the same pair: A sends stream.records messages of
// stream.record_size bytes (filled whole), B receives and checks each one;
// records per second timed on B after stream.warmup (channel_throughput.cpp).
[[nodiscard]] double channel_rate(const Settings& settings, std::chrono::nanoseconds spin_budget,
                                  ReceiveWith receive_with, const StreamCase& stream,
                                  std::uint64_t output_section,
                                  linux_uio::Threading threading = linux_uio::Threading::multi);

// Two threads pass a token through two blocking eventfds; with
// `through_epoll`, each read() waits first in poll() on an epoll fd watching
// the eventfd, the way a Session sleeps on a LoopbackDevice.
[[nodiscard]] Latency eventfd_rtt(const Settings& settings, bool through_epoll);

// Telemetry samples of about 64 B (no temperatures) and 1 KiB (240).
struct CapnpCase {
  std::uint32_t temperatures;
  std::uint32_t bytes;  // the message's size on the wire, measured at start-up
};
// The wire size of a telemetry Sample with `temperatures` readings.
[[nodiscard]] std::uint32_t sample_bytes(std::uint32_t temperatures);

// raw_send: Channel::send() of a staged buffer; raw_loan: the same bytes
// written in place in a loan; capnp: send_capnp() / receive_capnp().
enum class Encoding : std::uint8_t { raw_send, raw_loan, capnp };
// Sample round trips over two Sessions (polling unless `spin_budget` says
// otherwise); every field is read.
[[nodiscard]] Latency sample_rtt(const Settings& settings, const CapnpCase& shape,
                                 Encoding encoding,
                                 std::chrono::nanoseconds spin_budget = kSpinForever,
                                 std::uint64_t output_section = kChannelOutputSection);

// One thread plays both sides with one message in flight: no line crosses
// cores, so this is the instruction cost the round trip pays on each side.
struct Cost {
  double channel_ns = 0;  // per message: send + receive + release
  double ring_ns = 0;     // per record: reserve, fill, commit, publish, peek, read, release
};
[[nodiscard]] Cost single_thread_cost(const Settings& settings, std::uint32_t size,
                                      linux_uio::Threading threading = linux_uio::Threading::multi);
// The same for a Sample: ns per message, send + receive + reading every field.
[[nodiscard]] double single_thread_sample_ns(const Settings& settings, const CapnpCase& shape,
                                             Encoding encoding);

}  // namespace cellink::bench
