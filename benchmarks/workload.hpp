// What producer and consumer do with each record's payload, identically for
// every queue under test, so that only the queue differs between rows.
//
//   touch    producer writes one 8-byte word per 64 payload bytes, consumer
//            reads one word per 64 bytes: every cache line crosses cores once
//   fill     producer writes every payload byte (memset), consumer reads one
//            word per 64 bytes: a message built in place
//   handoff  producer writes and consumer reads only the first word: the
//            queue's own cost of handing over a buffer filled elsewhere
//
// The first word always carries the record's sequence number, and the
// consumer checks it, so a lost, duplicated or reordered record aborts the
// run instead of producing a figure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace cellink::bench {

enum class Workload : std::uint8_t { touch, fill, handoff };

[[nodiscard]] constexpr const char* name(Workload workload) noexcept {
  switch (workload) {
    case Workload::touch: return "touch";
    case Workload::fill: return "fill";
    case Workload::handoff: return "handoff";
  }
  return "?";
}

inline constexpr std::size_t kTouchStride = 64;

inline void write_payload(std::byte* payload, std::size_t size, std::uint64_t sequence,
                          Workload workload) noexcept {
  if (workload == Workload::fill) {
    std::memset(payload, static_cast<int>(sequence & 0xff), size);
  } else if (workload == Workload::touch) {
    for (std::size_t offset = kTouchStride; offset + sizeof sequence <= size;
         offset += kTouchStride) {
      std::memcpy(payload + offset, &sequence, sizeof sequence);
    }
  }
  std::memcpy(payload, &sequence, sizeof sequence);
}

// Returns the payload's first word; the other words read are folded into
// `sink` so that the loads cannot be dropped.
[[nodiscard]] inline std::uint64_t read_payload(const std::byte* payload, std::size_t size,
                                                Workload workload, std::uint64_t& sink) noexcept {
  std::uint64_t first = 0;
  std::memcpy(&first, payload, sizeof first);
  if (workload != Workload::handoff) {
    for (std::size_t offset = kTouchStride; offset + sizeof first <= size; offset += kTouchStride) {
      std::uint64_t word = 0;
      std::memcpy(&word, payload + offset, sizeof word);
      sink += word;
    }
  }
  return first;
}

}  // namespace cellink::bench
