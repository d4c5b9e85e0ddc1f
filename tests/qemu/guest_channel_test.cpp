// Channel messages between a Linux guest and a host process, through
// uio_ivshmem (UioDevice), through vfio-pci (VfioDevice), through the
// resource files with polling (SysfsDevice) and through whichever of them
// open_ivshmem_device() picks (docs/guests.md, "What the QEMU tests prove";
// docs/device-backends.md).
//
// The daemon serves a two-cell link (host = peer 0, guest = peer 1). This
// test process is the host: a Session over HostDevice, with spin_budget 0 so
// that a receive that finds nothing sleeps on the doorbell eventfds at once.
// The guest runs cellink-guest-channel (guest/guest_channel.cpp): a Session
// over UioDevice or VfioDevice, also with spin_budget 0, sleeping on the
// MSI-X interrupt: through /dev/uio0, or on the vector's eventfd that
// VFIO_DEVICE_SET_IRQS gave vfio-pci. For VFIO the machine gets an IOMMU
// (q35's intel-iommu, the kernel's intel_iommu=on: docs/guests.md), and the guest
// program takes the function from uio_ivshmem, which /init bound it to, by
// driver_override. They ping-pong on channel "guest-ping" in both
// directions, each checking every byte (guest/ping_pong_format.hpp). Each
// side sends only once the other has armed its ring's wake-up and sleeps, so
// every receive blocks and the other side's doorbell is what wakes it. Then
// the host leaves, and the guest must see it through the state table.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
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
using linux_uio::DeviceEvent;
using linux_uio::Message;
using linux_uio::MessageErrc;
using linux_uio::Session;

constexpr std::uint32_t kRounds = 8;
constexpr std::uint32_t kDataVector = 1;  // Link::data_vector() with 2 vectors

// Forwards to the host's HostDevice and counts the blocking waits that a
// data doorbell ended: the evidence that a blocked receiver was woken by the
// guest's doorbell, not by the Session's 20 ms safety poll.
class ObservedDevice final : public linux_uio::WaitableDevice {
 public:
  explicit ObservedDevice(linux_uio::WaitableDevice& inner) : inner_(inner) {}

  [[nodiscard]] std::uint32_t id() const noexcept override { return inner_.id(); }
  [[nodiscard]] std::uint32_t peer_count() const noexcept override { return inner_.peer_count(); }
  [[nodiscard]] std::uint32_t vector_count() const noexcept override {
    return inner_.vector_count();
  }
  [[nodiscard]] bool peer_present(std::uint32_t peer) const noexcept override {
    return inner_.peer_present(peer);
  }
  [[nodiscard]] const ivshmem::Layout& layout() const noexcept override { return inner_.layout(); }
  [[nodiscard]] std::span<std::byte> rw_section() noexcept override { return inner_.rw_section(); }
  [[nodiscard]] std::span<std::byte> own_output_section() noexcept override {
    return inner_.own_output_section();
  }
  [[nodiscard]] std::span<const std::byte> output_section(
      std::uint32_t peer) const noexcept override {
    return inner_.output_section(peer);
  }
  [[nodiscard]] ivshmem::DoorbellStatus doorbell(std::uint32_t peer,
                                                 std::uint32_t vector) noexcept override {
    return inner_.doorbell(peer, vector);
  }
  void set_state(std::uint32_t value) noexcept override { inner_.set_state(value); }
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer) const noexcept override {
    return inner_.peer_state(peer);
  }
  [[nodiscard]] std::vector<DeviceEvent> wait(std::chrono::milliseconds timeout) override {
    std::vector<DeviceEvent> events = inner_.wait(timeout);
    if (timeout.count() > 0) {
      for (const DeviceEvent& event : events) {
        if (event.kind == DeviceEvent::Kind::doorbell && event.vector == kDataVector) {
          data_wakeups_.fetch_add(1, std::memory_order_relaxed);
          break;
        }
      }
    }
    return events;
  }
  [[nodiscard]] int event_fd() const noexcept override { return inner_.event_fd(); }
  [[nodiscard]] bool add_wake_fd(int fd) override { return inner_.add_wake_fd(fd); }

  [[nodiscard]] std::uint64_t data_wakeups() const noexcept {
    return data_wakeups_.load(std::memory_order_relaxed);
  }

 private:
  linux_uio::WaitableDevice& inner_;
  std::atomic<std::uint64_t> data_wakeups_{0};  // relaxed: read after the run
};

enum class Backend : std::uint8_t { uio, vfio, sysfs, sysfs_beside_uio, automatic };

// The guest program's --backend= for `backend`.
const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::uio: return "uio";
    case Backend::vfio: return "vfio";
    case Backend::sysfs:
    case Backend::sysfs_beside_uio: return "sysfs";
    case Backend::automatic: return "auto";
  }
  return "?";
}

class GuestChannel : public GuestTest {
 protected:
  void ping_pong_with_guest(Backend backend);
  // Boots the default image (uio_ivshmem bound, no IOMMU, no kernel
  // parameters) with the guest program on `backend`, whose open must fail
  // with a result line containing every one of `needles`. Returns the line.
  std::string open_fails_in_default_image(Backend backend, const std::vector<std::string>& needles);
};

std::string GuestChannel::open_fails_in_default_image(Backend backend,
                                                      const std::vector<std::string>& needles) {
  const std::filesystem::path config = write_config(kHostGuestLinkConfig);
  start_daemon(config);
  boot("guest", config,
       std::string("cellink.run=cellink-guest-channel cellink.arg=--backend=") +
           backend_name(backend) +
           " cellink.arg=--timeout-ms=" + std::to_string(kGuestStepTimeout.count()));
  const std::string result =
      guest_->expect_line("CELLINK-GUEST-RESULT: .*", kBootTimeout, Stream::out);
  for (const std::string& needle : needles) {
    EXPECT_NE(result.find(needle), std::string::npos) << "no '" << needle << "' in " << result;
  }
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0) << "the guest must power off after it";
  return result;
}

void GuestChannel::ping_pong_with_guest(Backend backend) {
  const std::filesystem::path config = write_config(kHostGuestLinkConfig);
  start_daemon(config);
  const auto host_device = linux_uio::HostDevice::connect({runtime_dir(), "vm", "host"});
  ObservedDevice observed(*host_device);
  // spin_budget 0: a receive that finds nothing sleeps on the eventfds.
  auto session = std::make_unique<Session>(
      observed, linux_uio::SessionOptions{.spin_budget = std::chrono::nanoseconds{0}});
  Channel channel = session->open(guest_test::kChannelName);

  const std::string program =
      "cellink.run=cellink-guest-channel cellink.arg=--rounds=" + std::to_string(kRounds) +
      " cellink.arg=--timeout-ms=" + std::to_string(kGuestStepTimeout.count()) +
      " cellink.arg=--backend=" + backend_name(backend);
  std::string device_line;
  if (backend == Backend::vfio) {
    boot("guest", config, "intel_iommu=on " + program, {"-device", "intel-iommu,intremap=on"});
    expect_guest("CELLINK-GUEST: module vfio-pci loaded", kBootTimeout);
    // VfioDevice bound the function, opened its IOMMU group and read the
    // daemon's descriptor through BAR2.
    device_line = expect_guest(
        "CELLINK-GUEST: vfio 0000:[0-9a-f:.]+: IOMMU group [0-9]+, registers [a-z/ ]+, "
        "link 'vm', peer 1 of 2, 2 vectors",
        kGuestStepTimeout);
  } else if (backend == Backend::sysfs || backend == Backend::sysfs_beside_uio) {
    // sysfs: no driver at all (the kernel refuses to load uio_ivshmem);
    // beside uio: uio_ivshmem holds the BARs, and iomem=relaxed lets the
    // resource files map them anyway.
    boot(
        "guest", config,
        (backend == Backend::sysfs ? "module_blacklist=uio_ivshmem " : "iomem=relaxed ") + program);
    expect_guest(backend == Backend::sysfs ? "CELLINK-GUEST: module uio_ivshmem failed to load"
                                           : "CELLINK-GUEST: module uio_ivshmem loaded",
                 kBootTimeout);
    // SysfsDevice mapped resource0 and resource2 and read the descriptor.
    device_line = expect_guest(
        "CELLINK-GUEST: sysfs 0000:[0-9a-f:.]+: link 'vm', peer 1 of 2, 2 vectors; the polling "
        "fallback, every 1000 us.*",
        kGuestStepTimeout);
  } else {
    boot("guest", config, program);
    expect_guest("CELLINK-GUEST: module uio_ivshmem loaded", kBootTimeout);
    if (backend == Backend::automatic) {
      // /init loaded uio_ivshmem, which bound the function: the first choice.
      device_line = expect_guest(
          "CELLINK-GUEST: auto: uio 0000:[0-9a-f:.]+, link 'vm': uio[0-9]+, uio_ivshmem's MSI-X "
          "interrupts",
          kGuestStepTimeout);
      expect_guest("CELLINK-GUEST: auto chose uio: link 'vm', peer 1 of 2, 2 vectors",
                   kGuestStepTimeout);
    } else {
      // UioDevice found the device in sysfs and read the daemon's descriptor.
      device_line =
          expect_guest("CELLINK-GUEST: uio[0-9]+: ivshmem v1, link 'vm', peer 1 of 2, 2 vectors",
                       kGuestStepTimeout);
    }
  }
  ASSERT_FALSE(session->wait_for_peer(1, kGuestStepTimeout)) << "the guest's Session never ran";
  ASSERT_FALSE(channel.wait_connected(kGuestStepTimeout)) << "the guest never opened the channel";
  expect_guest("session epoch [0-9]+ running with peer 0, channel connected", kGuestStepTimeout);
  const double connected_at = seconds_since_boot();

  HostSide host(observed, channel, session->max_record_payload());
  const Clock::time_point start = Clock::now();
  host.lead(kRounds);
  const double exchange_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(host.received, 2 * kRounds);

  // The host leaves; the guest sees the reset through its state table.
  channel = Channel{};
  session.reset();
  const bool polls = backend == Backend::sysfs || backend == Backend::sysfs_beside_uio;
  const std::string poll_line =
      polls ? expect_guest("CELLINK-GUEST: sysfs polling: polls=[0-9]+ poll-wakeups=[0-9]+",
                           kGuestStepTimeout)
            : std::string();
  const std::string result = expect_guest("CELLINK-GUEST-RESULT: ok channel", kGuestStepTimeout);
  EXPECT_EQ(result_field(result, "received"), 2 * kRounds);
  EXPECT_EQ(result_field(result, "sent"), 2 * kRounds);
  EXPECT_EQ(result_field(result, "bytes-received"), host.bytes_sent) << result;
  EXPECT_EQ(result_field(result, "bytes-sent"), host.bytes_received) << result;
  // The guest's receive saw the host's reset (it prints ok only then).
  EXPECT_LT(result_field(result, "host-left-after-ms"), kGuestStepTimeout.count()) << result;
  // Every receive of both sides slept (each sent only to an armed
  // receiver), and doorbells woke them: the guest's read() of /dev/uio0 (or
  // of a vector's eventfd) returned an interrupt, the host's eventfd wait a
  // data-vector doorbell. The sysfs guest gets no interrupt: its poll ends
  // each of its receives; the host is still woken by the guest's doorbells,
  // which are register writes either way.
  // In practice each blocked receive is woken so; the bound is half because
  // the Session's 20 ms safety poll may find a record before its interrupt
  // arrives, on a loaded machine.
  const std::uint64_t guest_blocked = result_field(result, "blocked-receives");
  const std::uint64_t guest_wakeups = result_field(result, "interrupt-wakeups");
  EXPECT_EQ(guest_blocked, 2 * kRounds) << result;
  if (polls) {
    EXPECT_EQ(result_field(result, "interrupts"), 0U) << result;
    EXPECT_EQ(guest_wakeups, 0U) << result;
    EXPECT_GE(result_field(poll_line, "poll-wakeups"), guest_blocked) << poll_line;
  } else {
    EXPECT_GE(guest_wakeups, guest_blocked / 2) << result;
    EXPECT_GE(result_field(result, "interrupts"), guest_wakeups) << result;
  }
  EXPECT_EQ(host.blocked, 2 * kRounds);
  EXPECT_GE(observed.data_wakeups(), host.blocked / 2);

  guest_->expect_line("cellink-guest-channel exited with status 0", kGuestStepTimeout);
  EXPECT_EQ(guest_->wait_exit(kGuestStepTimeout), 0) << "QEMU must exit when the guest powers off";
  std::cout << backend_name(backend)
            << (backend == Backend::sysfs_beside_uio ? " beside uio_ivshmem" : "")
            << " guest channel: connected " << connected_at << " s after boot; " << 2 * kRounds
            << " round trips (" << host.bytes_sent + host.bytes_received << " bytes) in "
            << exchange_seconds << " s; host blocked " << host.blocked << "x, woken by a data "
            << "doorbell " << observed.data_wakeups() << "x; guest: " << device_line << "; "
            << poll_line << (polls ? "; " : "") << result << "\n";
}

TEST_F(GuestChannel, GuestAndHostSessionsPingPongBothWaysEachWokenByTheOthersDoorbell) {
  ping_pong_with_guest(Backend::uio);
}

TEST_F(GuestChannel, VfioGuestAndHostPingPongBothWaysEachWokenByTheOthersDoorbell) {
  ping_pong_with_guest(Backend::vfio);
}

TEST_F(GuestChannel, SysfsGuestPollsAndTheHostIsStillWokenByItsDoorbells) {
  ping_pong_with_guest(Backend::sysfs);
}

TEST_F(GuestChannel, SysfsGuestBesideUioIvshmemMapsTheBarsWithIomemRelaxed) {
  ping_pong_with_guest(Backend::sysfs_beside_uio);
}

TEST_F(GuestChannel, AutoPicksUioIvshmemWhichInitLoaded) {
  ping_pong_with_guest(Backend::automatic);
}

// CONFIG_IO_STRICT_DEVMEM: while uio_ivshmem holds the BARs, the kernel
// refuses to map their resource files; SysfsDevice must say what to do.
TEST_F(GuestChannel, SysfsBesideADriverWithoutIomemRelaxedFailsSayingSo) {
  const std::string result = open_fails_in_default_image(
      Backend::sysfs, {"CELLINK-GUEST-RESULT: fail SysfsDevice::open: ",
                       "the driver 'uio_ivshmem' holds the BAR", "iomem=relaxed"});
  std::cout << "sysfs beside uio_ivshmem, strict: " << result << "\n";
}

// Without an IOMMU vfio-pci would refuse the function: VfioDevice must stop
// before unbinding it from uio_ivshmem, and say what to do.
TEST_F(GuestChannel, VfioWithoutAnIommuFailsSayingHowToGetOne) {
  const std::string result = open_fails_in_default_image(
      Backend::vfio, {"CELLINK-GUEST-RESULT: fail VfioDevice::open: ", "intel_iommu=on",
                      "intel-iommu,intremap=on", "(driver uio_ivshmem) is in no IOMMU group"});
  std::cout << "without an IOMMU: " << result << "\n";
}

}  // namespace
}  // namespace cellink::integration
