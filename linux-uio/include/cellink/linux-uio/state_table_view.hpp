// StateTableView: one peer's view of a link's state table in mapped shared
// memory, shared by the backends that have no daemon socket to tell them who
// is there (UioDevice, VfioDevice).
//
// On such a link the table is the truth about membership: a peer is present
// while its u32 entry is not 0. The daemon (QEMU links) or the hypervisor
// (v2) writes 0 for a peer that left and then rings vector 0 on the others,
// so every wait() compares the entries with the previous call and reports a
// peer_joined or peer_left for each that changed.
//
// The other peers may write their entries at any time: every entry is read
// with one acquire load, and only the zero/non-zero distinction is used here.
//
// Threading: load(), present() and store_own() from any thread;
// prepend_changes() from the thread that calls the device's wait().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <vector>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/linux-uio/waitable_device.hpp"

namespace cellink::linux_uio {

class StateTableView {
 public:
  StateTableView() = default;
  // `table` holds layout.peers() u32 entries; it outlives this view.
  StateTableView(std::byte* table, std::uint32_t peers, std::uint32_t self) noexcept
      : table_(table), peers_(peers), self_(self) {
    static_assert(ivshmem::kMaxPeers <= 32, "a u32 mask holds one bit per peer");
    known_present_ = present_mask();
  }

  [[nodiscard]] std::uint32_t load(std::uint32_t peer) const noexcept {
    // A1: pairs with the writer's release (R1 below, in the peer's process),
    // or with the daemon's or the hypervisor's reset of a departed peer's
    // entry. Only loads: v2 maps the table read-only.
    return std::atomic_ref<std::uint32_t>(entry(peer)).load(std::memory_order_acquire);
  }

  // This peer always; another one while its entry is not 0.
  [[nodiscard]] bool present(std::uint32_t peer) const noexcept {
    if (peer >= peers_) return false;
    return peer == self_ || load(peer) != 0;
  }

  // v1 only (the table is writable shared memory): publishes this peer's
  // state. The caller then rings vector 0 on every other peer.
  void store_own(std::uint32_t value) noexcept {
    // R1: everything this peer wrote before is visible to a peer that reads
    // the new value; pairs with the acquire load A1 in that peer.
    std::atomic_ref<std::uint32_t>(entry(self_)).store(value, std::memory_order_release);
  }

  // Puts a peer_joined / peer_left for every other peer whose entry turned
  // non-zero / zero since the previous call (or construction) at the front
  // of `events`, ahead of the doorbells the caller collected: a Session
  // learns who is there before it looks at their rings. Allocates nothing
  // when nothing changed, the usual case.
  void prepend_changes(std::vector<DeviceEvent>& events) {
    const std::uint32_t present = present_mask();
    const std::uint32_t changed = present ^ known_present_;
    if (changed == 0) return;
    known_present_ = present;
    std::vector<DeviceEvent> changes;
    for (std::uint32_t peer = 0; peer < peers_; ++peer) {
      if ((changed & (1U << peer)) == 0) continue;
      const bool joined = (present & (1U << peer)) != 0;
      changes.push_back(
          {joined ? DeviceEvent::Kind::peer_joined : DeviceEvent::Kind::peer_left, 0, 0, peer, {}});
    }
    events.insert(events.begin(), std::make_move_iterator(changes.begin()),
                  std::make_move_iterator(changes.end()));
  }

 private:
  [[nodiscard]] std::uint32_t& entry(std::uint32_t peer) const noexcept {
    // Layout::state_entry_offset(): entry p is the u32 at 4 p.
    return *reinterpret_cast<std::uint32_t*>(table_ + std::size_t{peer} * sizeof(std::uint32_t));
  }

  [[nodiscard]] std::uint32_t present_mask() const noexcept {
    std::uint32_t present = 0;
    for (std::uint32_t peer = 0; peer < peers_; ++peer) {
      if (peer != self_ && load(peer) != 0) present |= 1U << peer;
    }
    return present;
  }

  std::byte* table_ = nullptr;
  std::uint32_t peers_ = 0;
  std::uint32_t self_ = 0;
  std::uint32_t known_present_ = 0;  // bit p: p's entry was not 0 at the last call
};

}  // namespace cellink::linux_uio
