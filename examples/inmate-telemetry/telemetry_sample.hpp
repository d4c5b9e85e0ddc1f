// TelemetrySample: the fixed-layout record inmate-telemetry publishes, one
// per timer tick, on its channel (default "telemetry"). Spec:
// docs/inmates.md ("The telemetry inmate"). Little-endian, no padding; a
// reader copies the record out of the message once and checks the copy.
//
// Version rule: bump kTelemetryVersion when a field moves or changes
// meaning; a reader refuses other versions.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace cellink::examples {

inline constexpr std::uint32_t kTelemetryMagic = 0x314d4c54;  // "TLM1" little-endian
inline constexpr std::uint16_t kTelemetryVersion = 1;

struct TelemetrySample {
  std::uint32_t magic;     // kTelemetryMagic
  std::uint16_t version;   // kTelemetryVersion
  std::uint16_t size;      // sizeof(TelemetrySample)
  std::uint64_t sequence;  // 0, 1, 2, ... per receiving peer, since the inmate booted
  std::uint64_t time_ns;   // the inmate's clock when the tick's interrupt ran
  std::uint32_t rate_hz;   // the configured rate
  std::uint32_t peer;      // the inmate's peer id on the link
  std::uint64_t dropped;   // samples for this peer not sent so far (ring or credit full, peer away)
  std::uint64_t ticks;     // timer interrupts so far
  std::uint64_t checksum;  // telemetry_checksum() of the bytes before this field
};
static_assert(offsetof(TelemetrySample, magic) == 0);
static_assert(offsetof(TelemetrySample, version) == 4);
static_assert(offsetof(TelemetrySample, size) == 6);
static_assert(offsetof(TelemetrySample, sequence) == 8);
static_assert(offsetof(TelemetrySample, time_ns) == 16);
static_assert(offsetof(TelemetrySample, rate_hz) == 24);
static_assert(offsetof(TelemetrySample, peer) == 28);
static_assert(offsetof(TelemetrySample, dropped) == 32);
static_assert(offsetof(TelemetrySample, ticks) == 40);
static_assert(offsetof(TelemetrySample, checksum) == 48);
static_assert(sizeof(TelemetrySample) == 56);
static_assert(std::is_trivially_copyable_v<TelemetrySample>);
static_assert(std::is_standard_layout_v<TelemetrySample>);

// FNV-1a (64-bit) over the sample's bytes before `checksum`.
[[nodiscard]] constexpr std::uint64_t telemetry_checksum(const unsigned char* bytes,
                                                         std::size_t size) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (std::size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

}  // namespace cellink::examples
