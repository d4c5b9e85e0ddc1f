// LoopbackDevice and LoopbackLink (loopback_device.hpp): the in-process
// WaitableDevice that the link, session and benchmark code is tested on.
// Doorbell counting, event-fd readiness, state words, membership changes.
#include "cellink/linux-uio/loopback_device.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/ivshmem/peer_state.hpp"

namespace cellink::linux_uio {
namespace {

using ivshmem::PeerState;
using ivshmem::Phase;
using EventKind = DeviceEvent::Kind;

constexpr std::uint64_t k64KiB = 0x10000;  // LoopbackLink's default output section

bool readable(int fd) {
  pollfd entry{fd, POLLIN, 0};
  return ::poll(&entry, 1, 0) == 1;
}

TEST(LoopbackDevice, DoorbellsOnOneVectorAreReportedOnceWithTheirCount) {
  LoopbackLink loopback(2, k64KiB, 3);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(loopback.device(0).doorbell(1, 2), ivshmem::DoorbellStatus::ok);
  ASSERT_EQ(loopback.device(0).doorbell(1, 0), ivshmem::DoorbellStatus::ok);
  const std::vector<DeviceEvent> events = loopback.device(1).wait(std::chrono::milliseconds{0});
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[0].kind, EventKind::doorbell);
  EXPECT_EQ(events[0].vector, 0U);
  EXPECT_EQ(events[0].count, 1U);
  EXPECT_EQ(events[1].vector, 2U);
  EXPECT_EQ(events[1].count, 3U);
  EXPECT_TRUE(loopback.device(1).wait(std::chrono::milliseconds{0}).empty());
  EXPECT_TRUE(loopback.device(0).wait(std::chrono::milliseconds{0}).empty());
}

TEST(LoopbackDevice, EventFdIsReadableExactlyWhileEventsArePending) {
  LoopbackLink loopback(2);
  LoopbackDevice& device = loopback.device(1);
  EXPECT_FALSE(readable(device.event_fd()));
  ASSERT_EQ(loopback.device(0).doorbell(1, 1), ivshmem::DoorbellStatus::ok);
  EXPECT_TRUE(readable(device.event_fd()));
  EXPECT_EQ(device.wait(std::chrono::milliseconds{0}).size(), 1U);
  EXPECT_FALSE(readable(device.event_fd()));
}

TEST(LoopbackDevice, BlockedWaitWakesOnADoorbellFromAnotherThread) {
  LoopbackLink loopback(2);
  std::thread ringer([&] { (void)loopback.device(0).doorbell(1, 1); });
  const std::vector<DeviceEvent> events = loopback.device(1).wait(std::chrono::seconds{10});
  ringer.join();
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].vector, 1U);
}

TEST(LoopbackDevice, DoorbellsFromManyThreadsAreAllCounted) {
  constexpr std::uint32_t kThreads = 4;
  constexpr std::uint64_t kRingsEach = 2000;
  LoopbackLink loopback(kThreads + 1);
  std::vector<std::thread> ringers;
  for (std::uint32_t id = 1; id <= kThreads; ++id) {
    ringers.emplace_back([&, id] {
      for (std::uint64_t i = 0; i < kRingsEach; ++i) (void)loopback.device(id).doorbell(0, 1);
    });
  }
  std::uint64_t total = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (total < kRingsEach * kThreads && std::chrono::steady_clock::now() < deadline) {
    for (const DeviceEvent& event : loopback.device(0).wait(std::chrono::milliseconds{100})) {
      total += event.count;
    }
  }
  for (std::thread& ringer : ringers) ringer.join();
  EXPECT_EQ(total, kRingsEach * kThreads);
}

TEST(LoopbackDevice, WaitReturnsNothingWhenTheTimeoutPasses) {
  LoopbackLink loopback(2);
  EXPECT_TRUE(loopback.device(0).wait(std::chrono::milliseconds{2}).empty());
}

// A Session sleeps in one wait() on the device and its own wake-up eventfd.
TEST(LoopbackDevice, WaitReturnsOnceTheWakeFdIsReadableAndLeavesItUnread) {
  LoopbackLink loopback(2);
  LoopbackDevice& device = loopback.device(0);
  const int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(wake, 0);
  ASSERT_TRUE(device.add_wake_fd(wake));
  std::thread waker([wake] {
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
    const std::uint64_t one = 1;
    ASSERT_EQ(::write(wake, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(device.wait(std::chrono::seconds{5}).empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds{5});
  waker.join();
  std::uint64_t count = 0;
  EXPECT_EQ(::read(wake, &count, sizeof count), static_cast<ssize_t>(sizeof count));
  EXPECT_EQ(count, 1U) << "wait() must leave the wake-up fd for its owner to reset";
  // Reset, it no longer wakes the device's wait(); a doorbell still does.
  EXPECT_TRUE(device.wait(std::chrono::milliseconds{2}).empty());
  ASSERT_EQ(loopback.device(1).doorbell(0, 1), ivshmem::DoorbellStatus::ok);
  const std::vector<DeviceEvent> events = device.wait(std::chrono::seconds{5});
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].vector, 1U);
  ::close(wake);
}

TEST(LoopbackDevice, SetStatePublishesTheWordAndRingsVectorZeroOnEveryOtherPeer) {
  LoopbackLink loopback(3);
  loopback.device(0).set_state(0x103);
  for (const std::uint32_t other : {1U, 2U}) {
    EXPECT_EQ(loopback.device(other).peer_state(0), 0x103U);
    const std::vector<DeviceEvent> events =
        loopback.device(other).wait(std::chrono::milliseconds{0});
    ASSERT_EQ(events.size(), 1U) << "peer " << other;
    EXPECT_EQ(events[0].kind, EventKind::doorbell);
    EXPECT_EQ(events[0].vector, 0U);
  }
  EXPECT_TRUE(loopback.device(0).wait(std::chrono::milliseconds{0}).empty());
}

TEST(LoopbackDevice, DoorbellRejectsPeersAndVectorsOutsideTheLink) {
  LoopbackLink loopback(2, k64KiB, 2);
  EXPECT_EQ(loopback.device(0).doorbell(2, 0), ivshmem::DoorbellStatus::no_such_peer);
  EXPECT_EQ(loopback.device(0).doorbell(1, 2), ivshmem::DoorbellStatus::no_such_vector);
  EXPECT_EQ(loopback.device(0).doorbell(0, 1), ivshmem::DoorbellStatus::ok);  // self is allowed
}

TEST(LoopbackDevice, DetachZeroesTheStateAndTellsEveryOtherPeer) {
  LoopbackLink loopback(3);
  loopback.device(1).set_state(0x203);
  for (const std::uint32_t id : {0U, 2U})
    (void)loopback.device(id).wait(std::chrono::milliseconds{0});
  loopback.detach(1);
  for (const std::uint32_t other : {0U, 2U}) {
    EXPECT_EQ(loopback.device(other).peer_state(1), 0U);
    EXPECT_FALSE(loopback.device(other).peer_present(1));
    const std::vector<DeviceEvent> events =
        loopback.device(other).wait(std::chrono::milliseconds{0});
    ASSERT_EQ(events.size(), 2U) << "peer " << other;
    EXPECT_EQ(events[0].kind, EventKind::peer_left);
    EXPECT_EQ(events[0].peer, 1U);
    EXPECT_EQ(events[1].kind, EventKind::doorbell);
    EXPECT_EQ(events[1].vector, 0U);
    EXPECT_EQ(events[1].count, 1U);
  }
  EXPECT_EQ(loopback.device(0).doorbell(1, 1), ivshmem::DoorbellStatus::peer_absent);
  EXPECT_EQ(loopback.device(1).doorbell(0, 1), ivshmem::DoorbellStatus::peer_absent);
  loopback.detach(1);  // already gone: nothing more happens
  EXPECT_TRUE(loopback.device(0).wait(std::chrono::milliseconds{0}).empty());
}

TEST(LoopbackDevice, DetachDropsTheInterruptsTheDeadPeerHadNotCollected) {
  LoopbackLink loopback(2);
  ASSERT_EQ(loopback.device(0).doorbell(1, 1), ivshmem::DoorbellStatus::ok);
  loopback.detach(1);
  loopback.attach(1);
  EXPECT_TRUE(loopback.device(1).wait(std::chrono::milliseconds{0}).empty());
}

TEST(LoopbackDevice, AttachTellsTheOthersAndKeepsTheOutputSection) {
  LoopbackLink loopback(2);
  std::memcpy(loopback.device(1).own_output_section().data(), "kept", 4);
  loopback.detach(1);
  (void)loopback.device(0).wait(std::chrono::milliseconds{0});
  loopback.attach(1);
  const std::vector<DeviceEvent> events = loopback.device(0).wait(std::chrono::milliseconds{0});
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].kind, EventKind::peer_joined);
  EXPECT_EQ(events[0].peer, 1U);
  EXPECT_TRUE(loopback.device(0).peer_present(1));
  EXPECT_EQ(loopback.device(0).doorbell(1, 1), ivshmem::DoorbellStatus::ok);
  EXPECT_EQ(std::memcmp(loopback.device(0).output_section(1).data(), "kept", 4), 0);
}

TEST(LoopbackLink, SectionsArePageAlignedZeroFilledAndSharedByEveryDevice) {
  LoopbackLink loopback(3, 8192, 2, 4096);
  EXPECT_EQ(loopback.memory().size(), loopback.layout().memory_size());
  for (std::uint32_t id = 0; id < 3; ++id) {
    LoopbackDevice& device = loopback.device(id);
    EXPECT_EQ(device.id(), id);
    EXPECT_EQ(device.peer_count(), 3U);
    EXPECT_EQ(device.vector_count(), 2U);
    EXPECT_EQ(device.rw_section().size(), 4096U);
    EXPECT_EQ(device.rw_section().data(), loopback.device(0).rw_section().data());
    const std::span<std::byte> own = device.own_output_section();
    EXPECT_EQ(own.data(), loopback.device(0).output_section(id).data());
    EXPECT_EQ(own.size(), 8192U);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(own.data()) % ivshmem::kPageSize, 0U);
    EXPECT_TRUE(std::all_of(own.begin(), own.end(), [](std::byte b) { return b == std::byte{0}; }));
  }
}

TEST(LoopbackLink, RejectsAnImpossibleLinkWithAClearMessage) {
  EXPECT_THROW(LoopbackLink(1), std::invalid_argument);
  EXPECT_THROW(LoopbackLink(17), std::invalid_argument);
  EXPECT_THROW(LoopbackLink(2, 0, 2, 0), std::invalid_argument);
  EXPECT_THROW(LoopbackLink(2, k64KiB, 0), std::invalid_argument);
  EXPECT_THROW(LoopbackLink(2, k64KiB, 65), std::invalid_argument);
  try {
    LoopbackLink loopback(2, 3000);
    FAIL() << "a 3000-byte output section was accepted";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("3000"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("4096-byte page"), std::string::npos) << error.what();
  }
  LoopbackLink loopback(2);
  EXPECT_THROW((void)loopback.device(2), std::out_of_range);
  EXPECT_THROW(loopback.detach(2), std::out_of_range);
  EXPECT_THROW(loopback.attach(2), std::out_of_range);
}

}  // namespace
}  // namespace cellink::linux_uio
