// The host's half of the guest ping-pongs (guest/ping_pong_format.hpp),
// shared by the guest channel, restart and three-peer tests: every message
// is checked byte for byte and every failure is an ExpectationFailed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <regex>
#include <string>
#include <system_error>

#include "cellink/ivshmem/device.hpp"
#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "guest/ping_pong_format.hpp"
#include "guest_fixture.hpp"

namespace cellink::integration {

class HostSide {
 public:
  HostSide(ivshmem::Device& device, linux_uio::Channel& channel, std::size_t max_record)
      : device_(device), channel_(channel), max_record_(max_record) {}

  // Sends once the guest sleeps in its receive, so its interrupt wakes it.
  void send(guest_test::Phase phase, guest_test::Kind kind, std::uint32_t round) {
    if (!guest_test::await_receiver_armed(device_, channel_.peer(), kGuestStepTimeout)) {
      throw ExpectationFailed(who() + " never waited for round " + std::to_string(round));
    }
    const auto bytes = guest_test::make_message(phase, kind, round, max_record_);
    if (const std::error_code error = channel_.send(bytes, kGuestStepTimeout)) {
      throw ExpectationFailed("host: sending round " + std::to_string(round) + " to " + who() +
                              ": " + error.message());
    }
    bytes_sent += bytes.size();
    ++sent;
  }

  // Counts in `blocked` the receives that found nothing and had to sleep.
  void receive(guest_test::Phase phase, guest_test::Kind kind, std::uint32_t round) {
    linux_uio::Message message = channel_.try_receive();
    if (!message && message.error() == linux_uio::MessageErrc::would_block) {
      ++blocked;
      message = channel_.receive(kGuestStepTimeout);
    }
    if (!message) {
      throw ExpectationFailed("host: receiving round " + std::to_string(round) + " from " + who() +
                              ": " + message.error().message());
    }
    const std::string mismatch =
        guest_test::check_message(message.payload(), phase, kind, round, max_record_);
    if (!mismatch.empty()) {
      throw ExpectationFailed("host: wrong message from " + who() + ": " + mismatch);
    }
    bytes_received += message.size();
    ++received;
  }

  // The host-first rounds (the host sends the pings), then the guest-first
  // rounds (the host answers).
  void lead(std::uint32_t rounds) {
    for (std::uint32_t round = 0; round < rounds; ++round) {
      send(guest_test::Phase::host_first, guest_test::Kind::ping, round);
      receive(guest_test::Phase::host_first, guest_test::Kind::pong, round);
    }
    for (std::uint32_t round = 0; round < rounds; ++round) {
      receive(guest_test::Phase::guest_first, guest_test::Kind::ping, round);
      send(guest_test::Phase::guest_first, guest_test::Kind::pong, round);
    }
  }

  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::uint64_t blocked = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;

 private:
  [[nodiscard]] std::string who() const { return "peer " + std::to_string(channel_.peer()); }

  ivshmem::Device& device_;
  linux_uio::Channel& channel_;
  std::size_t max_record_;
};

// The number after " name=" in a guest's CELLINK-GUEST-RESULT line.
inline std::uint64_t result_field(const std::string& line, const std::string& name) {
  std::smatch match;
  if (!std::regex_search(line, match, std::regex(" " + name + "=([0-9]+)"))) {
    throw ExpectationFailed("the guest's result has no " + name + "=: " + line);
  }
  return std::stoull(match[1].str());
}

}  // namespace cellink::integration
