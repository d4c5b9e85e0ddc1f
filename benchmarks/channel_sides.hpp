// The two ends of a channel measurement, shared by channel_bench's rows
// (channel_latency.cpp) and cellink_bench's (suite/): SessionPair, two
// Sessions over one in-process LoopbackLink, and RawSide, one end of a
// raw-bytes ping-pong or stream on any Channel (a LoopbackLink's, or one
// through `cellink daemon` in suite/daemon_transport.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <system_error>
#include <thread>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/transports/link_format.hpp"
#include "channel_bench.hpp"

namespace cellink::bench {

static_assert([] {
  transports::LinkGeometry geometry;
  return transports::LinkGeometry::compute(2, kChannelOutputSection, geometry) &&
         geometry.ring_capacity_bytes() == kRttRingCapacity;
}());
inline constexpr std::chrono::seconds kChannelConnectTimeout{5};

// Peer 0 (thread A) and peer 1 (thread B), each with channel "bench" open
// toward the other and connected. Built on the main thread before the
// measured threads start; A uses only a(), B only b().
class SessionPair {
 public:
  explicit SessionPair(std::chrono::nanoseconds spin_budget,
                       std::uint64_t output_section = kChannelOutputSection,
                       linux_uio::Threading threading = linux_uio::Threading::multi)
      : link_(2, output_section),
        a_session_(link_.device(0), options(spin_budget, threading)),
        b_session_(link_.device(1), options(spin_budget, threading)),
        a_(a_session_.open("bench")),
        b_(b_session_.open("bench")) {
    // Both wait at once: a single-threaded Session has no progress thread,
    // so each side's handshake moves only while that side waits.
    std::error_code b_error;
    std::thread b_waits([&] { b_error = b_.wait_connected(kChannelConnectTimeout); });
    const std::error_code a_error = a_.wait_connected(kChannelConnectTimeout);
    b_waits.join();
    if (a_error || b_error) {
      fail("channel 'bench' did not connect over the LoopbackLink within 5 s");
    }
  }
  [[nodiscard]] linux_uio::Channel& a() noexcept { return a_; }
  [[nodiscard]] linux_uio::Channel& b() noexcept { return b_; }

 private:
  [[nodiscard]] static linux_uio::SessionOptions options(std::chrono::nanoseconds spin_budget,
                                                         linux_uio::Threading threading) {
    linux_uio::SessionOptions options;
    options.spin_budget = spin_budget;
    options.threading = threading;
    return options;
  }
  linux_uio::LoopbackLink link_;
  linux_uio::Session a_session_;
  linux_uio::Session b_session_;
  linux_uio::Channel a_;
  linux_uio::Channel b_;
};

// One side of a raw-bytes ping-pong: as ring_rtt(), the sender fills the
// whole payload (memset, sequence number first) and the receiver reads one
// word per 64 bytes and checks the sequence number.
class RawSide {
 public:
  RawSide(linux_uio::Channel& channel, std::uint32_t size, SendWith send_with,
          ReceiveWith receive_with)
      : channel_(channel),
        size_(size),
        send_with_(send_with),
        receive_with_(receive_with),
        staging_(size, 64) {}

  void send(std::uint64_t sequence) {
    if (send_with_ == SendWith::loan) {
      linux_uio::Loan loan = channel_.loan(size_);
      if (!loan) fail("loan(%u): %s", size_, loan.error().message().c_str());
      write_payload(loan.data().data(), size_, sequence, Workload::fill);
      if (const std::error_code error = loan.commit(size_)) {
        fail("commit(%u): %s", size_, error.message().c_str());
      }
      return;
    }
    write_payload(staging_.data(), size_, sequence, Workload::fill);
    if (const std::error_code error = channel_.send(std::span{staging_.data(), size_})) {
      fail("send(%u): %s", size_, error.message().c_str());
    }
  }

  void receive(std::uint64_t sequence) {
    const linux_uio::Message message = next();
    const std::uint64_t first =
        read_payload(message.payload().data(), message.size(), Workload::fill, sink_);
    if (first != sequence || message.size() != size_) {
      fail("channel round trip %llu: got message %llu of %zu bytes, expected %u bytes",
           static_cast<unsigned long long>(sequence), static_cast<unsigned long long>(first),
           message.size(), size_);
    }
  }  // ~Message releases the record, as ring_rtt() releases before replying

  [[nodiscard]] std::uint64_t sink() const noexcept { return sink_; }

 private:
  [[nodiscard]] linux_uio::Message next() {
    if (receive_with_ == ReceiveWith::receive) {
      linux_uio::Message message = channel_.receive();
      if (!message) fail("receive: %s", message.error().message().c_str());
      return message;
    }
    for (;;) {
      linux_uio::Message message = channel_.try_receive();
      if (message) return message;
      if (message.error() != linux_uio::MessageErrc::would_block) {
        fail("try_receive: %s", message.error().message().c_str());
      }
    }
  }

  linux_uio::Channel& channel_;
  std::uint32_t size_;
  SendWith send_with_;
  ReceiveWith receive_with_;
  AlignedBuffer staging_;
  std::uint64_t sink_ = 0;
};

}  // namespace cellink::bench
