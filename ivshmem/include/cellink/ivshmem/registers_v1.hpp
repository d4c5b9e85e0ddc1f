// ivshmem v1: QEMU's ivshmem-doorbell / ivshmem-plain device (PCI 1af4:1110).
//
// Source: QEMU docs/specs/ivshmem-spec.rst and hw/misc/ivshmem.c (summary:
// docs/ivshmem-layout.md). The register block is BAR0 (256 bytes), the MSI-X
// table is BAR1 (ivshmem-doorbell only), and the shared memory is BAR2,
// mapped whole, so its size is always a power of two.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace cellink::ivshmem::v1 {

inline constexpr std::uint16_t kVendorId = 0x1af4;
inline constexpr std::uint16_t kDeviceId = 0x1110;
inline constexpr std::uint8_t kRevision = 1;

inline constexpr unsigned kRegistersBar = 0;
inline constexpr unsigned kMsixBar = 1;
inline constexpr unsigned kSharedMemoryBar = 2;
inline constexpr std::size_t kRegistersSize = 256;

// BAR0. Every register is a 32-bit little-endian MMIO word; access it through
// a volatile pointer, never through this struct by value.
struct Registers {
  std::uint32_t interrupt_mask;    // legacy INTx mask; unused with MSI-X
  std::uint32_t interrupt_status;  // legacy INTx status; unused with MSI-X
  std::uint32_t iv_position;       // this peer's id, read-only
  std::uint32_t doorbell;          // write-only: doorbell_value(peer, vector)
};
static_assert(offsetof(Registers, interrupt_mask) == 0x00);
static_assert(offsetof(Registers, interrupt_status) == 0x04);
static_assert(offsetof(Registers, iv_position) == 0x08);
static_assert(offsetof(Registers, doorbell) == 0x0c);
static_assert(sizeof(Registers) == 0x10);
static_assert(std::is_standard_layout_v<Registers>);

// QEMU honours only the low 8 bits of the vector field.
inline constexpr std::uint32_t kMaxVectors = 256;

[[nodiscard]] constexpr std::uint32_t doorbell_value(std::uint32_t peer,
                                                     std::uint32_t vector) noexcept {
  return (peer << 16) | (vector & 0xffU);
}

}  // namespace cellink::ivshmem::v1
