// ConsumerUnderTest: a RingConsumer and the oracle ring_consumer_fuzzer
// applies around every call: what the consumer may return, read and write
// given what the (hostile) producer side presented. Private to tests/fuzz/.
//
// Memory: the producer area and ConsumerArea spans belong to the caller and
// must outlive this object. Single-threaded: the fuzzer changes the
// producer area only between calls, and tells producer_wrote().
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "cellink/transports/ring_consumer.hpp"
#include "cellink/transports/ring_format.hpp"
#include "script.hpp"

// In cellink::transports so that the ring's names read unqualified.
namespace cellink::transports::fuzz {

template <std::size_t MaxHeld>
class ConsumerUnderTest {
 public:
  ConsumerUnderTest(std::span<std::byte> producer_area, std::span<std::byte> consumer_area)
      : producer_area_(producer_area),
        consumer_area_(consumer_area),
        capacity_(producer_area.size() - kProducerAreaOverhead) {
    attach();
  }

  RingConsumer<MaxHeld>& consumer() { return consumer_; }
  const std::vector<Record>& held() const { return held_; }
  std::uint64_t capacity() const { return capacity_; }
  const std::byte* data() const { return producer_area_.data() + kProducerAreaOverhead; }

  ProducerArea& area() { return *reinterpret_cast<ProducerArea*>(producer_area_.data()); }
  std::uint64_t produced_in_memory() {
    std::uint64_t value;
    std::memcpy(&value, &area().produced.value, sizeof value);
    return value;
  }

  // Attaches (or re-attaches) the consumer and forgets everything it held.
  void attach() {
    FUZZ_CHECK(consumer_.init(producer_area_, consumer_area_), "init refused a valid layout");
    FUZZ_CHECK(consumer_.capacity() == capacity_, "capacity %llu, expected %llu",
               ull(consumer_.capacity()), ull(capacity_));
    held_.clear();
    released_.clear();
    last_consumed_ = 0;
    max_presented_ = produced_in_memory();
    ever_ready_ = false;
    broken_ = false;
    last_sequence_ = ~std::uint64_t{0};
    check_invariants();
  }

  // Call after anything the producer side may have written.
  void producer_wrote() { max_presented_ = std::max(max_presented_, produced_in_memory()); }

  // peek() with every check; returns the status and fills `out` when ok.
  ConsumeStatus peek(Record& out) {
    const bool magic = load_magic() == kRingMagic;
    const bool geometry_ok =
        area().header.version == kRingVersion && area().header.capacity == capacity_;
    const ConsumeStatus status = consumer_.peek(out);
    check_invariants();
    FUZZ_CHECK(status != ConsumeStatus::not_held, "peek returned not_held");
    if (broken_) {
      FUZZ_CHECK(status == ConsumeStatus::broken, "broken ring answered peek with %d", int(status));
      return status;
    }
    if (!ever_ready_ && magic && !geometry_ok) {
      FUZZ_CHECK(status == ConsumeStatus::broken &&
                     consumer_.diagnostic().error == RingError::geometry_mismatch,
                 "version %u capacity %llu accepted (status %d)", area().header.version,
                 ull(area().header.capacity), int(status));
    }
    if (status == ConsumeStatus::not_ready) {
      FUZZ_CHECK(!ever_ready_ && !magic, "not_ready with a valid magic or after ready");
      return status;
    }
    if (status == ConsumeStatus::broken) {
      latch_broken();
      return status;
    }
    ever_ready_ = true;
    if (status == ConsumeStatus::too_many_held) {
      FUZZ_CHECK(consumer_.held() == MaxHeld, "too_many_held with %zu held", consumer_.held());
    } else if (status == ConsumeStatus::ok) {
      check_record(out);
      held_.push_back(out);
    }
    return status;
  }

  void release(std::size_t which) {
    if (held_.empty()) return;
    which %= held_.size();
    const Record record = held_[which];
    held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(which));
    FUZZ_CHECK(consumer_.release(record) == ConsumeStatus::ok, "release of held record %llu",
               ull(record.sequence));
    released_.push_back(record.sequence);
    check_invariants();
  }

  void release_all(bool reverse) {
    while (!held_.empty()) release(reverse ? held_.size() - 1 : 0);
  }

  // release() of something not held: stale, double, or forged.
  void release_stale(std::uint64_t forged) {
    Record record;
    record.sequence = released_.empty() ? forged : released_[forged % released_.size()];
    const bool held = std::any_of(held_.begin(), held_.end(),
                                  [&](const Record& r) { return r.sequence == record.sequence; });
    if (held) return;
    FUZZ_CHECK(consumer_.release(record) == ConsumeStatus::not_held,
               "release of unheld sequence %llu accepted", ull(record.sequence));
    check_invariants();
  }

  // arm_wakeup(); returns its answer.
  bool arm() {
    const bool magic = load_magic() == kRingMagic;
    const bool geometry_ok =
        area().header.version == kRingVersion && area().header.capacity == capacity_;
    const bool was_ready = ever_ready_;
    const bool idle = consumer_.arm_wakeup();
    check_invariants();
    if (broken_) {
      FUZZ_CHECK(!idle, "broken ring said it is safe to sleep");
      return idle;
    }
    if (!was_ready && !magic) {
      // No producer yet: nothing to read, and `produced` may be stale
      // memory, so the consumer must neither read it nor break.
      FUZZ_CHECK(idle && !consumer_.broken(),
                 "arm_wakeup before the producer initialised its area: idle %d, %s", int(idle),
                 describe(consumer_.diagnostic().error));
    }
    if (!was_ready && magic && !geometry_ok) {
      FUZZ_CHECK(consumer_.diagnostic().error == RingError::geometry_mismatch,
                 "arm_wakeup accepted version %u capacity %llu", area().header.version,
                 ull(area().header.capacity));
    }
    if (consumer_.broken()) {
      latch_broken();
      FUZZ_CHECK(!idle, "arm_wakeup broke the ring but said it is safe to sleep");
      return idle;
    }
    if (magic) ever_ready_ = true;
    if (idle) {
      // Nothing moved since arm_wakeup read produced: peek must agree.
      Record record;
      const ConsumeStatus status = peek(record);
      FUZZ_CHECK(status == ConsumeStatus::empty || status == ConsumeStatus::not_ready ||
                     status == ConsumeStatus::too_many_held,
                 "arm_wakeup said empty, then peek returned %d", int(status));
    }
    return idle;
  }

  // Most peek() calls one drain may take: produced does not move during a
  // drain and at most two capacities (the unread rest of the cached value,
  // then one refresh) lie ahead; each record is at least 8 bytes.
  std::uint64_t drain_limit() const { return 2 * capacity_ / kRecordAlignment + MaxHeld + 8; }

  // peek and release until the ring has nothing more; bounded.
  void drain() {
    const std::uint64_t limit = drain_limit();
    for (std::uint64_t round = 0;; ++round) {
      FUZZ_CHECK(round <= limit, "drain did not finish after %llu rounds", ull(limit));
      Record record;
      const ConsumeStatus status = peek(record);
      if (status == ConsumeStatus::ok) {
        release(held_.size() - 1);
      } else if (status == ConsumeStatus::too_many_held) {
        release_all(false);
      } else {
        return;
      }
    }
  }

 private:
  static unsigned long long ull(std::uint64_t value) { return value; }

  std::uint32_t load_magic() {
    std::uint32_t magic;
    std::memcpy(&magic, &area().header.magic, sizeof magic);
    return magic;
  }

  void latch_broken() {
    FUZZ_CHECK(consumer_.broken(), "broken status without broken()");
    FUZZ_CHECK(consumer_.diagnostic().error != RingError::none, "broken with no diagnostic");
    FUZZ_CHECK(describe(consumer_.diagnostic().error)[0] != '\0', "empty description");
    broken_ = true;
    diagnostic_ = consumer_.diagnostic();
  }

  void check_record(const Record& record) {
    const std::byte* begin = record.payload.data();
    const std::byte* data_begin = data();
    FUZZ_CHECK(begin >= data_begin + sizeof(RecordHeader) && record.payload.size() <= capacity_ &&
                   begin + record.payload.size() <= data_begin + capacity_,
               "payload [%td, +%zu) outside the %llu-byte data area", begin - data_begin,
               record.payload.size(), ull(capacity_));
    const auto header_offset = static_cast<std::uint64_t>(begin - data_begin) - 8;
    FUZZ_CHECK(header_offset % kRecordAlignment == 0, "header at unaligned offset %llu",
               ull(header_offset));
    std::uint64_t word;
    std::memcpy(&word, data_begin + header_offset, sizeof word);
    const RecordHeader header = unpack(word);
    FUZZ_CHECK(header.length == record.payload.size() && header.channel == record.channel &&
                   header.flags == record.flags && (header.flags & kRecordPadding) == 0,
               "record (%zu bytes, channel %u) disagrees with its header (%u, %u, flags %u)",
               record.payload.size(), record.channel, header.length, header.channel, header.flags);
    FUZZ_CHECK(last_sequence_ == ~std::uint64_t{0} || record.sequence > last_sequence_,
               "sequence %llu after %llu", ull(record.sequence), ull(last_sequence_));
    last_sequence_ = record.sequence;
  }

  void check_invariants() {
    const std::uint64_t consumed = consumer_.consumed();
    FUZZ_CHECK(consumed - last_consumed_ <= capacity_,
               "consumed moved from %llu to %llu (backwards or past a whole ring)",
               ull(last_consumed_), ull(consumed));
    FUZZ_CHECK(consumed <= max_presented_, "consumed %llu beyond any produced value (max %llu)",
               ull(consumed), ull(max_presented_));
    last_consumed_ = consumed;
    const auto* shared = reinterpret_cast<const ConsumerArea*>(consumer_area_.data());
    FUZZ_CHECK(shared->consumed.value == consumed, "shared consumed %llu, shadow %llu",
               ull(shared->consumed.value), ull(consumed));
    FUZZ_CHECK(shared->wake_after.value == kNotArmed || shared->wake_after.value <= max_presented_,
               "wake_after %llu beyond any produced value", ull(shared->wake_after.value));
    FUZZ_CHECK(consumer_.held() <= MaxHeld && consumer_.held() >= held_.size(),
               "held() %zu with %zu records held", consumer_.held(), held_.size());
    if (broken_) {
      const RingDiagnostic& now = consumer_.diagnostic();
      FUZZ_CHECK(now.error == diagnostic_.error && now.index == diagnostic_.index &&
                     now.value == diagnostic_.value && now.limit == diagnostic_.limit,
                 "the diagnostic changed after the ring broke");
    }
  }

  std::span<std::byte> producer_area_;
  std::span<std::byte> consumer_area_;
  std::uint64_t capacity_;
  RingConsumer<MaxHeld> consumer_;
  std::vector<Record> held_;
  std::vector<std::uint64_t> released_;
  std::uint64_t last_consumed_ = 0;
  std::uint64_t max_presented_ = 0;
  std::uint64_t last_sequence_ = 0;
  bool ever_ready_ = false;
  bool broken_ = false;
  RingDiagnostic diagnostic_;
};

}  // namespace cellink::transports::fuzz
