// VirtioIvshmemDriver: the front end (virtio driver side) of virtio over
// ivshmem, as an inmate uses it. Spec: docs/virtio-over-ivshmem.md; the
// register window is VirtioIvshmemHeader (virtio_ivshmem_format.hpp), the
// queues are VirtqDriver (virtq_driver.hpp).
//
//   probe():  back end READY?  -> own state READY -> device_status 0,
//             ACKNOWLEDGE, DRIVER -> features (VERSION_1, ACCESS_PLATFORM,
//             ORDER_PLATFORM, EVENT_IDX if offered and wanted, the caller's
//             device bits) -> FEATURES_OK, read back -> each queue: select,
//             size, vector, areas, enable -> DRIVER_OK, read back.
//   running:  queue(q).add(...), notify(q), handle_events(), read_config().
//   reset:    the back end leaves READY -> own state 0, every queue
//             forgotten; when it is READY again the caller probes again.
//
// Every register write follows "A register write": wait until
// write_transaction is 0, store the field, store its offset into
// write_transaction (release), ring the back end's vector 0, and wait for the
// back end to clear it again. A wait gives up when the back end leaves READY,
// after VirtioWait::max_polls polls, or when the caller's still_waiting()
// says so (a deadline).
//
// What it writes in shared memory: the writable header fields, write_
// transaction, the config_event / queue_event clears, and, through
// VirtqDriver, the descriptor tables and avail rings it placed in the pool
// [kVirtioIvshmemPoolOffset, R). What it reads (all hostile, each read once
// and checked): revision, size, the feature and queue windows,
// device_status, config_generation and the device config, the used rings.
// The first bad value latches a fault with a diagnostic (fault()); the
// device is then unusable until probe() succeeds again.
//
// Memory: a bump allocator hands out the pool, for the vrings first and then
// for the caller's fixed buffers (allocate()). A probe() starts the pool
// again, so buffers from an earlier probe are invalid after it.
//
// Threading: one thread at a time (an inmate's main loop); nothing inside
// locks, no interrupt handler may call in. The back end runs concurrently in
// another cell, process or thread.
//
// Ownership: the ivshmem::Device must outlive the driver, and its R/W section
// must stay mapped at the same address.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/device.hpp"
#include "cellink/transports/virtio_ivshmem_driver_status.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"
#include "cellink/transports/virtq.hpp"
#include "cellink/transports/virtq_driver.hpp"

namespace cellink::transports {

// How long to wait for the back end. still_waiting() is called after each
// poll that found it busy; returning false gives up at once (a deadline).
// Without it, max_polls alone bounds the wait.
struct VirtioWait {
  std::uint32_t max_polls = 1U << 22;
  bool (*still_waiting)(void* context) noexcept = nullptr;
  void* context = nullptr;
};

inline constexpr std::uint32_t kVirtioAutoVector = 0xffffffffU;

struct VirtioDriverOptions {
  std::uint16_t queue_count = 1;
  // Entries wanted per queue; the driver takes the largest power of two not
  // above this, the back end's maximum and MaxQueueSize.
  std::uint32_t queue_size = 64;
  // Device-specific feature bits (0..23) to accept when offered.
  std::uint64_t device_features = 0;
  // Accept VIRTIO_F_EVENT_IDX when offered; otherwise the flags suppress.
  bool event_idx = true;
  // The vector the back end rings us on for used buffers. Auto: 1 when the
  // link has two or more vectors, else 0.
  std::uint32_t driver_vector = kVirtioAutoVector;
  VirtioWait wait{};
};

// What handle_events() found.
struct VirtioDriverEvents {
  bool queues = false;  // queue_event was set: collect from the queues
  bool config = false;  // config_event was set: re-read the device config
  bool reset = false;   // the device is gone or broken (see status()/fault())
};

template <std::uint32_t MaxQueues = 2, std::uint32_t MaxQueueSize = 256>
class VirtioIvshmemDriver {
  static_assert(MaxQueues >= 1 && MaxQueues <= 0xffff, "MaxQueues must be 1..65535");

 public:
  using Queue = VirtqDriver<MaxQueueSize>;

  explicit VirtioIvshmemDriver(ivshmem::Device& device) noexcept : device_(device) {}
  VirtioIvshmemDriver(const VirtioIvshmemDriver&) = delete;
  VirtioIvshmemDriver& operator=(const VirtioIvshmemDriver&) = delete;

  // Whether the back end's state-table entry says READY (probe() needs it).
  [[nodiscard]] bool backend_ready() const noexcept {
    return device_.peer_count() == kVirtioIvshmemPeers && device_.id() < kVirtioIvshmemPeers &&
           device_.peer_state(partner()) == virtio_peer_state::kReady;
  }

  // Brings the device up to DRIVER_OK (see the picture above). From any
  // state, always starting over: a running device is reset first
  // (device_status 0), and a back end that is not READY drops our state to
  // 0 too (it may have left unnoticed and be waiting for that). On ok the
  // queues are set up and empty; the caller allocates its buffers and adds
  // them. On failure, status() and fault() say why; a latched fault leaves
  // FAILED in device_status.
  [[nodiscard]] VirtioDriverStatus probe(const VirtioDriverOptions& options) noexcept {
    phase_ = Phase::idle;
    queue_count_ = 0;
    wait_ = options.wait;
    const std::span<std::byte> section = device_.rw_section();
    if (device_.peer_count() != kVirtioIvshmemPeers || device_.id() >= kVirtioIvshmemPeers) {
      return refuse(VirtioDriverStatus::not_two_peers, "peer_count", 0, device_.peer_count(),
                    kVirtioIvshmemPeers, kVirtioIvshmemPeers);
    }
    if (section.size() < kVirtioIvshmemMinRwSection) {
      return refuse(VirtioDriverStatus::section_too_small, "rw_section", 0, section.size(),
                    kVirtioIvshmemMinRwSection, ~std::uint64_t{0});
    }
    if (options.queue_count == 0 || options.queue_count > MaxQueues) {
      return refuse(VirtioDriverStatus::bad_queue_count, "queue_count", 0, options.queue_count, 1,
                    MaxQueues);
    }
    const std::uint32_t vectors = device_.vector_count();
    const std::uint32_t driver_vector = options.driver_vector != kVirtioAutoVector
                                            ? options.driver_vector
                                            : (vectors >= 2 ? 1U : 0U);
    if (driver_vector >= vectors) {
      return refuse(VirtioDriverStatus::bad_driver_vector, "driver_vector", 0, driver_vector, 0,
                    vectors == 0 ? 0 : vectors - 1);
    }
    if (!backend_ready()) {
      // A back end that left before we noticed waits for our state 0.
      drop_own_state();
      return refuse(VirtioDriverStatus::backend_not_ready, "peer state", partner(),
                    device_.peer_state(partner()), virtio_peer_state::kReady,
                    virtio_peer_state::kReady);
    }
    section_ = section;
    header_ = reinterpret_cast<VirtioIvshmemHeader*>(section.data());
    pool_next_ = kVirtioIvshmemPoolOffset;
    status_bits_ = 0;
    features_ = 0;
    phase_ = Phase::probing;
    // Step 3 of the handshake: our state is READY before the first register
    // write. set_state() publishes it with its own release.
    if (!own_ready_) {
      device_.set_state(virtio_peer_state::kReady);
      own_ready_ = true;
    }

    VirtioDriverStatus status = write_status(0);
    if (status == VirtioDriverStatus::ok) status = write_status(virtio_status::kAcknowledge);
    if (status == VirtioDriverStatus::ok) status = write_status(virtio_status::kDriver);
    if (status == VirtioDriverStatus::ok) status = check_header();
    if (status == VirtioDriverStatus::ok) status = negotiate(options);
    for (std::uint16_t q = 0; status == VirtioDriverStatus::ok && q < options.queue_count; ++q) {
      status = setup_queue(q, options.queue_size, driver_vector);
    }
    if (status == VirtioDriverStatus::ok) status = write_status(virtio_status::kDriverOk);
    if (status == VirtioDriverStatus::ok) {
      const std::uint32_t device_status = read_header(header_->device_status);
      if ((device_status & virtio_status::kDeviceNeedsReset) != 0 ||
          (device_status & virtio_status::kDriverOk) == 0) {
        status = fail(VirtioDriverStatus::device_needs_reset, "device_status",
                      offsetof(VirtioIvshmemHeader, device_status), device_status, status_bits_,
                      status_bits_);
      }
    }
    if (status != VirtioDriverStatus::ok) {
      if (phase_ == Phase::probing) give_up();
      return status;
    }
    queue_count_ = options.queue_count;
    phase_ = Phase::running;
    fault_ = VirtioDriverFault{VirtioDriverStatus::ok};
    return VirtioDriverStatus::ok;
  }

  // Drops our state to RESET and forgets the device; the back end resets it
  // too. A later probe() starts again.
  void reset() noexcept {
    phase_ = Phase::idle;
    queue_count_ = 0;
    drop_own_state();
    fault_ = VirtioDriverFault{};
  }

  // The front-end side of the events, after a doorbell or when polling:
  // notices a back end that left READY (own state 0, reset = true), clears
  // queue_event and config_event, and checks the queues for a latched fault.
  // Whatever it returns, the caller then collects from the queues.
  [[nodiscard]] VirtioDriverEvents handle_events() noexcept {
    VirtioDriverEvents events;
    if (phase_ != Phase::running) {
      events.reset = phase_ == Phase::broken;
      return events;
    }
    if (!check_backend()) {
      events.reset = true;
      return events;
    }
    // Relaxed loads and clears: queue_event is a hint; the ring data is
    // ordered by the used.idx acquire (A2) in collect().
    if (load(header_->queue_event, std::memory_order_relaxed) != 0) {
      store(header_->queue_event, std::uint8_t{0}, std::memory_order_relaxed);
      events.queues = true;
    }
    if (load(header_->config_event, std::memory_order_relaxed) != 0) {
      store(header_->config_event, std::uint8_t{0}, std::memory_order_relaxed);
      events.config = true;
    }
    // E1: the clears are visible before we look at the rings and the
    // status; pairs with the full barrier the back end executes between
    // publishing (used.idx or device_status) and setting the event byte, so
    // an event raised after our clear is either seen now or raised again.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (events.config) {
      const std::uint32_t device_status = load(header_->device_status, std::memory_order_relaxed);
      if ((device_status & virtio_status::kDeviceNeedsReset) != 0) {
        (void)fail(VirtioDriverStatus::device_needs_reset, "device_status",
                   offsetof(VirtioIvshmemHeader, device_status), device_status, status_bits_,
                   status_bits_);
        events.reset = true;
        return events;
      }
    }
    for (std::uint16_t q = 0; q < queue_count_; ++q) {
      if (check_queue(q) != VirtioDriverStatus::ok) {
        events.reset = true;
        break;
      }
    }
    return events;
  }

  // Publishes the chains added to queue q and rings the queue's
  // queue_device_vector when the device asked for it (VirtqDriver::publish:
  // the EVENT_IDX rule or the NO_NOTIFY flag).
  [[nodiscard]] VirtioDriverStatus notify(std::uint16_t q) noexcept {
    if (phase_ != Phase::running) return status();
    if (q >= queue_count_) return VirtioDriverStatus::no_such_queue;
    if (!check_backend()) return VirtioDriverStatus::backend_left;
    if (queues_[q].publish()) {
      // Device::doorbell() makes our ring stores visible before the interrupt.
      (void)device_.doorbell(partner(), device_vectors_[q]);
      ++doorbells_;
    }
    return check_queue(q);
  }

  // Copies out.size() bytes of the device config from `offset` (relative to
  // the config's start), retrying while config_generation is odd or moved.
  [[nodiscard]] VirtioDriverStatus read_config(std::uint32_t offset,
                                               std::span<std::byte> out) noexcept {
    if (phase_ != Phase::running) return status();
    if (offset > config_size_ || out.size() > config_size_ - offset) {
      return VirtioDriverStatus::config_out_of_range;
    }
    auto* config = reinterpret_cast<std::uint8_t*>(section_.data()) + kVirtioIvshmemConfigOffset;
    for (std::uint32_t poll = 0;; ++poll) {
      // C1: the config bytes are read after an even generation; pairs with
      // the back end's release store of the even generation that ends a
      // rewrite.
      const std::uint32_t before = load(header_->config_generation, std::memory_order_acquire);
      if ((before & 1U) == 0) {
        for (std::size_t i = 0; i < out.size(); ++i) {
          // Relaxed: bracketed by C1 and C2.
          out[i] = std::byte{load(config[offset + i], std::memory_order_relaxed)};
        }
        // C2: the config bytes are read before the generation is read
        // again; pairs with the back end's barrier between making the
        // generation odd and rewriting the config.
        std::atomic_thread_fence(std::memory_order_acquire);
        const std::uint32_t after = load(header_->config_generation, std::memory_order_relaxed);
        if (after == before) return VirtioDriverStatus::ok;
      }
      if (!check_backend()) return VirtioDriverStatus::backend_left;
      if (poll >= wait_.max_polls ||
          (wait_.still_waiting != nullptr && !wait_.still_waiting(wait_.context))) {
        return fail(VirtioDriverStatus::config_unstable, "config_generation",
                    offsetof(VirtioIvshmemHeader, config_generation), before, 0, 0);
      }
    }
  }

  // A fixed buffer of `size` bytes from the pool, at a multiple of `align`
  // (a power of two); its R/W offset, or 0 when the pool is exhausted or the
  // device is not running. Valid until the next probe().
  [[nodiscard]] std::uint64_t allocate(std::uint64_t size, std::uint64_t align = 16) noexcept {
    if (phase_ != Phase::running || align == 0 || (align & (align - 1)) != 0) return 0;
    return bump(size, align);
  }
  // The bytes of a buffer in the R/W section; empty when it leaves the pool.
  [[nodiscard]] std::span<std::byte> buffer(std::uint64_t offset, std::uint64_t size) noexcept {
    if (offset < kVirtioIvshmemPoolOffset || offset > section_.size() ||
        size > section_.size() - offset) {
      return {};
    }
    return section_.subspan(offset, size);
  }
  // Pool bytes not handed out yet.
  [[nodiscard]] std::uint64_t pool_left() const noexcept {
    return phase_ == Phase::idle ? 0 : section_.size() - pool_next_;
  }

  // Precondition: q < queue_count().
  [[nodiscard]] Queue& queue(std::uint16_t q) noexcept { return queues_[q]; }
  [[nodiscard]] std::uint16_t queue_count() const noexcept { return queue_count_; }
  [[nodiscard]] bool running() const noexcept { return phase_ == Phase::running; }
  // The negotiated features.
  [[nodiscard]] std::uint64_t features() const noexcept { return features_; }
  [[nodiscard]] bool event_idx() const noexcept {
    return (features_ & feature_bit(virtio_feature::kRingEventIdx)) != 0;
  }
  [[nodiscard]] std::uint32_t config_size() const noexcept { return config_size_; }
  [[nodiscard]] std::uint64_t doorbells_rung() const noexcept { return doorbells_; }
  [[nodiscard]] VirtioDriverStatus status() const noexcept {
    return phase_ == Phase::running ? VirtioDriverStatus::ok : fault_.status;
  }
  [[nodiscard]] const VirtioDriverFault& fault() const noexcept { return fault_; }

 private:
  enum class Phase : std::uint8_t { idle, probing, running, broken };

  [[nodiscard]] std::uint32_t partner() const noexcept {
    return kVirtioIvshmemPeers - 1 - device_.id();
  }

  template <typename T>
  [[nodiscard]] static T load(T& field, std::memory_order order) noexcept {
    return std::atomic_ref<T>(field).load(order);
  }
  template <typename T>
  static void store(T& field, T value, std::memory_order order) noexcept {
    std::atomic_ref<T>(field).store(value, order);
  }
  // A window field, read after wait_idle() saw write_transaction at 0 (A1).
  template <typename T>
  [[nodiscard]] static T read_header(T& field) noexcept {
    return load(field, std::memory_order_relaxed);
  }

  // Waits until the back end has applied the last register write.
  [[nodiscard]] VirtioDriverStatus wait_idle() noexcept {
    for (std::uint32_t poll = 0;; ++poll) {
      // A1: a 0 makes visible the window the back end filled while applying
      // our write; pairs with its release store of 0 into write_transaction.
      const std::uint32_t pending = load(header_->write_transaction, std::memory_order_acquire);
      if (pending == 0) return VirtioDriverStatus::ok;
      if (!check_backend()) return VirtioDriverStatus::backend_left;
      if (poll >= wait_.max_polls ||
          (wait_.still_waiting != nullptr && !wait_.still_waiting(wait_.context))) {
        return fail(VirtioDriverStatus::timeout, "write_transaction",
                    offsetof(VirtioIvshmemHeader, write_transaction), pending, 0, 0);
      }
    }
  }

  // "A register write": the field, then its offset, then vector 0; and the
  // wait for the back end to apply it.
  template <typename T>
  [[nodiscard]] VirtioDriverStatus write_register(T& field, T value) noexcept {
    const auto offset = static_cast<std::uint32_t>(reinterpret_cast<std::byte*>(&field) -
                                                   reinterpret_cast<std::byte*>(header_));
    VirtioDriverStatus status = wait_idle();
    if (status != VirtioDriverStatus::ok) return status;
    // Relaxed: published by W1.
    store(field, value, std::memory_order_relaxed);
    // W1: the field's value is visible before its offset; pairs with the
    // back end's acquire load of write_transaction.
    store(header_->write_transaction, offset, std::memory_order_release);
    (void)device_.doorbell(partner(), 0);
    return wait_idle();
  }

  [[nodiscard]] VirtioDriverStatus write_status(std::uint32_t bits) noexcept {
    status_bits_ = bits == 0 ? 0 : status_bits_ | bits;
    return write_register(header_->device_status, status_bits_);
  }

  [[nodiscard]] VirtioDriverStatus check_header() noexcept {
    const std::uint32_t revision = read_header(header_->revision);
    if (revision != kVirtioIvshmemRevision) {
      return fail(VirtioDriverStatus::bad_revision, "revision", 0, revision, kVirtioIvshmemRevision,
                  kVirtioIvshmemRevision);
    }
    const std::uint32_t size = read_header(header_->size);
    if (size < kVirtioIvshmemHeaderSize || size > kVirtioIvshmemPoolOffset) {
      return fail(VirtioDriverStatus::bad_header_size, "size", offsetof(VirtioIvshmemHeader, size),
                  size, kVirtioIvshmemHeaderSize, kVirtioIvshmemPoolOffset);
    }
    config_size_ = size - kVirtioIvshmemHeaderSize;
    return VirtioDriverStatus::ok;
  }

  [[nodiscard]] VirtioDriverStatus negotiate(const VirtioDriverOptions& options) noexcept {
    std::uint64_t offered = 0;
    for (std::uint32_t select = 0; select < 2; ++select) {
      const VirtioDriverStatus status = write_register(header_->device_features_sel, select);
      if (status != VirtioDriverStatus::ok) return status;
      offered |= std::uint64_t{read_header(header_->device_features)} << (32 * select);
    }
    const std::uint64_t required =
        feature_bit(virtio_feature::kVersion1) | feature_bit(virtio_feature::kAccessPlatform);
    if ((offered & required) != required) {
      return fail(VirtioDriverStatus::missing_feature, "device_features",
                  offsetof(VirtioIvshmemHeader, device_features), offered, required,
                  ~std::uint64_t{0});
    }
    constexpr std::uint64_t kDeviceBits = (std::uint64_t{1} << 24) - 1;
    std::uint64_t wanted = required | feature_bit(virtio_feature::kOrderPlatform) |
                           (options.device_features & kDeviceBits);
    if (options.event_idx) wanted |= feature_bit(virtio_feature::kRingEventIdx);
    const std::uint64_t accepted = offered & wanted;
    for (std::uint32_t select = 0; select < 2; ++select) {
      VirtioDriverStatus status = write_register(header_->driver_features_sel, select);
      if (status == VirtioDriverStatus::ok) {
        status = write_register(header_->driver_features,
                                static_cast<std::uint32_t>(accepted >> (32 * select)));
      }
      if (status != VirtioDriverStatus::ok) return status;
    }
    const VirtioDriverStatus status = write_status(virtio_status::kFeaturesOk);
    if (status != VirtioDriverStatus::ok) return status;
    const std::uint32_t device_status = read_header(header_->device_status);
    if ((device_status & virtio_status::kFeaturesOk) == 0) {
      return fail(VirtioDriverStatus::features_refused, "device_status",
                  offsetof(VirtioIvshmemHeader, device_status), device_status, status_bits_,
                  status_bits_);
    }
    features_ = accepted;
    return VirtioDriverStatus::ok;
  }

  [[nodiscard]] VirtioDriverStatus setup_queue(std::uint16_t q, std::uint32_t wanted,
                                               std::uint32_t driver_vector) noexcept {
    VirtioDriverStatus status = write_register(header_->queue_sel, std::uint32_t{q});
    if (status != VirtioDriverStatus::ok) return status;
    const std::uint16_t maximum = read_header(header_->queue_size);
    const std::uint16_t device_vector = read_header(header_->queue_device_vector);
    if (maximum == 0) {
      return fail(VirtioDriverStatus::queue_unavailable, "queue_size", q, maximum, 1,
                  kVirtqMaxQueueSize);
    }
    if (device_vector >= device_.vector_count()) {
      return fail(VirtioDriverStatus::bad_device_vector, "queue_device_vector", q, device_vector, 0,
                  device_.vector_count() - 1);
    }
    std::uint32_t limit = wanted < maximum ? wanted : maximum;
    if (limit > MaxQueueSize) limit = MaxQueueSize;
    std::uint32_t size = 1;
    while (size * 2 <= limit) size *= 2;

    VirtqLayout layout;
    const std::uint64_t at = (pool_next_ + kVirtqDescAlign - 1) / kVirtqDescAlign * kVirtqDescAlign;
    if (VirtqLayout::compute(at, size, layout) != VirtqError::ok ||
        layout.end() > section_.size()) {
      return refuse(VirtioDriverStatus::pool_exhausted, "queue areas", q, layout.end(),
                    kVirtioIvshmemPoolOffset, section_.size());
    }
    Queue& queue = queues_[q];
    queue.set_event_idx(event_idx());
    // init() zeroes our areas; W1 of the next register write publishes them
    // before the back end can see queue_enable.
    const VirtqError error = queue.init(section_, layout);
    if (error != VirtqError::ok) {
      return refuse(VirtioDriverStatus::queue_setup_failed, describe(error), q,
                    static_cast<std::uint64_t>(error), 0, 0);
    }
    pool_next_ = layout.end();
    device_vectors_[q] = device_vector;
    status = write_register(header_->queue_size, static_cast<std::uint16_t>(size));
    if (status == VirtioDriverStatus::ok) {
      status =
          write_register(header_->queue_driver_vector, static_cast<std::uint16_t>(driver_vector));
    }
    if (status == VirtioDriverStatus::ok) status = write_register(header_->queue_desc, layout.desc);
    if (status == VirtioDriverStatus::ok)
      status = write_register(header_->queue_driver, layout.avail);
    if (status == VirtioDriverStatus::ok)
      status = write_register(header_->queue_device, layout.used);
    if (status == VirtioDriverStatus::ok) {
      status = write_register(header_->queue_enable, std::uint16_t{1});
    }
    return status;
  }

  [[nodiscard]] std::uint64_t bump(std::uint64_t size, std::uint64_t align) noexcept {
    const std::uint64_t at = (pool_next_ + align - 1) & ~(align - 1);
    if (at < pool_next_ || at > section_.size() || size > section_.size() - at) return 0;
    pool_next_ = at + size;
    return at;
  }

  // True while the back end is READY; otherwise resets our side.
  [[nodiscard]] bool check_backend() noexcept {
    const std::uint32_t state = device_.peer_state(partner());
    if (state == virtio_peer_state::kReady) return true;
    // Step 4 of the handshake: the device is gone; our state drops to 0 so
    // that the back end can set up a fresh one, which we probe again.
    phase_ = Phase::broken;
    queue_count_ = 0;
    drop_own_state();
    fault_ = VirtioDriverFault{
        VirtioDriverStatus::backend_left, "peer state", partner(), state, virtio_peer_state::kReady,
        virtio_peer_state::kReady};
    return false;
  }

  void drop_own_state() noexcept {
    if (!own_ready_) return;
    device_.set_state(virtio_peer_state::kReset);
    own_ready_ = false;
  }

  [[nodiscard]] VirtioDriverStatus check_queue(std::uint16_t q) noexcept {
    const VirtqError error = queues_[q].error();
    if (error == VirtqError::ok || !is_peer_fault(error)) return VirtioDriverStatus::ok;
    const VirtqFault& why = queues_[q].fault();
    return fail(VirtioDriverStatus::queue_fault, why.field, q, why.value, why.expected_min,
                why.expected_max);
  }

  // A fault of the back end: latched until the next successful probe().
  VirtioDriverStatus fail(VirtioDriverStatus status, const char* field, std::uint32_t where,
                          std::uint64_t value, std::uint64_t expected_min,
                          std::uint64_t expected_max) noexcept {
    fault_ = VirtioDriverFault{status, field, where, value, expected_min, expected_max};
    if (phase_ == Phase::probing || phase_ == Phase::running) give_up();
    return status;
  }
  // The caller's or the link's mistake: reported, the device left as it is.
  VirtioDriverStatus refuse(VirtioDriverStatus status, const char* field, std::uint32_t where,
                            std::uint64_t value, std::uint64_t expected_min,
                            std::uint64_t expected_max) noexcept {
    fault_ = VirtioDriverFault{status, field, where, value, expected_min, expected_max};
    return status;
  }

  // The virtio rule for a driver that gives up: FAILED in device_status,
  // written without waiting (the back end may be the reason we give up).
  void give_up() noexcept {
    phase_ = Phase::broken;
    queue_count_ = 0;
    if (load(header_->write_transaction, std::memory_order_acquire) == 0 &&
        device_.peer_state(partner()) == virtio_peer_state::kReady) {
      status_bits_ |= virtio_status::kFailed;
      store(header_->device_status, status_bits_, std::memory_order_relaxed);
      // W1, as in write_register().
      store(header_->write_transaction,
            static_cast<std::uint32_t>(offsetof(VirtioIvshmemHeader, device_status)),
            std::memory_order_release);
      (void)device_.doorbell(partner(), 0);
    }
  }

  ivshmem::Device& device_;
  std::span<std::byte> section_;
  VirtioIvshmemHeader* header_ = nullptr;
  Phase phase_ = Phase::idle;
  bool own_ready_ = false;  // what we last published as our state
  VirtioWait wait_{};
  std::uint32_t status_bits_ = 0;  // device_status as we last wrote it
  std::uint64_t features_ = 0;     // negotiated
  std::uint32_t config_size_ = 0;
  std::uint64_t pool_next_ = kVirtioIvshmemPoolOffset;
  std::uint16_t queue_count_ = 0;
  std::uint64_t doorbells_ = 0;
  VirtioDriverFault fault_{};
  std::array<std::uint16_t, MaxQueues> device_vectors_{};
  std::array<Queue, MaxQueues> queues_{};
};

}  // namespace cellink::transports
