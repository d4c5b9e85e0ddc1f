// Virtq: the virtio 1.2 split virtqueue as it lives in a link's R/W section.
// Spec: docs/virtq.md. This header holds what both halves share: the wire
// structs, the geometry (VirtqLayout), the event-idx rule, the status enum
// and the view of one queue's rings (VirtqRings). The two halves are
// VirtqDriver (virtq_driver.hpp, the front end that offers buffers) and
// VirtqDevice (virtq_device.hpp, the back end that consumes them).
//
// One queue of size N inside the R/W section, at a caller-chosen offset Q
// (a multiple of 16):
//
//   Q            +----------------------------+
//                | descriptor table           |  16*N bytes, 16-aligned; driver writes
//   Q + 16N      +----------------------------+
//                | avail: flags, idx,         |  6 + 2*N bytes, 2-aligned; driver writes
//                |        ring[N], used_event |
//   align4(...)  +----------------------------+
//                | used:  flags, idx,         |  6 + 8*N bytes, 4-aligned; device writes
//                |        ring[N], avail_event|
//                +----------------------------+ VirtqLayout::end()
//
// Every address in a descriptor is an offset from the start of the R/W
// section (as in Jailhouse's virtio over ivshmem), never a guest-physical
// address or a pointer. Each side treats every field the other side writes
// as hostile: it is read once, with an atomic load, and validated.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

namespace cellink::transports {

// The wire format is little-endian and is accessed in place, so cellink's
// targets (x86-64, arm64) must be little-endian hosts.
static_assert(std::endian::native == std::endian::little,
              "the virtqueue is accessed in place and its wire format is little-endian");

inline constexpr std::uint32_t kVirtqMaxQueueSize = 32768;
inline constexpr std::uint64_t kVirtqDescAlign = 16;
inline constexpr std::uint64_t kVirtqAvailAlign = 2;
inline constexpr std::uint64_t kVirtqUsedAlign = 4;

// VIRTIO_F_EVENT_IDX. When it is negotiated, avail_event / used_event
// suppress notifications and the avail and used flags fields stay 0 and are
// ignored. Without it, the two flags below do (flag-based suppression, which
// Jailhouse's virtio back ends use); each half is told the mode at init().
inline constexpr unsigned kVirtioFeatureEventIdx = 29;
inline constexpr std::uint16_t kVirtqAvailFlagNoInterrupt = 1;  // avail.flags, set by the driver
inline constexpr std::uint16_t kVirtqUsedFlagNoNotify = 1;      // used.flags, set by the device

inline constexpr std::uint16_t kVirtqDescNext = 1;      // the chain continues at `next`
inline constexpr std::uint16_t kVirtqDescWrite = 2;     // device-writable (else device-readable)
inline constexpr std::uint16_t kVirtqDescIndirect = 4;  // not supported: rejected by the device

// One descriptor. Written by the driver only, while the chain is not in
// flight; the device copies it out once and validates the copy.
struct VirtqDesc {
  std::uint64_t addr;   // offset of the buffer from the start of the R/W section
  std::uint32_t len;    // buffer length in bytes
  std::uint16_t flags;  // kVirtqDescNext | kVirtqDescWrite | kVirtqDescIndirect
  std::uint16_t next;   // next descriptor of the chain when flags has kVirtqDescNext
};
static_assert(offsetof(VirtqDesc, addr) == 0);
static_assert(offsetof(VirtqDesc, len) == 8);
static_assert(offsetof(VirtqDesc, flags) == 12);
static_assert(offsetof(VirtqDesc, next) == 14);
static_assert(sizeof(VirtqDesc) == 16);
static_assert(alignof(VirtqDesc) == 8);
static_assert(std::is_trivially_copyable_v<VirtqDesc>);
static_assert(std::is_standard_layout_v<VirtqDesc>);

// Head of the avail ring (driver area); ring[N] and used_event follow it.
// Written by the driver only.
struct VirtqAvailHeader {
  std::uint16_t flags;  // kVirtqAvailFlagNoInterrupt without EVENT_IDX; else 0, ignored
  std::uint16_t idx;    // free-running count of heads the driver has published
};
static_assert(offsetof(VirtqAvailHeader, flags) == 0);
static_assert(offsetof(VirtqAvailHeader, idx) == 2);
static_assert(sizeof(VirtqAvailHeader) == 4);
static_assert(std::is_trivially_copyable_v<VirtqAvailHeader>);
static_assert(std::is_standard_layout_v<VirtqAvailHeader>);

// Head of the used ring (device area); ring[N] and avail_event follow it.
// Written by the device only.
struct VirtqUsedHeader {
  std::uint16_t flags;  // kVirtqUsedFlagNoNotify without EVENT_IDX; else 0, ignored
  std::uint16_t idx;    // free-running count of used entries the device has published
};
static_assert(offsetof(VirtqUsedHeader, flags) == 0);
static_assert(offsetof(VirtqUsedHeader, idx) == 2);
static_assert(sizeof(VirtqUsedHeader) == 4);
static_assert(std::is_trivially_copyable_v<VirtqUsedHeader>);
static_assert(std::is_standard_layout_v<VirtqUsedHeader>);

// One used-ring entry. Written by the device only.
struct VirtqUsedElem {
  std::uint32_t id;   // head of the finished chain (a u32 on the wire, < N when valid)
  std::uint32_t len;  // bytes the device wrote into the chain's writable buffers
};
static_assert(offsetof(VirtqUsedElem, id) == 0);
static_assert(offsetof(VirtqUsedElem, len) == 4);
static_assert(sizeof(VirtqUsedElem) == 8);
static_assert(alignof(VirtqUsedElem) == 4);
static_assert(std::is_trivially_copyable_v<VirtqUsedElem>);
static_assert(std::is_standard_layout_v<VirtqUsedElem>);

// Shared fields are accessed in place with std::atomic_ref, so the accesses
// must be single instructions on every target (no libatomic, no locks).
static_assert(std::atomic_ref<std::uint16_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint64_t>::required_alignment <= kVirtqDescAlign);
static_assert(std::atomic_ref<std::uint32_t>::required_alignment <= kVirtqUsedAlign);
static_assert(std::atomic_ref<std::uint16_t>::required_alignment <= kVirtqAvailAlign);

// VIRTIO_F_EVENT_IDX: a side that moved its index from old_idx to new_idx
// notifies the peer only if the peer's event index lies in [old_idx, new_idx),
// i.e. the peer asked to be woken when the index passes event_idx. All
// arithmetic is modulo 2^16, so it stays right across the wrap.
[[nodiscard]] constexpr bool vring_need_event(std::uint16_t event_idx, std::uint16_t new_idx,
                                              std::uint16_t old_idx) noexcept {
  return static_cast<std::uint16_t>(new_idx - event_idx - 1) <
         static_cast<std::uint16_t>(new_idx - old_idx);
}
static_assert(vring_need_event(0, 1, 0));
static_assert(!vring_need_event(1, 1, 0));
static_assert(vring_need_event(0xffff, 2, 0xfffe));  // crossing the 16-bit wrap

enum class VirtqError : std::uint8_t {
  ok,
  // Outcomes, not faults.
  empty,     // nothing to pop() or collect() right now
  no_space,  // too few free descriptors for this chain right now
  // The local caller's mistakes; they are returned and not latched.
  no_buffers,        // add() with no buffers at all
  too_many_buffers,  // add() with more buffers than the queue has descriptors
  out_of_section,    // add() with a buffer that does not lie inside the R/W section
  overlaps_queue,    // add() with a buffer that overlaps this queue's own rings
  not_in_flight,     // push() of a head the device did not pop, or pushed already
  written_too_long,  // push() with more bytes than the chain's writable buffers hold
  // Set-up failures, from init().
  not_initialized,       // init() has not succeeded yet
  bad_queue_size,        // N is not a power of two in 1..32768
  queue_too_large,       // N exceeds the class's MaxQueueSize
  misaligned_area,       // an area offset breaks the 16/2/4-byte virtio alignment
  overlapping_areas,     // descriptor table, avail and used rings overlap
  queue_out_of_section,  // the rings do not fit inside the R/W section
  misaligned_section,    // the R/W section does not start on a 16-byte boundary
  // The peer's faults. They are latched: every later call returns the same one.
  avail_idx_jump,         // avail.idx moved more than N past the last seen value
  bad_head,               // avail.ring[] holds a head >= N
  head_in_use,            // avail.ring[] holds a head the device has in flight already
  bad_next,               // a descriptor's next is >= N
  buffer_out_of_section,  // a descriptor's addr/len leaves the R/W section
  indirect_unsupported,   // a descriptor has the INDIRECT flag
  chain_too_long,         // a chain is longer than N or MaxSegments (also: a loop)
  bad_order,              // a device-readable descriptor follows a writable one
  used_idx_jump,          // used.idx moved past what the driver has published
  bad_used_id,            // used.ring[].id is not a head the driver has in flight
  bad_used_len,           // used.ring[].len exceeds the chain's writable bytes
};

[[nodiscard]] constexpr const char* describe(VirtqError error) noexcept {
  switch (error) {
    case VirtqError::ok: return "ok";
    case VirtqError::empty: return "the queue has nothing to take";
    case VirtqError::no_space: return "too few free descriptors for this chain; collect first";
    case VirtqError::no_buffers: return "a chain needs at least one buffer";
    case VirtqError::too_many_buffers:
      return "the chain has more buffers than the queue has descriptors";
    case VirtqError::out_of_section: return "a buffer does not lie inside the R/W section";
    case VirtqError::overlaps_queue: return "a buffer overlaps the virtqueue's own rings";
    case VirtqError::not_in_flight:
      return "push() of a head that was not popped or was pushed already";
    case VirtqError::written_too_long:
      return "push() reports more bytes than the chain's writable buffers hold";
    case VirtqError::not_initialized: return "the virtqueue has not been initialised";
    case VirtqError::bad_queue_size: return "the queue size is not a power of two in 1..32768";
    case VirtqError::queue_too_large:
      return "the queue size exceeds the MaxQueueSize this object was built for";
    case VirtqError::misaligned_area:
      return "a queue area is misaligned (descriptors 16, avail 2, used 4 bytes)";
    case VirtqError::overlapping_areas:
      return "the descriptor table, avail ring and used ring overlap";
    case VirtqError::queue_out_of_section: return "the virtqueue does not fit in the R/W section";
    case VirtqError::misaligned_section:
      return "the R/W section mapping does not start on a 16-byte boundary";
    case VirtqError::avail_idx_jump:
      return "peer driver moved avail.idx more than the queue size past the last seen value";
    case VirtqError::bad_head: return "peer driver published a head index outside the queue";
    case VirtqError::head_in_use:
      return "peer driver published a head whose chain the device still holds";
    case VirtqError::bad_next:
      return "peer driver linked a descriptor to an index outside the queue";
    case VirtqError::buffer_out_of_section:
      return "peer driver gave a buffer that leaves the R/W section";
    case VirtqError::indirect_unsupported:
      return "peer driver used an indirect descriptor, which cellink does not offer";
    case VirtqError::chain_too_long: return "peer driver's descriptor chain is too long or loops";
    case VirtqError::bad_order:
      return "peer driver put a device-readable descriptor after a writable one";
    case VirtqError::used_idx_jump:
      return "peer device moved used.idx past the buffers the driver has published";
    case VirtqError::bad_used_id:
      return "peer device returned an id that is not a head the driver has in flight";
    case VirtqError::bad_used_len:
      return "peer device reported more bytes than the chain's writable buffers hold";
  }
  return "unknown virtqueue error";
}

// True for the errors a hostile or broken peer causes; those are latched.
[[nodiscard]] constexpr bool is_peer_fault(VirtqError error) noexcept {
  return error >= VirtqError::avail_idx_jump;
}

// Why a queue is broken: the shared field that was wrong, where it was read,
// what it held and the inclusive range that would have been accepted. Index
// ranges are modulo 2^16, so expected_min may exceed expected_max after a wrap.
struct VirtqFault {
  VirtqError error = VirtqError::not_initialized;
  const char* field = "";          // e.g. "used.ring[].id", "desc[].addr"
  std::uint32_t position = 0;      // ring index (mod N) or descriptor index it was read at
  std::uint64_t value = 0;         // what the peer wrote there
  std::uint64_t expected_min = 0;  // inclusive
  std::uint64_t expected_max = 0;  // inclusive
};

// A buffer the driver offers: `len` bytes at `offset` from the start of the
// R/W section.
struct VirtqBuffer {
  std::uint64_t offset = 0;
  std::uint32_t len = 0;
};

// Where one queue's three areas lie, as offsets from the start of the R/W
// section. desc/avail/used are the values virtio calls queue_desc,
// queue_driver and queue_device.
struct VirtqLayout {
  std::uint32_t queue_size = 0;  // N
  std::uint64_t desc = 0;        // descriptor table, 16*N bytes
  std::uint64_t avail = 0;       // avail ring (driver area), 6 + 2*N bytes
  std::uint64_t used = 0;        // used ring (device area), 6 + 8*N bytes

  [[nodiscard]] static constexpr bool valid_queue_size(std::uint32_t n) noexcept {
    return n != 0 && n <= kVirtqMaxQueueSize && (n & (n - 1)) == 0;
  }
  [[nodiscard]] static constexpr std::uint64_t desc_bytes(std::uint32_t n) noexcept {
    return sizeof(VirtqDesc) * std::uint64_t{n};
  }
  [[nodiscard]] static constexpr std::uint64_t avail_bytes(std::uint32_t n) noexcept {
    return sizeof(VirtqAvailHeader) + 2 * std::uint64_t{n} + 2;
  }
  [[nodiscard]] static constexpr std::uint64_t used_bytes(std::uint32_t n) noexcept {
    return sizeof(VirtqUsedHeader) + sizeof(VirtqUsedElem) * std::uint64_t{n} + 2;
  }

  // The usual contiguous placement: the three areas back to back from
  // queue_offset, each at its virtio alignment.
  [[nodiscard]] static constexpr VirtqError compute(std::uint64_t queue_offset,
                                                    std::uint32_t queue_size,
                                                    VirtqLayout& out) noexcept {
    if (!valid_queue_size(queue_size)) return VirtqError::bad_queue_size;
    if (queue_offset % kVirtqDescAlign != 0) return VirtqError::misaligned_area;
    std::uint64_t avail = 0;
    std::uint64_t avail_end = 0;
    if (__builtin_add_overflow(queue_offset, desc_bytes(queue_size), &avail) ||
        __builtin_add_overflow(avail, avail_bytes(queue_size) + kVirtqUsedAlign - 1, &avail_end)) {
      return VirtqError::queue_out_of_section;
    }
    return from_areas(queue_size, queue_offset, avail,
                      avail_end / kVirtqUsedAlign * kVirtqUsedAlign, out);
  }

  // Three separately placed areas, e.g. as a virtio front end wrote them into
  // queue_desc/queue_driver/queue_device. Checks size, alignment, overflow and
  // overlap; whether they fit a section is VirtqRings::attach()'s business.
  [[nodiscard]] static constexpr VirtqError from_areas(std::uint32_t queue_size, std::uint64_t desc,
                                                       std::uint64_t avail, std::uint64_t used,
                                                       VirtqLayout& out) noexcept {
    if (!valid_queue_size(queue_size)) return VirtqError::bad_queue_size;
    if (desc % kVirtqDescAlign != 0 || avail % kVirtqAvailAlign != 0 ||
        used % kVirtqUsedAlign != 0) {
      return VirtqError::misaligned_area;
    }
    std::uint64_t end = 0;
    if (__builtin_add_overflow(desc, desc_bytes(queue_size), &end) ||
        __builtin_add_overflow(avail, avail_bytes(queue_size), &end) ||
        __builtin_add_overflow(used, used_bytes(queue_size), &end)) {
      return VirtqError::queue_out_of_section;
    }
    const VirtqLayout layout{queue_size, desc, avail, used};
    if (overlap(layout.desc, layout.desc_end(), layout.avail, layout.avail_end()) ||
        overlap(layout.desc, layout.desc_end(), layout.used, layout.used_end()) ||
        overlap(layout.avail, layout.avail_end(), layout.used, layout.used_end())) {
      return VirtqError::overlapping_areas;
    }
    out = layout;
    return VirtqError::ok;
  }

  [[nodiscard]] constexpr std::uint64_t desc_end() const noexcept {
    return desc + desc_bytes(queue_size);
  }
  [[nodiscard]] constexpr std::uint64_t avail_end() const noexcept {
    return avail + avail_bytes(queue_size);
  }
  [[nodiscard]] constexpr std::uint64_t used_end() const noexcept {
    return used + used_bytes(queue_size);
  }
  // One past the last byte of the queue; the R/W section must be at least this big.
  [[nodiscard]] constexpr std::uint64_t end() const noexcept {
    const std::uint64_t first = desc_end() > avail_end() ? desc_end() : avail_end();
    return first > used_end() ? first : used_end();
  }
  // Offsets of the trailing event fields.
  [[nodiscard]] constexpr std::uint64_t used_event_offset() const noexcept {
    return avail + sizeof(VirtqAvailHeader) + 2 * std::uint64_t{queue_size};
  }
  [[nodiscard]] constexpr std::uint64_t avail_event_offset() const noexcept {
    return used + sizeof(VirtqUsedHeader) + sizeof(VirtqUsedElem) * std::uint64_t{queue_size};
  }

  // True when [a, a_end) and [b, b_end) share a byte.
  [[nodiscard]] static constexpr bool overlap(std::uint64_t a, std::uint64_t a_end, std::uint64_t b,
                                              std::uint64_t b_end) noexcept {
    return a < b_end && b < a_end;
  }

  friend constexpr bool operator==(const VirtqLayout&, const VirtqLayout&) = default;
};

namespace virtq_detail {
[[nodiscard]] constexpr VirtqLayout contiguous(std::uint64_t offset, std::uint32_t n) noexcept {
  VirtqLayout layout;
  return VirtqLayout::compute(offset, n, layout) == VirtqError::ok ? layout : VirtqLayout{};
}
}  // namespace virtq_detail

// Worked examples, repeated in docs/virtq.md.
static_assert(virtq_detail::contiguous(0, 1) == VirtqLayout{1, 0, 16, 24});
static_assert(virtq_detail::contiguous(0, 1).end() == 38);
static_assert(virtq_detail::contiguous(0, 256) == VirtqLayout{256, 0, 4096, 4616});
static_assert(virtq_detail::contiguous(0, 256).end() == 6670);
static_assert(virtq_detail::contiguous(0, 256).used_event_offset() == 4612);
static_assert(virtq_detail::contiguous(0, 256).avail_event_offset() == 6668);
static_assert(virtq_detail::contiguous(0x1000, 32768) ==
              VirtqLayout{32768, 0x1000, 0x81000, 0x91008});
static_assert(virtq_detail::contiguous(0x1000, 32768).end() == 0xd100e);

// A view of one queue's rings inside a mapped R/W section. It owns nothing:
// the section must stay mapped at the same address while the view is used.
// Accessors mask every ring and descriptor index with N - 1, so no value can
// reach outside the rings; callers still validate indices, to report them.
class VirtqRings {
 public:
  [[nodiscard]] VirtqError attach(std::span<std::byte> section,
                                  const VirtqLayout& layout) noexcept {
    VirtqLayout checked;
    const VirtqError error =
        VirtqLayout::from_areas(layout.queue_size, layout.desc, layout.avail, layout.used, checked);
    if (error != VirtqError::ok) return error;
    if (reinterpret_cast<std::uintptr_t>(section.data()) % kVirtqDescAlign != 0) {
      return VirtqError::misaligned_section;
    }
    if (checked.end() > section.size()) return VirtqError::queue_out_of_section;
    std::byte* const base = section.data();
    section_ = section;
    layout_ = checked;
    mask_ = checked.queue_size - 1;
    desc_ = reinterpret_cast<VirtqDesc*>(base + checked.desc);
    avail_ = reinterpret_cast<VirtqAvailHeader*>(base + checked.avail);
    avail_ring_ = reinterpret_cast<std::uint16_t*>(base + checked.avail + sizeof(VirtqAvailHeader));
    used_event_ = reinterpret_cast<std::uint16_t*>(base + checked.used_event_offset());
    used_ = reinterpret_cast<VirtqUsedHeader*>(base + checked.used);
    used_ring_ = reinterpret_cast<VirtqUsedElem*>(base + checked.used + sizeof(VirtqUsedHeader));
    avail_event_ = reinterpret_cast<std::uint16_t*>(base + checked.avail_event_offset());
    return VirtqError::ok;
  }

  [[nodiscard]] std::span<std::byte> section() const noexcept { return section_; }
  [[nodiscard]] const VirtqLayout& layout() const noexcept { return layout_; }
  [[nodiscard]] std::uint32_t queue_size() const noexcept { return layout_.queue_size; }

  [[nodiscard]] VirtqDesc& desc(std::uint32_t index) const noexcept { return desc_[index & mask_]; }
  [[nodiscard]] std::uint16_t& avail_flags() const noexcept { return avail_->flags; }
  [[nodiscard]] std::uint16_t& avail_idx() const noexcept { return avail_->idx; }
  // Slot for the free-running avail index `idx`.
  [[nodiscard]] std::uint16_t& avail_slot(std::uint16_t idx) const noexcept {
    return avail_ring_[idx & mask_];
  }
  [[nodiscard]] std::uint16_t& used_event() const noexcept { return *used_event_; }
  [[nodiscard]] std::uint16_t& used_flags() const noexcept { return used_->flags; }
  [[nodiscard]] std::uint16_t& used_idx() const noexcept { return used_->idx; }
  // Entry for the free-running used index `idx`.
  [[nodiscard]] VirtqUsedElem& used_slot(std::uint16_t idx) const noexcept {
    return used_ring_[idx & mask_];
  }
  [[nodiscard]] std::uint16_t& avail_event() const noexcept { return *avail_event_; }

 private:
  std::span<std::byte> section_;
  VirtqLayout layout_;
  std::uint32_t mask_ = 0;
  VirtqDesc* desc_ = nullptr;
  VirtqAvailHeader* avail_ = nullptr;
  std::uint16_t* avail_ring_ = nullptr;
  std::uint16_t* used_event_ = nullptr;
  VirtqUsedHeader* used_ = nullptr;
  VirtqUsedElem* used_ring_ = nullptr;
  std::uint16_t* avail_event_ = nullptr;
};

// Shared fields are only ever touched through these, so every access is
// atomic (the peer may write concurrently) and names its memory order.
template <typename T>
[[nodiscard]] inline T virtq_load(T& field, std::memory_order order) noexcept {
  return std::atomic_ref<T>(field).load(order);
}
template <typename T>
inline void virtq_store(T& field, T value, std::memory_order order) noexcept {
  std::atomic_ref<T>(field).store(value, order);
}

// VirtqEndpoint: what the driver and device halves share: the rings they
// attach to, the latched fault, the accessors, and placing a queue at an
// offset. Derived (CRTP) is VirtqDriver or VirtqDevice and provides
// init(section, layout), which resets fault_ and attaches rings_.
template <typename Derived>
class VirtqEndpoint {
 public:
  // Places the queue contiguously at queue_offset (see VirtqLayout::compute).
  [[nodiscard]] VirtqError init(std::span<std::byte> section, std::uint64_t queue_offset,
                                std::uint32_t queue_size) noexcept {
    VirtqLayout layout;
    const VirtqError error = VirtqLayout::compute(queue_offset, queue_size, layout);
    if (error != VirtqError::ok) {
      fault_ = VirtqFault{};
      return error;
    }
    return static_cast<Derived*>(this)->init(section, layout);
  }

  [[nodiscard]] VirtqError error() const noexcept { return fault_.error; }
  [[nodiscard]] const VirtqFault& fault() const noexcept { return fault_; }
  [[nodiscard]] const VirtqLayout& layout() const noexcept { return rings_.layout(); }
  [[nodiscard]] std::uint32_t queue_size() const noexcept { return rings_.queue_size(); }

 protected:
  VirtqEndpoint() noexcept = default;
  ~VirtqEndpoint() = default;

  VirtqRings rings_;
  VirtqFault fault_;
};

}  // namespace cellink::transports
