// The record ring's wire format: what lives in shared memory, byte for byte.
// Spec: docs/ring.md. RingProducer (ring_producer.hpp) and RingConsumer
// (ring_consumer.hpp) are its only writers and readers.
//
// One ring carries records from one producer cell to one consumer cell. Each
// side writes only its own output section:
//
//  producer area (in the producer's output section, 64-byte aligned)
//  +0x00  RingHeader   magic, version, capacity  written once by the producer
//  +0x40  IndexLine    produced                  written by the producer only
//  +0x80  data[capacity]                         written by the producer only
//
//  consumer area (in the consumer's output section, 64-byte aligned)
//  +0x00  IndexLine    consumed                  written by the consumer only
//  +0x40  WakeLine     wake_after, space_wanted  written by the consumer only
//
// Indices are free-running u64 byte counts; position = index & (capacity-1).
// A record is an 8-byte RecordHeader and its payload padded to 8 bytes; it
// never straddles the end of the data area. A padding record (flag
// kRecordPadding) carries no message and is skipped: it fills the tail before
// a wrap, and the unused rest of a reservation that was committed shorter.
//
// Version rule: bump kRingVersion when a field moves or changes meaning;
// reserved fields must be written as zero.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace cellink::transports {

inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::uint32_t kRingMagic = 0x47524c43;  // "CLRG" little-endian
inline constexpr std::uint16_t kRingVersion = 1;

struct RingHeader {
  std::uint32_t magic;        // kRingMagic, stored last (release) once the rest is valid
  std::uint16_t version;      // kRingVersion
  std::uint16_t header_size;  // sizeof(RingHeader)
  std::uint64_t capacity;     // data bytes: a power of two, >= kMinRingCapacity
  std::uint64_t reserved[6];  // zero
};
static_assert(offsetof(RingHeader, magic) == 0);
static_assert(offsetof(RingHeader, version) == 4);
static_assert(offsetof(RingHeader, header_size) == 6);
static_assert(offsetof(RingHeader, capacity) == 8);
static_assert(sizeof(RingHeader) == kCacheLine);
static_assert(std::is_trivially_copyable_v<RingHeader> && std::is_standard_layout_v<RingHeader>);

// One u64 index alone on its cache line, so the two sides never false-share.
struct alignas(kCacheLine) IndexLine {
  std::uint64_t value;
  std::uint8_t padding[kCacheLine - sizeof(std::uint64_t)];
};
static_assert(sizeof(IndexLine) == kCacheLine);
static_assert(alignof(IndexLine) == kCacheLine);
static_assert(std::is_trivially_copyable_v<IndexLine> && std::is_standard_layout_v<IndexLine>);

struct ProducerArea {
  RingHeader header;
  IndexLine produced;  // end of the published records
  // data[capacity] follows
};
static_assert(offsetof(ProducerArea, header) == 0x00);
static_assert(offsetof(ProducerArea, produced) == 0x40);
static_assert(sizeof(ProducerArea) == 0x80);

// The consumer's requests for doorbells from the producer's cell, on one
// line the producer reads anyway (every publish loads wake_after).
struct alignas(kCacheLine) WakeLine {
  std::uint64_t value;  // wake_after: doorbell me when produced passes this index
  // Message layer, carried but not interpreted by the ring: the consumer's
  // cell, as a sender on the reverse ring, bumps it to ask the producer's
  // cell for a space-freed doorbell (docs/link.md, section 8).
  std::uint32_t space_wanted;
  std::uint32_t reserved;  // zero
  std::uint8_t padding[kCacheLine - 16];
};
static_assert(offsetof(WakeLine, value) == 0);
static_assert(offsetof(WakeLine, space_wanted) == 8);
static_assert(sizeof(WakeLine) == kCacheLine);
static_assert(std::is_trivially_copyable_v<WakeLine> && std::is_standard_layout_v<WakeLine>);

struct ConsumerArea {
  IndexLine consumed;   // end of the released prefix; the producer may reuse below it
  WakeLine wake_after;  // doorbell me when produced passes wake_after.value
};
static_assert(offsetof(ConsumerArea, consumed) == 0x00);
static_assert(offsetof(ConsumerArea, wake_after) == 0x40);
static_assert(sizeof(ConsumerArea) == 0x80);

inline constexpr std::size_t kProducerAreaOverhead = sizeof(ProducerArea);
inline constexpr std::size_t kConsumerAreaSize = sizeof(ConsumerArea);

struct RecordHeader {
  std::uint32_t length;   // payload bytes (padding: bytes skipped after the header)
  std::uint16_t channel;  // message-layer channel id; 0 in padding records
  std::uint16_t flags;    // kRecordPadding, kRecordMoreFragments or 0; others must be zero
};
static_assert(offsetof(RecordHeader, length) == 0);
static_assert(offsetof(RecordHeader, channel) == 4);
static_assert(offsetof(RecordHeader, flags) == 6);
static_assert(sizeof(RecordHeader) == 8);
static_assert(std::is_trivially_copyable_v<RecordHeader>);

inline constexpr std::uint16_t kRecordPadding = 1U << 0;
// Message-layer flag, carried but not interpreted by the ring: this record is
// a fragment and the next record on the same channel continues the message
// (docs/link.md).
inline constexpr std::uint16_t kRecordMoreFragments = 1U << 1;
inline constexpr std::uint16_t kKnownRecordFlags = kRecordPadding | kRecordMoreFragments;
inline constexpr std::uint64_t kRecordAlignment = 8;
inline constexpr std::uint64_t kMinRingCapacity = 64;

// The header as the one 8-byte word both sides store and load atomically.
[[nodiscard]] constexpr std::uint64_t pack(RecordHeader header) noexcept {
  return std::uint64_t{header.length} | (std::uint64_t{header.channel} << 32) |
         (std::uint64_t{header.flags} << 48);
}
[[nodiscard]] constexpr RecordHeader unpack(std::uint64_t word) noexcept {
  return {static_cast<std::uint32_t>(word), static_cast<std::uint16_t>(word >> 32),
          static_cast<std::uint16_t>(word >> 48)};
}
static_assert(unpack(pack({70000, 3, kRecordPadding})).length == 70000);

// Bytes a record with `payload` bytes occupies: header plus padded payload.
[[nodiscard]] constexpr std::uint64_t record_stride(std::uint64_t payload) noexcept {
  return sizeof(RecordHeader) + ((payload + kRecordAlignment - 1) & ~(kRecordAlignment - 1));
}

// The data capacity a producer area of `area_size` bytes holds: the largest
// power of two that fits after the header lines, or 0 when none does.
[[nodiscard]] constexpr std::uint64_t ring_capacity(std::uint64_t area_size) noexcept {
  if (area_size < kProducerAreaOverhead + kMinRingCapacity) return 0;
  const std::uint64_t room = area_size - kProducerAreaOverhead;
  std::uint64_t capacity = kMinRingCapacity;
  while (capacity <= room / 2) capacity *= 2;
  return capacity;
}
static_assert(ring_capacity(0x80 + 4096) == 4096);
static_assert(ring_capacity(0x80 + 4095) == 2048);
static_assert(ring_capacity(0x80 + 63) == 0);

// Largest payload one record may carry: a record of at most half the
// capacity always fits once the consumer has drained the ring, whatever the
// wrap position.
// It is also capped so that the u32 length field always holds it.
[[nodiscard]] constexpr std::uint64_t max_payload(std::uint64_t capacity) noexcept {
  constexpr std::uint64_t kLengthLimit = 0xffffffffULL & ~(kRecordAlignment - 1);
  const std::uint64_t half = capacity / 2 - sizeof(RecordHeader);
  return half < kLengthLimit ? half : kLengthLimit;
}

// Event-index rule: a move of `produced` from `old_index` to `new_index`
// crosses `wake_after` when old_index <= wake_after < new_index (mod 2^64).
[[nodiscard]] constexpr bool crosses(std::uint64_t wake_after, std::uint64_t new_index,
                                     std::uint64_t old_index) noexcept {
  return new_index - wake_after - 1 < new_index - old_index;
}
static_assert(crosses(10, 11, 10) && crosses(10, 20, 5) && !crosses(10, 10, 5));
// The unarmed value fires only on a move across 2^64 - 1: at most one spare
// doorbell per 2^64 bytes.
static_assert(!crosses(~std::uint64_t{0}, 100, 0));

inline constexpr std::uint64_t kNotArmed = ~std::uint64_t{0};

// Loads a field another cell writes, once. (std::atomic_ref<const T> is
// C++26, so the const is cast away for the load only; nothing is stored.)
template <typename T>
[[nodiscard]] inline T load_shared(const T& field, std::memory_order order) noexcept {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(order);
}

enum class RingError : std::uint8_t {
  none,
  // Consumer side, about the producer's area:
  geometry_mismatch,          // the header's capacity or version is not what the layout implies
  produced_went_backwards,    // produced is below a value already seen
  produced_beyond_capacity,   // produced is more than capacity ahead of consumed
  record_crosses_end,         // a record would straddle the end of the data area
  record_overruns_published,  // a record extends past produced
  bad_record_flags,           // unknown flag bits
  // Producer side, about the consumer's area:
  consumed_went_backwards,   // consumed is below a value already seen
  consumed_beyond_produced,  // consumed is past what was produced
};

[[nodiscard]] constexpr const char* describe(RingError error) noexcept {
  switch (error) {
    case RingError::none: return "no error";
    case RingError::geometry_mismatch:
      return "ring header disagrees with the link layout (peer is corrupt or misconfigured)";
    case RingError::produced_went_backwards:
      return "producer index moved backwards (peer is corrupt or restarted without reset)";
    case RingError::produced_beyond_capacity:
      return "producer index is more than the ring capacity ahead of the consumer";
    case RingError::record_crosses_end: return "record straddles the end of the ring";
    case RingError::record_overruns_published: return "record extends past the producer index";
    case RingError::bad_record_flags: return "record header has unknown flag bits";
    case RingError::consumed_went_backwards: return "consumer index moved backwards";
    case RingError::consumed_beyond_produced: return "consumer index is past what was produced";
  }
  return "unknown ring error";
}

// What a broken ring reports: the error, the index where it was seen, the
// offending value read from shared memory, and the bound it violated.
struct RingDiagnostic {
  RingError error = RingError::none;
  std::uint64_t index = 0;
  std::uint64_t value = 0;
  std::uint64_t limit = 0;
};

}  // namespace cellink::transports
