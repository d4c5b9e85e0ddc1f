// LinkDescriptor: how a v1 peer learns its link's geometry without config
// space. Spec: docs/ivshmem-layout.md.
//
// The daemon writes it once, at kLinkDescriptorOffset inside the state-table
// region, before it hands the memory to any peer; nobody writes it afterwards.
// The state-table entries occupy the first 4 * kMaxPeers = 64 bytes of that
// page, so the descriptor never overlaps them.
//
// On a v1 link every peer can write every byte, so a reader copies the
// descriptor out once and validates the copy against the size it mapped.
//
// Version rule: bump kLinkDescriptorVersion when a field changes meaning or
// moves; new fields take reserved bytes, which writers must zero and readers
// of this version must see as zero.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cellink/ivshmem/layout.hpp"

namespace cellink::ivshmem {

inline constexpr std::uint64_t kLinkDescriptorOffset = 0x800;
inline constexpr std::uint32_t kLinkDescriptorMagic = 0x4b4e4c43;  // "CLNK" little-endian
inline constexpr std::uint16_t kLinkDescriptorVersion = 1;
inline constexpr std::size_t kLinkNameCapacity = 32;  // including the NUL

struct LinkDescriptor {
  std::uint32_t magic;                // kLinkDescriptorMagic
  std::uint16_t version;              // kLinkDescriptorVersion
  std::uint16_t descriptor_size;      // sizeof(LinkDescriptor)
  std::uint32_t peers;                // kMinPeers..kMaxPeers
  std::uint32_t vectors;              // doorbell vectors per peer, 1..kMaxVectors
  std::uint32_t protocol;             // protocol id (protocol.hpp), high 16 bits zero
  std::uint32_t flags;                // none defined yet: must be zero
  std::uint64_t state_table_size;     // page multiple
  std::uint64_t rw_section_size;      // page multiple
  std::uint64_t output_section_size;  // page multiple, per peer
  std::uint64_t memory_size;          // the memory object's size, a power of two
  std::uint64_t reserved0;            // must be zero
  char name[kLinkNameCapacity];       // link name, NUL-terminated and NUL-padded
  std::uint8_t reserved1[32];         // must be zero
};
static_assert(offsetof(LinkDescriptor, magic) == 0x00);
static_assert(offsetof(LinkDescriptor, version) == 0x04);
static_assert(offsetof(LinkDescriptor, descriptor_size) == 0x06);
static_assert(offsetof(LinkDescriptor, peers) == 0x08);
static_assert(offsetof(LinkDescriptor, vectors) == 0x0c);
static_assert(offsetof(LinkDescriptor, protocol) == 0x10);
static_assert(offsetof(LinkDescriptor, flags) == 0x14);
static_assert(offsetof(LinkDescriptor, state_table_size) == 0x18);
static_assert(offsetof(LinkDescriptor, rw_section_size) == 0x20);
static_assert(offsetof(LinkDescriptor, output_section_size) == 0x28);
static_assert(offsetof(LinkDescriptor, memory_size) == 0x30);
static_assert(offsetof(LinkDescriptor, reserved0) == 0x38);
static_assert(offsetof(LinkDescriptor, name) == 0x40);
static_assert(offsetof(LinkDescriptor, reserved1) == 0x60);
static_assert(sizeof(LinkDescriptor) == 0x80);
static_assert(alignof(LinkDescriptor) == 8);
static_assert(std::is_trivially_copyable_v<LinkDescriptor>);
static_assert(std::is_standard_layout_v<LinkDescriptor>);
static_assert(kLinkDescriptorOffset >= std::uint64_t{kMaxPeers} * 4U);
static_assert(kLinkDescriptorOffset + sizeof(LinkDescriptor) <= kPageSize);

enum class DescriptorError : std::uint8_t {
  ok,
  mapping_too_small,
  bad_magic,
  unsupported_version,
  bad_descriptor_size,
  nonzero_reserved,
  name_not_terminated,
  bad_protocol,
  bad_vectors,
  bad_layout,
  layout_mismatch,
  memory_size_mismatch,
};

[[nodiscard]] constexpr const char* describe(DescriptorError error) noexcept {
  switch (error) {
    case DescriptorError::ok: return "ok";
    case DescriptorError::mapping_too_small:
      return "the shared memory is too small to hold a link descriptor";
    case DescriptorError::bad_magic:
      return "no cellink link descriptor (bad magic): the memory was not set up by cellink";
    case DescriptorError::unsupported_version: return "unsupported link descriptor version";
    case DescriptorError::bad_descriptor_size: return "link descriptor size field is wrong";
    case DescriptorError::nonzero_reserved: return "reserved link descriptor fields are not zero";
    case DescriptorError::name_not_terminated: return "link name is not NUL-terminated";
    case DescriptorError::bad_protocol: return "protocol id does not fit in 16 bits";
    case DescriptorError::bad_vectors: return "vector count is outside 1..64";
    case DescriptorError::bad_layout: return "section sizes do not form a valid layout";
    case DescriptorError::layout_mismatch:
      return "state-table size disagrees with the computed layout";
    case DescriptorError::memory_size_mismatch:
      return "memory size disagrees with the mapping or the layout";
  }
  return "unknown descriptor error";
}

// Builds the descriptor the daemon writes for `layout`. `name` is truncated
// to kLinkNameCapacity - 1 bytes.
[[nodiscard]] constexpr LinkDescriptor make_link_descriptor(const Layout& layout,
                                                            std::uint32_t vectors,
                                                            std::uint16_t protocol_id,
                                                            const char* name) noexcept {
  LinkDescriptor descriptor{};
  descriptor.magic = kLinkDescriptorMagic;
  descriptor.version = kLinkDescriptorVersion;
  descriptor.descriptor_size = sizeof(LinkDescriptor);
  descriptor.peers = layout.peers();
  descriptor.vectors = vectors;
  descriptor.protocol = protocol_id;
  descriptor.state_table_size = layout.state_table().size;
  descriptor.rw_section_size = layout.rw_section().size;
  descriptor.output_section_size = layout.output_section(0).size;
  descriptor.memory_size = layout.memory_size();
  for (std::size_t i = 0; name != nullptr && name[i] != '\0' && i + 1 < kLinkNameCapacity; ++i) {
    descriptor.name[i] = name[i];
  }
  return descriptor;
}

// Validates a private copy of a descriptor against the size of the mapping it
// came from, and on success computes its layout. `mapped_size` is the size of
// the whole memory object as the reader mapped it.
[[nodiscard]] constexpr DescriptorError validate(const LinkDescriptor& descriptor,
                                                 std::uint64_t mapped_size,
                                                 Layout& layout) noexcept {
  if (mapped_size < kLinkDescriptorOffset + sizeof(LinkDescriptor)) {
    return DescriptorError::mapping_too_small;
  }
  if (descriptor.magic != kLinkDescriptorMagic) return DescriptorError::bad_magic;
  if (descriptor.version != kLinkDescriptorVersion) return DescriptorError::unsupported_version;
  if (descriptor.descriptor_size != sizeof(LinkDescriptor)) {
    return DescriptorError::bad_descriptor_size;
  }
  if (descriptor.flags != 0 || descriptor.reserved0 != 0) return DescriptorError::nonzero_reserved;
  for (const std::uint8_t byte : descriptor.reserved1) {
    if (byte != 0) return DescriptorError::nonzero_reserved;
  }
  bool terminated = false;
  for (const char c : descriptor.name) terminated = terminated || c == '\0';
  if (!terminated) return DescriptorError::name_not_terminated;
  if (descriptor.protocol > 0xffffU) return DescriptorError::bad_protocol;
  if (descriptor.vectors == 0 || descriptor.vectors > kMaxVectors) {
    return DescriptorError::bad_vectors;
  }
  Layout computed;
  const LayoutRequest request{descriptor.peers, descriptor.rw_section_size,
                              descriptor.output_section_size};
  if (Layout::compute(request, computed) != LayoutError::ok) return DescriptorError::bad_layout;
  if (computed.state_table().size != descriptor.state_table_size) {
    return DescriptorError::layout_mismatch;
  }
  if (descriptor.memory_size != mapped_size || computed.used_size() > mapped_size ||
      !is_power_of_two(mapped_size)) {
    return DescriptorError::memory_size_mismatch;
  }
  layout = computed;
  return DescriptorError::ok;
}

}  // namespace cellink::ivshmem
