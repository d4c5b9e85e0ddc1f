// ivshmem_probe (ivshmem_probe.hpp): from a PCI function to a Device.
#include "cellink/inmate-lib/ivshmem_probe.hpp"

#include <new>

#include "cellink/inmate-lib/interrupts.hpp"
#include "cellink/inmate-lib/paging.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/wakeup.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/ivshmem/registers_v2.hpp"

namespace cellink::inmate {
namespace {

struct Search {
  unsigned wanted = 0;
  unsigned seen = 0;
  bool found = false;
  bool v2 = false;
  PciAddress address{};
};

bool visit(PciAddress function, void* context) {
  auto& search = *static_cast<Search*>(context);
  const std::uint16_t vendor = pci_read16(function, kPciVendorId);
  const std::uint16_t device = pci_read16(function, kPciDeviceId);
  const bool v1 = vendor == ivshmem::v1::kVendorId && device == ivshmem::v1::kDeviceId;
  const bool v2 = vendor == ivshmem::v2::kVendorId && device == ivshmem::v2::kDeviceId;
  if (!v1 && !v2) return true;
  if (search.seen++ != search.wanted) return true;
  search.found = true;
  search.v2 = v2;
  search.address = function;
  return false;  // stop
}

void say(PciAddress at, const char* what) {
  print("inmate: ivshmem %02x:%02x.%x: %s\n", at.bus, at.device, at.function, what);
}

// Memory: read-only, then the parts we may write made writable.
bool map_link_memory(std::uint64_t base, std::uint64_t size, const IvshmemGeometry& geometry,
                     bool v2) {
  const ivshmem::Layout& layout = geometry.layout;
  if (!map_range(base, size, Access::read_only, Caching::write_back)) return false;
  const ivshmem::Section own = layout.output_section(geometry.id);
  const ivshmem::Section rw = layout.rw_section();
  if (own.size != 0 &&
      !map_range(base + own.offset, own.size, Access::read_write, Caching::write_back)) {
    return false;
  }
  if (rw.size != 0 &&
      !map_range(base + rw.offset, rw.size, Access::read_write, Caching::write_back)) {
    return false;
  }
  // v1: our own state entry is ordinary shared memory.
  if (!v2 && !map_range(base, layout.state_table().size, Access::read_write, Caching::write_back)) {
    return false;
  }
  return true;
}

}  // namespace

void IvshmemFunction::on_interrupt(void* context) noexcept {
  auto& vector = *static_cast<VectorContext*>(context);
  // Relaxed: a count for the reports; the main loop learns of the event
  // through note_wakeup().
  vector.owner->counters_[vector.vector].fetch_add(1, std::memory_order_relaxed);
  note_wakeup();
}

ProbeResult probe_ivshmem_protocol(unsigned index, IvshmemFunction& out, std::uint16_t protocol) {
  Search search;
  search.wanted = index;
  pci_for_each_function(visit, &search);
  if (!search.found) {
    print("inmate: no ivshmem function #%u (PCI 1af4:1110 or 110a:4106)\n", index);
    return ProbeResult::no_function;
  }
  const PciAddress at = search.address;
  out.address_ = at;
  out.v2_ = search.v2;

  PciBar registers{};
  if (!pci_bar(at, 0, registers) || registers.io || registers.size < 0x14) {
    say(at, "BAR0 (the registers) is missing or not memory");
    return ProbeResult::refused;
  }
  const std::uint64_t register_span = registers.size < 4096 ? 4096 : registers.size;
  if (!map_range(registers.address, register_span, Access::read_write, Caching::uncached)) {
    say(at, "cannot map BAR0");
    return ProbeResult::refused;
  }
  out.registers_.attach(registers.address);
  pci_enable(at, true, true);
  if (!out.msix_.attach(at)) {
    say(at, "no usable MSI-X table: no doorbell could reach us");
    return ProbeResult::refused;
  }

  IvshmemGeometry geometry;
  std::uint64_t memory_base = 0;
  std::uint64_t memory_size = 0;
  bool one_shot = false;
  PciBar memory{};
  const bool have_bar2 = pci_bar(at, 2, memory) && !memory.io && memory.size != 0;
  if (!search.v2) {
    if (!have_bar2) {
      say(at, "BAR2 (the shared memory) is missing: is this ivshmem-doorbell with a memory?");
      return ProbeResult::refused;
    }
    memory_base = memory.address;
    memory_size = memory.size;
    // The descriptor is read once, into a private copy (every peer of a v1
    // link can write it), and only the copy is used.
    if (!map_range(memory_base, 4096, Access::read_only, Caching::write_back))
      return ProbeResult::refused;
    ivshmem::LinkDescriptor descriptor;
    const auto* source =
        reinterpret_cast<const volatile std::byte*>(memory_base + ivshmem::kLinkDescriptorOffset);
    auto* copy = reinterpret_cast<std::byte*>(&descriptor);
    for (std::size_t i = 0; i < sizeof(descriptor); ++i) copy[i] = source[i];
    const std::uint32_t iv_position =
        out.registers_.read32(offsetof(ivshmem::v1::Registers, iv_position));
    ivshmem::DescriptorError why{};
    const GeometryError error = v1_geometry(descriptor, memory_size, iv_position, out.msix_.size(),
                                            geometry, why, protocol);
    if (error == GeometryError::wrong_protocol) {
      print("inmate: ivshmem %02x:%02x.%x: link protocol 0x%x, not 0x%x: skipped\n", at.bus,
            at.device, at.function, descriptor.protocol, protocol);
      return ProbeResult::other_protocol;
    }
    if (error != GeometryError::ok) {
      print("inmate: ivshmem %02x:%02x.%x: %s%s%s (IVPosition %u, BAR2 %llu bytes)\n", at.bus,
            at.device, at.function, describe(error),
            error == GeometryError::bad_descriptor ? ": " : "",
            error == GeometryError::bad_descriptor ? ivshmem::describe(why) : "", iv_position,
            static_cast<unsigned long long>(memory_size));
      // What was found, beside what a cellink daemon writes.
      print(
          "inmate:   descriptor found: magic 0x%08x (expected 0x%08x), version %u (expected %u), "
          "size %u (expected %u), peers %u, vectors %u (MSI-X has %u), protocol 0x%x, "
          "memory %llu\n",
          descriptor.magic, ivshmem::kLinkDescriptorMagic, descriptor.version,
          ivshmem::kLinkDescriptorVersion, descriptor.descriptor_size,
          static_cast<unsigned>(sizeof(ivshmem::LinkDescriptor)), descriptor.peers,
          descriptor.vectors, out.msix_.size(), descriptor.protocol,
          static_cast<unsigned long long>(descriptor.memory_size));
      return ProbeResult::refused;
    }
  } else {
    const std::uint8_t capability = pci_find_capability(at, ivshmem::v2::kVendorCapabilityId);
    if (capability == 0) {
      say(at, "no ivshmem 2.0 vendor capability");
      return ProbeResult::refused;
    }
    ivshmem::v2::VendorCapability copy{};
    auto* bytes = reinterpret_cast<std::uint8_t*>(&copy);
    for (std::size_t i = 0; i < sizeof(copy); ++i) {
      bytes[i] = pci_read8(at, static_cast<std::uint16_t>(capability + i));
    }
    one_shot = (copy.privileged_control & ivshmem::v2::kOneShotInterrupts) != 0;
    const std::uint32_t id = out.registers_.read32(offsetof(ivshmem::v2::Registers, id));
    const std::uint32_t max_peers =
        out.registers_.read32(offsetof(ivshmem::v2::Registers, max_peers));
    const std::uint32_t class_code = pci_read32(at, kPciRevisionClass) >> 8;
    // The memory: BAR2, or the region at the capability's base address,
    // which holds exactly the sections the capability describes.
    const bool at_base = !have_bar2 && copy.length == ivshmem::v2::kVendorCapabilityLengthWithBase;
    if (!have_bar2 && !at_base) {
      say(at, "neither a BAR2 nor a base address in the vendor capability: no shared memory");
      return ProbeResult::refused;
    }
    memory_base = have_bar2 ? memory.address : copy.base_address;
    const std::uint64_t region = have_bar2 ? memory.size : ~std::uint64_t{0};
    const GeometryError error =
        v2_geometry(copy, id, max_peers, class_code, out.msix_.size(), region, geometry, protocol);
    if (error == GeometryError::wrong_protocol) {
      print("inmate: ivshmem %02x:%02x.%x: class %06x, not protocol 0x%x: skipped\n", at.bus,
            at.device, at.function, class_code, protocol);
      return ProbeResult::other_protocol;
    }
    if (error != GeometryError::ok) {
      print("inmate: ivshmem %02x:%02x.%x: %s (ID %u, Maximum Peers %u, class %06x)\n", at.bus,
            at.device, at.function, describe(error), id, max_peers, class_code);
      return ProbeResult::refused;
    }
    memory_size = have_bar2 ? memory.size : geometry.layout.used_size();
  }
  if (!map_link_memory(memory_base, memory_size, geometry, search.v2)) {
    say(at, "cannot map the shared memory");
    return ProbeResult::refused;
  }
  out.memory_address_ = memory_base;
  auto* base = reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(memory_base));
  if (search.v2) {
    auto* device = new (out.storage_) IvshmemV2Device(geometry, base, out.registers_, one_shot);
    out.device_ = device;
  } else {
    out.device_ = new (out.storage_) IvshmemV1Device(geometry, base, out.registers_);
  }

  // One CPU vector per doorbell vector, each counted on its own.
  const std::uint32_t routed =
      geometry.vectors < kMaxRoutedVectors ? geometry.vectors : kMaxRoutedVectors;
  for (std::uint32_t vector = 0; vector < routed; ++vector) {
    const std::uint8_t cpu_vector = allocate_vector();
    out.contexts_[vector] = {&out, vector};
    if (cpu_vector == 0 ||
        !set_interrupt_handler(cpu_vector, IvshmemFunction::on_interrupt, &out.contexts_[vector]) ||
        !out.msix_.route(vector, cpu_vector)) {
      say(at, "cannot route an MSI-X vector");
      return ProbeResult::refused;
    }
  }
  out.routed_ = routed;
  out.msix_.enable();
  if (search.v2) static_cast<IvshmemV2Device*>(out.device_)->enable_interrupts();
  print(
      "inmate: ivshmem %02x:%02x.%x: %s, peer %u of %u, %u vector(s), memory %llu KiB at 0x%llx, "
      "output sections %llu KiB\n",
      at.bus, at.device, at.function, search.v2 ? "ivshmem 2.0" : "ivshmem-doorbell (v1)",
      geometry.id, geometry.layout.peers(), routed,
      static_cast<unsigned long long>(memory_size / 1024),
      static_cast<unsigned long long>(memory_base),
      static_cast<unsigned long long>(geometry.layout.output_section(0).size / 1024));
  return ProbeResult::ok;
}

}  // namespace cellink::inmate
