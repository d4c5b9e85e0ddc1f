// VirtioDriverStatus and VirtioDriverFault: what VirtioIvshmemDriver
// (virtio_ivshmem_driver.hpp) reports, and why it stopped. Spec:
// docs/virtio-over-ivshmem.md.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::transports {

enum class VirtioDriverStatus : std::uint8_t {
  ok,
  // Outcomes, not faults.
  not_probed,         // no probe() has succeeded since the last reset
  backend_not_ready,  // the back end's state is not READY: probe again when it is
  // The link's or the caller's mistakes; returned, not latched.
  not_two_peers,        // virtio over ivshmem needs a 2-peer link
  section_too_small,    // the R/W section is smaller than kVirtioIvshmemMinRwSection
  bad_queue_count,      // 0 queues, or more than MaxQueues
  bad_driver_vector,    // the options name a vector the link does not have
  pool_exhausted,       // no room left in [kVirtioIvshmemPoolOffset, R)
  queue_setup_failed,   // VirtqDriver::init() refused the queue (see fault().value)
  no_such_queue,        // notify() or queue() of an index at or above queue_count()
  config_out_of_range,  // read_config() past the device config
  // The back end's doing; latched until the next successful probe().
  backend_left,        // the back end left READY: the device is reset
  timeout,             // the back end did not clear write_transaction in time
  bad_revision,        // revision is not kVirtioIvshmemRevision
  bad_header_size,     // size is below the header or beyond the header page
  missing_feature,     // VERSION_1 or ACCESS_PLATFORM is not offered
  features_refused,    // the back end cleared FEATURES_OK
  queue_unavailable,   // the selected queue's maximum size is 0
  bad_device_vector,   // queue_device_vector names a vector the link does not have
  device_needs_reset,  // DEVICE_NEEDS_RESET in device_status (or DRIVER_OK refused)
  config_unstable,     // config_generation kept changing while the config was read
  queue_fault,         // a queue latched a ring fault (queue(q).fault())
};

[[nodiscard]] constexpr const char* describe(VirtioDriverStatus status) noexcept {
  switch (status) {
    case VirtioDriverStatus::ok: return "ok";
    case VirtioDriverStatus::not_probed: return "the virtio device has not been probed";
    case VirtioDriverStatus::backend_not_ready:
      return "the virtio back end is not READY yet; probe again when it is";
    case VirtioDriverStatus::not_two_peers:
      return "virtio over ivshmem needs a link with exactly 2 peers";
    case VirtioDriverStatus::section_too_small:
      return "the R/W section is smaller than 2 pages (header page and pool)";
    case VirtioDriverStatus::bad_queue_count: return "the queue count is 0 or above MaxQueues";
    case VirtioDriverStatus::bad_driver_vector:
      return "the driver vector is not below the link's vector count";
    case VirtioDriverStatus::pool_exhausted:
      return "the R/W section's pool has no room left for the vrings or buffers";
    case VirtioDriverStatus::queue_setup_failed: return "the virtqueue could not be set up";
    case VirtioDriverStatus::no_such_queue: return "no queue with this index was set up";
    case VirtioDriverStatus::config_out_of_range: return "the read leaves the device config";
    case VirtioDriverStatus::backend_left:
      return "the virtio back end left READY: the device was reset";
    case VirtioDriverStatus::timeout:
      return "the virtio back end did not clear write_transaction in time";
    case VirtioDriverStatus::bad_revision: return "the back end's header revision is not 1";
    case VirtioDriverStatus::bad_header_size:
      return "the back end's header size is below 0x4c or beyond the header page";
    case VirtioDriverStatus::missing_feature:
      return "the back end does not offer VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM";
    case VirtioDriverStatus::features_refused: return "the back end refused the features";
    case VirtioDriverStatus::queue_unavailable:
      return "the back end offers no entries for this queue";
    case VirtioDriverStatus::bad_device_vector:
      return "the back end's queue_device_vector is not below the link's vector count";
    case VirtioDriverStatus::device_needs_reset:
      return "the back end set DEVICE_NEEDS_RESET (it found a fault in what we wrote)";
    case VirtioDriverStatus::config_unstable:
      return "config_generation kept changing while the device config was read";
    case VirtioDriverStatus::queue_fault: return "a virtqueue latched a fault of the back end";
  }
  return "unknown virtio driver status";
}

// Why the driver stopped: the status, the field that was wrong, the queue or
// offset it was read at, what it held and the inclusive range accepted.
struct VirtioDriverFault {
  VirtioDriverStatus status = VirtioDriverStatus::not_probed;
  const char* field = "";
  std::uint32_t where = 0;  // queue index, or header offset
  std::uint64_t value = 0;
  std::uint64_t expected_min = 0;
  std::uint64_t expected_max = 0;
};

}  // namespace cellink::transports
