// The record ring: wire format, RingProducer and RingConsumer together, in one
// thread. Spec: docs/ring.md. The shared words are read and written here the
// way the other cell would, so the hostile-peer tests play that cell.
// Multi-thread behaviour lives in tests/stress/ring_stress_test.cpp.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "aligned_section.hpp"
#include "cellink/transports/ring_consumer.hpp"
#include "cellink/transports/ring_format.hpp"
#include "cellink/transports/ring_producer.hpp"

namespace cellink::transports {

// gtest prints these as their describe() text (found by argument-dependent lookup).
void PrintTo(ProduceStatus status, std::ostream* out) {
  *out << describe(status);
}
void PrintTo(ConsumeStatus status, std::ostream* out) {
  *out << describe(status);
}
void PrintTo(RingError error, std::ostream* out) {
  *out << describe(error);
}

namespace {

using Reservation = RingProducer::Reservation;

using Section = test_support::AlignedSection;

// One ring in plain memory: both ends, and the shared words as the peer sees them.
template <std::size_t MaxHeld = 64>
class TestRing {
 public:
  explicit TestRing(std::uint64_t capacity, bool producer_initialised = true)
      : producer_section_(kProducerAreaOverhead + capacity), consumer_section_(kConsumerAreaSize) {
    if (producer_initialised) {
      EXPECT_TRUE(init_producer());
    }
    EXPECT_TRUE(consumer.init(producer_section_.bytes(), consumer_section_.bytes()));
  }
  [[nodiscard]] bool init_producer() {
    return producer.init(producer_section_.bytes(), consumer_section_.bytes());
  }

  [[nodiscard]] std::uint64_t capacity() const { return consumer.capacity(); }
  [[nodiscard]] std::byte* data() {
    return producer_section_.bytes().data() + kProducerAreaOverhead;
  }
  [[nodiscard]] RingHeader& header() { return area().header; }
  [[nodiscard]] std::uint64_t produced() { return word(area().produced.value); }
  void set_produced(std::uint64_t value) { set_word(area().produced.value, value); }
  [[nodiscard]] std::uint64_t consumed() { return word(consumer_area().consumed.value); }
  void set_consumed(std::uint64_t value) { set_word(consumer_area().consumed.value, value); }
  [[nodiscard]] std::uint64_t wake_after() { return word(consumer_area().wake_after.value); }
  [[nodiscard]] RecordHeader header_at(std::uint64_t index) { return unpack(word(slot(index))); }
  void set_header_at(std::uint64_t index, RecordHeader header) {
    set_word(slot(index), pack(header));
  }

  [[nodiscard]] bool inside_data(std::span<const std::byte> payload) {
    return payload.data() >= data() && payload.size() <= capacity() &&
           static_cast<std::uint64_t>(payload.data() - data()) <= capacity() - payload.size();
  }

  RingProducer producer;
  RingConsumer<MaxHeld> consumer;

 private:
  static std::uint64_t word(std::uint64_t& field) {
    return std::atomic_ref<std::uint64_t>(field).load(std::memory_order_acquire);
  }
  static void set_word(std::uint64_t& field, std::uint64_t value) {
    std::atomic_ref<std::uint64_t>(field).store(value, std::memory_order_release);
  }
  ProducerArea& area() {
    return *reinterpret_cast<ProducerArea*>(producer_section_.bytes().data());
  }
  ConsumerArea& consumer_area() {
    return *reinterpret_cast<ConsumerArea*>(consumer_section_.bytes().data());
  }
  std::uint64_t& slot(std::uint64_t index) {
    return *reinterpret_cast<std::uint64_t*>(data() + (index & (capacity() - 1)));
  }

  Section producer_section_;
  Section consumer_section_;
};

// Payload bytes: a window into a fixed random table, chosen by `seed`.
std::span<const std::byte> pattern(std::uint64_t seed, std::size_t size) {
  static const std::array<std::byte, 1U << 16> table = [] {
    std::array<std::byte, 1U << 16> bytes{};
    std::mt19937 random(0x52494e47);
    for (std::byte& byte : bytes) byte = static_cast<std::byte>(random());
    return bytes;
  }();
  const std::size_t offset = (seed * 0x9e3779b97f4a7c15ULL >> 40) % (table.size() / 2);
  return std::span<const std::byte>(table).subspan(offset, size);
}
void fill(std::span<std::byte> payload, std::uint64_t seed) {
  const auto bytes = pattern(seed, payload.size());
  std::copy(bytes.begin(), bytes.end(), payload.begin());
}
::testing::AssertionResult matches(std::span<const std::byte> payload, std::uint64_t seed) {
  const auto expected = pattern(seed, payload.size());
  const auto mismatch = std::mismatch(payload.begin(), payload.end(), expected.begin());
  if (mismatch.first == payload.end()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "payload byte " << (mismatch.first - payload.begin()) << " of " << payload.size()
         << " differs (seed " << seed << ")";
}

// Reserves, fills and commits one record; does not publish.
template <class Ring>
void commit_one(Ring& ring, std::uint32_t size, std::uint16_t channel, std::uint64_t seed) {
  Reservation reservation;
  ASSERT_EQ(ring.producer.reserve(size, channel, reservation), ProduceStatus::ok) << size;
  ASSERT_EQ(reservation.payload.size(), size);
  fill(reservation.payload, seed);
  ASSERT_EQ(ring.producer.commit(reservation, size), ProduceStatus::ok);
}
template <class Ring>
void send(Ring& ring, std::uint32_t size, std::uint16_t channel, std::uint64_t seed) {
  ASSERT_NO_FATAL_FAILURE(commit_one(ring, size, channel, seed));
  (void)ring.producer.publish();
}
template <class Ring>
void expect_record(Ring& ring, const Record& record, std::uint32_t size, std::uint16_t channel,
                   std::uint64_t seed) {
  EXPECT_EQ(record.payload.size(), size);
  EXPECT_EQ(record.channel, channel);
  EXPECT_TRUE(ring.inside_data(record.payload));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(record.payload.data()) % kRecordAlignment, 0U);
  EXPECT_TRUE(matches(record.payload, seed));
}
// Peeks the next record, checks it, and keeps it held.
template <class Ring>
Record take(Ring& ring, std::uint32_t size, std::uint16_t channel, std::uint64_t seed) {
  Record record;
  const ConsumeStatus status = ring.consumer.peek(record);
  EXPECT_EQ(status, ConsumeStatus::ok) << "expected a " << size << "-byte record";
  if (status == ConsumeStatus::ok) expect_record(ring, record, size, channel, seed);
  return record;
}
// Peeks the next record, checks it, and releases it.
template <class Ring>
void receive(Ring& ring, std::uint32_t size, std::uint16_t channel, std::uint64_t seed) {
  Record record;
  ASSERT_EQ(ring.consumer.peek(record), ConsumeStatus::ok)
      << "expected a " << size << "-byte record on channel " << channel << ": "
      << describe(ring.consumer.diagnostic().error);
  expect_record(ring, record, size, channel, seed);
  EXPECT_EQ(ring.consumer.release(record), ConsumeStatus::ok);
}

// Moves an empty ring's indices to `index` (< capacity) with consumed fillers.
template <class Ring>
void advance(Ring& ring, std::uint64_t index) {
  while (ring.producer.published() < index) {
    const std::uint64_t stride = std::min(ring.capacity() / 2, index - ring.producer.published());
    const auto size = static_cast<std::uint32_t>(stride - sizeof(RecordHeader));
    ASSERT_NO_FATAL_FAILURE(send(ring, size, 0xf111, index));
    ASSERT_NO_FATAL_FAILURE(receive(ring, size, 0xf111, index));
  }
}

struct RawRecord {
  std::uint64_t index;
  RecordHeader header;
};
// The records in shared memory between two indices, walked as the spec says;
// fails the test if one straddles the end of the data area.
template <class Ring>
std::vector<RawRecord> raw_records(Ring& ring, std::uint64_t from, std::uint64_t to) {
  std::vector<RawRecord> records;
  for (std::uint64_t index = from; index < to;
       index += record_stride(records.back().header.length)) {
    records.push_back({index, ring.header_at(index)});
    EXPECT_LE(record_stride(records.back().header.length),
              ring.capacity() - (index & (ring.capacity() - 1)))
        << "record at index " << index << " straddles the end";
  }
  return records;
}

std::string capacity_name(const ::testing::TestParamInfo<std::uint64_t>& info) {
  return "Capacity" + std::to_string(info.param);
}

// ---------------------------------------------------------------- format

TEST(RingFormat, RecordHeaderIsOneLittleEndianWordOfLengthChannelFlags) {
  const std::uint64_t word = pack({0x11223344, 0x5566, kRecordPadding});
  std::array<std::uint8_t, 8> bytes{};
  std::memcpy(bytes.data(), &word, sizeof(word));
  EXPECT_EQ(bytes, (std::array<std::uint8_t, 8>{0x44, 0x33, 0x22, 0x11, 0x66, 0x55, 0x01, 0x00}));
}

TEST(RingFormat, CapacityIsTheLargestPowerOfTwoAfterTheHeaderLines) {
  for (std::uint64_t capacity = kMinRingCapacity; capacity <= (1ULL << 40); capacity *= 2) {
    EXPECT_EQ(ring_capacity(kProducerAreaOverhead + capacity), capacity);
    EXPECT_EQ(ring_capacity(kProducerAreaOverhead + 2 * capacity - 1), capacity);
    // Half the ring, or what the u32 length field holds, whichever is less.
    const std::uint64_t largest = std::min<std::uint64_t>(capacity / 2 - 8, 0xfffffff8U);
    EXPECT_EQ(max_payload(capacity), largest);
    EXPECT_LE(record_stride(max_payload(capacity)), capacity / 2);
  }
  EXPECT_EQ(ring_capacity(kProducerAreaOverhead + kMinRingCapacity - 1), 0U);
}

// describe() covers every enumerator (ok .. the last one) with its own text;
// only a value outside the enum gets the fallback.
template <typename Status>
void expect_distinct_descriptions(Status last, const char* fallback) {
  std::vector<std::string> seen;
  for (int value = 0; value <= static_cast<int>(last); ++value) {
    const char* text = describe(static_cast<Status>(value));
    EXPECT_EQ(std::string(text).find("unknown"), std::string::npos) << "value " << value;
    EXPECT_EQ(std::count(seen.begin(), seen.end(), text), 0) << "value " << value << ": " << text;
    seen.emplace_back(text);
  }
  EXPECT_STREQ(describe(static_cast<Status>(static_cast<int>(last) + 1)), fallback);
}

TEST(RingStatus, EveryProduceStatusHasItsOwnDescription) {
  expect_distinct_descriptions(ProduceStatus::broken, "unknown produce status");
}

TEST(RingStatus, EveryConsumeStatusHasItsOwnDescription) {
  expect_distinct_descriptions(ConsumeStatus::not_held, "unknown consume status");
}

// The reference: produced moves old -> new one index at a time, modulo 2^64.
bool walk_passes(std::uint64_t wake_after, std::uint64_t new_index, std::uint64_t old_index) {
  for (std::uint64_t index = old_index; index != new_index; ++index) {
    if (index == wake_after) return true;
  }
  return false;
}

TEST(RingFormat, CrossesAgreesWithABruteForceWalkNearEveryBaseIncludingTheTopOf2To64) {
  const std::uint64_t bases[] = {0, 1, 4096, 1ULL << 32, (1ULL << 63) - 7, ~0ULL - 40, ~0ULL};
  for (const std::uint64_t base : bases) {
    for (std::uint64_t old_step = 0; old_step < 24; ++old_step) {
      for (std::uint64_t distance = 0; distance < 24; ++distance) {
        for (std::uint64_t wake_step = 0; wake_step < 64; ++wake_step) {
          const std::uint64_t old_index = base + old_step;
          const std::uint64_t new_index = old_index + distance;
          const std::uint64_t wake_after = base - 16 + wake_step;
          ASSERT_EQ(crosses(wake_after, new_index, old_index),
                    walk_passes(wake_after, new_index, old_index))
              << "wake " << wake_after << " old " << old_index << " new " << new_index;
        }
      }
    }
  }
}

TEST(RingFormat, CrossesAgreesWithABruteForceWalkOnRandomTriples) {
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    std::mt19937_64 random(seed);
    for (int i = 0; i < 400; ++i) {
      const std::uint64_t old_index = random();
      const std::uint64_t new_index = old_index + random() % 600;
      const std::uint64_t wake_after =
          i % 8 == 0 ? random() : old_index + random() % 1200 - 300;  // near, or anywhere
      ASSERT_EQ(crosses(wake_after, new_index, old_index),
                walk_passes(wake_after, new_index, old_index))
          << "seed " << seed << " wake " << wake_after << " old " << old_index << " new "
          << new_index;
    }
  }
}

TEST(RingFormat, UnarmedValueFiresOnlyOnAMoveOverTheTopOfTheIndexSpace) {
  EXPECT_FALSE(crosses(kNotArmed, 4096, 0));
  EXPECT_FALSE(crosses(kNotArmed, ~0ULL, ~0ULL - 4096));
  // docs/ring.md says "never fires"; at 2^64 it does (harmless: one spare doorbell).
  EXPECT_TRUE(crosses(kNotArmed, 8, ~0ULL - 7));
}

// ---------------------------------------------------------------- round trip

class RingRoundTrip : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(RingRoundTrip, EverySizeFromZeroToMaxPayloadArrivesIntactWithItsChannel) {
  TestRing<> ring(GetParam());
  for (std::uint32_t size = 0; size <= max_payload(GetParam()); ++size) {
    const auto channel = static_cast<std::uint16_t>(size * 0x9e37U);
    ASSERT_NO_FATAL_FAILURE(send(ring, size, channel, size));
    ASSERT_NO_FATAL_FAILURE(receive(ring, size, channel, size));
    ASSERT_EQ(ring.consumed(), ring.producer.published());
  }
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);
}

INSTANTIATE_TEST_SUITE_P(Capacities, RingRoundTrip, ::testing::Values(64, 256, 4096),
                         capacity_name);

// ---------------------------------------------------------------- wrap

class RingWrap : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(RingWrap, AtEveryOffsetARecordThatDoesNotFitWrapsBehindOnePaddingRecord) {
  const std::uint64_t capacity = GetParam();
  const std::uint64_t largest = max_payload(capacity);
  for (std::uint64_t offset = 0; offset < capacity; offset += 8) {
    const std::uint64_t room = capacity - offset;  // contiguous bytes before the end
    // Exactly filling the room, one byte too big for it, and the largest.
    for (const std::uint64_t size : {room - 8, room - 7, largest}) {
      if (size > largest) continue;
      TestRing<> ring(capacity);
      ASSERT_NO_FATAL_FAILURE(advance(ring, offset));
      const auto channel = static_cast<std::uint16_t>(offset);
      ASSERT_NO_FATAL_FAILURE(send(ring, static_cast<std::uint32_t>(size), channel, offset));
      const auto records = raw_records(ring, offset, ring.producer.published());
      if (record_stride(size) > room) {
        ASSERT_EQ(records.size(), 2U) << "offset " << offset << " size " << size;
        EXPECT_EQ(records[0].header.flags, kRecordPadding);
        EXPECT_EQ(records[0].header.length, room - sizeof(RecordHeader));
        EXPECT_EQ(records[0].header.channel, 0);
        EXPECT_EQ(records[1].index, capacity) << "the record restarts at position 0";
      } else {
        ASSERT_EQ(records.size(), 1U) << "offset " << offset << " size " << size;
        EXPECT_EQ(records[0].index, offset);
      }
      ASSERT_NO_FATAL_FAILURE(receive(ring, static_cast<std::uint32_t>(size), channel, offset));
      EXPECT_EQ(ring.consumed(), ring.producer.published()) << "padding is released too";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Capacities, RingWrap, ::testing::Values(64, 256, 4096), capacity_name);

// ---------------------------------------------------------------- full and empty

TEST(RingEdges, PeekOnAnEmptyRingReturnsEmpty) {
  TestRing<> ring(256);
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);
  ASSERT_NO_FATAL_FAILURE(send(ring, 3, 1, 1));
  ASSERT_NO_FATAL_FAILURE(receive(ring, 3, 1, 1));
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);
}

TEST(RingEdges, FillsToExactlyCapacityThenOneReleaseFreesExactlyItsStride) {
  TestRing<> ring(256);
  for (int i = 0; i < 8; ++i) ASSERT_NO_FATAL_FAILURE(send(ring, 24, 1, i));  // 8 x 32 bytes
  EXPECT_EQ(ring.producer.published(), 256U);
  Reservation reservation;
  EXPECT_EQ(ring.producer.reserve(0, 1, reservation), ProduceStatus::full);
  ASSERT_NO_FATAL_FAILURE(receive(ring, 24, 1, 0));
  EXPECT_EQ(ring.producer.reserve(25, 1, reservation), ProduceStatus::full);  // 40 > 32
  ASSERT_EQ(ring.producer.reserve(24, 1, reservation), ProduceStatus::ok);
  EXPECT_EQ(ring.producer.commit(reservation, 24), ProduceStatus::ok);
  EXPECT_EQ(ring.producer.reserve(0, 1, reservation), ProduceStatus::full);
}

TEST(RingEdges, FullIsReportedExactlyWhenTheRecordAndItsWrapPaddingDoNotFit) {
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    std::mt19937_64 random(seed);
    TestRing<> ring(512);
    std::uint64_t reserved = 0;
    for (int step = 0; step < 2000; ++step) {
      if (random() % 3 == 0) {
        Record record;
        if (ring.consumer.peek(record) == ConsumeStatus::ok) {
          ASSERT_EQ(ring.consumer.release(record), ConsumeStatus::ok);
        }
        continue;
      }
      const auto size = static_cast<std::uint32_t>(random() % (max_payload(512) + 1));
      const std::uint64_t room = 512 - (reserved & 511);
      const std::uint64_t need = record_stride(size) + (record_stride(size) > room ? room : 0);
      const bool fits = need <= 512 - (reserved - ring.consumed());
      Reservation reservation;
      ASSERT_EQ(ring.producer.reserve(size, 2, reservation),
                fits ? ProduceStatus::ok : ProduceStatus::full)
          << "seed " << seed << " step " << step << " size " << size;
      if (!fits) continue;
      reserved += need;
      ASSERT_EQ(ring.producer.commit(reservation, size), ProduceStatus::ok);
      (void)ring.producer.publish();
    }
  }
}

TEST(RingEdges, MaxPayloadFitsAndOneByteMoreIsTooLarge) {
  for (std::uint64_t capacity = kMinRingCapacity; capacity <= 65536; capacity *= 2) {
    TestRing<> ring(capacity);
    const auto largest = static_cast<std::uint32_t>(max_payload(capacity));
    EXPECT_EQ(ring.producer.max_payload_size(), largest);
    Reservation reservation;
    EXPECT_EQ(ring.producer.reserve(largest + 1, 1, reservation), ProduceStatus::too_large);
    EXPECT_EQ(ring.producer.reserve(~0U, 1, reservation), ProduceStatus::too_large);
    const std::vector<std::byte> bytes(largest + 1);
    EXPECT_EQ(ring.producer.write(bytes, 1), ProduceStatus::too_large);
    ASSERT_NO_FATAL_FAILURE(send(ring, largest, 1, capacity));
    ASSERT_NO_FATAL_FAILURE(receive(ring, largest, 1, capacity));
  }
}

// ---------------------------------------------------------------- reservations

TEST(RingReservations, ThreeReservationsInFlightArriveInReservationOrder) {
  TestRing<> ring(256);
  Reservation reservations[3];
  for (std::uint32_t i = 0; i < 3; ++i) {
    ASSERT_EQ(ring.producer.reserve(10 + i, static_cast<std::uint16_t>(i), reservations[i]),
              ProduceStatus::ok);
    fill(reservations[i].payload, i);
  }
  for (std::uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ring.producer.commit(reservations[i], 10 + i), ProduceStatus::ok);
  }
  (void)ring.producer.publish();
  for (std::uint32_t i = 0; i < 3; ++i) receive(ring, 10 + i, static_cast<std::uint16_t>(i), i);
}

TEST(RingReservations, CommittingANewerReservationFirstReturnsOutOfOrder) {
  TestRing<> ring(256);
  Reservation first, second, third;
  ASSERT_EQ(ring.producer.reserve(8, 1, first), ProduceStatus::ok);
  ASSERT_EQ(ring.producer.reserve(8, 2, second), ProduceStatus::ok);
  ASSERT_EQ(ring.producer.reserve(8, 3, third), ProduceStatus::ok);
  EXPECT_EQ(ring.producer.commit(second, 8), ProduceStatus::out_of_order);
  EXPECT_EQ(ring.producer.commit(third, 8), ProduceStatus::out_of_order);
  EXPECT_EQ(ring.producer.commit(first, 8), ProduceStatus::ok);
  EXPECT_EQ(ring.producer.commit(first, 8), ProduceStatus::out_of_order) << "committed twice";
  EXPECT_EQ(ring.producer.commit(third, 8), ProduceStatus::out_of_order);
  EXPECT_EQ(ring.producer.commit(second, 8), ProduceStatus::ok);
  EXPECT_EQ(ring.producer.commit(third, 8), ProduceStatus::ok);
  EXPECT_FALSE(ring.producer.broken());
}

TEST(RingReservations, CommittingMoreBytesThanReservedIsRejected) {
  TestRing<> ring(256);
  Reservation reservation;
  ASSERT_EQ(ring.producer.reserve(8, 1, reservation), ProduceStatus::ok);
  EXPECT_EQ(ring.producer.commit(reservation, 9), ProduceStatus::bad_reservation);
  EXPECT_EQ(ring.producer.commit(reservation, 8), ProduceStatus::ok);
}

TEST(RingReservations, ShrunkCommitOfTheNewestReservationGivesTheRestBack) {
  TestRing<> ring(256);
  for (std::uint32_t reserved = 0; reserved <= 40; ++reserved) {
    for (std::uint32_t used = 0; used <= reserved; ++used) {
      Reservation reservation;
      ASSERT_EQ(ring.producer.reserve(reserved, 4, reservation), ProduceStatus::ok);
      fill(reservation.payload.first(used), used);
      ASSERT_EQ(ring.producer.commit(reservation, used), ProduceStatus::ok);
      (void)ring.producer.publish();
      const std::uint64_t end = reservation.header + record_stride(used);
      EXPECT_EQ(ring.producer.published(), end) << reserved << " shrunk to " << used;
      ASSERT_NO_FATAL_FAILURE(receive(ring, used, 4, used));
      Record record;
      EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);
      EXPECT_EQ(ring.consumed(), end) << "no padding left for the consumer to skip";
    }
  }
}

TEST(RingReservations, ShrunkCommitBeforeALaterReservationLeavesPaddingTheConsumerSkips) {
  TestRing<> ring(256);
  for (std::uint32_t reserved = 0; reserved <= 40; ++reserved) {
    for (std::uint32_t used = 0; used <= reserved; ++used) {
      Reservation first;
      Reservation second;
      ASSERT_EQ(ring.producer.reserve(reserved, 4, first), ProduceStatus::ok);
      ASSERT_EQ(ring.producer.reserve(8, 5, second), ProduceStatus::ok);
      fill(first.payload.first(used), used);
      fill(second.payload, 8);
      ASSERT_EQ(ring.producer.commit(first, used), ProduceStatus::ok);
      ASSERT_EQ(ring.producer.commit(second, 8), ProduceStatus::ok);
      (void)ring.producer.publish();
      const auto records = raw_records(ring, first.header, first.end);
      const bool padded = record_stride(used) < record_stride(reserved);
      ASSERT_EQ(records.size(), padded ? 2U : 1U) << reserved << " shrunk to " << used;
      if (padded) {
        EXPECT_EQ(records[1].header.flags, kRecordPadding);
        EXPECT_EQ(records[1].header.length,
                  record_stride(reserved) - record_stride(used) - sizeof(RecordHeader));
      }
      ASSERT_NO_FATAL_FAILURE(receive(ring, used, 4, used));
      ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 5, 8));
      EXPECT_EQ(ring.consumed(), second.end);
    }
  }
}

TEST(RingReservations, AbandonedNewestReservationLeavesNothingBehind) {
  TestRing<> ring(256);
  Reservation reservation;
  ASSERT_EQ(ring.producer.reserve(100, 4, reservation), ProduceStatus::ok);
  ASSERT_EQ(ring.producer.abandon(reservation), ProduceStatus::ok);
  EXPECT_FALSE(ring.producer.publish()) << "nothing to publish";
  ASSERT_NO_FATAL_FAILURE(send(ring, 8, 1, 7));
  ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 7));
  EXPECT_EQ(ring.consumed(), ring.producer.published());
}

TEST(RingReservations, NothingIsVisibleBeforePublish) {
  TestRing<> ring(256);
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(commit_one(ring, 12, 1, i));
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);
  EXPECT_EQ(ring.produced(), 0U);
  EXPECT_EQ(ring.producer.published(), 0U);
  EXPECT_TRUE(ring.consumer.arm_wakeup()) << "nothing published: safe to sleep";
}

TEST(RingReservations, OnePublishMakesTheWholeBatchVisible) {
  TestRing<> ring(256);
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(commit_one(ring, 12, 1, i));
  (void)ring.producer.publish();
  EXPECT_EQ(ring.produced(), 3 * record_stride(12));
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(receive(ring, 12, 1, i));
}

// write() commits at once, so with a reservation in flight it must refuse
// rather than strand its own reservation and wedge every later commit.
TEST(RingReservations, WriteWhileAReservationIsInFlightDoesNotWedgeTheRing) {
  TestRing<> ring(256);
  Reservation in_flight;
  ASSERT_EQ(ring.producer.reserve(8, 1, in_flight), ProduceStatus::ok);
  fill(in_flight.payload, 1);
  const auto second = pattern(2, 8);
  const ProduceStatus status = ring.producer.write(second, 2);
  ASSERT_EQ(ring.producer.commit(in_flight, 8), ProduceStatus::ok);
  EXPECT_EQ(ring.producer.write(pattern(3, 8), 3), ProduceStatus::ok)
      << "after write() answered " << ::testing::PrintToString(status)
      << " with a reservation in flight";
  (void)ring.producer.publish();
  ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 1));
  if (status == ProduceStatus::ok) {
    ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 2, 2));
  }
  ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 3, 3));
}

// A Reservation that reserve() never filled in (say, after it said full)
// must not be accepted: it would stamp a header into the in-flight record.
TEST(RingReservations, CommitOfAReservationThatWasNeverMadeIsRejected) {
  TestRing<> ring(256);
  Reservation made;
  ASSERT_EQ(ring.producer.reserve(32, 1, made), ProduceStatus::ok);
  fill(made.payload, 7);
  const Reservation never_made;
  EXPECT_NE(ring.producer.commit(never_made, 0), ProduceStatus::ok);
  ASSERT_EQ(ring.producer.commit(made, 32), ProduceStatus::ok);
  (void)ring.producer.publish();
  ASSERT_NO_FATAL_FAILURE(receive(ring, 32, 1, 7));
}

// ---------------------------------------------------------------- release

TEST(RingRelease, HoldingTheFirstRecordKeepsConsumedAtItsStart) {
  TestRing<> ring(256);
  ASSERT_NO_FATAL_FAILURE(advance(ring, 40));
  for (int i = 0; i < 5; ++i) ASSERT_NO_FATAL_FAILURE(send(ring, 16, 1, i));
  const Record first = take(ring, 16, 1, 0);
  for (int i = 1; i < 5; ++i) ASSERT_NO_FATAL_FAILURE(receive(ring, 16, 1, i));
  EXPECT_EQ(ring.consumer.consumed(), 40U);
  EXPECT_EQ(ring.consumed(), 40U);
  EXPECT_EQ(ring.consumer.release(first), ConsumeStatus::ok);
  EXPECT_EQ(ring.consumed(), 40 + 5 * record_stride(16)) << "moves over the released prefix";
}

TEST(RingRelease, ProducerCannotReuseTheSpaceOfAHeldRecord) {
  TestRing<> ring(256);
  for (int i = 0; i < 8; ++i) ASSERT_NO_FATAL_FAILURE(send(ring, 24, 1, i));  // full
  const Record first = take(ring, 24, 1, 0);
  for (int i = 1; i < 8; ++i) ASSERT_NO_FATAL_FAILURE(receive(ring, 24, 1, i));
  Reservation reservation;
  EXPECT_EQ(ring.producer.reserve(0, 1, reservation), ProduceStatus::full);
  EXPECT_TRUE(matches(first.payload, 0)) << "the held record is intact";
  EXPECT_EQ(ring.consumer.release(first), ConsumeStatus::ok);
  for (int i = 0; i < 8; ++i) ASSERT_NO_FATAL_FAILURE(commit_one(ring, 24, 2, i));
}

TEST(RingRelease, ReleaseOutOfOrderDoesNotBlockLaterRecords) {
  TestRing<> ring(4096);
  ASSERT_NO_FATAL_FAILURE(send(ring, 100, 1, 0));
  const Record held = take(ring, 100, 1, 0);
  for (int i = 1; i < 40; ++i) {
    ASSERT_NO_FATAL_FAILURE(send(ring, 50, 1, i));
    ASSERT_NO_FATAL_FAILURE(receive(ring, 50, 1, i));
  }
  EXPECT_EQ(ring.consumer.release(held), ConsumeStatus::ok);
  EXPECT_EQ(ring.consumed(), ring.producer.published());
}

TEST(RingRelease, ReleasingARecordTwiceReturnsNotHeld) {
  TestRing<> ring(256);
  ASSERT_NO_FATAL_FAILURE(send(ring, 8, 1, 0));
  ASSERT_NO_FATAL_FAILURE(send(ring, 8, 1, 1));
  const Record first = take(ring, 8, 1, 0);
  const Record second = take(ring, 8, 1, 1);
  EXPECT_EQ(ring.consumer.release(second), ConsumeStatus::ok);
  EXPECT_EQ(ring.consumer.release(second), ConsumeStatus::not_held) << "still in the window";
  EXPECT_EQ(ring.consumer.release(first), ConsumeStatus::ok);
  EXPECT_EQ(ring.consumer.release(first), ConsumeStatus::not_held) << "already retired";
  EXPECT_EQ(ring.consumed(), 2 * record_stride(8));
}

TEST(RingRelease, ReleasingARecordNeverPeekedReturnsNotHeld) {
  TestRing<> ring(256);
  ASSERT_NO_FATAL_FAILURE(send(ring, 8, 1, 0));
  ASSERT_NO_FATAL_FAILURE(send(ring, 8, 1, 1));
  Record next_one = take(ring, 8, 1, 0);
  ++next_one.sequence;  // the record behind it, published but not peeked
  EXPECT_EQ(ring.consumer.release(next_one), ConsumeStatus::not_held);
  EXPECT_EQ(ring.consumer.release(Record{{}, 0, 1000}), ConsumeStatus::not_held);
  EXPECT_EQ(ring.consumed(), 0U);
}

TEST(RingRelease, PeekReturnsTooManyHeldAtMaxHeld) {
  TestRing<4> ring(256);
  for (int i = 0; i < 6; ++i) ASSERT_NO_FATAL_FAILURE(send(ring, 8, 1, i));
  std::vector<Record> held;
  for (int i = 0; i < 4; ++i) held.push_back(take(ring, 8, 1, i));
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::too_many_held);
  EXPECT_EQ(ring.consumer.held(), 4U);
  EXPECT_EQ(ring.consumer.release(held[0]), ConsumeStatus::ok);
  ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 4));
}

TEST(RingRelease, TooManyHeldCountsFromTheOldestUnreleasedRecord) {
  TestRing<4> ring(256);
  for (int i = 0; i < 6; ++i) ASSERT_NO_FATAL_FAILURE(send(ring, 8, 1, i));
  const Record oldest = take(ring, 8, 1, 0);
  for (int i = 1; i < 4; ++i) ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, i));
  Record record;
  // One record is held, but the window from it to the next peek is full.
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::too_many_held);
  EXPECT_EQ(ring.consumer.release(oldest), ConsumeStatus::ok);
  ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 4));
}

// ---------------------------------------------------------------- notification

TEST(RingNotification, PublishAsksForNoDoorbellWhileTheConsumerIsNotArmed) {
  TestRing<> ring(256);
  EXPECT_EQ(ring.wake_after(), kNotArmed);
  for (int i = 0; i < 20; ++i) {
    ASSERT_NO_FATAL_FAILURE(commit_one(ring, 8, 1, i));
    EXPECT_FALSE(ring.producer.publish());
    ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, i));
  }
}

TEST(RingNotification, ArmWakeupPublishesTheReadIndex) {
  TestRing<> ring(256);
  ASSERT_NO_FATAL_FAILURE(advance(ring, 72));
  EXPECT_TRUE(ring.consumer.arm_wakeup());
  EXPECT_EQ(ring.wake_after(), 72U);
}

TEST(RingNotification, FirstPublishAfterArmingAsksForADoorbellAndTheNextDoesNot) {
  TestRing<> ring(256);
  ASSERT_TRUE(ring.consumer.arm_wakeup());
  EXPECT_FALSE(ring.producer.publish()) << "nothing committed, nothing published";
  ASSERT_NO_FATAL_FAILURE(commit_one(ring, 8, 1, 0));
  EXPECT_TRUE(ring.producer.publish());
  ASSERT_NO_FATAL_FAILURE(commit_one(ring, 8, 1, 1));
  EXPECT_FALSE(ring.producer.publish()) << "one arming, one doorbell";
  ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 0));
  ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 1));
  ASSERT_NO_FATAL_FAILURE(commit_one(ring, 8, 1, 2));
  EXPECT_FALSE(ring.producer.publish()) << "not re-armed";
}

TEST(RingNotification, EachArmingAsksForExactlyOneDoorbell) {
  TestRing<> ring(256);
  for (int round = 0; round < 100; ++round) {  // wraps the ring several times
    ASSERT_TRUE(ring.consumer.arm_wakeup());
    ASSERT_NO_FATAL_FAILURE(commit_one(ring, 8, 1, round));
    EXPECT_TRUE(ring.producer.publish()) << "round " << round;
    ASSERT_NO_FATAL_FAILURE(commit_one(ring, 16, 1, round));
    EXPECT_FALSE(ring.producer.publish()) << "round " << round;
    ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, round));
    ASSERT_NO_FATAL_FAILURE(receive(ring, 16, 1, round));
  }
}

TEST(RingNotification, ArmWakeupReturnsFalseWhenARecordArrivedBeforeItRechecked) {
  TestRing<> ring(256);
  Record record;
  ASSERT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);
  ASSERT_NO_FATAL_FAILURE(commit_one(ring, 8, 1, 0));
  EXPECT_FALSE(ring.producer.publish()) << "not armed yet";
  EXPECT_FALSE(ring.consumer.arm_wakeup()) << "must not sleep: the record is there";
  ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 0));
}

// Before ready() has seen the magic, `produced` may be left from an earlier
// session: arm_wakeup() must not read and cache it, or it would yield
// phantom records (or break the ring) once the producer starts.
TEST(RingNotification, ArmWakeupBeforeTheProducerIsReadyIgnoresAStaleProducedIndex) {
  for (const std::uint64_t stale : {std::uint64_t{48}, std::uint64_t{1} << 20}) {
    TestRing<> ring(4096, /*producer_initialised=*/false);
    ring.set_produced(stale);
    Record record;
    ASSERT_EQ(ring.consumer.peek(record), ConsumeStatus::not_ready);
    (void)ring.consumer.arm_wakeup();
    ASSERT_TRUE(ring.init_producer());
    ASSERT_NO_FATAL_FAILURE(commit_one(ring, 8, 1, 5));
    (void)ring.producer.publish();
    ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 5)) << "stale produced " << stale;
    EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty)
        << "stale produced " << stale << ": a record the producer never wrote, or "
        << describe(ring.consumer.diagnostic().error);
  }
}

// ---------------------------------------------------------------- hostile producer

// Checks that the consumer broke with `error` and stays broken: it still yields
// nothing after the ring is made to look healthy again (valid empty records
// from its read index on, and a `produced` that covers them).
template <class Ring>
void expect_stays_broken(Ring& ring, RingError error) {
  ASSERT_TRUE(ring.consumer.broken());
  const RingDiagnostic diagnostic = ring.consumer.diagnostic();
  EXPECT_EQ(diagnostic.error, error) << describe(diagnostic.error);
  const std::uint64_t from = diagnostic.index;
  const std::uint64_t to = std::max(ring.produced(), from + 64);
  for (std::uint64_t index = from; index < to; index += 8) ring.set_header_at(index, {0, 9, 0});
  ring.set_produced(to);
  for (int i = 0; i < 100; ++i) {
    Record record;
    ASSERT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
    EXPECT_FALSE(ring.consumer.arm_wakeup());
  }
  EXPECT_EQ(ring.consumer.diagnostic().error, diagnostic.error);
  EXPECT_EQ(ring.consumer.diagnostic().index, diagnostic.index);
}

template <class Ring>
void expect_diagnostic(Ring& ring, std::uint64_t index, std::uint64_t value, std::uint64_t limit) {
  EXPECT_EQ(ring.consumer.diagnostic().index, index);
  EXPECT_EQ(ring.consumer.diagnostic().value, value);
  EXPECT_EQ(ring.consumer.diagnostic().limit, limit);
}

TEST(RingHostileProducer, ProducedMovingBackwardsBreaksTheRing) {
  TestRing<> ring(256);
  ASSERT_NO_FATAL_FAILURE(advance(ring, 96));
  ring.set_produced(88);
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  expect_diagnostic(ring, 96, 88, 96);
  expect_stays_broken(ring, RingError::produced_went_backwards);
}

TEST(RingHostileProducer, ProducedMoreThanCapacityAheadOfConsumedBreaksTheRing) {
  TestRing<> ring(256);
  ASSERT_NO_FATAL_FAILURE(advance(ring, 96));
  ring.set_produced(96 + 256);  // exactly a full ring ahead: allowed
  Record record;
  ConsumeStatus status = ConsumeStatus::ok;
  while ((status = ring.consumer.peek(record)) == ConsumeStatus::ok) {
  }
  ASSERT_EQ(status, ConsumeStatus::empty) << describe(ring.consumer.diagnostic().error);
  ring.set_produced(96 + 256 + 8);
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  expect_diagnostic(ring, 96 + 256, 96 + 256 + 8, 96 + 256);
  expect_stays_broken(ring, RingError::produced_beyond_capacity);
}

TEST(RingHostileProducer, RecordOverrunningProducedBreaksTheRing) {
  TestRing<> ring(256);
  ring.set_header_at(0, {24, 1, 0});
  ring.set_produced(16);
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  expect_diagnostic(ring, 0, 32, 16);
  expect_stays_broken(ring, RingError::record_overruns_published);
}

TEST(RingHostileProducer, RecordCrossingTheEndOfTheDataAreaBreaksTheRing) {
  TestRing<> ring(256);
  ASSERT_NO_FATAL_FAILURE(advance(ring, 240));
  ring.set_header_at(240, {16, 1, 0});  // stride 24 > 16 bytes left
  ring.set_produced(240 + 24);
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  expect_diagnostic(ring, 240, 24, 16);
  expect_stays_broken(ring, RingError::record_crosses_end);
}

TEST(RingHostileProducer, EveryUnknownFlagBitBreaksTheRing) {
  for (int bit = 2; bit < 16; ++bit) {
    for (const std::uint16_t padding : {std::uint16_t{0}, kRecordPadding}) {
      TestRing<> ring(256);
      const auto flags = static_cast<std::uint16_t>((1U << bit) | padding);
      ring.set_header_at(0, {0, 1, flags});
      ring.set_produced(8);
      Record record;
      EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken) << "flags " << flags;
      expect_diagnostic(ring, 0, flags, kKnownRecordFlags);
      expect_stays_broken(ring, RingError::bad_record_flags);
    }
  }
}

TEST(RingHostileProducer, MoreFragmentsFlagPassesThroughToTheRecord) {
  TestRing<> ring(256);
  ring.set_header_at(0, {8, 3, kRecordMoreFragments});
  ring.set_produced(16);
  Record record;
  ASSERT_EQ(ring.consumer.peek(record), ConsumeStatus::ok);
  EXPECT_EQ(record.flags, kRecordMoreFragments);
  EXPECT_EQ(record.channel, 3);
  EXPECT_EQ(record.payload.size(), 8U);
}

TEST(RingHostileProducer, PaddingThatOverrunsProducedBreaksTheRing) {
  TestRing<> ring(256);
  ring.set_header_at(0, {100, 0, kRecordPadding});
  ring.set_produced(16);
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  expect_diagnostic(ring, 0, 112, 16);
  expect_stays_broken(ring, RingError::record_overruns_published);
}

TEST(RingHostileProducer, PaddingThatCrossesTheEndBreaksTheRing) {
  TestRing<> ring(256);
  ASSERT_NO_FATAL_FAILURE(advance(ring, 200));
  ring.set_header_at(200, {56, 0, kRecordPadding});  // a wrap pad one line too long
  ring.set_produced(200 + 64);
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  expect_diagnostic(ring, 200, 64, 56);
  expect_stays_broken(ring, RingError::record_crosses_end);
}

TEST(RingHostileProducer, HeaderWithTheWrongCapacityIsAGeometryMismatch) {
  TestRing<> ring(256);
  ring.header().capacity = 512;
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  expect_diagnostic(ring, 0, 512, 256);
  ring.header().capacity = 256;
  expect_stays_broken(ring, RingError::geometry_mismatch);
}

TEST(RingHostileProducer, HeaderWithTheWrongVersionIsAGeometryMismatch) {
  TestRing<> ring(256);
  ring.header().version = kRingVersion + 1;
  Record record;
  EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  ring.header().version = kRingVersion;
  expect_stays_broken(ring, RingError::geometry_mismatch);
}

// Rough edge: for a version mismatch the diagnostic reports the (matching)
// capacity as both value and limit, so it does not say what was wrong.
TEST(RingHostileProducer, VersionMismatchDiagnosticReportsTheVersion) {
  TestRing<> ring(256);
  ring.header().version = 7;
  Record record;
  ASSERT_EQ(ring.consumer.peek(record), ConsumeStatus::broken);
  expect_diagnostic(ring, 0, 7, kRingVersion);
}

TEST(RingHostileProducer, MissingMagicIsNotReadyUntilTheProducerInitialises) {
  for (const std::uint32_t magic : {0U, kRingMagic ^ 1U}) {
    TestRing<> ring(256, /*producer_initialised=*/false);
    ring.header().magic = magic;
    Record record;
    for (int i = 0; i < 3; ++i) EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::not_ready);
    EXPECT_FALSE(ring.consumer.broken());
    ASSERT_TRUE(ring.init_producer());
    EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);
    ASSERT_NO_FATAL_FAILURE(send(ring, 8, 1, 0));
    ASSERT_NO_FATAL_FAILURE(receive(ring, 8, 1, 0));
  }
}

TEST(RingHostileProducer, RandomHeadersAndIndicesNeverYieldASpanOutsideTheDataArea) {
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    std::mt19937_64 random(seed);
    TestRing<> ring(256);
    ASSERT_NO_FATAL_FAILURE(advance(ring, random() % 32 * 8));
    const std::uint64_t from = ring.producer.published();
    for (std::uint64_t index = from; index < from + 256; index += 8) {
      ring.set_header_at(index, unpack(random() % 4 == 0 ? random() : random() % 300));
    }
    ring.set_produced(from + random() % 300);
    Record record;
    ConsumeStatus status = ConsumeStatus::ok;
    for (int i = 0; i < 100 && status == ConsumeStatus::ok; ++i) {
      status = ring.consumer.peek(record);
      if (status == ConsumeStatus::ok) {
        ASSERT_TRUE(ring.inside_data(record.payload)) << seed;
      }
    }
    EXPECT_TRUE(status == ConsumeStatus::empty || status == ConsumeStatus::broken ||
                status == ConsumeStatus::too_many_held)
        << "seed " << seed;
    if (status == ConsumeStatus::broken)
      expect_stays_broken(ring, ring.consumer.diagnostic().error);
  }
}

// ---------------------------------------------------------------- hostile consumer

TEST(RingHostileConsumer, ConsumedMovingBackwardsBreaksTheProducer) {
  TestRing<> ring(256);
  for (int i = 0; i < 8; ++i) ASSERT_NO_FATAL_FAILURE(send(ring, 24, 1, i));
  for (int i = 0; i < 4; ++i) ASSERT_NO_FATAL_FAILURE(receive(ring, 24, 1, i));
  for (int i = 0; i < 4; ++i) ASSERT_NO_FATAL_FAILURE(send(ring, 24, 1, i));  // sees 128
  ring.set_consumed(96);
  Reservation reservation;
  EXPECT_EQ(ring.producer.reserve(0, 1, reservation), ProduceStatus::broken);
  const RingDiagnostic diagnostic = ring.producer.diagnostic();
  EXPECT_EQ(diagnostic.error, RingError::consumed_went_backwards);
  EXPECT_EQ(diagnostic.index, 128U);
  EXPECT_EQ(diagnostic.value, 96U);
  EXPECT_EQ(diagnostic.limit, 128U);
  ring.set_consumed(384);  // a now plausible value does not revive it
  EXPECT_EQ(ring.producer.reserve(0, 1, reservation), ProduceStatus::broken);
  EXPECT_EQ(ring.producer.write(pattern(0, 8), 1), ProduceStatus::broken);
  EXPECT_FALSE(ring.producer.publish());
  EXPECT_EQ(ring.producer.diagnostic().error, RingError::consumed_went_backwards);
}

TEST(RingHostileConsumer, ConsumedBeyondProducedBreaksTheProducer) {
  TestRing<> ring(256);
  for (int i = 0; i < 8; ++i) ASSERT_NO_FATAL_FAILURE(send(ring, 24, 1, i));
  ring.set_consumed(256 + 8);
  Reservation reservation;
  EXPECT_EQ(ring.producer.reserve(0, 1, reservation), ProduceStatus::broken);
  const RingDiagnostic diagnostic = ring.producer.diagnostic();
  EXPECT_EQ(diagnostic.error, RingError::consumed_beyond_produced);
  EXPECT_EQ(diagnostic.index, 0U);
  EXPECT_EQ(diagnostic.value, 264U);
  EXPECT_EQ(diagnostic.limit, 256U);
  ring.set_consumed(256);
  EXPECT_EQ(ring.producer.reserve(0, 1, reservation), ProduceStatus::broken);
}

// ---------------------------------------------------------------- lifetime

// The element each payload carries: who it is, and a check over that.
struct Stamp {
  std::uint64_t serial;
  std::uint32_t size;
  std::uint16_t channel;
  std::uint16_t check;
};
static_assert(sizeof(Stamp) == 16 && std::is_trivially_copyable_v<Stamp>);
constexpr std::uint16_t stamp_check(std::uint64_t serial, std::uint32_t size) {
  return static_cast<std::uint16_t>((serial * 0x2545f4914f6cdd1dULL + size) >> 48);
}
void write_stamp(std::span<std::byte> payload, std::uint64_t serial) {
  const auto size = static_cast<std::uint32_t>(payload.size());
  const Stamp stamp{serial, size, static_cast<std::uint16_t>(serial), stamp_check(serial, size)};
  std::memcpy(payload.data(), &stamp, sizeof(stamp));
  fill(payload.subspan(sizeof(stamp)), serial);
}

// Every message is born (committed), peeked once and in order, kept intact
// while held, and retired (released) once.
class Ledger {
 public:
  explicit Ledger(std::size_t count) : lives_(count, Life::unborn) {}
  void born(std::uint64_t serial) {
    ASSERT_EQ(lives_.at(serial), Life::unborn);
    lives_[serial] = Life::in_ring;
  }
  std::uint64_t peeked(const Record& record) {
    const std::uint64_t serial = intact(record);
    EXPECT_EQ(serial, next_peek_) << "out of order, duplicated or lost";
    EXPECT_EQ(lives_.at(serial), Life::in_ring);
    lives_[serial] = Life::held;
    ++next_peek_;
    return serial;
  }
  void retired(const Record& record) {
    const std::uint64_t serial = intact(record);  // not overwritten while held
    EXPECT_EQ(lives_.at(serial), Life::held);
    lives_[serial] = Life::retired;
    ++retired_;
  }
  [[nodiscard]] std::size_t retired_count() const { return retired_; }

 private:
  enum class Life : std::uint8_t { unborn, in_ring, held, retired };
  std::uint64_t intact(const Record& record) {
    Stamp stamp{};
    EXPECT_GE(record.payload.size(), sizeof(stamp));
    std::memcpy(&stamp, record.payload.data(), sizeof(stamp));
    EXPECT_EQ(stamp.size, record.payload.size());
    EXPECT_EQ(stamp.check, stamp_check(stamp.serial, stamp.size)) << "serial " << stamp.serial;
    EXPECT_EQ(record.channel, static_cast<std::uint16_t>(stamp.serial));
    EXPECT_TRUE(matches(record.payload.subspan(sizeof(stamp)), stamp.serial));
    return stamp.serial < lives_.size() ? stamp.serial : 0;
  }
  std::vector<Life> lives_;
  std::uint64_t next_peek_ = 0;
  std::size_t retired_ = 0;
};

TEST(RingLifetime, EveryMessageArrivesOnceInOrderIntactAcrossRandomBatchesAndReleases) {
  constexpr std::uint64_t kMessages = 20000;
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937_64 random(seed);
    TestRing<8> ring(1024);
    Ledger ledger(kMessages);
    std::vector<Record> held;
    std::uint64_t written = 0;
    auto random_size = [&] {
      const std::uint64_t largest = max_payload(ring.capacity());
      return static_cast<std::uint32_t>(random() % 4 != 0 ? 16 + random() % 48
                                                          : 16 + random() % (largest - 15));
    };
    while (ledger.retired_count() < kMessages) {
      // Produce a batch of up to four reservations in flight.
      Reservation batch[4];
      std::size_t reserved = 0;
      const std::size_t want = 1 + random() % 4;
      while (reserved < want && written + reserved < kMessages &&
             ring.producer.reserve(random_size(), static_cast<std::uint16_t>(written + reserved),
                                   batch[reserved]) == ProduceStatus::ok) {
        ++reserved;
      }
      for (std::size_t i = 0; i < reserved; ++i, ++written) {
        const std::size_t size = batch[i].payload.size();
        const std::size_t used = random() % 8 == 0 ? 16 + random() % (size - 15) : size;
        write_stamp(batch[i].payload.first(used), written);
        ASSERT_EQ(ring.producer.commit(batch[i], static_cast<std::uint32_t>(used)),
                  ProduceStatus::ok);
        ASSERT_NO_FATAL_FAILURE(ledger.born(written));
      }
      if (reserved == 0 || random() % 4 != 0) (void)ring.producer.publish();
      // Consume a few, hold some, release a random subset in random order.
      for (std::size_t n = random() % 6; n > 0; --n) {
        Record record;
        const ConsumeStatus status = ring.consumer.peek(record);
        if (status != ConsumeStatus::ok) {
          ASSERT_TRUE(status == ConsumeStatus::empty || status == ConsumeStatus::too_many_held);
          break;
        }
        ledger.peeked(record);
        held.push_back(record);
      }
      std::shuffle(held.begin(), held.end(), random);
      const std::size_t keep = held.empty() ? 0 : random() % (held.size() + 1);
      while (held.size() > keep) {
        ledger.retired(held.back());
        ASSERT_EQ(ring.consumer.release(held.back()), ConsumeStatus::ok);
        held.pop_back();
      }
      ASSERT_FALSE(::testing::Test::HasFailure());
    }
    Record record;
    EXPECT_EQ(ring.consumer.peek(record), ConsumeStatus::empty);  // skips a trailing pad
    EXPECT_EQ(ring.consumed(), ring.producer.published());
    EXPECT_FALSE(ring.producer.broken() || ring.consumer.broken());
  }
}

}  // namespace
}  // namespace cellink::transports
