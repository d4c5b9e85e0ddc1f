// From uio_ivshmem's maps to a link's geometry, checked (docs/guests.md).
//
// UioDevice (uio_device.hpp) does its I/O (sysfs, mmap, the registers) and
// hands what it read to these pure functions, which decide whether the
// device can carry a cellink link and how. They throw std::system_error
// whose what() starts with `where` (e.g. "/dev/uio0"), says what is wrong and
// what to do; but for v1_bar_link_geometry() they never touch memory
// themselves, so they are tested with made-up values (tests/unit/linux-uio/uio_device_test.cpp).
//
// The maps, as uio_ivshmem (linux-uio/kmod) registers them:
//
//   v1 (QEMU 1af4:1110)            v2 (Jailhouse 110a:4106)
//   0 registers  BAR0, 256 B       0 registers       BAR0
//   1 shmem      BAR2, whole       1 state_table     read-only
//                                  2 rw_section      only when not empty
//                                  3 input_sections  every peer's output, read-only
//                                  4 output_section  this peer's, writable
//
// v1's geometry comes from the link descriptor the daemon wrote into the
// shared memory (link_descriptor.hpp), which every peer could have
// overwritten: the caller copies it out once and passes the copy. v2's comes
// from the device: ID and Maximum Peers registers, the map sizes (which the
// module took from the vendor capability) and the class code's protocol.
//
// Threading: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/link_descriptor.hpp"
#include "cellink/linux-uio/uio_sysfs.hpp"

namespace cellink::linux_uio {

// The largest shared-memory map accepted (1 TiB). A bigger size from sysfs is
// a corrupt value, not a link.
inline constexpr std::uint64_t kMaxUioSharedMemory = std::uint64_t{1} << 40;
// The largest register map accepted; v1's BAR0 is 256 bytes.
inline constexpr std::uint64_t kMaxUioRegisters = std::uint64_t{1} << 20;

// One map, checked: `size` bytes start `offset` bytes into the mapping of
// `mapped_length` bytes at mmap offset map * page size.
struct UioRegion {
  unsigned map = 0;
  std::uint64_t size = 0;  // 0: the map is absent (v2 without an R/W section)
  std::uint64_t offset = 0;
  std::uint64_t mapped_length = 0;
};

struct UioMapSet {
  IvshmemVersion version = IvshmemVersion::v1;
  UioRegion registers;
  UioRegion shmem;  // v1 only
  // v2 only:
  UioRegion state_table;
  UioRegion rw_section;
  UioRegion input_sections;
  UioRegion output_section;
};

// Recognises the v1 or v2 map set by the map names and checks every size
// and offset: registers large enough for the version's register block,
// v1 memory a power of two of at least a page, v2 sections whole pages, all
// of them within the limits above. Throws otherwise.
[[nodiscard]] UioMapSet classify_uio_maps(const std::vector<UioMap>& maps, std::uint64_t page_size,
                                          std::string_view where);

// What a link over the device looks like to this peer.
struct UioLinkGeometry {
  std::uint32_t id = 0;
  std::uint32_t vectors = 0;  // doorbell vectors per peer
  ivshmem::Layout layout;
  std::uint16_t protocol = 0;
  std::string link_name;  // v1: from the descriptor; v2: empty
};

// v1: `descriptor` is the caller's private copy of the one at
// kLinkDescriptorOffset. Checks it against the shmem map's size
// (ivshmem::validate), IVPosition against its peer count, and the device's
// MSI-X vectors against the link's vector count.
[[nodiscard]] UioLinkGeometry v1_link_geometry(const UioMapSet& maps,
                                               const ivshmem::LinkDescriptor& descriptor,
                                               std::uint32_t iv_position,
                                               std::uint32_t msix_vectors, std::string_view where);

// v1 with BAR0 and BAR2 mapped directly rather than through uio_ivshmem
// (VfioDevice, SysfsDevice). Before the mapping: BAR2's `size` must be a power
// of two of at least a page, as QEMU makes it; throws otherwise.
void check_v1_bar2_size(std::uint64_t size, std::uint64_t page_size, std::string_view where);

// After it: copies the descriptor out of `bar2` (the whole BAR, mapped) once
// and returns v1_link_geometry() of that copy, with the maps BAR0 of
// `registers_size` bytes and BAR2 stand for. The only function here that
// reads memory: the caller's fresh mapping, and only the descriptor.
[[nodiscard]] UioLinkGeometry v1_bar_link_geometry(std::span<const std::byte> bar2,
                                                   std::uint64_t registers_size,
                                                   std::uint32_t iv_position,
                                                   std::uint32_t msix_vectors,
                                                   std::string_view where);

// v2: `id` and `max_peers` as the ID and Maximum Peers registers read them,
// `class_code` from config space. Checks 2..kMaxPeers peers, the id, the
// state table's room for every peer, input_sections = peers x output
// section, the protocol (undefined or cellink) and at least one vector.
[[nodiscard]] UioLinkGeometry v2_link_geometry(const UioMapSet& maps, std::uint32_t id,
                                               std::uint32_t max_peers, std::uint32_t msix_vectors,
                                               std::uint32_t class_code, std::string_view where);

}  // namespace cellink::linux_uio
