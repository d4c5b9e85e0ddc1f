// VirtioIvshmemDriver, the front end of virtio over ivshmem, against a back
// end scripted from docs/virtio-over-ivshmem.md (ScriptedBackend below), and
// VirtqDriver's flag-based suppression (docs/virtq.md).
//
// Both peers live in this process on one FakeLink; a doorbell is delivered
// synchronously, so the scripted back end applies a register write inside
// the driver's doorbell() and every test runs deterministically in one
// thread.
#include "cellink/transports/virtio_ivshmem_driver.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/transports/virtio_ivshmem_format.hpp"
#include "cellink/transports/virtq_device.hpp"
#include "cellink/transports/virtq_driver.hpp"
#include "virtio_fake_link.hpp"

namespace cellink::transports {
namespace {

using test::FakeDevice;
using test::FakeLink;
using test::kBack;
using test::kFront;
using test::kRwSize;

constexpr std::uint64_t kStandardFeatures =
    feature_bit(virtio_feature::kVersion1) | feature_bit(virtio_feature::kAccessPlatform) |
    feature_bit(virtio_feature::kOrderPlatform) | feature_bit(virtio_console::kFeatureSize);

struct BackendSpec {
  std::uint64_t features = kStandardFeatures | feature_bit(virtio_feature::kRingEventIdx);
  std::uint16_t queue_count = virtio_console::kQueueCount;
  std::uint16_t queue_max = 64;
  std::uint16_t device_vector = 1;
  std::uint32_t revision = kVirtioIvshmemRevision;
  VirtioConsoleConfig config{80, 25, 1, 0};
};

// The back end of docs/virtio-over-ivshmem.md, as small as the tests need: a
// register file applied on vector 0, and a console that stores what the
// driver transmits and hands `to_driver` to its receive buffers.
class ScriptedBackend {
 public:
  using Queue = VirtqDevice<256, 4>;

  ScriptedBackend(FakeLink& link, BackendSpec spec = {})
      : link_(link), device_(link, kBack), spec_(spec) {
    link_.on_doorbell[kBack] = [this](std::uint32_t vector) {
      if (vector == 0 && auto_apply) apply();
    };
  }
  ~ScriptedBackend() { link_.on_doorbell[kBack] = nullptr; }

  VirtioIvshmemHeader& header() {
    return *reinterpret_cast<VirtioIvshmemHeader*>(link_.rw().data());
  }

  // Steps 1-2 of the handshake (the front end's state is 0 in these tests
  // when it is called).
  void start() {
    device_.set_state(virtio_peer_state::kReset);
    forget();
    std::memset(link_.rw().data(), 0, kVirtioIvshmemPoolOffset);
    VirtioIvshmemHeader& h = header();
    h.revision = spec_.revision;
    h.size = kVirtioIvshmemHeaderSize + sizeof(VirtioConsoleConfig);
    h.device_features = static_cast<std::uint32_t>(spec_.features);
    select_queue(0);
    std::memcpy(link_.rw().data() + kVirtioIvshmemConfigOffset, &spec_.config,
                sizeof(spec_.config));
    device_.set_state(virtio_peer_state::kReady);
  }
  void leave() {
    device_.set_state(virtio_peer_state::kReset);
    forget();
  }

  // One register write, if one is pending.
  void apply() {
    VirtioIvshmemHeader& h = header();
    const std::uint32_t offset =
        std::atomic_ref<std::uint32_t>(h.write_transaction).load(std::memory_order_acquire);
    if (offset == 0) return;
    ++transactions;
    front_ready_at_each_write.push_back(device_.peer_state(kFront) == virtio_peer_state::kReady);
    const std::uint32_t size = writable_field_size(offset);
    EXPECT_NE(size, 0U) << "malformed write_transaction " << offset;
    std::uint64_t value = 0;
    std::memcpy(&value, link_.rw().data() + offset, size);
    written.push_back({offset, value});
    switch (offset) {
      case offsetof(VirtioIvshmemHeader, device_features_sel):
        h.device_features = static_cast<std::uint32_t>(spec_.features >> (32 * (value & 1)));
        break;
      case offsetof(VirtioIvshmemHeader, driver_features_sel): driver_sel_ = value & 1; break;
      case offsetof(VirtioIvshmemHeader, driver_features):
        driver_features &= ~(std::uint64_t{0xffffffff} << (32 * driver_sel_));
        driver_features |= value << (32 * driver_sel_);
        break;
      case offsetof(VirtioIvshmemHeader, queue_sel):
        select_queue(static_cast<std::uint32_t>(value));
        break;
      case offsetof(VirtioIvshmemHeader, queue_size):
        setup_[selected_].size = static_cast<std::uint16_t>(value);
        break;
      case offsetof(VirtioIvshmemHeader, queue_driver_vector):
        setup_[selected_].driver_vector = static_cast<std::uint16_t>(value);
        break;
      case offsetof(VirtioIvshmemHeader, queue_desc): setup_[selected_].desc = value; break;
      case offsetof(VirtioIvshmemHeader, queue_driver): setup_[selected_].avail = value; break;
      case offsetof(VirtioIvshmemHeader, queue_device): setup_[selected_].used = value; break;
      case offsetof(VirtioIvshmemHeader, queue_enable): enable(selected_, value == 1); break;
      case offsetof(VirtioIvshmemHeader, device_status):
        write_status(static_cast<std::uint32_t>(value));
        break;
      default: break;
    }
    std::atomic_ref<std::uint32_t>(h.write_transaction).store(0, std::memory_order_release);
  }

  // Moves bytes: the transmit queue's chains into `from_driver`, `to_driver`
  // into the receive queue's chains. Rings the driver when a queue asks.
  void pump() {
    if ((status & virtio_status::kDriverOk) == 0) return;
    for (std::uint16_t q = 0; q < spec_.queue_count && q < 2; ++q) {
      if (!setup_[q].enabled) continue;
      Queue& queue = queues_[q];
      queue.disable_notify();
      if (busy_flag_held) continue;  // a test holds NO_NOTIFY and does not pop
      bool pushed = false;
      for (;;) {
        if (q == virtio_console::kReceiveQueue && to_driver.empty()) break;
        Queue::Chain chain;
        const VirtqError error = queue.pop(chain);
        if (error != VirtqError::ok) {
          EXPECT_EQ(error, VirtqError::empty) << describe(error);
          break;
        }
        std::uint32_t written_len = 0;
        if (q == virtio_console::kTransmitQueue) {
          for (std::size_t i = 0; i < chain.readable_count(); ++i) {
            const auto bytes = chain.readable(i);
            from_driver.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
          }
        } else {
          for (std::size_t i = 0; i < chain.writable_count() && !to_driver.empty(); ++i) {
            const auto bytes = chain.writable(i);
            const std::size_t n = std::min(bytes.size(), to_driver.size());
            std::memcpy(bytes.data(), to_driver.data(), n);
            to_driver.erase(0, n);
            written_len += static_cast<std::uint32_t>(n);
          }
        }
        EXPECT_EQ(queue.push(chain.head(), written_len), VirtqError::ok);
        pushed = true;
      }
      if (pushed && queue.publish()) raise_queue_event(q);
      (void)queue.arm_notify();
    }
  }

  void raise_queue_event(std::uint16_t q) {
    std::atomic_ref<std::uint8_t>(header().queue_event).store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    ++queue_events;
    (void)device_.doorbell(kFront, setup_[q].driver_vector);
  }

  // Rewrites the device config as the spec says: odd generation, bytes,
  // even generation, then config_event and vector 0.
  void begin_config_change() {
    std::atomic_ref<std::uint32_t>(header().config_generation).fetch_add(1);
  }
  void end_config_change(const VirtioConsoleConfig& config) {
    std::memcpy(link_.rw().data() + kVirtioIvshmemConfigOffset, &config, sizeof(config));
    std::atomic_ref<std::uint32_t>(header().config_generation).fetch_add(1);
    header().config_event = 1;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    (void)device_.doorbell(kFront, 0);
  }

  Queue& queue(std::uint16_t q) { return queues_[q]; }
  FakeDevice& device() { return device_; }

  bool auto_apply = true;
  bool busy_flag_held = false;
  bool refuse_features = false;
  std::uint16_t corrupt_queue_max = 0xffff;  // when not 0xffff, shown as the max of every queue
  std::uint32_t status = 0;
  std::uint64_t driver_features = 0;
  std::uint32_t transactions = 0;
  std::uint32_t queue_events = 0;
  std::vector<std::uint32_t> status_writes;
  std::vector<bool> front_ready_at_each_write;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> written;
  std::string from_driver;
  std::string to_driver;

 private:
  struct QueueSetup {
    std::uint16_t size = 0;
    std::uint16_t driver_vector = 0;
    std::uint64_t desc = 0;
    std::uint64_t avail = 0;
    std::uint64_t used = 0;
    bool enabled = false;
  };

  void forget() {
    for (auto& setup : setup_) setup = QueueSetup{};
    status = 0;
    driver_features = 0;
    driver_sel_ = 0;
    selected_ = 0;
  }

  void select_queue(std::uint32_t q) {
    VirtioIvshmemHeader& h = header();
    selected_ = q < setup_.size() ? q : 0;
    const bool exists = q < spec_.queue_count;
    h.queue_sel = q;
    const std::uint16_t maximum = corrupt_queue_max != 0xffff ? corrupt_queue_max : spec_.queue_max;
    h.queue_size = exists ? (setup_[selected_].enabled ? setup_[selected_].size : maximum) : 0;
    h.queue_device_vector = spec_.device_vector;
    h.queue_enable = setup_[selected_].enabled ? 1 : 0;
  }

  void enable(std::uint32_t q, bool on) {
    QueueSetup& setup = setup_[q];
    if (!on) {
      setup.enabled = false;
      return;
    }
    VirtqLayout layout;
    ASSERT_EQ(VirtqLayout::from_areas(setup.size, setup.desc, setup.avail, setup.used, layout),
              VirtqError::ok);
    const bool event_idx = (driver_features & feature_bit(virtio_feature::kRingEventIdx)) != 0;
    ASSERT_EQ(queues_[q].init(link_.rw(), layout,
                              VirtqDeviceOptions{event_idx, kVirtioIvshmemPoolOffset}),
              VirtqError::ok);
    setup.enabled = true;
  }

  void write_status(std::uint32_t value) {
    status_writes.push_back(value);
    if (value == 0) {
      forget();
    } else {
      status = value;
      if ((value & virtio_status::kFeaturesOk) != 0 && (value & virtio_status::kDriverOk) == 0) {
        const std::uint64_t required =
            feature_bit(virtio_feature::kVersion1) | feature_bit(virtio_feature::kAccessPlatform);
        if (refuse_features || (driver_features & ~spec_.features) != 0 ||
            (driver_features & required) != required) {
          status &= ~virtio_status::kFeaturesOk;
        }
      }
    }
    header().device_status = status;
  }

  FakeLink& link_;
  FakeDevice device_;
  BackendSpec spec_;
  std::uint32_t driver_sel_ = 0;
  std::uint32_t selected_ = 0;
  std::array<QueueSetup, 2> setup_{};
  std::array<Queue, 2> queues_{};
};

using Driver = VirtioIvshmemDriver<2, 64>;

VirtioDriverOptions console_options(bool event_idx) {
  VirtioDriverOptions options;
  options.queue_count = virtio_console::kQueueCount;
  options.queue_size = 16;
  options.device_features = feature_bit(virtio_console::kFeatureSize);
  options.event_idx = event_idx;
  options.wait.max_polls = 1000;
  return options;
}

// The driver side of a console as a test drives it: fixed receive buffers
// kept posted, fixed transmit buffers reused once collected.
class ConsoleFront {
 public:
  static constexpr std::uint32_t kBuffers = 8;
  static constexpr std::uint32_t kBufferSize = 128;

  explicit ConsoleFront(Driver& driver) : driver_(driver) {}

  void start() {
    for (std::uint32_t i = 0; i < kBuffers; ++i) {
      rx_[i] = driver_.allocate(kBufferSize);
      tx_[i] = driver_.allocate(kBufferSize);
      ASSERT_NE(rx_[i], 0U);
      ASSERT_NE(tx_[i], 0U);
      tx_free_.push_back(i);
      post_rx(i);
    }
    ASSERT_EQ(driver_.notify(virtio_console::kReceiveQueue), VirtioDriverStatus::ok);
  }

  // Sends as much of `bytes` as free transmit buffers allow; returns how much.
  std::size_t send(std::string_view bytes) {
    reap();
    std::size_t sent = 0;
    while (sent < bytes.size() && !tx_free_.empty()) {
      const std::uint32_t i = tx_free_.back();
      const std::size_t n = std::min<std::size_t>(kBufferSize, bytes.size() - sent);
      std::memcpy(driver_.buffer(tx_[i], n).data(), bytes.data() + sent, n);
      const VirtqBuffer buffer{tx_[i], static_cast<std::uint32_t>(n)};
      EXPECT_EQ(driver_.queue(virtio_console::kTransmitQueue).add({&buffer, 1}, {}, i),
                VirtqError::ok);
      tx_free_.pop_back();
      sent += n;
    }
    EXPECT_EQ(driver_.notify(virtio_console::kTransmitQueue), VirtioDriverStatus::ok);
    return sent;
  }

  // Collects both queues: received bytes into `received`, reposting buffers.
  void reap() {
    VirtqCompletion done;
    auto& tx = driver_.queue(virtio_console::kTransmitQueue);
    while (tx.collect(done) == VirtqError::ok) tx_free_.push_back(done.token);
    auto& rx = driver_.queue(virtio_console::kReceiveQueue);
    bool reposted = false;
    while (rx.collect(done) == VirtqError::ok) {
      const auto bytes = driver_.buffer(rx_[done.token], done.len);
      received.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      post_rx(done.token);
      reposted = true;
    }
    if (reposted) {
      EXPECT_EQ(driver_.notify(virtio_console::kReceiveQueue), VirtioDriverStatus::ok);
    }
  }

  std::string received;

 private:
  void post_rx(std::uint32_t i) {
    const VirtqBuffer buffer{rx_[i], kBufferSize};
    ASSERT_EQ(driver_.queue(virtio_console::kReceiveQueue).add({}, {&buffer, 1}, i),
              VirtqError::ok);
  }

  Driver& driver_;
  std::array<std::uint64_t, kBuffers> rx_{};
  std::array<std::uint64_t, kBuffers> tx_{};
  std::vector<std::uint32_t> tx_free_;
};

std::string pattern(std::size_t size, std::uint32_t seed) {
  std::mt19937 random(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(random());
  return bytes;
}

// ---- The handshake ----

TEST(VirtioIvshmemDriver, ProbeBeforeTheBackEndIsReadyChangesNothing) {
  FakeLink link;
  FakeDevice front(link, kFront);
  Driver driver(front);
  EXPECT_FALSE(driver.backend_ready());
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::backend_not_ready);
  EXPECT_EQ(front.state_writes, 0U);
  EXPECT_EQ(link.state[kFront], 0U);
  EXPECT_EQ(link.rings[kBack], 0U);
  EXPECT_FALSE(driver.running());
}

TEST(VirtioIvshmemDriver, ProbeRunsTheWholeHandshakeInTheSpecsOrder) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_TRUE(driver.backend_ready());
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok)
      << describe(driver.status()) << " " << driver.fault().field;

  EXPECT_EQ(link.state[kFront], virtio_peer_state::kReady);
  // Our state was READY at every register write, the first one included.
  ASSERT_FALSE(backend.front_ready_at_each_write.empty());
  for (const bool ready : backend.front_ready_at_each_write) EXPECT_TRUE(ready);
  // Every write went through write_transaction with one doorbell on vector
  // 0, and one more doorbell announced our state.
  EXPECT_EQ(backend.transactions, backend.written.size());
  EXPECT_EQ(std::count(link.vectors_rung_to[kBack].begin(), link.vectors_rung_to[kBack].end(), 0U),
            static_cast<long>(backend.transactions) + 1);
  EXPECT_EQ(backend.header().write_transaction, 0U);
  // Reset, ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK.
  const std::vector<std::uint32_t> expected_status{0, 1, 3, 11, 15};
  EXPECT_EQ(backend.status_writes, expected_status);
  EXPECT_EQ(backend.status, 15U);
  const std::uint64_t accepted = kStandardFeatures | feature_bit(virtio_feature::kRingEventIdx);
  EXPECT_EQ(backend.driver_features, accepted);
  EXPECT_EQ(driver.features(), accepted);
  EXPECT_TRUE(driver.event_idx());
  EXPECT_EQ(driver.queue_count(), 2);
  EXPECT_EQ(driver.config_size(), sizeof(VirtioConsoleConfig));
  // The queues lie in the pool, one after the other, and do not overlap.
  const VirtqLayout& rx = driver.queue(0).layout();
  const VirtqLayout& tx = driver.queue(1).layout();
  EXPECT_EQ(rx.queue_size, 16U);
  EXPECT_EQ(rx.desc, kVirtioIvshmemPoolOffset);
  EXPECT_GE(tx.desc, rx.end());
  EXPECT_LE(tx.end(), kRwSize);
  // The driver vector: 1 on a 2-vector link.
  EXPECT_TRUE(std::find(backend.written.begin(), backend.written.end(),
                        std::pair<std::uint32_t, std::uint64_t>{
                            offsetof(VirtioIvshmemHeader, queue_driver_vector), 1}) !=
              backend.written.end());
}

TEST(VirtioIvshmemDriver, WithoutEventIdxOfferedTheQueuesUseTheFlags) {
  FakeLink link;
  BackendSpec spec;
  spec.features = kStandardFeatures;  // a Jailhouse back end: no EVENT_IDX
  ScriptedBackend backend(link, spec);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  EXPECT_FALSE(driver.event_idx());
  EXPECT_FALSE(driver.queue(0).event_idx());
  EXPECT_FALSE(driver.queue(1).event_idx());
  EXPECT_EQ(backend.driver_features & feature_bit(virtio_feature::kRingEventIdx), 0U);
}

TEST(VirtioIvshmemDriver, ADriverThatDeclinesEventIdxDoesNotAcceptIt) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(false)), VirtioDriverStatus::ok);
  EXPECT_FALSE(driver.event_idx());
  EXPECT_EQ(backend.driver_features & feature_bit(virtio_feature::kRingEventIdx), 0U);
}

TEST(VirtioIvshmemDriver, RefusedFeaturesFailTheProbeAndWriteFailed) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.refuse_features = true;
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::features_refused);
  EXPECT_FALSE(driver.running());
  EXPECT_STREQ(driver.fault().field, "device_status");
  EXPECT_NE(backend.status & virtio_status::kFailed, 0U);
}

TEST(VirtioIvshmemDriver, ABackEndWithoutVersion1IsRefused) {
  FakeLink link;
  BackendSpec spec;
  spec.features = feature_bit(virtio_feature::kAccessPlatform);
  ScriptedBackend backend(link, spec);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::missing_feature);
  EXPECT_EQ(driver.fault().value, feature_bit(virtio_feature::kAccessPlatform));
}

TEST(VirtioIvshmemDriver, AWrongRevisionIsRefused) {
  FakeLink link;
  BackendSpec spec;
  spec.revision = 2;
  ScriptedBackend backend(link, spec);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::bad_revision);
  EXPECT_EQ(driver.fault().value, 2U);
}

TEST(VirtioIvshmemDriver, AQueueWithoutEntriesIsRefused) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.corrupt_queue_max = 0;
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::queue_unavailable);
}

TEST(VirtioIvshmemDriver, ADeviceVectorBeyondTheLinkIsRefused) {
  FakeLink link;
  BackendSpec spec;
  spec.device_vector = 7;
  ScriptedBackend backend(link, spec);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::bad_device_vector);
  EXPECT_EQ(driver.fault().value, 7U);
  EXPECT_EQ(driver.fault().expected_max, 1U);
}

TEST(VirtioIvshmemDriver, AQueueSizeIsThePowerOfTwoBelowEveryLimit) {
  FakeLink link;
  BackendSpec spec;
  spec.queue_max = 12;  // not a power of two: the driver takes 8
  ScriptedBackend backend(link, spec);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  EXPECT_EQ(driver.queue(0).queue_size(), 8U);
}

TEST(VirtioIvshmemDriver, ABackEndThatNeverAnswersTimesOutAfterTheBoundedPolls) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.auto_apply = false;
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  VirtioDriverOptions options = console_options(true);
  int calls = 0;
  options.wait.still_waiting = [](void* context) noexcept {
    ++*static_cast<int*>(context);
    return true;
  };
  options.wait.context = &calls;
  options.wait.max_polls = 50;
  EXPECT_EQ(driver.probe(options), VirtioDriverStatus::timeout);
  EXPECT_EQ(calls, 50);
  EXPECT_STREQ(driver.fault().field, "write_transaction");
}

TEST(VirtioIvshmemDriver, TheCallersDeadlineEndsAWait) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.auto_apply = false;
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  VirtioDriverOptions options = console_options(true);
  options.wait.max_polls = 1U << 30;
  options.wait.still_waiting = [](void*) noexcept { return false; };
  EXPECT_EQ(driver.probe(options), VirtioDriverStatus::timeout);
}

TEST(VirtioIvshmemDriver, ABackEndThatLeavesDuringAWaitEndsIt) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.auto_apply = false;
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  VirtioDriverOptions options = console_options(true);
  options.wait.max_polls = 1U << 30;
  options.wait.still_waiting = [](void* context) noexcept {
    static_cast<ScriptedBackend*>(context)->leave();
    return true;
  };
  options.wait.context = &backend;
  EXPECT_EQ(driver.probe(options), VirtioDriverStatus::backend_left);
  EXPECT_EQ(link.state[kFront], virtio_peer_state::kReset);
}

// ---- Moving bytes ----

class VirtioIvshmemConsole : public ::testing::TestWithParam<bool> {};

TEST_P(VirtioIvshmemConsole, BytesCrossBothWaysIntactInOrder) {
  const bool event_idx = GetParam();
  FakeLink link;
  BackendSpec spec;
  if (!event_idx) spec.features = kStandardFeatures;
  ScriptedBackend backend(link, spec);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  ASSERT_EQ(driver.event_idx(), event_idx);
  ConsoleFront console(driver);
  console.start();

  for (std::uint32_t seed = 1; seed <= 20; ++seed) {
    const std::string out = pattern(1 + seed * 997 % 5000, seed);
    const std::string in = pattern(1 + seed * 331 % 3000, seed + 100);
    backend.from_driver.clear();
    console.received.clear();
    backend.to_driver = in;
    std::size_t sent = 0;
    for (int round = 0; round < 10000 && (sent < out.size() || console.received.size() < in.size());
         ++round) {
      sent += console.send(std::string_view(out).substr(sent));
      backend.pump();
      const VirtioDriverEvents events = driver.handle_events();
      ASSERT_FALSE(events.reset) << describe(driver.status());
      console.reap();
    }
    EXPECT_EQ(backend.from_driver, out) << "seed " << seed;
    EXPECT_EQ(console.received, in) << "seed " << seed;
  }
  EXPECT_GT(backend.queue_events, 0U);
  EXPECT_EQ(driver.status(), VirtioDriverStatus::ok);
}

TEST_P(VirtioIvshmemConsole, NotifyRingsTheQueuesDeviceVectorOnlyWhenTheDeviceAsks) {
  const bool event_idx = GetParam();
  FakeLink link;
  BackendSpec spec;
  if (!event_idx) spec.features = kStandardFeatures;
  ScriptedBackend backend(link, spec);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  ConsoleFront console(driver);
  console.start();
  backend.pump();  // arms both queues

  // The device sleeps (armed): the first publication rings vector 1.
  std::uint64_t before = driver.doorbells_rung();
  console.send("a");
  EXPECT_EQ(driver.doorbells_rung(), before + 1);
  EXPECT_EQ(link.vectors_rung_to[kBack].back(), 1U);
  // The device is busy and has not re-armed: no doorbell (EVENT_IDX:
  // avail_event already passed; flags: NO_NOTIFY is set).
  backend.busy_flag_held = true;
  backend.pump();
  before = driver.doorbells_rung();
  console.send("b");
  console.send("c");
  EXPECT_EQ(driver.doorbells_rung(), before);
  // The device re-arms: the next publication rings again.
  backend.busy_flag_held = false;
  backend.pump();
  EXPECT_EQ(backend.from_driver, "abc");
  before = driver.doorbells_rung();
  console.send("d");
  EXPECT_EQ(driver.doorbells_rung(), before + 1);
}

INSTANTIATE_TEST_SUITE_P(EventIdxAndFlags, VirtioIvshmemConsole, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("EventIdx") : std::string("Flags");
                         });

// ---- Events, config and resets ----

TEST(VirtioIvshmemDriver, HandleEventsClearsTheEventBytes) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  backend.raise_queue_event(0);
  backend.header().config_event = 1;
  const VirtioDriverEvents events = driver.handle_events();
  EXPECT_TRUE(events.queues);
  EXPECT_TRUE(events.config);
  EXPECT_FALSE(events.reset);
  EXPECT_EQ(backend.header().queue_event, 0);
  EXPECT_EQ(backend.header().config_event, 0);
  const VirtioDriverEvents again = driver.handle_events();
  EXPECT_FALSE(again.queues);
  EXPECT_FALSE(again.config);
}

TEST(VirtioIvshmemDriver, TheConfigIsReadOnlyWhenItsGenerationIsStable) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  VirtioDriverOptions options = console_options(true);
  struct Script {
    ScriptedBackend* backend;
    int polls = 0;
  } script{&backend};
  // The back end finishes its rewrite while the driver waits.
  options.wait.still_waiting = [](void* context) noexcept {
    auto& s = *static_cast<Script*>(context);
    if (++s.polls == 3) s.backend->end_config_change({132, 43, 1, 0});
    return true;
  };
  options.wait.context = &script;
  ASSERT_EQ(driver.probe(options), VirtioDriverStatus::ok);

  VirtioConsoleConfig config{};
  ASSERT_EQ(driver.read_config(0, std::as_writable_bytes(std::span(&config, 1))),
            VirtioDriverStatus::ok);
  EXPECT_EQ(config.cols, 80);
  EXPECT_EQ(config.rows, 25);

  backend.begin_config_change();  // odd: mid-rewrite
  ASSERT_EQ(driver.read_config(0, std::as_writable_bytes(std::span(&config, 1))),
            VirtioDriverStatus::ok);
  EXPECT_EQ(script.polls, 3);
  EXPECT_EQ(config.cols, 132);
  EXPECT_EQ(config.rows, 43);
  EXPECT_TRUE(driver.handle_events().config);

  std::byte past[4];
  EXPECT_EQ(driver.read_config(10, past), VirtioDriverStatus::config_out_of_range);
}

TEST(VirtioIvshmemDriver, AConfigThatNeverSettlesIsAFault) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  backend.begin_config_change();
  std::byte bytes[4];
  EXPECT_EQ(driver.read_config(0, bytes), VirtioDriverStatus::config_unstable);
  EXPECT_FALSE(driver.running());
}

TEST(VirtioIvshmemDriver, DeviceNeedsResetInTheStatusStopsTheDriver) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  backend.header().device_status |= virtio_status::kDeviceNeedsReset;
  backend.header().config_event = 1;
  EXPECT_TRUE(driver.handle_events().reset);
  EXPECT_EQ(driver.status(), VirtioDriverStatus::device_needs_reset);
  // A new probe resets the device (device_status 0) and runs again.
  backend.header().device_status = 0;
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
}

TEST(VirtioIvshmemDriver, ABackEndResetIsNoticedAndAReprobeWorks) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  ConsoleFront console(driver);
  console.start();
  console.send("before");
  backend.pump();
  EXPECT_EQ(backend.from_driver, "before");

  backend.leave();
  const VirtioDriverEvents events = driver.handle_events();
  EXPECT_TRUE(events.reset);
  EXPECT_EQ(driver.status(), VirtioDriverStatus::backend_left);
  EXPECT_EQ(link.state[kFront], virtio_peer_state::kReset);  // step 4: our state drops
  EXPECT_EQ(driver.notify(1), VirtioDriverStatus::backend_left);
  EXPECT_EQ(driver.allocate(16), 0U);
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::backend_not_ready);

  backend.start();  // the back end saw our state at 0 and is READY again
  ASSERT_TRUE(driver.backend_ready());
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  ConsoleFront again(driver);
  again.start();
  backend.from_driver.clear();
  backend.to_driver = "hello";
  again.send("after");
  backend.pump();
  (void)driver.handle_events();
  again.reap();
  EXPECT_EQ(backend.from_driver, "after");
  EXPECT_EQ(again.received, "hello");
}

TEST(VirtioIvshmemDriver, AProbeAfterAnUnnoticedBackEndExitDropsOurState) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  backend.leave();  // nothing of ours runs before the next probe
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::backend_not_ready);
  EXPECT_EQ(link.state[kFront], virtio_peer_state::kReset);
  backend.start();
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
}

TEST(VirtioIvshmemDriver, AHostileUsedRingLatchesAQueueFault) {
  FakeLink link;
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  // used.idx of the transmit queue jumps although nothing was published.
  const VirtqLayout layout = driver.queue(1).layout();
  std::atomic_ref<std::uint16_t>(
      *reinterpret_cast<std::uint16_t*>(link.rw().data() + layout.used + 2))
      .store(5);
  VirtqCompletion done;
  EXPECT_EQ(driver.queue(1).collect(done), VirtqError::used_idx_jump);
  EXPECT_TRUE(driver.handle_events().reset);
  EXPECT_EQ(driver.status(), VirtioDriverStatus::queue_fault);
  EXPECT_EQ(driver.fault().where, 1U);
  EXPECT_STREQ(driver.fault().field, "used.idx");
}

TEST(VirtioIvshmemDriver, TheLinkMustHaveTwoPagesOfRwSection) {
  FakeLink link(4096);
  FakeDevice front(link, kFront);
  Driver driver(front);
  EXPECT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::section_too_small);
}

TEST(VirtioIvshmemDriver, TheAllocatorStaysInsideThePool) {
  FakeLink link(2 * 4096);
  ScriptedBackend backend(link);
  backend.start();
  FakeDevice front(link, kFront);
  Driver driver(front);
  ASSERT_EQ(driver.probe(console_options(true)), VirtioDriverStatus::ok);
  const std::uint64_t left = driver.pool_left();
  ASSERT_GT(left, 64U);
  const std::uint64_t a = driver.allocate(left - 128, 16);
  ASSERT_NE(a, 0U);
  EXPECT_EQ(a % 16, 0U);
  EXPECT_GE(a, driver.queue(1).layout().end());
  EXPECT_EQ(driver.allocate(256, 16), 0U);
  EXPECT_NE(driver.allocate(32, 16), 0U);
  EXPECT_TRUE(driver.buffer(0, 16).empty());  // the header page is not a buffer
  EXPECT_TRUE(driver.buffer(a, 1U << 20).empty());
}

// ---- VirtqDriver's flag-based suppression (docs/virtq.md) ----

class FlagSuppression : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(driver.init(link.rw(), 0, 8), VirtqError::ok);
    driver.set_event_idx(false);
    ASSERT_EQ(device.init(link.rw(), driver.layout(), VirtqDeviceOptions{false, 0}),
              VirtqError::ok);
  }
  std::uint16_t avail_flags() {
    return std::atomic_ref<std::uint16_t>(
               *reinterpret_cast<std::uint16_t*>(link.rw().data() + driver.layout().avail))
        .load();
  }
  std::uint16_t used_event() {
    return std::atomic_ref<std::uint16_t>(
               *reinterpret_cast<std::uint16_t*>(link.rw().data() +
                                                 driver.layout().used_event_offset()))
        .load();
  }
  FakeLink link;
  VirtqDriver<8> driver;
  VirtqDevice<8, 4> device;
  const VirtqBuffer buffer{4096, 16};
};

TEST_F(FlagSuppression, PublishHonoursNoNotify) {
  ASSERT_EQ(driver.add({&buffer, 1}, {}, 1), VirtqError::ok);
  EXPECT_TRUE(driver.publish());  // a fresh queue: used.flags 0
  device.disable_notify();        // busy: NO_NOTIFY
  ASSERT_EQ(driver.add({&buffer, 1}, {}, 2), VirtqError::ok);
  EXPECT_FALSE(driver.publish());
  EXPECT_FALSE(device.arm_notify());  // chains are waiting: not safe to sleep
  ASSERT_EQ(driver.add({&buffer, 1}, {}, 3), VirtqError::ok);
  EXPECT_TRUE(driver.publish());   // NO_NOTIFY cleared by arm_notify()
  EXPECT_FALSE(driver.publish());  // nothing new: no doorbell
}

TEST_F(FlagSuppression, DisarmSetsNoInterruptAndArmClearsIt) {
  EXPECT_EQ(avail_flags(), 0);  // a fresh queue wants interrupts
  EXPECT_TRUE(driver.disarm_interrupt());
  EXPECT_EQ(avail_flags(), kVirtqAvailFlagNoInterrupt);
  ASSERT_EQ(driver.add({}, {&buffer, 1}, 1), VirtqError::ok);
  (void)driver.publish();
  VirtqDevice<8, 4>::Chain chain;
  ASSERT_EQ(device.pop(chain), VirtqError::ok);
  ASSERT_EQ(device.push(chain.head(), 4), VirtqError::ok);
  EXPECT_EQ(avail_flags(), kVirtqAvailFlagNoInterrupt) << "before device.publish";
  EXPECT_FALSE(device.event_idx());
  EXPECT_FALSE(device.publish());        // NO_INTERRUPT: the device stays quiet
  EXPECT_FALSE(driver.arm_interrupt());  // a used entry waits: do not sleep
  EXPECT_EQ(avail_flags(), 0);
  VirtqCompletion done;
  ASSERT_EQ(driver.collect(done), VirtqError::ok);
  EXPECT_EQ(done.len, 4U);
  EXPECT_TRUE(driver.arm_interrupt());
  EXPECT_EQ(used_event(), 0);  // flag mode never writes used_event
}

TEST_F(FlagSuppression, EventIdxModeLeavesTheFlagsAlone) {
  driver.set_event_idx(true);
  EXPECT_TRUE(driver.disarm_interrupt());
  EXPECT_EQ(avail_flags(), 0);
  EXPECT_TRUE(driver.arm_interrupt());
  EXPECT_EQ(avail_flags(), 0);
}

TEST_F(FlagSuppression, ABrokenQueueNeitherArmsNorDisarms) {
  std::atomic_ref<std::uint16_t>(
      *reinterpret_cast<std::uint16_t*>(link.rw().data() + driver.layout().used + 2))
      .store(3);
  VirtqCompletion done;
  ASSERT_EQ(driver.collect(done), VirtqError::used_idx_jump);
  EXPECT_FALSE(driver.disarm_interrupt());
  EXPECT_FALSE(driver.arm_interrupt());
  EXPECT_EQ(avail_flags(), 0);
}

}  // namespace
}  // namespace cellink::transports
