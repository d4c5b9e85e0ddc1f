// RingConsumer: the reading end of a record ring. Spec: docs/ring.md.
//
// Zero copy: peek() returns a read-only view of the next record inside the
// producer's memory; release() gives it back. Records may be released in
// any order: `consumed` advances over the contiguous released prefix, so
// holding one message never blocks reading the ones behind it. The window
// from the oldest unreleased record to the newest peeked one (padding
// included) spans at most MaxHeld entries; peek() says too_many_held beyond.
//
// The producer's area is another cell's memory and may change while we read
// it: `produced` and each record header are read once, into locals, and
// checked against the ring bounds before use. Anything impossible breaks the
// ring for good: peek() then reports RingError forever with a diagnostic
// and never yields another record. A payload view can still change under
// the reader: use copy_out() when the bytes must be stable.
//
// Threading: one consumer thread. A Record's payload view is valid until
// the record is released; the memory must outlive the consumer.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/transports/ring_format.hpp"

namespace cellink::transports {

enum class ConsumeStatus : std::uint8_t {
  ok,
  empty,          // nothing published beyond what was peeked
  not_ready,      // the producer has not initialised its area yet
  too_many_held,  // MaxHeld records are held: release some first
  broken,         // sticky error; see diagnostic()
  not_held,       // release() of a record that is not held (caller bug)
};

[[nodiscard]] constexpr const char* describe(ConsumeStatus status) noexcept {
  switch (status) {
    case ConsumeStatus::ok: return "ok";
    case ConsumeStatus::empty: return "no record published beyond those already peeked";
    case ConsumeStatus::not_ready: return "producer has not initialised its ring yet";
    case ConsumeStatus::too_many_held: return "too many records held (release some first)";
    case ConsumeStatus::broken: return "ring is broken (see diagnostic())";
    case ConsumeStatus::not_held: return "release of a record that is not held";
  }
  return "unknown consume status";
}

struct Record {
  std::span<const std::byte> payload;
  std::uint16_t channel = 0;
  std::uint64_t sequence = 0;  // identifies the record for release()
  std::uint16_t flags = 0;     // message-layer flags (kRecordMoreFragments); never padding
};

template <std::size_t MaxHeld = 64>
class RingConsumer {
  static_assert(MaxHeld > 0 && (MaxHeld & (MaxHeld - 1)) == 0, "MaxHeld must be a power of two");

 public:
  RingConsumer() noexcept = default;

  // Attaches to the producer's area (read only) and resets this cell's
  // ConsumerArea: consumed = 0, not armed. Both must be 64-byte aligned;
  // returns false when they are not or the producer area holds no ring.
  [[nodiscard]] bool init(std::span<const std::byte> producer_area,
                          std::span<std::byte> consumer_area) noexcept {
    const std::uint64_t capacity = ring_capacity(producer_area.size());
    if (capacity == 0 || consumer_area.size() < kConsumerAreaSize ||
        !aligned(producer_area.data()) || !aligned(consumer_area.data())) {
      return false;
    }
    producer_ = reinterpret_cast<const ProducerArea*>(producer_area.data());
    area_ = reinterpret_cast<ConsumerArea*>(consumer_area.data());
    data_ = producer_area.data() + kProducerAreaOverhead;
    capacity_ = capacity;
    mask_ = capacity - 1;
    read_ = produced_ = consumed_ = 0;
    first_held_ = next_held_ = 0;
    ready_ = false;
    diagnostic_ = {};
    std::atomic_ref<std::uint64_t>(area_->wake_after.value)
        .store(kNotArmed, std::memory_order_relaxed);
    std::atomic_ref<std::uint64_t>(area_->consumed.value).store(0, std::memory_order_release);
    return true;
  }

  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] bool broken() const noexcept { return diagnostic_.error != RingError::none; }
  [[nodiscard]] const RingDiagnostic& diagnostic() const noexcept { return diagnostic_; }
  // Index after the released prefix (what the producer may reuse).
  [[nodiscard]] std::uint64_t consumed() const noexcept { return consumed_; }
  // Bytes from the oldest unreleased record to the next unread one: the part
  // of the ring the producer cannot reuse yet because we hold it.
  [[nodiscard]] std::uint64_t pinned() const noexcept { return read_ - consumed_; }
  [[nodiscard]] std::size_t held() const noexcept {
    return static_cast<std::size_t>(next_held_ - first_held_);
  }

  // The next record, or why there is none.
  [[nodiscard]] ConsumeStatus peek(Record& out) noexcept {
    if (producer_ == nullptr) return ConsumeStatus::not_ready;  // init() never succeeded
    if (broken()) return ConsumeStatus::broken;
    if (!ready_ && !ready()) return broken() ? ConsumeStatus::broken : ConsumeStatus::not_ready;
    for (;;) {
      if (held() == MaxHeld) return ConsumeStatus::too_many_held;
      if (read_ == produced_) {
        if (!refresh_produced()) return ConsumeStatus::broken;
        if (read_ == produced_) return ConsumeStatus::empty;
      }
      const std::uint64_t position = read_ & mask_;
      // Relaxed: the header was published by R1 and acquired by A1. Read
      // once; only the local copy is used from here on.
      const RecordHeader header = unpack(load_shared(
          *reinterpret_cast<const std::uint64_t*>(data_ + position), std::memory_order_relaxed));
      const std::uint64_t stride = record_stride(header.length);
      if ((header.flags & ~kKnownRecordFlags) != 0) {
        return fail(RingError::bad_record_flags, header.flags, kKnownRecordFlags);
      }
      if (stride > capacity_ - position) {
        return fail(RingError::record_crosses_end, stride, capacity_ - position);
      }
      if (stride > produced_ - read_) {
        return fail(RingError::record_overruns_published, stride, produced_ - read_);
      }
      const std::uint64_t sequence = next_held_++;
      held_[sequence % MaxHeld] = {read_ + stride, (header.flags & kRecordPadding) != 0};
      read_ += stride;
      if ((header.flags & kRecordPadding) != 0) {
        advance_consumed();
        continue;
      }
      out.payload = {data_ + position + sizeof(RecordHeader), header.length};
      out.channel = header.channel;
      out.flags = header.flags;
      out.sequence = sequence;
      return ConsumeStatus::ok;
    }
  }

  // Gives a peeked record back; its space is reusable once every record
  // peeked before it is released too.
  ConsumeStatus release(const Record& record) noexcept {
    if (record.sequence < first_held_ || record.sequence >= next_held_) {
      return ConsumeStatus::not_held;
    }
    Held& held = held_[record.sequence % MaxHeld];
    if (held.released) return ConsumeStatus::not_held;
    held.released = true;
    advance_consumed();
    return ConsumeStatus::ok;
  }

  // Before sleeping: asks the producer for a doorbell once it publishes past
  // what was read, then re-checks. Returns true when the ring is still empty
  // (safe to sleep until the doorbell), false when a record arrived
  // meanwhile (or the ring broke): peek() again instead of sleeping.
  [[nodiscard]] bool arm_wakeup() noexcept {
    if (area_ == nullptr) return true;  // not attached: nothing can arrive
    if (broken()) return false;
    std::atomic_ref<std::uint64_t>(area_->wake_after.value).store(read_, std::memory_order_relaxed);
    // F2: the wake_after store is ordered before the loads below; pairs
    // with F1 in RingProducer::publish().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Not initialised yet: `produced` may be stale, so it is not read. The
    // producer's first publication moves produced from 0 past read_ = 0 and
    // crosses the arming, so sleeping is safe.
    if (!ready_ && !ready()) return !broken();
    if (!refresh_produced()) return false;
    return read_ == produced_;
  }

  // For a thread that waits for records without holding the lock that
  // serialises this consumer: the producer's `produced` word and the value
  // peek() last saw. changed() is a hint that a record may be there (or that
  // unread records already are); the waiter then takes its lock and peek()s,
  // which validates everything. The word stays readable for as long as the
  // producer's memory is mapped, even across a re-init.
  struct Watch {
    const std::uint64_t* produced = nullptr;
    std::uint64_t seen = 0;

    [[nodiscard]] bool changed() const noexcept {
      // Relaxed: nothing is read on the strength of this load; peek()
      // re-reads `produced` with A1.
      return produced != nullptr && load_shared(*produced, std::memory_order_relaxed) != seen;
    }
  };

  // Call with the consumer's lock held. A consumer that has not read
  // everything it saw gets a Watch that has changed() already.
  [[nodiscard]] Watch watch() const noexcept {
    if (producer_ == nullptr || !ready_) return {};
    return {&producer_->produced.value, read_ == produced_ ? produced_ : produced_ + 1};
  }

  // Copies a record's payload into `destination` (at most its size); the
  // copy is stable even if the producer rewrites the record. Returns the
  // bytes copied.
  static std::size_t copy_out(const Record& record, std::span<std::byte> destination) noexcept {
    const std::size_t size =
        record.payload.size() < destination.size() ? record.payload.size() : destination.size();
    __builtin_memcpy(destination.data(), record.payload.data(), size);
    return size;
  }

 private:
  struct Held {
    std::uint64_t end = 0;  // index after the record
    bool released = false;
  };

  [[nodiscard]] static bool aligned(const void* address) noexcept {
    return reinterpret_cast<std::uintptr_t>(address) % kCacheLine == 0;
  }

  ConsumeStatus fail(RingError error, std::uint64_t value, std::uint64_t limit) noexcept {
    diagnostic_ = {error, read_, value, limit};
    return ConsumeStatus::broken;
  }

  // Whether the producer has initialised its area, and to our geometry.
  [[nodiscard]] bool ready() noexcept {
    // A0: the header is complete once the magic shows; pairs with R0 in
    // RingProducer::init().
    if (load_shared(producer_->header.magic, std::memory_order_acquire) != kRingMagic) {
      return false;
    }
    const std::uint16_t version = load_shared(producer_->header.version, std::memory_order_relaxed);
    const std::uint64_t capacity =
        load_shared(producer_->header.capacity, std::memory_order_relaxed);
    if (version != kRingVersion) {
      fail(RingError::geometry_mismatch, version, kRingVersion);
      return false;
    }
    if (capacity != capacity_) {
      fail(RingError::geometry_mismatch, capacity, capacity_);
      return false;
    }
    ready_ = true;
    return true;
  }

  // Re-reads `produced`; false (and broken) when it is impossible.
  [[nodiscard]] bool refresh_produced() noexcept {
    // A1: the records up to `produced` are visible; pairs with R1 in
    // RingProducer::publish().
    const std::uint64_t produced =
        load_shared(producer_->produced.value, std::memory_order_acquire);
    if (produced - produced_ > capacity_ - (produced_ - consumed_)) {
      // Below the cached value (wraps to huge), or more unconsumed bytes
      // than the ring holds.
      const bool backwards = produced < produced_;
      fail(backwards ? RingError::produced_went_backwards : RingError::produced_beyond_capacity,
           produced, backwards ? produced_ : consumed_ + capacity_);
      return false;
    }
    produced_ = produced;
    return true;
  }

  // Moves `consumed` over the released prefix and publishes it.
  void advance_consumed() noexcept {
    const std::uint64_t before = consumed_;
    while (first_held_ != next_held_ && held_[first_held_ % MaxHeld].released) {
      consumed_ = held_[first_held_ % MaxHeld].end;
      ++first_held_;
    }
    if (consumed_ == before) return;
    // R2: our reads of the released records are done before the producer
    // may reuse their space; pairs with A2 in RingProducer::refresh_consumed().
    std::atomic_ref<std::uint64_t>(area_->consumed.value)
        .store(consumed_, std::memory_order_release);
  }

  const ProducerArea* producer_ = nullptr;
  ConsumerArea* area_ = nullptr;
  const std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  std::uint64_t read_ = 0;      // index of the next record to peek
  std::uint64_t produced_ = 0;  // cached producer index, validated
  std::uint64_t consumed_ = 0;  // shadow of our consumed index
  std::uint64_t first_held_ = 0;
  std::uint64_t next_held_ = 0;
  Held held_[MaxHeld] = {};
  bool ready_ = false;
  RingDiagnostic diagnostic_;
};

}  // namespace cellink::transports
