// VirtioConsole: an inmate's console as the front end of a virtio-console
// device (id 3) over an ivshmem link. Spec: docs/virtio-over-ivshmem.md; the
// transport is VirtioIvshmemDriver (transports/virtio_ivshmem_driver.hpp).
//
//   queue 0, receive (host to inmate): kRxBuffers device-writable buffers,
//            kept posted; read() copies out of the oldest used one and
//            posts it again once it is empty.
//   queue 1, transmit (inmate to host): kTxBuffers fixed buffers; write()
//            copies into free ones. When all are in flight it spins (with
//            the clock's relax()) until one comes back or kTxTimeoutNs
//            passes; then it returns short, and the caller counts the rest
//            as dropped. After such a timeout the console is "stalled": it
//            does not wait again until the host returns a buffer, so a host
//            that stopped reading slows the inmate down once, not per write.
//
// The buffers share the pool left after the two vrings: each is the largest
// multiple of 16 up to kMaxBufferSize that lets all kRxBuffers + kTxBuffers
// fit (a 2-page R/W section gives about 256 bytes each).
//
// service() does the link's work: probes when the back end is READY and the
// console is down, notices a back end that left (the driver drops our state;
// bytes in flight are lost with the device), and re-probes when it is READY
// again. A probe that the back end fails (a latched fault) is not retried
// until the back end leaves READY and comes back.
//
// Threading: the main loop only, one caller at a time; never from an
// interrupt handler (the inmate's console.cpp keeps handlers on the 16550).
//
// Freestanding: no exceptions, no heap, no libc (the copies use
// __builtin_memcpy, which the inmate runtime provides as memcpy).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cellink/ivshmem/device.hpp"
#include "cellink/transports/virtio_ivshmem_driver.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"

namespace cellink::inmate {

// Time and patience, supplied by the caller: the inmate's TSC and
// cpu_relax(); in hosted tests a steady clock and a step of the back end.
struct VirtioConsoleClock {
  std::uint64_t (*now_ns)(void* context) noexcept = nullptr;
  void (*relax)(void* context) noexcept = nullptr;  // called on every spin while waiting
  void* context = nullptr;
};

class VirtioConsole {
 public:
  static constexpr std::uint32_t kQueueSize = 16;
  static constexpr std::uint32_t kRxBuffers = 4;
  static constexpr std::uint32_t kTxBuffers = 8;
  static constexpr std::uint64_t kMaxBufferSize = 4096;
  static constexpr std::uint64_t kMinBufferSize = 64;
  static constexpr std::uint64_t kProbeTimeoutNs = 1'000'000'000;  // the whole register handshake
  static constexpr std::uint64_t kTxTimeoutNs = 1'000'000'000;     // all transmit buffers in flight
  static_assert(kRxBuffers <= kQueueSize && kTxBuffers <= kQueueSize);

  using Driver =
      transports::VirtioIvshmemDriver<transports::virtio_console::kQueueCount, kQueueSize>;

  // event_idx = false declines VIRTIO_F_EVENT_IDX even when it is offered
  // (the flags then suppress, as with a Jailhouse back end).
  VirtioConsole(ivshmem::Device& device, const VirtioConsoleClock& clock,
                bool event_idx = true) noexcept
      : driver_(device), clock_(clock), event_idx_(event_idx) {}
  VirtioConsole(const VirtioConsole&) = delete;
  VirtioConsole& operator=(const VirtioConsole&) = delete;

  // The link's work (see above). True when the console is up.
  bool service() noexcept {
    if (driver_.running()) {
      if (!driver_.handle_events().reset) return true;
      ++resets_;
      up_ = false;
    }
    if (!driver_.backend_ready()) {
      if (probe_failed_) {
        // The back end left after failing us: drop our state so that it
        // can set up a fresh device, which we probe when it is READY.
        driver_.reset();
        probe_failed_ = false;
      }
      return false;
    }
    if (probe_failed_) return false;
    return bring_up();
  }

  [[nodiscard]] bool up() const noexcept { return up_ && driver_.running(); }

  // Sends up to `size` bytes, turning '\n' into "\r\n" when `crlf`;
  // returns how many of `bytes` were queued to the host. Fewer when the
  // console is down (or goes down meanwhile: check up()), or when every
  // transmit buffer stayed in flight for kTxTimeoutNs.
  std::size_t write(const char* bytes, std::size_t size, bool crlf = false) noexcept {
    if (!service()) return 0;
    std::size_t sent = 0;
    while (sent < size) {
      reap_tx();
      if (tx_free_count_ == 0) {
        (void)driver_.notify(transports::virtio_console::kTransmitQueue);
        if (stalled_ || !wait_for_tx()) break;
        continue;
      }
      const std::uint32_t index = tx_free_[--tx_free_count_];
      std::size_t consumed = sent;
      const std::uint32_t n =
          fill(driver_.buffer(tx_[index], buffer_size_).data(), bytes, size, consumed, crlf);
      const transports::VirtqBuffer buffer{tx_[index], n};
      if (tx_queue().add({&buffer, 1}, {}, index) != transports::VirtqError::ok) {
        tx_free_[tx_free_count_++] = index;
        break;  // a latched queue fault: handle_events() reports it next
      }
      sent = consumed;
    }
    if (up()) (void)driver_.notify(transports::virtio_console::kTransmitQueue);
    bytes_sent_ += sent;
    return sent;
  }

  // Copies up to `size` received bytes into `out`; returns how many.
  std::size_t read(char* out, std::size_t size) noexcept {
    if (!service()) return 0;
    std::size_t got = 0;
    bool reposted = false;
    while (got < size) {
      if (!rx_holding_) {
        transports::VirtqCompletion done;
        if (rx_queue().collect(done) != transports::VirtqError::ok) break;
        rx_token_ = done.token;
        rx_length_ = done.len;
        rx_position_ = 0;
        rx_holding_ = true;
      }
      const std::uint32_t left = rx_length_ - rx_position_;
      const auto n = static_cast<std::uint32_t>(size - got < left ? size - got : left);
      // The host may still write the buffer: we copy bytes, nothing else.
      __builtin_memcpy(out + got, driver_.buffer(rx_[rx_token_] + rx_position_, n).data(), n);
      got += n;
      rx_position_ += n;
      if (rx_position_ == rx_length_) {
        rx_holding_ = false;
        post_rx(rx_token_);
        reposted = true;
      }
    }
    if (reposted) (void)driver_.notify(transports::virtio_console::kReceiveQueue);
    if (got != 0) (void)rx_queue().disarm_interrupt();
    bytes_received_ += got;
    return got;
  }

  // Before halting: asks the host for an interrupt on the next received
  // bytes. True when it is safe to halt (nothing is waiting to be read, or
  // the console is down and only a state change can wake us).
  [[nodiscard]] bool prepare_to_sleep() noexcept {
    if (!up()) return true;
    if (rx_holding_) return false;
    return rx_queue().arm_interrupt();
  }

  [[nodiscard]] const Driver& driver() const noexcept { return driver_; }
  [[nodiscard]] std::uint64_t bytes_sent() const noexcept { return bytes_sent_; }
  [[nodiscard]] std::uint64_t bytes_received() const noexcept { return bytes_received_; }
  [[nodiscard]] std::uint64_t probes() const noexcept { return probes_; }
  [[nodiscard]] std::uint64_t resets() const noexcept { return resets_; }
  [[nodiscard]] std::uint64_t tx_timeouts() const noexcept { return tx_timeouts_; }
  [[nodiscard]] std::uint64_t buffer_size() const noexcept { return buffer_size_; }
  // Why the last probe failed (ok when it did not).
  [[nodiscard]] transports::VirtioDriverStatus last_probe() const noexcept { return last_probe_; }

 private:
  [[nodiscard]] Driver::Queue& rx_queue() noexcept {
    return driver_.queue(transports::virtio_console::kReceiveQueue);
  }
  [[nodiscard]] Driver::Queue& tx_queue() noexcept {
    return driver_.queue(transports::virtio_console::kTransmitQueue);
  }
  [[nodiscard]] std::uint64_t now() noexcept {
    return clock_.now_ns != nullptr ? clock_.now_ns(clock_.context) : 0;
  }

  static bool still_waiting(void* context) noexcept {
    auto& self = *static_cast<VirtioConsole*>(context);
    if (self.clock_.relax != nullptr) self.clock_.relax(self.clock_.context);
    return self.now() < self.deadline_;
  }

  bool bring_up() noexcept {
    up_ = false;
    ++probes_;
    transports::VirtioDriverOptions options;
    options.queue_count = transports::virtio_console::kQueueCount;
    options.queue_size = kQueueSize;
    options.event_idx = event_idx_;
    options.wait.max_polls = ~std::uint32_t{0};
    options.wait.still_waiting = &VirtioConsole::still_waiting;
    options.wait.context = this;
    deadline_ = now() + kProbeTimeoutNs;
    last_probe_ = driver_.probe(options);
    if (last_probe_ != transports::VirtioDriverStatus::ok) {
      // A back end that left during the probe is waited for again; any
      // other failure waits until the back end resets.
      probe_failed_ = last_probe_ != transports::VirtioDriverStatus::backend_left &&
                      last_probe_ != transports::VirtioDriverStatus::backend_not_ready;
      return false;
    }
    std::uint64_t size = driver_.pool_left() / (kRxBuffers + kTxBuffers + 1) / 16 * 16;
    if (size > kMaxBufferSize) size = kMaxBufferSize;
    if (size < kMinBufferSize) {
      last_probe_ = transports::VirtioDriverStatus::pool_exhausted;
      probe_failed_ = true;
      return false;
    }
    buffer_size_ = static_cast<std::uint32_t>(size);
    for (std::uint32_t i = 0; i < kRxBuffers; ++i) rx_[i] = driver_.allocate(size);
    for (std::uint32_t i = 0; i < kTxBuffers; ++i) {
      tx_[i] = driver_.allocate(size);
      tx_free_[i] = i;
    }
    tx_free_count_ = kTxBuffers;
    rx_holding_ = false;
    stalled_ = false;
    for (std::uint32_t i = 0; i < kRxBuffers; ++i) post_rx(i);
    up_ = true;
    (void)driver_.notify(transports::virtio_console::kReceiveQueue);
    return up();
  }

  // Copies from bytes[consumed..size) into one transmit buffer, advancing
  // `consumed`; returns the bytes written. A "\r\n" is never split.
  [[nodiscard]] std::uint32_t fill(std::byte* buffer, const char* bytes, std::size_t size,
                                   std::size_t& consumed, bool crlf) const noexcept {
    if (!crlf) {
      const std::size_t left = size - consumed;
      const auto n = static_cast<std::uint32_t>(left < buffer_size_ ? left : buffer_size_);
      __builtin_memcpy(buffer, bytes + consumed, n);
      consumed += n;
      return n;
    }
    std::uint32_t used = 0;
    while (consumed < size && used < buffer_size_) {
      const char c = bytes[consumed];
      if (c == '\n') {
        if (used + 2 > buffer_size_) break;
        buffer[used++] = std::byte{'\r'};
      }
      buffer[used++] = static_cast<std::byte>(c);
      ++consumed;
    }
    return used;
  }

  void post_rx(std::uint32_t index) noexcept {
    const transports::VirtqBuffer buffer{rx_[index], buffer_size_};
    // Cannot run out: kRxBuffers single-descriptor chains in a kQueueSize queue.
    (void)rx_queue().add({}, {&buffer, 1}, index);
  }

  void reap_tx() noexcept {
    transports::VirtqCompletion done;
    while (tx_queue().collect(done) == transports::VirtqError::ok) {
      if (done.token < kTxBuffers) tx_free_[tx_free_count_++] = done.token;
      stalled_ = false;
    }
  }

  // Spins until a transmit buffer comes back. False on the deadline or when
  // the console went down.
  bool wait_for_tx() noexcept {
    const std::uint64_t deadline = now() + kTxTimeoutNs;
    for (;;) {
      if (clock_.relax != nullptr) clock_.relax(clock_.context);
      if (driver_.handle_events().reset) {
        ++resets_;
        up_ = false;
        return false;
      }
      reap_tx();
      if (tx_free_count_ != 0) return true;
      if (now() >= deadline) {
        ++tx_timeouts_;
        stalled_ = true;
        return false;
      }
    }
  }

  Driver driver_;
  VirtioConsoleClock clock_;
  bool event_idx_ = true;
  bool up_ = false;
  bool probe_failed_ = false;
  bool stalled_ = false;
  transports::VirtioDriverStatus last_probe_ = transports::VirtioDriverStatus::not_probed;
  std::uint64_t deadline_ = 0;
  std::uint32_t buffer_size_ = 0;
  std::array<std::uint64_t, kRxBuffers> rx_{};
  std::array<std::uint64_t, kTxBuffers> tx_{};
  std::array<std::uint32_t, kTxBuffers> tx_free_{};
  std::uint32_t tx_free_count_ = 0;
  bool rx_holding_ = false;  // a used receive buffer is being read out
  std::uint32_t rx_token_ = 0;
  std::uint32_t rx_length_ = 0;
  std::uint32_t rx_position_ = 0;
  std::uint64_t bytes_sent_ = 0;
  std::uint64_t bytes_received_ = 0;
  std::uint64_t probes_ = 0;
  std::uint64_t resets_ = 0;
  std::uint64_t tx_timeouts_ = 0;
};

}  // namespace cellink::inmate
