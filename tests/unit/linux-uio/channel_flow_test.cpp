// Per-channel flow control, the space-freed doorbell and loans that do not
// block other channels (transports/channel_core.hpp through the Session).
// Spec: docs/link.md, sections 7 and 8.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/transports/link_format.hpp"

namespace cellink::linux_uio {
namespace {

using namespace std::chrono_literals;
constexpr auto kStep = 5s;  // any one step; a hang fails loudly

std::vector<std::byte> numbered(std::uint32_t number, std::size_t size) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = std::byte(static_cast<std::uint8_t>(number * 31 + i));
  }
  std::memcpy(bytes.data(), &number, sizeof number);
  return bytes;
}

void expect_numbered(const Message& message, std::uint32_t number, std::size_t size) {
  ASSERT_TRUE(message) << "message " << number << ": " << message.error().message();
  EXPECT_EQ(message.copy(), numbered(number, size)) << "message " << number;
}

SessionOptions with_window(std::uint32_t window, std::chrono::nanoseconds spin = -1ns) {
  SessionOptions options;
  options.credit_window = window;
  options.spin_budget = spin;
  return options;
}

// Two channels, "a" and "b", between one pair of peers.
struct TwoChannels {
  explicit TwoChannels(SessionOptions receiver_options = {}, SessionOptions sender_options = {})
      : sender(link.device(0), sender_options), receiver(link.device(1), receiver_options) {
    EXPECT_FALSE(a_out.wait_connected(kStep));
    EXPECT_FALSE(b_out.wait_connected(kStep));
    EXPECT_FALSE(a_in.wait_connected(kStep));
    EXPECT_FALSE(b_in.wait_connected(kStep));
  }
  LoopbackLink link{2};
  Session sender;
  Session receiver;
  Channel a_out = sender.open("a");
  Channel b_out = sender.open("b");
  Channel a_in = receiver.open("a");
  Channel b_in = receiver.open("b");
};

// Sends on `channel` without waiting until its window (or the ring) is
// full; returns how many went.
std::uint32_t fill(Channel& channel, std::size_t size) {
  std::uint32_t sent = 0;
  while (!channel.send(numbered(sent, size), kNoWait)) ++sent;
  return sent;
}

// B runs at its own pace while nobody reads A: A's sender fills A's window
// and then waits; B carries many rings' worth of messages; when A's reader
// resumes, every A message arrives in order and intact.
// Carries `count` messages on `out` -> `in` with a reader thread; seconds.
double carry(Channel& out, Channel& in, std::uint32_t first, std::uint32_t count,
             std::size_t size) {
  const auto started = std::chrono::steady_clock::now();
  std::thread reader([&] {
    for (std::uint32_t n = first; n < first + count; ++n) {
      const Message message = in.receive(kStep);
      expect_numbered(message, n, size);
      if (!message) return;
    }
  });
  for (std::uint32_t n = first; n < first + count; ++n) {
    const std::error_code error = out.send(numbered(n, size), kStep);
    EXPECT_FALSE(error) << "message " << n << ": " << error.message();
    if (error) break;
  }
  reader.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

void head_of_line_case(std::uint32_t window) {
  constexpr std::size_t kSize = 200;
  constexpr std::uint32_t kBMessages = 20000;  // about 130 rings of 32 KiB
  TwoChannels pair(with_window(window));
  // B alone first, then B beside a stalled A: the rates are informational
  // (printed, not asserted: speed is measured in benchmarks/).
  const double alone = carry(pair.b_out, pair.b_in, 0, kBMessages, kSize);
  const std::uint32_t a_sent = fill(pair.a_out, kSize);
  ASSERT_GT(a_sent, 0U);
  EXPECT_EQ(pair.a_out.send(numbered(a_sent, kSize), 20ms), MessageErrc::timed_out)
      << "A's sender should wait once A's share is full";
  const double stalled = carry(pair.b_out, pair.b_in, kBMessages, kBMessages, kSize);
  std::cout << "[  rates   ] window " << window << ": B alone " << kBMessages / alone
            << " msg/s, B beside a stalled A " << kBMessages / stalled
            << " msg/s, ratio stalled/alone " << alone / stalled << "\n";
  if (window == 0) {
    EXPECT_GT(pair.receiver.stats().spilled_records, 0U) << "A's records never left the ring";
  }

  for (std::uint32_t n = 0; n < a_sent; ++n) {
    expect_numbered(pair.a_in.receive(kStep), n, kSize);
  }
  ASSERT_FALSE(pair.a_out.send(numbered(a_sent, kSize), kStep));
  expect_numbered(pair.a_in.receive(kStep), a_sent, kSize);
  EXPECT_EQ(pair.a_in.try_receive().error(), MessageErrc::would_block);
  EXPECT_EQ(pair.receiver.stats().protocol_faults, 0U) << pair.receiver.diagnostic();
}

TEST(ChannelFlow, AnUnreadChannelWithASmallWindowNeverStallsItsSibling) {
  head_of_line_case(4096);
}

// With the default window (the whole ring) A's records would pin the ring:
// the receiver copies them off (spills) so B keeps moving.
TEST(ChannelFlow, AnUnreadChannelWithTheDefaultWindowIsSpilledSoItsSiblingGoesOn) {
  head_of_line_case(0);
}

TEST(ChannelFlow, AFullWindowIsWouldBlockForThatChannelOnly) {
  TwoChannels pair(with_window(1024));
  const std::uint32_t a_sent = fill(pair.a_out, 100);
  EXPECT_EQ(a_sent, 1024U / 112U);  // 100-byte payloads take 112 bytes of the window each
  EXPECT_EQ(pair.a_out.send(numbered(0, 100), kNoWait), MessageErrc::would_block);
  EXPECT_FALSE(pair.b_out.send(numbered(7, 100), kNoWait));
  expect_numbered(pair.b_in.receive(kStep), 7, 100);
  // One release on A gives one record's credit back.
  expect_numbered(pair.a_in.receive(kStep), 0, 100);
  EXPECT_FALSE(pair.a_out.send(numbered(a_sent, 100), kNoWait));
  EXPECT_EQ(pair.a_out.send(numbered(0, 100), kNoWait), MessageErrc::would_block);
}

// The sender's (peer 0) request for room toward the receiver (peer 1): the
// space_wanted word of its consumer area for ring 1 -> 0.
std::uint32_t space_wanted(LoopbackLink& link) {
  const std::span<std::byte> own = link.device(0).own_output_section();
  const auto* area = reinterpret_cast<const transports::ConsumerArea*>(
      own.data() + transports::LinkGeometry::consumer_area_offset(1));
  return transports::load_shared(area->wake_after.space_wanted, std::memory_order_acquire);
}

TEST(ChannelFlow, ABlockedSenderIsWokenByTheReadersReleaseThroughOneDoorbell) {
  // No spinning: the sender asks for room at once and sleeps.
  TwoChannels pair(with_window(1024), with_window(0, 0ns));
  const std::uint32_t a_sent = fill(pair.a_out, 100);
  const std::uint32_t asked_before = space_wanted(pair.link);
  std::atomic<bool> sent{false};
  std::error_code error;
  std::thread sender([&] {
    error = pair.a_out.send(numbered(a_sent, 100), 10s);
    sent = true;
  });
  // Wait on the event itself: the sender has asked for a space-freed doorbell.
  const auto deadline = std::chrono::steady_clock::now() + kStep;
  while (space_wanted(pair.link) == asked_before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_NE(space_wanted(pair.link), asked_before) << "the sender never asked for room";
  EXPECT_FALSE(sent.load());
  const std::uint64_t rung_before = pair.receiver.stats().space_doorbells;
  expect_numbered(pair.a_in.receive(kStep), 0, 100);  // the release frees one record
  sender.join();
  EXPECT_FALSE(error) << error.message();
  EXPECT_EQ(pair.receiver.stats().space_doorbells, rung_before + 1)
      << "one release after one request rings exactly once";
  for (std::uint32_t n = 1; n <= a_sent; ++n) expect_numbered(pair.a_in.receive(kStep), n, 100);
}

TEST(ChannelFlow, AReaderThatKeepsUpRingsNoSpaceDoorbell) {
  TwoChannels pair;
  for (std::uint32_t n = 0; n < 2000; ++n) {
    ASSERT_FALSE(pair.a_out.send(numbered(n, 64), kStep));
    expect_numbered(pair.a_in.receive(kStep), n, 64);
  }
  EXPECT_EQ(pair.receiver.stats().space_doorbells, 0U);
}

TEST(ChannelFlow, ALoanInFlightOnOneChannelDoesNotBlockASendOnAnother) {
  TwoChannels pair;
  Loan loan = pair.a_out.loan(64, kNoWait);
  ASSERT_TRUE(loan) << loan.error().message();
  EXPECT_FALSE(pair.b_out.send(numbered(1, 64), kNoWait)) << "the loan blocked channel b";
  Loan second = pair.b_out.loan(64, kNoWait);
  ASSERT_TRUE(second) << "a second loan on another channel: " << second.error().message();
  const std::vector<std::byte> a_bytes = numbered(2, 64);
  std::memcpy(loan.data().data(), a_bytes.data(), a_bytes.size());
  ASSERT_FALSE(loan.commit(64));
  const std::vector<std::byte> b_bytes = numbered(3, 64);
  std::memcpy(second.data().data(), b_bytes.data(), b_bytes.size());
  ASSERT_FALSE(second.commit(64));
  expect_numbered(pair.a_in.receive(kStep), 2, 64);
  expect_numbered(pair.b_in.receive(kStep), 1, 64);
  expect_numbered(pair.b_in.receive(kStep), 3, 64);
}

TEST(ChannelFlow, AnAbandonedLoanLetsTheSendsQueuedBehindItThrough) {
  TwoChannels pair;
  Loan loan = pair.a_out.loan(64, kNoWait);
  ASSERT_TRUE(loan);
  ASSERT_FALSE(pair.b_out.send(numbered(5, 64), kNoWait));
  loan.abandon();
  expect_numbered(pair.b_in.receive(kStep), 5, 64);
  EXPECT_EQ(pair.a_in.try_receive().error(), MessageErrc::would_block);
}

// A receiver that lies in its credit table breaks that channel alone (channel_broken), with
// a diagnostic naming the channel and the field.
TEST(ChannelFlow, ALieInTheCreditTableIsALatchedFaultOfThatChannelOnly) {
  TwoChannels pair(with_window(1024));
  (void)fill(pair.a_out, 100);
  // The receiver (peer 1) claims to have returned far more than was sent.
  const std::span<std::byte> table_bytes = pair.link.device(1).own_output_section().subspan(
      transports::LinkGeometry::credit_table_offset(1, 0), sizeof(transports::CreditTable));
  auto* table = reinterpret_cast<transports::CreditTable*>(table_bytes.data());
  // The receiver opened "a" first: its id 1.
  std::atomic_ref<std::uint32_t>(table->entry[1].returned).store(0x40000000U);
  EXPECT_EQ(pair.a_out.send(numbered(0, 100), kNoWait), MessageErrc::channel_broken);
  const std::string diagnostic = pair.sender.diagnostic();
  EXPECT_NE(diagnostic.find("channel 'a'"), std::string::npos) << diagnostic;
  EXPECT_NE(diagnostic.find("returned"), std::string::npos) << diagnostic;
  EXPECT_EQ(pair.sender.stats().protocol_faults, 1U);
  // Channel b goes on.
  ASSERT_FALSE(pair.b_out.send(numbered(9, 100), kStep));
  expect_numbered(pair.b_in.receive(kStep), 9, 100);
}

TEST(ChannelFlow, AWindowBelowTheMinimumIsRefusedWithTheRemedy) {
  LoopbackLink link{2};
  try {
    Session session(link.device(0), with_window(10));
    FAIL() << "a 10-byte window was accepted";
  } catch (const std::system_error& error) {
    EXPECT_NE(std::string(error.what()).find("credit_window 10"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace cellink::linux_uio
