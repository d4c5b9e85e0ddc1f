// The virtio 1.2 split virtqueue: VirtqLayout, VirtqDriver and VirtqDevice.
// Spec: docs/virtq.md.
#include "cellink/transports/virtq.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/transports/virtq_device.hpp"
#include "cellink/transports/virtq_driver.hpp"

namespace cellink::transports {
namespace {

using Driver = VirtqDriver<256>;
using Device = VirtqDevice<256, 16>;
using Chain = Device::Chain;

constexpr std::uint32_t kQueueSizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

// A zeroed R/W section, 16-byte aligned like a real mapping.
class SharedSection {
 public:
  explicit SharedSection(std::size_t size) : blocks_((size + 15) / 16), size_(size) {}
  [[nodiscard]] std::span<std::byte> bytes() {
    return {reinterpret_cast<std::byte*>(blocks_.data()), size_};
  }

 private:
  struct alignas(16) Block {
    std::byte bytes[16];
  };
  std::vector<Block> blocks_;
  std::size_t size_;
};

[[nodiscard]] std::uint64_t align16(std::uint64_t value) {
  return (value + 15) / 16 * 16;
}

// Pokes and peeks shared fields by byte offset, the way docs/virtq.md gives
// them: a hostile peer, or a check of the documented layout.
class RawQueue {
 public:
  RawQueue(std::span<std::byte> section, const VirtqLayout& layout)
      : section_(section), layout_(layout) {}

  template <typename T>
  void put(std::uint64_t offset, T value) {
    std::memcpy(section_.data() + offset, &value, sizeof(T));
  }
  template <typename T>
  [[nodiscard]] T get(std::uint64_t offset) const {
    T value;
    std::memcpy(&value, section_.data() + offset, sizeof(T));
    return value;
  }

  void desc(std::uint32_t index, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
            std::uint16_t next) {
    const std::uint64_t at = layout_.desc + 16 * std::uint64_t{index};
    put(at, addr);
    put(at + 8, len);
    put(at + 12, flags);
    put(at + 14, next);
  }
  void avail_slot(std::uint32_t slot, std::uint16_t head) {
    put(layout_.avail + 4 + 2 * std::uint64_t{slot}, head);
  }
  void avail_idx(std::uint16_t idx) { put(layout_.avail + 2, idx); }
  void used_elem(std::uint32_t slot, std::uint32_t id, std::uint32_t len) {
    put(layout_.used + 4 + 8 * std::uint64_t{slot}, id);
    put(layout_.used + 8 + 8 * std::uint64_t{slot}, len);
  }
  void used_idx(std::uint16_t idx) { put(layout_.used + 2, idx); }
  [[nodiscard]] std::uint16_t used_idx() const { return get<std::uint16_t>(layout_.used + 2); }

 private:
  std::span<std::byte> section_;
  VirtqLayout layout_;
};

// Lifetime-tracking payload: one per chain the driver offered. It must be
// retired exactly once, by the completion that carries its token.
struct Tracked {
  static inline int live = 0;
  Tracked() { ++live; }
  ~Tracked() { --live; }
  Tracked(const Tracked&) = delete;
  Tracked& operator=(const Tracked&) = delete;

  std::vector<VirtqBuffer> out;
  std::vector<VirtqBuffer> in;
  std::vector<std::byte> out_bytes;  // what the driver wrote, concatenated
  std::vector<std::byte> in_bytes;   // what the device wrote, concatenated
  std::uint64_t writable = 0;
  std::uint32_t written = 0;
};

class Tokens {
 public:
  Tracked& issue(std::uint32_t& token) {
    token = next_++;
    return *(live_[token] = std::make_unique<Tracked>());
  }
  [[nodiscard]] Tracked* find(std::uint32_t token) {
    const auto it = live_.find(token);
    return it == live_.end() ? nullptr : it->second.get();
  }
  [[nodiscard]] std::unique_ptr<Tracked> retire(std::uint32_t token) {
    const auto it = live_.find(token);
    if (it == live_.end()) return nullptr;
    std::unique_ptr<Tracked> tracked = std::move(it->second);
    live_.erase(it);
    return tracked;
  }
  [[nodiscard]] std::size_t size() const { return live_.size(); }

 private:
  std::uint32_t next_ = 1;
  std::unordered_map<std::uint32_t, std::unique_ptr<Tracked>> live_;
};

// Hands out buffers from [begin, end) of the section, bump-style.
class Arena {
 public:
  Arena(std::uint64_t begin, std::uint64_t end) : next_(begin), end_(end) {}
  [[nodiscard]] bool take(std::uint32_t len, VirtqBuffer& out) {
    if (end_ - next_ < len) return false;
    out = VirtqBuffer{next_, len};
    next_ = align16(next_ + len);
    if (next_ > end_) next_ = end_;
    return true;
  }

 private:
  std::uint64_t next_;
  std::uint64_t end_;
};

[[nodiscard]] bool inside(std::span<std::byte> section, std::span<const std::byte> span) {
  return span.data() >= section.data() && span.size() <= section.size() &&
         span.data() - section.data() <= static_cast<std::ptrdiff_t>(section.size() - span.size());
}

// ----------------------------------------------------------------------------
// Geometry

TEST(VirtqLayout, PlacesTheThreeAreasBackToBackWithVirtioAlignment) {
  for (std::uint32_t n = 1; n <= kVirtqMaxQueueSize; n *= 2) {
    for (const std::uint64_t offset :
         {std::uint64_t{0}, std::uint64_t{16}, std::uint64_t{0x3000}}) {
      VirtqLayout layout;
      ASSERT_EQ(VirtqLayout::compute(offset, n, layout), VirtqError::ok) << n;
      EXPECT_EQ(layout.desc, offset);
      EXPECT_EQ(layout.avail, offset + 16 * std::uint64_t{n});
      EXPECT_EQ(layout.used, (layout.avail + 6 + 2 * std::uint64_t{n} + 3) / 4 * 4);
      EXPECT_EQ(layout.end(), layout.used + 6 + 8 * std::uint64_t{n});
      EXPECT_EQ(layout.used_event_offset(), layout.avail + 4 + 2 * std::uint64_t{n});
      EXPECT_EQ(layout.avail_event_offset(), layout.used + 4 + 8 * std::uint64_t{n});
      EXPECT_EQ(layout.desc % 16, 0U);
      EXPECT_EQ(layout.avail % 2, 0U);
      EXPECT_EQ(layout.used % 4, 0U);
    }
  }
}

// The "Worked examples" table of docs/virtq.md.
TEST(VirtqLayout, WorkedExamplesMatchTheSpec) {
  struct Row {
    std::uint64_t offset;
    std::uint32_t n;
    std::uint64_t desc, avail, used_event, used, avail_event, end;
  };
  constexpr Row kRows[] = {
      {0, 1, 0x0, 0x10, 0x16, 0x18, 0x24, 0x26},
      {0x100, 8, 0x100, 0x180, 0x194, 0x198, 0x1dc, 0x1de},
      {0, 256, 0x0, 0x1000, 0x1204, 0x1208, 0x1a0c, 0x1a0e},
      {0x1000, 32768, 0x1000, 0x81000, 0x91004, 0x91008, 0xd100c, 0xd100e},
  };
  for (const Row& row : kRows) {
    VirtqLayout layout;
    ASSERT_EQ(VirtqLayout::compute(row.offset, row.n, layout), VirtqError::ok);
    EXPECT_EQ(layout.desc, row.desc) << row.n;
    EXPECT_EQ(layout.avail, row.avail) << row.n;
    EXPECT_EQ(layout.used_event_offset(), row.used_event) << row.n;
    EXPECT_EQ(layout.used, row.used) << row.n;
    EXPECT_EQ(layout.avail_event_offset(), row.avail_event) << row.n;
    EXPECT_EQ(layout.end(), row.end) << row.n;
  }
}

TEST(VirtqLayout, RejectsQueueSizesThatAreNotPowersOfTwoUpTo32768) {
  for (const std::uint32_t n : {0U, 3U, 6U, 100U, 32769U, 65536U, 65535U, 0xffffffffU}) {
    VirtqLayout layout{7, 1, 2, 3};
    EXPECT_EQ(VirtqLayout::compute(0, n, layout), VirtqError::bad_queue_size) << n;
    EXPECT_EQ(layout, (VirtqLayout{7, 1, 2, 3})) << "untouched on failure";
  }
}

TEST(VirtqLayout, RejectsAMisalignedQueueOffset) {
  VirtqLayout layout;
  for (std::uint64_t offset = 1; offset < 16; ++offset) {
    EXPECT_EQ(VirtqLayout::compute(offset, 8, layout), VirtqError::misaligned_area) << offset;
  }
}

TEST(VirtqLayout, RejectsOffsetsWhoseEndOverflows) {
  VirtqLayout layout;
  const std::uint64_t top = std::numeric_limits<std::uint64_t>::max() / 16 * 16;
  EXPECT_EQ(VirtqLayout::compute(top, 8, layout), VirtqError::queue_out_of_section);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0, 256, top, layout), VirtqError::queue_out_of_section);
}

TEST(VirtqLayout, FromAreasChecksAlignmentAndOverlap) {
  VirtqLayout layout;
  EXPECT_EQ(VirtqLayout::from_areas(8, 0x2000, 0x100, 0x1000, layout), VirtqError::ok);
  EXPECT_EQ(layout.end(), 0x2000U + 128);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0x2008, 0x100, 0x1000, layout), VirtqError::misaligned_area);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0x2000, 0x101, 0x1000, layout), VirtqError::misaligned_area);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0x2000, 0x100, 0x1002, layout), VirtqError::misaligned_area);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0, 0x70, 0x1000, layout), VirtqError::overlapping_areas);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0, 0x80, 0x90, layout), VirtqError::overlapping_areas);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0x1000, 0x80, 0x40, layout), VirtqError::overlapping_areas);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0, 0x80, 0x94, layout), VirtqError::overlapping_areas);
  EXPECT_EQ(VirtqLayout::from_areas(8, 0, 0x80, 0x98, layout), VirtqError::ok);
}

TEST(VirtqInit, RejectsAQueueThatDoesNotFitTheSection) {
  SharedSection section(4096);
  Driver driver;
  Device device;
  EXPECT_EQ(driver.init(section.bytes(), 0, 256), VirtqError::queue_out_of_section);
  EXPECT_EQ(device.init(section.bytes(), 0, 256), VirtqError::queue_out_of_section);
  EXPECT_EQ(driver.init(section.bytes(), 4096 - 32, 1), VirtqError::queue_out_of_section);
  EXPECT_EQ(driver.init(section.bytes(), 4096 - 48, 1), VirtqError::ok);
}

TEST(VirtqInit, RejectsAMisalignedSectionAndAQueueLargerThanTheClass) {
  SharedSection section(16384);
  Driver driver;
  Device device;
  EXPECT_EQ(driver.init(section.bytes().subspan(8), 0, 8), VirtqError::misaligned_section);
  EXPECT_EQ(device.init(section.bytes().subspan(8), 0, 8), VirtqError::misaligned_section);
  EXPECT_EQ(driver.init(section.bytes(), 0, 512), VirtqError::queue_too_large);
  EXPECT_EQ(device.init(section.bytes(), 0, 512), VirtqError::queue_too_large);
}

TEST(VirtqInit, EveryCallBeforeASuccessfulInitReportsNotInitialized) {
  SharedSection section(4096);
  Driver driver;
  Device device;
  const VirtqBuffer buffer{2048, 16};
  VirtqCompletion completion;
  Chain chain;
  EXPECT_EQ(driver.add({&buffer, 1}, {}, 1), VirtqError::not_initialized);
  EXPECT_EQ(driver.collect(completion), VirtqError::not_initialized);
  EXPECT_FALSE(driver.publish());
  EXPECT_FALSE(driver.arm_interrupt());
  EXPECT_EQ(device.pop(chain), VirtqError::not_initialized);
  EXPECT_EQ(device.push(0, 0), VirtqError::not_initialized);
  EXPECT_FALSE(device.publish());
  EXPECT_FALSE(device.arm_notify());
  ASSERT_EQ(driver.init(section.bytes(), 0, 3), VirtqError::bad_queue_size);
  EXPECT_EQ(driver.add({&buffer, 1}, {}, 1), VirtqError::not_initialized);
}

// Every shared field at the byte offset docs/virtq.md gives, little-endian.
TEST(VirtqLayout, DriverAndDeviceWriteTheDocumentedByteOffsets) {
  SharedSection section(16384);
  constexpr std::uint64_t kQueue = 0x100;
  Driver driver;
  Device device;
  ASSERT_EQ(driver.init(section.bytes(), kQueue, 8), VirtqError::ok);
  ASSERT_EQ(device.init(section.bytes(), kQueue, 8), VirtqError::ok);
  RawQueue raw(section.bytes(), driver.layout());
  ASSERT_EQ(driver.layout(), (VirtqLayout{8, 0x100, 0x180, 0x198}));

  const VirtqBuffer out{0x1000, 0x20};
  const VirtqBuffer in{0x2000, 0x30};
  ASSERT_EQ(driver.add({&out, 1}, {&in, 1}, 77), VirtqError::ok);
  EXPECT_TRUE(driver.publish());
  // Descriptor 0 at 0x100: {addr 0x1000, len 0x20, NEXT, next 1}; descriptor 1 at 0x110.
  EXPECT_EQ(raw.get<std::uint64_t>(0x100), 0x1000U);
  EXPECT_EQ(raw.get<std::uint32_t>(0x108), 0x20U);
  EXPECT_EQ(raw.get<std::uint16_t>(0x10c), kVirtqDescNext);
  EXPECT_EQ(raw.get<std::uint16_t>(0x10e), 1U);
  EXPECT_EQ(raw.get<std::uint64_t>(0x110), 0x2000U);
  EXPECT_EQ(raw.get<std::uint32_t>(0x118), 0x30U);
  EXPECT_EQ(raw.get<std::uint16_t>(0x11c), kVirtqDescWrite);
  // avail at 0x180: flags 0, idx 1, ring[0] = head 0.
  EXPECT_EQ(raw.get<std::uint16_t>(0x180), 0U);
  EXPECT_EQ(raw.get<std::uint16_t>(0x182), 1U);
  EXPECT_EQ(raw.get<std::uint16_t>(0x184), 0U);

  Chain chain;
  ASSERT_EQ(device.pop(chain), VirtqError::ok);
  EXPECT_TRUE(device.arm_notify());
  EXPECT_EQ(raw.get<std::uint16_t>(0x198 + 4 + 8 * 8), 1U) << "avail_event after the used ring";
  ASSERT_EQ(device.push(chain.head(), 0x11), VirtqError::ok);
  EXPECT_TRUE(device.publish());
  // used at 0x198: flags 0, idx 1, ring[0] = {id 0, len 0x11}.
  EXPECT_EQ(raw.get<std::uint16_t>(0x198), 0U);
  EXPECT_EQ(raw.get<std::uint16_t>(0x19a), 1U);
  EXPECT_EQ(raw.get<std::uint32_t>(0x19c), 0U);
  EXPECT_EQ(raw.get<std::uint32_t>(0x1a0), 0x11U);

  VirtqCompletion completion;
  ASSERT_EQ(driver.collect(completion), VirtqError::ok);
  EXPECT_EQ(completion.token, 77U);
  EXPECT_TRUE(driver.arm_interrupt());
  EXPECT_EQ(raw.get<std::uint16_t>(0x180 + 4 + 2 * 8), 1U) << "used_event after the avail ring";
}

// ----------------------------------------------------------------------------
// Event index

// Reference: the peer asked to be woken when the index passes event_idx, so
// notify iff one of the indices old_idx, old_idx+1, ..., new_idx-1 is event_idx.
[[nodiscard]] bool crosses(std::uint16_t event_idx, std::uint16_t new_idx, std::uint16_t old_idx) {
  for (std::uint16_t idx = old_idx; idx != new_idx; ++idx) {
    if (idx == event_idx) return true;
  }
  return false;
}

TEST(VirtqEventIdx, NeedEventMatchesABruteForceCrossingReference) {
  for (const std::uint16_t old_idx : {0, 1, 0x7fff, 0x8000, 0xfff0, 0xfffe, 0xffff, 12345}) {
    for (std::uint16_t delta = 0; delta <= 70; ++delta) {
      const auto new_idx = static_cast<std::uint16_t>(old_idx + delta);
      for (int offset = -5; offset <= 75; ++offset) {
        const auto event = static_cast<std::uint16_t>(old_idx + offset);
        ASSERT_EQ(vring_need_event(event, new_idx, old_idx), crosses(event, new_idx, old_idx))
            << "event " << event << " new " << new_idx << " old " << old_idx;
      }
    }
  }
  std::mt19937 random(0x45564e54);
  std::uniform_int_distribution<std::uint32_t> any16(0, 0xffff);
  std::uniform_int_distribution<std::uint32_t> small(0, 600);
  for (int i = 0; i < 200000; ++i) {
    const auto old_idx = static_cast<std::uint16_t>(any16(random));
    const auto new_idx =
        static_cast<std::uint16_t>(old_idx + (i % 64 == 0 ? any16(random) : small(random)));
    const auto event =
        static_cast<std::uint16_t>(i % 2 == 0 ? any16(random) : old_idx + small(random) - 300);
    ASSERT_EQ(vring_need_event(event, new_idx, old_idx), crosses(event, new_idx, old_idx))
        << "event " << event << " new " << new_idx << " old " << old_idx;
  }
}

class VirtqPair : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(driver_.init(section_.bytes(), 0, kN), VirtqError::ok);
    ASSERT_EQ(device_.init(section_.bytes(), 0, kN), VirtqError::ok);
  }
  void add_one(std::uint32_t token) {
    const VirtqBuffer out{0x2000 + 64 * std::uint64_t{token % kN}, 8};
    const VirtqBuffer in{0x3000 + 64 * std::uint64_t{token % kN}, 8};
    ASSERT_EQ(driver_.add({&out, 1}, {&in, 1}, token), VirtqError::ok);
  }
  // Device takes and finishes every published chain, without arming.
  void device_drains() {
    Chain chain;
    VirtqError error;
    while ((error = device_.pop(chain)) == VirtqError::ok) {
      ASSERT_EQ(device_.push(chain.head(), 4), VirtqError::ok);
    }
    ASSERT_EQ(error, VirtqError::empty);
  }
  void driver_drains() {
    VirtqCompletion completion;
    VirtqError error;
    while ((error = driver_.collect(completion)) == VirtqError::ok) {
    }
    ASSERT_EQ(error, VirtqError::empty);
  }

  static constexpr std::uint32_t kN = 8;
  SharedSection section_{16384};
  Driver driver_;
  Device device_;
};

TEST_F(VirtqPair, DriverNotifiesOnlyWhenTheDeviceArmedAndOnlyOnceForTheCrossing) {
  // A fresh queue has avail_event 0: the first publication crosses it.
  add_one(1);
  EXPECT_TRUE(driver_.publish());
  device_drains();
  for (std::uint32_t token = 2; token < 40; ++token) {
    add_one(token);
    EXPECT_FALSE(driver_.publish()) << "device did not re-arm, token " << token;
    device_drains();
    (void)device_.publish();
    driver_drains();
  }
  EXPECT_TRUE(device_.arm_notify()) << "nothing pending, safe to sleep";
  add_one(100);
  add_one(101);
  EXPECT_TRUE(driver_.publish()) << "armed device is notified";
  add_one(102);
  EXPECT_FALSE(driver_.publish()) << "one notification per arming";
  EXPECT_FALSE(device_.arm_notify()) << "chains are waiting: not safe to sleep";
  EXPECT_FALSE(driver_.publish()) << "nothing new to publish";
}

TEST_F(VirtqPair, DeviceNotifiesOnlyWhenTheDriverArmedAndOnlyOnceForTheCrossing) {
  add_one(1);
  (void)driver_.publish();
  device_drains();
  EXPECT_TRUE(device_.publish()) << "a fresh queue has used_event 0";
  driver_drains();
  for (std::uint32_t token = 2; token < 40; ++token) {
    add_one(token);
    (void)driver_.publish();
    device_drains();
    EXPECT_FALSE(device_.publish()) << "driver did not re-arm, token " << token;
    driver_drains();
  }
  EXPECT_TRUE(driver_.arm_interrupt());
  add_one(100);
  add_one(101);
  (void)driver_.publish();
  device_drains();
  EXPECT_TRUE(device_.publish()) << "armed driver is notified";
  EXPECT_FALSE(driver_.arm_interrupt()) << "used entries are waiting: not safe to sleep";
  driver_drains();
  EXPECT_TRUE(driver_.arm_interrupt());
  EXPECT_FALSE(device_.publish()) << "nothing new to publish";
}

TEST_F(VirtqPair, ArmingAfterThePeerMovedOnIsNotSafeToSleep) {
  EXPECT_TRUE(device_.arm_notify());
  add_one(1);
  EXPECT_TRUE(driver_.publish());
  // The device re-arms without popping: it must not sleep on a chain it missed.
  EXPECT_FALSE(device_.arm_notify());
  device_drains();
  EXPECT_TRUE(device_.arm_notify());
}

// ----------------------------------------------------------------------------
// Round trips

// `rounds` rounds of: offer up to N random chains, pop them all, finish them
// in random order, collect them all. Buffers come from `data_bytes` after the
// queue.
template <std::uint32_t Max>
void round_trip(std::uint32_t n, std::uint32_t seed, int rounds,
                std::uint64_t data_bytes = 1 << 17) {
  VirtqLayout layout;
  ASSERT_EQ(VirtqLayout::compute(0x40, n, layout), VirtqError::ok);
  SharedSection section(align16(layout.end()) + data_bytes);
  auto driver = std::make_unique<VirtqDriver<Max>>();
  auto device = std::make_unique<VirtqDevice<Max, 16>>();
  ASSERT_EQ(driver->init(section.bytes(), 0x40, n), VirtqError::ok);
  ASSERT_EQ(device->init(section.bytes(), 0x40, n), VirtqError::ok);
  const std::span<std::byte> bytes = section.bytes();
  std::mt19937 random(seed);
  const auto uniform = [&](std::uint32_t low, std::uint32_t high) {
    return std::uniform_int_distribution<std::uint32_t>(low, high)(random);
  };
  Tokens tokens;

  for (int round = 0; round < rounds; ++round) {
    Arena arena(align16(driver->layout().end()), bytes.size());
    std::vector<std::uint32_t> offered;
    const std::uint32_t wanted = uniform(1, n);
    for (std::uint32_t i = 0; i < wanted; ++i) {
      const std::uint32_t segments = uniform(1, std::min<std::uint32_t>(n, 16));
      const std::uint32_t readable = uniform(0, segments);
      std::uint32_t token = 0;
      Tracked& tracked = tokens.issue(token);
      bool fits = true;
      for (std::uint32_t s = 0; s < segments && fits; ++s) {
        VirtqBuffer buffer;
        fits = arena.take(uniform(0, 96), buffer);
        (s < readable ? tracked.out : tracked.in).push_back(buffer);
        if (s >= readable) tracked.writable += buffer.len;
      }
      for (const VirtqBuffer& buffer : tracked.out) {
        for (std::uint32_t b = 0; b < buffer.len; ++b) {
          const auto value = static_cast<std::byte>(uniform(0, 255));
          bytes[buffer.offset + b] = value;
          tracked.out_bytes.push_back(value);
        }
      }
      const VirtqError error =
          fits ? driver->add(tracked.out, tracked.in, token) : VirtqError::no_space;
      if (error == VirtqError::no_space) {
        (void)tokens.retire(token);
        break;
      }
      ASSERT_EQ(error, VirtqError::ok);
      offered.push_back(token);
    }
    (void)driver->publish();

    // The device sees the chains in the order they were offered.
    std::vector<Chain> held;
    Chain chain;
    VirtqError error;
    while ((error = device->pop(chain)) == VirtqError::ok) held.push_back(chain);
    ASSERT_EQ(error, VirtqError::empty);
    ASSERT_EQ(held.size(), offered.size());
    for (std::size_t c = 0; c < held.size(); ++c) {
      Tracked& tracked = *tokens.find(offered[c]);
      ASSERT_EQ(held[c].readable_count(), tracked.out.size());
      ASSERT_EQ(held[c].writable_count(), tracked.in.size());
      std::vector<std::byte> seen;
      for (std::size_t s = 0; s < tracked.out.size(); ++s) {
        const std::span<const std::byte> span = held[c].readable(s);
        EXPECT_EQ(span.data(), bytes.data() + tracked.out[s].offset);
        EXPECT_EQ(span.size(), tracked.out[s].len);
        seen.insert(seen.end(), span.begin(), span.end());
      }
      EXPECT_EQ(seen, tracked.out_bytes);
      EXPECT_EQ(held[c].writable_bytes(), tracked.writable);
      for (std::size_t s = 0; s < tracked.in.size(); ++s) {
        const std::span<std::byte> span = held[c].writable(s);
        EXPECT_EQ(span.data(), bytes.data() + tracked.in[s].offset);
        EXPECT_EQ(span.size(), tracked.in[s].len);
        for (std::byte& byte : span) {
          byte = static_cast<std::byte>(uniform(0, 255));
          tracked.in_bytes.push_back(byte);
        }
      }
      tracked.written = uniform(0, static_cast<std::uint32_t>(tracked.writable));
    }

    // Finished out of order, published in a few batches.
    std::vector<std::size_t> order(held.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), random);
    for (const std::size_t c : order) {
      ASSERT_EQ(device->push(held[c].head(), tokens.find(offered[c])->written), VirtqError::ok);
      if (uniform(0, 3) == 0) (void)device->publish();
    }
    (void)device->publish();

    VirtqCompletion completion;
    std::size_t collected = 0;
    while ((error = driver->collect(completion)) == VirtqError::ok) {
      const std::unique_ptr<Tracked> tracked = tokens.retire(completion.token);
      ASSERT_NE(tracked, nullptr) << "token " << completion.token << " was not in flight";
      EXPECT_EQ(completion.len, tracked->written);
      std::vector<std::byte> seen;
      for (const VirtqBuffer& buffer : tracked->in) {
        seen.insert(seen.end(), bytes.begin() + static_cast<std::ptrdiff_t>(buffer.offset),
                    bytes.begin() + static_cast<std::ptrdiff_t>(buffer.offset + buffer.len));
      }
      EXPECT_EQ(seen, tracked->in_bytes);
      ++collected;
    }
    ASSERT_EQ(error, VirtqError::empty);
    ASSERT_EQ(collected, offered.size());
    ASSERT_EQ(driver->free_descriptors(), n);
  }
  EXPECT_EQ(tokens.size(), 0U);
}

TEST(VirtqRoundTrip, ChainsOfOneToSixteenSegmentsArriveIntactForEveryQueueSize) {
  for (const std::uint32_t n : kQueueSizes) {
    for (std::uint32_t seed = 1; seed <= 6; ++seed) {
      SCOPED_TRACE(::testing::Message() << "N " << n << " seed " << seed);
      round_trip<256>(n, seed * 7919 + n, 40);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  EXPECT_EQ(Tracked::live, 0);
}

TEST(VirtqRoundTrip, TheLargestQueueSizeRoundTrips) {
  round_trip<kVirtqMaxQueueSize>(kVirtqMaxQueueSize, 32768, 3, std::uint64_t{1} << 22);
  EXPECT_EQ(Tracked::live, 0);
}

TEST(VirtqRoundTrip, IndicesWrapPast65536InOrder) {
  SharedSection section(16384);
  Driver driver;
  Device device;
  ASSERT_EQ(driver.init(section.bytes(), 0, 4), VirtqError::ok);
  ASSERT_EQ(device.init(section.bytes(), 0, 4), VirtqError::ok);
  RawQueue raw(section.bytes(), driver.layout());
  const std::span<std::byte> bytes = section.bytes();
  std::mt19937 random(65536);
  std::uint32_t next_token = 0;
  std::uint32_t next_expected = 0;
  bool wrapped = false;
  constexpr std::uint32_t kOperations = 70000;
  while (next_expected < kOperations) {
    const std::uint32_t batch = std::uniform_int_distribution<std::uint32_t>(1, 2)(random);
    for (std::uint32_t i = 0; i < batch && next_token < kOperations; ++i, ++next_token) {
      const VirtqBuffer out{0x1000 + 32 * std::uint64_t{next_token % 4}, 4};
      const VirtqBuffer in{0x2000 + 32 * std::uint64_t{next_token % 4}, 4};
      std::memcpy(bytes.data() + out.offset, &next_token, 4);
      ASSERT_EQ(driver.add({&out, 1}, {&in, 1}, next_token), VirtqError::ok);
    }
    (void)driver.publish();
    Chain chain;
    while (device.pop(chain) == VirtqError::ok) {
      std::uint32_t value;
      std::memcpy(&value, chain.readable(0).data(), 4);
      value = ~value;
      std::memcpy(chain.writable(0).data(), &value, 4);
      ASSERT_EQ(device.push(chain.head(), 4), VirtqError::ok);
    }
    const std::uint16_t before = raw.used_idx();
    (void)device.publish();
    wrapped = wrapped || raw.used_idx() < before;
    VirtqCompletion completion;
    while (driver.collect(completion) == VirtqError::ok) {
      ASSERT_EQ(completion.token, next_expected);
      std::uint32_t value;
      std::memcpy(&value, bytes.data() + 0x2000 + 32 * std::size_t{next_expected % 4}, 4);
      ASSERT_EQ(value, ~next_expected);
      ++next_expected;
    }
  }
  EXPECT_TRUE(wrapped);
  EXPECT_EQ(raw.used_idx(), kOperations % 65536);
  EXPECT_EQ(driver.error(), VirtqError::ok);
  EXPECT_EQ(device.error(), VirtqError::ok);
}

TEST(VirtqRoundTrip, OutOfOrderMultiSegmentTrafficSurvivesTheWrap) {
  // 1700 rounds of up to 64 chains each pass 65536 on both indices.
  round_trip<64>(64, 0x77, 1700);
  EXPECT_EQ(Tracked::live, 0);
}

TEST(VirtqRoundTrip, SeparatelyPlacedAreasWork) {
  SharedSection section(16384);
  VirtqLayout layout;
  ASSERT_EQ(VirtqLayout::from_areas(8, 0x2000, 0x100, 0x1000, layout), VirtqError::ok);
  Driver driver;
  Device device;
  ASSERT_EQ(driver.init(section.bytes(), layout), VirtqError::ok);
  ASSERT_EQ(device.init(section.bytes(), layout), VirtqError::ok);
  const VirtqBuffer out{0x3000, 5};
  ASSERT_EQ(driver.add({&out, 1}, {}, 9), VirtqError::ok);
  (void)driver.publish();
  Chain chain;
  ASSERT_EQ(device.pop(chain), VirtqError::ok);
  EXPECT_EQ(chain.readable(0).data(), section.bytes().data() + 0x3000);
  ASSERT_EQ(device.push(chain.head(), 0), VirtqError::ok);
  (void)device.publish();
  VirtqCompletion completion;
  ASSERT_EQ(driver.collect(completion), VirtqError::ok);
  EXPECT_EQ(completion.token, 9U);
}

TEST(VirtqDriver, AFullQueueReportsNoSpaceUntilAChainIsCollected) {
  SharedSection section(16384);
  Driver driver;
  Device device;
  ASSERT_EQ(driver.init(section.bytes(), 0, 8), VirtqError::ok);
  ASSERT_EQ(device.init(section.bytes(), 0, 8), VirtqError::ok);
  const std::array<VirtqBuffer, 3> three{{{0x1000, 8}, {0x1010, 8}, {0x1020, 8}}};
  ASSERT_EQ(driver.add(three, {}, 1), VirtqError::ok);
  ASSERT_EQ(driver.add({}, three, 2), VirtqError::ok);
  EXPECT_EQ(driver.free_descriptors(), 2U);
  EXPECT_EQ(driver.add(three, {}, 3), VirtqError::no_space);
  EXPECT_EQ(driver.error(), VirtqError::ok) << "no_space is not a fault";
  ASSERT_EQ(driver.add({three.data(), 1}, {three.data(), 1}, 4), VirtqError::ok);
  EXPECT_EQ(driver.add({three.data(), 1}, {}, 5), VirtqError::no_space);
  EXPECT_EQ(driver.free_descriptors(), 0U);

  (void)driver.publish();
  Chain chain;
  ASSERT_EQ(device.pop(chain), VirtqError::ok);
  ASSERT_EQ(device.push(chain.head(), 0), VirtqError::ok);
  (void)device.publish();
  VirtqCompletion completion;
  ASSERT_EQ(driver.collect(completion), VirtqError::ok);
  EXPECT_EQ(completion.token, 1U);
  EXPECT_EQ(driver.free_descriptors(), 3U);
  EXPECT_EQ(driver.add(three, {}, 3), VirtqError::ok);
}

TEST(VirtqDriver, RejectsCallerMistakesWithoutBreakingTheQueue) {
  SharedSection section(16384);
  Driver driver;
  ASSERT_EQ(driver.init(section.bytes(), 0x800, 8), VirtqError::ok);
  const std::vector<VirtqBuffer> nine(9, VirtqBuffer{0x2000, 4});
  const auto one = [&](std::uint64_t offset, std::uint32_t len) {
    const VirtqBuffer buffer{offset, len};
    return driver.add({&buffer, 1}, {}, 1);
  };
  EXPECT_EQ(driver.add({}, {}, 1), VirtqError::no_buffers);
  EXPECT_EQ(driver.add(nine, {}, 1), VirtqError::too_many_buffers);
  EXPECT_EQ(one(16384, 1), VirtqError::out_of_section);
  EXPECT_EQ(one(16380, 5), VirtqError::out_of_section);
  EXPECT_EQ(one(0, 16385), VirtqError::out_of_section);
  EXPECT_EQ(one(std::numeric_limits<std::uint64_t>::max() - 1, 4), VirtqError::out_of_section);
  EXPECT_EQ(one(0x7f0, 0x11), VirtqError::overlaps_queue) << "descriptor table";
  EXPECT_EQ(one(0x880, 2), VirtqError::overlaps_queue) << "avail ring";
  EXPECT_EQ(one(driver.layout().end() - 1, 8), VirtqError::overlaps_queue) << "used ring";
  EXPECT_EQ(driver.error(), VirtqError::ok);
  EXPECT_EQ(driver.free_descriptors(), 8U);
  EXPECT_EQ(one(0x7f0, 0x10), VirtqError::ok);
  EXPECT_EQ(one(16380, 4), VirtqError::ok);
  EXPECT_EQ(one(16384, 0), VirtqError::ok) << "an empty buffer at the end is inside";
}

TEST(VirtqDevice, PushRejectsHeadsThatAreNotPoppedWithoutBreaking) {
  SharedSection section(16384);
  Driver driver;
  Device device;
  ASSERT_EQ(driver.init(section.bytes(), 0, 8), VirtqError::ok);
  ASSERT_EQ(device.init(section.bytes(), 0, 8), VirtqError::ok);
  const VirtqBuffer in{0x1000, 10};
  ASSERT_EQ(driver.add({}, {&in, 1}, 1), VirtqError::ok);
  (void)driver.publish();
  Chain chain;
  ASSERT_EQ(device.pop(chain), VirtqError::ok);
  EXPECT_EQ(device.push(1, 0), VirtqError::not_in_flight);
  EXPECT_EQ(device.push(8, 0), VirtqError::not_in_flight);
  EXPECT_EQ(device.push(chain.head(), 11), VirtqError::written_too_long);
  EXPECT_EQ(device.push(chain.head(), 10), VirtqError::ok);
  EXPECT_EQ(device.push(chain.head(), 10), VirtqError::not_in_flight) << "pushed twice";
  EXPECT_EQ(device.error(), VirtqError::ok);
}

// ----------------------------------------------------------------------------
// A hostile driver: every validation of the device latches its own error.

class HostileDriver : public ::testing::Test {
 protected:
  static constexpr std::uint32_t kN = 8;
  static constexpr std::uint64_t kSize = 16384;

  void SetUp() override {
    ASSERT_EQ(device_.init(section_.bytes(), 0, kN), VirtqError::ok);
    raw_ = std::make_unique<RawQueue>(section_.bytes(), device_.layout());
  }
  // Publishes `head` as the next avail entry.
  void publish_head(std::uint16_t head) {
    raw_->avail_slot(avail_idx_ % kN, head);
    raw_->avail_idx(++avail_idx_);
  }
  // pop() fails with `expected` at `field`; afterwards, even with a valid
  // chain in memory, the device never yields a chain again.
  void expect_latched(VirtqError expected, const char* field) {
    Chain chain;
    EXPECT_EQ(device_.pop(chain), expected);
    EXPECT_TRUE(chain.empty());
    EXPECT_STREQ(device_.fault().field, field);
    EXPECT_TRUE(is_peer_fault(device_.error()));
    for (std::uint16_t i = 0; i < kN; ++i) raw_->desc(i, 0x1000, 8, 0, 0);
    for (std::uint16_t i = 0; i < kN; ++i) raw_->avail_slot(i, i);
    raw_->avail_idx(1);
    for (int attempt = 0; attempt < 3; ++attempt) {
      EXPECT_EQ(device_.pop(chain), expected);
      EXPECT_TRUE(chain.empty());
    }
    EXPECT_EQ(device_.push(0, 0), expected);
    EXPECT_FALSE(device_.publish());
    EXPECT_FALSE(device_.arm_notify());
    EXPECT_EQ(device_.error(), expected);
  }

  SharedSection section_{kSize};
  Device device_;
  std::unique_ptr<RawQueue> raw_;
  std::uint16_t avail_idx_ = 0;
};

TEST_F(HostileDriver, AvailIdxMoreThanNAheadIsAvailIdxJump) {
  raw_->avail_idx(kN + 1);
  expect_latched(VirtqError::avail_idx_jump, "avail.idx");
  EXPECT_EQ(device_.fault().value, kN + 1);
  EXPECT_EQ(device_.fault().expected_max, kN);
}

TEST_F(HostileDriver, AvailIdxBehindTheLastSeenIsAvailIdxJump) {
  raw_->desc(0, 0x1000, 8, 0, 0);
  publish_head(0);
  Chain chain;
  ASSERT_EQ(device_.pop(chain), VirtqError::ok);
  raw_->avail_idx(0);  // moved back: 0xffff ahead modulo 2^16
  expect_latched(VirtqError::avail_idx_jump, "avail.idx");
}

TEST_F(HostileDriver, HeadOutsideTheQueueIsBadHead) {
  publish_head(kN);
  expect_latched(VirtqError::bad_head, "avail.ring[]");
  EXPECT_EQ(device_.fault().value, kN);
  EXPECT_EQ(device_.fault().expected_max, kN - 1);
}

TEST_F(HostileDriver, HeadStillHeldByTheDeviceIsHeadInUse) {
  raw_->desc(3, 0x1000, 8, 0, 0);
  publish_head(3);
  Chain chain;
  ASSERT_EQ(device_.pop(chain), VirtqError::ok);
  publish_head(3);
  expect_latched(VirtqError::head_in_use, "avail.ring[]");
}

TEST_F(HostileDriver, NextOutsideTheQueueIsBadNext) {
  raw_->desc(0, 0x1000, 8, kVirtqDescNext, kN);
  publish_head(0);
  expect_latched(VirtqError::bad_next, "desc[].next");
  EXPECT_EQ(device_.fault().value, kN);
}

TEST_F(HostileDriver, BufferPastTheSectionEndIsBufferOutOfSection) {
  raw_->desc(0, kSize - 3, 4, 0, 0);
  publish_head(0);
  expect_latched(VirtqError::buffer_out_of_section, "desc[].addr");
  EXPECT_EQ(device_.fault().value, kSize - 3);
  EXPECT_EQ(device_.fault().expected_max, kSize - 4);
}

TEST_F(HostileDriver, LengthLargerThanTheSectionIsBufferOutOfSection) {
  raw_->desc(0, 0, kSize + 1, 0, 0);
  publish_head(0);
  expect_latched(VirtqError::buffer_out_of_section, "desc[].len");
}

TEST_F(HostileDriver, AddressThatWrapsAroundIsBufferOutOfSection) {
  raw_->desc(0, std::numeric_limits<std::uint64_t>::max() - 1, 16, 0, 0);
  publish_head(0);
  expect_latched(VirtqError::buffer_out_of_section, "desc[].addr");
}

TEST_F(HostileDriver, BadSecondDescriptorYieldsNoPartialChain) {
  raw_->desc(0, 0x1000, 8, kVirtqDescNext, 1);
  raw_->desc(1, kSize, 1, 0, 0);
  publish_head(0);
  expect_latched(VirtqError::buffer_out_of_section, "desc[].addr");
  EXPECT_EQ(device_.fault().position, 1U);
}

TEST_F(HostileDriver, IndirectDescriptorIsIndirectUnsupported) {
  raw_->desc(0, 0x1000, 32, kVirtqDescIndirect, 0);
  publish_head(0);
  expect_latched(VirtqError::indirect_unsupported, "desc[].flags");
}

TEST_F(HostileDriver, ReadableAfterWritableIsBadOrder) {
  raw_->desc(0, 0x1000, 8, kVirtqDescWrite | kVirtqDescNext, 1);
  raw_->desc(1, 0x1010, 8, 0, 0);
  publish_head(0);
  expect_latched(VirtqError::bad_order, "desc[].flags");
}

TEST_F(HostileDriver, SelfLoopEndsWithChainTooLong) {
  raw_->desc(5, 0x1000, 8, kVirtqDescNext, 5);
  publish_head(5);
  expect_latched(VirtqError::chain_too_long, "desc[].next");
  EXPECT_EQ(device_.fault().value, kN + 1);
  EXPECT_EQ(device_.fault().expected_max, kN);
}

TEST_F(HostileDriver, LoopBackToTheHeadEndsWithChainTooLong) {
  for (std::uint16_t i = 0; i < kN; ++i) {
    raw_->desc(i, 0x1000, 8, kVirtqDescNext, static_cast<std::uint16_t>((i + 1) % kN));
  }
  publish_head(2);
  expect_latched(VirtqError::chain_too_long, "desc[].next");
}

TEST(VirtqDevice, ChainLongerThanMaxSegmentsIsChainTooLongAndALoopNeverHangs) {
  SharedSection section(1 << 16);
  Device device;
  ASSERT_EQ(device.init(section.bytes(), 0, 256), VirtqError::ok);
  RawQueue raw(section.bytes(), device.layout());
  for (std::uint16_t i = 0; i < 17; ++i) {
    raw.desc(i, 0x8000, 8, i < 16 ? kVirtqDescNext : 0, static_cast<std::uint16_t>(i + 1));
  }
  raw.avail_slot(0, 0);
  raw.avail_idx(1);
  Chain chain;
  EXPECT_EQ(device.pop(chain), VirtqError::chain_too_long);
  EXPECT_EQ(device.fault().value, 17U);
  EXPECT_EQ(device.fault().expected_max, 16U);

  // A 256-long loop on a fresh device stops at MaxSegments too.
  ASSERT_EQ(device.init(section.bytes(), 0, 256), VirtqError::ok);
  for (std::uint16_t i = 0; i < 256; ++i) {
    raw.desc(i, 0x8000, 8, kVirtqDescNext, static_cast<std::uint16_t>((i + 1) % 256));
  }
  raw.avail_slot(0, 255);
  raw.avail_idx(1);
  EXPECT_EQ(device.pop(chain), VirtqError::chain_too_long);
  EXPECT_TRUE(chain.empty());
}

// ----------------------------------------------------------------------------
// A hostile device: every validation of the driver latches its own error.

class HostileDevice : public ::testing::Test {
 protected:
  static constexpr std::uint32_t kN = 8;

  // Chains 1 and 2 (heads 0 and 1) are published; chain 3 (head 2) is
  // added but not published. Each has 16 writable bytes.
  void SetUp() override {
    ASSERT_EQ(driver_.init(section_.bytes(), 0, kN), VirtqError::ok);
    raw_ = std::make_unique<RawQueue>(section_.bytes(), driver_.layout());
    for (std::uint32_t token = 1; token <= 3; ++token) {
      const VirtqBuffer in{0x1000 + 0x100 * std::uint64_t{token}, 16};
      ASSERT_EQ(driver_.add({}, {&in, 1}, token), VirtqError::ok);
      if (token == 2) (void)driver_.publish();
    }
  }
  void expect_latched(VirtqError expected, const char* field) {
    VirtqCompletion completion{99, 99};
    EXPECT_EQ(driver_.collect(completion), expected);
    EXPECT_EQ(completion.token, 99U) << "nothing handed out";
    EXPECT_STREQ(driver_.fault().field, field);
    raw_->used_elem(0, 0, 0);
    raw_->used_elem(1, 1, 0);
    raw_->used_idx(2);
    for (int attempt = 0; attempt < 3; ++attempt) {
      EXPECT_EQ(driver_.collect(completion), expected);
    }
    const VirtqBuffer in{0x3000, 4};
    EXPECT_EQ(driver_.add({}, {&in, 1}, 7), expected);
    EXPECT_FALSE(driver_.publish());
    EXPECT_FALSE(driver_.arm_interrupt());
    EXPECT_EQ(completion.token, 99U);
  }

  SharedSection section_{16384};
  Driver driver_;
  std::unique_ptr<RawQueue> raw_;
};

TEST_F(HostileDevice, IdOutsideTheQueueIsBadUsedId) {
  raw_->used_elem(0, kN, 0);
  raw_->used_idx(1);
  expect_latched(VirtqError::bad_used_id, "used.ring[].id");
  EXPECT_EQ(driver_.fault().value, kN);
  EXPECT_EQ(driver_.fault().expected_max, kN - 1);
}

TEST_F(HostileDevice, IdOfAFreeDescriptorIsBadUsedId) {
  raw_->used_elem(0, 5, 0);
  raw_->used_idx(1);
  expect_latched(VirtqError::bad_used_id, "used.ring[].id");
}

TEST_F(HostileDevice, IdOfAnUnpublishedChainIsBadUsedId) {
  raw_->used_elem(0, 2, 0);
  raw_->used_idx(1);
  expect_latched(VirtqError::bad_used_id, "used.ring[].id");
}

TEST_F(HostileDevice, TheSameIdTwiceIsBadUsedId) {
  raw_->used_elem(0, 1, 16);
  raw_->used_elem(1, 1, 16);
  raw_->used_idx(2);
  VirtqCompletion completion;
  ASSERT_EQ(driver_.collect(completion), VirtqError::ok);
  EXPECT_EQ(completion.token, 2U);
  expect_latched(VirtqError::bad_used_id, "used.ring[].id");
}

TEST_F(HostileDevice, LengthBeyondTheWritableBytesIsBadUsedLen) {
  raw_->used_elem(0, 0, 17);
  raw_->used_idx(1);
  expect_latched(VirtqError::bad_used_len, "used.ring[].len");
  EXPECT_EQ(driver_.fault().value, 17U);
  EXPECT_EQ(driver_.fault().expected_max, 16U);
}

TEST_F(HostileDevice, UsedIdxPastThePublishedChainsIsUsedIdxJump) {
  raw_->used_elem(0, 0, 0);
  raw_->used_elem(1, 1, 0);
  raw_->used_elem(2, 2, 0);
  raw_->used_idx(3);
  expect_latched(VirtqError::used_idx_jump, "used.idx");
  EXPECT_EQ(driver_.fault().value, 3U);
  EXPECT_EQ(driver_.fault().expected_max, 2U);
}

TEST_F(HostileDevice, UsedIdxMovedFarOrBackwardsIsUsedIdxJump) {
  raw_->used_idx(0x8000);
  expect_latched(VirtqError::used_idx_jump, "used.idx");
}

// ----------------------------------------------------------------------------
// Property: random operations on both halves, interleaved with random
// corruption of the ring memory, never crash, never hand out a span outside
// the section, never hand back a token that is not in flight, and never
// report more bytes than the chain could hold. A run without corruption
// never faults.

struct PropertyStats {
  int runs = 0;
  int corrupted_runs = 0;
  int detected = 0;
  std::uint64_t chains_popped = 0;
  std::uint64_t chains_collected = 0;
};

void property_run(std::uint32_t seed, bool corrupt, PropertyStats& stats) {
  std::mt19937 random(seed);
  const auto uniform = [&](std::uint64_t low, std::uint64_t high) {
    return std::uniform_int_distribution<std::uint64_t>(low, high)(random);
  };
  constexpr std::uint32_t kSizes[] = {1, 2, 4, 8, 16, 64};
  const std::uint32_t n = kSizes[uniform(0, 5)];
  SharedSection section(8192);
  const std::span<std::byte> bytes = section.bytes();
  const std::uint64_t queue_offset = 16 * uniform(0, 64);
  Driver driver;
  Device device;
  ASSERT_EQ(driver.init(bytes, queue_offset, n), VirtqError::ok);
  ASSERT_EQ(device.init(bytes, queue_offset, n), VirtqError::ok);
  const VirtqLayout layout = driver.layout();
  std::unordered_map<std::uint32_t, std::uint64_t> in_flight;  // token -> writable bytes
  std::vector<Chain> held;
  std::uint32_t next_token = 1;
  VirtqError driver_fault = VirtqError::ok;
  VirtqError device_fault = VirtqError::ok;
  bool corrupted = false;
  const auto random_buffer = [&] {
    const std::uint64_t offset = uniform(0, bytes.size());
    return VirtqBuffer{offset, static_cast<std::uint32_t>(uniform(
                                   0, std::min<std::uint64_t>(128, bytes.size() - offset)))};
  };

  for (int step = 0; step < 1500; ++step) {
    switch (uniform(0, 10)) {
      case 0:
      case 1: {
        std::vector<VirtqBuffer> out(uniform(0, 3));
        std::vector<VirtqBuffer> in(uniform(0, 3));
        std::uint64_t writable = 0;
        for (VirtqBuffer& buffer : out) buffer = random_buffer();
        for (VirtqBuffer& buffer : in) writable += (buffer = random_buffer()).len;
        const VirtqError error = driver.add(out, in, next_token);
        if (error == VirtqError::ok) in_flight[next_token] = writable;
        ++next_token;
        ASSERT_TRUE(error == VirtqError::ok || error == VirtqError::no_space ||
                    error == VirtqError::no_buffers || error == VirtqError::too_many_buffers ||
                    error == VirtqError::overlaps_queue || error == driver_fault)
            << describe(error);
        break;
      }
      case 2: (void)driver.publish(); break;
      case 3: {
        VirtqCompletion completion;
        const VirtqError error = driver.collect(completion);
        if (error == VirtqError::ok) {
          const auto it = in_flight.find(completion.token);
          ASSERT_NE(it, in_flight.end()) << "token " << completion.token << " not in flight";
          ASSERT_LE(completion.len, it->second);
          in_flight.erase(it);
          ++stats.chains_collected;
        } else if (error != VirtqError::empty) {
          ASSERT_TRUE(is_peer_fault(error)) << describe(error);
          ASSERT_TRUE(driver_fault == VirtqError::ok || driver_fault == error);
          driver_fault = error;
        }
        break;
      }
      case 4: (void)driver.arm_interrupt(); break;
      case 5:
      case 6: {
        Chain chain;
        const VirtqError error = device.pop(chain);
        if (error == VirtqError::ok) {
          ASSERT_LE(chain.readable_count() + chain.writable_count(), 16U);
          ASSERT_LT(chain.head(), n);
          for (std::size_t s = 0; s < chain.readable_count(); ++s) {
            ASSERT_TRUE(inside(bytes, chain.readable(s)));
          }
          for (std::size_t s = 0; s < chain.writable_count(); ++s) {
            ASSERT_TRUE(inside(bytes, chain.writable(s)));
            // The device writes where it was told: inside the section, always.
            for (std::byte& byte : chain.writable(s)) byte = std::byte{0xd5};
          }
          held.push_back(chain);
          ++stats.chains_popped;
        } else {
          ASSERT_TRUE(chain.empty());
          if (error != VirtqError::empty) {
            ASSERT_TRUE(is_peer_fault(error)) << describe(error);
            ASSERT_TRUE(device_fault == VirtqError::ok || device_fault == error);
            device_fault = error;
          }
        }
        break;
      }
      case 7:
        if (!held.empty()) {
          const std::size_t pick = uniform(0, held.size() - 1);
          const auto written = static_cast<std::uint32_t>(uniform(0, held[pick].writable_bytes()));
          const VirtqError error = device.push(held[pick].head(), written);
          ASSERT_TRUE(error == VirtqError::ok || error == device_fault) << describe(error);
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(pick));
        }
        break;
      case 8: (void)device.publish(); break;
      case 9: (void)device.arm_notify(); break;
      case 10:
        if (corrupt && uniform(0, 7) == 0) {
          // A byte of the rings, or an index/ring field made plausible-looking.
          const std::uint64_t at = uniform(layout.desc, layout.end() - 1);
          bytes[at] = static_cast<std::byte>(uniform(0, 255));
          if (uniform(0, 1) == 0) bytes[layout.avail + 2] = static_cast<std::byte>(uniform(0, 3));
          corrupted = true;
        }
        break;
    }
    if (driver_fault != VirtqError::ok) {
      ASSERT_EQ(driver.error(), driver_fault);
    }
    if (device_fault != VirtqError::ok) {
      ASSERT_EQ(device.error(), device_fault);
    }
  }
  ++stats.runs;
  if (corrupted) ++stats.corrupted_runs;
  if (driver_fault != VirtqError::ok || device_fault != VirtqError::ok) ++stats.detected;
  if (!corrupted) {
    EXPECT_EQ(driver_fault, VirtqError::ok) << "seed " << seed;
    EXPECT_EQ(device_fault, VirtqError::ok) << "seed " << seed;
  }
}

TEST(VirtqProperty, RandomCorruptionIsDetectedOrYieldsOnlyInSectionData) {
  PropertyStats stats;
  for (std::uint32_t seed = 0; seed < 400; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    property_run(seed, true, stats);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_EQ(stats.corrupted_runs, 400);
  EXPECT_GT(stats.detected, 200) << "the corruption should trip the validation often";
  EXPECT_GT(stats.chains_popped, 2000U);
  EXPECT_GT(stats.chains_collected, 1500U);
}

TEST(VirtqProperty, RandomOperationsWithoutCorruptionNeverFault) {
  PropertyStats stats;
  for (std::uint32_t seed = 1000; seed < 1200; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    property_run(seed, false, stats);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_EQ(stats.detected, 0);
  EXPECT_GT(stats.chains_collected, 5000U);
}

// ----------------------------------------------------------------------------
// Two threads, each sleeping only behind the event-idx handshake. A lost
// wake-up shows as a side waiting past the deadline.

TEST(VirtqConcurrent, DriverAndDeviceThreadsDeliverEveryPayloadWithEventIdxWakeups) {
  constexpr std::uint32_t kN = 64;
  constexpr std::uint32_t kMessages = 100000;
  constexpr std::uint64_t kSlots = 0x1000;
  SharedSection section(0x4000);
  const std::span<std::byte> bytes = section.bytes();
  auto driver = std::make_unique<VirtqDriver<kN>>();
  auto device = std::make_unique<VirtqDevice<kN, 4>>();
  ASSERT_EQ(driver->init(bytes, 0, kN), VirtqError::ok);
  ASSERT_EQ(device->init(bytes, 0, kN), VirtqError::ok);
  ASSERT_LE(driver->layout().end(), kSlots);

  std::atomic<std::uint32_t> device_bell{0};
  std::atomic<std::uint32_t> driver_bell{0};
  std::atomic<bool> failed{false};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  const auto wait_for = [&](std::atomic<std::uint32_t>& bell, std::uint32_t seen, const char* who) {
    while (bell.load(std::memory_order_acquire) == seen && !failed.load()) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << who << " waited past the deadline: a wake-up was lost";
        failed = true;
      }
      std::this_thread::yield();
    }
  };

  std::thread device_thread([&] {
    std::uint32_t processed = 0;
    while (processed < kMessages && !failed.load()) {
      VirtqChain<4> chain;
      const VirtqError error = device->pop(chain);
      if (error == VirtqError::ok) {
        std::uint64_t value[2];
        if (chain.readable_count() != 1 || chain.writable_count() != 1 ||
            chain.readable(0).size() != 16 || chain.writable(0).size() != 8) {
          ADD_FAILURE() << "chain shape";
          failed = true;
          break;
        }
        std::memcpy(value, chain.readable(0).data(), 16);
        if (value[0] != processed || value[1] != ~value[0]) {
          ADD_FAILURE() << "payload " << processed << " arrived as " << value[0];
          failed = true;
          break;
        }
        value[0] *= 3;
        std::memcpy(chain.writable(0).data(), value, 8);
        if (device->push(chain.head(), 8) != VirtqError::ok) failed = true;
        ++processed;
        continue;
      }
      if (error != VirtqError::empty) {
        ADD_FAILURE() << describe(error);
        failed = true;
        break;
      }
      if (device->publish()) driver_bell.fetch_add(1, std::memory_order_release);
      const std::uint32_t seen = device_bell.load(std::memory_order_acquire);
      if (device->arm_notify()) wait_for(device_bell, seen, "device");
    }
    if (device->publish()) driver_bell.fetch_add(1, std::memory_order_release);
  });

  std::uint32_t next = 0;
  std::uint32_t collected = 0;
  std::uint32_t doorbells = 0;
  while (collected < kMessages && !failed.load()) {
    bool progress = false;
    VirtqCompletion completion;
    VirtqError error;
    while ((error = driver->collect(completion)) == VirtqError::ok) {
      std::uint64_t value;
      std::memcpy(&value, bytes.data() + kSlots + 32 * std::size_t{completion.token % kN} + 16, 8);
      if (completion.token != collected || completion.len != 8 || value != 3ULL * collected) {
        ADD_FAILURE() << "completion " << completion.token << " expected " << collected;
        failed = true;
      }
      ++collected;
      progress = true;
    }
    if (error != VirtqError::empty) {
      ADD_FAILURE() << describe(error);
      failed = true;
    }
    for (; next < kMessages; ++next) {
      const std::uint64_t slot = kSlots + 32 * std::uint64_t{next % kN};
      const std::uint64_t payload[2] = {next, ~std::uint64_t{next}};
      const VirtqBuffer out{slot, 16};
      const VirtqBuffer in{slot + 16, 8};
      if (driver->free_descriptors() < 2) break;
      std::memcpy(bytes.data() + slot, payload, 16);
      if (driver->add({&out, 1}, {&in, 1}, next) != VirtqError::ok) {
        failed = true;
        break;
      }
      progress = true;
    }
    if (driver->publish()) {
      ++doorbells;
      device_bell.fetch_add(1, std::memory_order_release);
    }
    if (!progress) {
      const std::uint32_t seen = driver_bell.load(std::memory_order_acquire);
      if (driver->arm_interrupt()) wait_for(driver_bell, seen, "driver");
    }
  }
  device_thread.join();
  EXPECT_EQ(collected, kMessages);
  EXPECT_EQ(driver->error(), VirtqError::ok);
  EXPECT_EQ(device->error(), VirtqError::ok);
  EXPECT_LT(doorbells, kMessages) << "event idx should suppress some doorbells";
}

}  // namespace
}  // namespace cellink::transports
