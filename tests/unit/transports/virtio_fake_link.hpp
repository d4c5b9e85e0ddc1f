// FakeLink / FakeDevice: the two peers of a virtio-over-ivshmem link in one
// process, for the virtio transport tests. A doorbell is delivered
// synchronously to the target's handler (on_doorbell), so a back end can
// apply a register write inside the front end's doorbell() and a test runs
// deterministically in one thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/layout.hpp"

namespace cellink::transports::test {

inline constexpr std::uint32_t kFront = 0;  // the driver's peer id
inline constexpr std::uint32_t kBack = 1;   // the back end's peer id
inline constexpr std::size_t kRwSize = 64 * 1024;

// Two peers' view of one link: an R/W section and a state table.
class FakeLink {
 public:
  explicit FakeLink(std::size_t rw_size = kRwSize, std::uint32_t vectors = 2)
      : vectors_(vectors), blocks_(rw_size / 4096) {
    (void)ivshmem::Layout::compute({2, rw_size, 0}, layout_);
  }
  [[nodiscard]] std::span<std::byte> rw() {
    return {reinterpret_cast<std::byte*>(blocks_.data()), blocks_.size() * 4096};
  }
  std::array<std::uint32_t, 2> state{};
  std::array<std::function<void(std::uint32_t)>, 2> on_doorbell;
  std::array<std::uint32_t, 2> rings{};  // doorbells delivered to each peer
  std::vector<std::uint32_t> vectors_rung_to[2];
  std::uint32_t vectors_;
  ivshmem::Layout layout_;

  // False in threaded tests: doorbells then go nowhere (each side polls),
  // and nothing is recorded, so the two threads share no test state.
  bool synchronous = true;

  void deliver(std::uint32_t peer, std::uint32_t vector) {
    if (!synchronous) return;
    ++rings[peer];
    vectors_rung_to[peer].push_back(vector);
    if (on_doorbell[peer]) on_doorbell[peer](vector);
  }

 private:
  struct alignas(4096) Page {
    std::byte bytes[4096];
  };
  std::vector<Page> blocks_;
};

class FakeDevice final : public ivshmem::Device {
 public:
  FakeDevice(FakeLink& link, std::uint32_t id) : link_(link), id_(id) {}
  [[nodiscard]] std::uint32_t id() const noexcept override { return id_; }
  [[nodiscard]] std::uint32_t peer_count() const noexcept override { return 2; }
  [[nodiscard]] std::uint32_t vector_count() const noexcept override { return link_.vectors_; }
  [[nodiscard]] bool peer_present(std::uint32_t) const noexcept override { return true; }
  [[nodiscard]] const ivshmem::Layout& layout() const noexcept override { return link_.layout_; }
  [[nodiscard]] std::span<std::byte> rw_section() noexcept override { return link_.rw(); }
  [[nodiscard]] std::span<std::byte> own_output_section() noexcept override { return {}; }
  [[nodiscard]] std::span<const std::byte> output_section(std::uint32_t) const noexcept override {
    return {};
  }
  [[nodiscard]] ivshmem::DoorbellStatus doorbell(std::uint32_t peer,
                                                 std::uint32_t vector) noexcept override {
    if (vector >= link_.vectors_) return ivshmem::DoorbellStatus::no_such_vector;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    link_.deliver(peer, vector);
    return ivshmem::DoorbellStatus::ok;
  }
  void set_state(std::uint32_t value) noexcept override {
    std::atomic_ref<std::uint32_t>(link_.state[id_]).store(value, std::memory_order_release);
    ++state_writes;
    link_.deliver(1 - id_, 0);
  }
  [[nodiscard]] std::uint32_t peer_state(std::uint32_t peer) const noexcept override {
    return std::atomic_ref<std::uint32_t>(link_.state[peer]).load(std::memory_order_acquire);
  }
  std::uint32_t state_writes = 0;

 private:
  FakeLink& link_;
  std::uint32_t id_;
};

}  // namespace cellink::transports::test
