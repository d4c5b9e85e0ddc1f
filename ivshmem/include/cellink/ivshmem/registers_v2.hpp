// ivshmem 2.0: the Jailhouse device (PCI 110a:4106).
//
// Source: siemens/jailhouse Documentation/ivshmem-v2-specification.md and
// hypervisor/ivshmem.c (summary: docs/ivshmem-layout.md). BAR0 holds the
// registers, BAR1 the MSI-X table, and BAR2/3 an optional 64-bit
// shared-memory BAR; without BAR2 the memory's base address is in the vendor
// capability.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace cellink::ivshmem::v2 {

inline constexpr std::uint16_t kVendorId = 0x110a;
inline constexpr std::uint16_t kDeviceId = 0x4106;
inline constexpr std::uint8_t kRevision = 0;

inline constexpr unsigned kRegistersBar = 0;
inline constexpr unsigned kMsixBar = 1;
inline constexpr unsigned kSharedMemoryBar = 2;  // 64-bit, spans BAR2 and BAR3

// Limits of Jailhouse's implementation (hypervisor/ivshmem.c).
inline constexpr std::uint32_t kJailhouseMaxPeers = 12;
inline constexpr std::uint32_t kJailhouseMaxVectors = 16;

// Jailhouse's config-space placement: 0x80 bytes, vendor capability at 0x40,
// MSI-X capability at 0x60, MSI-X table at BAR1+0 and PBA at BAR1+0x100.
inline constexpr std::uint16_t kConfigSpaceSize = 0x80;
inline constexpr std::uint8_t kVendorCapabilityOffset = 0x40;
inline constexpr std::uint8_t kMsixCapabilityOffset = 0x60;
inline constexpr std::uint32_t kMsixTableOffset = 0x000;
inline constexpr std::uint32_t kMsixPbaOffset = 0x100;

// BAR0. Aligned 32-bit accesses only; unimplemented offsets read 0 and ignore
// writes. Access through a volatile pointer, never by value.
struct Registers {
  std::uint32_t id;                 // read-only: this peer's id
  std::uint32_t max_peers;          // read-only: 2..65536
  std::uint32_t interrupt_control;  // bit 0 enables; one-shot mode clears it
  std::uint32_t doorbell;           // write-only: doorbell_value(peer, vector)
  std::uint32_t state;              // copied to this peer's state-table entry
};
static_assert(offsetof(Registers, id) == 0x00);
static_assert(offsetof(Registers, max_peers) == 0x04);
static_assert(offsetof(Registers, interrupt_control) == 0x08);
static_assert(offsetof(Registers, doorbell) == 0x0c);
static_assert(offsetof(Registers, state) == 0x10);
static_assert(sizeof(Registers) == 0x14);
static_assert(std::is_standard_layout_v<Registers>);

inline constexpr std::uint32_t kInterruptEnable = 1U << 0;

[[nodiscard]] constexpr std::uint32_t doorbell_value(std::uint32_t peer,
                                                     std::uint32_t vector) noexcept {
  return (peer << 16) | (vector & 0xffffU);
}

// PCI vendor-specific capability (id 0x09) describing the shared memory.
// Written by the hypervisor; only `privileged_control` bit 0 is writable.
struct VendorCapability {
  std::uint8_t capability_id;       // 0x09
  std::uint8_t next;                // next capability pointer
  std::uint8_t length;              // 0x20 with base_address, 0x18 without
  std::uint8_t privileged_control;  // bit 0: one-shot interrupt mode
  std::uint32_t state_table_size;
  std::uint64_t rw_section_size;
  std::uint64_t output_section_size;
  std::uint64_t base_address;  // present only when length == 0x20
};
static_assert(offsetof(VendorCapability, capability_id) == 0x00);
static_assert(offsetof(VendorCapability, next) == 0x01);
static_assert(offsetof(VendorCapability, length) == 0x02);
static_assert(offsetof(VendorCapability, privileged_control) == 0x03);
static_assert(offsetof(VendorCapability, state_table_size) == 0x04);
static_assert(offsetof(VendorCapability, rw_section_size) == 0x08);
static_assert(offsetof(VendorCapability, output_section_size) == 0x10);
static_assert(offsetof(VendorCapability, base_address) == 0x18);
static_assert(sizeof(VendorCapability) == 0x20);
static_assert(std::is_trivially_copyable_v<VendorCapability>);
static_assert(std::is_standard_layout_v<VendorCapability>);

inline constexpr std::uint8_t kVendorCapabilityId = 0x09;
inline constexpr std::uint8_t kVendorCapabilityLengthWithBase = 0x20;
inline constexpr std::uint8_t kVendorCapabilityLengthWithoutBase = 0x18;
inline constexpr std::uint8_t kOneShotInterrupts = 1U << 0;

}  // namespace cellink::ivshmem::v2
