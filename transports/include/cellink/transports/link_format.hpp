// The link's wire format: how one peer's output section is laid out, and the
// header through which two peers hand-shake. Spec: docs/link.md. Link
// (link.hpp) is its only writer and reader.
//
// Output section of peer p on a link of N peers (every offset 64-aligned):
//
//  +0x0000  LinkHeader               magic, version, epoch    written by p only
//  +0x0040  PeerSlot[kMaxPeers]      p's view of each peer j  written by p only
//  +0x0800  ConsumerArea[kMaxPeers]  p's consumer half of ring j -> p
//  +0x1000  CreditTable 0            p's per-channel credits for the records
//  +...     CreditTable N-2          each other peer j sends it (channel_credit.hpp),
//                                    one table per other peer, in id order, skipping p
//  +rings   ring slot 0              p's producer area of ring p -> j, one slot
//  +...     ring slot N-2            per other peer j, in id order, skipping p
//
// rings = 0x1000 + (N - 1) * sizeof(CreditTable). A ring slot is
// (section size - rings) / (N - 1), rounded down to 64 bytes; its ring
// capacity is the largest power of two that fits (ring_format.hpp).
//
// Version rule: bump kLinkVersion when a field moves or changes meaning;
// reserved fields must be written as zero. Peers of one link speak one
// version: a header with another version breaks the pair at the handshake
// (PairFault::version_mismatch). Version 2 added the credit tables and
// WakeLine::space_wanted (ring_format.hpp).
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/transports/channel_credit.hpp"
#include "cellink/transports/ring_format.hpp"

namespace cellink::transports {

inline constexpr std::uint32_t kLinkMagic = 0x4b4c4c43;  // "CLLK" little-endian
inline constexpr std::uint16_t kLinkVersion = 2;

struct LinkHeader {
  std::uint32_t magic;        // kLinkMagic once the header is valid; 0 while p rewrites it
  std::uint16_t version;      // kLinkVersion
  std::uint16_t header_size;  // sizeof(LinkHeader)
  std::uint32_t peer_count;   // must equal the link's peer count
  std::uint32_t epoch;        // the owner's last published epoch (as in its state entry)
  std::uint64_t ring_slot_size;
  std::uint64_t reserved[5];  // zero
};
static_assert(offsetof(LinkHeader, magic) == 0);
static_assert(offsetof(LinkHeader, version) == 4);
static_assert(offsetof(LinkHeader, header_size) == 6);
static_assert(offsetof(LinkHeader, peer_count) == 8);
static_assert(offsetof(LinkHeader, epoch) == 12);
static_assert(offsetof(LinkHeader, ring_slot_size) == 16);
static_assert(sizeof(LinkHeader) == kCacheLine);
static_assert(std::is_trivially_copyable_v<LinkHeader> && std::is_standard_layout_v<LinkHeader>);

// Owner p's half of the handshake with peer j, and p's delivery counter for
// the messages j sent it. Every epoch field holds 0 for "none".
struct alignas(kCacheLine) PeerSlot {
  std::uint32_t acked_epoch;     // p reset its consumer area of ring j -> p for j's epoch
  std::uint32_t tx_ready_epoch;  // p initialised its ring p -> j for j's epoch
  std::uint32_t session_epoch;   // p's own epoch when it acked (identifies the session)
  std::uint32_t reserved0;       // zero
  std::uint64_t delivered;       // messages from j that p released in this session
  // The session before this one, kept so that a sender that reset (or whose
  // receiver reset) can learn how far that session got.
  std::uint32_t previous_acked_epoch;
  std::uint32_t previous_session_epoch;
  std::uint64_t previous_delivered;
  std::uint64_t reserved[3];  // zero
};
static_assert(offsetof(PeerSlot, acked_epoch) == 0);
static_assert(offsetof(PeerSlot, tx_ready_epoch) == 4);
static_assert(offsetof(PeerSlot, session_epoch) == 8);
static_assert(offsetof(PeerSlot, delivered) == 16);
static_assert(offsetof(PeerSlot, previous_acked_epoch) == 24);
static_assert(offsetof(PeerSlot, previous_session_epoch) == 28);
static_assert(offsetof(PeerSlot, previous_delivered) == 32);
static_assert(sizeof(PeerSlot) == kCacheLine);
static_assert(std::is_trivially_copyable_v<PeerSlot> && std::is_standard_layout_v<PeerSlot>);

inline constexpr std::uint64_t kLinkHeaderOffset = 0x0000;
inline constexpr std::uint64_t kPeerSlotsOffset = 0x0040;
inline constexpr std::uint64_t kConsumerAreasOffset = 0x0800;
inline constexpr std::uint64_t kCreditTablesOffset = 0x1000;
static_assert(kPeerSlotsOffset + sizeof(PeerSlot) * ivshmem::kMaxPeers <= kConsumerAreasOffset);
static_assert(kConsumerAreasOffset + kConsumerAreaSize * ivshmem::kMaxPeers <= kCreditTablesOffset);

// Where the ring slots start on a link of `peers` peers.
[[nodiscard]] constexpr std::uint64_t rings_offset(std::uint32_t peers) noexcept {
  return kCreditTablesOffset + std::uint64_t{peers - 1} * sizeof(CreditTable);
}

// Where everything of one link lives inside each output section. Every peer
// computes the same geometry from the (validated) layout, so nothing about
// it is ever read from shared memory.
class LinkGeometry {
 public:
  // False when `section_size` cannot hold a ring of kMinRingCapacity bytes
  // toward each of the other peers.
  [[nodiscard]] static constexpr bool compute(std::uint32_t peers, std::uint64_t section_size,
                                              LinkGeometry& out) noexcept {
    if (peers < ivshmem::kMinPeers || peers > ivshmem::kMaxPeers) return false;
    const std::uint64_t rings = rings_offset(peers);
    if (section_size <= rings) return false;
    const std::uint64_t slot = (section_size - rings) / (peers - 1) / kCacheLine * kCacheLine;
    if (ring_capacity(slot) == 0) return false;
    out.peers_ = peers;
    out.ring_slot_size_ = slot;
    return true;
  }

  [[nodiscard]] constexpr std::uint32_t peers() const noexcept { return peers_; }
  [[nodiscard]] constexpr std::uint64_t ring_slot_size() const noexcept { return ring_slot_size_; }
  [[nodiscard]] constexpr std::uint64_t ring_capacity_bytes() const noexcept {
    return ring_capacity(ring_slot_size_);
  }
  // Offset, in `owner`'s section, of owner's producer area toward `peer`.
  // Precondition: owner != peer, both < peers().
  [[nodiscard]] constexpr std::uint64_t ring_slot_offset(std::uint32_t owner,
                                                         std::uint32_t peer) const noexcept {
    const std::uint32_t index = peer < owner ? peer : peer - 1;
    return rings_offset(peers_) + std::uint64_t{index} * ring_slot_size_;
  }
  // Offset, in `owner`'s section, of owner's credit table for the records
  // `peer` sends it. Precondition: owner != peer, both < peers().
  [[nodiscard]] static constexpr std::uint64_t credit_table_offset(std::uint32_t owner,
                                                                   std::uint32_t peer) noexcept {
    const std::uint32_t index = peer < owner ? peer : peer - 1;
    return kCreditTablesOffset + std::uint64_t{index} * sizeof(CreditTable);
  }
  // Offset, in `owner`'s section, of owner's consumer area for ring peer -> owner.
  [[nodiscard]] static constexpr std::uint64_t consumer_area_offset(std::uint32_t peer) noexcept {
    return kConsumerAreasOffset + std::uint64_t{peer} * kConsumerAreaSize;
  }
  [[nodiscard]] static constexpr std::uint64_t peer_slot_offset(std::uint32_t peer) noexcept {
    return kPeerSlotsOffset + std::uint64_t{peer} * sizeof(PeerSlot);
  }

 private:
  std::uint32_t peers_ = 0;
  std::uint64_t ring_slot_size_ = 0;
};

// The default link (2 peers, 64 KiB output sections) gets 32 KiB rings.
static_assert([] {
  LinkGeometry geometry;
  return LinkGeometry::compute(2, std::uint64_t{64} * 1024, geometry) &&
         geometry.ring_capacity_bytes() == std::uint64_t{32} * 1024 &&
         geometry.ring_slot_offset(0, 1) == kCreditTablesOffset + sizeof(CreditTable) &&
         geometry.ring_slot_offset(1, 0) == kCreditTablesOffset + sizeof(CreditTable);
}());

}  // namespace cellink::transports
