// The rows channel_bench measures (channel_latency.cpp); channel_bench.cpp
// prints them. Each function runs on the caller's thread, starts its own two
// pinned threads (ring_bench.hpp's harness) where it needs them, and aborts
// with a message if a message is lost, duplicated, reordered or fails: a
// broken path never yields a figure.
#pragma once

#include <chrono>
#include <cstdint>

#include "ring_bench.hpp"

namespace cellink::bench {

// Polling: receive() spins this long before it would sleep, i.e. never here.
inline constexpr std::chrono::nanoseconds kSpinForever = std::chrono::hours{24};

// How a message is put on the channel and taken off it.
enum class SendWith : std::uint8_t { send, loan };
enum class ReceiveWith : std::uint8_t { receive, try_receive };

// Round trips between two Sessions over a LoopbackLink with 64 KiB rings, as
// ring_rtt() over two raw rings: the sender fills the whole payload, the
// receiver reads one word per 64 bytes, checks the sequence number and
// releases the message before it replies.
[[nodiscard]] Latency channel_rtt(const Settings& settings, std::chrono::nanoseconds spin_budget,
                                  std::uint32_t size, SendWith send_with, ReceiveWith receive_with);

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
// Sample round trips over two polling Sessions; every field is read.
[[nodiscard]] Latency sample_rtt(const Settings& settings, const CapnpCase& shape,
                                 Encoding encoding);

// One thread plays both sides with one message in flight: no line crosses
// cores, so this is the instruction cost the round trip pays on each side.
struct Cost {
  double channel_ns = 0;  // per message: send + receive + release
  double ring_ns = 0;     // per record: reserve, fill, commit, publish, peek, read, release
};
[[nodiscard]] Cost single_thread_cost(const Settings& settings, std::uint32_t size);
// The same for a Sample: ns per message, send + receive + reading every field.
[[nodiscard]] double single_thread_sample_ns(const Settings& settings, const CapnpCase& shape,
                                             Encoding encoding);

}  // namespace cellink::bench
