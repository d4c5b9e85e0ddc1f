// Session and Channel (session.hpp, channel.hpp) over an in-process
// LoopbackLink: the fragmentation rules that the multi-process tests cannot
// time precisely. Spec: docs/link.md, section 7.
#include "cellink/linux-uio/session.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/linux-uio/loopback_device.hpp"

namespace cellink::linux_uio {
namespace {

using namespace std::chrono_literals;

constexpr auto kStep = 5s;  // any one step; a hang fails loudly

std::vector<std::byte> pattern(std::size_t size, std::uint8_t seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = std::byte(static_cast<std::uint8_t>(seed + i));
  return bytes;
}

class TwoSessions : public testing::Test {
 protected:
  LoopbackLink link{2};
  Session sender{link.device(0)};
  Session receiver{link.device(1)};
  Channel out = sender.open("data");
  Channel in = receiver.open("data");

  void SetUp() override {
    ASSERT_FALSE(out.wait_connected(kStep));
    ASSERT_FALSE(in.wait_connected(kStep));
  }
};

TEST_F(TwoSessions, FragmentedMessageIsReassembledIntact) {
  // Two fragments that fit the ring together, so one thread can send both.
  const std::vector<std::byte> big = pattern(sender.max_record_payload() + 1000, 7);
  ASSERT_FALSE(out.send(big, kStep));
  Message message = in.receive(kStep);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_FALSE(message.zero_copy());
  EXPECT_EQ(message.copy(), big);
}

// A fragmented send that gives up half way (the ring is full and nobody
// reads) must not leave the receiver gluing the next message onto the
// fragments it already has: the next send first tells it to drop them.
TEST_F(TwoSessions, FragmentedSendGivenUpHalfWayIsDroppedWholeByTheReceiver) {
  const std::vector<std::byte> too_big_for_the_ring = pattern(4 * sender.max_record_payload(), 1);
  EXPECT_EQ(out.send(too_big_for_the_ring, 50ms), MessageErrc::timed_out);
  const std::vector<std::byte> next = pattern(100, 9);
  // The receiver drains the abandoned fragments while the sender waits for
  // room for the abort and the next message.
  Message message = in.receive(10ms);
  EXPECT_FALSE(message) << "a half message was delivered";
  ASSERT_FALSE(out.send(next, kStep));
  message = in.receive(kStep);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(message.copy(), next) << "the next message was joined to the abandoned one";
  EXPECT_EQ(in.try_receive().error(), MessageErrc::would_block);
}

TEST_F(TwoSessions, NonBlockingFragmentedSendNeverBlocksWhenTheRingFills) {
  const std::vector<std::byte> too_big_for_the_ring = pattern(4 * sender.max_record_payload(), 3);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(out.send(too_big_for_the_ring, kNoWait), MessageErrc::would_block);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  const std::vector<std::byte> next = pattern(64, 5);
  for (int round = 0; round < 100; ++round) {
    (void)in.try_receive();
    if (!out.send(next, kNoWait)) break;
  }
  Message message = in.receive(kStep);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(message.copy(), next);
}

}  // namespace
}  // namespace cellink::linux_uio
