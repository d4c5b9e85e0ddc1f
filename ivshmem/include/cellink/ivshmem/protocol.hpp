// The shared-memory protocol id and its PCI class-code encoding (ivshmem 2.0).
//
// A v2 device advertises the protocol that runs over its memory in the class
// code: base class 0xff, sub-class = protocol bits 15..8, interface = bits
// 7..0. On a v1 link the daemon writes the same id into the link descriptor.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::ivshmem {

namespace protocol {
inline constexpr std::uint16_t kUndefined = 0x0000;
inline constexpr std::uint16_t kVirtualEthernet = 0x0001;
inline constexpr std::uint16_t kUserDefinedFirst = 0x4000;
inline constexpr std::uint16_t kUserDefinedLast = 0x7fff;
inline constexpr std::uint16_t kVirtioFrontBase = 0x8000;  // + virtio device id
inline constexpr std::uint16_t kVirtioBackBase = 0xc000;   // + virtio device id
// cellink's own record-ring protocol, in the user-defined range.
inline constexpr std::uint16_t kCellink = 0x4c11;

inline constexpr std::uint16_t kVirtioDeviceNet = 1;
inline constexpr std::uint16_t kVirtioDeviceBlock = 2;
inline constexpr std::uint16_t kVirtioDeviceConsole = 3;
}  // namespace protocol

inline constexpr std::uint8_t kClassBase = 0xff;

// The 24-bit PCI class code (base << 16 | sub-class << 8 | interface).
[[nodiscard]] constexpr std::uint32_t class_code(std::uint16_t protocol_id) noexcept {
  return (std::uint32_t{kClassBase} << 16) | protocol_id;
}

[[nodiscard]] constexpr std::uint16_t protocol_from_class_code(std::uint32_t code) noexcept {
  return static_cast<std::uint16_t>(code & 0xffffU);
}

[[nodiscard]] constexpr bool is_virtio_front(std::uint16_t protocol_id) noexcept {
  return protocol_id >= protocol::kVirtioFrontBase && protocol_id < protocol::kVirtioBackBase;
}

[[nodiscard]] constexpr bool is_virtio_back(std::uint16_t protocol_id) noexcept {
  return protocol_id >= protocol::kVirtioBackBase;
}

[[nodiscard]] constexpr bool is_user_defined(std::uint16_t protocol_id) noexcept {
  return protocol_id >= protocol::kUserDefinedFirst && protocol_id <= protocol::kUserDefinedLast;
}

static_assert(class_code(protocol::kVirtioBackBase + protocol::kVirtioDeviceConsole) == 0xffc003);
static_assert(protocol_from_class_code(0xff4c11) == protocol::kCellink);

}  // namespace cellink::ivshmem
