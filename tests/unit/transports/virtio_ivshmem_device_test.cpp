// The virtio-over-ivshmem back end: VirtioIvshmemDevice, and VirtqDevice's
// flag-based suppression and pool bound. Spec: docs/virtio-over-ivshmem.md,
// docs/virtq.md.
//
// The front end here is scripted byte by byte from the spec (it does not use
// VirtqDriver or the driver half): it stores a field, then its offset in
// write_transaction, rings the back end's vector 0 and calls service(), and it
// builds descriptors and avail entries with plain stores at the documented
// offsets. The link is a 2-peer test double over one aligned buffer that
// counts every doorbell.
#include "cellink/transports/virtio_ivshmem_device.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "aligned_section.hpp"
#include "cellink/ivshmem/layout.hpp"
#include "cellink/transports/virtio_ivshmem_fault.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"
#include "cellink/transports/virtq.hpp"
#include "cellink/transports/virtq_device.hpp"

namespace cellink::transports {
namespace {

constexpr std::uint32_t kBack = 0;   // the back end's peer id
constexpr std::uint32_t kFront = 1;  // the scripted front end's
constexpr std::uint64_t kRw = 0x10000;

using Backend = VirtioIvshmemDevice<2, 256, 16>;
using Events = VirtioIvshmemEvents;

// Header offsets, from the spec's table (not from the struct).
constexpr std::uint32_t kRevision = 0x00;
constexpr std::uint32_t kSize = 0x04;
constexpr std::uint32_t kWriteTransaction = 0x08;
constexpr std::uint32_t kDeviceFeatures = 0x0c;
constexpr std::uint32_t kDeviceFeaturesSel = 0x10;
constexpr std::uint32_t kDriverFeatures = 0x14;
constexpr std::uint32_t kDriverFeaturesSel = 0x18;
constexpr std::uint32_t kQueueSel = 0x1c;
constexpr std::uint32_t kQueueSize = 0x20;
constexpr std::uint32_t kQueueDeviceVector = 0x22;
constexpr std::uint32_t kQueueDriverVector = 0x24;
constexpr std::uint32_t kQueueEnable = 0x26;
constexpr std::uint32_t kQueueDesc = 0x28;
constexpr std::uint32_t kQueueDriver = 0x30;
constexpr std::uint32_t kQueueDevice = 0x38;
constexpr std::uint32_t kConfigEvent = 0x40;
constexpr std::uint32_t kQueueEvent = 0x41;
constexpr std::uint32_t kDeviceStatus = 0x44;
constexpr std::uint32_t kConfigGeneration = 0x48;
constexpr std::uint32_t kConfig = 0x4c;

constexpr std::uint64_t kConsoleSize = std::uint64_t{1} << virtio_console::kFeatureSize;
constexpr std::uint64_t kVersion1 = feature_bit(virtio_feature::kVersion1);
constexpr std::uint64_t kAccessPlatform = feature_bit(virtio_feature::kAccessPlatform);
constexpr std::uint64_t kEventIdx = feature_bit(virtio_feature::kRingEventIdx);
constexpr std::uint64_t kOrderPlatform = feature_bit(virtio_feature::kOrderPlatform);

// A 2-peer ivshmem link in one process: one state table, one R/W section,
// and a count per (peer, vector) of every doorbell either side rang.
class TestLink final : public ivshmem::Device {
 public:
  explicit TestLink(std::uint32_t id, std::uint32_t peers = 2, std::uint32_t vectors = 2,
                    std::uint64_t rw_size = kRw)
      : id_(id), peers_(peers), vectors_(vectors), memory_(rw_size) {
    (void)ivshmem::Layout::compute({peers, rw_size, 0}, layout_);
  }

  std::uint32_t id() const noexcept override { return id_; }
  std::uint32_t peer_count() const noexcept override { return peers_; }
  std::uint32_t vector_count() const noexcept override { return vectors_; }
  bool peer_present(std::uint32_t peer) const noexcept override { return peer < peers_; }
  const ivshmem::Layout& layout() const noexcept override { return layout_; }
  std::span<std::byte> rw_section() noexcept override { return memory_.bytes(); }
  std::span<std::byte> own_output_section() noexcept override { return {}; }
  std::span<const std::byte> output_section(std::uint32_t) const noexcept override { return {}; }
  ivshmem::DoorbellStatus doorbell(std::uint32_t peer, std::uint32_t vector) noexcept override {
    if (peer >= peers_) return ivshmem::DoorbellStatus::no_such_peer;
    if (vector >= vectors_) return ivshmem::DoorbellStatus::no_such_vector;
    ++rings_[peer][vector];
    return ivshmem::DoorbellStatus::ok;
  }
  void set_state(std::uint32_t value) noexcept override {
    std::atomic_ref<std::uint32_t>(states_[id_]).store(value, std::memory_order_release);
    for (std::uint32_t peer = 0; peer < peers_; ++peer) {
      if (peer != id_) (void)doorbell(peer, 0);
    }
  }
  std::uint32_t peer_state(std::uint32_t peer) const noexcept override {
    return std::atomic_ref<std::uint32_t>(states_[peer]).load(std::memory_order_acquire);
  }

  // The other peer's side: its state entry, and doorbells it rings.
  void set_peer_state(std::uint32_t peer, std::uint32_t value) {
    std::atomic_ref<std::uint32_t>(states_[peer]).store(value, std::memory_order_release);
  }
  [[nodiscard]] unsigned rings(std::uint32_t peer, std::uint32_t vector) const {
    return rings_[peer][vector];
  }

 private:
  std::uint32_t id_;
  std::uint32_t peers_;
  std::uint32_t vectors_;
  ivshmem::Layout layout_;
  test_support::AlignedSection memory_;
  mutable std::array<std::uint32_t, 16> states_{};
  std::array<std::array<unsigned, 64>, 16> rings_{};
};

// One queue as the scripted front end sees it: raw stores at the offsets
// docs/virtq.md gives.
struct RawQueue {
  VirtqLayout layout;
  std::uint16_t avail_idx = 0;
  std::uint16_t used_seen = 0;
};

// The scripted front end. Normally each register write calls service()
// itself; a threaded one runs beside a back-end thread and only waits for
// write_transaction to read 0, as a real front end does.
class FrontEnd {
 public:
  FrontEnd(TestLink& link, Backend& back, bool threaded = false)
      : link_(link), back_(back), threaded_(threaded) {}

  template <typename T>
  void put(std::uint64_t offset, T value) {
    std::atomic_ref<T>(*reinterpret_cast<T*>(link_.rw_section().data() + offset))
        .store(value, std::memory_order_relaxed);
  }
  template <typename T>
  [[nodiscard]] T get(std::uint64_t offset) {
    return std::atomic_ref<T>(*reinterpret_cast<T*>(link_.rw_section().data() + offset))
        .load(std::memory_order_relaxed);
  }

  // Spec "A register write": the field, a write barrier, write_transaction,
  // a barrier, the doorbell on the back end's vector 0 (service()).
  template <typename T>
  Events write(std::uint32_t offset, T value) {
    if (threaded_) wait_for_no_write();
    EXPECT_EQ(get<std::uint32_t>(kWriteTransaction), 0U) << "a write is still pending";
    put(offset, value);
    std::atomic_thread_fence(std::memory_order_release);
    put(kWriteTransaction, offset);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    (void)link_.doorbell(kBack, 0);  // stands for the front end's doorbell
    if (threaded_) {
      wait_for_no_write();
      return {};
    }
    const Events events = back_.service();
    EXPECT_EQ(get<std::uint32_t>(kWriteTransaction), 0U) << "service() left the write pending";
    return events;
  }

  void set_state(std::uint32_t value) { link_.set_peer_state(kFront, value); }

  // Status, features and queues as a virtio front end does them.
  std::uint32_t status() { return get<std::uint32_t>(kDeviceStatus); }
  std::uint64_t device_features() {
    write<std::uint32_t>(kDeviceFeaturesSel, 0);
    const std::uint64_t low = get<std::uint32_t>(kDeviceFeatures);
    write<std::uint32_t>(kDeviceFeaturesSel, 1);
    return low | std::uint64_t{get<std::uint32_t>(kDeviceFeatures)} << 32;
  }
  void driver_features(std::uint64_t bits) {
    write<std::uint32_t>(kDriverFeaturesSel, 0);
    write<std::uint32_t>(kDriverFeatures, static_cast<std::uint32_t>(bits));
    write<std::uint32_t>(kDriverFeaturesSel, 1);
    write<std::uint32_t>(kDriverFeatures, static_cast<std::uint32_t>(bits >> 32));
  }
  // Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; true when accepted.
  bool negotiate(std::uint64_t accepted) {
    write<std::uint32_t>(kDeviceStatus, 0);
    write<std::uint32_t>(kDeviceStatus, virtio_status::kAcknowledge);
    write<std::uint32_t>(kDeviceStatus, virtio_status::kAcknowledge | virtio_status::kDriver);
    (void)device_features();
    driver_features(accepted);
    write<std::uint32_t>(kDeviceStatus, kNegotiating);
    return (status() & virtio_status::kFeaturesOk) != 0;
  }
  // Places queue `index` contiguously at `offset` and enables it.
  RawQueue setup_queue(std::uint16_t index, std::uint64_t offset, std::uint16_t size,
                       std::uint16_t vector) {
    RawQueue q;
    EXPECT_EQ(VirtqLayout::compute(offset, size, q.layout), VirtqError::ok);
    // The driver zeroes its own areas (docs/virtq.md).
    for (std::uint64_t at = q.layout.desc; at < q.layout.avail_end(); ++at) {
      put<std::uint8_t>(at, 0);
    }
    write<std::uint32_t>(kQueueSel, index);
    write<std::uint16_t>(kQueueSize, size);
    write<std::uint16_t>(kQueueDriverVector, vector);
    write<std::uint64_t>(kQueueDesc, q.layout.desc);
    write<std::uint64_t>(kQueueDriver, q.layout.avail);
    write<std::uint64_t>(kQueueDevice, q.layout.used);
    write<std::uint16_t>(kQueueEnable, 1);
    return q;
  }
  void driver_ok() { write<std::uint32_t>(kDeviceStatus, kNegotiating | virtio_status::kDriverOk); }

  // Descriptor `index`, and publishing a head.
  void desc(const RawQueue& q, std::uint16_t index, std::uint64_t addr, std::uint32_t len,
            std::uint16_t flags, std::uint16_t next = 0) {
    const std::uint64_t at = q.layout.desc + 16 * std::uint64_t{index};
    put(at, addr);
    put(at + 8, len);
    put(at + 12, flags);
    put(at + 14, next);
  }
  void publish(RawQueue& q, std::uint16_t head) {
    put<std::uint16_t>(q.layout.avail + 4 + 2 * std::uint64_t{q.avail_idx % q.layout.queue_size},
                       head);
    ++q.avail_idx;
    std::atomic_thread_fence(std::memory_order_release);
    put<std::uint16_t>(q.layout.avail + 2, q.avail_idx);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  void avail_flags(const RawQueue& q, std::uint16_t flags) { put(q.layout.avail, flags); }
  void used_event(const RawQueue& q, std::uint16_t event) {
    put(q.layout.used_event_offset(), event);
  }
  [[nodiscard]] std::uint16_t used_flags(const RawQueue& q) {
    return get<std::uint16_t>(q.layout.used);
  }
  [[nodiscard]] std::uint16_t avail_event(const RawQueue& q) {
    return get<std::uint16_t>(q.layout.avail_event_offset());
  }
  // The next used entry {id, len}, if any.
  bool collect(RawQueue& q, std::uint32_t& id, std::uint32_t& len) {
    const std::uint16_t used_idx = get<std::uint16_t>(q.layout.used + 2);
    if (used_idx == q.used_seen) return false;
    std::atomic_thread_fence(std::memory_order_acquire);
    const std::uint64_t at =
        q.layout.used + 4 + 8 * std::uint64_t{q.used_seen % q.layout.queue_size};
    id = get<std::uint32_t>(at);
    len = get<std::uint32_t>(at + 4);
    ++q.used_seen;
    return true;
  }

  void put_bytes(std::uint64_t offset, std::string_view text) {
    for (std::size_t i = 0; i < text.size(); ++i) put<std::uint8_t>(offset + i, text[i]);
  }
  std::string get_bytes(std::uint64_t offset, std::size_t length) {
    std::string text;
    for (std::size_t i = 0; i < length; ++i)
      text += static_cast<char>(get<std::uint8_t>(offset + i));
    return text;
  }

  static constexpr std::uint32_t kNegotiating =
      virtio_status::kAcknowledge | virtio_status::kDriver | virtio_status::kFeaturesOk;

 private:
  // The back end thread clears write_transaction; fails loudly after 10 s.
  void wait_for_no_write() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::atomic_ref<std::uint32_t>(
               *reinterpret_cast<std::uint32_t*>(link_.rw_section().data() + kWriteTransaction))
               .load(std::memory_order_acquire) != 0) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the back end never served";
      std::this_thread::yield();
    }
  }

  TestLink& link_;
  Backend& back_;
  bool threaded_;
};

constexpr VirtioConsoleConfig kConsoleConfig{80, 25, 1, 0};

VirtioIvshmemSpec console_spec() {
  VirtioIvshmemSpec spec;
  spec.device_id = virtio_device_id::kConsole;
  spec.device_features = kConsoleSize;
  spec.queue_count = virtio_console::kQueueCount;
  spec.max_queue_size = 256;
  spec.config = std::as_bytes(std::span{&kConsoleConfig, 1});
  return spec;
}

// A console back end on a fresh link, with the front end READY after the
// handshake.
class VirtioDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(back_.attach(link_, console_spec()), VirtioIvshmemError::ok);
    const Events events = back_.service();
    ASSERT_TRUE(events.has(Events::kReady));
    front_.set_state(virtio_peer_state::kReady);
  }

  // Negotiates `features`, places both queues in the pool and sets DRIVER_OK.
  void bring_up(std::uint64_t features) {
    ASSERT_TRUE(front_.negotiate(features));
    rx_ = front_.setup_queue(virtio_console::kReceiveQueue, 0x1000, 8, 1);
    tx_ = front_.setup_queue(virtio_console::kTransmitQueue, 0x2000, 8, 1);
    front_.driver_ok();
    ASSERT_TRUE(back_.running()) << fault_text();
  }

  std::string fault_text() {
    std::array<char, 256> text{};
    describe_fault(back_.fault(), text);
    return text.data();
  }

  // The back end latched `error` on `field`, says so in the header and rang
  // the front end's vector 0.
  void expect_broken(VirtioIvshmemError error, const char* field, unsigned rings_before) {
    EXPECT_TRUE(back_.broken());
    EXPECT_FALSE(back_.running());
    EXPECT_EQ(back_.fault().error, error) << fault_text();
    EXPECT_STREQ(back_.fault().field, field) << fault_text();
    EXPECT_NE(front_.status() & virtio_status::kDeviceNeedsReset, 0U);
    EXPECT_EQ(front_.get<std::uint8_t>(kConfigEvent), 1U);
    EXPECT_EQ(link_.rings(kFront, 0), rings_before + 1);
  }

  // device_status = 0 clears broken and every queue.
  void expect_reset_clears() {
    const Events events = front_.write<std::uint32_t>(kDeviceStatus, 0);
    EXPECT_TRUE(events.has(Events::kReset));
    EXPECT_FALSE(back_.broken());
    EXPECT_EQ(back_.fault().error, VirtioIvshmemError::ok);
    EXPECT_EQ(front_.status(), 0U);
    EXPECT_EQ(back_.queue(0), nullptr);
  }

  TestLink link_{kBack};
  Backend back_;
  FrontEnd front_{link_, back_};
  RawQueue rx_;
  RawQueue tx_;
};

// --- attach() --------------------------------------------------------------

TEST(VirtioDeviceAttach, RefusesALinkThatIsNotTwoPeers) {
  TestLink link(kBack, 3);
  Backend back;
  EXPECT_EQ(back.attach(link, console_spec()), VirtioIvshmemError::wrong_peer_count);
  EXPECT_EQ(back.phase(), Backend::Phase::detached);
  EXPECT_EQ(link.rings(1, 0), 0U) << "a refused attach() wrote its state";
}

TEST(VirtioDeviceAttach, RefusesAnRwSectionOfOnePage) {
  TestLink link(kBack, 2, 2, 0x1000);
  Backend back;
  EXPECT_EQ(back.attach(link, console_spec()), VirtioIvshmemError::rw_section_too_small);
}

TEST(VirtioDeviceAttach, RefusesALinkWithoutVectors) {
  TestLink link(kBack, 2, 0);
  Backend back;
  EXPECT_EQ(back.attach(link, console_spec()), VirtioIvshmemError::no_vectors);
}

TEST(VirtioDeviceAttach, RefusesBadSpecs) {
  TestLink link(kBack);
  Backend back;
  VirtioIvshmemSpec spec = console_spec();
  spec.device_id = 0;
  EXPECT_EQ(back.attach(link, spec), VirtioIvshmemError::bad_device_id);
  spec = console_spec();
  spec.queue_count = 3;  // MaxQueues is 2
  EXPECT_EQ(back.attach(link, spec), VirtioIvshmemError::bad_queue_count);
  spec.queue_count = 0;
  EXPECT_EQ(back.attach(link, spec), VirtioIvshmemError::bad_queue_count);
  spec = console_spec();
  spec.max_queue_size = 12;
  EXPECT_EQ(back.attach(link, spec), VirtioIvshmemError::bad_max_queue_size);
  spec.max_queue_size = 512;  // MaxQueueSize is 256
  EXPECT_EQ(back.attach(link, spec), VirtioIvshmemError::bad_max_queue_size);
  spec = console_spec();
  std::vector<std::byte> big(kVirtioIvshmemMaxConfigSize + 1);
  spec.config = big;
  EXPECT_EQ(back.attach(link, spec), VirtioIvshmemError::config_too_large);
  big.resize(kVirtioIvshmemMaxConfigSize);
  spec.config = big;
  EXPECT_EQ(back.attach(link, spec), VirtioIvshmemError::ok);
}

// --- the handshake ---------------------------------------------------------

TEST(VirtioDeviceHandshake, WaitsForAStaleFrontEndToResetBeforeWritingTheHeader) {
  TestLink link(kBack);
  Backend back;
  FrontEnd front(link, back);
  front.set_state(virtio_peer_state::kReady);  // left over from an earlier back end
  front.put<std::uint32_t>(kRevision, 0xdead);
  ASSERT_EQ(back.attach(link, console_spec()), VirtioIvshmemError::ok);
  EXPECT_EQ(link.peer_state(kBack), virtio_peer_state::kReset);
  EXPECT_EQ(link.rings(kFront, 0), 1U) << "our state 0 rings the front end";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(back.service().bits, 0U);
    EXPECT_EQ(back.phase(), Backend::Phase::waiting);
  }
  EXPECT_EQ(front.get<std::uint32_t>(kRevision), 0xdeadU) << "header written too early";
  EXPECT_EQ(link.peer_state(kBack), virtio_peer_state::kReset);

  front.set_state(virtio_peer_state::kReset);
  const Events events = back.service();
  EXPECT_TRUE(events.has(Events::kReady));
  EXPECT_EQ(back.phase(), Backend::Phase::ready);
  EXPECT_EQ(link.peer_state(kBack), virtio_peer_state::kReady);
  EXPECT_EQ(front.get<std::uint32_t>(kRevision), 1U);
}

TEST_F(VirtioDeviceTest, TheHeaderIsWrittenAsTheSpecSays) {
  EXPECT_EQ(front_.get<std::uint32_t>(kRevision), kVirtioIvshmemRevision);
  EXPECT_EQ(front_.get<std::uint32_t>(kSize), 0x4cU + sizeof(VirtioConsoleConfig));
  EXPECT_EQ(front_.get<std::uint32_t>(kWriteTransaction), 0U);
  EXPECT_EQ(front_.get<std::uint32_t>(kDeviceFeatures),
            static_cast<std::uint32_t>(kConsoleSize | kEventIdx));
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueSize), 256U);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueDeviceVector), 1U);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueEnable), 0U);
  EXPECT_EQ(front_.get<std::uint32_t>(kDeviceStatus), 0U);
  EXPECT_EQ(front_.get<std::uint32_t>(kConfigGeneration) % 2, 0U);
  EXPECT_EQ(front_.get<std::uint16_t>(kConfig), 80U);
  EXPECT_EQ(front_.get<std::uint16_t>(kConfig + 2), 25U);
  EXPECT_EQ(front_.get<std::uint32_t>(kConfig + 4), 1U);
  for (std::uint64_t at = kConfig + sizeof(VirtioConsoleConfig); at < 0x1000; ++at) {
    ASSERT_EQ(front_.get<std::uint8_t>(at), 0U) << "byte " << at << " of the header page";
  }
}

TEST(VirtioDeviceHandshake, ALinkWithOneVectorUsesVectorZeroForQueues) {
  TestLink link(kBack, 2, 1);
  Backend back;
  FrontEnd front(link, back);
  ASSERT_EQ(back.attach(link, console_spec()), VirtioIvshmemError::ok);
  (void)back.service();
  EXPECT_EQ(back.queue_vector(), 0U);
  EXPECT_EQ(front.get<std::uint16_t>(kQueueDeviceVector), 0U);
}

TEST_F(VirtioDeviceTest, WritesOfAFrontEndThatIsNotReadyStayPending) {
  front_.set_state(virtio_peer_state::kReset);
  front_.put<std::uint32_t>(kQueueSel, 1);
  front_.put<std::uint32_t>(kWriteTransaction, kQueueSel);
  EXPECT_EQ(back_.service().bits, 0U);
  EXPECT_EQ(front_.get<std::uint32_t>(kWriteTransaction), kQueueSel);
  EXPECT_TRUE(back_.write_pending());
  front_.set_state(virtio_peer_state::kReady);
  (void)back_.service();
  EXPECT_EQ(front_.get<std::uint32_t>(kWriteTransaction), 0U);
  EXPECT_FALSE(back_.write_pending());
}

TEST_F(VirtioDeviceTest, StopWritesStateZero) {
  back_.stop();
  EXPECT_EQ(link_.peer_state(kBack), virtio_peer_state::kReset);
  EXPECT_EQ(back_.phase(), Backend::Phase::detached);
  EXPECT_EQ(back_.service().bits, 0U);
}

// A front end in its own thread probes the whole device while the back end
// only loops on service(), as the console service does on its doorbells.
TEST(VirtioDeviceConcurrent, AFrontEndThreadProbesWhileTheBackEndServes) {
  TestLink link(kBack);
  Backend back;
  ASSERT_EQ(back.attach(link, console_spec()), VirtioIvshmemError::ok);
  std::atomic<bool> done{false};
  bool accepted = false;
  std::thread front_thread([&] {
    FrontEnd front(link, back, /*threaded=*/true);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (link.peer_state(kBack) != virtio_peer_state::kReady &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    front.set_state(virtio_peer_state::kReady);
    accepted = front.negotiate(kVersion1 | kAccessPlatform | kEventIdx | kConsoleSize);
    (void)front.setup_queue(0, 0x1000, 16, 1);
    (void)front.setup_queue(1, 0x2000, 16, 1);
    front.driver_ok();
    done.store(true, std::memory_order_release);
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  unsigned rounds = 0;
  while (!done.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < deadline) {
    (void)back.service();
    ++rounds;
  }
  front_thread.join();
  ASSERT_TRUE(done.load()) << "the probe did not finish in time";
  EXPECT_TRUE(accepted);
  EXPECT_TRUE(back.running()) << rounds << " service() calls";
  EXPECT_TRUE(back.event_idx());
  EXPECT_NE(back.queue(0), nullptr);
  EXPECT_NE(back.queue(1), nullptr);
  EXPECT_FALSE(back.broken());
}

// --- features --------------------------------------------------------------

TEST_F(VirtioDeviceTest, OffersTheTransportBitsAndTheDevicesOwn) {
  EXPECT_EQ(front_.device_features(),
            kConsoleSize | kVersion1 | kAccessPlatform | kOrderPlatform | kEventIdx);
}

TEST_F(VirtioDeviceTest, AcceptsASubsetWithVersion1AndAccessPlatform) {
  EXPECT_TRUE(front_.negotiate(kVersion1 | kAccessPlatform | kConsoleSize));
  EXPECT_EQ(back_.negotiated_features(), kVersion1 | kAccessPlatform | kConsoleSize);
  EXPECT_FALSE(back_.event_idx());
  EXPECT_TRUE(front_.negotiate(kVersion1 | kAccessPlatform | kEventIdx));
  EXPECT_TRUE(back_.event_idx());
}

TEST_F(VirtioDeviceTest, RefusesFeaturesWithoutVersion1) {
  EXPECT_FALSE(front_.negotiate(kAccessPlatform));
  EXPECT_EQ(back_.negotiated_features(), 0U);
  EXPECT_FALSE(back_.broken()) << "a refusal is not a fault";
}

TEST_F(VirtioDeviceTest, RefusesFeaturesWithoutAccessPlatform) {
  EXPECT_FALSE(front_.negotiate(kVersion1 | kEventIdx));
}

TEST_F(VirtioDeviceTest, RefusesFeaturesThatWereNotOffered) {
  const std::uint64_t multiport = std::uint64_t{1} << virtio_console::kFeatureMultiport;
  EXPECT_FALSE(front_.negotiate(kVersion1 | kAccessPlatform | multiport));
  EXPECT_FALSE(front_.negotiate(kVersion1 | kAccessPlatform | (std::uint64_t{1} << 60)));
}

TEST_F(VirtioDeviceTest, DriverOkWithoutFeaturesOkDoesNotRun) {
  front_.write<std::uint32_t>(kDeviceStatus, virtio_status::kAcknowledge | virtio_status::kDriver |
                                                 virtio_status::kDriverOk);
  EXPECT_FALSE(back_.running());
}

// --- queues and data -------------------------------------------------------

TEST_F(VirtioDeviceTest, QueueSelectShowsEachQueuesWindow) {
  ASSERT_TRUE(front_.negotiate(kVersion1 | kAccessPlatform));
  rx_ = front_.setup_queue(0, 0x1000, 8, 1);
  front_.write<std::uint32_t>(kQueueSel, 1);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueSize), 256U);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueEnable), 0U);
  EXPECT_EQ(front_.get<std::uint64_t>(kQueueDesc), 0U);
  front_.write<std::uint32_t>(kQueueSel, 0);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueSize), 8U);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueEnable), 1U);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueDriverVector), 1U);
  EXPECT_EQ(front_.get<std::uint64_t>(kQueueDesc), 0x1000U);
  EXPECT_EQ(front_.get<std::uint64_t>(kQueueDevice), rx_.layout.used);
}

TEST_F(VirtioDeviceTest, QueuesAreHandedOutOnlyWhileRunning) {
  ASSERT_TRUE(front_.negotiate(kVersion1 | kAccessPlatform));
  rx_ = front_.setup_queue(0, 0x1000, 8, 1);
  EXPECT_EQ(back_.queue(0), nullptr) << "before DRIVER_OK";
  const Events events =
      front_.write<std::uint32_t>(kDeviceStatus, FrontEnd::kNegotiating | virtio_status::kDriverOk);
  EXPECT_TRUE(events.has(Events::kDriverOk));
  EXPECT_TRUE(events.has(Events::kStatusChanged));
  EXPECT_NE(back_.queue(0), nullptr);
  EXPECT_EQ(back_.queue(1), nullptr) << "queue 1 was never enabled";
  EXPECT_EQ(back_.queue(2), nullptr);
}

class VirtioDeviceData : public VirtioDeviceTest, public ::testing::WithParamInterface<bool> {};

// tx: the front end sends "hello"; rx: the back end answers "world".
TEST_P(VirtioDeviceData, MovesBytesBothWaysOnAConsole) {
  const bool event_idx = GetParam();
  bring_up(kVersion1 | kAccessPlatform | kConsoleSize | (event_idx ? kEventIdx : 0));
  ASSERT_EQ(back_.event_idx(), event_idx);
  auto* tx = back_.queue(virtio_console::kTransmitQueue);
  auto* rx = back_.queue(virtio_console::kReceiveQueue);
  ASSERT_NE(tx, nullptr);
  ASSERT_NE(rx, nullptr);
  EXPECT_EQ(tx->event_idx(), event_idx);

  for (int round = 0; round < 20; ++round) {
    const std::string out = "hello " + std::to_string(round);
    front_.put_bytes(0x4000, out);
    front_.desc(tx_, 0, 0x4000, static_cast<std::uint32_t>(out.size()), 0);
    front_.publish(tx_, 0);
    front_.desc(rx_, 3, 0x5000, 64, kVirtqDescWrite);
    front_.publish(rx_, 3);

    Backend::Queue::Chain chain;
    ASSERT_EQ(tx->pop(chain), VirtqError::ok);
    ASSERT_EQ(chain.readable_count(), 1U);
    const std::span<const std::byte> bytes = chain.readable(0);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), out);
    ASSERT_EQ(tx->push(chain.head(), 0), VirtqError::ok);
    EXPECT_EQ(tx->pop(chain), VirtqError::empty);

    const std::string in = "world " + std::to_string(round);
    ASSERT_EQ(rx->pop(chain), VirtqError::ok);
    ASSERT_EQ(chain.head(), 3U);
    std::memcpy(chain.writable(0).data(), in.data(), in.size());
    ASSERT_EQ(rx->push(chain.head(), static_cast<std::uint32_t>(in.size())), VirtqError::ok);
    // With EVENT_IDX the front end re-arms used_event each round; without,
    // NO_INTERRUPT stays clear: either way every round interrupts.
    if (event_idx) {
      front_.used_event(tx_, tx_.used_seen);
      front_.used_event(rx_, rx_.used_seen);
    }
    const unsigned before = link_.rings(kFront, 1);
    EXPECT_TRUE(back_.notify(virtio_console::kTransmitQueue));
    EXPECT_TRUE(back_.notify(virtio_console::kReceiveQueue));
    EXPECT_EQ(link_.rings(kFront, 1), before + 2);
    EXPECT_EQ(front_.get<std::uint8_t>(kQueueEvent), 1U);
    front_.put<std::uint8_t>(kQueueEvent, 0);

    std::uint32_t id = 0;
    std::uint32_t len = 0;
    ASSERT_TRUE(front_.collect(tx_, id, len));
    EXPECT_EQ(id, 0U);
    ASSERT_TRUE(front_.collect(rx_, id, len));
    EXPECT_EQ(id, 3U);
    EXPECT_EQ(front_.get_bytes(0x5000, len), in);
  }
  EXPECT_FALSE(back_.broken()) << fault_text();
}

INSTANTIATE_TEST_SUITE_P(Suppression, VirtioDeviceData, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "EventIdx" : "Flags";
                         });

TEST_F(VirtioDeviceTest, EventIdxInterruptsOnlyWhenUsedEventIsPassed) {
  bring_up(kVersion1 | kAccessPlatform | kEventIdx);
  auto* rx = back_.queue(0);
  Backend::Queue::Chain chain;
  for (std::uint16_t i = 0; i < 3; ++i) {
    front_.desc(rx_, i, 0x5000 + 64 * std::uint64_t{i}, 64, kVirtqDescWrite);
    front_.publish(rx_, i);
  }
  const unsigned before = link_.rings(kFront, 1);
  ASSERT_EQ(rx->pop(chain), VirtqError::ok);
  ASSERT_EQ(rx->push(chain.head(), 1), VirtqError::ok);
  EXPECT_TRUE(back_.notify(0)) << "used_event 0: the first entry interrupts";
  ASSERT_EQ(rx->pop(chain), VirtqError::ok);
  ASSERT_EQ(rx->push(chain.head(), 1), VirtqError::ok);
  EXPECT_FALSE(back_.notify(0)) << "used_event still 0: the front end did not re-arm";
  front_.used_event(rx_, 2);
  ASSERT_EQ(rx->pop(chain), VirtqError::ok);
  ASSERT_EQ(rx->push(chain.head(), 1), VirtqError::ok);
  EXPECT_TRUE(back_.notify(0));
  EXPECT_FALSE(back_.notify(0)) << "nothing new";
  EXPECT_EQ(link_.rings(kFront, 1), before + 2);

  // The back end's side: arm() writes avail_event and re-checks avail.idx.
  EXPECT_TRUE(back_.arm(0));
  EXPECT_EQ(front_.avail_event(rx_), 3U);
  EXPECT_EQ(front_.used_flags(rx_), 0U) << "EVENT_IDX never touches used.flags";
  front_.desc(rx_, 3, 0x5200, 64, kVirtqDescWrite);
  front_.publish(rx_, 3);
  EXPECT_FALSE(back_.arm(0)) << "a buffer is waiting";
}

TEST_F(VirtioDeviceTest, FlagsInterruptUnlessTheFrontEndSetsNoInterrupt) {
  bring_up(kVersion1 | kAccessPlatform);
  auto* rx = back_.queue(0);
  Backend::Queue::Chain chain;
  for (std::uint16_t i = 0; i < 3; ++i) {
    front_.desc(rx_, i, 0x5000 + 64 * std::uint64_t{i}, 64, kVirtqDescWrite);
    front_.publish(rx_, i);
  }
  const unsigned before = link_.rings(kFront, 1);
  ASSERT_EQ(rx->pop(chain), VirtqError::ok);
  ASSERT_EQ(rx->push(chain.head(), 1), VirtqError::ok);
  EXPECT_TRUE(back_.notify(0));
  front_.avail_flags(rx_, kVirtqAvailFlagNoInterrupt);  // the front end polls
  ASSERT_EQ(rx->pop(chain), VirtqError::ok);
  ASSERT_EQ(rx->push(chain.head(), 1), VirtqError::ok);
  EXPECT_FALSE(back_.notify(0));
  front_.avail_flags(rx_, 0);
  ASSERT_EQ(rx->pop(chain), VirtqError::ok);
  ASSERT_EQ(rx->push(chain.head(), 1), VirtqError::ok);
  EXPECT_TRUE(back_.notify(0));
  EXPECT_FALSE(back_.notify(0)) << "nothing new";
  EXPECT_EQ(link_.rings(kFront, 1), before + 2);
}

TEST_F(VirtioDeviceTest, FlagsSetNoNotifyWhileBusyAndClearItBeforeSleeping) {
  bring_up(kVersion1 | kAccessPlatform);
  auto* tx = back_.queue(1);
  EXPECT_EQ(front_.used_flags(tx_), 0U) << "a fresh queue wants doorbells";
  tx->disable_notify();
  EXPECT_EQ(front_.used_flags(tx_), kVirtqUsedFlagNoNotify);
  front_.desc(tx_, 0, 0x4000, 4, 0);
  front_.publish(tx_, 0);
  EXPECT_FALSE(back_.arm(1)) << "a chain arrived while busy: do not sleep";
  EXPECT_EQ(front_.used_flags(tx_), 0U);
  Backend::Queue::Chain chain;
  ASSERT_EQ(tx->pop(chain), VirtqError::ok);
  EXPECT_TRUE(back_.arm(1));
  EXPECT_EQ(front_.used_flags(tx_), 0U);
  EXPECT_EQ(front_.avail_event(tx_), 0U) << "flags mode never writes avail_event";
}

TEST_F(VirtioDeviceTest, UpdateConfigBumpsTheGenerationAndRingsVectorZero) {
  const std::uint32_t generation = front_.get<std::uint32_t>(kConfigGeneration);
  const unsigned before = link_.rings(kFront, 0);
  const VirtioConsoleConfig resized{132, 43, 1, 0};
  ASSERT_EQ(back_.update_config(std::as_bytes(std::span{&resized, 1})), VirtioIvshmemError::ok);
  EXPECT_EQ(front_.get<std::uint32_t>(kConfigGeneration), generation + 2);
  EXPECT_EQ(front_.get<std::uint16_t>(kConfig), 132U);
  EXPECT_EQ(front_.get<std::uint16_t>(kConfig + 2), 43U);
  EXPECT_EQ(front_.get<std::uint8_t>(kConfigEvent), 1U);
  EXPECT_EQ(link_.rings(kFront, 0), before + 1);
  const std::byte short_config[4]{};
  EXPECT_EQ(back_.update_config(short_config), VirtioIvshmemError::config_size_mismatch);
}

TEST_F(VirtioDeviceTest, AFrontEndResetMidStreamForgetsTheQueuesAndHandshakesAgain) {
  bring_up(kVersion1 | kAccessPlatform | kEventIdx);
  front_.desc(tx_, 0, 0x4000, 4, 0);
  front_.publish(tx_, 0);
  Backend::Queue::Chain chain;
  ASSERT_EQ(back_.queue(1)->pop(chain), VirtqError::ok);  // held when the reset comes

  front_.set_state(virtio_peer_state::kReset);
  const Events events = back_.service();
  EXPECT_TRUE(events.has(Events::kReset));
  EXPECT_TRUE(events.has(Events::kReady)) << "the front end is at 0 already";
  EXPECT_FALSE(back_.running());
  EXPECT_EQ(back_.queue(1), nullptr);
  EXPECT_EQ(back_.device_status(), 0U);
  EXPECT_EQ(front_.status(), 0U);
  EXPECT_EQ(link_.peer_state(kBack), virtio_peer_state::kReady);

  // The next boot of the front end probes from scratch.
  front_.set_state(virtio_peer_state::kReady);
  bring_up(kVersion1 | kAccessPlatform);
  front_.desc(tx_, 0, 0x4000, 4, 0);
  front_.publish(tx_, 0);
  ASSERT_EQ(back_.queue(1)->pop(chain), VirtqError::ok);
  EXPECT_EQ(chain.head(), 0U);
}

TEST_F(VirtioDeviceTest, AFrontEndStuckAtAnotherStateIsWaitedFor) {
  bring_up(kVersion1 | kAccessPlatform);
  front_.set_state(7);  // neither READY nor RESET
  EXPECT_TRUE(back_.service().has(Events::kReset));
  EXPECT_EQ(link_.peer_state(kBack), virtio_peer_state::kReset);
  front_.set_state(virtio_peer_state::kReset);
  EXPECT_TRUE(back_.service().has(Events::kReady));
}

TEST_F(VirtioDeviceTest, StatusZeroResetsARunningDevice) {
  bring_up(kVersion1 | kAccessPlatform);
  const Events events = front_.write<std::uint32_t>(kDeviceStatus, 0);
  EXPECT_TRUE(events.has(Events::kReset));
  EXPECT_FALSE(back_.running());
  EXPECT_EQ(back_.queue(0), nullptr);
  front_.write<std::uint32_t>(kQueueSel, 0);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueEnable), 0U);
  EXPECT_EQ(front_.get<std::uint16_t>(kQueueSize), 256U);
}

// --- a hostile front end: every rule of the spec ---------------------------

struct MalformedWrite {
  const char* name;
  VirtioIvshmemError error;
  const char* field;
  std::uint32_t offset;  // VirtioIvshmemFault::offset expected
  std::uint64_t value;
  std::uint64_t min;
  std::uint64_t max;
  // Brings the device to where the write matters, then writes it.
  void (*write)(FrontEnd&);
};

void select_queue0(FrontEnd& f) {
  f.write<std::uint32_t>(kQueueSel, 0);
}
void place_queue0(FrontEnd& f, std::uint64_t desc, std::uint64_t avail, std::uint64_t used) {
  select_queue0(f);
  f.write<std::uint16_t>(kQueueSize, 8);
  f.write<std::uint64_t>(kQueueDesc, desc);
  f.write<std::uint64_t>(kQueueDriver, avail);
  f.write<std::uint64_t>(kQueueDevice, used);
  f.write<std::uint16_t>(kQueueEnable, 1);
}
void enable_queue0(FrontEnd& f) {
  place_queue0(f, 0x1000, 0x1080, 0x1100);
}

const MalformedWrite kMalformedWrites[] = {
    {"ReadOnlyOffset", VirtioIvshmemError::bad_write_offset, "write_transaction", 0x08,
     kDeviceFeatures, 0x10, 0x44, [](FrontEnd& f) { f.write<std::uint32_t>(kDeviceFeatures, 5); }},
    {"MisalignedOffset", VirtioIvshmemError::bad_write_offset, "write_transaction", 0x08, 0x2a,
     0x10, 0x44, [](FrontEnd& f) { f.write<std::uint16_t>(0x2a, 5); }},
    {"OffsetPastTheHeader", VirtioIvshmemError::bad_write_offset, "write_transaction", 0x08, 0x800,
     0x10, 0x44, [](FrontEnd& f) { f.write<std::uint32_t>(0x800, 5); }},
    {"DeviceFeaturesSel2", VirtioIvshmemError::select_out_of_range, "device_features_sel", 0x10, 2,
     0, 1, [](FrontEnd& f) { f.write<std::uint32_t>(kDeviceFeaturesSel, 2); }},
    {"DriverFeaturesSel2", VirtioIvshmemError::select_out_of_range, "driver_features_sel", 0x18, 2,
     0, 1, [](FrontEnd& f) { f.write<std::uint32_t>(kDriverFeaturesSel, 2); }},
    {"QueueSelPastTheCount", VirtioIvshmemError::select_out_of_range, "queue_sel", 0x1c, 2, 0, 1,
     [](FrontEnd& f) { f.write<std::uint32_t>(kQueueSel, 2); }},
    {"QueueSizeZero", VirtioIvshmemError::bad_queue_size, "queue_size", 0x20, 0, 1, 256,
     [](FrontEnd& f) { f.write<std::uint16_t>(kQueueSize, 0); }},
    {"QueueSizeNotAPowerOfTwo", VirtioIvshmemError::bad_queue_size, "queue_size", 0x20, 12, 1, 256,
     [](FrontEnd& f) { f.write<std::uint16_t>(kQueueSize, 12); }},
    {"QueueSizeAboveTheMaximum", VirtioIvshmemError::bad_queue_size, "queue_size", 0x20, 512, 1,
     256, [](FrontEnd& f) { f.write<std::uint16_t>(kQueueSize, 512); }},
    {"DriverVectorPastTheLink", VirtioIvshmemError::bad_vector, "queue_driver_vector", 0x24, 2, 0,
     1, [](FrontEnd& f) { f.write<std::uint16_t>(kQueueDriverVector, 2); }},
    {"QueueEnable2", VirtioIvshmemError::bad_queue_enable, "queue_enable", 0x26, 2, 0, 1,
     [](FrontEnd& f) { f.write<std::uint16_t>(kQueueEnable, 2); }},
    {"DescMisaligned", VirtioIvshmemError::bad_queue_areas, "queue_desc", 0x28, 0x1008, 0x1000,
     kRw - 128, [](FrontEnd& f) { place_queue0(f, 0x1008, 0x1100, 0x1200); }},
    {"AvailMisaligned", VirtioIvshmemError::bad_queue_areas, "queue_driver", 0x30, 0x1101, 0x1000,
     kRw - 22, [](FrontEnd& f) { place_queue0(f, 0x1000, 0x1101, 0x1200); }},
    {"UsedMisaligned", VirtioIvshmemError::bad_queue_areas, "queue_device", 0x38, 0x1202, 0x1000,
     kRw - 70, [](FrontEnd& f) { place_queue0(f, 0x1000, 0x1100, 0x1202); }},
    {"DescInTheHeaderPage", VirtioIvshmemError::bad_queue_areas, "queue_desc", 0x28, 0x800, 0x1000,
     kRw - 128, [](FrontEnd& f) { place_queue0(f, 0x800, 0x1100, 0x1200); }},
    {"UsedPastTheSection", VirtioIvshmemError::bad_queue_areas, "queue_device", 0x38, kRw - 16,
     0x1000, kRw - 70, [](FrontEnd& f) { place_queue0(f, 0x1000, 0x1100, kRw - 16); }},
    {"AvailFarOutside", VirtioIvshmemError::bad_queue_areas, "queue_driver", 0x30,
     0xfffffffffffffff0, 0x1000, kRw - 22,
     [](FrontEnd& f) { place_queue0(f, 0x1000, 0xfffffffffffffff0, 0x1200); }},
    {"AreasOverlap", VirtioIvshmemError::bad_queue_areas, "queue_device", 0x38, 0x1040, 0x1000,
     kRw - 70, [](FrontEnd& f) { place_queue0(f, 0x1000, 0x1100, 0x1040); }},
    {"QueueSizeWhileEnabled", VirtioIvshmemError::queue_changed_while_enabled, "queue_size", 0x20,
     4, 8, 8,
     [](FrontEnd& f) {
       enable_queue0(f);
       f.write<std::uint16_t>(kQueueSize, 4);
     }},
    {"QueueDescWhileEnabled", VirtioIvshmemError::queue_changed_while_enabled, "queue_desc", 0x28,
     0x3000, 0x1000, 0x1000,
     [](FrontEnd& f) {
       enable_queue0(f);
       f.write<std::uint64_t>(kQueueDesc, 0x3000);
     }},
    {"DriverVectorWhileEnabled", VirtioIvshmemError::queue_changed_while_enabled,
     "queue_driver_vector", 0x24, 1, 0, 0,
     [](FrontEnd& f) {
       enable_queue0(f);
       f.write<std::uint16_t>(kQueueDriverVector, 1);
     }},
};

class VirtioDeviceMalformed : public VirtioDeviceTest,
                              public ::testing::WithParamInterface<MalformedWrite> {};

TEST_P(VirtioDeviceMalformed, LatchesBrokenWithTheDiagnosticUntilStatusZero) {
  const MalformedWrite& rule = GetParam();
  ASSERT_TRUE(front_.negotiate(kVersion1 | kAccessPlatform));
  const unsigned rings = link_.rings(kFront, 0);
  rule.write(front_);
  expect_broken(rule.error, rule.field, rings);
  const VirtioIvshmemFault& fault = back_.fault();
  EXPECT_EQ(fault.offset, rule.offset);
  EXPECT_EQ(fault.value, rule.value);
  EXPECT_EQ(fault.expected_min, rule.min);
  EXPECT_EQ(fault.expected_max, rule.max);
  EXPECT_NE(fault_text().find(rule.field), std::string::npos) << fault_text();

  // While broken, every other write is consumed and ignored.
  const VirtioIvshmemFault latched = fault;
  front_.write<std::uint32_t>(kQueueSel, 1);
  front_.write<std::uint16_t>(kQueueSize, 3);
  front_.write<std::uint32_t>(kDeviceStatus, FrontEnd::kNegotiating | virtio_status::kDriverOk);
  EXPECT_TRUE(back_.broken());
  EXPECT_FALSE(back_.running());
  EXPECT_NE(front_.status() & virtio_status::kDeviceNeedsReset, 0U) << "status read back";
  EXPECT_EQ(back_.fault().error, latched.error);
  EXPECT_EQ(back_.fault().value, latched.value);
  EXPECT_EQ(link_.rings(kFront, 0), rings + 1) << "the fault rings once";

  expect_reset_clears();
  bring_up(kVersion1 | kAccessPlatform);
}

INSTANTIATE_TEST_SUITE_P(Rules, VirtioDeviceMalformed, ::testing::ValuesIn(kMalformedWrites),
                         [](const ::testing::TestParamInfo<MalformedWrite>& info) {
                           return std::string(info.param.name);
                         });

TEST_F(VirtioDeviceTest, AFrontEndResetAlsoClearsBroken) {
  ASSERT_TRUE(front_.negotiate(kVersion1 | kAccessPlatform));
  front_.write<std::uint32_t>(kQueueSel, 9);
  ASSERT_TRUE(back_.broken());
  front_.set_state(virtio_peer_state::kReset);
  const Events events = back_.service();
  EXPECT_TRUE(events.has(Events::kReset));
  EXPECT_FALSE(back_.broken());
  EXPECT_EQ(front_.status(), 0U);
  EXPECT_EQ(front_.get<std::uint8_t>(kConfigEvent), 0U) << "the new header starts clean";
}

TEST_F(VirtioDeviceTest, ARingFaultLatchesBrokenWithTheQueueAndField) {
  bring_up(kVersion1 | kAccessPlatform);
  front_.publish(tx_, 8);  // head 8 in a queue of 8
  Backend::Queue::Chain chain;
  EXPECT_EQ(back_.queue(1)->pop(chain), VirtqError::bad_head);
  const unsigned rings = link_.rings(kFront, 0);
  const Events events = back_.service();
  EXPECT_TRUE(events.has(Events::kBroken));
  expect_broken(VirtioIvshmemError::ring_fault, "avail.ring[]", rings);
  EXPECT_EQ(back_.fault().queue, 1U);
  EXPECT_EQ(back_.fault().ring_error, VirtqError::bad_head);
  EXPECT_EQ(back_.fault().value, 8U);
  EXPECT_EQ(back_.fault().expected_max, 7U);
  EXPECT_EQ(back_.queue(1), nullptr);
  expect_reset_clears();
}

TEST_F(VirtioDeviceTest, ABufferInTheHeaderPageIsARingFault) {
  bring_up(kVersion1 | kAccessPlatform);
  front_.desc(rx_, 0, 0x40, 16, kVirtqDescWrite);  // would overwrite the header
  front_.publish(rx_, 0);
  Backend::Queue::Chain chain;
  EXPECT_EQ(back_.queue(0)->pop(chain), VirtqError::buffer_out_of_section);
  EXPECT_TRUE(chain.empty());
  EXPECT_FALSE(back_.notify(0)) << "notify() latches it too";
  EXPECT_TRUE(back_.broken());
  EXPECT_STREQ(back_.fault().field, "desc[].addr");
  EXPECT_EQ(back_.fault().expected_min, kVirtioIvshmemPoolOffset);
  EXPECT_EQ(front_.get<std::uint32_t>(kRevision), 1U);
}

TEST_F(VirtioDeviceTest, TheFaultMessageIsOneLineWithEveryDetail) {
  ASSERT_TRUE(front_.negotiate(kVersion1 | kAccessPlatform));
  select_queue0(front_);
  front_.write<std::uint16_t>(kQueueSize, 12);
  EXPECT_EQ(fault_text(),
            "virtio front end fault: queue 0 queue_size (header 0x20) = 12 (0xc), allowed 1..256: "
            "front end chose a queue size that is 0, not a power of two or above the maximum; "
            "waiting for a device reset");
  std::array<char, 16> small{};
  EXPECT_EQ(back_.fault().describe(small), 15U) << "truncated, NUL-terminated";
  EXPECT_EQ(std::string(small.data()), "virtio front en");
}

// --- VirtqDevice on its own: the flags mode and the pool bound -------------

class VirtqDeviceOptionsTest : public ::testing::Test {
 protected:
  test_support::AlignedSection section_{0x4000};
  VirtqLayout layout_ = [] {
    VirtqLayout layout;
    (void)VirtqLayout::compute(0x1000, 8, layout);
    return layout;
  }();
  VirtqDevice<256, 16> device_;

  template <typename T>
  void put(std::uint64_t offset, T value) {
    std::memcpy(section_.bytes().data() + offset, &value, sizeof value);
  }
  template <typename T>
  T get(std::uint64_t offset) {
    T value;
    std::memcpy(&value, section_.bytes().data() + offset, sizeof value);
    return value;
  }
  void offer(std::uint16_t head, std::uint64_t addr, std::uint32_t len, std::uint16_t idx) {
    put(layout_.desc + 16 * std::uint64_t{head}, addr);
    put(layout_.desc + 16 * std::uint64_t{head} + 8, len);
    put(layout_.avail + 4 + 2 * std::uint64_t{static_cast<std::uint16_t>(idx - 1) % 8U}, head);
    put(layout_.avail + 2, idx);
  }
};

TEST_F(VirtqDeviceOptionsTest, PoolOffsetRefusesAreasBeforeIt) {
  EXPECT_EQ(device_.init(section_.bytes(), layout_, {true, 0x1001}),
            VirtqError::queue_out_of_section);
  EXPECT_EQ(device_.init(section_.bytes(), layout_, {true, 0x5000}),
            VirtqError::queue_out_of_section);
  EXPECT_EQ(device_.init(section_.bytes(), layout_, {true, 0x1000}), VirtqError::ok);
}

TEST_F(VirtqDeviceOptionsTest, PoolOffsetRefusesBuffersBeforeIt) {
  ASSERT_EQ(device_.init(section_.bytes(), layout_, {true, 0x1000}), VirtqError::ok);
  offer(0, 0xff0, 16, 1);
  VirtqDevice<256, 16>::Chain chain;
  EXPECT_EQ(device_.pop(chain), VirtqError::buffer_out_of_section);
  EXPECT_STREQ(device_.fault().field, "desc[].addr");
  EXPECT_EQ(device_.fault().expected_min, 0x1000U);
  EXPECT_EQ(device_.fault().expected_max, 0x4000U - 16);
}

TEST_F(VirtqDeviceOptionsTest, PoolOffsetBoundsTheLengthByThePool) {
  ASSERT_EQ(device_.init(section_.bytes(), layout_, {true, 0x1000}), VirtqError::ok);
  offer(0, 0x1000, 0x3001, 1);
  VirtqDevice<256, 16>::Chain chain;
  EXPECT_EQ(device_.pop(chain), VirtqError::buffer_out_of_section);
  EXPECT_STREQ(device_.fault().field, "desc[].len");
  EXPECT_EQ(device_.fault().expected_max, 0x3000U);
}

TEST_F(VirtqDeviceOptionsTest, PoolOffsetAcceptsTheWholePool) {
  ASSERT_EQ(device_.init(section_.bytes(), layout_, {true, 0x1000}), VirtqError::ok);
  offer(0, 0x1000, 0x3000, 1);
  VirtqDevice<256, 16>::Chain chain;
  EXPECT_EQ(device_.pop(chain), VirtqError::ok);
}

TEST_F(VirtqDeviceOptionsTest, FlagsModeHonoursNoInterrupt) {
  ASSERT_EQ(device_.init(section_.bytes(), layout_, {false, 0}), VirtqError::ok);
  EXPECT_FALSE(device_.event_idx());
  put<std::uint16_t>(layout_.used_event_offset(), 5);  // ignored in this mode
  VirtqDevice<256, 16>::Chain chain;
  offer(0, 0x3000, 8, 1);
  ASSERT_EQ(device_.pop(chain), VirtqError::ok);
  ASSERT_EQ(device_.push(0, 0), VirtqError::ok);
  put<std::uint16_t>(layout_.avail, kVirtqAvailFlagNoInterrupt);
  EXPECT_FALSE(device_.publish());
  offer(1, 0x3000, 8, 2);
  ASSERT_EQ(device_.pop(chain), VirtqError::ok);
  ASSERT_EQ(device_.push(1, 0), VirtqError::ok);
  put<std::uint16_t>(layout_.avail, 0);
  EXPECT_TRUE(device_.publish());
  EXPECT_FALSE(device_.publish()) << "nothing new to publish";
}

TEST_F(VirtqDeviceOptionsTest, FlagsModeNoNotifyAroundTheBusyPeriod) {
  ASSERT_EQ(device_.init(section_.bytes(), layout_, {false, 0}), VirtqError::ok);
  EXPECT_EQ(get<std::uint16_t>(layout_.used), 0U);
  device_.disable_notify();
  EXPECT_EQ(get<std::uint16_t>(layout_.used), kVirtqUsedFlagNoNotify);
  EXPECT_TRUE(device_.arm_notify());
  EXPECT_EQ(get<std::uint16_t>(layout_.used), 0U);
  EXPECT_EQ(get<std::uint16_t>(layout_.avail_event_offset()), 0U);
  offer(0, 0x3000, 8, 1);
  device_.disable_notify();
  EXPECT_FALSE(device_.arm_notify()) << "avail.idx moved: pop first";
  EXPECT_EQ(get<std::uint16_t>(layout_.used), 0U);
}

TEST_F(VirtqDeviceOptionsTest, EventIdxModeLeavesUsedFlagsAlone) {
  ASSERT_EQ(device_.init(section_.bytes(), layout_), VirtqError::ok);
  device_.disable_notify();
  EXPECT_EQ(get<std::uint16_t>(layout_.used), 0U);
  put<std::uint16_t>(layout_.avail, kVirtqAvailFlagNoInterrupt);  // ignored with EVENT_IDX
  VirtqDevice<256, 16>::Chain chain;
  offer(0, 0x3000, 8, 1);
  ASSERT_EQ(device_.pop(chain), VirtqError::ok);
  ASSERT_EQ(device_.push(0, 0), VirtqError::ok);
  EXPECT_TRUE(device_.publish()) << "used_event 0: the first entry notifies";
}

TEST_F(VirtqDeviceOptionsTest, AFaultedQueueWritesNoFlags) {
  ASSERT_EQ(device_.init(section_.bytes(), layout_, {false, 0}), VirtqError::ok);
  put<std::uint16_t>(layout_.avail + 2, 9);  // avail.idx jump
  VirtqDevice<256, 16>::Chain chain;
  EXPECT_EQ(device_.pop(chain), VirtqError::avail_idx_jump);
  device_.disable_notify();
  EXPECT_EQ(get<std::uint16_t>(layout_.used), 0U);
  EXPECT_FALSE(device_.arm_notify());
}

}  // namespace
}  // namespace cellink::transports
