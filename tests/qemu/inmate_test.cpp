// Bare-metal inmates as cells (docs/inmates.md, "What the QEMU tests
// prove"): examples/inmate-echo in QEMU (TCG) on the daemon's links, with
// this test process as the host, a Session over HostDevice with
// spin_budget 0, so that a receive that finds nothing sleeps on the
// doorbell's eventfd.
//
//   - HostAndInmateExchangeCheckedMessages: 1200 messages each way, a
//     quarter of them fragmented, every byte checked; the inmate is woken by
//     MSI-X and reports its interrupts; the host blocks in receive().
//   - AKilledInmateIsAResetAndItsSuccessorResumes: SIGKILL mid-stream, the
//     host's peer_reset (and how fast), a new inmate on the same Session.
//   - TheInmateWaitsOutAHostThatLeavesAndComesBack: the Session leaves and
//     a new one joins; the same inmate, never rebooted, echoes again.
//   - ACorruptRingStopsOnlyThatPeer: a hostile host corrupts the inmate's
//     inbound ring; the inmate prints the diagnostic, stops that pair only,
//     keeps echoing for the other host, and writes nothing it may not (its
//     page tables map every other section read-only: a write would be a
//     FATAL page fault).
//   - AnInmateAGuestAndAHostOnOneLink: three kinds of cell, every pair
//     carries checked messages both ways.
//   - TelemetryArrivesAtTheConfiguredRate: inmate-telemetry's samples.
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../../examples/inmate-telemetry/telemetry_sample.hpp"
#include "cellink/linux-uio/host_device.hpp"
#include "cellink/linux-uio/session.hpp"
#include "cellink/transports/link_format.hpp"
#include "host_side.hpp"
#include "inmate_fixture.hpp"

namespace cellink::integration {
namespace {

using linux_uio::Channel;
using linux_uio::HostDevice;
using linux_uio::Message;
using linux_uio::MessageErrc;
using linux_uio::Session;
using linux_uio::SessionOptions;

// The daemon's configuration for one link `link` whose cells, in peer-id
// order, are `cells`: no R/W section, 2 vectors, cellink's protocol.
std::string link_config(const std::string& link, const std::vector<std::string>& cells,
                        const std::string& output_section) {
  std::string text;
  std::string members;
  for (const std::string& cell : cells) {
    text += "[[cell]]\nname = \"" + cell + "\"\n\n";
    members += (members.empty() ? "\"" : ", \"") + cell + "\"";
  }
  return text + "[[link]]\nname = \"" + link + "\"\ncells = [" + members +
         "]\nrw_section = \"0\"\noutput_section = \"" + output_section +
         "\"\nvectors = 2\nprotocol = \"cellink\"\n";
}

// Host (peer 0) and inmate (peer 1) on link "bare". 64 KiB output sections:
// 32 KiB rings, records up to about 16 KiB, so the 20 000- and 32 000-byte
// messages go in fragments.
std::string host_inmate_config() {
  return link_config("bare", {"host", "inmate"}, "64KiB");
}

const std::vector<std::size_t> kSizes = {1, 64, 1000, 20000, 100, 4000, 32000, 512};

std::vector<std::byte> numbered(std::uint32_t index, std::size_t size) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<std::byte>((index * 131 + i * 7 + 3) & 0xff);
  }
  if (size >= 4) std::memcpy(bytes.data(), &index, 4);
  return bytes;
}

struct Exchange {
  std::uint32_t messages = 0;
  std::uint32_t fragmented = 0;
  std::uint64_t bytes = 0;
  std::uint32_t blocked_receives = 0;  // receives that found nothing and slept
  double seconds = 0;
};

// Sends `count` messages (index first..first+count) from a thread, at most
// `window` ahead of the echoes, and checks every echo in order, byte for
// byte. Receives block: try_receive() first, then receive().
Exchange exchange(Channel& channel, std::uint32_t first, std::uint32_t count,
                  std::size_t max_record, std::uint32_t window = 8) {
  Exchange result;
  std::atomic<std::uint32_t> received{0};
  std::atomic<bool> abandoned{false};  // the receiver gave up: the sender stops too
  std::string send_error;
  const auto started = Clock::now();
  std::thread sender([&] {
    for (std::uint32_t i = 0; i < count; ++i) {
      while (i >= received.load() + window) {
        if (abandoned) return;
        std::this_thread::sleep_for(milliseconds{1});
      }
      const std::uint32_t index = first + i;
      if (const std::error_code error =
              channel.send(numbered(index, kSizes[index % kSizes.size()]), kInmateStepTimeout)) {
        send_error = "send " + std::to_string(index) + ": " + error.message();
        return;
      }
    }
  });
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::uint32_t index = first + i;
    Message message = channel.try_receive();
    if (!message && message.error() == MessageErrc::would_block) {
      ++result.blocked_receives;
      message = channel.receive(kInmateStepTimeout);
    }
    if (!message) {
      abandoned = true;
      sender.join();
      throw ExpectationFailed("echo " + std::to_string(index) + ": " + message.error().message() +
                              (send_error.empty() ? "" : "; " + send_error));
    }
    const std::vector<std::byte> expected = numbered(index, kSizes[index % kSizes.size()]);
    if (message.size() != expected.size() ||
        std::memcmp(message.payload().data(), expected.data(), expected.size()) != 0) {
      abandoned = true;
      sender.join();
      throw ExpectationFailed("echo " + std::to_string(index) +
                              " differs: " + std::to_string(message.size()) + " bytes, sent " +
                              std::to_string(expected.size()));
    }
    result.bytes += message.size();
    result.fragmented += message.size() > max_record ? 1 : 0;
    ++result.messages;
    received.store(i + 1);
  }
  sender.join();
  if (!send_error.empty()) throw ExpectationFailed(send_error);
  result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return result;
}

class InmateEcho : public InmateTest {
 protected:
  struct Host {
    std::unique_ptr<HostDevice> device;
    std::unique_ptr<Session> session;
    Channel channel;  // after session: destroyed first
  };

  // Joins `link` as `cell` with channel "echo" open toward the inmate.
  Host join(const std::string& link, const std::string& cell, std::uint32_t inmate_peer = 1) {
    Host host;
    host.device = HostDevice::connect({runtime_dir(), link, cell});
    host.session = std::make_unique<Session>(
        *host.device, SessionOptions{.spin_budget = std::chrono::nanoseconds{0}});
    host.channel = host.session->open("echo", inmate_peer);
    return host;
  }
};

TEST_F(InmateEcho, HostAndInmateExchangeCheckedMessages) {
  const auto config = write_config(host_inmate_config());
  start_daemon(config);
  Host host = join("bare", "host");
  Process& inmate = boot_inmate("echo", "inmate", config, "inmate-echo", "report=600");
  expect_inmate(inmate, "echo: ready: peer 1 of 2, channel 'echo'", kInmateBootTimeout);
  ASSERT_FALSE(host.channel.wait_connected(kInmateStepTimeout)) << "the inmate never opened echo";
  const double connected_after = seconds_since_inmate_start();

  // The first message, timed from QEMU's start.
  const Exchange first = exchange(host.channel, 0, 1, host.session->max_record_payload());
  const double first_echo_after = seconds_since_inmate_start();
  const Exchange stream = exchange(host.channel, 1, 1199, host.session->max_record_payload());
  EXPECT_EQ(stream.messages, 1199U);
  EXPECT_GT(stream.fragmented, 250U) << "a quarter of the messages span several records";

  // The inmate's own report: 1200 echoed, and the MSI-X interrupts it took.
  expect_inmate(inmate, "echo: echoed 1200 messages", kInmateStepTimeout);
  const std::string interrupts = expect_inmate(inmate, "echo: interrupts: [0-9]+ doorbell");
  std::smatch counted;
  ASSERT_TRUE(std::regex_search(interrupts, counted, std::regex("interrupts: ([0-9]+) doorbell")));
  const std::uint64_t doorbells = std::stoull(counted[1]);
  EXPECT_GT(doorbells, 0U) << "the inmate must be woken by MSI-X: " << interrupts;
  EXPECT_GT(stream.blocked_receives, 0U) << "the host never blocked in receive()";
  std::cout << "inmate-echo under TCG: ready line and channel connected " << connected_after
            << " s after QEMU started, first echo back after " << first_echo_after << " s; "
            << stream.messages + first.messages << " messages each way (" << stream.fragmented
            << " fragmented, " << stream.bytes << " bytes) in " << stream.seconds
            << " s; host receives that blocked: " << stream.blocked_receives
            << "; inmate: " << interrupts << "\n";
  RecordProperty("first_echo_seconds", std::to_string(first_echo_after));
  RecordProperty("inmate_doorbell_interrupts", std::to_string(doorbells));
}

TEST_F(InmateEcho, AKilledInmateIsAResetAndItsSuccessorResumes) {
  const auto config = write_config(host_inmate_config());
  start_daemon(config);
  Host host = join("bare", "host");
  Process& first = boot_inmate("first", "inmate", config, "inmate-echo");
  expect_inmate(first, "echo: ready", kInmateBootTimeout);
  ASSERT_FALSE(host.channel.wait_connected(kInmateStepTimeout));
  (void)exchange(host.channel, 0, 100, host.session->max_record_payload());

  // Mid-stream: a sender keeps the inmate busy while its QEMU is killed.
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    for (std::uint32_t i = 0; !stop; ++i) {
      if (host.channel.send(numbered(i, 4000), milliseconds{2000})) break;
    }
  });
  std::uint32_t echoes = 0;
  while (echoes < 20) {
    const Message message = host.channel.receive(kInmateStepTimeout);
    ASSERT_TRUE(message) << message.error().message();
    ++echoes;
  }
  const auto killed_at = Clock::now();
  first.kill(SIGKILL);
  Message after;
  for (;;) {
    after = host.channel.receive(kInmateStepTimeout);
    if (!after) break;  // echoes still in the ring are delivered first
  }
  const double reset_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - killed_at).count();
  stop = true;
  sender.join();
  ASSERT_EQ(after.error(), make_error_code(MessageErrc::peer_reset)) << after.error().message();
  const Channel::ResetReport reset = host.channel.last_reset();
  std::cout << "SIGKILL of the inmate's QEMU -> host peer_reset in " << reset_ms
            << " ms; the channel's reset report: sent " << reset.sent << ", delivered "
            << (reset.delivered_known ? std::to_string(reset.delivered) : "unknown") << "\n";

  // The successor, on the same host Session.
  Process& second = boot_inmate("second", "inmate", config, "inmate-echo");
  expect_inmate(second, "echo: ready", kInmateBootTimeout);
  ASSERT_FALSE(host.session->wait_for_peer(1, kInmateStepTimeout));
  ASSERT_FALSE(host.channel.wait_connected(kInmateStepTimeout));
  // A reset is reported once per direction: unless the sender above already
  // got it, this send says so and sends nothing; otherwise it is echoed.
  const std::error_code probe = host.channel.send(numbered(999, 8), kInmateStepTimeout);
  if (!probe) {
    const Message echo = host.channel.receive(kInmateStepTimeout);
    ASSERT_TRUE(echo) << echo.error().message();
    EXPECT_EQ(echo.size(), 8U);
  } else {
    EXPECT_EQ(probe, make_error_code(MessageErrc::peer_reset)) << probe.message();
  }
  const Exchange resumed = exchange(host.channel, 1000, 200, host.session->max_record_payload());
  EXPECT_EQ(resumed.messages, 200U);
}

TEST_F(InmateEcho, TheInmateWaitsOutAHostThatLeavesAndComesBack) {
  const auto config = write_config(host_inmate_config());
  start_daemon(config);
  auto device = HostDevice::connect({runtime_dir(), "bare", "host"});
  Process& inmate = boot_inmate("echo", "inmate", config, "inmate-echo");
  expect_inmate(inmate, "echo: ready", kInmateBootTimeout);
  for (int run = 0; run < 3; ++run) {
    SCOPED_TRACE("host session " + std::to_string(run));
    auto session = std::make_unique<Session>(
        *device, SessionOptions{.spin_budget = std::chrono::nanoseconds{0}});
    Channel channel = session->open("echo");
    ASSERT_FALSE(channel.wait_connected(kInmateStepTimeout));
    const Exchange echoed = exchange(channel, 0, 100, session->max_record_payload());
    EXPECT_EQ(echoed.messages, 100U);
    channel = Channel{};
    session.reset();  // leaves: our state entry reads RESET
    if (run < 2) expect_inmate(inmate, "echo: peer 0 reset");
  }
  // One boot throughout.
  EXPECT_EQ(inmate.take_lines("echo: ready").size(), 0U) << "the inmate rebooted";
}

// Three cells: two hosts (peers 0 and 1, both this process) and the inmate
// (peer 2).
TEST_F(InmateEcho, ACorruptRingStopsOnlyThatPeer) {
  const auto config = write_config(link_config("trio", {"a", "b", "inmate"}, "128KiB"));
  start_daemon(config);
  Host a = join("trio", "a", 2);
  Host b = join("trio", "b", 2);
  Process& inmate = boot_inmate("echo", "inmate", config, "inmate-echo");
  expect_inmate(inmate, "echo: ready: peer 2 of 3", kInmateBootTimeout);
  ASSERT_FALSE(a.channel.wait_connected(kInmateStepTimeout));
  ASSERT_FALSE(b.channel.wait_connected(kInmateStepTimeout));
  (void)exchange(a.channel, 0, 50, a.session->max_record_payload());
  (void)exchange(b.channel, 0, 50, b.session->max_record_payload());

  // Host a turns hostile: its ring toward the inmate claims more published
  // bytes than the ring holds. It owns that memory, so nothing stops it.
  transports::LinkGeometry geometry;
  ASSERT_TRUE(
      transports::LinkGeometry::compute(3, a.device->layout().output_section(0).size, geometry));
  const std::uint64_t produced_at = geometry.ring_slot_offset(0, 2) + 0x40;
  std::byte* own = a.device->own_output_section().data();
  std::atomic_ref<std::uint64_t> produced(*reinterpret_cast<std::uint64_t*>(own + produced_at));
  produced.store(produced.load() + 16 * geometry.ring_capacity_bytes());
  ASSERT_EQ(a.device->doorbell(2, 1), ivshmem::DoorbellStatus::ok);
  const std::string broken = expect_inmate(inmate, "echo: peer 0 BROKEN: .*");
  EXPECT_NE(broken.find("more than the ring capacity ahead"), std::string::npos) << broken;
  std::cout << "the inmate's diagnostic: " << broken << "\n";

  // The other host goes on, and the inmate is still alive and well.
  const Exchange after = exchange(b.channel, 50, 300, b.session->max_record_payload());
  EXPECT_EQ(after.messages, 300U);
  EXPECT_FALSE(inmate.saw_line("inmate: (FATAL|exit)")) << "the inmate faulted or stopped";
}

// The page tables behind "writes nothing outside its own sections": an
// inmate that tries to write another peer's output section faults.
TEST_F(InmateEcho, AWriteIntoAnotherPeersSectionFaults) {
  const auto config = write_config(host_inmate_config());
  start_daemon(config);
  Host host = join("bare", "host");
  Process& inmate = boot_inmate("echo", "inmate", config, "inmate-echo", "write-other=1");
  const std::string target = expect_inmate(
      inmate, "echo: writing into peer 0's output section at 0x[0-9a-f]+", kInmateBootTimeout);
  const std::string fault = inmate.expect_line("inmate: FATAL: .*", kInmateStepTimeout);
  EXPECT_NE(fault.find("page-fault"), std::string::npos) << fault;
  EXPECT_NE(fault.find("(write, "), std::string::npos) << fault;
  std::smatch address;
  ASSERT_TRUE(std::regex_search(target, address, std::regex("0x[0-9a-f]+")));
  EXPECT_NE(fault.find("cr2=" + address.str()), std::string::npos) << target << "\n" << fault;
  EXPECT_EQ(inmate.wait_exit(kInmateStepTimeout), 2 * 0x7e + 1) << "QEMU's status: fatal()";
  EXPECT_FALSE(inmate.saw_line("the write went through"));
}

TEST_F(InmateEcho, AnInmateAGuestAndAHostOnOneLink) {
  require_guest_image();
  if (IsSkipped()) return;
  const auto config = write_config(link_config("mixed", {"host", "guest", "inmate"}, "128KiB"));
  start_daemon(config);
  Host host = join("mixed", "host", 2);
  Channel guest_ping = host.session->open(guest_test::kChannelName, 1);
  Channel& inmate_echo = host.channel;
  Process& inmate = boot_inmate("echo", "inmate", config, "inmate-echo");
  expect_inmate(inmate, "echo: ready: peer 2 of 3", kInmateBootTimeout);
  // The guest: the host's ping-pong follower, then an echo client of the inmate.
  boot("guest", config,
       "cellink.run=cellink-guest-channel cellink.arg=--rounds=40 cellink.arg=--follow=0 "
       "cellink.arg=--echo-with=2 cellink.arg=--timeout-ms=" +
           std::to_string(kGuestStepTimeout.count()));

  // host <-> inmate
  ASSERT_FALSE(inmate_echo.wait_connected(kInmateStepTimeout));
  const Exchange with_inmate = exchange(inmate_echo, 0, 300, host.session->max_record_payload());
  // host <-> guest: the guest checks the host's pings, the host the guest's pongs.
  expect_guest("CELLINK-GUEST: uio[0-9]+: ivshmem v1, link 'mixed', peer 1 of 3", kBootTimeout);
  ASSERT_FALSE(guest_ping.wait_connected(kGuestStepTimeout));
  HostSide guest_side(*host.device, guest_ping, host.session->max_record_payload());
  guest_side.lead(40);
  // guest <-> inmate
  const std::string echoed =
      expect_guest("echo with peer 2: 40 messages checked", kGuestStepTimeout);
  // The host leaves; the guest reports its result.
  const std::uint64_t inmate_messages = with_inmate.messages;
  guest_ping = Channel{};
  host.channel = Channel{};
  host.session.reset();
  const std::string result = expect_guest("CELLINK-GUEST-RESULT: ok", kGuestStepTimeout);
  std::cout << "three kinds of cell: host<->inmate " << inmate_messages << " echoes; host<->guest "
            << guest_side.sent << " sent, " << guest_side.received << " received; guest: " << echoed
            << "; " << result << "\n";
}

TEST_F(InmateEcho, TelemetryArrivesAtTheConfiguredRate) {
  const auto config = write_config(link_config("telemetry", {"host", "sensor"}, "64KiB"));
  start_daemon(config);
  auto device = HostDevice::connect({runtime_dir(), "telemetry", "host"});
  Session session(*device, SessionOptions{.spin_budget = std::chrono::nanoseconds{0}});
  Channel samples = session.open("telemetry");
  Process& inmate = boot_inmate("telemetry", "sensor", config, "inmate-telemetry", "rate=200");
  expect_inmate(inmate, "telemetry: ready: peer 1 of 2, channel 'telemetry', 200 Hz",
                kInmateBootTimeout);
  ASSERT_FALSE(samples.wait_connected(kInmateStepTimeout));
  std::uint64_t expected_sequence = 0;
  std::uint64_t first_time = 0;
  std::uint64_t last_time = 0;
  std::uint64_t dropped = 0;
  constexpr int kSamples = 400;
  for (int i = 0; i < kSamples; ++i) {
    const Message message = samples.receive(kInmateStepTimeout);
    ASSERT_TRUE(message) << "sample " << i << ": " << message.error().message();
    examples::TelemetrySample sample{};
    ASSERT_EQ(message.size(), sizeof(sample));
    std::memcpy(&sample, message.payload().data(), sizeof(sample));
    ASSERT_EQ(sample.magic, examples::kTelemetryMagic);
    ASSERT_EQ(sample.version, examples::kTelemetryVersion);
    ASSERT_EQ(sample.checksum,
              examples::telemetry_checksum(reinterpret_cast<const unsigned char*>(&sample),
                                           offsetof(examples::TelemetrySample, checksum)));
    ASSERT_EQ(sample.rate_hz, 200U);
    // Samples sent before we opened the channel were dropped and counted.
    if (i == 0) expected_sequence = sample.sequence;
    ASSERT_EQ(sample.sequence, expected_sequence) << "samples arrive in order, none lost";
    ++expected_sequence;
    if (i == 0) first_time = sample.time_ns;
    last_time = sample.time_ns;
    dropped = sample.dropped;
  }
  const double rate = (kSamples - 1) / (static_cast<double>(last_time - first_time) / 1e9);
  std::cout << "inmate-telemetry under TCG: " << kSamples << " samples at " << rate
            << " Hz by the inmate's clock (configured 200), " << dropped
            << " dropped before the channel connected\n";
  // The inmate's clock, not ours. Never faster than configured; a host too
  // busy to run QEMU's timer on time may make it slower, so the lower bound
  // is only a sanity check (half the rate), not a figure.
  EXPECT_LT(rate, 220.0);
  EXPECT_GT(rate, 100.0);
}

}  // namespace
}  // namespace cellink::integration
