// Session threading (session.hpp, Threading): what receive()'s lock-free spin
// must still see, Messages that outlive their Channel, and single-threaded
// Sessions, which have no locks and no progress thread, over an in-process
// LoopbackLink. Spec: docs/link.md, section 8.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/session.hpp"

namespace cellink::linux_uio {
namespace {

using namespace std::chrono_literals;

constexpr auto kStep = 5s;  // any one step; a hang fails loudly

SessionOptions spin_forever(Threading threading) {
  SessionOptions options;
  options.spin_budget = 24h;  // receive() never sleeps: only the spin loop can see events
  options.threading = threading;
  return options;
}

std::vector<std::byte> numbered(std::size_t size, std::uint64_t number) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = std::byte(static_cast<std::uint8_t>(number * 31 + i));
  }
  return bytes;
}

// The Channel goes away while one of its messages is still held: the
// message stays readable and its release still counts as delivered.
TEST(SessionThreading, MessageOutlivesItsClosedChannel) {
  LoopbackLink link{2};
  Session sender{link.device(0)};
  Session receiver{link.device(1)};
  Channel out = sender.open("data");
  std::optional<Channel> in{receiver.open("data")};
  ASSERT_FALSE(out.wait_connected(kStep));
  ASSERT_FALSE(in->wait_connected(kStep));
  ASSERT_FALSE(out.send(numbered(200, 1), kStep));

  Message message = in->receive(kStep);
  ASSERT_TRUE(message) << message.error().message();
  in.reset();  // closes the channel and drops the handle
  EXPECT_EQ(message.copy(), numbered(200, 1));
  message.release();
  EXPECT_FALSE(message);
  EXPECT_EQ(receiver.stats().dropped_undelivered, 0U);
}

// A receiver spinning on channel "a" (without the Session's lock) while a
// receiver of channel "b" pumps the same ring, and may queue a's message
// for it, gets every message of its channel.
TEST(SessionThreading, SpinningReceiverSeesAMessageAnotherReceiverQueued) {
  LoopbackLink link{2};
  Session sender{link.device(0)};
  Session receiver{link.device(1), spin_forever(Threading::multi)};
  Channel out_a = sender.open("a");
  Channel out_b = sender.open("b");
  Channel in_a = receiver.open("a");
  Channel in_b = receiver.open("b");
  for (Channel* channel : {&out_a, &out_b, &in_a, &in_b}) {
    ASSERT_FALSE(channel->wait_connected(kStep));
  }
  for (std::uint64_t round = 0; round < 200; ++round) {
    std::optional<Message> got_a;
    std::thread spinner([&] { got_a.emplace(in_a.receive(kStep)); });
    // b's receiver pumps the ring: a's record is queued for the spinner,
    // which must take it from the queue rather than wait for the ring.
    ASSERT_FALSE(out_a.send(numbered(64, round), kStep));
    ASSERT_FALSE(out_b.send(numbered(64, round + 1000), kStep));
    Message got_b = in_b.receive(kStep);
    spinner.join();
    ASSERT_TRUE(got_b) << got_b.error().message();
    ASSERT_TRUE(*got_a) << got_a->error().message();
    EXPECT_EQ(got_a->copy(), numbered(64, round));
    EXPECT_EQ(got_b.copy(), numbered(64, round + 1000));
  }
}

// Two single-threaded Sessions, each owned by its own thread: they
// hand-shake with no progress thread and carry whole and fragmented
// messages both ways, in order.
TEST(SessionThreading, SingleThreadedSessionsCarryMessagesBothWays) {
  LoopbackLink link{2};
  constexpr std::uint64_t kRounds = 2000;
  std::string echo_failure;
  std::thread echo([&] {
    Session session{link.device(1), spin_forever(Threading::single)};
    Channel channel = session.open("echo");
    for (std::uint64_t i = 0; i < kRounds; ++i) {
      Message message = channel.receive(kStep);
      if (!message) {
        echo_failure = "echo receive " + std::to_string(i) + ": " + message.error().message();
        return;
      }
      const std::vector<std::byte> bytes = message.copy();
      message.release();
      if (const std::error_code error = channel.send(bytes, kStep)) {
        echo_failure = "echo send " + std::to_string(i) + ": " + error.message();
        return;
      }
    }
    // Stay until the initiator has its last echo.
    (void)channel.receive(kStep);
  });

  Session session{link.device(0), spin_forever(Threading::single)};
  Channel channel = session.open("echo");
  ASSERT_FALSE(channel.wait_connected(kStep));
  const std::size_t fragmented = session.max_record_payload() + 333;
  for (std::uint64_t i = 0; i < kRounds; ++i) {
    const std::vector<std::byte> sent = numbered(i % 100 == 99 ? fragmented : 8 + i % 300, i);
    ASSERT_FALSE(channel.send(sent, kStep)) << "send " << i;
    Message echoed = channel.receive(kStep);
    ASSERT_TRUE(echoed) << "receive " << i << ": " << echoed.error().message();
    ASSERT_EQ(echoed.copy(), sent) << "round " << i;
  }
  ASSERT_FALSE(channel.send(numbered(8, 0), kStep));
  echo.join();
  EXPECT_EQ(echo_failure, "");
}

// With no progress thread, a receiver that spins forever must still look
// at the device now and then: a peer that dies (its process killed, so the
// daemon detaches it) is reported as peer_reset.
TEST(SessionThreading, SingleThreadedSpinningReceiverSeesThePeerLeave) {
  LoopbackLink link{2};
  std::optional<Session> peer{std::in_place, link.device(0)};
  Channel peer_channel = peer->open("data");
  Session session{link.device(1), spin_forever(Threading::single)};
  Channel channel = session.open("data");
  ASSERT_FALSE(channel.wait_connected(kStep));
  ASSERT_FALSE(peer_channel.wait_connected(kStep));

  std::thread killer([&] {
    std::this_thread::sleep_for(50ms);  // the receiver is spinning by then
    link.detach(0);                     // what the daemon does when a peer's process dies
  });
  const auto start = std::chrono::steady_clock::now();
  const Message message = channel.receive(kStep);
  const auto waited = std::chrono::steady_clock::now() - start;
  killer.join();
  EXPECT_EQ(message.error(), MessageErrc::peer_reset);
  EXPECT_LT(waited, kStep) << "the reset was only seen when the receive timed out";
  peer_channel = Channel{};
  peer.reset();
}

}  // namespace
}  // namespace cellink::linux_uio
