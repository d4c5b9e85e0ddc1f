// IvshmemGeometry: what an inmate learns about a link before it touches the
// link itself: its id, the vectors, and the layout of the shared memory.
// Spec: docs/ivshmem-layout.md; the inmate side is docs/inmates.md.
//
// Two sources, one result:
//   - v1 (QEMU ivshmem-doorbell): the IVPosition register, the MSI-X table
//     size and the link descriptor the daemon wrote at 0x800 of BAR2. Every
//     peer may write every byte of a v1 link, so the caller passes a private
//     copy of the descriptor, and the copy is validated against BAR2's size.
//   - v2 (ivshmem 2.0): the ID and Maximum Peers registers, the vendor
//     capability (copied out of config space once), the class code and the
//     MSI-X table size.
// Both end in the Layout every cellink peer computes (Layout::compute), so a
// v1 peer and a v2 peer of the same link agree on every offset.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/ivshmem/protocol.hpp"
#include "cellink/ivshmem/registers_v2.hpp"

namespace cellink::inmate {

struct IvshmemGeometry {
  std::uint32_t id = 0;
  std::uint32_t vectors = 0;  // usable doorbell vectors: min(descriptor or device, MSI-X entries)
  std::uint16_t protocol = 0;
  ivshmem::Layout layout;
};

enum class GeometryError : std::uint8_t {
  ok,
  bad_descriptor,     // v1: the link descriptor failed validation (see descriptor_error)
  id_out_of_range,    // the id register names no peer of the link
  no_msix,            // the function has no MSI-X table: no doorbell can reach us
  bad_peer_count,     // v2: Maximum Peers is outside 2..kMaxPeers
  bad_capability,     // v2: the vendor capability is missing or malformed
  state_table_small,  // v2: the state table cannot hold an entry per peer
  bad_layout,         // v2: the section sizes do not form a cellink layout
  wrong_protocol,     // the link runs another protocol than cellink's
  memory_too_small,   // v2: the memory region is smaller than the sections
};

[[nodiscard]] constexpr const char* describe(GeometryError error) noexcept {
  switch (error) {
    case GeometryError::ok: return "ok";
    case GeometryError::bad_descriptor: return "the link descriptor in BAR2 is invalid";
    case GeometryError::id_out_of_range: return "the device's peer id is not below the peer count";
    case GeometryError::no_msix: return "the device has no MSI-X vectors";
    case GeometryError::bad_peer_count: return "Maximum Peers is outside 2..16";
    case GeometryError::bad_capability: return "the ivshmem 2.0 vendor capability is malformed";
    case GeometryError::state_table_small: return "the state table is too small for the peers";
    case GeometryError::bad_layout: return "the section sizes do not form a cellink link";
    case GeometryError::wrong_protocol: return "the link carries another protocol than wanted";
    case GeometryError::memory_too_small: return "the shared memory is smaller than its sections";
  }
  return "unknown geometry error";
}

// cellink's protocol id, or "undefined" (a configuration that names none),
// as the Linux backends accept.
[[nodiscard]] constexpr bool carries_cellink(std::uint16_t protocol) noexcept {
  return protocol == ivshmem::protocol::kCellink || protocol == ivshmem::protocol::kUndefined;
}

// Whether a link's protocol is the one the caller wants: for kCellink also
// "undefined" (carries_cellink), for any other id (e.g. virtio-front:console,
// 0x8003) exactly that id.
[[nodiscard]] constexpr bool protocol_matches(std::uint16_t protocol,
                                              std::uint16_t wanted) noexcept {
  return wanted == ivshmem::protocol::kCellink ? carries_cellink(protocol) : protocol == wanted;
}
static_assert(protocol_matches(ivshmem::protocol::kUndefined, ivshmem::protocol::kCellink));
static_assert(!protocol_matches(ivshmem::protocol::kUndefined, 0x8003));

// v1. `descriptor` is the caller's copy of BAR2 + kLinkDescriptorOffset,
// `bar2_size` the BAR's size, `iv_position` the IVPosition register (read
// once), `msix_entries` the MSI-X table size, `wanted` the protocol the
// caller speaks (protocol_matches). On bad_descriptor, `descriptor_error`
// says which check failed.
[[nodiscard]] constexpr GeometryError v1_geometry(
    const ivshmem::LinkDescriptor& descriptor, std::uint64_t bar2_size, std::uint32_t iv_position,
    std::uint32_t msix_entries, IvshmemGeometry& out, ivshmem::DescriptorError& descriptor_error,
    std::uint16_t wanted = ivshmem::protocol::kCellink) noexcept {
  ivshmem::Layout layout;
  descriptor_error = ivshmem::validate(descriptor, bar2_size, layout);
  if (descriptor_error != ivshmem::DescriptorError::ok) return GeometryError::bad_descriptor;
  if (iv_position >= layout.peers()) return GeometryError::id_out_of_range;
  if (msix_entries == 0) return GeometryError::no_msix;
  const auto protocol = static_cast<std::uint16_t>(descriptor.protocol);
  if (!protocol_matches(protocol, wanted)) return GeometryError::wrong_protocol;
  out.id = iv_position;
  out.vectors = descriptor.vectors < msix_entries ? descriptor.vectors : msix_entries;
  out.protocol = protocol;
  out.layout = layout;
  return GeometryError::ok;
}

// v2. `capability` is a copy of the vendor capability read from config
// space, `memory_size` the size of the region the inmate can map (BAR2's, or
// the whole region at the capability's base address).
[[nodiscard]] constexpr GeometryError v2_geometry(
    const ivshmem::v2::VendorCapability& capability, std::uint32_t id, std::uint32_t max_peers,
    std::uint32_t class_code, std::uint32_t msix_entries, std::uint64_t memory_size,
    IvshmemGeometry& out, std::uint16_t wanted = ivshmem::protocol::kCellink) noexcept {
  if (capability.capability_id != ivshmem::v2::kVendorCapabilityId ||
      (capability.length != ivshmem::v2::kVendorCapabilityLengthWithBase &&
       capability.length != ivshmem::v2::kVendorCapabilityLengthWithoutBase)) {
    return GeometryError::bad_capability;
  }
  if (max_peers < ivshmem::kMinPeers || max_peers > ivshmem::kMaxPeers) {
    return GeometryError::bad_peer_count;
  }
  if (id >= max_peers) return GeometryError::id_out_of_range;
  if (msix_entries == 0) return GeometryError::no_msix;
  const std::uint16_t protocol = ivshmem::protocol_from_class_code(class_code);
  if (!protocol_matches(protocol, wanted)) return GeometryError::wrong_protocol;
  ivshmem::Layout layout;
  const ivshmem::LayoutRequest request{max_peers, capability.rw_section_size,
                                       capability.output_section_size};
  if (ivshmem::Layout::compute(request, layout) != ivshmem::LayoutError::ok) {
    return GeometryError::bad_layout;
  }
  if (capability.state_table_size < std::uint64_t{4} * max_peers) {
    return GeometryError::state_table_small;
  }
  // cellink's layout puts the R/W section right after one page of state
  // table; a hypervisor with another table size lays the link out otherwise.
  if (capability.state_table_size != layout.state_table().size) return GeometryError::bad_layout;
  if (layout.used_size() > memory_size) return GeometryError::memory_too_small;
  out.id = id;
  out.vectors = msix_entries < ivshmem::kMaxVectors ? msix_entries : ivshmem::kMaxVectors;
  out.protocol = protocol;
  out.layout = layout;
  return GeometryError::ok;
}

}  // namespace cellink::inmate
