// ConsoleFrontEnd: a virtio-console front end in the test process, so the
// console back end (`cellink console serve`, a real process) can be tested
// without a guest. It is the transport's driver half (VirtioIvshmemDriver,
// the one inmates use) over a HostDevice on the console link, with the
// console's two queues: receive (0) gets kReceiveBuffers page-sized writable
// buffers, transmit (1) sends one buffer per write().
//
// Threading: one test thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/linux-uio/host_device.hpp"
#include "cellink/transports/virtio_ivshmem_driver.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"

namespace cellink::integration {

class ConsoleFrontEnd {
 public:
  using Driver = transports::VirtioIvshmemDriver<2, 64>;
  static constexpr std::uint32_t kReceiveBuffers = 8;
  static constexpr std::uint32_t kBufferSize = 4096;

  ConsoleFrontEnd(const std::filesystem::path& runtime_dir, const std::string& link,
                  const std::string& cell) {
    linux_uio::HostDeviceOptions options;
    options.runtime_dir = runtime_dir;
    options.link = link;
    options.cell = cell;
    device_ = linux_uio::HostDevice::connect(options);
    driver_ = std::make_unique<Driver>(*device_);
  }

  [[nodiscard]] linux_uio::HostDevice& device() { return *device_; }
  [[nodiscard]] Driver& driver() { return *driver_; }

  // Probes until the device runs (the back end must be READY), then offers
  // the receive buffers. False, with the reason in `why`, at the deadline.
  bool start(std::chrono::milliseconds timeout, std::string& why) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    transports::VirtioDriverOptions options;
    options.queue_count = transports::virtio_console::kQueueCount;
    options.queue_size = 16;
    options.device_features = transports::feature_bit(transports::virtio_console::kFeatureSize);
    // The back end is another process: a register write waits for it to be
    // scheduled, so the wait is bounded by time, not by a poll count.
    register_deadline_ = deadline;
    options.wait = {0xffffffffU, &before_deadline, &register_deadline_};
    while (std::chrono::steady_clock::now() < deadline) {
      const transports::VirtioDriverStatus status = driver_->probe(options);
      if (status == transports::VirtioDriverStatus::ok) {
        offer_receive_buffers();
        return true;
      }
      why = transports::describe(status);
      (void)device_->wait(std::chrono::milliseconds{20});
    }
    return false;
  }

  // Sends `text` as one transmit buffer and waits until the back end has
  // taken it.
  bool write(const std::string& text, std::chrono::milliseconds timeout) {
    const std::uint64_t offset = transmit_buffer(text.size());
    if (offset == 0) return false;
    std::memcpy(driver_->buffer(offset, text.size()).data(), text.data(), text.size());
    const transports::VirtqBuffer buffer{offset, static_cast<std::uint32_t>(text.size())};
    auto& queue = driver_->queue(transports::virtio_console::kTransmitQueue);
    if (queue.add(std::span{&buffer, 1}, {}, 1) != transports::VirtqError::ok) return false;
    if (driver_->notify(transports::virtio_console::kTransmitQueue) !=
        transports::VirtioDriverStatus::ok) {
      return false;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      transports::VirtqCompletion done;
      if (queue.collect(done) == transports::VirtqError::ok) return true;
      (void)device_->wait(std::chrono::milliseconds{5});
      (void)driver_->handle_events();
    }
    return false;
  }

  // Collects received bytes until `pattern` appears in everything received
  // so far, or the deadline. Returns everything received.
  std::string read_until(const std::string& pattern, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (received_.find(pattern) == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      (void)device_->wait(std::chrono::milliseconds{5});
      (void)driver_->handle_events();
      collect_received();
    }
    return received_;
  }

 private:
  static bool before_deadline(void* context) noexcept {
    return std::chrono::steady_clock::now() <
           *static_cast<std::chrono::steady_clock::time_point*>(context);
  }

  void offer_receive_buffers() {
    auto& queue = driver_->queue(transports::virtio_console::kReceiveQueue);
    receive_offsets_.clear();
    for (std::uint32_t i = 0; i < kReceiveBuffers; ++i) {
      const std::uint64_t offset = driver_->allocate(kBufferSize);
      ASSERT_NE(offset, 0U) << "the console link's pool is too small for the test";
      receive_offsets_.push_back(offset);
      const transports::VirtqBuffer buffer{offset, kBufferSize};
      ASSERT_EQ(queue.add({}, std::span{&buffer, 1}, i), transports::VirtqError::ok);
    }
    ASSERT_EQ(driver_->notify(transports::virtio_console::kReceiveQueue),
              transports::VirtioDriverStatus::ok);
    transmit_offset_ = 0;
  }

  void collect_received() {
    auto& queue = driver_->queue(transports::virtio_console::kReceiveQueue);
    transports::VirtqCompletion done;
    bool refilled = false;
    while (queue.collect(done) == transports::VirtqError::ok) {
      ASSERT_LT(done.token, receive_offsets_.size());
      const auto bytes = driver_->buffer(receive_offsets_[done.token], done.len);
      received_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      const transports::VirtqBuffer buffer{receive_offsets_[done.token], kBufferSize};
      ASSERT_EQ(queue.add({}, std::span{&buffer, 1}, done.token), transports::VirtqError::ok);
      refilled = true;
    }
    if (refilled) (void)driver_->notify(transports::virtio_console::kReceiveQueue);
  }

  // One transmit buffer, reused: write() waits for each send to complete.
  std::uint64_t transmit_buffer(std::size_t size) {
    if (size > kBufferSize) return 0;
    if (transmit_offset_ == 0) transmit_offset_ = driver_->allocate(kBufferSize);
    return transmit_offset_;
  }

  std::unique_ptr<linux_uio::HostDevice> device_;
  std::unique_ptr<Driver> driver_;
  std::chrono::steady_clock::time_point register_deadline_;
  std::vector<std::uint64_t> receive_offsets_;
  std::uint64_t transmit_offset_ = 0;
  std::string received_;
};

}  // namespace cellink::integration
