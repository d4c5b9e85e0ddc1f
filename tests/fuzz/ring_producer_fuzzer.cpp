// ring_producer_fuzzer: RingProducer (ring_producer.hpp) against a hostile
// consumer that writes any consumed and wake_after values between calls.
//
// What it proves, for every input:
//   - the producer never writes outside its data area: guard bytes around
//     the producer area stay intact, the header is written once (init) and
//     produced only ever holds what publish() published;
//   - it never writes into the consumer's area;
//   - it never overwrites a published byte the consumer may not have
//     released: bytes in [highest valid consumed it could have read,
//     published) keep their published value, and every reservation ends at
//     most one capacity past that consumed value;
//   - reserve() says too_large exactly above max_payload(), and full only
//     after reading a valid consumed that really leaves too little room;
//   - commit() refuses, without side effects, a reservation out of order,
//     one reserve() did not hand out, or more bytes than reserved; write()
//     refuses while reservations are in flight;
//   - an impossible consumed (backwards, or past what was published) ends
//     in the sticky error with the value it read; once broken, every call
//     answers broken and nothing more is written;
//   - publish() rings exactly when the armed wake_after is crossed.
//
// Input: byte 0 bits 0-1 pick the capacity (64 << 2k: 64 .. 4096); the
// rest is a script of ProducerCommand (commands.hpp).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <vector>

#include "cellink/transports/ring_format.hpp"
#include "cellink/transports/ring_producer.hpp"
#include "commands.hpp"
#include "script.hpp"
#include "shared_region.hpp"

namespace {

using cellink::fuzz::ProducerCommand;
using cellink::fuzz::Script;
using cellink::fuzz::SharedRegion;
using namespace cellink::transports;

constexpr std::size_t kGuard = 64;
constexpr std::byte kGuardByte{0xa5};

using ull = unsigned long long;

std::uint8_t pattern(std::uint64_t message, std::size_t i) {
  return static_cast<std::uint8_t>(message * 131 + i * 7 + 1);
}

class ProducerUnderTest {
 public:
  explicit ProducerUnderTest(std::uint64_t capacity)
      : capacity_(capacity),
        area_size_(kProducerAreaOverhead + capacity),
        memory_(kGuard + area_size_ + kGuard, kGuardByte),
        consumer_memory_(kConsumerAreaSize),
        area_(memory_.bytes().subspan(kGuard, area_size_)),
        data_(area_.data() + kProducerAreaOverhead),
        shadow_(capacity, std::byte{0}) {
    consumer().wake_after.value = kNotArmed;
    std::memcpy(&consumer_copy_, consumer_memory_.bytes().data(), sizeof consumer_copy_);
    FUZZ_CHECK(producer_.init(area_, consumer_memory_.bytes()), "init refused a valid layout");
    std::memcpy(&header_copy_, area_.data(), sizeof header_copy_);
    FUZZ_CHECK(header_copy_.magic == kRingMagic && header_copy_.version == kRingVersion &&
                   header_copy_.header_size == sizeof(RingHeader) &&
                   header_copy_.capacity == capacity,
               "init wrote a wrong header");
    check();
  }

  std::uint64_t published() const { return producer_.published(); }

  // The hostile consumer's moves.
  void set_consumed(std::uint64_t value) {
    consumer().consumed.value = value;
    consumer_copy_.consumed.value = value;
  }
  std::uint64_t consumed() { return consumer().consumed.value; }
  void set_wake_after(std::uint64_t value) {
    consumer().wake_after.value = value;
    consumer_copy_.wake_after.value = value;
  }

  void reserve(std::uint32_t length, std::uint16_t channel) {
    before_call();
    RingProducer::Reservation reservation;
    const ProduceStatus status = producer_.reserve(length, channel, reservation);
    after_reserve(status, length);
    if (status != ProduceStatus::ok) return;
    FUZZ_CHECK(reservation.payload.data() >= data_ + sizeof(RecordHeader) &&
                   reservation.payload.size() == length &&
                   reservation.payload.data() + length <= data_ + capacity_,
               "reservation of %u bytes at data offset %td leaves the data area", length,
               reservation.payload.data() - data_);
    FUZZ_CHECK(reservation.begin == reserved_end_ && reservation.end == end_after(length),
               "reservation [%llu, %llu), model [%llu, %llu)", ull(reservation.begin),
               ull(reservation.end), ull(reserved_end_), ull(end_after(length)));
    reserved_end_ = reservation.end;
    const Pending pending{reservation, next_id_++};
    for (std::uint32_t i = 0; i < length; ++i) {
      reservation.payload[i] = std::byte{pattern(pending.id, i)};
    }
    pending_.push_back(pending);
    check();
  }

  // Commits the oldest reservation with `shrink` fewer bytes; `misuse`
  // first tries commits the producer must refuse, without side effects.
  void commit(std::uint8_t shrink, unsigned misuse) {
    if (pending_.empty()) return;
    before_call();
    const RingProducer::Reservation& oldest = pending_.front().reservation;
    const auto length = static_cast<std::uint32_t>(oldest.payload.size());
    const bool broken = producer_.broken();
    const auto refused = [&](ProduceStatus status) {
      return broken ? ProduceStatus::broken : status;
    };
    if ((misuse & 1) != 0 && pending_.size() >= 2) {
      FUZZ_CHECK(
          producer_.commit(pending_[1].reservation, 0) == refused(ProduceStatus::out_of_order),
          "commit of the second reservation before the first was accepted");
    }
    if ((misuse & 2) != 0) {
      FUZZ_CHECK(producer_.commit(oldest, length + 1) == refused(ProduceStatus::bad_reservation),
                 "commit of more bytes than reserved was accepted");
    }
    if ((misuse & 4) != 0) {
      RingProducer::Reservation forged = oldest;
      forged.end += kRecordAlignment;
      FUZZ_CHECK(producer_.commit(forged, 0) == refused(ProduceStatus::bad_reservation),
                 "commit of a reservation reserve() did not hand out was accepted");
    }
    const std::uint32_t used = length - shrink % (length + 1);
    const ProduceStatus status = producer_.commit(oldest, used);
    FUZZ_CHECK(status == (producer_.broken() ? ProduceStatus::broken : ProduceStatus::ok),
               "commit returned %d", int(status));
    // The newest reservation shrinks in place: its unused rest is free again.
    if (status == ProduceStatus::ok && pending_.size() == 1) {
      reserved_end_ = oldest.header + record_stride(used);
    }
    pending_.pop_front();
    check();
  }

  void write(std::uint32_t length, std::uint16_t channel) {
    before_call();
    std::vector<std::byte> payload(length);
    for (std::uint32_t i = 0; i < length; ++i) payload[i] = std::byte{pattern(next_id_, i)};
    const ProduceStatus status = producer_.write(payload, channel);
    if (was_broken_) {
      FUZZ_CHECK(status == ProduceStatus::broken, "a broken producer answered write with %d",
                 int(status));
    } else if (!pending_.empty()) {
      // write() commits at once, so with reservations in flight it must
      // refuse and leave no trace (the next reserve() checks the index).
      FUZZ_CHECK(status == ProduceStatus::out_of_order,
                 "write() with %zu reservations in flight returned %d", pending_.size(),
                 int(status));
    } else {
      after_reserve(status, length);
      if (status == ProduceStatus::ok) {
        reserved_end_ = end_after(length);
        ++next_id_;
      }
    }
    check();
  }

  void publish() {
    before_call();
    const std::uint64_t before = producer_.published();
    const std::uint64_t wake_after = consumer().wake_after.value;
    const bool was_broken = producer_.broken();
    const bool doorbell = producer_.publish();
    const std::uint64_t after = producer_.published();
    if (was_broken) {
      FUZZ_CHECK(!doorbell && after == before, "a broken producer published");
    } else {
      FUZZ_CHECK(doorbell == (after != before && crosses(wake_after, after, before)),
                 "publish %llu -> %llu with wake_after %llu: doorbell %d", ull(before), ull(after),
                 ull(wake_after), int(doorbell));
    }
    for (std::uint64_t i = before; i != after; ++i) {
      shadow_[i & (capacity_ - 1)] = data_[i & (capacity_ - 1)];
    }
    check();
  }

 private:
  struct Pending {
    RingProducer::Reservation reservation;
    std::uint64_t id;
  };

  ConsumerArea& consumer() {
    return *reinterpret_cast<ConsumerArea*>(consumer_memory_.bytes().data());
  }

  // The reserve() rule: skip to the start when the record would cross the
  // end of the data area.
  std::uint64_t end_after(std::uint32_t length) const {
    const std::uint64_t stride = record_stride(length);
    const std::uint64_t contiguous = capacity_ - (reserved_end_ & (capacity_ - 1));
    return reserved_end_ + (stride > contiguous ? contiguous : 0) + stride;
  }

  // Before a call that may read consumed: a value no higher than what was
  // published is one the producer may accept, and then reuse below.
  void before_call() {
    const std::uint64_t value = consumed();
    if (value <= producer_.published() && value > may_have_read_) may_have_read_ = value;
    was_broken_ = producer_.broken();
  }

  void after_reserve(ProduceStatus status, std::uint32_t length) {
    const std::uint64_t value = consumed();
    if (was_broken_) {
      FUZZ_CHECK(status == ProduceStatus::broken || status == ProduceStatus::too_large,
                 "a broken producer answered reserve with %d", int(status));
      return;
    }
    if (length > max_payload(capacity_)) {
      FUZZ_CHECK(status == ProduceStatus::too_large, "%u bytes: status %d", length, int(status));
      return;
    }
    FUZZ_CHECK(status != ProduceStatus::too_large, "%u bytes called too large", length);
    if (status == ProduceStatus::broken) {
      const RingDiagnostic& diagnostic = producer_.diagnostic();
      FUZZ_CHECK(diagnostic.value == value, "diagnostic value %llu, consumed is %llu",
                 ull(diagnostic.value), ull(value));
      if (diagnostic.error == RingError::consumed_beyond_produced) {
        FUZZ_CHECK(value > producer_.published(), "valid consumed %llu (published %llu) refused",
                   ull(value), ull(producer_.published()));
      } else {
        FUZZ_CHECK(diagnostic.error == RingError::consumed_went_backwards && value < may_have_read_,
                   "consumed %llu refused as %s (highest earlier value %llu)", ull(value),
                   describe(diagnostic.error), ull(may_have_read_));
      }
      diagnostic_ = diagnostic;
      return;
    }
    if (status == ProduceStatus::full) {
      // full means it read `value` and found it valid: then it was no lower
      // than any value it read before and no higher than what was published.
      FUZZ_CHECK(value <= producer_.published() && value >= last_read_,
                 "consumed %llu accepted (published %llu, read before %llu)", ull(value),
                 ull(producer_.published()), ull(last_read_));
      FUZZ_CHECK(end_after(length) - value > capacity_, "full with room: end %llu, consumed %llu",
                 ull(end_after(length)), ull(value));
      last_read_ = value;
      return;
    }
    FUZZ_CHECK(status == ProduceStatus::ok, "reserve returned %d", int(status));
    FUZZ_CHECK(end_after(length) - may_have_read_ <= capacity_,
               "reservation up to %llu overruns unreleased data from %llu", ull(end_after(length)),
               ull(may_have_read_));
  }

  void check() {
    const auto intact = [](std::span<const std::byte> guard) {
      return std::all_of(guard.begin(), guard.end(), [](std::byte b) { return b == kGuardByte; });
    };
    FUZZ_CHECK(intact(memory_.bytes().first(kGuard)), "write before the producer area");
    FUZZ_CHECK(intact(memory_.bytes().last(kGuard)), "write after the producer area");
    FUZZ_CHECK(std::memcmp(area_.data(), &header_copy_, sizeof header_copy_) == 0,
               "the ring header changed after init");
    std::uint64_t produced;
    std::memcpy(&produced, &reinterpret_cast<ProducerArea*>(area_.data())->produced.value,
                sizeof produced);
    FUZZ_CHECK(produced == producer_.published(), "produced %llu, published %llu", ull(produced),
               ull(producer_.published()));
    FUZZ_CHECK(
        std::memcmp(consumer_memory_.bytes().data(), &consumer_copy_, sizeof consumer_copy_) == 0,
        "the producer wrote into the consumer's area");
    // Published bytes the consumer may still be reading are untouched.
    const std::uint64_t from = may_have_read_ > produced ? produced : may_have_read_;
    FUZZ_CHECK(produced - from <= capacity_, "published %llu is more than a ring past %llu",
               ull(produced), ull(from));
    const std::uint64_t start = from & (capacity_ - 1);
    const std::uint64_t before_wrap = std::min(produced - from, capacity_ - start);
    const std::uint64_t after_wrap = produced - from - before_wrap;
    FUZZ_CHECK(std::memcmp(data_ + start, shadow_.data() + start, before_wrap) == 0 &&
                   std::memcmp(data_, shadow_.data(), after_wrap) == 0,
               "published bytes in [%llu, %llu) overwritten (consumed may be %llu)", ull(from),
               ull(produced), ull(may_have_read_));
    if (was_broken_ || producer_.broken()) {
      if (diagnostic_.error == RingError::none) diagnostic_ = producer_.diagnostic();
      const RingDiagnostic& now = producer_.diagnostic();
      FUZZ_CHECK(producer_.broken() && now.error == diagnostic_.error &&
                     now.index == diagnostic_.index && now.value == diagnostic_.value &&
                     now.limit == diagnostic_.limit,
                 "the sticky error changed or cleared");
    }
  }

  std::uint64_t capacity_;
  std::size_t area_size_;
  SharedRegion memory_;           // guard, producer area, guard
  SharedRegion consumer_memory_;  // the hostile ConsumerArea
  std::span<std::byte> area_;
  std::byte* data_;
  std::vector<std::byte> shadow_;  // data as published, by position
  RingHeader header_copy_{};
  ConsumerArea consumer_copy_{};
  RingProducer producer_;
  std::deque<Pending> pending_;
  std::uint64_t next_id_ = 0;
  std::uint64_t reserved_end_ = 0;
  std::uint64_t may_have_read_ = 0;  // highest consumed it may have accepted
  std::uint64_t last_read_ = 0;      // consumed it is known to have accepted
  bool was_broken_ = false;
  RingDiagnostic diagnostic_;
};

// Runs the script (commands: ProducerCommand, commands.hpp).
void run(std::uint64_t capacity, Script script) {
  ProducerUnderTest test(capacity);
  while (!script.done()) {
    const std::uint8_t op = script.u8();
    const unsigned a = op >> 4;
    switch (static_cast<ProducerCommand>(op & 0x0f)) {
      case ProducerCommand::consumed_set: test.set_consumed(script.u64()); break;
      case ProducerCommand::consumed_step:
        test.set_consumed(test.consumed() + 8 * std::uint64_t{a + 1});
        break;
      case ProducerCommand::consumed_behind:
        test.set_consumed(test.published() - 8 * std::uint64_t{a});
        break;
      case ProducerCommand::consumed_back:
        test.set_consumed(test.consumed() - 8 * std::uint64_t{a + 1});
        break;
      case ProducerCommand::wake_after:
        test.set_wake_after((a & 1) != 0 ? script.u64()
                                         : test.published() - 8 + 8 * std::uint64_t{a >> 1});
        break;
      case ProducerCommand::reserve: {
        const std::uint32_t length = (a & 1) != 0 ? script.u16() : script.u8();
        test.reserve(length, static_cast<std::uint16_t>(a >> 1));
        break;
      }
      case ProducerCommand::commit: test.commit(script.u8(), a & 7); break;
      case ProducerCommand::publish: test.publish(); break;
      case ProducerCommand::write:
        test.write(std::uint32_t{script.u8()} * (a + 1), static_cast<std::uint16_t>(a));
        break;
      case ProducerCommand::commit_all:
        for (unsigned i = 0; i < 64; ++i) test.commit(0, 0);
        break;
      case ProducerCommand::consumed_beyond: test.set_consumed(test.published() + 1 + a); break;
      default: break;
    }
  }
  test.publish();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  Script script({bytes, size});
  const std::uint64_t capacity = kMinRingCapacity << (2 * (script.u8() & 3));
  run(capacity, script);
  return 0;
}
