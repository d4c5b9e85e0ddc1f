// SysfsDevice (sysfs_device.hpp) against a fake sysfs tree (fake_sysfs.hpp).
// Its resource files are regular files there, which mmap as the real ones
// do: two functions whose resource2 is the same file are two peers of one
// link, and real Sessions run between them through the polling path. Only
// the doorbells go nowhere (into a plain resource0), which is the point:
// every message arrives by the poll. A real BAR is covered by the QEMU test
// (tests/qemu/guest_channel_test.cpp, the Sysfs case).
#include "cellink/linux-uio/sysfs_device.hpp"

#include <sys/eventfd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/ivshmem/protocol.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "fake_sysfs.hpp"

namespace cellink::linux_uio {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing_support::expect_error;
using testing_support::FakeSysfs;

constexpr const char* kPeer0 = "0000:00:02.0";
constexpr const char* kPeer1 = "0000:00:03.0";
constexpr auto kStep = 5s;  // any one step; a hang fails loudly

// Link "vm" in a BAR2 of `size` bytes.
std::vector<std::byte> v1_memory(std::uint64_t size = 0x40000) {
  ivshmem::Layout layout;
  return testing_support::v1_link_memory(layout, 2, "vm", ivshmem::protocol::kCellink, size);
}

// A fake tree with one QEMU function per peer, all on the memory file.
class FakeLink {
 public:
  explicit FakeLink(const std::vector<std::byte>& memory, unsigned vectors = 2,
                    bool memory_decoding = true) {
    FakeSysfs::write_bytes(memory_file(), memory);
    for (std::uint32_t peer = 0; peer < 2; ++peer) {
      const fs::path dir =
          fake.add_function(peer == 0 ? kPeer0 : kPeer1, "0x1af4", "0x1110", "0x050000", "", 0);
      FakeSysfs::add_v1_bars(dir, memory_file(), peer, vectors, memory_decoding);
    }
  }

  [[nodiscard]] fs::path memory_file() const { return fake.dev() / "shmem"; }
  [[nodiscard]] fs::path function(const char* address) const {
    return fake.sys() / "bus/pci/devices" / address;
  }
  [[nodiscard]] SysfsDeviceOptions options(const char* address) const {
    return {address, fake.sys(), std::chrono::microseconds{1000}};
  }

  FakeSysfs fake;
};

std::string read_file(const fs::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(SysfsDevice, OpensAFunctionWithNoDriverAndReadsTheLinkFromItsBars) {
  FakeLink link(v1_memory());
  const auto device = SysfsDevice::open(link.options(kPeer1));
  EXPECT_EQ(device->id(), 1U);
  EXPECT_EQ(device->peer_count(), 2U);
  EXPECT_EQ(device->vector_count(), 2U);
  EXPECT_EQ(device->link_name(), "vm");
  EXPECT_EQ(device->protocol(), ivshmem::protocol::kCellink);
  EXPECT_EQ(device->own_output_section().size(), 0x10000U);
  EXPECT_TRUE(SysfsDevice::polling());
  EXPECT_NE(device->description().find("polling fallback, every 1000 us"), std::string::npos)
      << device->description();
  EXPECT_TRUE(read_file(link.function(kPeer1) / "enable").empty()) << "decoding was on already";
}

TEST(SysfsDevice, EnablesMemoryDecodingOnlyWhenItIsOff) {
  FakeLink link(v1_memory(), 2, /*memory_decoding=*/false);
  FakeSysfs::write(link.function(kPeer0) / "enable", "");
  (void)SysfsDevice::open(link.options(kPeer0));
  EXPECT_EQ(read_file(link.function(kPeer0) / "enable"), "1");
}

TEST(SysfsDevice, EveryPollReportsEveryVectorOnceAndAPeerJoining) {
  FakeLink link(v1_memory());
  const auto device = SysfsDevice::open(link.options(kPeer0));
  const auto peer = SysfsDevice::open(link.options(kPeer1));
  peer->set_state(1);  // peer 1 joins: its state-table entry turns non-zero
  const std::vector<DeviceEvent> events = device->wait(kStep);
  ASSERT_EQ(events.size(), 3U);
  EXPECT_EQ(events[0].kind, DeviceEvent::Kind::peer_joined);
  EXPECT_EQ(events[0].peer, 1U);
  for (std::uint32_t vector = 0; vector < 2; ++vector) {
    EXPECT_EQ(events[1 + vector].kind, DeviceEvent::Kind::doorbell);
    EXPECT_EQ(events[1 + vector].vector, vector);
    EXPECT_EQ(events[1 + vector].count, 1U);
  }
  EXPECT_EQ(device->stats().poll_wakeups, 1U);
}

TEST(SysfsDevice, TheWakeFdEndsTheSleepWithoutReportingAPoll) {
  FakeLink link(v1_memory());
  SysfsDeviceOptions options = link.options(kPeer0);
  options.poll_interval = 1s;  // the wake fd, not the timer, must end the wait
  const auto device = SysfsDevice::open(options);
  const UniqueFd wake(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(device->add_wake_fd(wake.get()));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(device->wait(kStep).empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  EXPECT_EQ(device->stats().polls, 0U);
}

TEST(SysfsDevice, TwoSessionsExchangeMessagesThroughThePollingPathAlone) {
  FakeLink link(v1_memory());
  const auto device0 = SysfsDevice::open(link.options(kPeer0));
  const auto device1 = SysfsDevice::open(link.options(kPeer1));
  // spin_budget 0: every receive that finds nothing sleeps in wait().
  Session session0(*device0, {.spin_budget = std::chrono::nanoseconds{0}});
  Session session1(*device1, {.spin_budget = std::chrono::nanoseconds{0}});
  Channel channel0 = session0.open("poll");
  Channel channel1 = session1.open("poll");
  ASSERT_FALSE(channel0.wait_connected(kStep));
  ASSERT_FALSE(channel1.wait_connected(kStep));
  // Peer 1 echoes from its own thread, so that each side's receive finds
  // nothing and sleeps until a poll finds the record.
  constexpr int kRounds = 20;
  std::thread echo([&] {
    for (int round = 0; round < kRounds; ++round) {
      Message message = channel1.receive(kStep);
      if (!message) return;
      std::vector<std::byte> pong = message.copy();
      pong.resize(pong.size() + 3000, std::byte{0x5a});
      if (channel1.send(pong, kStep)) return;
    }
  });
  for (int round = 0; round < kRounds; ++round) {
    const std::vector<std::byte> ping(100 + round, std::byte(round));
    ASSERT_FALSE(channel0.send(ping, kStep));
    Message message = channel0.receive(kStep);
    ASSERT_TRUE(message) << "round " << round << ": " << message.error().message();
    std::vector<std::byte> expected = ping;
    expected.resize(ping.size() + 3000, std::byte{0x5a});
    EXPECT_EQ(message.copy(), expected);
  }
  echo.join();
  // No doorbell reaches a plain resource0 file: the polls woke both.
  EXPECT_GT(device0->stats().poll_wakeups, 0U);
  EXPECT_GT(device1->stats().poll_wakeups, 0U);
}

TEST(SysfsDevice, RefusesACorruptDescriptor) {
  std::vector<std::byte> memory = v1_memory();
  memory[ivshmem::kLinkDescriptorOffset] ^= std::byte{0xff};  // the magic
  FakeLink link(memory);
  expect_error([&] { (void)SysfsDevice::open(link.options(kPeer0)); },
               "sysfs 0000:00:02.0: invalid link descriptor at 0x800 of the shared memory");
}

TEST(SysfsDevice, RefusesASharedMemoryThatIsNotAPowerOfTwo) {
  FakeLink link(v1_memory(0x30000));
  expect_error([&] { (void)SysfsDevice::open(link.options(kPeer0)); },
               "BAR2 is 196608 bytes: an ivshmem BAR2 is a power of two of at least a page");
}

TEST(SysfsDevice, RefusesAFunctionWithoutMsixAsIvshmemPlain) {
  FakeLink link(v1_memory(), /*vectors=*/0);
  expect_error([&] { (void)SysfsDevice::open(link.options(kPeer0)); },
               "the device has no MSI-X interrupts: ivshmem-plain cannot ring doorbells");
}

TEST(SysfsDevice, RefusesMissingResourceFilesSayingWhichBar) {
  FakeLink link(v1_memory());
  fs::remove(link.function(kPeer0) / "resource2");
  expect_error([&] { (void)SysfsDevice::open(link.options(kPeer0)); },
               "resource2: no such file (the function has no BAR 2");
  fs::remove(link.function(kPeer1) / "resource0");
  expect_error([&] { (void)SysfsDevice::open(link.options(kPeer1)); },
               "resource0: no such file (the function has no BAR 0");
}

TEST(SysfsDevice, RefusesAPollIntervalOutsideOneMicrosecondToOneSecond) {
  FakeLink link(v1_memory());
  SysfsDeviceOptions options = link.options(kPeer0);
  options.poll_interval = std::chrono::microseconds{0};
  expect_error([&] { (void)SysfsDevice::open(options); }, "poll_interval 0 us");
  options.poll_interval = 2s;
  expect_error([&] { (void)SysfsDevice::open(options); }, "is not in 1 us .. 1 s");
}

TEST(SysfsDevice, RefusesAV2Function) {
  FakeSysfs fake;
  fake.add_function("0000:00:05.0", "0x110a", "0x4106", "0xff4c11", "", 1);
  expect_error(
      [&] {
        (void)SysfsDevice::open({"", fake.sys(), std::chrono::microseconds{1000}});
      },
      "Jailhouse ivshmem 2.0");
}

}  // namespace
}  // namespace cellink::linux_uio
