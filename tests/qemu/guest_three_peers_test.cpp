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
//
// AKilledGuestIsAResetForBothOthersAndItsSuccessorTalksToBoth: the same
// start, then g2's QEMU is killed; the host and g1 must both see g2's reset,
// and a new g2 must ping-pong with both of them again.
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

  // The daemon, the host's Session with a channel toward each guest, and
  // both guests booted with these cellink-guest-channel arguments, every
  // channel connected.
  void start_trio(const std::string& g1_args, const std::string& g2_args);

  // Boots a g2 (again, after a kill) and waits until its Session runs and
  // both of its channels connected.
  void boot_g2(const std::string& args);

  std::filesystem::path config_;
  std::unique_ptr<linux_uio::HostDevice> host_device_;
  std::unique_ptr<Session> session_;
  std::vector<Channel> channels_;  // toward g1, toward g2
  std::size_t max_record_ = 0;
  std::unique_ptr<Process> g1_;
};

std::string guest_args(const std::string& pairs) {
  return "cellink.run=cellink-guest-channel cellink.arg=--rounds=" + std::to_string(kRounds) +
         " cellink.arg=--timeout-ms=" + std::to_string(kGuestStepTimeout.count()) + " " + pairs;
}

void GuestThreePeers::start_trio(const std::string& g1_args, const std::string& g2_args) {
  config_ = write_config(kLinkConfig);
  start_daemon(config_);
  host_device_ = linux_uio::HostDevice::connect({runtime_dir(), "trio", "host"});
  session_ = std::make_unique<Session>(
      *host_device_, linux_uio::SessionOptions{.spin_budget = std::chrono::nanoseconds{0}});
  channels_.push_back(session_->open(guest_test::kChannelName, 1));
  channels_.push_back(session_->open(guest_test::kChannelName, 2));
  max_record_ = session_->max_record_payload();

  boot("g1", config_, guest_args(g1_args));
  g1_ = std::move(guest_);
  expect_g1("CELLINK-GUEST: uio[0-9]+: ivshmem v1, link 'trio', peer 1 of 3", kBootTimeout);
  ASSERT_FALSE(session_->wait_for_peer(1, kGuestStepTimeout)) << "g1's Session never ran";
  ASSERT_FALSE(channels_[0].wait_connected(kGuestStepTimeout)) << "g1 never opened the channel";
  expect_g1("running with peer 0, channel connected", kGuestStepTimeout);
  boot_g2(g2_args);
  // g1's channel toward g2 connected too.
  expect_g1("running with peer 2, channel connected", kGuestStepTimeout);
}

void GuestThreePeers::boot_g2(const std::string& args) {
  boot("g2", config_, guest_args(args));
  expect_guest("CELLINK-GUEST: uio[0-9]+: ivshmem v1, link 'trio', peer 2 of 3", kBootTimeout);
  ASSERT_FALSE(session_->wait_for_peer(2, kGuestStepTimeout)) << "g2's Session never ran";
  ASSERT_FALSE(channels_[1].wait_connected(kGuestStepTimeout)) << "g2 never opened the channel";
  expect_guest("running with peer 0, channel connected", kGuestStepTimeout);
  expect_guest("running with peer 1, channel connected", kGuestStepTimeout);
}

TEST_F(GuestThreePeers, EveryPairOfTwoGuestsAndTheHostCarriesCheckedMessagesBothWays) {
  start_trio("cellink.arg=--follow=0 cellink.arg=--lead=2",
             "cellink.arg=--follow=0 cellink.arg=--follow=1");
  if (HasFatalFailure()) return;

  HostSide toward_g1(*host_device_, channels_[0], max_record_);
  HostSide toward_g2(*host_device_, channels_[1], max_record_);
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

  channels_.clear();
  session_.reset();
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

// Must-show 4 of issue 5 with more than one survivor: g2's QEMU is killed
// while g2 idles (it waits for the host to leave). The host and g1 must both
// see g2's reset; a new g2, same cell, must hand-shake with both and carry
// the full ping-pong with each, every byte checked.
TEST_F(GuestThreePeers, AKilledGuestIsAResetForBothOthersAndItsSuccessorTalksToBoth) {
  start_trio("cellink.arg=--follow=0 cellink.arg=--lead=2 cellink.arg=--rejoin=2",
             "cellink.arg=--follow=0 cellink.arg=--follow=1");
  if (HasFatalFailure()) return;
  HostSide toward_g1(*host_device_, channels_[0], max_record_);
  HostSide first_g2(*host_device_, channels_[1], max_record_);
  toward_g1.lead(kRounds);
  first_g2.lead(kRounds);
  expect_g1("guest first with peer 2: [0-9]+ pings received, pongs sent", kGuestStepTimeout);
  expect_guest("guest first with peer 1: [0-9]+ pings sent, pongs received", kGuestStepTimeout);

  // g2 now blocks in receive, waiting for the host to leave. Kill it.
  const Clock::time_point killed_at = Clock::now();
  guest_->kill(SIGKILL);
  const Message after_kill = channels_[1].receive(kGuestStepTimeout);
  const double host_reset_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - killed_at).count();
  ASSERT_FALSE(after_kill) << "a message arrived from the killed g2";
  EXPECT_EQ(after_kill.error(), make_error_code(linux_uio::MessageErrc::peer_reset))
      << after_kill.error().message();
  // Reported once to each direction: the next send fails with it too.
  EXPECT_EQ(channels_[1].send("after the reset", linux_uio::kNoWait),
            make_error_code(linux_uio::MessageErrc::peer_reset));
  const std::string g1_saw = expect_g1("peer 2 reset seen after [0-9]+ ms", kGuestStepTimeout);
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 128 + SIGKILL);
  EXPECT_FALSE(guest_->saw_line("CELLINK-GUEST-RESULT")) << "g2 should have been killed";
  EXPECT_TRUE(session_->peer_running(1)) << "g1's session must survive g2's death";
  EXPECT_EQ(session_->last_reset(1).resets, 0U);
  EXPECT_EQ(session_->last_reset(2).resets, 1U);
  if (HasFailure()) return;

  // A new g2: the host and g1 take it up on the channels they kept.
  std::unique_ptr<Process> killed = std::move(guest_);
  finish_other_guest(killed, "killed g2");
  boot_g2("cellink.arg=--follow=0 cellink.arg=--follow=1");
  if (HasFatalFailure()) return;
  expect_g1("peer 2 rejoined, channel reconnected", kGuestStepTimeout);
  HostSide second_g2(*host_device_, channels_[1], max_record_);
  second_g2.lead(kRounds);
  EXPECT_EQ(second_g2.received, 2 * kRounds);
  expect_g1("guest first with peer 2 \\(rejoined\\): [0-9]+ pings received, pongs sent",
            kGuestStepTimeout);
  expect_guest("guest first with peer 1: [0-9]+ pings sent, pongs received", kGuestStepTimeout);

  channels_.clear();
  session_.reset();
  const std::string r1 = expect_g1("CELLINK-GUEST-RESULT: ok channel", kGuestStepTimeout);
  const std::string r2 = expect_guest("CELLINK-GUEST-RESULT: ok channel", kGuestStepTimeout);
  // g1: its pair with the host, with the first g2 and with the second.
  EXPECT_EQ(result_field(r1, "received"), 6 * kRounds) << r1;
  EXPECT_EQ(result_field(r1, "sent"), 6 * kRounds) << r1;
  EXPECT_EQ(result_field(r1, "bytes-received"), 3 * toward_g1.bytes_sent) << r1;
  // The new g2: the host and g1.
  EXPECT_EQ(result_field(r2, "received"), 4 * kRounds) << r2;
  EXPECT_EQ(result_field(r2, "bytes-received"), 2 * second_g2.bytes_sent) << r2;
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0);
  EXPECT_EQ(g1_->wait_exit(kGuestStepTimeout), 0);
  std::cout << "three peers, g2 killed: host saw peer_reset " << host_reset_ms
            << " ms after SIGKILL; g1: " << g1_saw << "; g1: " << r1 << "; new g2: " << r2 << "\n";
}

}  // namespace
}  // namespace cellink::integration
