// ivshmem_probe: finds an ivshmem PCI function, maps it and routes its
// doorbells, ready for an Endpoint. Spec: docs/inmates.md ("Devices").
//
// Both generations, one result:
//   - v1, QEMU's ivshmem-doorbell (1af4:1110): geometry from IVPosition,
//     the MSI-X table and the link descriptor in BAR2;
//   - v2, ivshmem 2.0 (110a:4106): geometry from the ID and Maximum Peers
//     registers, the vendor capability and the class code; the memory is
//     BAR2 or, without one, the capability's base address.
// The registers are mapped uncached. The memory is mapped write-back and
// read-only, except the R/W section and our own output section (and, on
// v1, the state-table page that holds our own entry), so that the inmate
// cannot write another peer's memory even by mistake: such a write is a
// page fault, reported on the console.
//
// Each doorbell vector (up to kMaxRoutedVectors) gets a CPU vector whose
// handler counts the interrupt and calls note_wakeup() (wakeup.hpp); the
// main loop does the rest.
//
// Threading: probe from the main loop, once per function, before
// interrupts are enabled. The IvshmemFunction must stay where it is (the
// handlers point at it): make it a global.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/ivshmem_device.hpp"
#include "cellink/inmate-lib/ivshmem_geometry.hpp"
#include "cellink/inmate-lib/msix.hpp"
#include "cellink/inmate-lib/pci.hpp"
#include "cellink/inmate-lib/register_port.hpp"

namespace cellink::inmate {

inline constexpr std::uint32_t kMaxRoutedVectors = 4;

enum class ProbeResult : std::uint8_t {
  ok,
  no_function,     // there is no index-th ivshmem function
  other_protocol,  // the function's link carries another protocol (not mapped, not routed)
  refused,         // the function is broken or unusable (the printed line says why)
};

class IvshmemFunction {
 public:
  IvshmemFunction() = default;
  IvshmemFunction(const IvshmemFunction&) = delete;
  IvshmemFunction& operator=(const IvshmemFunction&) = delete;

  // The device, once probe_ivshmem() succeeded; nullptr before.
  [[nodiscard]] IvshmemLinkDevice* device() noexcept { return device_; }
  [[nodiscard]] PciAddress address() const noexcept { return address_; }
  [[nodiscard]] bool is_v2() const noexcept { return v2_; }
  [[nodiscard]] std::uint64_t memory_address() const noexcept { return memory_address_; }
  // Interrupts delivered on doorbell vector `vector` so far.
  [[nodiscard]] std::uint64_t interrupts(std::uint32_t vector) const noexcept {
    return vector < kMaxRoutedVectors ? counters_[vector].load(std::memory_order_relaxed) : 0;
  }
  [[nodiscard]] std::uint64_t interrupts() const noexcept {
    std::uint64_t total = 0;
    for (std::uint32_t vector = 0; vector < kMaxRoutedVectors; ++vector)
      total += interrupts(vector);
    return total;
  }
  [[nodiscard]] std::uint32_t routed_vectors() const noexcept { return routed_; }

 private:
  friend ProbeResult probe_ivshmem_protocol(unsigned index, IvshmemFunction& out,
                                            std::uint16_t protocol);
  struct VectorContext {
    IvshmemFunction* owner = nullptr;
    std::uint32_t vector = 0;
  };
  static void on_interrupt(void* context) noexcept;

  PciAddress address_{};
  bool v2_ = false;
  std::uint64_t memory_address_ = 0;
  std::uint32_t routed_ = 0;
  MmioRegisterPort registers_;
  MsixTable msix_;
  VectorContext contexts_[kMaxRoutedVectors];
  // Counted by the handlers, read by the main loop: relaxed, one CPU.
  std::atomic<std::uint64_t> counters_[kMaxRoutedVectors] = {};
  IvshmemLinkDevice* device_ = nullptr;
  alignas(IvshmemV2Device) std::byte
      storage_[sizeof(IvshmemV2Device) > sizeof(IvshmemV1Device) ? sizeof(IvshmemV2Device)
                                                                 : sizeof(IvshmemV1Device)];
};

// Finds the `index`-th ivshmem function (v1 and v2 in PCI order) and, when
// its link carries `protocol` (protocol_matches(): kCellink also accepts
// "undefined"), maps it and routes its vectors. Prints one line saying what
// it found, or why it refused or skipped the function.
ProbeResult probe_ivshmem_protocol(unsigned index, IvshmemFunction& out, std::uint16_t protocol);

// The same for a cellink link; false when there is none or it was refused.
inline bool probe_ivshmem(unsigned index, IvshmemFunction& out) {
  return probe_ivshmem_protocol(index, out, ivshmem::protocol::kCellink) == ProbeResult::ok;
}

}  // namespace cellink::inmate
