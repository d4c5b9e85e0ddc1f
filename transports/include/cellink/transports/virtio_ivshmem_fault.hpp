// VirtioIvshmemError and VirtioIvshmemFault: what the virtio-over-ivshmem
// back end (virtio_ivshmem_device.hpp) reports, and the one-line message a
// caller logs. Spec: docs/virtio-over-ivshmem.md, "A hostile front end".
//
// Set-up errors come back from attach() and update_config() and change
// nothing. Peer faults are what a hostile or broken front end did; the back
// end latches the first one with a VirtioIvshmemFault (which field, where,
// the value and what was allowed) until the front end resets the device.
//
// describe_fault() formats without libc into a caller's buffer, so an inmate
// or the host service can print it the same way.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/transports/virtq.hpp"

namespace cellink::transports {

enum class VirtioIvshmemError : std::uint8_t {
  ok,
  // Set-up failures (attach(), update_config()); nothing is latched.
  not_attached,          // attach() has not succeeded (or stop() was called)
  wrong_peer_count,      // the link does not have exactly 2 peers
  bad_peer_id,           // this peer's id is not 0 or 1
  no_vectors,            // the link has no doorbell vector
  rw_section_too_small,  // the R/W section is smaller than 2 pages
  misaligned_section,    // the R/W section mapping is not 16-byte aligned
  bad_device_id,         // the virtio device id is 0 or above 0x3fff
  bad_queue_count,       // 0 queues, or more than the MaxQueues template argument
  bad_max_queue_size,    // not a power of two, or above the MaxQueueSize template argument
  config_too_large,      // the device config does not fit in the header page
  config_size_mismatch,  // update_config() with another size than attach() had
  // The front end's faults; latched until device_status = 0 or a front-end reset.
  bad_write_offset,             // write_transaction holds no writable field's offset
  select_out_of_range,          // a *_sel write beyond its range
  bad_queue_size,               // 0, not a power of two or above the maximum
  bad_vector,                   // queue_driver_vector at or above the link's vectors
  bad_queue_enable,             // queue_enable other than 0 or 1
  bad_queue_areas,              // misaligned, overlapping or outside [0x1000, R)
  queue_changed_while_enabled,  // a queue setting written while the queue is enabled
  ring_fault,                   // a virtqueue fault (VirtqFault in ring_error)
};

[[nodiscard]] constexpr const char* describe(VirtioIvshmemError error) noexcept {
  switch (error) {
    case VirtioIvshmemError::ok: return "ok";
    case VirtioIvshmemError::not_attached: return "the virtio back end is not attached to a link";
    case VirtioIvshmemError::wrong_peer_count:
      return "virtio over ivshmem needs a link of exactly 2 peers";
    case VirtioIvshmemError::bad_peer_id: return "this peer's id on the link is not 0 or 1";
    case VirtioIvshmemError::no_vectors: return "the link has no doorbell vector";
    case VirtioIvshmemError::rw_section_too_small:
      return "the R/W section is smaller than 2 pages (header page plus pool)";
    case VirtioIvshmemError::misaligned_section:
      return "the R/W section mapping does not start on a 16-byte boundary";
    case VirtioIvshmemError::bad_device_id: return "the virtio device id is not in 1..0x3fff";
    case VirtioIvshmemError::bad_queue_count:
      return "the queue count is 0 or above what this back end was built for";
    case VirtioIvshmemError::bad_max_queue_size:
      return "the maximum queue size is not a power of two within what this back end was built "
             "for";
    case VirtioIvshmemError::config_too_large:
      return "the device config does not fit in the header page";
    case VirtioIvshmemError::config_size_mismatch:
      return "the new device config differs in size from the one given to attach()";
    case VirtioIvshmemError::bad_write_offset:
      return "front end named an unknown or misaligned field in write_transaction";
    case VirtioIvshmemError::select_out_of_range: return "front end selected beyond the range";
    case VirtioIvshmemError::bad_queue_size:
      return "front end chose a queue size that is 0, not a power of two or above the maximum";
    case VirtioIvshmemError::bad_vector:
      return "front end chose a driver vector the link does not have";
    case VirtioIvshmemError::bad_queue_enable: return "front end wrote queue_enable other than 0/1";
    case VirtioIvshmemError::bad_queue_areas:
      return "front end placed a queue area misaligned, overlapping or outside the pool";
    case VirtioIvshmemError::queue_changed_while_enabled:
      return "front end changed a queue setting while the queue is enabled";
    case VirtioIvshmemError::ring_fault: return "front end broke a virtqueue";
  }
  return "unknown virtio back end error";
}

// True for the errors a front end causes; those are latched.
[[nodiscard]] constexpr bool is_front_end_fault(VirtioIvshmemError error) noexcept {
  return error >= VirtioIvshmemError::bad_write_offset;
}

// Why the back end is broken. `field` is a header field ("queue_size") or,
// for a ring fault, the VirtqFault field ("desc[].addr").
struct VirtioIvshmemFault {
  static constexpr std::uint32_t kNoOffset = 0xffffffff;
  static constexpr std::uint32_t kNoQueue = 0xffffffff;

  VirtioIvshmemError error = VirtioIvshmemError::ok;
  const char* field = "";
  std::uint32_t offset = kNoOffset;        // header offset of the field; kNoOffset for ring fields
  std::uint32_t queue = kNoQueue;          // the queue it concerns, if any
  std::uint32_t position = 0;              // ring faults: the ring or descriptor index (VirtqFault)
  std::uint64_t value = 0;                 // what the front end wrote
  std::uint64_t expected_min = 0;          // inclusive
  std::uint64_t expected_max = 0;          // inclusive
  VirtqError ring_error = VirtqError::ok;  // ring_fault, bad_queue_areas: the virtqueue's reason

  // A fault on a header field.
  [[nodiscard]] static constexpr VirtioIvshmemFault header(VirtioIvshmemError error,
                                                           const char* field, std::uint32_t offset,
                                                           std::uint32_t queue, std::uint64_t value,
                                                           std::uint64_t min,
                                                           std::uint64_t max) noexcept {
    VirtioIvshmemFault fault;
    fault.error = error;
    fault.field = field;
    fault.offset = offset;
    fault.queue = queue;
    fault.value = value;
    fault.expected_min = min;
    fault.expected_max = max;
    return fault;
  }

  // The one-line message of describe_fault() below.
  std::size_t describe(std::span<char> out) const noexcept;
};

namespace virtio_ivshmem_detail {

// Appends text to a fixed buffer, always NUL-terminated, silently truncated.
class LineWriter {
 public:
  explicit LineWriter(std::span<char> out) noexcept : out_(out) {
    if (!out_.empty()) out_[0] = '\0';
  }
  LineWriter& text(const char* s) noexcept {
    while (s != nullptr && *s != '\0') put(*s++);
    return *this;
  }
  LineWriter& decimal(std::uint64_t value) noexcept {
    char digits[20];
    std::size_t count = 0;
    do {
      digits[count++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (count != 0) put(digits[--count]);
    return *this;
  }
  LineWriter& hex(std::uint64_t value) noexcept {
    text("0x");
    int shift = 60;
    while (shift > 0 && ((value >> shift) & 0xf) == 0) shift -= 4;
    for (; shift >= 0; shift -= 4) put("0123456789abcdef"[(value >> shift) & 0xf]);
    return *this;
  }
  [[nodiscard]] std::size_t length() const noexcept { return length_; }

 private:
  void put(char c) noexcept {
    if (length_ + 1 >= out_.size()) return;
    out_[length_++] = c;
    out_[length_] = '\0';
  }

  std::span<char> out_;
  std::size_t length_ = 0;
};

}  // namespace virtio_ivshmem_detail

// Writes a one-line message for `fault` into `out` (NUL-terminated,
// truncated to fit) and returns its length, e.g.
//   "virtio front end fault: queue 1 queue_size (header 0x20) = 3, allowed
//    1..256: front end chose a queue size that is 0, not a power of two or
//    above the maximum; waiting for a device reset"
inline std::size_t describe_fault(const VirtioIvshmemFault& fault, std::span<char> out) noexcept {
  virtio_ivshmem_detail::LineWriter line(out);
  if (fault.error == VirtioIvshmemError::ok) {
    line.text("virtio back end: no fault");
    return line.length();
  }
  line.text("virtio front end fault: ");
  if (fault.queue != VirtioIvshmemFault::kNoQueue)
    line.text("queue ").decimal(fault.queue).text(" ");
  line.text(fault.field);
  if (fault.offset != VirtioIvshmemFault::kNoOffset) {
    line.text(" (header ").hex(fault.offset).text(")");
  } else if (fault.error == VirtioIvshmemError::ring_fault) {
    line.text(" [").decimal(fault.position).text("]");
  }
  line.text(" = ").decimal(fault.value).text(" (").hex(fault.value).text("), allowed ");
  line.decimal(fault.expected_min).text("..").decimal(fault.expected_max).text(": ");
  line.text(describe(fault.error));
  if (fault.ring_error != VirtqError::ok)
    line.text(" (").text(describe(fault.ring_error)).text(")");
  line.text("; waiting for a device reset");
  return line.length();
}

inline std::size_t VirtioIvshmemFault::describe(std::span<char> out) const noexcept {
  return describe_fault(*this, out);
}

}  // namespace cellink::transports
