// VirtioIvshmemQueue: one queue of the virtio-over-ivshmem back end
// (virtio_ivshmem_device.hpp). It holds the settings a front end writes
// through the header's queue window, checks each write, and runs the queue's
// VirtqDevice once it is enabled. Spec: docs/virtio-over-ivshmem.md,
// "Queues" and "A hostile front end"; placement rules: docs/virtq.md.
//
// Each write returns a VirtioIvshmemFault: error ok when it was applied,
// otherwise the diagnostic the back end latches, and the queue is left as it
// was. The object keeps private copies only and never reads the header; the
// back end reads each field once and passes the value in.
//
// Threading: the back end's one thread. Freestanding: no exceptions, no
// heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/transports/virtio_ivshmem_fault.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"
#include "cellink/transports/virtq.hpp"
#include "cellink/transports/virtq_device.hpp"

namespace cellink::transports {

template <std::uint32_t MaxQueueSize, std::size_t MaxSegments>
class VirtioIvshmemQueue {
 public:
  using Ring = VirtqDevice<MaxQueueSize, MaxSegments>;

  // The state after a device reset: disabled, showing `max_size`.
  void reset(std::uint16_t index, std::uint16_t max_size) noexcept {
    index_ = index;
    max_size_ = max_size;
    size_ = max_size;
    driver_vector_ = 0;
    desc_ = 0;
    driver_ = 0;
    device_ = 0;
    enabled_ = false;
  }

  // queue_size: a power of two up to the maximum, while disabled.
  [[nodiscard]] VirtioIvshmemFault write_size(std::uint16_t size) noexcept {
    constexpr std::uint32_t kOffset = offsetof(VirtioIvshmemHeader, queue_size);
    if (enabled_) return changed_while_enabled("queue_size", kOffset, size, size_);
    if (!VirtqLayout::valid_queue_size(size) || size > max_size_) {
      return fault(VirtioIvshmemError::bad_queue_size, "queue_size", kOffset, size, 1, max_size_);
    }
    size_ = size;
    return {};
  }

  // queue_driver_vector: one of the link's `vectors`, while disabled.
  [[nodiscard]] VirtioIvshmemFault write_driver_vector(std::uint16_t vector,
                                                       std::uint32_t vectors) noexcept {
    constexpr std::uint32_t kOffset = offsetof(VirtioIvshmemHeader, queue_driver_vector);
    if (enabled_) {
      return changed_while_enabled("queue_driver_vector", kOffset, vector, driver_vector_);
    }
    if (vector >= vectors) {
      return fault(VirtioIvshmemError::bad_vector, "queue_driver_vector", kOffset, vector, 0,
                   vectors - 1U);
    }
    driver_vector_ = vector;
    return {};
  }

  // queue_desc, queue_driver or queue_device (by header offset), while
  // disabled; the three are checked together on queue_enable = 1.
  [[nodiscard]] VirtioIvshmemFault write_area(std::uint32_t offset, std::uint64_t value) noexcept {
    std::uint64_t& area = offset == offsetof(VirtioIvshmemHeader, queue_desc)     ? desc_
                          : offset == offsetof(VirtioIvshmemHeader, queue_driver) ? driver_
                                                                                  : device_;
    if (enabled_) return changed_while_enabled(area_name(offset), offset, value, area);
    area = value;
    return {};
  }

  // queue_enable: 0 disables; 1 checks the areas against `section` and
  // starts the ring (zeroing its used ring) in the given suppression mode.
  [[nodiscard]] VirtioIvshmemFault write_enable(std::uint16_t value, std::span<std::byte> section,
                                                bool event_idx) noexcept {
    constexpr std::uint32_t kOffset = offsetof(VirtioIvshmemHeader, queue_enable);
    if (value > 1) {
      return fault(VirtioIvshmemError::bad_queue_enable, "queue_enable", kOffset, value, 0, 1);
    }
    if (value == 0) {
      enabled_ = false;
      return {};
    }
    if (enabled_) return {};
    const VirtioIvshmemFault placement = check_areas(section.size());
    if (placement.error != VirtioIvshmemError::ok) return placement;
    const VirtqError error = restart(section, event_idx);
    if (error != VirtqError::ok) {
      // check_areas() proved every rule init() applies; a second line of
      // defence only.
      VirtioIvshmemFault refused =
          fault(VirtioIvshmemError::bad_queue_areas, "queue_enable", kOffset, value, 0, 0);
      refused.ring_error = error;
      return refused;
    }
    enabled_ = true;
    return {};
  }

  // (Re)initialises the ring on the stored areas in the given mode and
  // zeroes its used ring: at queue_enable, and again at DRIVER_OK, when the
  // negotiated mode is final (no used entry exists before DRIVER_OK).
  [[nodiscard]] VirtqError restart(std::span<std::byte> section, bool event_idx) noexcept {
    VirtqLayout layout;
    const VirtqError error = VirtqLayout::from_areas(size_, desc_, driver_, device_, layout);
    if (error != VirtqError::ok) return error;
    return ring_.init(section, layout, VirtqDeviceOptions{event_idx, kVirtioIvshmemPoolOffset});
  }

  [[nodiscard]] bool enabled() const noexcept { return enabled_; }
  [[nodiscard]] std::uint16_t size() const noexcept { return size_; }
  [[nodiscard]] std::uint16_t driver_vector() const noexcept { return driver_vector_; }
  [[nodiscard]] std::uint64_t desc() const noexcept { return desc_; }
  [[nodiscard]] std::uint64_t driver() const noexcept { return driver_; }
  [[nodiscard]] std::uint64_t device() const noexcept { return device_; }
  [[nodiscard]] Ring& ring() noexcept { return ring_; }
  [[nodiscard]] const Ring& ring() const noexcept { return ring_; }

 private:
  [[nodiscard]] static const char* area_name(std::uint32_t offset) noexcept {
    return offset == offsetof(VirtioIvshmemHeader, queue_desc)     ? "queue_desc"
           : offset == offsetof(VirtioIvshmemHeader, queue_driver) ? "queue_driver"
                                                                   : "queue_device";
  }

  [[nodiscard]] VirtioIvshmemFault fault(VirtioIvshmemError error, const char* field,
                                         std::uint32_t offset, std::uint64_t value,
                                         std::uint64_t min, std::uint64_t max) const noexcept {
    return VirtioIvshmemFault::header(error, field, offset, index_, value, min, max);
  }

  // The allowed "range" is the setting's current value.
  [[nodiscard]] VirtioIvshmemFault changed_while_enabled(const char* field, std::uint32_t offset,
                                                         std::uint64_t value,
                                                         std::uint64_t current) const noexcept {
    return fault(VirtioIvshmemError::queue_changed_while_enabled, field, offset, value, current,
                 current);
  }

  // docs/virtq.md's placement rules for the three areas, plus the pool
  // [kVirtioIvshmemPoolOffset, R), each failure naming its area.
  [[nodiscard]] VirtioIvshmemFault check_areas(std::uint64_t section) const noexcept {
    struct Area {
      std::uint32_t offset;
      std::uint64_t at;
      std::uint64_t bytes;
      std::uint64_t align;
    };
    const Area areas[] = {
        {offsetof(VirtioIvshmemHeader, queue_desc), desc_, VirtqLayout::desc_bytes(size_),
         kVirtqDescAlign},
        {offsetof(VirtioIvshmemHeader, queue_driver), driver_, VirtqLayout::avail_bytes(size_),
         kVirtqAvailAlign},
        {offsetof(VirtioIvshmemHeader, queue_device), device_, VirtqLayout::used_bytes(size_),
         kVirtqUsedAlign},
    };
    for (const Area& area : areas) {
      VirtqError error = VirtqError::ok;
      if (area.at % area.align != 0) {
        error = VirtqError::misaligned_area;
      } else if (area.at < kVirtioIvshmemPoolOffset || area.bytes > section ||
                 area.at > section - area.bytes) {
        error = VirtqError::queue_out_of_section;
      }
      if (error != VirtqError::ok) {
        VirtioIvshmemFault refused =
            fault(VirtioIvshmemError::bad_queue_areas, area_name(area.offset), area.offset, area.at,
                  kVirtioIvshmemPoolOffset, section - area.bytes);
        refused.ring_error = error;
        return refused;
      }
    }
    VirtqLayout layout;
    const VirtqError error = VirtqLayout::from_areas(size_, desc_, driver_, device_, layout);
    if (error != VirtqError::ok) {
      constexpr std::uint32_t kDevice = offsetof(VirtioIvshmemHeader, queue_device);
      VirtioIvshmemFault refused =
          fault(VirtioIvshmemError::bad_queue_areas, area_name(kDevice), kDevice, device_,
                kVirtioIvshmemPoolOffset, section - VirtqLayout::used_bytes(size_));
      refused.ring_error = error;
      return refused;
    }
    return {};
  }

  std::uint16_t index_ = 0;
  std::uint16_t max_size_ = 0;
  std::uint16_t size_ = 0;           // as the front end chose it (the maximum after a reset)
  std::uint16_t driver_vector_ = 0;  // the front end's vector for used buffers
  std::uint64_t desc_ = 0;           // the three areas, as R/W-section offsets
  std::uint64_t driver_ = 0;
  std::uint64_t device_ = 0;
  bool enabled_ = false;
  Ring ring_;
};

}  // namespace cellink::transports
