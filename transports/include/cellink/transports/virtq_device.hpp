// VirtqDevice: the back end of a split virtqueue. It pops the chains the
// driver offers, hands them out as spans into the R/W section, and returns
// them through the used ring. Spec: docs/virtq.md; wire structs and geometry:
// virtq.hpp.
//
// What it writes in shared memory: the used ring (flags, idx, ring[],
// avail_event). What it reads: avail.flags, avail.idx, avail.ring[], the
// descriptor table and used_event, all written by the driver and all treated
// as hostile. Every descriptor is copied out once and validated before any
// span is built, so every span it hands out lies inside the R/W section (or,
// with VirtqDeviceOptions::pool_offset, inside [pool_offset, R)). The first
// fault is latched with a diagnostic; from then on pop() never yields a chain.
//
// Notification suppression, chosen at init() (VirtqDeviceOptions::event_idx):
//   - event-idx (VIRTIO_F_EVENT_IDX negotiated, the default): avail_event and
//     used_event; used.flags stays 0 and avail.flags is ignored;
//   - flags (no EVENT_IDX, e.g. a Jailhouse front end): the device sets
//     VIRTQ_USED_F_NO_NOTIFY in used.flags while it is busy
//     (disable_notify()), clears it before sleeping (arm_notify()), and
//     publish() honours VIRTQ_AVAIL_F_NO_INTERRUPT in avail.flags. Both flags
//     are hints; avail_event is never written and used_event never read.
// The busy loop is the same in both modes:
//   disable_notify(); while (pop() == ok) { ...; push(); }
//   if (publish()) ring the driver;  if (arm_notify()) sleep;  else loop.
//
// Threading: one thread at a time per object; nothing inside locks. The
// driver half may run concurrently in another thread, process or cell.
//
// Ownership: the section passed to init() must stay mapped at the same
// address while the object is used. A chain's spans stay valid until it is
// pushed; the driver can still write the bytes at any time, so copy data out
// before validating it.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/transports/virtq.hpp"

namespace cellink::transports {

// How a VirtqDevice validates and notifies; fixed at init().
struct VirtqDeviceOptions {
  // VIRTIO_F_EVENT_IDX was negotiated: event-idx suppression. When false,
  // flag-based suppression (VIRTQ_USED_F_NO_NOTIFY / VIRTQ_AVAIL_F_NO_INTERRUPT).
  bool event_idx = true;
  // The three areas and every buffer must lie in [pool_offset, R); 0 allows
  // the whole section. virtio over ivshmem passes kVirtioIvshmemPoolOffset, so
  // that nothing the driver offers can reach the register page.
  std::uint64_t pool_offset = 0;
};

template <std::uint32_t MaxQueueSize, std::size_t MaxSegments>
class VirtqDevice;

// One popped chain: its head id and up to MaxSegments buffers, the
// device-readable ones first (virtio orders them so; pop() enforces it).
template <std::size_t MaxSegments>
class VirtqChain {
  static_assert(MaxSegments >= 1, "a chain has at least one segment");

 public:
  [[nodiscard]] std::uint16_t head() const noexcept { return head_; }
  [[nodiscard]] bool empty() const noexcept { return readable_count_ + writable_count_ == 0; }
  [[nodiscard]] std::size_t readable_count() const noexcept { return readable_count_; }
  [[nodiscard]] std::size_t writable_count() const noexcept { return writable_count_; }
  [[nodiscard]] std::uint64_t readable_bytes() const noexcept { return readable_bytes_; }
  [[nodiscard]] std::uint64_t writable_bytes() const noexcept { return writable_bytes_; }

  // The i-th device-readable buffer; empty when i >= readable_count().
  [[nodiscard]] std::span<const std::byte> readable(std::size_t i) const noexcept {
    return i < readable_count_ ? segments_[i] : std::span<const std::byte>{};
  }
  // The i-th device-writable buffer; empty when i >= writable_count().
  [[nodiscard]] std::span<std::byte> writable(std::size_t i) const noexcept {
    return i < writable_count_ ? segments_[readable_count_ + i] : std::span<std::byte>{};
  }

 private:
  template <std::uint32_t, std::size_t>
  friend class VirtqDevice;

  void clear() noexcept {
    head_ = 0;
    readable_count_ = 0;
    writable_count_ = 0;
    readable_bytes_ = 0;
    writable_bytes_ = 0;
  }

  std::uint16_t head_ = 0;
  std::size_t readable_count_ = 0;
  std::size_t writable_count_ = 0;
  std::uint64_t readable_bytes_ = 0;
  std::uint64_t writable_bytes_ = 0;
  std::array<std::span<std::byte>, MaxSegments> segments_{};
};

// MaxQueueSize sizes the private record of chains in flight (9 bytes per
// descriptor); init() accepts any valid N up to it. MaxSegments bounds the
// chains pop() accepts.
template <std::uint32_t MaxQueueSize = 256, std::size_t MaxSegments = 16>
class VirtqDevice : public VirtqEndpoint<VirtqDevice<MaxQueueSize, MaxSegments>> {
  using Endpoint = VirtqEndpoint<VirtqDevice<MaxQueueSize, MaxSegments>>;
  using Endpoint::fault_;
  using Endpoint::rings_;

  static_assert(MaxQueueSize >= 1 && MaxQueueSize <= kVirtqMaxQueueSize,
                "MaxQueueSize must be 1..32768");

 public:
  using Chain = VirtqChain<MaxSegments>;

  VirtqDevice() noexcept = default;
  VirtqDevice(const VirtqDevice&) = delete;
  VirtqDevice& operator=(const VirtqDevice&) = delete;

  using Endpoint::init;  // init(section, queue_offset, queue_size): event-idx, whole section

  // Attaches to the areas in `layout` and zeroes the used ring; reads nothing
  // from shared memory. The descriptor table and avail ring are the driver's
  // to zero (VirtqDriver::init()). Also resets a queue after a peer reset.
  // An area that starts before options.pool_offset (or a pool_offset past the
  // section end) is queue_out_of_section.
  [[nodiscard]] VirtqError init(std::span<std::byte> section, const VirtqLayout& layout,
                                const VirtqDeviceOptions& options = {}) noexcept {
    fault_ = VirtqFault{};
    if (layout.queue_size > MaxQueueSize) return VirtqError::queue_too_large;
    const VirtqError error = rings_.attach(section, layout);
    if (error != VirtqError::ok) return error;
    if (options.pool_offset > section.size() || layout.desc < options.pool_offset ||
        layout.avail < options.pool_offset || layout.used < options.pool_offset) {
      rings_ = VirtqRings{};
      return VirtqError::queue_out_of_section;
    }
    event_idx_ = options.event_idx;
    pool_offset_ = options.pool_offset;

    for (std::uint32_t i = 0; i < rings_.queue_size(); ++i) {
      VirtqUsedElem& elem = rings_.used_slot(static_cast<std::uint16_t>(i));
      virtq_store(elem.id, std::uint32_t{0}, std::memory_order_relaxed);
      virtq_store(elem.len, std::uint32_t{0}, std::memory_order_relaxed);
      in_flight_[i] = false;
      writable_bytes_[i] = 0;
    }
    virtq_store(rings_.used_flags(), std::uint16_t{0}, std::memory_order_relaxed);
    virtq_store(rings_.used_idx(), std::uint16_t{0}, std::memory_order_relaxed);
    virtq_store(rings_.avail_event(), std::uint16_t{0}, std::memory_order_relaxed);
    // The zeroes need no barrier here: the handshake that follows init()
    // publishes them with its own release (the state-table write).
    last_avail_ = 0;
    avail_cache_ = 0;
    used_shadow_ = 0;
    published_used_ = 0;
    used_flags_ = 0;
    fault_.error = VirtqError::ok;
    return VirtqError::ok;
  }

  // Takes the next chain the driver published. On ok, `out` holds it until
  // push(out.head(), ...). Returns empty when there is none; on any other
  // status `out` is empty.
  [[nodiscard]] VirtqError pop(Chain& out) noexcept {
    out.clear();
    if (fault_.error != VirtqError::ok) return fault_.error;
    const std::uint32_t n = rings_.queue_size();
    if (last_avail_ == avail_cache_) {
      // A1: reads avail.ring[] and the descriptors only after avail.idx;
      // pairs with R1 in VirtqDriver::publish().
      const std::uint16_t avail_idx = virtq_load(rings_.avail_idx(), std::memory_order_acquire);
      if (static_cast<std::uint16_t>(avail_idx - last_avail_) > n) {
        return fail(out, VirtqError::avail_idx_jump, "avail.idx", 0, avail_idx, last_avail_,
                    static_cast<std::uint16_t>(last_avail_ + n));
      }
      avail_cache_ = avail_idx;
      if (last_avail_ == avail_cache_) return VirtqError::empty;
    }
    const std::uint32_t slot = last_avail_ & (n - 1);
    // Relaxed: ordered after A1; read once.
    const std::uint16_t head =
        virtq_load(rings_.avail_slot(last_avail_), std::memory_order_relaxed);
    if (head >= n) return fail(out, VirtqError::bad_head, "avail.ring[]", slot, head, 0, n - 1);
    if (in_flight_[head]) {
      return fail(out, VirtqError::head_in_use, "avail.ring[]", slot, head, 0, n - 1);
    }

    // Buffers must lie in the pool [pool_offset_, R); init() checked
    // pool_offset_ <= R, so neither bound below can underflow.
    const std::uint64_t section_size = rings_.section().size();
    const std::uint64_t pool_size = section_size - pool_offset_;
    const std::uint64_t max_length = n < MaxSegments ? n : MaxSegments;
    std::uint32_t index = head;
    for (std::uint64_t length = 1;; ++length) {
      if (length > max_length) {
        return fail(out, VirtqError::chain_too_long, "desc[].next", index, length, 1, max_length);
      }
      VirtqDesc& shared = rings_.desc(index);
      // Relaxed: ordered after A1; each field is read once into the copy.
      const VirtqDesc desc{virtq_load(shared.addr, std::memory_order_relaxed),
                           virtq_load(shared.len, std::memory_order_relaxed),
                           virtq_load(shared.flags, std::memory_order_relaxed),
                           virtq_load(shared.next, std::memory_order_relaxed)};
      if ((desc.flags & kVirtqDescIndirect) != 0) {
        return fail(out, VirtqError::indirect_unsupported, "desc[].flags", index, desc.flags, 0,
                    kVirtqDescNext | kVirtqDescWrite);
      }
      if (desc.len > pool_size) {
        return fail(out, VirtqError::buffer_out_of_section, "desc[].len", index, desc.len, 0,
                    pool_size);
      }
      if (desc.addr < pool_offset_ || desc.addr > section_size - desc.len) {
        return fail(out, VirtqError::buffer_out_of_section, "desc[].addr", index, desc.addr,
                    pool_offset_, section_size - desc.len);
      }
      const std::span<std::byte> buffer = rings_.section().subspan(desc.addr, desc.len);
      if ((desc.flags & kVirtqDescWrite) != 0) {
        out.segments_[out.readable_count_ + out.writable_count_++] = buffer;
        out.writable_bytes_ += desc.len;
      } else if (out.writable_count_ != 0) {
        return fail(out, VirtqError::bad_order, "desc[].flags", index, desc.flags, kVirtqDescWrite,
                    kVirtqDescWrite | kVirtqDescNext);
      } else {
        out.segments_[out.readable_count_++] = buffer;
        out.readable_bytes_ += desc.len;
      }
      if ((desc.flags & kVirtqDescNext) == 0) break;
      if (desc.next >= n) {
        return fail(out, VirtqError::bad_next, "desc[].next", index, desc.next, 0, n - 1);
      }
      index = desc.next;
    }
    out.head_ = head;
    in_flight_[head] = true;
    writable_bytes_[head] = out.writable_bytes_;
    ++last_avail_;
    return VirtqError::ok;
  }

  // Returns a popped chain to the driver with the number of bytes written
  // into its writable buffers. Visible to the driver at the next publish().
  [[nodiscard]] VirtqError push(std::uint16_t head, std::uint32_t written_len) noexcept {
    if (fault_.error != VirtqError::ok) return fault_.error;
    if (head >= rings_.queue_size() || !in_flight_[head]) return VirtqError::not_in_flight;
    if (written_len > writable_bytes_[head]) return VirtqError::written_too_long;
    VirtqUsedElem& elem = rings_.used_slot(used_shadow_);
    // Relaxed: ordered before the used.idx store by R2 in publish().
    virtq_store(elem.id, std::uint32_t{head}, std::memory_order_relaxed);
    virtq_store(elem.len, written_len, std::memory_order_relaxed);
    ++used_shadow_;
    in_flight_[head] = false;
    return VirtqError::ok;
  }

  // Makes every push() since the last publish() visible to the driver.
  // Returns true when the driver wants an interrupt; the caller then rings
  // the driver's doorbell. Event-idx mode: its used_event lies in the
  // published range. Flag mode: something was published and avail.flags has
  // no VIRTQ_AVAIL_F_NO_INTERRUPT. Returns false when nothing was pushed or
  // the queue is broken.
  [[nodiscard]] bool publish() noexcept {
    if (fault_.error != VirtqError::ok) return false;
    const std::uint16_t old_idx = published_used_;
    published_used_ = used_shadow_;
    // R2: used.ring[] and the bytes written into the buffers must be visible
    // before used.idx; pairs with A2 in VirtqDriver::collect().
    virtq_store(rings_.used_idx(), used_shadow_, std::memory_order_release);
    // F4: the used.idx store must be visible before the used_event (or
    // avail.flags) load; pairs with F2 in VirtqDriver::arm_interrupt().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!event_idx_) {
      // Relaxed: a hint, read once after F4.
      const std::uint16_t flags = virtq_load(rings_.avail_flags(), std::memory_order_relaxed);
      return used_shadow_ != old_idx && (flags & kVirtqAvailFlagNoInterrupt) == 0;
    }
    const std::uint16_t event = virtq_load(rings_.used_event(), std::memory_order_relaxed);
    return vring_need_event(event, used_shadow_, old_idx);
  }

  // At the start of a busy period: asks the driver not to ring while the
  // device is popping anyway. Flag mode: sets VIRTQ_USED_F_NO_NOTIFY in
  // used.flags. Event-idx mode: writes nothing, because avail_event stays
  // where the last arm_notify() put it and the driver rings at most once
  // past it. A hint only: the driver may still ring.
  void disable_notify() noexcept {
    if (fault_.error != VirtqError::ok || event_idx_) return;
    set_used_flags(kVirtqUsedFlagNoNotify);
  }

  // Before sleeping on the driver's doorbell: asks to be notified when the
  // driver publishes the next chain, then re-checks. Event-idx mode:
  // avail_event = the next avail index. Flag mode: clears
  // VIRTQ_USED_F_NO_NOTIFY. Returns true when it is safe to sleep; false
  // when chains are already waiting (call pop()) or the queue is broken.
  [[nodiscard]] bool arm_notify() noexcept {
    if (fault_.error != VirtqError::ok) return false;
    if (event_idx_) {
      virtq_store(rings_.avail_event(), last_avail_, std::memory_order_relaxed);
    } else {
      set_used_flags(0);
    }
    // F3: the avail_event (or used.flags) store must be visible before the
    // avail.idx re-load; pairs with F1 in VirtqDriver::publish().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Relaxed: only compared; pop() re-reads avail.idx with A1.
    return virtq_load(rings_.avail_idx(), std::memory_order_relaxed) == last_avail_;
  }

  // The suppression mode init() chose.
  [[nodiscard]] bool event_idx() const noexcept { return event_idx_; }

 private:
  VirtqError fail(Chain& out, VirtqError error, const char* field, std::uint32_t position,
                  std::uint64_t value, std::uint64_t expected_min,
                  std::uint64_t expected_max) noexcept {
    out.clear();
    fault_ = VirtqFault{error, field, position, value, expected_min, expected_max};
    return error;
  }

  // Writes used.flags only when it changes: our private copy is the truth,
  // so it is never read back from shared memory.
  void set_used_flags(std::uint16_t flags) noexcept {
    if (used_flags_ == flags) return;
    used_flags_ = flags;
    // Relaxed: a hint; arm_notify()'s F3 orders the clearing store.
    virtq_store(rings_.used_flags(), flags, std::memory_order_relaxed);
  }

  std::uint16_t last_avail_ = 0;                // next avail index to pop
  std::uint16_t avail_cache_ = 0;               // avail.idx as last read and validated
  std::uint16_t used_shadow_ = 0;               // used.idx as it will be after the next publish()
  std::uint16_t published_used_ = 0;            // used.idx as last published
  std::uint16_t used_flags_ = 0;                // used.flags as last written (flag mode)
  bool event_idx_ = true;                       // suppression mode, from init()
  std::uint64_t pool_offset_ = 0;               // buffers must start at or after this
  std::array<bool, MaxQueueSize> in_flight_{};  // popped, not yet pushed
  std::array<std::uint64_t, MaxQueueSize> writable_bytes_{};  // per popped head
};

}  // namespace cellink::transports
