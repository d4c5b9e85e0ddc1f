// Map classification and link geometry for uio_ivshmem: spec in
// uio_geometry.hpp.
#include "cellink/linux-uio/uio_geometry.hpp"

#include <cstdio>
#include <cstring>
#include <system_error>

#include "cellink/ivshmem/protocol.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/ivshmem/registers_v2.hpp"

namespace cellink::linux_uio {
namespace {

[[noreturn]] void fail(std::string_view where, const std::string& what) {
  throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                          std::string(where) + ": " + what);
}

std::string hex(std::uint64_t value, int digits) {
  char text[24];
  std::snprintf(text, sizeof(text), "%0*llx", digits, static_cast<unsigned long long>(value));
  return text;
}

std::string names_of(const std::vector<UioMap>& maps) {
  std::string names;
  for (const UioMap& map : maps) names += (names.empty() ? "'" : ", '") + map.name + "'";
  return names;
}

// offset + size rounded up to whole pages; the caller bounded both.
std::uint64_t mapped_length(const UioMap& map, std::uint64_t page_size) {
  return (map.offset + map.size + page_size - 1) / page_size * page_size;
}

UioRegion register_region(const UioMap& map, std::uint64_t needed, std::uint64_t page_size,
                          std::string_view where) {
  if (map.size < needed || map.size > kMaxUioRegisters || map.offset % 4 != 0) {
    fail(where, "register map " + std::to_string(map.index) + " of " + std::to_string(map.size) +
                    " bytes at page offset " + std::to_string(map.offset) + " cannot hold the " +
                    std::to_string(needed) +
                    "-byte register block (wrong driver or a corrupt BAR)");
  }
  return {map.index, map.size, map.offset, mapped_length(map, page_size)};
}

// A section of shared memory: page-aligned, whole pages, within the limit.
UioRegion memory_region(const UioMap& map, std::uint64_t page_size, std::string_view where) {
  if (map.offset != 0 || map.size % page_size != 0 || map.size > kMaxUioSharedMemory) {
    fail(where, "map " + std::to_string(map.index) + " '" + map.name + "' of " +
                    std::to_string(map.size) + " bytes at page offset " +
                    std::to_string(map.offset) + " is not whole pages of at most 1 TiB");
  }
  return {map.index, map.size, 0, map.size};
}

}  // namespace

UioMapSet classify_uio_maps(const std::vector<UioMap>& maps, std::uint64_t page_size,
                            std::string_view where) {
  if (page_size == 0 || !ivshmem::is_power_of_two(page_size)) {
    fail(where, "page size " + std::to_string(page_size) + " is not a power of two");
  }
  auto named = [&](std::initializer_list<std::string_view> expected) {
    if (maps.size() != expected.size()) return false;
    std::size_t i = 0;
    for (const std::string_view name : expected) {
      if (maps[i++].name != name) return false;
    }
    return true;
  };
  UioMapSet set;
  if (named({"registers", "shmem"})) {
    set.version = IvshmemVersion::v1;
    set.registers = register_region(maps[0], sizeof(ivshmem::v1::Registers), page_size, where);
    set.shmem = memory_region(maps[1], page_size, where);
    if (!ivshmem::is_power_of_two(set.shmem.size) || set.shmem.size < page_size) {
      fail(where, "shared memory of " + std::to_string(set.shmem.size) +
                      " bytes is not a power of two of at least a page, as QEMU's BAR2 is");
    }
    return set;
  }
  const bool with_rw =
      named({"registers", "state_table", "rw_section", "input_sections", "output_section"});
  if (!with_rw && !named({"registers", "state_table", "input_sections", "output_section"})) {
    fail(where,
         "maps " + names_of(maps) +
             " are neither uio_ivshmem's v1 set ('registers', 'shmem') nor its v2 set "
             "('registers', 'state_table', ['rw_section',] 'input_sections', 'output_section'): "
             "is the device bound to linux-uio/kmod's uio_ivshmem? (a v2 link without output "
             "sections cannot carry cellink's rings)");
  }
  set.version = IvshmemVersion::v2;
  std::size_t next = 0;
  set.registers = register_region(maps[next++], sizeof(ivshmem::v2::Registers), page_size, where);
  set.state_table = memory_region(maps[next++], page_size, where);
  if (with_rw) set.rw_section = memory_region(maps[next++], page_size, where);
  set.input_sections = memory_region(maps[next++], page_size, where);
  set.output_section = memory_region(maps[next++], page_size, where);
  return set;
}

UioLinkGeometry v1_link_geometry(const UioMapSet& maps, const ivshmem::LinkDescriptor& descriptor,
                                 std::uint32_t iv_position, std::uint32_t msix_vectors,
                                 std::string_view where) {
  if (maps.version != IvshmemVersion::v1) fail(where, "not a v1 (QEMU ivshmem) map set");
  UioLinkGeometry geometry;
  const ivshmem::DescriptorError error =
      ivshmem::validate(descriptor, maps.shmem.size, geometry.layout);
  if (error != ivshmem::DescriptorError::ok) {
    fail(where, std::string("invalid link descriptor at 0x800 of the shared memory: ") +
                    ivshmem::describe(error) +
                    " (is the QEMU device on a `cellink daemon` link? `cellink qemu-args CELL` "
                    "prints the options)");
  }
  if (iv_position >= geometry.layout.peers()) {
    fail(where, "IVPosition " + std::to_string(iv_position) + " is not a peer of the " +
                    std::to_string(geometry.layout.peers()) + "-peer link '" + descriptor.name +
                    "'");
  }
  if (msix_vectors == 0) {
    fail(where,
         "the device has no MSI-X interrupts: ivshmem-plain cannot ring doorbells; start QEMU "
         "with -device ivshmem-doorbell (the options `cellink qemu-args CELL` prints)");
  }
  if (msix_vectors < descriptor.vectors) {
    fail(where, "the device has " + std::to_string(msix_vectors) + " MSI-X vectors but link '" +
                    descriptor.name + "' rings " + std::to_string(descriptor.vectors) +
                    ": start QEMU with ivshmem-doorbell,vectors=" +
                    std::to_string(descriptor.vectors) + " (as `cellink qemu-args CELL` prints)");
  }
  geometry.id = iv_position;
  geometry.vectors = descriptor.vectors;
  geometry.protocol = static_cast<std::uint16_t>(descriptor.protocol);
  geometry.link_name = descriptor.name;  // validate() checked the NUL
  return geometry;
}

void check_v1_bar2_size(std::uint64_t size, std::uint64_t page_size, std::string_view where) {
  if (size < page_size || size > kMaxUioSharedMemory || !ivshmem::is_power_of_two(size)) {
    fail(where, "BAR2 is " + std::to_string(size) +
                    " bytes: an ivshmem BAR2 is a power of two of at least a page (is this "
                    "ivshmem-doorbell on a `cellink daemon` link?)");
  }
}

UioLinkGeometry v1_bar_link_geometry(std::span<const std::byte> bar2, std::uint64_t registers_size,
                                     std::uint32_t iv_position, std::uint32_t msix_vectors,
                                     std::string_view where) {
  static_assert(ivshmem::kLinkDescriptorOffset + sizeof(ivshmem::LinkDescriptor) <= 4096,
                "the descriptor lies in BAR2's first page");
  if (bar2.size() < ivshmem::kLinkDescriptorOffset + sizeof(ivshmem::LinkDescriptor)) {
    fail(where, "BAR2 cannot hold a link descriptor");
  }
  // Every peer may write any byte of a v1 link: copy the descriptor out
  // once and use only the validated copy.
  ivshmem::LinkDescriptor descriptor{};
  std::memcpy(&descriptor, bar2.data() + ivshmem::kLinkDescriptorOffset, sizeof(descriptor));
  UioMapSet maps;
  maps.version = IvshmemVersion::v1;
  maps.registers = {0, registers_size, 0, registers_size};
  maps.shmem = {2, bar2.size(), 0, bar2.size()};
  return v1_link_geometry(maps, descriptor, iv_position, msix_vectors, where);
}

UioLinkGeometry v2_link_geometry(const UioMapSet& maps, std::uint32_t id, std::uint32_t max_peers,
                                 std::uint32_t msix_vectors, std::uint32_t class_code,
                                 std::string_view where) {
  if (maps.version != IvshmemVersion::v2) fail(where, "not a v2 (Jailhouse ivshmem 2.0) map set");
  if (max_peers < ivshmem::kMinPeers || max_peers > ivshmem::kMaxPeers) {
    fail(where, "the device reports " + std::to_string(max_peers) +
                    " peers; cellink links have 2.." + std::to_string(ivshmem::kMaxPeers));
  }
  if (id >= max_peers) {
    fail(where, "the ID register reads " + std::to_string(id) + " on a " +
                    std::to_string(max_peers) + "-peer device");
  }
  if (maps.state_table.size < std::uint64_t{4} * max_peers) {
    fail(where, "the state table of " + std::to_string(maps.state_table.size) +
                    " bytes has no room for " + std::to_string(max_peers) + " peers");
  }
  std::uint64_t inputs = 0;
  if (__builtin_mul_overflow(maps.output_section.size, std::uint64_t{max_peers}, &inputs) ||
      inputs != maps.input_sections.size) {
    fail(where, "input_sections holds " + std::to_string(maps.input_sections.size) +
                    " bytes, not " + std::to_string(max_peers) + " output sections of " +
                    std::to_string(maps.output_section.size));
  }
  const std::uint16_t protocol = ivshmem::protocol_from_class_code(class_code);
  if (protocol != ivshmem::protocol::kUndefined && protocol != ivshmem::protocol::kCellink) {
    fail(where, "the device carries protocol " + hex(protocol, 4) + " (class " +
                    hex(class_code, 6) + "), not cellink's " + hex(ivshmem::protocol::kCellink, 4) +
                    " or undefined 0000");
  }
  if (msix_vectors == 0) fail(where, "the device has no MSI-X interrupts");
  UioLinkGeometry geometry;
  const ivshmem::LayoutRequest request{max_peers, maps.rw_section.size, maps.output_section.size};
  const ivshmem::LayoutError error = ivshmem::Layout::compute(request, geometry.layout);
  if (error != ivshmem::LayoutError::ok) {
    fail(where, std::string("the sections do not form a link: ") + ivshmem::describe(error));
  }
  geometry.id = id;
  geometry.vectors = msix_vectors < ivshmem::kMaxVectors ? msix_vectors : ivshmem::kMaxVectors;
  geometry.protocol = protocol;
  return geometry;
}

}  // namespace cellink::linux_uio
