// A guest killed under a blocked host receive is a peer reset, and a new
// guest on the same cell resumes the stream (docs/guests.md, "A killed guest
// and its successor: GuestRestart").
//
// The daemon serves the two-cell link of guest_channel_test.cpp (host = peer
// 0, guest = peer 1). The test process is the host: one Session over
// HostDevice for the whole test, with spin_budget 0.
//   1. Guest 1 runs cellink-guest-channel --hold: the host-first ping-pong,
//      then it sleeps with its Session running.
//   2. The host blocks in receive(); another thread SIGKILLs guest 1's QEMU.
//      The daemon sees the disconnect and clears guest 1's state entry; the
//      host's receive must fail with peer_reset within kResetBound, and its
//      next send too (reported once to each direction of the channel).
//      last_reset(1) must say what guest 1 released: every ping.
//   3. Guest 2 boots as the same cell, its Session hand-shakes with the same
//      host Session (a new epoch), the channel reconnects, and the full
//      ping-pong runs again both ways with every byte checked.
//
// AGuestKilledMidMessageLeavesNoPartialMessage: guest 1 sends a message of
// five records toward a host that does not receive (a single-threaded
// Session: nothing drains its rings between calls), so the send blocks with
// its first record on the ring (32 KiB); then its QEMU is killed. The host must report
// peer_reset and deliver no part of that message, and guest 2's ping-pong
// must start clean: its first message is checked byte for byte.
//
// AGuestSessionThatLeavesAndJoinsAgainInOneBootIsResumed: the guest program
// runs two Sessions one after the other on one UioDevice (--sessions=2); the
// host sees the first leave as a peer reset and carries the full ping-pong
// with the second, on the channel it kept.
#include <chrono>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

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
using linux_uio::MessageErrc;
using linux_uio::Session;

constexpr std::uint32_t kRounds = 8;
// Generous: the daemon notices the closed socket at once and the Session
// sees the state change on the vector-0 doorbell (or its 20 ms safety poll).
constexpr milliseconds kResetBound{2000};

class GuestRestart : public GuestTest {
 protected:
  void TearDown() override {
    finish_other_guest(first_guest_, "first guest");
    GuestTest::TearDown();
  }

  // The daemon on kHostGuestLinkConfig and the test's host half: a Session
  // over HostDevice (spin_budget 0) with channel "guest-ping" open.
  struct Host {
    std::filesystem::path config;
    std::unique_ptr<linux_uio::HostDevice> device;
    std::unique_ptr<Session> session;
    Channel channel;  // after session: destroyed first
    std::size_t max_record = 0;
  };
  Host start_host(linux_uio::Threading threading = linux_uio::Threading::multi) {
    Host host;
    host.config = write_config(kHostGuestLinkConfig);
    start_daemon(host.config);
    host.device = linux_uio::HostDevice::connect({runtime_dir(), "vm", "host"});
    host.session = std::make_unique<Session>(
        *host.device, linux_uio::SessionOptions{.spin_budget = std::chrono::nanoseconds{0},
                                                .threading = threading});
    host.channel = host.session->open(guest_test::kChannelName);
    host.max_record = host.session->max_record_payload();
    return host;
  }

  // Guest 1 once guest 2 took guest_'s place.
  std::unique_ptr<Process> first_guest_;
};

std::string guest_args(bool hold) {
  return "cellink.run=cellink-guest-channel cellink.arg=--rounds=" + std::to_string(kRounds) +
         " cellink.arg=--timeout-ms=" + std::to_string(kGuestStepTimeout.count()) +
         (hold ? " cellink.arg=--hold" : "");
}

TEST_F(GuestRestart, KilledGuestIsAPeerResetAndANewGuestResumesTheStream) {
  Host host = start_host();
  auto& [config, host_device, session, channel, max_record] = host;

  // 1. Guest 1: host-first ping-pong, then it holds.
  boot("guest", config, guest_args(true));
  expect_guest("CELLINK-GUEST: uio[0-9]+: ivshmem v1, link 'vm', peer 1 of 2", kBootTimeout);
  ASSERT_FALSE(session->wait_for_peer(1, kGuestStepTimeout)) << "guest 1's Session never ran";
  ASSERT_FALSE(channel.wait_connected(kGuestStepTimeout)) << "guest 1 never opened the channel";
  const std::string first_epoch_line = expect_guest(
      "session epoch [0-9]+ running with peer 0, channel connected", kGuestStepTimeout);
  HostSide first(*host_device, channel, max_record);
  for (std::uint32_t round = 0; round < kRounds; ++round) {
    first.send(Phase::host_first, Kind::ping, round);
    first.receive(Phase::host_first, Kind::pong, round);
  }
  expect_guest("holding after host first: " + std::to_string(kRounds) + " received, " +
                   std::to_string(kRounds) + " sent",
               kGuestStepTimeout);

  // 2. The host blocks in receive(); guest 1's QEMU is killed meanwhile.
  {
    const Message nothing = channel.try_receive();
    ASSERT_FALSE(nothing);
    ASSERT_EQ(nothing.error(), make_error_code(MessageErrc::would_block));
  }
  Clock::time_point killed_at{};
  std::thread killer([&] {
    std::this_thread::sleep_for(milliseconds{300});  // the host is asleep by then
    killed_at = Clock::now();
    guest_->kill(SIGKILL);
  });
  const Clock::time_point receive_start = Clock::now();
  const Message after_kill = channel.receive(kGuestStepTimeout);
  const Clock::time_point returned_at = Clock::now();
  killer.join();
  const double blocked_ms =
      std::chrono::duration<double, std::milli>(returned_at - receive_start).count();
  const double reset_ms =
      std::chrono::duration<double, std::milli>(returned_at - killed_at).count();
  ASSERT_FALSE(after_kill) << "a message arrived from the killed guest";
  EXPECT_EQ(after_kill.error(), make_error_code(MessageErrc::peer_reset))
      << after_kill.error().message();
  EXPECT_GE(returned_at, killed_at) << "the receive returned before the kill";
  EXPECT_LT(reset_ms, static_cast<double>(kResetBound.count()));
  // The reset is reported once to the channel's receiver (above) and once
  // to its sender: the next send fails with it, and sends nothing.
  EXPECT_EQ(channel.send("after the reset", linux_uio::kNoWait),
            make_error_code(MessageErrc::peer_reset));
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 128 + SIGKILL);
  EXPECT_FALSE(guest_->saw_line("CELLINK-GUEST-RESULT")) << "guest 1 should have been killed";

  // What the host sent in the ended session and what guest 1 released.
  const linux_uio::ResetReport report = session->last_reset(1);
  EXPECT_EQ(report.resets, 1U);
  EXPECT_EQ(report.sent, kRounds);
  EXPECT_TRUE(report.delivered_known);
  EXPECT_EQ(report.delivered, kRounds);
  EXPECT_FALSE(session->peer_running(1));
  if (HasFailure()) return;

  // 3. Guest 2, same cell, same host Session: the full ping-pong.
  first_guest_ = std::move(guest_);
  boot("guest", config, guest_args(false));
  expect_guest("CELLINK-GUEST: uio[0-9]+: ivshmem v1, link 'vm', peer 1 of 2", kBootTimeout);
  ASSERT_FALSE(session->wait_for_peer(1, kGuestStepTimeout)) << "guest 2's Session never ran";
  ASSERT_FALSE(channel.wait_connected(kGuestStepTimeout))
      << "the channel never reconnected to guest 2";
  const std::string second_epoch_line = expect_guest(
      "session epoch [0-9]+ running with peer 0, channel connected", kGuestStepTimeout);
  const double connected_at = seconds_since_boot();
  HostSide second(*host_device, channel, max_record);
  second.lead(kRounds);
  EXPECT_EQ(second.received, 2 * kRounds);
  EXPECT_EQ(session->last_reset(1).resets, 1U) << "guest 2's session must still be running";

  channel = Channel{};
  session.reset();
  const std::string result = expect_guest("CELLINK-GUEST-RESULT: ok channel", kGuestStepTimeout);
  EXPECT_EQ(result_field(result, "received"), 2 * kRounds) << result;
  EXPECT_EQ(result_field(result, "sent"), 2 * kRounds) << result;
  EXPECT_EQ(result_field(result, "bytes-received"), second.bytes_sent) << result;
  EXPECT_EQ(result_field(result, "bytes-sent"), second.bytes_received) << result;
  guest_->expect_line("cellink-guest-channel exited with status 0", kGuestStepTimeout);
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0) << "QEMU must exit when guest 2 powers off";

  std::cout << "guest restart: guest 1 " << first_epoch_line << "; host receive blocked "
            << blocked_ms << " ms, peer_reset " << reset_ms
            << " ms after SIGKILL; last_reset: sent " << report.sent << " delivered "
            << report.delivered << "; guest 2 connected " << connected_at << " s after boot, "
            << second_epoch_line << "; " << 2 * kRounds << " round trips ("
            << second.bytes_sent + second.bytes_received << " bytes); guest 2: " << result << "\n";
}

TEST_F(GuestRestart, AGuestKilledMidMessageLeavesNoPartialMessage) {
  // Single-threaded: no progress thread copies the guest's records off the
  // ring while the test does not call in.
  Host host = start_host(linux_uio::Threading::single);
  auto& [config, host_device, session, channel, max_record] = host;
  const std::uint64_t message_bytes = 5 * max_record;  // the 32 KiB ring holds one record

  boot("guest", config,
       "cellink.run=cellink-guest-channel cellink.arg=--timeout-ms=" +
           std::to_string(kGuestStepTimeout.count()) +
           " cellink.arg=--stuck-send=" + std::to_string(message_bytes));
  ASSERT_FALSE(session->wait_for_peer(1, kBootTimeout)) << "guest 1's Session never ran";
  ASSERT_FALSE(channel.wait_connected(kGuestStepTimeout)) << "guest 1 never opened the channel";
  expect_guest("sending " + std::to_string(message_bytes) + "-byte message", kGuestStepTimeout);

  // Mid-message: some records published, and no more coming (ring full).
  std::uint64_t produced = 0;
  const Clock::time_point give_up = Clock::now() + kGuestStepTimeout;
  for (Clock::time_point stable_since = Clock::now(); Clock::now() < give_up;) {
    const std::uint64_t now = guest_test::produced_by(*host_device, 1);
    if (now != produced) {
      produced = now;
      stable_since = Clock::now();
    } else if (produced > 0 && Clock::now() - stable_since >= milliseconds{300}) {
      break;
    }
    std::this_thread::sleep_for(milliseconds{10});
  }
  ASSERT_GT(produced, max_record) << "guest 1 published less than one whole record";
  ASSERT_LT(produced, message_bytes) << "guest 1's message fit: it is not stuck mid-message";

  const Clock::time_point killed_at = Clock::now();
  guest_->kill(SIGKILL);
  const Message after_kill = channel.receive(kGuestStepTimeout);
  const double reset_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - killed_at).count();
  ASSERT_FALSE(after_kill) << "a message of " << after_kill.size()
                           << " bytes came out of a send that never finished";
  EXPECT_EQ(after_kill.error(), make_error_code(MessageErrc::peer_reset))
      << after_kill.error().message();
  EXPECT_EQ(channel.send("after the reset", linux_uio::kNoWait),
            make_error_code(MessageErrc::peer_reset));
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 128 + SIGKILL);
  EXPECT_EQ(session->stats().oversized_messages, 0U);
  if (HasFailure()) return;

  // Guest 2: the ping-pong starts with its own first message.
  first_guest_ = std::move(guest_);
  boot("guest", config, guest_args(false));
  ASSERT_FALSE(session->wait_for_peer(1, kBootTimeout)) << "guest 2's Session never ran";
  ASSERT_FALSE(channel.wait_connected(kGuestStepTimeout))
      << "the channel never reconnected to guest 2";
  HostSide second(*host_device, channel, max_record);
  second.lead(kRounds);
  EXPECT_EQ(second.received, 2 * kRounds);

  channel = Channel{};
  session.reset();
  const std::string result = expect_guest("CELLINK-GUEST-RESULT: ok channel", kGuestStepTimeout);
  EXPECT_EQ(result_field(result, "received"), 2 * kRounds) << result;
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0);
  std::cout << "killed mid-message: " << produced << " of " << message_bytes
            << " bytes on the ring at the kill; host peer_reset " << reset_ms
            << " ms after SIGKILL; guest 2: " << result << "\n";
}

TEST_F(GuestRestart, AGuestSessionThatLeavesAndJoinsAgainInOneBootIsResumed) {
  Host host = start_host();
  auto& [config, host_device, session, channel, max_record] = host;

  boot("guest", config, guest_args(false) + " cellink.arg=--sessions=2");
  ASSERT_FALSE(session->wait_for_peer(1, kBootTimeout)) << "the guest's Session never ran";
  ASSERT_FALSE(channel.wait_connected(kGuestStepTimeout)) << "the guest never opened the channel";
  const std::string first_line = expect_guest(
      "session epoch [0-9]+ running with peer 0, channel connected", kGuestStepTimeout);
  HostSide first(*host_device, channel, max_record);
  first.lead(kRounds);
  expect_guest("leaving: session epoch [0-9]+ ends", kGuestStepTimeout);

  // The leave: the guest's Session closes its channel, then publishes RESET.
  // The host's receive sees the close (maybe) and then the reset; the reset
  // is also reported once to the sending direction.
  bool saw_close = false;
  for (;;) {
    const Message after_leave = channel.receive(kGuestStepTimeout);
    ASSERT_FALSE(after_leave) << "a message arrived after the guest's last round";
    if (after_leave.error() == MessageErrc::peer_reset) break;
    ASSERT_EQ(after_leave.error(), make_error_code(MessageErrc::channel_closed))
        << after_leave.error().message();
    ASSERT_FALSE(saw_close) << "the close was reported twice";
    saw_close = true;
  }
  EXPECT_EQ(channel.send("after the reset", linux_uio::kNoWait),
            make_error_code(MessageErrc::peer_reset));
  const linux_uio::ResetReport report = session->last_reset(1);
  EXPECT_EQ(report.resets, 1U);
  EXPECT_TRUE(report.delivered_known);
  EXPECT_EQ(report.delivered, report.sent) << "the guest released every message before leaving";

  // Its second Session: a new epoch, the same host channel.
  ASSERT_FALSE(session->wait_for_peer(1, kGuestStepTimeout)) << "the second Session never ran";
  ASSERT_FALSE(channel.wait_connected(kGuestStepTimeout)) << "the channel never reconnected";
  const std::string second_line = expect_guest(
      "session epoch [0-9]+ running with peer 0, channel connected", kGuestStepTimeout);
  EXPECT_NE(second_line, first_line) << "the second Session must run in a new epoch";
  HostSide second(*host_device, channel, max_record);
  second.lead(kRounds);

  channel = Channel{};
  session.reset();
  const std::string result = expect_guest("CELLINK-GUEST-RESULT: ok channel", kGuestStepTimeout);
  EXPECT_EQ(result_field(result, "received"), 4 * kRounds) << result;
  EXPECT_EQ(result_field(result, "bytes-received"), first.bytes_sent + second.bytes_sent) << result;
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0);
  std::cout << "leave and rejoin in one boot: " << first_line << " then " << second_line
            << (saw_close ? "; the host saw the channel close, then the reset" : "")
            << "; last_reset sent " << report.sent << " delivered " << report.delivered
            << "; guest: " << result << "\n";
}

}  // namespace
}  // namespace cellink::integration
