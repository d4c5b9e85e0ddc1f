// The inmate's ivshmem::Device, for both device generations:
//   - IvshmemV1Device: QEMU's ivshmem-doorbell (PCI 1af4:1110). The state
//     table is ordinary shared memory: each peer writes its own entry and
//     rings vector 0 on the others; the daemon zeroes a departed peer's
//     entry. Every byte of BAR2 is writable by every peer.
//   - IvshmemV2Device: ivshmem 2.0 (PCI 110a:4106). The State register is
//     the only way to publish a state: the hypervisor copies it into the
//     read-only state table and fires vector 0 on the others. In one-shot
//     mode every delivered interrupt clears Interrupt Control, so the
//     inmate re-arms it (rearm_interrupts()) before it sleeps again.
// Both take the memory as one identity-mapped region laid out by
// IvshmemGeometry, and the registers through a RegisterPort.
//
// Memory rules (ivshmem::Device's): the inmate maps its own output section
// and the R/W section writable, every other section read-only (v2 needs
// that; v1 gets it too, so that the inmate cannot write another peer's
// output even by mistake). On v1 the page holding the state table stays
// writable: the inmate's own entry lives there.
//
// Threading: one CPU. doorbell() may be called from an interrupt handler;
// everything else from the inmate's main loop.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/inmate-lib/ivshmem_geometry.hpp"
#include "cellink/inmate-lib/register_port.hpp"
#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/ivshmem/registers_v2.hpp"

namespace cellink::inmate {

// What both generations share: the geometry, the memory and the doorbell.
class IvshmemLinkDevice : public ivshmem::Device {
 public:
  [[nodiscard]] std::uint32_t id() const noexcept final { return geometry_.id; }
  [[nodiscard]] std::uint32_t peer_count() const noexcept final { return geometry_.layout.peers(); }
  [[nodiscard]] std::uint32_t vector_count() const noexcept final { return geometry_.vectors; }
  [[nodiscard]] bool peer_present(std::uint32_t peer) const noexcept final {
    if (peer >= peer_count()) return false;
    return peer == id() || peer_state(peer) != 0;
  }
  [[nodiscard]] const ivshmem::Layout& layout() const noexcept final { return geometry_.layout; }
  [[nodiscard]] std::span<std::byte> rw_section() noexcept final {
    return section(geometry_.layout.rw_section());
  }
  [[nodiscard]] std::span<std::byte> own_output_section() noexcept final {
    return section(geometry_.layout.output_section(geometry_.id));
  }
  [[nodiscard]] std::span<const std::byte> output_section(std::uint32_t peer) const noexcept final {
    const ivshmem::Section where = geometry_.layout.output_section(peer);
    return {memory_ + where.offset, static_cast<std::size_t>(where.size)};
  }
  // Both generations: Doorbell at 0x0c, peer << 16 | vector.
  [[nodiscard]] ivshmem::DoorbellStatus doorbell(std::uint32_t peer,
                                                 std::uint32_t vector) noexcept final {
    if (peer >= peer_count()) return ivshmem::DoorbellStatus::no_such_peer;
    if (vector >= vector_count()) return ivshmem::DoorbellStatus::no_such_vector;
    // F1: every store to shared memory before the doorbell is visible before
    // the register write that interrupts the peer; pairs with the acquire
    // loads the peer makes once its interrupt arrives.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    registers_->write32(kDoorbellOffset, (peer << 16) | (vector & doorbell_vector_mask_));
    ++doorbells_;
    return ivshmem::DoorbellStatus::ok;
  }
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer) const noexcept final {
    // A1: one acquire load of the entry; pairs with the writer's release
    // (R1 in IvshmemV1Device::set_state, or the hypervisor's update of a v2
    // table), so what the peer wrote before its state is visible after it.
    return std::atomic_ref<std::uint32_t>(state_entry(peer)).load(std::memory_order_acquire);
  }

  [[nodiscard]] const IvshmemGeometry& geometry() const noexcept { return geometry_; }
  [[nodiscard]] std::uint64_t doorbells_rung() const noexcept { return doorbells_; }
  // v2 one-shot mode: re-enables interrupts after one was delivered. v1 and
  // v2 without one-shot: nothing to do.
  virtual void rearm_interrupts() noexcept {}

 protected:
  static constexpr std::uint32_t kDoorbellOffset = 0x0c;
  static_assert(offsetof(ivshmem::v1::Registers, doorbell) == kDoorbellOffset);
  static_assert(offsetof(ivshmem::v2::Registers, doorbell) == kDoorbellOffset);

  // `memory`: the identity-mapped link memory, geometry.layout.memory_size()
  // bytes (v1: BAR2), at least used_size() bytes (v2).
  IvshmemLinkDevice(const IvshmemGeometry& geometry, std::byte* memory, RegisterPort& registers,
                    std::uint32_t doorbell_vector_mask) noexcept
      : geometry_(geometry),
        memory_(memory),
        registers_(&registers),
        doorbell_vector_mask_(doorbell_vector_mask) {}
  ~IvshmemLinkDevice() = default;

  [[nodiscard]] std::span<std::byte> section(ivshmem::Section where) noexcept {
    return {memory_ + where.offset, static_cast<std::size_t>(where.size)};
  }
  [[nodiscard]] std::uint32_t& state_entry(std::uint32_t peer) const noexcept {
    return *reinterpret_cast<std::uint32_t*>(memory_ + geometry_.layout.state_entry_offset(peer));
  }

  IvshmemGeometry geometry_;
  std::byte* memory_;
  RegisterPort* registers_;
  std::uint32_t doorbell_vector_mask_;
  std::uint64_t doorbells_ = 0;
};

class IvshmemV1Device final : public IvshmemLinkDevice {
 public:
  IvshmemV1Device(const IvshmemGeometry& geometry, std::byte* memory,
                  RegisterPort& registers) noexcept
      : IvshmemLinkDevice(geometry, memory, registers, 0xffU) {}

  // Writes our own entry, then rings vector 0 on every other peer (QEMU
  // drops a doorbell to an absent peer).
  void set_state(std::uint32_t value) noexcept override {
    // R1: what we wrote before is visible to a peer that reads the new
    // state; pairs with A1 in that peer's peer_state().
    std::atomic_ref<std::uint32_t>(state_entry(id())).store(value, std::memory_order_release);
    for (std::uint32_t peer = 0; peer < peer_count(); ++peer) {
      if (peer != id()) (void)doorbell(peer, 0);
    }
  }
};

class IvshmemV2Device final : public IvshmemLinkDevice {
 public:
  IvshmemV2Device(const IvshmemGeometry& geometry, std::byte* memory, RegisterPort& registers,
                  bool one_shot) noexcept
      : IvshmemLinkDevice(geometry, memory, registers, 0xffffU), one_shot_(one_shot) {}

  // The hypervisor owns the table: the State register is our only writer.
  void set_state(std::uint32_t value) noexcept override {
    // F2: our shared-memory stores are visible before the state that
    // announces them; pairs with A1 in the peers (the hypervisor's table
    // update happens after this register write).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    registers_->write32(offsetof(ivshmem::v2::Registers, state), value);
  }

  // Turns interrupts on; call once after the MSI-X table is programmed.
  void enable_interrupts() noexcept {
    registers_->write32(offsetof(ivshmem::v2::Registers, interrupt_control),
                        ivshmem::v2::kInterruptEnable);
  }
  void rearm_interrupts() noexcept override {
    if (one_shot_) enable_interrupts();
  }
  [[nodiscard]] bool one_shot() const noexcept { return one_shot_; }

 private:
  bool one_shot_;
};

}  // namespace cellink::inmate
