// RingProducer: the writing end of a record ring. Spec: docs/ring.md.
//
// Zero copy: reserve() hands out a writable span inside the ring's data area
// (in this cell's own output section); commit() seals it; publish() makes
// every committed record visible with one release store and says whether
// the consumer asked for a doorbell. Several reservations may be in flight;
// they are committed in the order they were reserved.
//
// The consumer's area is another cell's memory: `consumed` is read once per
// refresh, checked (monotonic, never past what was produced) and cached; a
// bad value breaks the ring for good with a RingDiagnostic.
//
// Threading: one producer thread. Spans stay valid until the record is
// committed; the memory must outlive the producer.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/device.hpp"
#include "cellink/transports/ring_format.hpp"

namespace cellink::transports {

enum class ProduceStatus : std::uint8_t {
  ok,
  full,             // not enough free space now: retry after the consumer releases
  too_large,        // payload exceeds max_payload(capacity): it can never fit
  out_of_order,     // commit() of a reservation that is not the oldest one in flight,
                    // or write() while reservations are in flight
  bad_reservation,  // commit() of a Reservation reserve() did not hand out, or
                    // `used` larger than what was reserved
  broken,           // the ring is in its sticky error state; see diagnostic()
};

[[nodiscard]] constexpr const char* describe(ProduceStatus status) noexcept {
  switch (status) {
    case ProduceStatus::ok: return "ok";
    case ProduceStatus::full: return "ring is full (retry once the consumer releases records)";
    case ProduceStatus::too_large: return "record is larger than the ring can ever hold";
    case ProduceStatus::out_of_order:
      return "commit of a reservation that is not the oldest in flight, or write() while "
             "reservations are in flight";
    case ProduceStatus::bad_reservation:
      return "commit of a reservation reserve() did not hand out, or of more bytes than reserved";
    case ProduceStatus::broken: return "ring is broken (see diagnostic())";
  }
  return "unknown produce status";
}

class RingProducer {
 public:
  struct Reservation {
    std::span<std::byte> payload;  // write the message here
    std::uint64_t begin = 0;       // index of the reserved region (padding included)
    std::uint64_t header = 0;      // index of this record's header
    std::uint64_t end = 0;         // index after the record
    std::uint16_t channel = 0;
  };

  RingProducer() noexcept = default;

  // Starts a fresh ring: writes the header and produced = 0 into
  // `producer_area` (this cell's memory), then the magic. `consumer_area` is
  // the consumer's ConsumerArea (read only). Both must be 64-byte aligned;
  // returns false when they are not or the producer area holds no ring.
  [[nodiscard]] bool init(std::span<std::byte> producer_area,
                          std::span<const std::byte> consumer_area) noexcept {
    const std::uint64_t capacity = ring_capacity(producer_area.size());
    if (capacity == 0 || consumer_area.size() < kConsumerAreaSize ||
        !aligned(producer_area.data()) || !aligned(consumer_area.data())) {
      return false;
    }
    area_ = reinterpret_cast<ProducerArea*>(producer_area.data());
    consumer_ = reinterpret_cast<const ConsumerArea*>(consumer_area.data());
    // Withdraw an old magic first, so nobody trusts the header while it is
    // rewritten; R0 below publishes the new one.
    std::atomic_ref<std::uint32_t>(area_->header.magic).store(0, std::memory_order_relaxed);
    data_ = producer_area.data() + kProducerAreaOverhead;
    capacity_ = capacity;
    mask_ = capacity - 1;
    reserved_ = committed_ = published_ = consumed_ = 0;
    diagnostic_ = {};
    area_->header.version = kRingVersion;
    area_->header.header_size = sizeof(RingHeader);
    area_->header.capacity = capacity;
    for (std::uint64_t& word : area_->header.reserved) word = 0;
    std::atomic_ref<std::uint64_t>(area_->produced.value).store(0, std::memory_order_relaxed);
    // R0: the header and produced = 0 are visible before the magic; pairs
    // with A0 in RingConsumer::ready().
    std::atomic_ref<std::uint32_t>(area_->header.magic)
        .store(kRingMagic, std::memory_order_release);
    return true;
  }

  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::uint64_t max_payload_size() const noexcept { return max_payload(capacity_); }
  [[nodiscard]] bool broken() const noexcept { return diagnostic_.error != RingError::none; }
  [[nodiscard]] const RingDiagnostic& diagnostic() const noexcept { return diagnostic_; }
  // Index after the last published record (what the consumer can see).
  [[nodiscard]] std::uint64_t published() const noexcept { return published_; }

  // Whether reserve(payload_size) would find room now, re-reading the
  // consumer's index (false too when the ring is broken).
  [[nodiscard]] bool has_room(std::uint32_t payload_size) noexcept {
    if (broken() || payload_size > max_payload(capacity_)) return false;
    const std::uint64_t stride = record_stride(payload_size);
    const std::uint64_t contiguous = capacity_ - (reserved_ & mask_);
    const std::uint64_t end = reserved_ + (stride > contiguous ? contiguous : 0) + stride;
    return refresh_consumed() && end - consumed_ <= capacity_;
  }

  // Reserves room for a `payload_size`-byte record on `channel`.
  [[nodiscard]] ProduceStatus reserve(std::uint32_t payload_size, std::uint16_t channel,
                                      Reservation& out) noexcept {
    if (broken()) return ProduceStatus::broken;
    if (payload_size > max_payload(capacity_)) return ProduceStatus::too_large;
    const std::uint64_t stride = record_stride(payload_size);
    const std::uint64_t contiguous = capacity_ - (reserved_ & mask_);
    const std::uint64_t padding = stride > contiguous ? contiguous : 0;
    const std::uint64_t end = reserved_ + padding + stride;
    if (end - consumed_ > capacity_) {
      if (!refresh_consumed()) return ProduceStatus::broken;
      if (end - consumed_ > capacity_) return ProduceStatus::full;
    }
    if (padding != 0) write_padding(reserved_, padding);
    out.begin = reserved_;
    out.header = reserved_ + padding;
    out.end = end;
    out.channel = channel;
    out.payload = {data_ + (out.header & mask_) + sizeof(RecordHeader), payload_size};
    reserved_ = end;
    return ProduceStatus::ok;
  }

  // Seals the oldest uncommitted reservation with `used` <= its payload size
  // bytes of message. Not yet visible to the consumer: see publish().
  [[nodiscard]] ProduceStatus commit(const Reservation& reservation, std::uint32_t used) noexcept {
    return seal(reservation, used, 0);
  }

  // As commit(), with message-layer flags (kRecordMoreFragments) on the record.
  [[nodiscard]] ProduceStatus commit(const Reservation& reservation, std::uint32_t used,
                                     std::uint16_t flags) noexcept {
    if ((flags & ~kRecordMoreFragments) != 0) return ProduceStatus::bad_reservation;
    return seal(reservation, used, flags);
  }

  // Gives up the oldest uncommitted reservation: its whole region becomes a
  // padding record the consumer skips, so no message is delivered for it.
  [[nodiscard]] ProduceStatus abandon(const Reservation& reservation) noexcept {
    const ProduceStatus status = check_oldest(reservation, 0);
    if (status != ProduceStatus::ok) return status;
    if (reservation.end == reserved_) {
      // The newest reservation: give the space back outright, so no padding
      // waits for a consumer that has nothing left to peek.
      reserved_ = reservation.begin;
      return ProduceStatus::ok;
    }
    write_padding(reservation.header, reservation.end - reservation.header);
    committed_ = reservation.end;
    return ProduceStatus::ok;
  }

  // Publishes every committed record with one store. Returns true when the
  // consumer armed a wake-up that this publication crosses: ring its
  // doorbell then, and only then.
  [[nodiscard]] bool publish() noexcept {
    if (committed_ == published_ || broken()) return false;
    const std::uint64_t old_index = published_;
    published_ = committed_;
    // R1: every committed header and payload is visible before the new
    // produced index; pairs with A1 in RingConsumer::refresh_produced().
    std::atomic_ref<std::uint64_t>(area_->produced.value)
        .store(published_, std::memory_order_release);
    // F1: the produced store is ordered before the wake_after load below;
    // pairs with F2 in RingConsumer::arm_wakeup() (store, fence, load on
    // both sides, so at least one of them sees the other's store).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Relaxed: F1 already orders it; any value is safe (a hostile consumer
    // only gains or loses its own doorbells).
    const std::uint64_t wake_after =
        load_shared(consumer_->wake_after.value, std::memory_order_relaxed);
    return crosses(wake_after, published_, old_index);
  }

  // publish(), then ring `peer`'s `vector` on `device` if the consumer asked.
  // Returns whether a doorbell was rung.
  bool publish(ivshmem::Device& device, std::uint32_t peer, std::uint32_t vector) noexcept {
    if (!publish()) return false;
    return device.doorbell(peer, vector) == ivshmem::DoorbellStatus::ok;
  }

  // Copies `payload` into a new record and commits it (convenience).
  // Refused (out_of_order) while reservations are in flight, because it
  // commits at once.
  [[nodiscard]] ProduceStatus write(std::span<const std::byte> payload,
                                    std::uint16_t channel) noexcept {
    if (broken()) return ProduceStatus::broken;
    if (committed_ != reserved_) return ProduceStatus::out_of_order;
    if (payload.size() > max_payload(capacity_)) return ProduceStatus::too_large;
    Reservation reservation;
    const auto size = static_cast<std::uint32_t>(payload.size());
    const ProduceStatus status = reserve(size, channel, reservation);
    if (status != ProduceStatus::ok) return status;
    __builtin_memcpy(reservation.payload.data(), payload.data(), payload.size());
    return commit(reservation, size);
  }

 private:
  [[nodiscard]] static bool aligned(const void* address) noexcept {
    return reinterpret_cast<std::uintptr_t>(address) % kCacheLine == 0;
  }

  // Only a Reservation reserve() handed out and not yet committed passes:
  // inside the reserved window, and its header one stride before its end.
  [[nodiscard]] ProduceStatus check_oldest(const Reservation& reservation,
                                           std::uint32_t used) const noexcept {
    if (broken()) return ProduceStatus::broken;
    if (reservation.end > reserved_ || reservation.header < reservation.begin ||
        reservation.end - reservation.header != record_stride(reservation.payload.size()) ||
        used > reservation.payload.size()) {
      return ProduceStatus::bad_reservation;
    }
    if (reservation.begin != committed_) return ProduceStatus::out_of_order;
    return ProduceStatus::ok;
  }

  [[nodiscard]] ProduceStatus seal(const Reservation& reservation, std::uint32_t used,
                                   std::uint16_t flags) noexcept {
    const ProduceStatus status = check_oldest(reservation, used);
    if (status != ProduceStatus::ok) return status;
    const std::uint64_t stride = record_stride(used);
    write_header(reservation.header, {used, reservation.channel, flags});
    const std::uint64_t end = reservation.header + stride;
    if (reservation.end == reserved_) {
      // The newest reservation shrinks in place: trailing padding would only
      // be skipped at the consumer's next peek(), so a consumer that released
      // everything would still hold that space.
      reserved_ = end;
      committed_ = end;
      return ProduceStatus::ok;
    }
    if (reservation.end != end) write_padding(end, reservation.end - end);
    committed_ = reservation.end;
    return ProduceStatus::ok;
  }

  void write_header(std::uint64_t index, RecordHeader header) noexcept {
    // Relaxed: published by R1 in publish(); one 8-byte store so that a
    // reader never sees half a header.
    std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(data_ + (index & mask_)))
        .store(pack(header), std::memory_order_relaxed);
  }

  void write_padding(std::uint64_t index, std::uint64_t bytes) noexcept {
    write_header(index,
                 {static_cast<std::uint32_t>(bytes - sizeof(RecordHeader)), 0, kRecordPadding});
  }

  // Re-reads the consumer's index; false (and broken) when it is invalid.
  [[nodiscard]] bool refresh_consumed() noexcept {
    // A2: the consumer's reads of released records happen before we reuse
    // their space; pairs with R2 in RingConsumer::publish_consumed().
    const std::uint64_t consumed =
        load_shared(consumer_->consumed.value, std::memory_order_acquire);
    if (consumed - consumed_ > published_ - consumed_) {
      // Below the cached value (wraps to huge) or past what was published.
      const bool backwards = consumed < consumed_;
      diagnostic_ = {
          backwards ? RingError::consumed_went_backwards : RingError::consumed_beyond_produced,
          consumed_, consumed, backwards ? consumed_ : published_};
      return false;
    }
    consumed_ = consumed;
    return true;
  }

  ProducerArea* area_ = nullptr;
  const ConsumerArea* consumer_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  std::uint64_t reserved_ = 0;   // end of the last reservation
  std::uint64_t committed_ = 0;  // end of the committed prefix
  std::uint64_t published_ = 0;  // shadow of produced: never read back from shared memory
  std::uint64_t consumed_ = 0;   // cached consumer index, validated
  RingDiagnostic diagnostic_;
};

}  // namespace cellink::transports
