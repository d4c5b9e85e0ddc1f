// The inmate's Endpoint (inmate-lib/src/endpoint.cpp), compiled for Linux and
// run in a thread against a hosted Session on an in-process link
// (LoopbackLink): the same channel core on both sides, so these tests check
// the inmate's loop (inbox, reassembly slots, fragmenting sends that wait,
// drains) before any QEMU boots. The QEMU tests (tests/qemu/inmate_*) run
// the same code as a real inmate.
#include "cellink/inmate-lib/endpoint.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/session.hpp"

namespace {

using namespace std::chrono_literals;
using cellink::inmate::Endpoint;
using cellink::inmate::EndpointEvent;
using cellink::inmate::EndpointHooks;
using cellink::inmate::Inbound;
using cellink::linux_uio::Channel;
using cellink::linux_uio::LoopbackDevice;
using cellink::linux_uio::LoopbackLink;
using cellink::linux_uio::Session;
using cellink::transports::ChannelStatus;

constexpr auto kStep = 10s;

std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

// The inmate's halt: sleeps on the device's interrupts, at most 100 ms (the
// inmate's periodic tick plays that part). Counts the waits that no
// doorbell ended: an Endpoint that forgot to ask for doorbells before
// sleeping would be woken by the tick alone, once per message.
struct Halt {
  LoopbackDevice* device = nullptr;
  std::atomic<std::uint64_t> ticks{0};
};

void wait_on_device(void* context) {
  auto& halt = *static_cast<Halt*>(context);
  if (halt.device->wait(100ms).empty()) ++halt.ticks;
}

// Message i: its index, then a byte pattern that depends on it.
std::vector<std::byte> numbered(std::uint32_t index, std::size_t size) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i)
    bytes[i] = static_cast<std::byte>((index * 131 + i) & 0xff);
  if (size >= 4) std::memcpy(bytes.data(), &index, 4);
  return bytes;
}

// An echo inmate in a thread: echoes every message on "echo" toward every
// other peer, as examples/inmate-echo does, until stopped.
class EchoInmate {
 public:
  EchoInmate(LoopbackDevice& device, std::vector<std::uint32_t> peers)
      : device_(device), peers_(std::move(peers)) {
    thread_ = std::thread([this] { run(); });
  }
  ~EchoInmate() { stop(); }
  void stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<EndpointEvent> events() {
    const std::lock_guard lock(events_mutex_);
    return events_;
  }
  std::uint64_t echoed() const { return echoed_.load(); }
  // Halts that only the tick ended.
  std::uint64_t ticks() const { return halt_.ticks.load(); }
  const Endpoint& endpoint() const { return *endpoint_; }

 private:
  void run() {
    halt_.device = &device_;
    EndpointHooks hooks{steady_ns, wait_on_device, &halt_};
    ASSERT_EQ(endpoint_->start(device_, hooks), cellink::transports::LinkInitStatus::ok);
    std::uint16_t ids[cellink::inmate::kEndpointMaxPeers] = {};
    for (const std::uint32_t peer : peers_) {
      ids[peer] = endpoint_->open(peer, "echo");
      ASSERT_NE(ids[peer], 0);
    }
    while (!stopping_) {
      endpoint_->service();
      Inbound message;
      while (endpoint_->receive(message)) {
        if (message.channel == ids[message.peer]) {
          const ChannelStatus sent = endpoint_->reply(message, message.data, 5'000'000'000);
          if (sent == ChannelStatus::ok) ++echoed_;
        }
        endpoint_->release(message);
      }
      EndpointEvent event;
      while (endpoint_->next_event(event)) {
        const std::lock_guard lock(events_mutex_);
        events_.push_back(event);
      }
      if (endpoint_->prepare_to_sleep()) wait_on_device(&halt_);
    }
    endpoint_->leave();
  }

  LoopbackDevice& device_;
  Halt halt_;
  std::vector<std::uint32_t> peers_;
  std::unique_ptr<Endpoint> endpoint_ = std::make_unique<Endpoint>();
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> echoed_{0};
  std::mutex events_mutex_;
  std::vector<EndpointEvent> events_;
  std::thread thread_;
};

// Sends `count` messages of the given sizes on `channel` from a thread and
// checks every echo, in order and intact.
void exchange(Channel& channel, std::uint32_t first, std::uint32_t count,
              const std::vector<std::size_t>& sizes) {
  std::thread sender([&] {
    for (std::uint32_t i = first; i < first + count; ++i) {
      ASSERT_FALSE(channel.send(numbered(i, sizes[i % sizes.size()]), kStep)) << "message " << i;
    }
  });
  for (std::uint32_t i = first; i < first + count; ++i) {
    auto message = channel.receive(kStep);
    ASSERT_FALSE(message.error()) << "echo " << i << ": " << message.error().message();
    const std::vector<std::byte> expected = numbered(i, sizes[i % sizes.size()]);
    ASSERT_EQ(message.size(), expected.size()) << "echo " << i;
    ASSERT_EQ(std::memcmp(message.payload().data(), expected.data(), expected.size()), 0)
        << "echo " << i;
  }
  sender.join();
}

TEST(EndpointTest, EchoesWholeAndFragmentedMessagesToASession) {
  LoopbackLink link{2};  // 64 KiB output sections: records up to about 16 KiB
  Session host(link.device(0));
  EchoInmate inmate(link.device(1), {0});
  Channel echo = host.open("echo");
  ASSERT_FALSE(echo.wait_connected(kStep));
  // 1, 64 and 4000 bytes fit a record; 20 000 and 32 768 need fragments.
  exchange(echo, 0, 2000, {1, 64, 4000, 20000, 32768});
  // The echo counts once its send returned, which may be after we got it.
  const auto deadline = std::chrono::steady_clock::now() + kStep;
  while (inmate.echoed() < 2000 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(inmate.echoed(), 2000U);
  EXPECT_EQ(inmate.endpoint().core().stats().protocol_faults, 0U);
  // Doorbells woke the inmate, not the tick: it asked for them before each
  // halt (Endpoint::prepare_to_sleep()).
  EXPECT_LT(inmate.ticks(), 10U);
}

TEST(EndpointTest, AMessageAboveTheInmatesMaximumIsRefusedAtTheSender) {
  LoopbackLink link{2};
  Session host(link.device(0));
  EchoInmate inmate(link.device(1), {0});
  Channel echo = host.open("echo");
  ASSERT_FALSE(echo.wait_connected(kStep));
  const std::error_code error =
      echo.send(numbered(1, cellink::inmate::kMaxInboundMessage + 1), kStep);
  EXPECT_EQ(error, cellink::linux_uio::MessageErrc::message_too_large) << error.message();
  exchange(echo, 0, 10, {100});  // and the channel goes on
}

TEST(EndpointTest, TheInmateWaitsOutAHostRestartAndEchoesAgain) {
  LoopbackLink link{2};
  EchoInmate inmate(link.device(1), {0});
  for (int run = 0; run < 3; ++run) {
    SCOPED_TRACE("host run " + std::to_string(run));
    auto host = std::make_unique<Session>(link.device(0));
    Channel echo = host->open("echo");
    ASSERT_FALSE(echo.wait_connected(kStep)) << "run " << run;
    exchange(echo, 0, 200, {16, 20000});
    echo = Channel{};
    host.reset();
    // The daemon's part when a process dies: it leaves, and its state reads 0.
    link.detach(0);
    link.attach(0);
  }
  int resets = 0;
  int ups = 0;
  for (const EndpointEvent& event : inmate.events()) {
    resets += event.kind == EndpointEvent::Kind::peer_reset ? 1 : 0;
    ups += event.kind == EndpointEvent::Kind::peer_up ? 1 : 0;
  }
  EXPECT_GE(resets, 2);
  EXPECT_GE(ups, 3);
}

}  // namespace
