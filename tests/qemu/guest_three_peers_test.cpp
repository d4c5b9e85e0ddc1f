// Two Linux guests and a host process on one three-cell link: every pair
// carries checked messages both ways (docs/guests.md, "Three peers:
// GuestThreePeers").
//
// The daemon serves link `trio` (host = peer 0, g1 = peer 1, g2 = peer 2).
// The test process is the host: a Session over HostDevice with a channel
// "guest-ping" toward each guest. Each guest runs cellink-guest-channel with
// a Session over UioDevice and a channel "guest-ping" toward each other peer:
//   g1: --follow=0 --lead=2   (the host's follower, then g2's leader)
//   g2: --follow=0 --follow=1 (the host's follower, then g1's follower)
// The host ping-pongs with g1, then with g2 (host first, then guest first,
// every byte checked on both sides); g1 and g2 ping-pong with each other
// once both are done with the host. Then the host leaves and both guests
// must see it as a peer reset.
#include <chrono>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/linux-uio/host_device.hpp"
#include "cellink/linux-uio/session.hpp"
#include "guest/ping_pong_format.hpp"
#include "guest_fixture.hpp"
#include "host_side.hpp"

namespace cellink::integration {
namespace {

using guest_test::Kind;
using guest_test::Phase;
using linux_uio::Channel;
using linux_uio::Message;
using linux_uio::Session;

constexpr std::uint32_t kRounds = 8;
constexpr const char* kLinkConfig = R"([[cell]]
name = "host"

[[cell]]
name = "g1"

[[cell]]
name = "g2"

[[link]]
name = "trio"
cells = ["host", "g1", "g2"]
rw_section = "0"
output_section = "128KiB"
vectors = 2
protocol = "cellink"
)";

class GuestThreePeers : public GuestTest {
 protected:
  void TearDown() override {
    finish_other_guest(g1_, "g1");
    GuestTest::TearDown();  // prints g2's console (guest_) on failure
  }

  // Like expect_guest(), on g1.
  std::string expect_g1(const std::string& pattern, milliseconds timeout) {
    std::string line = g1_->expect_line("(" + pattern + ")|" + kGuestEnded, timeout, Stream::out);
    if (!std::regex_search(line, std::regex(pattern))) {
      throw ExpectationFailed("g1 stopped before printing '" + pattern + "': " + line);
    }
    return line;
  }

  std::unique_ptr<Process> g1_;
};

std::string guest_args(const std::string& pairs) {
  return "cellink.run=cellink-guest-channel cellink.arg=--rounds=" + std::to_string(kRounds) +
         " cellink.arg=--timeout-ms=" + std::to_string(kGuestStepTimeout.count()) + " " + pairs;
}

TEST_F(GuestThreePeers, EveryPairOfTwoGuestsAndTheHostCarriesCheckedMessagesBothWays) {
  const std::filesystem::path config = write_config(kLinkConfig);
  start_daemon(config);
  const auto host_device = linux_uio::HostDevice::connect({runtime_dir(), "trio", "host"});
  auto session = std::make_unique<Session>(
      *host_device, linux_uio::SessionOptions{.spin_budget = std::chrono::nanoseconds{0}});
  std::vector<Channel> channels;
  channels.push_back(session->open(guest_test::kChannelName, 1));
  channels.push_back(session->open(guest_test::kChannelName, 2));
  const std::size_t max_record = session->max_record_payload();

  boot("g1", config, guest_args("cellink.arg=--follow=0 cellink.arg=--lead=2"));
  g1_ = std::move(guest_);
  boot("g2", config, guest_args("cellink.arg=--follow=0 cellink.arg=--follow=1"));
  expect_g1("CELLINK-GUEST: uio[0-9]+: ivshmem v1, link 'trio', peer 1 of 3", kBootTimeout);
  expect_guest("CELLINK-GUEST: uio[0-9]+: ivshmem v1, link 'trio', peer 2 of 3", kBootTimeout);
  for (std::uint32_t peer = 1; peer <= 2; ++peer) {
    ASSERT_FALSE(session->wait_for_peer(peer, kGuestStepTimeout))
        << "peer " << peer << "'s Session never ran";
    ASSERT_FALSE(channels[peer - 1].wait_connected(kGuestStepTimeout))
        << "peer " << peer << " never opened the channel";
  }
  // Each guest's channels toward both other peers connected.
  expect_g1("running with peer 0, channel connected", kGuestStepTimeout);
  expect_g1("running with peer 2, channel connected", kGuestStepTimeout);
  expect_guest("running with peer 0, channel connected", kGuestStepTimeout);
  expect_guest("running with peer 1, channel connected", kGuestStepTimeout);

  HostSide toward_g1(*host_device, channels[0], max_record);
  HostSide toward_g2(*host_device, channels[1], max_record);
  const Clock::time_point start = Clock::now();
  toward_g1.lead(kRounds);
  toward_g2.lead(kRounds);
  struct {
    std::uint64_t received, bytes_sent, bytes_received;
  } const host{toward_g1.received + toward_g2.received, toward_g1.bytes_sent + toward_g2.bytes_sent,
               toward_g1.bytes_received + toward_g2.bytes_received};
  EXPECT_EQ(host.received, 4 * kRounds);
  // g1 and g2 between themselves.
  expect_g1("guest first with peer 2: [0-9]+ pings received, pongs sent", kGuestStepTimeout);
  expect_guest("guest first with peer 1: [0-9]+ pings sent, pongs received", kGuestStepTimeout);
  const double exchange_seconds = std::chrono::duration<double>(Clock::now() - start).count();

  channels.clear();
  session.reset();
  const std::string r1 = expect_g1("CELLINK-GUEST-RESULT: ok channel", kGuestStepTimeout);
  const std::string r2 = expect_guest("CELLINK-GUEST-RESULT: ok channel", kGuestStepTimeout);
  // Each guest: 2 rounds x kRounds with each of its two peers, both ways.
  for (const std::string* result : {&r1, &r2}) {
    EXPECT_EQ(result_field(*result, "received"), 4 * kRounds) << *result;
    EXPECT_EQ(result_field(*result, "sent"), 4 * kRounds) << *result;
    EXPECT_LT(result_field(*result, "host-left-after-ms"), kGuestStepTimeout.count()) << *result;
    // Every pair runs the same messages, and the host ran two pairs as a
    // guest does: a guest moves exactly the host's bytes.
    EXPECT_EQ(result_field(*result, "bytes-received"), host.bytes_sent) << *result;
    EXPECT_EQ(result_field(*result, "bytes-sent"), host.bytes_received) << *result;
  }
  // Every byte sent by anyone was received by someone (each side checked
  // every message's bytes).
  EXPECT_EQ(result_field(r1, "bytes-sent") + result_field(r2, "bytes-sent") + host.bytes_sent,
            result_field(r1, "bytes-received") + result_field(r2, "bytes-received") +
                host.bytes_received);
  g1_->expect_line("cellink-guest-channel exited with status 0", kGuestStepTimeout);
  guest_->expect_line("cellink-guest-channel exited with status 0", kGuestStepTimeout);
  EXPECT_EQ(g1_->wait_exit(kGuestStepTimeout), 0);
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0);
  std::cout << "three peers: host<->g1, host<->g2, g1<->g2, " << 2 * kRounds
            << " round trips each, exchange " << exchange_seconds << " s; host sent "
            << host.bytes_sent << " received " << host.bytes_received << " bytes; g1: " << r1
            << "; g2: " << r2 << "\n";
}

}  // namespace
}  // namespace cellink::integration
