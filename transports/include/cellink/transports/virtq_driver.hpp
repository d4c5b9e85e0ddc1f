// VirtqDriver: the front end of a split virtqueue. It offers buffers in the
// R/W section to the device and takes them back once the device used them.
// Spec: docs/virtq.md; wire structs and geometry: virtq.hpp.
//
// What it writes in shared memory: the descriptor table and the avail ring
// (flags, idx, ring[], used_event). What it reads: used.idx, used.ring[] and
// avail_event, all written by the device and all treated as hostile. It never
// reads back a value it wrote: the free list, the chains in flight and the
// avail index live in private shadows.
//
// Notification suppression has two modes (docs/virtq.md): VIRTIO_F_EVENT_IDX
// (the default: used_event / avail_event), or, when the transport did not
// negotiate it, the flags (set_event_idx(false)): publish() honours the
// device's VIRTQ_USED_F_NO_NOTIFY, and arm_interrupt() / disarm_interrupt()
// clear and set VIRTQ_AVAIL_F_NO_INTERRUPT.
//
// Threading: one thread at a time per object; nothing inside locks. The
// device half may run concurrently in another thread, process or cell.
//
// Ownership: the section passed to init() must stay mapped at the same
// address while the object is used. A buffer given to add() belongs to the
// device until collect() returns its token; the driver does not touch it.
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

// What collect() hands back for one finished chain.
struct VirtqCompletion {
  std::uint32_t token = 0;  // the token given to add()
  std::uint32_t len = 0;    // bytes the device wrote, <= the chain's writable bytes
};

// MaxQueueSize sizes the private shadows (about 16 bytes per descriptor);
// init() accepts any valid N up to it.
template <std::uint32_t MaxQueueSize = 256>
class VirtqDriver : public VirtqEndpoint<VirtqDriver<MaxQueueSize>> {
  using Endpoint = VirtqEndpoint<VirtqDriver<MaxQueueSize>>;
  using Endpoint::fault_;
  using Endpoint::rings_;

  static_assert(MaxQueueSize >= 1 && MaxQueueSize <= kVirtqMaxQueueSize,
                "MaxQueueSize must be 1..32768");

 public:
  VirtqDriver() noexcept = default;
  VirtqDriver(const VirtqDriver&) = delete;
  VirtqDriver& operator=(const VirtqDriver&) = delete;

  using Endpoint::init;  // init(section, queue_offset, queue_size)

  // Chooses the suppression mode: true (the default) for VIRTIO_F_EVENT_IDX,
  // false for the flags. Set it from the negotiated features, before the
  // queue runs; init() keeps it.
  void set_event_idx(bool enabled) noexcept { event_idx_ = enabled; }
  [[nodiscard]] bool event_idx() const noexcept { return event_idx_; }

  // Attaches to the areas in `layout`, zeroes the descriptor table and the
  // avail ring, and forgets every chain. The used ring is the device's to
  // zero (VirtqDevice::init()). Both must finish before either side runs;
  // the link handshake orders that. Also resets a queue after a peer reset.
  [[nodiscard]] VirtqError init(std::span<std::byte> section, const VirtqLayout& layout) noexcept {
    fault_ = VirtqFault{};
    if (layout.queue_size > MaxQueueSize) return VirtqError::queue_too_large;
    const VirtqError error = rings_.attach(section, layout);
    if (error != VirtqError::ok) return error;

    const std::uint32_t n = rings_.queue_size();
    for (std::uint32_t i = 0; i < n; ++i) {
      VirtqDesc& desc = rings_.desc(i);
      virtq_store(desc.addr, std::uint64_t{0}, std::memory_order_relaxed);
      virtq_store(desc.len, std::uint32_t{0}, std::memory_order_relaxed);
      virtq_store(desc.flags, std::uint16_t{0}, std::memory_order_relaxed);
      virtq_store(desc.next, std::uint16_t{0}, std::memory_order_relaxed);
      virtq_store(rings_.avail_slot(static_cast<std::uint16_t>(i)), std::uint16_t{0},
                  std::memory_order_relaxed);
      next_free_[i] = static_cast<std::uint16_t>(i + 1);
      heads_[i] = Head{};
    }
    // 0: interrupts wanted, so a fresh queue's first used buffer notifies in
    // either mode.
    virtq_store(rings_.avail_flags(), std::uint16_t{0}, std::memory_order_relaxed);
    avail_flags_shadow_ = 0;
    virtq_store(rings_.avail_idx(), std::uint16_t{0}, std::memory_order_relaxed);
    virtq_store(rings_.used_event(), std::uint16_t{0}, std::memory_order_relaxed);
    // The zeroes need no barrier here: the handshake that follows init()
    // publishes them with its own release (the state-table write).
    free_head_ = 0;
    free_count_ = n;
    unpublished_count_ = 0;
    avail_shadow_ = 0;
    published_avail_ = 0;
    last_used_ = 0;
    used_cache_ = 0;
    fault_.error = VirtqError::ok;
    return VirtqError::ok;
  }

  // Builds one chain: out_bufs device-readable, then in_bufs device-writable.
  // The chain becomes visible to the device at the next publish(). `token` is
  // handed back by collect() when the device is done with the chain.
  [[nodiscard]] VirtqError add(std::span<const VirtqBuffer> out_bufs,
                               std::span<const VirtqBuffer> in_bufs, std::uint32_t token) noexcept {
    if (fault_.error != VirtqError::ok) return fault_.error;
    const std::size_t count = out_bufs.size() + in_bufs.size();
    if (count == 0) return VirtqError::no_buffers;
    if (count > rings_.queue_size()) return VirtqError::too_many_buffers;
    if (count > free_count_) return VirtqError::no_space;
    std::uint64_t writable = 0;
    for (const VirtqBuffer& buffer : out_bufs) {
      const VirtqError error = check_buffer(buffer);
      if (error != VirtqError::ok) return error;
    }
    for (const VirtqBuffer& buffer : in_bufs) {
      const VirtqError error = check_buffer(buffer);
      if (error != VirtqError::ok) return error;
      writable += buffer.len;
    }

    // The free list is linked in next_free_, so the first `count` free
    // descriptors already form the chain in order.
    const std::uint16_t head = free_head_;
    std::uint16_t index = head;
    std::uint16_t tail = head;
    std::size_t written = 0;
    const auto write = [&](const VirtqBuffer& buffer, std::uint16_t flags) noexcept {
      const bool last = ++written == count;
      VirtqDesc& desc = rings_.desc(index);
      // Relaxed: the device may read these only after R1 in publish().
      virtq_store(desc.addr, buffer.offset, std::memory_order_relaxed);
      virtq_store(desc.len, buffer.len, std::memory_order_relaxed);
      virtq_store(desc.flags, static_cast<std::uint16_t>(last ? flags : flags | kVirtqDescNext),
                  std::memory_order_relaxed);
      virtq_store(desc.next, last ? std::uint16_t{0} : next_free_[index],
                  std::memory_order_relaxed);
      tail = index;
      index = next_free_[index];
    };
    for (const VirtqBuffer& buffer : out_bufs) write(buffer, 0);
    for (const VirtqBuffer& buffer : in_bufs) write(buffer, kVirtqDescWrite);
    free_head_ = next_free_[tail];
    free_count_ -= static_cast<std::uint32_t>(count);
    heads_[head] = Head{token, writable, tail, static_cast<std::uint16_t>(count), HeadState::added};
    unpublished_[unpublished_count_++] = head;
    // Relaxed: ordered before the avail.idx store by R1 in publish().
    virtq_store(rings_.avail_slot(avail_shadow_), head, std::memory_order_relaxed);
    ++avail_shadow_;
    return VirtqError::ok;
  }

  // Makes every chain added since the last publish() visible to the device.
  // Returns true when the device asked to be notified (EVENT_IDX: its
  // avail_event lies in the published range; flags: used.flags lacks
  // NO_NOTIFY); the caller then rings the device's doorbell. Returns false
  // when nothing was added or the queue is broken.
  [[nodiscard]] bool publish() noexcept {
    if (fault_.error != VirtqError::ok) return false;
    for (std::uint32_t i = 0; i < unpublished_count_; ++i) {
      heads_[unpublished_[i]].state = HeadState::published;
    }
    unpublished_count_ = 0;
    const std::uint16_t old_idx = published_avail_;
    published_avail_ = avail_shadow_;
    // R1: descriptors and avail.ring[] must be visible before avail.idx;
    // pairs with A1 in VirtqDevice::pop().
    virtq_store(rings_.avail_idx(), avail_shadow_, std::memory_order_release);
    // F1: the avail.idx store must be visible before the avail_event (or
    // used.flags) load; pairs with F3 in VirtqDevice::arm_notify().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!event_idx_) {
      // Relaxed: a hint, ordered by F1; a device that clears NO_NOTIFY
      // re-checks avail.idx after its own fence, so no chain is slept on.
      const std::uint16_t flags = virtq_load(rings_.used_flags(), std::memory_order_relaxed);
      return old_idx != avail_shadow_ && (flags & kVirtqUsedFlagNoNotify) == 0;
    }
    const std::uint16_t event = virtq_load(rings_.avail_event(), std::memory_order_relaxed);
    return vring_need_event(event, avail_shadow_, old_idx);
  }

  // Takes one finished chain: fills `out` and frees the chain's descriptors.
  // Returns empty when the device has used nothing new, or the latched fault.
  [[nodiscard]] VirtqError collect(VirtqCompletion& out) noexcept {
    if (fault_.error != VirtqError::ok) return fault_.error;
    if (last_used_ == used_cache_) {
      // A2: reads used.ring[] only after used.idx; pairs with R2 in
      // VirtqDevice::publish().
      const std::uint16_t used_idx = virtq_load(rings_.used_idx(), std::memory_order_acquire);
      const auto outstanding = static_cast<std::uint16_t>(published_avail_ - last_used_);
      if (static_cast<std::uint16_t>(used_idx - last_used_) > outstanding) {
        return fail(VirtqError::used_idx_jump, "used.idx", 0, used_idx, last_used_,
                    published_avail_);
      }
      used_cache_ = used_idx;
      if (last_used_ == used_cache_) return VirtqError::empty;
    }
    VirtqUsedElem& elem = rings_.used_slot(last_used_);
    // Relaxed: ordered after A2; each field is read once into a local.
    const std::uint32_t id = virtq_load(elem.id, std::memory_order_relaxed);
    const std::uint32_t len = virtq_load(elem.len, std::memory_order_relaxed);
    const std::uint32_t slot = last_used_ & (rings_.queue_size() - 1);
    if (id >= rings_.queue_size() || heads_[id].state != HeadState::published) {
      return fail(VirtqError::bad_used_id, "used.ring[].id", slot, id, 0, rings_.queue_size() - 1);
    }
    Head& chain = heads_[id];
    if (len > chain.writable) {
      return fail(VirtqError::bad_used_len, "used.ring[].len", slot, len, 0, chain.writable);
    }
    out = VirtqCompletion{chain.token, len};
    next_free_[chain.tail] = free_head_;
    free_head_ = static_cast<std::uint16_t>(id);
    free_count_ += chain.length;
    chain = Head{};
    ++last_used_;
    return VirtqError::ok;
  }

  // Before sleeping on the device's interrupt: asks to be notified when the
  // device uses the next chain (EVENT_IDX: used_event = the next used index;
  // flags: clears NO_INTERRUPT), then re-checks. Returns true when it is safe
  // to sleep; false when used entries are already waiting (call collect())
  // or the queue is broken.
  [[nodiscard]] bool arm_interrupt() noexcept {
    if (fault_.error != VirtqError::ok) return false;
    if (event_idx_) {
      virtq_store(rings_.used_event(), last_used_, std::memory_order_relaxed);
    } else {
      write_avail_flags(0);
    }
    // F2: the used_event (or avail.flags) store must be visible before the
    // used.idx re-load; pairs with F4 in VirtqDevice::publish().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Relaxed: only compared; collect() re-reads used.idx with A2.
    return virtq_load(rings_.used_idx(), std::memory_order_relaxed) == last_used_;
  }

  // While polling: asks the device not to interrupt (flags: sets
  // NO_INTERRUPT, a hint the device may ignore). With EVENT_IDX there is
  // nothing to do: after one interrupt the device stays quiet until the next
  // arm_interrupt(). Returns false when the queue is broken.
  bool disarm_interrupt() noexcept {
    if (fault_.error != VirtqError::ok) return false;
    if (!event_idx_) write_avail_flags(kVirtqAvailFlagNoInterrupt);
    return true;
  }

  [[nodiscard]] std::uint32_t free_descriptors() const noexcept { return free_count_; }

 private:
  enum class HeadState : std::uint8_t { free, added, published };

  // Private record of one chain, indexed by its head descriptor.
  struct Head {
    std::uint32_t token = 0;
    std::uint64_t writable = 0;  // sum of the chain's device-writable lengths
    std::uint16_t tail = 0;      // last descriptor; the links are in next_free_
    std::uint16_t length = 0;    // descriptors in the chain
    HeadState state = HeadState::free;
  };

  [[nodiscard]] VirtqError check_buffer(const VirtqBuffer& buffer) const noexcept {
    const std::uint64_t size = rings_.section().size();
    if (buffer.len > size || buffer.offset > size - buffer.len) return VirtqError::out_of_section;
    const std::uint64_t end = buffer.offset + buffer.len;
    const VirtqLayout& layout = rings_.layout();
    if (VirtqLayout::overlap(buffer.offset, end, layout.desc, layout.desc_end()) ||
        VirtqLayout::overlap(buffer.offset, end, layout.avail, layout.avail_end()) ||
        VirtqLayout::overlap(buffer.offset, end, layout.used, layout.used_end())) {
      return VirtqError::overlaps_queue;
    }
    return VirtqError::ok;
  }

  // avail.flags is ours alone: the shadow spares a store when the value
  // does not change, and we never read the shared field back.
  void write_avail_flags(std::uint16_t flags) noexcept {
    if (flags == avail_flags_shadow_) return;
    avail_flags_shadow_ = flags;
    // Relaxed: a hint. The clear in arm_interrupt() is ordered by F2; a set
    // that the device sees late costs at most one needless interrupt.
    virtq_store(rings_.avail_flags(), flags, std::memory_order_relaxed);
  }

  VirtqError fail(VirtqError error, const char* field, std::uint32_t position, std::uint64_t value,
                  std::uint64_t expected_min, std::uint64_t expected_max) noexcept {
    fault_ = VirtqFault{error, field, position, value, expected_min, expected_max};
    return error;
  }

  std::uint16_t free_head_ = 0;           // first free descriptor; chained through next_free_
  std::uint32_t free_count_ = 0;          // free descriptors
  std::uint32_t unpublished_count_ = 0;   // heads added since the last publish()
  std::uint16_t avail_shadow_ = 0;        // avail.idx as it will be after the next publish()
  std::uint16_t published_avail_ = 0;     // avail.idx as last published
  std::uint16_t last_used_ = 0;           // next used index to collect
  std::uint16_t used_cache_ = 0;          // used.idx as last read and validated
  std::uint16_t avail_flags_shadow_ = 0;  // avail.flags as last written
  bool event_idx_ = true;                 // suppression mode, see set_event_idx()
  std::array<std::uint16_t, MaxQueueSize> next_free_{};  // free list and chain links
  std::array<Head, MaxQueueSize> heads_{};
  std::array<std::uint16_t, MaxQueueSize> unpublished_{};
};

}  // namespace cellink::transports
