// LoopbackDevice: an in-process ivshmem link, for tests and benchmarks that
// run every peer of a link in one process without a daemon.
//
// LoopbackLink plays the daemon's part for one link of N peers (2..16): it
// owns the shared memory (one memfd, laid out by ivshmem::Layout, zero-filled
// and mapped once, MAP_SHARED) and one LoopbackDevice per peer id. Each
// device is a WaitableDevice with HostDevice's event semantics:
//   - doorbell(peer, vector) adds 1 to that peer's eventfd for the vector;
//     wait() reads each fired eventfd once and reports one
//     DeviceEvent{doorbell, vector, count};
//   - set_state(v) release-stores v into this peer's state entry, then rings
//     vector 0 on every other attached peer;
//   - event_fd() is an epoll fd over the device's eventfds, readable whenever
//     wait() would return events.
//
// Membership, so that a test can make a peer "die" or "restart" in-process:
// every device starts attached. detach(peer) does what the daemon does when a
// peer's socket closes: the peer is absent, its state entry reads 0, and every
// other attached peer gets a peer_left event plus one vector-0 doorbell.
// attach(peer) makes it present again and gives the others peer_joined. The
// memory is never cleared (the daemon keeps its memfd too), so a re-attached
// peer finds its old output section. A detached device stands for a dead
// process: doorbells to it and from it go nowhere (peer_absent), and the
// interrupts it had not collected are dropped. Its memory stays mapped, so a
// test may still inspect it; the test should not drive a Link on it until it
// is attached again.
//
// Ownership: the LoopbackLink owns its devices and the memory; every device
// reference and span stays valid (and at the same address) until the
// LoopbackLink is destroyed. It is neither copyable nor movable.
//
// Threading: per device, wait() from one thread at a time. Everything else
// (doorbell(), set_state(), peer_state(), peer_present(), the accessors,
// LoopbackLink::attach() and detach()) may be called from any thread,
// concurrently with wait().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/layout.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "cellink/linux-uio/waitable_device.hpp"

namespace cellink::linux_uio {

class LoopbackLink;

class LoopbackDevice final : public WaitableDevice {
 public:
  ~LoopbackDevice() override = default;

  // ivshmem::Device
  [[nodiscard]] std::uint32_t id() const noexcept override { return id_; }
  [[nodiscard]] std::uint32_t peer_count() const noexcept override;
  [[nodiscard]] std::uint32_t vector_count() const noexcept override;
  // What the link's membership says now (for this peer too: false while
  // detached). False for an id outside the link.
  [[nodiscard]] bool peer_present(std::uint32_t peer) const noexcept override;
  [[nodiscard]] const ivshmem::Layout& layout() const noexcept override;
  [[nodiscard]] std::span<std::byte> rw_section() noexcept override;
  [[nodiscard]] std::span<std::byte> own_output_section() noexcept override;
  [[nodiscard]] std::span<const std::byte> output_section(
      std::uint32_t peer) const noexcept override;
  // no_such_peer / no_such_vector for ids out of range; peer_absent when the
  // target (or this device) is detached; failed if the eventfd write fails.
  [[nodiscard]] ivshmem::DoorbellStatus doorbell(std::uint32_t peer,
                                                 std::uint32_t vector) noexcept override;
  void set_state(std::uint32_t value) noexcept override;
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer) const noexcept override;

  // Blocks until at least one event is available or `timeout` passes
  // (0 = just poll). Membership events come first, in the order they
  // happened, then one doorbell event per fired vector. Throws
  // std::system_error only on an unexpected epoll failure.
  [[nodiscard]] std::vector<DeviceEvent> wait(std::chrono::milliseconds timeout) override;
  [[nodiscard]] int event_fd() const noexcept override { return epoll_.get(); }
  [[nodiscard]] bool add_wake_fd(int fd) override;

 private:
  friend class LoopbackLink;

  // Throws std::system_error when an eventfd or the epoll fd cannot be made.
  LoopbackDevice(LoopbackLink& link, std::uint32_t id);

  // Adds 1 to our eventfd for `vector`; false when the write failed.
  bool ring(std::uint32_t vector) noexcept;
  // Queues a membership event and makes event_fd() readable. Caller holds
  // the link's membership_mutex_.
  void post_membership(DeviceEvent event);
  // Forgets every uncollected interrupt (the process they were for is gone).
  // Caller holds the link's membership_mutex_.
  void drop_pending() noexcept;
  void collect_membership(std::vector<DeviceEvent>& events);
  // One event per fired vector among `vectors` (bit v: vector v).
  void collect_doorbells(std::uint64_t vectors, std::vector<DeviceEvent>& events);

  LoopbackLink& link_;
  std::uint32_t id_;
  std::vector<UniqueFd> vector_fds_;  // index = vector
  UniqueFd membership_fd_;            // counts queued membership events
  UniqueFd epoll_;                    // over vector_fds_ and membership_fd_
  // Guarded by the link's membership_mutex_.
  std::vector<DeviceEvent> pending_membership_;
};

class LoopbackLink {
 public:
  // Makes the memory and `peers` attached devices. Throws
  // std::invalid_argument when the request is impossible (peers outside
  // 2..16, a size that is not a page multiple, vectors outside 1..64) and
  // std::system_error when the kernel refuses a memfd, mmap or eventfd.
  explicit LoopbackLink(std::uint32_t peers,
                        std::uint64_t output_section_size = std::uint64_t{64} * 1024,
                        std::uint32_t vectors = 2, std::uint64_t rw_section_size = 0);
  LoopbackLink(const LoopbackLink&) = delete;
  LoopbackLink& operator=(const LoopbackLink&) = delete;
  ~LoopbackLink();

  // Throws std::out_of_range for peer >= peers().
  [[nodiscard]] LoopbackDevice& device(std::uint32_t peer);

  [[nodiscard]] std::uint32_t peers() const noexcept { return layout_.peers(); }
  [[nodiscard]] std::uint32_t vectors() const noexcept { return vectors_; }
  [[nodiscard]] const ivshmem::Layout& layout() const noexcept { return layout_; }
  // The whole memory object, for tests that play a hostile peer or the
  // hypervisor.
  [[nodiscard]] std::span<std::byte> memory() noexcept { return {memory_, memory_size_}; }
  [[nodiscard]] bool attached(std::uint32_t peer) const noexcept;

  // The daemon's reaction to a closed socket: see the file comment. No-op
  // when the peer is already detached. Throws std::out_of_range for a bad id.
  void detach(std::uint32_t peer);
  // The daemon's reaction to a (re)connecting peer. No-op when the peer is
  // already attached. Throws std::out_of_range for a bad id.
  void attach(std::uint32_t peer);

 private:
  friend class LoopbackDevice;

  void check_peer(std::uint32_t peer, const char* operation) const;
  [[nodiscard]] std::uint32_t& state_entry(std::uint32_t peer) const noexcept;

  ivshmem::Layout layout_;
  std::uint32_t vectors_ = 0;
  UniqueFd memory_fd_;
  std::byte* memory_ = nullptr;
  std::uint64_t memory_size_ = 0;

  // Protects attached_ and every device's pending_membership_. Held across a
  // doorbell's presence check and its eventfd write, so once detach()
  // returns no doorbell reaches the detached peer or comes from it, and a
  // peer_left is queued before the doorbell that accompanies it.
  mutable std::mutex membership_mutex_;
  std::vector<bool> attached_;  // index = peer id

  std::vector<std::unique_ptr<LoopbackDevice>> devices_;  // index = peer id
};

}  // namespace cellink::linux_uio
