// The front end against the real back end: VirtioIvshmemDriver with
// VirtioIvshmemDevice, and the inmate's VirtioConsole
// (inmate-lib/virtio_console.hpp) on top of them, with and without
// EVENT_IDX, through back-end and front-end resets.
//
// Both peers share one FakeLink (virtio_fake_link.hpp): a doorbell on the
// back end runs its service() at once, and the console's relax() hook moves
// the host's bytes, so every test runs in one thread.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "cellink/inmate-lib/ivshmem_geometry.hpp"
#include "cellink/inmate-lib/virtio_console.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/ivshmem/protocol.hpp"
#include "cellink/transports/virtio_ivshmem_device.hpp"
#include "cellink/transports/virtio_ivshmem_driver.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"
#include "virtio_fake_link.hpp"

namespace cellink::transports {
namespace {

using inmate::VirtioConsole;
using inmate::VirtioConsoleClock;
using test::FakeDevice;
using test::FakeLink;
using test::kBack;
using test::kFront;

using Device = VirtioIvshmemDevice<2, 64, 4>;
using Driver = VirtioIvshmemDriver<2, 64>;

// The host side: VirtioIvshmemDevice serving a console whose transmit queue
// fills `from_driver` and whose receive queue takes from `to_driver`.
class DeviceHost {
 public:
  explicit DeviceHost(FakeLink& link) : link_(link), port_(link, kBack) {
    link_.on_doorbell[kBack] = [this](std::uint32_t) { service(); };
  }
  ~DeviceHost() { link_.on_doorbell[kBack] = nullptr; }
  DeviceHost(const DeviceHost&) = delete;
  DeviceHost& operator=(const DeviceHost&) = delete;

  void attach() {
    VirtioIvshmemSpec spec;
    spec.device_id = virtio_device_id::kConsole;
    spec.device_features = feature_bit(virtio_console::kFeatureSize);
    spec.queue_count = virtio_console::kQueueCount;
    spec.max_queue_size = 64;
    spec.config = std::as_bytes(std::span(&config_, 1));
    ASSERT_EQ(device.attach(port_, spec), VirtioIvshmemError::ok);
    service();
  }

  void service() {
    if (in_service_) return;
    in_service_ = true;
    Device::Events events;
    do {
      events = device.service();
      event_bits |= events.bits;
    } while (events.has(Device::Events::kMorePending));
    in_service_ = false;
  }

  void pump() {
    service();
    for (std::uint16_t q = 0; q < virtio_console::kQueueCount; ++q) {
      Device::Queue* const ring = device.queue(q);
      if (ring == nullptr) continue;
      ring->disable_notify();
      if (hold) continue;
      bool pushed = false;
      for (;;) {
        if (q == virtio_console::kReceiveQueue && to_driver.empty()) break;
        Device::Queue::Chain chain;
        if (ring->pop(chain) != VirtqError::ok) break;
        std::uint32_t written = 0;
        if (q == virtio_console::kTransmitQueue) {
          for (std::size_t i = 0; i < chain.readable_count(); ++i) {
            const auto bytes = chain.readable(i);
            from_driver.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
          }
          taken.store(from_driver.size(), std::memory_order_release);
        } else {
          for (std::size_t i = 0; i < chain.writable_count() && !to_driver.empty(); ++i) {
            const auto bytes = chain.writable(i);
            const std::size_t n = std::min(bytes.size(), to_driver.size());
            std::memcpy(bytes.data(), to_driver.data(), n);
            to_driver.erase(0, n);
            written += static_cast<std::uint32_t>(n);
          }
        }
        EXPECT_EQ(ring->push(chain.head(), written), VirtqError::ok);
        pushed = true;
      }
      if (pushed) (void)device.notify(q);
      (void)device.arm(q);
    }
  }

  Device device;
  std::string from_driver;
  std::string to_driver;
  std::uint32_t event_bits = 0;
  bool hold = false;                  // the host stops taking buffers
  std::atomic<std::size_t> taken{0};  // from_driver.size(), for another thread

 private:
  FakeLink& link_;
  FakeDevice port_;
  VirtioConsoleConfig config_{80, 25, 1, 0};
  bool in_service_ = false;
};

VirtioDriverOptions console_options(bool event_idx) {
  VirtioDriverOptions options;
  options.queue_count = virtio_console::kQueueCount;
  options.queue_size = 16;
  options.device_features = feature_bit(virtio_console::kFeatureSize);
  options.event_idx = event_idx;
  options.wait.max_polls = 1000;
  return options;
}

// Time for the console: 1 ms per relax(), which also lets the host run.
struct TestClock {
  DeviceHost* host = nullptr;
  std::uint64_t now = 0;
  std::uint64_t relaxes = 0;

  VirtioConsoleClock hooks() {
    return {[](void* self) noexcept { return static_cast<TestClock*>(self)->now; },
            [](void* self) noexcept {
              auto& clock = *static_cast<TestClock*>(self);
              clock.now += 1'000'000;
              ++clock.relaxes;
              if (clock.host != nullptr) clock.host->pump();
            },
            this};
  }
};

std::string pattern(std::size_t size, std::uint32_t seed) {
  std::mt19937 random(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(random());
  return bytes;
}

// ---- The driver and the device ----

TEST(VirtioIvshmemInterop, TheDriverAndTheDeviceAgreeOnEverythingAfterTheHandshake) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_TRUE(driver.backend_ready());
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok)
      << describe(driver.status()) << " at " << driver.fault().field;
  EXPECT_TRUE(host.device.running());
  EXPECT_FALSE(host.device.broken());
  EXPECT_EQ(host.device.negotiated_features(), driver.features());
  EXPECT_TRUE(driver.event_idx());
  EXPECT_TRUE(host.device.event_idx());
  for (std::uint16_t q = 0; q < 2; ++q) {
    const VirtqLayout* layout = host.device.enabled_layout(q);
    ASSERT_NE(layout, nullptr);
    EXPECT_EQ(*layout, driver.queue(q).layout());
  }
  VirtioConsoleConfig config{};
  ASSERT_EQ(driver.read_config(0, std::as_writable_bytes(std::span(&config, 1))),
            VirtioDriverStatus::ok);
  EXPECT_EQ(config.cols, 80);
  EXPECT_EQ(config.rows, 25);
}

TEST(VirtioIvshmemInterop, ADriverThatDeclinesEventIdxRunsTheDeviceInFlagMode) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(false)), VirtioDriverStatus::ok);
  EXPECT_FALSE(driver.event_idx());
  EXPECT_FALSE(host.device.event_idx());
  EXPECT_FALSE(driver.queue(1).event_idx());
}

TEST(VirtioIvshmemInterop, AConfigUpdateReachesTheDriver) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  const VirtioConsoleConfig resized{132, 43, 1, 0};
  ASSERT_EQ(host.device.update_config(std::as_bytes(std::span(&resized, 1))),
            VirtioIvshmemError::ok);
  EXPECT_TRUE(driver.handle_events().config);
  VirtioConsoleConfig config{};
  ASSERT_EQ(driver.read_config(0, std::as_writable_bytes(std::span(&config, 1))),
            VirtioDriverStatus::ok);
  EXPECT_EQ(config.cols, 132);
  EXPECT_EQ(config.rows, 43);
}

TEST(VirtioIvshmemInterop, AFrontEndResetIsSeenByTheDeviceAndItsReprobeRuns) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  host.event_bits = 0;
  driver.reset();
  host.service();
  EXPECT_NE(host.event_bits & Device::Events::kReset, 0U);
  EXPECT_FALSE(host.device.running());
  host.service();  // the device sees our state at 0 and is READY again
  ASSERT_TRUE(driver.backend_ready());
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  EXPECT_TRUE(host.device.running());
}

// ---- The inmate's console on top ----

// console_attach_virtio() probes for protocol 0x8003: a v1 descriptor or a
// v2 class code must say exactly that, and a cellink link is skipped.
TEST(VirtioConsoleProbe, OnlyAVirtioConsoleLinkMatches) {
  constexpr std::uint16_t kConsole = ivshmem::protocol::kVirtioFrontBase + 3;
  ivshmem::Layout layout;
  ASSERT_EQ(ivshmem::Layout::compute({2, 1U << 20, 0}, layout), ivshmem::LayoutError::ok);
  inmate::IvshmemGeometry geometry;
  ivshmem::DescriptorError why{};
  const auto v1 = [&](std::uint16_t link_protocol, std::uint16_t wanted) {
    const ivshmem::LinkDescriptor descriptor =
        ivshmem::make_link_descriptor(layout, 2, link_protocol, "con");
    return inmate::v1_geometry(descriptor, layout.memory_size(), 1, 2, geometry, why, wanted);
  };
  EXPECT_EQ(v1(kConsole, kConsole), inmate::GeometryError::ok);
  EXPECT_EQ(geometry.protocol, kConsole);
  EXPECT_EQ(v1(ivshmem::protocol::kCellink, kConsole), inmate::GeometryError::wrong_protocol);
  EXPECT_EQ(v1(ivshmem::protocol::kUndefined, kConsole), inmate::GeometryError::wrong_protocol);
  EXPECT_EQ(v1(kConsole, ivshmem::protocol::kCellink), inmate::GeometryError::wrong_protocol);
  EXPECT_EQ(v1(ivshmem::protocol::kVirtioBackBase + 3, kConsole),
            inmate::GeometryError::wrong_protocol);  // the back end's id
  EXPECT_TRUE(inmate::protocol_matches(
      ivshmem::protocol_from_class_code(ivshmem::class_code(kConsole)), kConsole));
  EXPECT_EQ(ivshmem::class_code(kConsole), 0xff8003U);
}

class VirtioConsoleOverTheDevice : public ::testing::TestWithParam<bool> {};

TEST_P(VirtioConsoleOverTheDevice, BytesCrossBothWaysIntactInOrder) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  TestClock clock{&host};
  VirtioConsole console(front, clock.hooks(), /*event_idx=*/GetParam());
  ASSERT_TRUE(console.service()) << describe(console.last_probe());
  EXPECT_EQ(console.driver().event_idx(), GetParam());
  EXPECT_EQ(console.buffer_size(), VirtioConsole::kMaxBufferSize);  // 64 KiB section

  for (std::uint32_t seed = 1; seed <= 8; ++seed) {
    const std::string out = pattern(1 + seed * 7919 % 100000, seed);
    const std::string in = pattern(1 + seed * 3331 % 20000, seed + 50);
    host.from_driver.clear();
    host.to_driver = in;
    EXPECT_EQ(console.write(out.data(), out.size()), out.size());
    std::string received;
    char chunk[100];
    for (int round = 0;
         round < 100000 && (received.size() < in.size() || host.from_driver.size() < out.size());
         ++round) {
      host.pump();
      received.append(chunk, console.read(chunk, sizeof(chunk)));
    }
    EXPECT_EQ(host.from_driver, out) << "seed " << seed;
    EXPECT_EQ(received, in) << "seed " << seed;
  }
  EXPECT_EQ(console.resets(), 0U);
  EXPECT_EQ(console.tx_timeouts(), 0U);
  EXPECT_FALSE(host.device.broken());
}

TEST_P(VirtioConsoleOverTheDevice, NewlinesBecomeCrLfWhenAsked) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  TestClock clock{&host};
  VirtioConsole console(front, clock.hooks(), GetParam());
  const std::string text = "one\ntwo\n\nthree";
  EXPECT_EQ(console.write(text.data(), text.size(), /*crlf=*/true), text.size());
  host.pump();
  EXPECT_EQ(host.from_driver, "one\r\ntwo\r\n\r\nthree");
}

TEST_P(VirtioConsoleOverTheDevice, ABackEndRestartIsSurvivedAndTheConsoleComesBack) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  TestClock clock{&host};
  VirtioConsole console(front, clock.hooks(), GetParam());
  ASSERT_TRUE(console.service());
  EXPECT_EQ(console.write("first", 5), 5U);
  host.pump();
  EXPECT_EQ(host.from_driver, "first");

  host.device.stop();                       // `cellink console serve` exits
  EXPECT_EQ(console.write("lost", 4), 0U);  // down: console.cpp sends it to the 16550
  EXPECT_FALSE(console.up());
  EXPECT_EQ(console.resets(), 1U);
  EXPECT_EQ(link.state[kFront], virtio_peer_state::kReset);

  host.from_driver.clear();
  host.attach();  // a new back end: READY again once it saw our state at 0
  ASSERT_TRUE(console.service()) << describe(console.last_probe());
  EXPECT_EQ(console.probes(), 2U);
  EXPECT_EQ(console.write("second", 6), 6U);
  host.to_driver = "keys";
  host.pump();
  char chunk[16];
  const std::size_t got = console.read(chunk, sizeof(chunk));
  EXPECT_EQ(std::string(chunk, got), "keys");
  EXPECT_EQ(host.from_driver, "second");
}

TEST_P(VirtioConsoleOverTheDevice, AHostThatStopsReadingCostsOneTimeoutThenDropsAtOnce) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  TestClock clock{&host};
  VirtioConsole console(front, clock.hooks(), GetParam());
  ASSERT_TRUE(console.service());
  host.hold = true;
  const std::string big =
      pattern(VirtioConsole::kTxBuffers * VirtioConsole::kMaxBufferSize + 10, 9);
  const std::size_t taken = console.write(big.data(), big.size());
  EXPECT_EQ(taken, VirtioConsole::kTxBuffers * VirtioConsole::kMaxBufferSize);
  EXPECT_EQ(console.tx_timeouts(), 1U);
  EXPECT_GE(clock.now, VirtioConsole::kTxTimeoutNs);
  // Stalled: the next write does not wait again.
  const std::uint64_t relaxes = clock.relaxes;
  EXPECT_EQ(console.write("x", 1), 0U);
  EXPECT_EQ(clock.relaxes, relaxes);
  EXPECT_TRUE(console.up());
  // The host reads again: buffers come back and writes go through.
  host.hold = false;
  host.pump();
  EXPECT_EQ(console.write("y", 1), 1U);
  host.pump();
  EXPECT_EQ(host.from_driver, big.substr(0, taken) + "y");
}

TEST_P(VirtioConsoleOverTheDevice, PreparingToSleepAsksForAnInterruptOnTheNextKeys) {
  FakeLink link;
  DeviceHost host(link);
  host.attach();
  FakeDevice front(link, kFront);
  TestClock clock{&host};
  VirtioConsole console(front, clock.hooks(), GetParam());
  ASSERT_TRUE(console.service());
  host.pump();
  std::uint32_t woken = 0;
  link.on_doorbell[kFront] = [&woken](std::uint32_t vector) {
    if (vector == 1) ++woken;
  };
  ASSERT_TRUE(console.prepare_to_sleep());
  host.to_driver = "k";
  host.pump();
  EXPECT_EQ(woken, 1U);
  EXPECT_FALSE(console.prepare_to_sleep());  // a key is waiting
  char c = 0;
  EXPECT_EQ(console.read(&c, 1), 1U);
  EXPECT_EQ(c, 'k');
  link.on_doorbell[kFront] = nullptr;
}

// The two halves in two threads, each polling (no doorbell is delivered):
// every byte is checked, both ways, in both suppression modes.
TEST_P(VirtioConsoleOverTheDevice, TwoThreadsMoveEveryByteBothWays) {
  FakeLink link;
  link.synchronous = false;
  DeviceHost host(link);
  host.attach();
  const std::string out = pattern(std::size_t{1} << 20, 77);
  host.to_driver = pattern(std::size_t{1} << 18, 78);
  const std::string in = host.to_driver;
  std::atomic<bool> stop{false};
  std::thread back_end([&] {
    while (!stop.load(std::memory_order_acquire)) {
      host.pump();
      std::this_thread::yield();
    }
  });

  FakeDevice front(link, kFront);
  const VirtioConsoleClock clock{
      [](void*) noexcept {
        return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch() /
                                          std::chrono::nanoseconds(1));
      },
      [](void*) noexcept { std::this_thread::yield(); }, nullptr};
  VirtioConsole console(front, clock, GetParam());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!console.service() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_TRUE(console.up()) << describe(console.last_probe());
  std::size_t sent = 0;
  std::string received;
  char chunk[700];
  while ((sent < out.size() || received.size() < in.size() ||
          host.taken.load(std::memory_order_acquire) < out.size()) &&
         std::chrono::steady_clock::now() < deadline) {
    if (sent < out.size()) {
      sent += console.write(out.data() + sent, std::min<std::size_t>(5000, out.size() - sent));
    }
    received.append(chunk, console.read(chunk, sizeof(chunk)));
    std::this_thread::yield();
  }
  stop.store(true, std::memory_order_release);
  back_end.join();
  EXPECT_EQ(sent, out.size());
  EXPECT_TRUE(host.from_driver == out)
      << "sent " << host.from_driver.size() << " of " << out.size();
  EXPECT_TRUE(received == in) << "received " << received.size() << " of " << in.size();
  EXPECT_EQ(console.tx_timeouts(), 0U);
  EXPECT_FALSE(host.device.broken());
}

INSTANTIATE_TEST_SUITE_P(EventIdxAndFlags, VirtioConsoleOverTheDevice, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("EventIdx") : std::string("Flags");
                         });

}  // namespace
}  // namespace cellink::transports
