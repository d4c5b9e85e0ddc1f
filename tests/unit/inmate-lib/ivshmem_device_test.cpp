// The inmate's ivshmem devices (inmate-lib/ivshmem_device.hpp) and their
// geometry, against a model of the registers. No v2 device exists on this
// machine yet, so the v2 path runs here on V2Model, which does what the
// ivshmem 2.0 specification says a hypervisor does:
//   - ID and Maximum Peers read back; writes to them are ignored;
//   - a State write lands in the writer's state-table entry and raises
//     vector 0 on every other peer;
//   - a Doorbell write raises the vector on the target if that peer enabled
//     interrupts; in one-shot mode each delivery clears Interrupt Control.
// Each peer maps the link through its own view of one memfd, with the state
// table and every other peer's output section read-only (mprotect), as the
// hypervisor maps it: a write there would kill the test with SIGSEGV. Two
// Endpoints then run the whole channel protocol over the model.
#include "cellink/inmate-lib/ivshmem_device.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/inmate-lib/endpoint.hpp"
#include "cellink/inmate-lib/ivshmem_geometry.hpp"

namespace {

using namespace std::chrono_literals;
using cellink::inmate::Endpoint;
using cellink::inmate::EndpointHooks;
using cellink::inmate::GeometryError;
using cellink::inmate::Inbound;
using cellink::inmate::IvshmemGeometry;
using cellink::inmate::IvshmemV1Device;
using cellink::inmate::IvshmemV2Device;
using cellink::inmate::RegisterPort;
using cellink::ivshmem::Layout;
using cellink::ivshmem::LayoutRequest;
namespace v2 = cellink::ivshmem::v2;

v2::VendorCapability capability_for(const Layout& layout) {
  v2::VendorCapability capability{};
  capability.capability_id = v2::kVendorCapabilityId;
  capability.length = v2::kVendorCapabilityLengthWithoutBase;
  capability.state_table_size = static_cast<std::uint32_t>(layout.state_table().size);
  capability.rw_section_size = layout.rw_section().size;
  capability.output_section_size = layout.output_section(0).size;
  return capability;
}

Layout make_layout(std::uint32_t peers, std::uint64_t rw, std::uint64_t output) {
  Layout layout;
  EXPECT_EQ(Layout::compute(LayoutRequest{peers, rw, output}, layout),
            cellink::ivshmem::LayoutError::ok);
  return layout;
}

constexpr std::uint32_t kCellinkClass = 0xff4c11;

TEST(IvshmemGeometryTest, AV2CapabilityGivesTheLayoutEveryPeerComputes) {
  const Layout layout = make_layout(3, 0x4000, 0x10000);
  IvshmemGeometry geometry;
  ASSERT_EQ(cellink::inmate::v2_geometry(capability_for(layout), 2, 3, kCellinkClass, 4,
                                         layout.memory_size(), geometry),
            GeometryError::ok);
  EXPECT_EQ(geometry.layout, layout);
  EXPECT_EQ(geometry.id, 2U);
  EXPECT_EQ(geometry.vectors, 4U);
}

TEST(IvshmemGeometryTest, AV2DeviceThatDisagreesWithTheContractIsRefusedWithItsReason) {
  const Layout layout = make_layout(2, 0, 0x10000);
  const v2::VendorCapability good = capability_for(layout);
  IvshmemGeometry geometry;
  const auto check = [&](v2::VendorCapability capability, std::uint32_t id, std::uint32_t peers,
                         std::uint32_t class_code, std::uint32_t vectors, std::uint64_t memory) {
    return cellink::inmate::v2_geometry(capability, id, peers, class_code, vectors, memory,
                                        geometry);
  };
  v2::VendorCapability bad = good;
  bad.capability_id = 0x10;
  EXPECT_EQ(check(bad, 0, 2, kCellinkClass, 2, layout.memory_size()),
            GeometryError::bad_capability);
  bad = good;
  bad.length = 0x10;
  EXPECT_EQ(check(bad, 0, 2, kCellinkClass, 2, layout.memory_size()),
            GeometryError::bad_capability);
  EXPECT_EQ(check(good, 0, 1, kCellinkClass, 2, layout.memory_size()),
            GeometryError::bad_peer_count);
  EXPECT_EQ(check(good, 0, 17, kCellinkClass, 2, layout.memory_size()),
            GeometryError::bad_peer_count);
  EXPECT_EQ(check(good, 2, 2, kCellinkClass, 2, layout.memory_size()),
            GeometryError::id_out_of_range);
  EXPECT_EQ(check(good, 0, 2, kCellinkClass, 0, layout.memory_size()), GeometryError::no_msix);
  EXPECT_EQ(check(good, 0, 2, 0xff0001, 2, layout.memory_size()), GeometryError::wrong_protocol);
  bad = good;
  bad.state_table_size = 4;
  EXPECT_EQ(check(bad, 0, 2, kCellinkClass, 2, layout.memory_size()),
            GeometryError::state_table_small);
  bad = good;
  bad.state_table_size = 0x2000;
  EXPECT_EQ(check(bad, 0, 2, kCellinkClass, 2, layout.memory_size()), GeometryError::bad_layout);
  bad = good;
  bad.output_section_size = 0x1234;
  EXPECT_EQ(check(bad, 0, 2, kCellinkClass, 2, layout.memory_size()), GeometryError::bad_layout);
  EXPECT_EQ(check(good, 0, 2, kCellinkClass, 2, layout.used_size() - 1),
            GeometryError::memory_too_small);
  // Undefined protocol (a configuration that names none) is accepted.
  EXPECT_EQ(check(good, 0, 2, 0xff0000, 2, layout.memory_size()), GeometryError::ok);
}

TEST(IvshmemGeometryTest, AV1DescriptorIsValidatedAgainstTheBarAndTheRegisters) {
  const Layout layout = make_layout(2, 0, 0x10000);
  const cellink::ivshmem::LinkDescriptor descriptor =
      cellink::ivshmem::make_link_descriptor(layout, 4, 0x4c11, "vm");
  IvshmemGeometry geometry;
  cellink::ivshmem::DescriptorError why{};
  ASSERT_EQ(cellink::inmate::v1_geometry(descriptor, layout.memory_size(), 1, 2, geometry, why),
            GeometryError::ok);
  EXPECT_EQ(geometry.layout, layout);
  EXPECT_EQ(geometry.vectors, 2U) << "the MSI-X table has 2 entries, the descriptor says 4";
  EXPECT_EQ(cellink::inmate::v1_geometry(descriptor, layout.memory_size() * 2, 1, 2, geometry, why),
            GeometryError::bad_descriptor);
  EXPECT_EQ(why, cellink::ivshmem::DescriptorError::memory_size_mismatch);
  EXPECT_EQ(cellink::inmate::v1_geometry(descriptor, layout.memory_size(), 2, 2, geometry, why),
            GeometryError::id_out_of_range);
  EXPECT_EQ(cellink::inmate::v1_geometry(descriptor, layout.memory_size(), 0, 0, geometry, why),
            GeometryError::no_msix);
  cellink::ivshmem::LinkDescriptor corrupt = descriptor;
  corrupt.magic ^= 1;
  EXPECT_EQ(cellink::inmate::v1_geometry(corrupt, layout.memory_size(), 0, 2, geometry, why),
            GeometryError::bad_descriptor);
  EXPECT_EQ(why, cellink::ivshmem::DescriptorError::bad_magic);
}

// The hypervisor side of a v2 link: the memory, each peer's registers and
// interrupts.
class V2Model {
 public:
  V2Model(std::uint32_t peers, std::uint64_t output_size, bool one_shot)
      : layout_(make_layout(peers, 0, output_size)), one_shot_(one_shot), peers_(peers) {
    fd_ = memfd_create("v2-model", 0);
    EXPECT_GE(fd_, 0);
    EXPECT_EQ(ftruncate(fd_, static_cast<off_t>(layout_.memory_size())), 0);
    table_ = map(PROT_READ | PROT_WRITE);
    for (std::uint32_t peer = 0; peer < peers; ++peer) {
      Port& port = ports_.emplace_back();
      port.model = this;
      port.peer = peer;
    }
    for (std::uint32_t peer = 0; peer < peers; ++peer) {
      // The peer's view: its own output section writable, nothing else.
      std::byte* view = map(PROT_READ | PROT_WRITE);
      EXPECT_EQ(mprotect(view, layout_.memory_size(), PROT_READ), 0);
      const cellink::ivshmem::Section own = layout_.output_section(peer);
      EXPECT_EQ(mprotect(view + own.offset, own.size, PROT_READ | PROT_WRITE), 0);
      views_.push_back(view);
      IvshmemGeometry geometry;
      EXPECT_EQ(cellink::inmate::v2_geometry(capability_for(layout_), peer, peers, kCellinkClass, 2,
                                             layout_.memory_size(), geometry),
                GeometryError::ok);
      devices_.push_back(std::make_unique<IvshmemV2Device>(geometry, view, ports_[peer], one_shot));
    }
  }
  ~V2Model() {
    for (std::byte* view : views_) munmap(view, layout_.memory_size());
    munmap(table_, layout_.memory_size());
    close(fd_);
  }

  IvshmemV2Device& device(std::uint32_t peer) { return *devices_[peer]; }
  std::uint32_t state_entry(std::uint32_t peer) {
    return std::atomic_ref<std::uint32_t>(
               *reinterpret_cast<std::uint32_t*>(table_ + 4 * std::size_t{peer}))
        .load();
  }
  // Interrupts delivered to `peer` since the last call; waits up to `timeout`.
  std::uint64_t take_interrupts(std::uint32_t peer, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    Port& port = ports_[peer];
    changed_.wait_for(lock, timeout, [&] { return port.delivered != 0; });
    return std::exchange(port.delivered, 0);
  }
  std::uint32_t interrupt_control(std::uint32_t peer) {
    const std::lock_guard lock(mutex_);
    return ports_[peer].interrupt_control;
  }
  std::vector<std::pair<std::uint32_t, std::uint32_t>> doorbells_from(std::uint32_t peer) {
    const std::lock_guard lock(mutex_);
    return ports_[peer].rung;
  }

 private:
  struct Port final : RegisterPort {
    V2Model* model = nullptr;
    std::uint32_t peer = 0;
    std::uint32_t interrupt_control = 0;
    std::uint64_t delivered = 0;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> rung;  // (target, vector)
    std::uint32_t read32(std::uint32_t offset) noexcept override {
      const std::lock_guard lock(model->mutex_);
      switch (offset) {
        case 0x00: return peer;
        case 0x04: return model->peers_;
        case 0x08: return interrupt_control;
        case 0x10: return model->state_entry(peer);
        default: return 0;
      }
    }
    void write32(std::uint32_t offset, std::uint32_t value) noexcept override {
      const std::lock_guard lock(model->mutex_);
      switch (offset) {
        case 0x08: interrupt_control = value & v2::kInterruptEnable; break;
        case 0x0c: {
          rung.emplace_back(value >> 16, value & 0xffff);
          if ((value >> 16) < model->peers_) model->raise(value >> 16);
          break;
        }
        case 0x10: {
          std::atomic_ref<std::uint32_t>(
              *reinterpret_cast<std::uint32_t*>(model->table_ + 4 * std::size_t{peer}))
              .store(value, std::memory_order_release);
          for (std::uint32_t other = 0; other < model->peers_; ++other) {
            if (other != peer) model->raise(other);
          }
          break;
        }
        default: break;  // ID and Maximum Peers are read-only
      }
    }
  };

  // Caller holds mutex_.
  void raise(std::uint32_t peer) {
    Port& port = ports_[peer];
    if ((port.interrupt_control & v2::kInterruptEnable) == 0) return;  // disabled: dropped
    ++port.delivered;
    if (one_shot_) port.interrupt_control = 0;
    changed_.notify_all();
  }

  std::byte* map(int protection) {
    void* memory = mmap(nullptr, layout_.memory_size(), protection, MAP_SHARED, fd_, 0);
    EXPECT_NE(memory, MAP_FAILED);
    return static_cast<std::byte*>(memory);
  }

  Layout layout_;
  bool one_shot_;
  std::uint32_t peers_;
  int fd_ = -1;
  std::byte* table_ = nullptr;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Port> ports_;
  std::vector<std::byte*> views_;
  std::vector<std::unique_ptr<IvshmemV2Device>> devices_;
};

TEST(IvshmemV2DeviceTest, StateGoesThroughTheRegisterAndTheTableIsOnlyRead) {
  V2Model model(2, 0x10000, false);
  IvshmemV2Device& device = model.device(1);
  model.device(0).enable_interrupts();
  EXPECT_FALSE(device.peer_present(0));
  EXPECT_TRUE(device.peer_present(1)) << "a peer is always present to itself";
  device.set_state(0x0503);  // the table page is read-only: a direct write would crash
  EXPECT_EQ(model.state_entry(1), 0x0503U);
  EXPECT_EQ(device.peer_state(1), 0x0503U);
  EXPECT_EQ(model.take_interrupts(0, 1s), 1U) << "the state change raised vector 0 on peer 0";
  model.device(0).set_state(0x0101);
  EXPECT_TRUE(device.peer_present(0));
}

TEST(IvshmemV2DeviceTest, DoorbellsAreCheckedAndEncodedWithA16BitVector) {
  V2Model model(3, 0x10000, false);
  IvshmemV2Device& device = model.device(0);
  EXPECT_EQ(device.doorbell(3, 0), cellink::ivshmem::DoorbellStatus::no_such_peer);
  EXPECT_EQ(device.doorbell(1, 2), cellink::ivshmem::DoorbellStatus::no_such_vector);
  EXPECT_EQ(device.doorbell(2, 1), cellink::ivshmem::DoorbellStatus::ok);
  const auto rung = model.doorbells_from(0);
  ASSERT_EQ(rung.size(), 1U);
  EXPECT_EQ(rung[0], std::make_pair(2U, 1U));
}

TEST(IvshmemV2DeviceTest, OneShotModeNeedsARearmAfterEachInterrupt) {
  V2Model model(2, 0x10000, true);
  model.device(1).enable_interrupts();
  ASSERT_EQ(model.device(0).doorbell(1, 1), cellink::ivshmem::DoorbellStatus::ok);
  EXPECT_EQ(model.take_interrupts(1, 1s), 1U);
  EXPECT_EQ(model.interrupt_control(1), 0U) << "one-shot delivery cleared Interrupt Control";
  ASSERT_EQ(model.device(0).doorbell(1, 1), cellink::ivshmem::DoorbellStatus::ok);
  EXPECT_EQ(model.take_interrupts(1, 10ms), 0U) << "disabled: the second doorbell is lost";
  model.device(1).rearm_interrupts();
  EXPECT_EQ(model.interrupt_control(1), v2::kInterruptEnable);
  ASSERT_EQ(model.device(0).doorbell(1, 1), cellink::ivshmem::DoorbellStatus::ok);
  EXPECT_EQ(model.take_interrupts(1, 1s), 1U);
}

// A whole channel conversation on the v2 path: two Endpoints, each on its
// own device and read-only view, one echoing what the other sends.
struct V2Peer {
  V2Model* model;
  std::uint32_t peer;
};

std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

void wait_for_interrupt(void* context) {
  auto* self = static_cast<V2Peer*>(context);
  (void)self->model->take_interrupts(self->peer, 2ms);
  self->model->device(self->peer).rearm_interrupts();  // what the inmate does before halting
}

TEST(IvshmemV2DeviceTest, TwoEndpointsRunTheChannelProtocolOverOneShotV2Devices) {
  V2Model model(2, 0x10000, true);
  model.device(0).enable_interrupts();
  model.device(1).enable_interrupts();
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    V2Peer self{&model, 1};
    Endpoint endpoint;
    ASSERT_EQ(endpoint.start(model.device(1), EndpointHooks{steady_ns, wait_for_interrupt, &self}),
              cellink::transports::LinkInitStatus::ok);
    const std::uint16_t id = endpoint.open(0, "echo");
    ASSERT_NE(id, 0);
    while (!stop) {
      endpoint.service();
      Inbound message;
      while (endpoint.receive(message)) {
        (void)endpoint.reply(message, message.data, 5'000'000'000);
        endpoint.release(message);
      }
      if (endpoint.prepare_to_sleep()) wait_for_interrupt(&self);
    }
  });
  V2Peer self{&model, 0};
  Endpoint endpoint;
  ASSERT_EQ(endpoint.start(model.device(0), EndpointHooks{steady_ns, wait_for_interrupt, &self}),
            cellink::transports::LinkInitStatus::ok);
  const std::uint16_t id = endpoint.open(1, "echo");
  ASSERT_NE(id, 0);
  for (std::uint32_t i = 0; i < 300; ++i) {
    std::vector<std::byte> sent(i % 3 == 0 ? 20000 : 100);
    for (std::size_t b = 0; b < sent.size(); ++b) sent[b] = static_cast<std::byte>(i + b);
    ASSERT_EQ(endpoint.send(1, id, sent, 10'000'000'000), cellink::transports::ChannelStatus::ok)
        << "message " << i;
    Inbound back;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!endpoint.receive(back)) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no echo of message " << i;
      endpoint.service();
      if (endpoint.prepare_to_sleep()) wait_for_interrupt(&self);
    }
    ASSERT_EQ(back.data.size(), sent.size()) << "echo " << i;
    EXPECT_EQ(std::memcmp(back.data.data(), sent.data(), sent.size()), 0) << "echo " << i;
    endpoint.release(back);
  }
  stop = true;
  echo.join();
  EXPECT_EQ(endpoint.core().stats().protocol_faults, 0U);
}

}  // namespace
