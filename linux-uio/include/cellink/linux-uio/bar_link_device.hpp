// BarLinkDevice: what the backends that map a QEMU (v1) function's BAR2
// whole themselves (VfioDevice, SysfsDevice) share: the link in it. Once a
// backend has mapped BAR0 and BAR2 and validated the descriptor
// (v1_bar_link_geometry(), uio_geometry.hpp), attach_link() gives this base
// the memory; it then answers every ivshmem::Device question from the link
// and applies the doorbell rules, and the backend writes the Doorbell
// register its own way (an mmap'ed BAR0, or pwrite) and implements wait().
// UioDevice gets its sections from uio_ivshmem's maps instead.
//
// Membership is the state table's (StateTableView): a peer is present while
// its entry is not 0; the backend's wait() calls prepend_membership().
//
// Ownership: the backend maps BAR2 before attach_link() and unmaps it only
// in its destructor; the spans point into it.
//
// Threading: prepend_membership() from the thread that calls wait();
// everything else from any thread, concurrently with wait().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/linux-uio/state_table_view.hpp"
#include "cellink/linux-uio/uio_geometry.hpp"
#include "cellink/linux-uio/waitable_device.hpp"

namespace cellink::linux_uio {

class BarLinkDevice : public WaitableDevice {
 public:
  // ivshmem::Device
  [[nodiscard]] std::uint32_t id() const noexcept final { return geometry_.id; }
  [[nodiscard]] std::uint32_t peer_count() const noexcept final { return geometry_.layout.peers(); }
  [[nodiscard]] std::uint32_t vector_count() const noexcept final { return geometry_.vectors; }
  [[nodiscard]] bool peer_present(std::uint32_t peer) const noexcept final {
    return states_.present(peer);
  }
  [[nodiscard]] const ivshmem::Layout& layout() const noexcept final { return geometry_.layout; }
  [[nodiscard]] std::span<std::byte> rw_section() noexcept final {
    return section(geometry_.layout.rw_section());
  }
  [[nodiscard]] std::span<std::byte> own_output_section() noexcept final {
    return section(geometry_.layout.output_section(geometry_.id));
  }
  [[nodiscard]] std::span<const std::byte> output_section(std::uint32_t peer) const noexcept final {
    return section(geometry_.layout.output_section(peer));
  }
  // Writes peer << 16 | vector to the Doorbell register (BAR0 + 0x0c);
  // QEMU signals the peer's eventfd for that vector.
  [[nodiscard]] ivshmem::DoorbellStatus doorbell(std::uint32_t peer,
                                                 std::uint32_t vector) noexcept final {
    if (peer >= peer_count()) return ivshmem::DoorbellStatus::no_such_peer;
    if (vector >= vector_count()) return ivshmem::DoorbellStatus::no_such_vector;
    // F1: every store to shared memory before this call is visible before
    // the register write that raises the peer's interrupt; pairs with the
    // acquire loads the peer makes after its wait() returns.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    write_doorbell(ivshmem::v1::doorbell_value(peer, vector));
    return ivshmem::DoorbellStatus::ok;
  }
  // This peer writes its own entry, as HostDevice does on the same memory
  // (StateTableView::store_own, barrier R1 there), then rings vector 0 on
  // every other peer.
  void set_state(std::uint32_t value) noexcept final {
    states_.store_own(value);
    for (std::uint32_t peer = 0; peer < peer_count(); ++peer) {
      if (peer != id()) (void)doorbell(peer, 0);
    }
  }
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer) const noexcept final {
    return states_.load(peer);  // A1 in StateTableView::load
  }

  // The link's name and protocol, from the descriptor.
  [[nodiscard]] const std::string& link_name() const noexcept { return geometry_.link_name; }
  [[nodiscard]] std::uint16_t protocol() const noexcept { return geometry_.protocol; }

 protected:
  BarLinkDevice() = default;

  // `bar2` is BAR2 mapped whole; `geometry` is v1_bar_link_geometry() of it.
  void attach_link(std::span<std::byte> bar2, UioLinkGeometry geometry) noexcept {
    geometry_ = std::move(geometry);
    bar2_ = bar2;
    states_ = StateTableView(bar2_.data() + geometry_.layout.state_table().offset,
                             geometry_.layout.peers(), geometry_.id);
  }
  // Puts the peer_joined / peer_left changes since the last call at the
  // front of `events` (StateTableView::prepend_changes).
  void prepend_membership(std::vector<DeviceEvent>& events) { states_.prepend_changes(events); }
  // Writes `value` to the Doorbell register.
  virtual void write_doorbell(std::uint32_t value) const noexcept = 0;

 private:
  // Precondition (Layout's): a section of the link.
  [[nodiscard]] std::span<std::byte> section(ivshmem::Section where) const noexcept {
    return {bar2_.data() + where.offset, where.size};
  }

  UioLinkGeometry geometry_;
  std::span<std::byte> bar2_;
  StateTableView states_;  // membership; prepend_changes() from wait() only
};

}  // namespace cellink::linux_uio
