// VirtioIvshmemHeader: the register window of virtio over ivshmem, at offset
// 0 of a 2-peer link's R/W section. Spec: docs/virtio-over-ivshmem.md.
//
//   R/W offset 0x0000 +-------------------------------+
//                     | VirtioIvshmemHeader (0x4c)    |  the register window
//                     | device config (size - 0x4c)   |  written by the back end
//                     | rest of page 0: zero          |
//              0x1000 +-------------------------------+
//                     | the front end's pool: vrings  |  allocated by the front end
//                     | and buffers                   |
//                   R +-------------------------------+
//
// The layout is Jailhouse's (modelled on virtio_pci_common_cfg), so stock
// Jailhouse front ends and back ends interoperate with cellink's. Each field
// names its writer. The front end writes a field and then its offset into
// write_transaction; the back end applies it and clears write_transaction.
// Both sides treat everything the other writes as hostile: read once, then
// validate.
//
// Version rule: `revision` is 1. A change to a field's meaning or position
// needs a new revision, which a back end offers only if the front end asks
// for it (no such mechanism exists yet: revision 1 is the only one).
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cellink/transports/virtq.hpp"

namespace cellink::transports {

inline constexpr std::uint32_t kVirtioIvshmemRevision = 1;
// The header page: queue areas and buffers must lie at or after this offset.
inline constexpr std::uint64_t kVirtioIvshmemPoolOffset = 0x1000;
// The R/W section needs the header page plus at least one page of pool.
inline constexpr std::uint64_t kVirtioIvshmemMinRwSection = 2 * kVirtioIvshmemPoolOffset;
// The link has exactly two peers; each one's partner is the other id.
inline constexpr std::uint32_t kVirtioIvshmemPeers = 2;

// The value each peer keeps in its state-table entry.
namespace virtio_peer_state {
inline constexpr std::uint32_t kReset = 0;
inline constexpr std::uint32_t kReady = 1;
}  // namespace virtio_peer_state

struct VirtioIvshmemHeader {
  std::uint32_t revision;             // D: kVirtioIvshmemRevision
  std::uint32_t size;                 // D: sizeof(header) + device config size
  std::uint32_t write_transaction;    // F sets the written field's offset, D clears to 0
  std::uint32_t device_features;      // D: the 32 bits selected by device_features_sel
  std::uint32_t device_features_sel;  // F: 0 or 1
  std::uint32_t driver_features;      // F: the 32 bits selected by driver_features_sel
  std::uint32_t driver_features_sel;  // F: 0 or 1
  std::uint32_t queue_sel;            // F: the queue shown in the window below
  std::uint16_t queue_size;           // D: max (or enabled size) on select; F: its choice
  std::uint16_t queue_device_vector;  // D: the back end's vector for this queue
  std::uint16_t queue_driver_vector;  // F: the front end's vector for this queue
  std::uint16_t queue_enable;         // F: 1 enables; D shows the state on select
  std::uint64_t queue_desc;           // F: descriptor table, offset in the R/W section
  std::uint64_t queue_driver;         // F: avail ring, offset in the R/W section
  std::uint64_t queue_device;         // F: used ring, offset in the R/W section
  std::uint8_t config_event;          // D sets 1, F clears: the device config changed
  std::uint8_t queue_event;           // D sets 1, F clears: a queue has used buffers
  std::uint8_t reserved[2];           // 0
  std::uint32_t device_status;        // F writes; D corrects (FEATURES_OK, NEEDS_RESET)
  std::uint32_t config_generation;    // D: odd while the device config is rewritten
};
static_assert(offsetof(VirtioIvshmemHeader, revision) == 0x00);
static_assert(offsetof(VirtioIvshmemHeader, size) == 0x04);
static_assert(offsetof(VirtioIvshmemHeader, write_transaction) == 0x08);
static_assert(offsetof(VirtioIvshmemHeader, device_features) == 0x0c);
static_assert(offsetof(VirtioIvshmemHeader, device_features_sel) == 0x10);
static_assert(offsetof(VirtioIvshmemHeader, driver_features) == 0x14);
static_assert(offsetof(VirtioIvshmemHeader, driver_features_sel) == 0x18);
static_assert(offsetof(VirtioIvshmemHeader, queue_sel) == 0x1c);
static_assert(offsetof(VirtioIvshmemHeader, queue_size) == 0x20);
static_assert(offsetof(VirtioIvshmemHeader, queue_device_vector) == 0x22);
static_assert(offsetof(VirtioIvshmemHeader, queue_driver_vector) == 0x24);
static_assert(offsetof(VirtioIvshmemHeader, queue_enable) == 0x26);
static_assert(offsetof(VirtioIvshmemHeader, queue_desc) == 0x28);
static_assert(offsetof(VirtioIvshmemHeader, queue_driver) == 0x30);
static_assert(offsetof(VirtioIvshmemHeader, queue_device) == 0x38);
static_assert(offsetof(VirtioIvshmemHeader, config_event) == 0x40);
static_assert(offsetof(VirtioIvshmemHeader, queue_event) == 0x41);
static_assert(offsetof(VirtioIvshmemHeader, device_status) == 0x44);
static_assert(offsetof(VirtioIvshmemHeader, config_generation) == 0x48);
// The wire header is 0x4c bytes; the struct's 8-byte alignment pads it to
// 0x50, and those 4 padding bytes are the first 4 bytes of the device config.
// So fields are accessed one by one, and the struct is never copied whole.
inline constexpr std::uint32_t kVirtioIvshmemHeaderSize = 0x4c;
static_assert(offsetof(VirtioIvshmemHeader, config_generation) + 4 == kVirtioIvshmemHeaderSize);
static_assert(sizeof(VirtioIvshmemHeader) == 0x50);
static_assert(alignof(VirtioIvshmemHeader) == 8);
static_assert(std::is_trivially_copyable_v<VirtioIvshmemHeader>);
static_assert(std::is_standard_layout_v<VirtioIvshmemHeader>);

// The device-specific config starts right after the header.
inline constexpr std::uint32_t kVirtioIvshmemConfigOffset = kVirtioIvshmemHeaderSize;
// At most this much device config fits in the header page.
inline constexpr std::uint32_t kVirtioIvshmemMaxConfigSize =
    static_cast<std::uint32_t>(kVirtioIvshmemPoolOffset) - kVirtioIvshmemConfigOffset;

// Feature bits (virtio 1.2, section 6).
namespace virtio_feature {
inline constexpr unsigned kRingEventIdx = 29;
inline constexpr unsigned kVersion1 = 32;
inline constexpr unsigned kAccessPlatform = 33;
inline constexpr unsigned kOrderPlatform = 36;
}  // namespace virtio_feature

[[nodiscard]] constexpr std::uint64_t feature_bit(unsigned bit) noexcept {
  return std::uint64_t{1} << bit;
}

// Device status bits (virtio 1.2, section 2.1).
namespace virtio_status {
inline constexpr std::uint32_t kAcknowledge = 1;
inline constexpr std::uint32_t kDriver = 2;
inline constexpr std::uint32_t kDriverOk = 4;
inline constexpr std::uint32_t kFeaturesOk = 8;
inline constexpr std::uint32_t kDeviceNeedsReset = 64;
inline constexpr std::uint32_t kFailed = 128;
}  // namespace virtio_status

// Virtio device ids (the low bits of the protocol id, see protocol.hpp).
namespace virtio_device_id {
inline constexpr std::uint32_t kNet = 1;
inline constexpr std::uint32_t kBlock = 2;
inline constexpr std::uint32_t kConsole = 3;
}  // namespace virtio_device_id

// Flag-based notification suppression, used when VIRTIO_F_EVENT_IDX is not
// negotiated (Jailhouse's back ends do not offer it): kVirtqAvailFlagNoInterrupt
// and kVirtqUsedFlagNoNotify, defined with the ring structs in virtq.hpp.

// virtio-console (virtio 1.2, section 5.3): queue 0 receives (device to
// driver), queue 1 transmits (driver to device). cellink offers port 0 only
// (no MULTIPORT), so there are no control queues.
namespace virtio_console {
inline constexpr unsigned kFeatureSize = 0;        // cols and rows are valid
inline constexpr unsigned kFeatureMultiport = 1;   // not offered
inline constexpr unsigned kFeatureEmergWrite = 2;  // not offered
inline constexpr std::uint16_t kReceiveQueue = 0;
inline constexpr std::uint16_t kTransmitQueue = 1;
inline constexpr std::uint16_t kQueueCount = 2;
}  // namespace virtio_console

// The console's device config, at kVirtioIvshmemConfigOffset. Written by the
// back end only (emerg_wr is a driver write, refused: EMERG_WRITE is not
// offered).
struct VirtioConsoleConfig {
  std::uint16_t cols;
  std::uint16_t rows;
  std::uint32_t max_nr_ports;
  std::uint32_t emerg_wr;
};
static_assert(offsetof(VirtioConsoleConfig, cols) == 0);
static_assert(offsetof(VirtioConsoleConfig, rows) == 2);
static_assert(offsetof(VirtioConsoleConfig, max_nr_ports) == 4);
static_assert(offsetof(VirtioConsoleConfig, emerg_wr) == 8);
static_assert(sizeof(VirtioConsoleConfig) == 12);
static_assert(std::is_trivially_copyable_v<VirtioConsoleConfig>);
static_assert(std::is_standard_layout_v<VirtioConsoleConfig>);
static_assert(sizeof(VirtioConsoleConfig) <= kVirtioIvshmemMaxConfigSize);

// The writable field at `offset` and its size in bytes, or 0 when a front end
// may not write there (docs/virtio-over-ivshmem.md, "A register write").
[[nodiscard]] constexpr std::uint32_t writable_field_size(std::uint32_t offset) noexcept {
  switch (offset) {
    case offsetof(VirtioIvshmemHeader, device_features_sel):
    case offsetof(VirtioIvshmemHeader, driver_features):
    case offsetof(VirtioIvshmemHeader, driver_features_sel):
    case offsetof(VirtioIvshmemHeader, queue_sel):
    case offsetof(VirtioIvshmemHeader, device_status): return 4;
    case offsetof(VirtioIvshmemHeader, queue_size):
    case offsetof(VirtioIvshmemHeader, queue_driver_vector):
    case offsetof(VirtioIvshmemHeader, queue_enable): return 2;
    case offsetof(VirtioIvshmemHeader, queue_desc):
    case offsetof(VirtioIvshmemHeader, queue_driver):
    case offsetof(VirtioIvshmemHeader, queue_device): return 8;
    default: return 0;
  }
}
static_assert(writable_field_size(0x08) == 0);  // write_transaction itself
static_assert(writable_field_size(0x28) == 8);
static_assert(writable_field_size(0x2a) == 0);  // inside queue_desc

}  // namespace cellink::transports
