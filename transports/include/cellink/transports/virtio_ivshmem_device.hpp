// VirtioIvshmemDevice: the back end (virtio device half) of virtio over
// ivshmem on a 2-peer link. Spec: docs/virtio-over-ivshmem.md; wire format:
// virtio_ivshmem_format.hpp; each queue's settings: VirtioIvshmemQueue
// (virtio_ivshmem_queue.hpp), run by a VirtqDevice (virtq_device.hpp).
//
// What it writes in shared memory: its own state-table entry (set_state),
// the header page of the R/W section (the D fields, the windows it fills on a
// select, the corrected device_status, write_transaction = 0, the device
// config), and each enabled queue's used ring. What it reads: the front end's
// state, write_transaction and the one field it names, and the avail rings
// and descriptors of running queues. Everything the front end wrote is read
// once, then validated; nothing it wrote is ever trusted as an address.
//
// States:
//
//   attach() --> waiting: our state 0, wait for the front end's state 0
//                   | front end is 0: reset, write the header, our state READY
//                   v
//                 ready: apply register writes; running() once DRIVER_OK
//                   | front end leaves READY: forget queues and status
//                   v (event kReset), back to waiting
//
// In `ready`, device_status = 0 is a virtio reset: queues and status are
// forgotten too (kReset), without a new handshake.
//
// A malformed write or ring latches `broken` with a VirtioIvshmemFault: the
// back end sets DEVICE_NEEDS_RESET in device_status, raises config_event,
// rings the front end's vector 0 and from then on only consumes
// write_transaction, until device_status = 0 or a front-end reset.
//
// A front end that restarts between two service() calls without its state
// being seen at 0 still writes device_status = 0 first (virtio's reset at
// probe), which resets the device just the same.
//
// Use (the host console service):
//   attach(link, spec);
//   loop: wait for a doorbell on vector 0 or the queue vector (or a timeout)
//         events = service();           // handshake, register writes, faults
//         if (events.has(kReset) || !running()) drop every chain held
//         if (running()) for each queue: q = queue(i); q->disable_notify();
//                        pop()/push() ...; notify(i); if (!arm(i)) repeat
//         if (write_pending() || events.has(kMorePending)) service() again
// A pop() that returns a peer fault is latched by the next service(),
// notify() or arm(), which also tell the front end.
//
// Threading: one thread at a time for everything. The ivshmem::Device must
// outlive the object; its R/W section stays mapped at the same address.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/device.hpp"
#include "cellink/transports/virtio_ivshmem_fault.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"
#include "cellink/transports/virtio_ivshmem_queue.hpp"
#include "cellink/transports/virtq.hpp"
#include "cellink/transports/virtq_device.hpp"

namespace cellink::transports {

// What the device is: set once by attach().
struct VirtioIvshmemSpec {
  std::uint32_t device_id = 0;        // virtio device id, e.g. virtio_device_id::kConsole
  std::uint64_t device_features = 0;  // the device's own bits; the transport adds VERSION_1,
                                      // ACCESS_PLATFORM, ORDER_PLATFORM and EVENT_IDX
  std::uint16_t queue_count = 0;      // 1..MaxQueues
  std::uint16_t max_queue_size = 0;   // each queue's maximum: a power of two <= MaxQueueSize
  std::span<const std::byte> config;  // the initial device config (copied)
};

// What one service() call did, as bit flags.
struct VirtioIvshmemEvents {
  static constexpr std::uint32_t kReady = 1;     // a handshake finished: our state is READY
  static constexpr std::uint32_t kReset = 2;     // queues and status forgotten: drop held chains
  static constexpr std::uint32_t kDriverOk = 4;  // running() became true: queue() works
  static constexpr std::uint32_t kStatusChanged = 8;  // device_status changed
  static constexpr std::uint32_t kBroken = 16;        // a fault was latched (see fault())
  static constexpr std::uint32_t kMorePending = 32;   // write budget used up: call service() again

  std::uint32_t bits = 0;
  [[nodiscard]] bool has(std::uint32_t flag) const noexcept { return (bits & flag) != 0; }
  void set(std::uint32_t flag) noexcept { bits |= flag; }
};

// The feature bits the transport itself offers.
inline constexpr std::uint64_t kVirtioIvshmemTransportFeatures =
    feature_bit(virtio_feature::kVersion1) | feature_bit(virtio_feature::kAccessPlatform) |
    feature_bit(virtio_feature::kOrderPlatform) | feature_bit(virtio_feature::kRingEventIdx);
// The bits a front end must accept.
inline constexpr std::uint64_t kVirtioIvshmemRequiredFeatures =
    feature_bit(virtio_feature::kVersion1) | feature_bit(virtio_feature::kAccessPlatform);

// MaxQueues, MaxQueueSize and MaxSegments size the private state (no heap):
// one VirtqDevice<MaxQueueSize, MaxSegments> per queue.
template <std::uint16_t MaxQueues, std::uint32_t MaxQueueSize = 256, std::size_t MaxSegments = 16>
class VirtioIvshmemDevice {
  static_assert(MaxQueues >= 1, "a virtio device has at least one queue");

 public:
  using Queue = VirtqDevice<MaxQueueSize, MaxSegments>;
  using QueueState = VirtioIvshmemQueue<MaxQueueSize, MaxSegments>;
  using Events = VirtioIvshmemEvents;
  enum class Phase : std::uint8_t { detached, waiting, ready };

  // Register writes applied per service() call; a front end that keeps
  // writing cannot hold the caller inside service() (kMorePending).
  static constexpr unsigned kWritesPerService = 64;

  VirtioIvshmemDevice() noexcept = default;
  VirtioIvshmemDevice(const VirtioIvshmemDevice&) = delete;
  VirtioIvshmemDevice& operator=(const VirtioIvshmemDevice&) = delete;

  // Checks the link and the spec, writes our state 0 and starts waiting for
  // the front end's state 0; call service() next (and after every doorbell
  // on vector 0). On an error nothing is written and the object stays
  // detached.
  [[nodiscard]] VirtioIvshmemError attach(ivshmem::Device& link,
                                          const VirtioIvshmemSpec& spec) noexcept {
    const VirtioIvshmemError error = check(link, spec);
    if (error != VirtioIvshmemError::ok) return error;
    link_ = &link;
    section_ = link.rw_section();
    header_ = reinterpret_cast<VirtioIvshmemHeader*>(section_.data());
    front_ = 1 - link.id();
    vectors_ = link.vector_count();
    device_id_ = spec.device_id;
    offered_ = spec.device_features | kVirtioIvshmemTransportFeatures;
    queue_count_ = spec.queue_count;
    max_queue_size_ = spec.max_queue_size;
    config_size_ = static_cast<std::uint32_t>(spec.config.size());
    for (std::uint32_t i = 0; i < config_size_; ++i) config_[i] = spec.config[i];
    config_generation_ = 0;
    forget_device();
    enter_waiting();
    return VirtioIvshmemError::ok;
  }

  // The one entry point after a doorbell on vector 0 (and when polling): runs
  // the handshake, notices the front end leaving READY, applies pending
  // register writes and latches ring faults the queues found.
  [[nodiscard]] Events service() noexcept {
    Events events;
    if (phase_ == Phase::detached) return events;
    const std::uint32_t front = link_->peer_state(front_);
    if (phase_ == Phase::ready) {
      if (front == virtio_peer_state::kReady) {
        front_seen_ready_ = true;
      } else if (front_seen_ready_) {
        // The front end left READY: forget everything, start over.
        forget_device();
        enter_waiting();
        events.set(Events::kReset);
      }
    }
    if (phase_ == Phase::waiting) {
      if (front != virtio_peer_state::kReset) return events;
      publish_header();
      phase_ = Phase::ready;
      front_seen_ready_ = false;
      events.set(Events::kReady);
      return events;
    }
    // The front end writes registers only once it is READY (spec step 3).
    if (front != virtio_peer_state::kReady) return events;
    apply_writes(events);
    check_rings(events);
    return events;
  }

  // DRIVER_OK and FEATURES_OK are set, FAILED is not, and nothing is broken.
  [[nodiscard]] bool running() const noexcept {
    return phase_ == Phase::ready && !broken_ && (status_ & virtio_status::kDriverOk) != 0 &&
           (status_ & virtio_status::kFeaturesOk) != 0 && (status_ & virtio_status::kFailed) == 0;
  }

  // The VirtqDevice of queue `index` while running() and the queue is
  // enabled; nullptr otherwise. Valid until the next service() that reports
  // kReset or kBroken or leaves running().
  [[nodiscard]] Queue* queue(std::uint16_t index) noexcept {
    return running() && index < queue_count_ && queues_[index].enabled() ? &queues_[index].ring()
                                                                         : nullptr;
  }

  // After the caller pushed used entries on `index`: publishes them and, if
  // the front end wants an interrupt (EVENT_IDX rule or no NO_INTERRUPT
  // flag), sets queue_event and rings the queue's driver vector. Returns
  // true when it rang. A ring fault found here is latched.
  bool notify(std::uint16_t index) noexcept {
    Queue* const ring = queue(index);
    if (ring == nullptr) return false;
    const bool wanted = ring->publish();
    Events events;
    check_rings(events);
    if (!wanted) return false;
    virtq_store(header_->queue_event, std::uint8_t{1}, std::memory_order_relaxed);
    // F-QE: queue_event (and used.idx, published by R2) before the doorbell;
    // pairs with the front end's clear of queue_event and its full barrier
    // before it collects the used rings (spec, "Notification").
    std::atomic_thread_fence(std::memory_order_seq_cst);
    (void)link_->doorbell(front_, queues_[index].driver_vector());
    return true;
  }

  // Before the caller sleeps on queue `index`'s doorbell: asks the front end
  // to ring on its next buffer (both suppression kinds, see
  // VirtqDevice::arm_notify()). Returns false when buffers are already
  // waiting ("do not sleep, pop()"); true when it is safe to sleep, also when
  // the queue is not running (service() will say when it does).
  [[nodiscard]] bool arm(std::uint16_t index) noexcept {
    Events events;
    check_rings(events);
    Queue* const ring = queue(index);
    return ring == nullptr || ring->arm_notify();
  }

  // True when a register write is pending, i.e. service() has work even
  // without a doorbell (check it before sleeping on vector 0).
  [[nodiscard]] bool write_pending() const noexcept {
    if (phase_ != Phase::ready) return false;
    // Relaxed: only compared; service() re-reads it with A-W.
    return virtq_load(header_->write_transaction, std::memory_order_relaxed) != 0;
  }

  // Replaces the device config (same size as at attach()) and tells the
  // front end: config_generation odd, the bytes, config_generation even,
  // config_event = 1, doorbell on its vector 0. Before the handshake it only
  // keeps the bytes for the header.
  [[nodiscard]] VirtioIvshmemError update_config(std::span<const std::byte> config) noexcept {
    if (phase_ == Phase::detached) return VirtioIvshmemError::not_attached;
    if (config.size() != config_size_) return VirtioIvshmemError::config_size_mismatch;
    for (std::uint32_t i = 0; i < config_size_; ++i) config_[i] = config[i];
    if (phase_ != Phase::ready) return VirtioIvshmemError::ok;
    write_config();
    raise_config_event();
    return VirtioIvshmemError::ok;
  }

  // Our state 0: the front end sees the back end leave and marks its device
  // broken. attach() starts again.
  void stop() noexcept {
    if (phase_ == Phase::detached) return;
    forget_device();
    link_->set_state(virtio_peer_state::kReset);
    phase_ = Phase::detached;
  }

  [[nodiscard]] bool broken() const noexcept { return broken_; }
  [[nodiscard]] const VirtioIvshmemFault& fault() const noexcept { return fault_; }
  [[nodiscard]] Phase phase() const noexcept { return phase_; }
  [[nodiscard]] std::uint32_t device_id() const noexcept { return device_id_; }
  [[nodiscard]] std::uint64_t offered_features() const noexcept { return offered_; }
  // The features accepted with FEATURES_OK (0 before).
  [[nodiscard]] std::uint64_t negotiated_features() const noexcept { return negotiated_; }
  [[nodiscard]] bool event_idx() const noexcept {
    return (negotiated_ & feature_bit(virtio_feature::kRingEventIdx)) != 0;
  }
  // device_status as we last wrote it (our private copy).
  [[nodiscard]] std::uint32_t device_status() const noexcept { return status_; }
  // Where enabled queue `index`'s areas lie (validated at queue_enable),
  // running or not; nullptr when it is not enabled. For diagnostics and tests.
  [[nodiscard]] const VirtqLayout* enabled_layout(std::uint16_t index) const noexcept {
    return phase_ == Phase::ready && index < queue_count_ && queues_[index].enabled()
               ? &queues_[index].ring().layout()
               : nullptr;
  }
  // The back end's vector the front end rings for a queue.
  [[nodiscard]] std::uint32_t queue_vector() const noexcept { return vectors_ >= 2 ? 1 : 0; }

 private:
  static constexpr std::uint32_t kStatusOffset = offsetof(VirtioIvshmemHeader, device_status);

  [[nodiscard]] static VirtioIvshmemError check(ivshmem::Device& link,
                                                const VirtioIvshmemSpec& spec) noexcept {
    if (link.peer_count() != kVirtioIvshmemPeers) return VirtioIvshmemError::wrong_peer_count;
    if (link.id() >= kVirtioIvshmemPeers) return VirtioIvshmemError::bad_peer_id;
    if (link.vector_count() == 0) return VirtioIvshmemError::no_vectors;
    const std::span<std::byte> section = link.rw_section();
    if (section.size() < kVirtioIvshmemMinRwSection) {
      return VirtioIvshmemError::rw_section_too_small;
    }
    if (reinterpret_cast<std::uintptr_t>(section.data()) % kVirtqDescAlign != 0) {
      return VirtioIvshmemError::misaligned_section;
    }
    if (spec.device_id == 0 || spec.device_id > 0x3fff) return VirtioIvshmemError::bad_device_id;
    if (spec.queue_count == 0 || spec.queue_count > MaxQueues) {
      return VirtioIvshmemError::bad_queue_count;
    }
    if (!VirtqLayout::valid_queue_size(spec.max_queue_size) || spec.max_queue_size > MaxQueueSize) {
      return VirtioIvshmemError::bad_max_queue_size;
    }
    if (spec.config.size() > kVirtioIvshmemMaxConfigSize) {
      return VirtioIvshmemError::config_too_large;
    }
    return VirtioIvshmemError::ok;
  }

  // Our state 0; the handshake waits in service() for the front end's 0.
  void enter_waiting() noexcept {
    phase_ = Phase::waiting;
    front_seen_ready_ = false;
    link_->set_state(virtio_peer_state::kReset);
  }

  // A device reset: every private copy back to its initial value.
  void forget_device() noexcept {
    for (std::uint16_t i = 0; i < MaxQueues; ++i) queues_[i].reset(i, max_queue_size_);
    device_features_sel_ = 0;
    driver_features_ = 0;
    driver_features_sel_ = 0;
    queue_sel_ = 0;
    negotiated_ = 0;
    status_ = 0;
    broken_ = false;
    fault_ = VirtioIvshmemFault{};
  }

  // Spec step 2: the whole header page, then our state READY.
  void publish_header() noexcept {
    store(header_->revision, kVirtioIvshmemRevision);
    store(header_->size, kVirtioIvshmemHeaderSize + config_size_);
    store(header_->write_transaction, std::uint32_t{0});
    store(header_->device_features_sel, std::uint32_t{0});
    store(header_->driver_features, std::uint32_t{0});
    store(header_->driver_features_sel, std::uint32_t{0});
    store(header_->queue_sel, std::uint32_t{0});
    store(header_->config_event, std::uint8_t{0});
    store(header_->queue_event, std::uint8_t{0});
    store(header_->reserved[0], std::uint8_t{0});
    store(header_->reserved[1], std::uint8_t{0});
    store(header_->device_status, std::uint32_t{0});
    fill_device_features_window();
    fill_queue_window();
    write_config();
    for (std::uint64_t at = kVirtioIvshmemConfigOffset + config_size_;
         at < kVirtioIvshmemPoolOffset; ++at) {
      store(byte_at(at), std::uint8_t{0});
    }
    // R-H: the header before our READY; pairs with the front end's read of
    // our state (acquire) before it reads the header (spec step 3). Device
    // backends release-store the state too; this fence does not rely on it.
    std::atomic_thread_fence(std::memory_order_release);
    link_->set_state(virtio_peer_state::kReady);
  }

  // Applies write_transaction until none is pending (or the budget is used).
  void apply_writes(Events& events) noexcept {
    for (unsigned i = 0; i < kWritesPerService; ++i) {
      // A-W: the field's new value before its offset; pairs with the front
      // end's write barrier between the two stores (spec "A register
      // write", step 3).
      const std::uint32_t offset =
          virtq_load(header_->write_transaction, std::memory_order_acquire);
      if (offset == 0) return;
      apply_write(offset, events);
      // R-W: the windows and device_status we wrote before write_transaction
      // reads 0; pairs with the front end's read barrier after it sees 0 and
      // before it reads a window field (spec "A register write").
      virtq_store(header_->write_transaction, std::uint32_t{0}, std::memory_order_release);
    }
    if (virtq_load(header_->write_transaction, std::memory_order_relaxed) != 0) {
      events.set(Events::kMorePending);
    }
  }

  // One register write: the field at `offset`, read once with its size.
  // Relaxed loads: ordered after A-W.
  void apply_write(std::uint32_t offset, Events& events) noexcept {
    if (broken_) {
      // Only a reset gets through while broken. Any other status write is
      // undone, so that the front end reads DEVICE_NEEDS_RESET back.
      if (offset != kStatusOffset) return;
      if (load(header_->device_status) == 0) return reset_device(events);
      store(header_->device_status, status_);
      return;
    }
    switch (offset) {
      case offsetof(VirtioIvshmemHeader, device_features_sel): {
        const std::uint32_t sel = load(header_->device_features_sel);
        if (sel > 1) return select_fault("device_features_sel", offset, sel, 1, events);
        device_features_sel_ = sel;
        fill_device_features_window();
        return;
      }
      case offsetof(VirtioIvshmemHeader, driver_features): {
        const std::uint64_t bits = load(header_->driver_features);
        const unsigned shift = 32 * driver_features_sel_;
        driver_features_ =
            (driver_features_ & ~(std::uint64_t{0xffffffff} << shift)) | (bits << shift);
        return;
      }
      case offsetof(VirtioIvshmemHeader, driver_features_sel): {
        const std::uint32_t sel = load(header_->driver_features_sel);
        if (sel > 1) return select_fault("driver_features_sel", offset, sel, 1, events);
        driver_features_sel_ = sel;
        return;
      }
      case offsetof(VirtioIvshmemHeader, queue_sel): {
        const std::uint32_t sel = load(header_->queue_sel);
        if (sel >= queue_count_) {
          return select_fault("queue_sel", offset, sel, queue_count_ - 1U, events);
        }
        queue_sel_ = static_cast<std::uint16_t>(sel);
        fill_queue_window();
        return;
      }
      case offsetof(VirtioIvshmemHeader, queue_size):
        return apply(queues_[queue_sel_].write_size(load(header_->queue_size)), events);
      case offsetof(VirtioIvshmemHeader, queue_driver_vector):
        return apply(
            queues_[queue_sel_].write_driver_vector(load(header_->queue_driver_vector), vectors_),
            events);
      case offsetof(VirtioIvshmemHeader, queue_enable):
        return apply(
            queues_[queue_sel_].write_enable(load(header_->queue_enable), section_, event_idx()),
            events);
      case offsetof(VirtioIvshmemHeader, queue_desc):
        return apply(queues_[queue_sel_].write_area(offset, load(header_->queue_desc)), events);
      case offsetof(VirtioIvshmemHeader, queue_driver):
        return apply(queues_[queue_sel_].write_area(offset, load(header_->queue_driver)), events);
      case offsetof(VirtioIvshmemHeader, queue_device):
        return apply(queues_[queue_sel_].write_area(offset, load(header_->queue_device)), events);
      case kStatusOffset: return write_status(load(header_->device_status), events);
      default:
        // Unknown, read-only or misaligned (e.g. inside queue_desc): the
        // accepted offsets run from device_features_sel to device_status.
        return fail(
            VirtioIvshmemFault::header(
                VirtioIvshmemError::bad_write_offset, "write_transaction",
                offsetof(VirtioIvshmemHeader, write_transaction), VirtioIvshmemFault::kNoQueue,
                offset, offsetof(VirtioIvshmemHeader, device_features_sel), kStatusOffset),
            events);
    }
  }

  void select_fault(const char* field, std::uint32_t offset, std::uint32_t value, std::uint32_t max,
                    Events& events) noexcept {
    fail(VirtioIvshmemFault::header(VirtioIvshmemError::select_out_of_range, field, offset,
                                    VirtioIvshmemFault::kNoQueue, value, 0, max),
         events);
  }

  // Latches the fault a queue write returned, if any.
  void apply(const VirtioIvshmemFault& fault, Events& events) noexcept {
    if (fault.error != VirtioIvshmemError::ok) fail(fault, events);
  }

  void write_status(std::uint32_t value, Events& events) noexcept {
    if (value == 0) return reset_device(events);
    const bool was_running = running();
    const std::uint32_t old_status = status_;
    // DEVICE_NEEDS_RESET is ours to set, never the front end's.
    std::uint32_t status = value & ~virtio_status::kDeviceNeedsReset;
    if ((status & virtio_status::kFeaturesOk) == 0) {
      negotiated_ = 0;
    } else if ((old_status & virtio_status::kFeaturesOk) == 0) {
      // FEATURES_OK: accepted must be a subset of offered and contain
      // VERSION_1 and ACCESS_PLATFORM; else it stays clear (the front end
      // reads device_status back and gives up).
      const std::uint64_t accepted = driver_features_;
      if ((accepted & ~offered_) != 0 ||
          (accepted & kVirtioIvshmemRequiredFeatures) != kVirtioIvshmemRequiredFeatures) {
        status &= ~virtio_status::kFeaturesOk;
      } else {
        negotiated_ = accepted;
      }
    }
    status_ = status;
    store(header_->device_status, status_);
    if (status_ != old_status) events.set(Events::kStatusChanged);
    if (!was_running && running()) {
      // The queues were enabled before the mode was final: re-initialise
      // them in the negotiated one (no used entry exists before DRIVER_OK).
      for (std::uint16_t i = 0; i < queue_count_; ++i) {
        if (!queues_[i].enabled()) continue;
        const VirtqError error = queues_[i].restart(section_, event_idx());
        if (error != VirtqError::ok) {
          VirtioIvshmemFault fault = VirtioIvshmemFault::header(
              VirtioIvshmemError::bad_queue_areas, "device_status", kStatusOffset, i, value, 0, 0);
          fault.ring_error = error;
          return fail(fault, events);
        }
      }
      events.set(Events::kDriverOk);
    }
  }

  // device_status = 0: a virtio reset, also the way out of broken.
  void reset_device(Events& events) noexcept {
    const bool had_state = status_ != 0 || broken_;
    forget_device();
    store(header_->device_status, std::uint32_t{0});
    store(header_->device_features_sel, std::uint32_t{0});
    store(header_->driver_features_sel, std::uint32_t{0});
    store(header_->queue_sel, std::uint32_t{0});
    fill_device_features_window();
    fill_queue_window();
    events.set(Events::kReset);
    if (had_state) events.set(Events::kStatusChanged);
  }

  void fill_device_features_window() noexcept {
    store(header_->device_features,
          static_cast<std::uint32_t>(offered_ >> (32 * device_features_sel_)));
  }

  // The queue window shows the selected queue's private copy.
  void fill_queue_window() noexcept {
    const QueueState& q = queues_[queue_sel_];
    store(header_->queue_size, q.size());
    store(header_->queue_device_vector, static_cast<std::uint16_t>(queue_vector()));
    store(header_->queue_driver_vector, q.driver_vector());
    store(header_->queue_enable, static_cast<std::uint16_t>(q.enabled() ? 1 : 0));
    store(header_->queue_desc, q.desc());
    store(header_->queue_driver, q.driver());
    store(header_->queue_device, q.device());
  }

  // The device config, bracketed by config_generation odd/even.
  void write_config() noexcept {
    ++config_generation_;
    store(header_->config_generation, config_generation_);
    // C1: the odd generation before the config bytes; pairs with the front
    // end's read barrier between reading the config and re-reading
    // config_generation (its retry loop).
    std::atomic_thread_fence(std::memory_order_release);
    for (std::uint32_t i = 0; i < config_size_; ++i) {
      store(byte_at(kVirtioIvshmemConfigOffset + i), static_cast<std::uint8_t>(config_[i]));
    }
    ++config_generation_;
    // C2: the config bytes before the even generation; pairs with the front
    // end's read barrier between reading config_generation and the config.
    virtq_store(header_->config_generation, config_generation_, std::memory_order_release);
  }

  void raise_config_event() noexcept {
    store(header_->config_event, std::uint8_t{1});
    // F-CE: config_event (and the config, device_status) before the
    // doorbell; pairs with the front end's clear of config_event and its
    // full barrier before it reads device_status and the config.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    (void)link_->doorbell(front_, 0);
  }

  // Latches ring faults the running queues found (pop() returned them).
  void check_rings(Events& events) noexcept {
    if (!running()) return;
    for (std::uint16_t i = 0; i < queue_count_; ++i) {
      const QueueState& q = queues_[i];
      if (!q.enabled() || !is_peer_fault(q.ring().error())) continue;
      const VirtqFault& ring = q.ring().fault();
      VirtioIvshmemFault fault;
      fault.error = VirtioIvshmemError::ring_fault;
      fault.field = ring.field;
      fault.queue = i;
      fault.position = ring.position;
      fault.value = ring.value;
      fault.expected_min = ring.expected_min;
      fault.expected_max = ring.expected_max;
      fault.ring_error = ring.error;
      return fail(fault, events);
    }
  }

  // Latches the first fault: DEVICE_NEEDS_RESET, config_event, vector 0.
  void fail(const VirtioIvshmemFault& fault, Events& events) noexcept {
    if (broken_) return;
    broken_ = true;
    fault_ = fault;
    status_ |= virtio_status::kDeviceNeedsReset;
    store(header_->device_status, status_);
    raise_config_event();
    events.set(Events::kBroken);
    events.set(Events::kStatusChanged);
  }

  // Header fields are accessed one by one, in place, atomically (the front
  // end may write any of them at any time). Relaxed: each caller's barrier
  // (R-H, R-W, C1/C2, F-CE, F-QE) orders them.
  template <typename T>
  static void store(T& field, T value) noexcept {
    virtq_store(field, value, std::memory_order_relaxed);
  }
  template <typename T>
  [[nodiscard]] static T load(T& field) noexcept {
    return virtq_load(field, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint8_t& byte_at(std::uint64_t offset) const noexcept {
    return *reinterpret_cast<std::uint8_t*>(section_.data() + offset);
  }

  ivshmem::Device* link_ = nullptr;
  std::span<std::byte> section_;
  VirtioIvshmemHeader* header_ = nullptr;
  Phase phase_ = Phase::detached;
  bool front_seen_ready_ = false;  // the front end was READY since our last handshake
  std::uint32_t front_ = 0;        // the front end's peer id
  std::uint32_t vectors_ = 0;
  std::uint32_t device_id_ = 0;
  std::uint64_t offered_ = 0;
  std::uint16_t queue_count_ = 0;
  std::uint16_t max_queue_size_ = 0;
  std::uint32_t config_size_ = 0;
  std::uint32_t config_generation_ = 0;
  std::array<std::byte, kVirtioIvshmemMaxConfigSize> config_{};
  // Private copies of the register file: never read back from shared memory.
  std::uint32_t device_features_sel_ = 0;
  std::uint64_t driver_features_ = 0;  // as written, both halves
  std::uint32_t driver_features_sel_ = 0;
  std::uint16_t queue_sel_ = 0;
  std::uint64_t negotiated_ = 0;  // accepted with FEATURES_OK
  std::uint32_t status_ = 0;
  bool broken_ = false;
  VirtioIvshmemFault fault_;
  std::array<QueueState, MaxQueues> queues_{};
};

}  // namespace cellink::transports
