// ring_consumer_fuzzer: RingConsumer (ring_consumer.hpp) against a producer
// area that a hostile cell rewrites between any two consumer calls.
//
// What it proves, for every input:
//   - the consumer never reads outside the producer area (ASan: the area is
//     its own allocation, header + produced + data and not a byte more) and
//     never writes outside its ConsumerArea;
//   - every payload span lies inside the data area, starts 8 bytes after an
//     8-aligned record header, and matches that header;
//   - consumed is monotonic, published to shared memory, and never exceeds
//     a produced value the producer really presented; wake_after likewise;
//   - no call hangs: one drain yields at most 2 * capacity / 8 records;
//   - not_ready only before the magic; a wrong version or capacity breaks
//     the ring with geometry_mismatch; arm_wakeup() before the magic says
//     idle and never reads (stale) produced;
//   - once broken, the ring stays broken with the same non-none diagnostic
//     and never yields another record;
//   - with a well-behaved RingProducer and no corruption (mode 1), every
//     record comes out exactly once, in order, with its bytes, the producer
//     reports full exactly when the consumer has not released enough, and
//     publish() rings exactly when the armed index is crossed.
//
// Input: byte 0 = flags, byte 1 = script length / 2, then the script, then
// the image (the rest).
//   flags bit 0    mode: 0 = raw image, 1 = RingProducer plus corruption
//   flags bit 1    MaxHeld 4 instead of 64 (too_many_held paths)
//   flags bits 2-3 capacity 64 << (2 * k): 64, 256, 1024 or 4096
//   flags bit 4    image mode: keep the image's header bytes as they are
//                  (otherwise a valid magic/version/capacity is written)
//   flags bit 5    mode 1: the consumer attaches (and arms) before the
//                  producer initialises over the stale image
// The image is copied over the whole producer area (header, produced,
// data) before the consumer attaches; in mode 1 it is the stale memory the
// producer initialises over. Commands: ImageCommand (mode 0) and
// ProducerModeCommand (mode 1) in commands.hpp.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "cellink/transports/ring_consumer.hpp"
#include "cellink/transports/ring_format.hpp"
#include "cellink/transports/ring_producer.hpp"
#include "commands.hpp"
#include "ring_consumer_oracle.hpp"
#include "script.hpp"
#include "shared_region.hpp"

namespace {

using cellink::fuzz::ImageCommand;
using cellink::fuzz::ProducerModeCommand;
using cellink::fuzz::Script;
using cellink::fuzz::SharedRegion;
using cellink::transports::fuzz::ConsumerUnderTest;
using namespace cellink::transports;

std::uint8_t pattern(std::uint64_t message, std::size_t i) {
  return static_cast<std::uint8_t>(message * 131 + i * 7 + 1);
}

void write_valid_header(ProducerArea& area, std::uint64_t capacity) {
  area.header.magic = kRingMagic;
  area.header.version = kRingVersion;
  area.header.header_size = sizeof(RingHeader);
  area.header.capacity = capacity;
  for (std::uint64_t& word : area.header.reserved) word = 0;
}

void store_u64(void* where, std::uint64_t value) {
  std::memcpy(where, &value, sizeof value);
}

// Mode 0: the producer area is whatever the input says, changed by the
// script between consumer calls (commands: ImageCommand, commands.hpp).
template <std::size_t MaxHeld>
void run_image(Script script, std::span<std::byte> producer, std::span<std::byte> consumer_area) {
  ConsumerUnderTest<MaxHeld> test(producer, consumer_area);
  ProducerArea& area = test.area();
  std::byte* data = producer.data() + kProducerAreaOverhead;
  const std::uint64_t mask = test.capacity() - 1;
  while (!script.done()) {
    const std::uint8_t op = script.u8();
    const unsigned a = op >> 4;
    const std::uint64_t produced = test.produced_in_memory();
    switch (static_cast<ImageCommand>(op & 0x0f)) {
      case ImageCommand::produced_step:
        store_u64(&area.produced.value, produced + 8 * std::uint64_t{a + 1});
        break;
      case ImageCommand::produced_add:
        store_u64(&area.produced.value, produced + script.u16());
        break;
      case ImageCommand::produced_set: store_u64(&area.produced.value, script.u64()); break;
      case ImageCommand::produced_back:
        store_u64(&area.produced.value, produced - 8 * std::uint64_t{a + 1});
        break;
      case ImageCommand::peek:
        for (unsigned i = 0; i <= a; ++i) {
          Record record;
          if (test.peek(record) != ConsumeStatus::ok) break;
        }
        break;
      case ImageCommand::release: test.release(a); break;
      case ImageCommand::release_all: test.release_all((a & 1) != 0); break;
      case ImageCommand::arm: (void)test.arm(); break;
      case ImageCommand::record_header: {
        const std::uint64_t position = (std::uint64_t{script.u16()} * 8) & mask;
        const std::uint32_t length = (a & 8) != 0 ? script.u32() : script.u16();
        const auto flags = static_cast<std::uint16_t>(((a & 1) != 0 ? kRecordPadding : 0) |
                                                      ((a & 2) != 0 ? 1U << (a >> 2) << 1 : 0));
        store_u64(data + position, pack({length, script.u8(), flags}));
        break;
      }
      case ImageCommand::poke: {
        const std::size_t offset = script.u16() % producer.size();
        producer[offset] = std::byte{script.u8()};
        break;
      }
      case ImageCommand::ring_header:
        switch (a & 3) {
          case 0: area.header.magic = kRingMagic; break;
          case 1: area.header.magic = script.u32(); break;
          case 2: area.header.version = script.u16(); break;
          case 3: area.header.capacity = script.u64(); break;
        }
        break;
      case ImageCommand::release_stale: test.release_stale(script.u64()); break;
      case ImageCommand::drain: test.drain(); break;
      case ImageCommand::produced_full:
        store_u64(&area.produced.value, test.consumer().consumed() + test.capacity() - 8 * a);
        break;
      case ImageCommand::reattach: test.attach(); break;
      default: break;
    }
    test.producer_wrote();
  }
  test.release_all(false);
  test.drain();
}

// Mode 1: a well-behaved RingProducer writes into the same area; the script
// interleaves its calls with the consumer's and with corruption (commands:
// ProducerModeCommand, commands.hpp). Until the first corruption the run
// must be exactly FIFO.
template <std::size_t MaxHeld>
void run_producer(Script script, std::span<std::byte> producer_area,
                  std::span<std::byte> consumer_area, bool consumer_starts_first) {
  RingProducer producer;
  std::optional<ConsumerUnderTest<MaxHeld>> consumer_first;
  if (consumer_starts_first) {
    // The consumer attaches and arms before the producer has initialised
    // over the stale image (its magic cleared: no producer yet). Nothing was
    // published, so it must say idle and must not break.
    auto* stale = reinterpret_cast<ProducerArea*>(producer_area.data());
    stale->header.magic = 0;
    consumer_first.emplace(producer_area, consumer_area);
    FUZZ_CHECK(consumer_first->arm(), "arm_wakeup before the producer exists was not idle");
  }
  FUZZ_CHECK(producer.init(producer_area, consumer_area), "producer init refused a valid layout");
  std::optional<ConsumerUnderTest<MaxHeld>> consumer_second;
  if (!consumer_starts_first) consumer_second.emplace(producer_area, consumer_area);
  ConsumerUnderTest<MaxHeld>& test = consumer_first ? *consumer_first : *consumer_second;
  test.producer_wrote();
  const std::uint64_t capacity = test.capacity();
  struct Message {
    std::uint64_t id;
    std::uint32_t length;
    std::uint16_t channel;
  };
  std::vector<Message> committed;  // committed, not yet published
  std::vector<Message> published;  // published, not yet peeked
  std::uint64_t next_id = 0;
  std::uint64_t reserved_end = 0;  // model of the producer's reservation index
  bool corrupted = false;

  const auto fill = [](std::span<std::byte> payload, std::uint64_t id, std::size_t used) {
    for (std::size_t i = 0; i < used; ++i) payload[i] = std::byte{pattern(id, i)};
  };
  // The producer's reserve() rule: skip to the start when the record would
  // cross the end; full when that reaches beyond consumed + capacity.
  const auto end_after = [&](std::uint64_t from, std::uint32_t length) {
    const std::uint64_t stride = record_stride(length);
    const std::uint64_t contiguous = capacity - (from & (capacity - 1));
    return from + (stride > contiguous ? contiguous : 0) + stride;
  };
  const auto expect_reserve = [&](ProduceStatus status, std::uint32_t length) {
    if (corrupted) return;
    FUZZ_CHECK(status != ProduceStatus::broken, "producer broke on a valid consumer: %s",
               describe(producer.diagnostic().error));
    if (length > max_payload(capacity)) {
      FUZZ_CHECK(status == ProduceStatus::too_large, "%u bytes accepted", length);
      return;
    }
    const bool fits = end_after(reserved_end, length) - test.consumer().consumed() <= capacity;
    FUZZ_CHECK(status == (fits ? ProduceStatus::ok : ProduceStatus::full),
               "reserve of %u bytes returned %d; end %llu, consumed %llu", length, int(status),
               static_cast<unsigned long long>(end_after(reserved_end, length)),
               static_cast<unsigned long long>(test.consumer().consumed()));
  };
  const auto check_peeked = [&](const Record& record) {
    if (corrupted) return;
    FUZZ_CHECK(!published.empty(), "a record nobody published came out");
    const Message expected = published.front();
    published.erase(published.begin());
    FUZZ_CHECK(record.payload.size() == expected.length && record.channel == expected.channel,
               "message %llu: %zu bytes on channel %u, expected %u on %u",
               static_cast<unsigned long long>(expected.id), record.payload.size(), record.channel,
               expected.length, expected.channel);
    for (std::size_t i = 0; i < expected.length; ++i) {
      FUZZ_CHECK(record.payload[i] == std::byte{pattern(expected.id, i)},
                 "message %llu byte %zu differs", static_cast<unsigned long long>(expected.id), i);
    }
  };
  const auto peek = [&]() {
    Record record;
    const ConsumeStatus status = test.peek(record);
    FUZZ_CHECK(corrupted || status != ConsumeStatus::broken,
               "consumer broke on a valid producer: %s",
               describe(test.consumer().diagnostic().error));
    if (status == ConsumeStatus::ok) check_peeked(record);
    if (!corrupted && status == ConsumeStatus::empty) {
      FUZZ_CHECK(published.empty(), "empty with %zu messages published", published.size());
    }
    return status;
  };
  const auto drain = [&]() {
    const std::uint64_t limit = test.drain_limit();
    for (std::uint64_t round = 0;; ++round) {
      FUZZ_CHECK(round <= limit, "drain did not finish");
      const ConsumeStatus status = peek();
      if (status == ConsumeStatus::ok) {
        test.release(test.held().size() - 1);
      } else if (status == ConsumeStatus::too_many_held) {
        test.release_all(false);
      } else {
        return;
      }
    }
  };
  const auto corrupt = [&](std::byte* where, std::byte value) {
    if (*where == value) return;
    *where = value;
    corrupted = true;
  };

  while (!script.done()) {
    const std::uint8_t op = script.u8();
    const unsigned a = op >> 4;
    switch (static_cast<ProducerModeCommand>(op & 0x0f)) {
      case ProducerModeCommand::write: {
        std::uint32_t length = script.u8();
        if ((a & 1) != 0) length *= 8;
        const auto channel = static_cast<std::uint16_t>(a >> 1);
        std::vector<std::byte> payload(length);
        fill(payload, next_id, length);
        const ProduceStatus status = producer.write(payload, channel);
        expect_reserve(status, length);
        if (status == ProduceStatus::ok) {
          reserved_end = end_after(reserved_end, length);
          committed.push_back({next_id++, length, channel});
        }
        break;
      }
      case ProducerModeCommand::reserve_commit: {
        RingProducer::Reservation reservations[4];
        std::uint32_t lengths[4];
        unsigned count = 0;
        for (unsigned i = 0; i <= (a & 3); ++i) {
          lengths[count] = script.u8();
          const ProduceStatus status =
              producer.reserve(lengths[count], static_cast<std::uint16_t>(i), reservations[count]);
          expect_reserve(status, lengths[count]);
          if (status != ProduceStatus::ok) break;
          const RingProducer::Reservation& r = reservations[count];
          const std::byte* data = producer_area.data() + kProducerAreaOverhead;
          FUZZ_CHECK(
              r.payload.data() >= data && r.payload.data() + r.payload.size() <= data + capacity,
              "reservation outside the data area");
          reserved_end = end_after(reserved_end, lengths[count]);
          FUZZ_CHECK(r.end == reserved_end, "reservation end %llu, model %llu",
                     static_cast<unsigned long long>(r.end),
                     static_cast<unsigned long long>(reserved_end));
          ++count;
        }
        if ((a & 4) != 0 && count >= 2) {
          FUZZ_CHECK(producer.commit(reservations[1], 0) == ProduceStatus::out_of_order ||
                         (corrupted && producer.broken()),
                     "commit out of order accepted");
        }
        for (unsigned i = 0; i < count; ++i) {
          const std::uint32_t used = lengths[i] - script.u8() % (lengths[i] + 1);
          fill(reservations[i].payload, next_id, used);
          const ProduceStatus status = producer.commit(reservations[i], used);
          FUZZ_CHECK(status == ProduceStatus::ok || (corrupted && producer.broken()),
                     "commit returned %d", int(status));
          // The newest reservation shrinks in place: its unused rest is free again.
          if (status == ProduceStatus::ok && i + 1 == count) {
            reserved_end = reservations[i].header + record_stride(used);
          }
          committed.push_back({next_id++, used, static_cast<std::uint16_t>(i)});
        }
        break;
      }
      case ProducerModeCommand::publish: {
        const std::uint64_t before = producer.published();
        const std::uint64_t wake_after =
            reinterpret_cast<const ConsumerArea*>(consumer_area.data())->wake_after.value;
        const bool doorbell = producer.publish();
        if (!producer.broken()) {
          FUZZ_CHECK(doorbell == crosses(wake_after, producer.published(), before),
                     "publish %llu -> %llu with wake_after %llu: doorbell %d",
                     static_cast<unsigned long long>(before),
                     static_cast<unsigned long long>(producer.published()),
                     static_cast<unsigned long long>(wake_after), int(doorbell));
          published.insert(published.end(), committed.begin(), committed.end());
          committed.clear();
        }
        test.producer_wrote();
        break;
      }
      case ProducerModeCommand::peek:
        for (unsigned i = 0; i <= a; ++i) {
          if (peek() != ConsumeStatus::ok) break;
        }
        break;
      case ProducerModeCommand::release: test.release(a); break;
      case ProducerModeCommand::release_all: test.release_all((a & 1) != 0); break;
      case ProducerModeCommand::arm:
        if (test.arm() && !corrupted) {
          FUZZ_CHECK(published.empty(), "arm_wakeup idle with %zu messages", published.size());
        }
        break;
      case ProducerModeCommand::poke: {
        const std::size_t offset = script.u16() % producer_area.size();
        corrupt(&producer_area[offset], std::byte{script.u8()});
        test.producer_wrote();
        break;
      }
      case ProducerModeCommand::produced: {
        auto* produced = reinterpret_cast<std::byte*>(&test.area().produced.value);
        const std::uint64_t value =
            (a & 1) != 0 ? script.u64()
                         : producer.published() +
                               8 * static_cast<std::int64_t>(static_cast<std::int8_t>(script.u8()));
        std::byte bytes[8];
        std::memcpy(bytes, &value, sizeof bytes);
        for (std::size_t i = 0; i < sizeof bytes; ++i) corrupt(produced + i, bytes[i]);
        test.producer_wrote();
        break;
      }
      case ProducerModeCommand::drain: drain(); break;
      case ProducerModeCommand::record_header: {
        const std::uint64_t position = (std::uint64_t{script.u16()} * 8) & (capacity - 1);
        const std::uint64_t word = pack({script.u16(), script.u8(), script.u8()});
        std::byte bytes[8];
        std::memcpy(bytes, &word, sizeof bytes);
        std::byte* where = producer_area.data() + kProducerAreaOverhead + position;
        for (std::size_t i = 0; i < sizeof bytes; ++i) corrupt(where + i, bytes[i]);
        break;
      }
      case ProducerModeCommand::release_stale: test.release_stale(script.u64()); break;
      default: break;
    }
  }
  // Everything committed must come out once published and drained.
  (void)producer.publish();
  test.producer_wrote();
  if (!producer.broken()) {
    published.insert(published.end(), committed.begin(), committed.end());
  }
  test.release_all(false);
  drain();
  if (!corrupted) {
    FUZZ_CHECK(published.empty(), "%zu published messages never came out", published.size());
  }
}

template <std::size_t MaxHeld>
void run(std::uint8_t flags, Script script, std::span<const std::uint8_t> image) {
  const std::uint64_t capacity = kMinRingCapacity << (2 * ((flags >> 2) & 3));
  const std::size_t size = kProducerAreaOverhead + capacity;
  SharedRegion producer(size);
  SharedRegion consumer(kConsumerAreaSize);
  producer.fill(0, size, image);
  const std::span<std::byte> producer_area = producer.bytes();
  const std::span<std::byte> consumer_area = consumer.bytes();
  if ((flags & 1) != 0) {
    run_producer<MaxHeld>(script, producer_area, consumer_area, (flags & 0x20) != 0);
    return;
  }
  if ((flags & 0x10) == 0) {
    write_valid_header(*reinterpret_cast<ProducerArea*>(producer_area.data()), capacity);
  }
  run_image<MaxHeld>(script, producer_area, consumer_area);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  Script input({bytes, size});
  const std::uint8_t flags = input.u8();
  const Script script = input.take(std::size_t{input.u8()} * 2);
  const std::span<const std::uint8_t> image = input.rest();
  if ((flags & 2) != 0) {
    run<4>(flags, script, image);
  } else {
    run<64>(flags, script, image);
  }
  return 0;
}
