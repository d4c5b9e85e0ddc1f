// virtio_ivshmem_device_fuzzer: VirtioIvshmemDevice (virtio_ivshmem_device.hpp)
// against a hostile front end that writes any header field, any
// write_transaction, any state, any descriptor and avail entry, and any
// other byte of the R/W section, between the back end's calls.
//
// What it proves, for every input:
//   - the back end writes only the header page and the used rings of queues
//     it enabled (and ASan: the R/W section is its own allocation, so no
//     access leaves it); every enabled queue's three areas are aligned,
//     disjoint and inside the pool [0x1000, R), with a size up to the maximum;
//   - every buffer it hands out (through queue(i)->pop()) lies inside the pool;
//   - a fault latches `broken` with a diagnostic (a front-end error, a field
//     name, a one-line message), sets DEVICE_NEEDS_RESET, raises config_event
//     and rings the front end's vector 0; the fault stays the same, running()
//     is false and no queue is handed out until a reset (kReset) clears it;
//   - service() leaves no write pending when the front end is READY (unless
//     it reports kMorePending), so a front end never waits on a live back end;
//   - FEATURES_OK stands only for accepted bits that are a subset of the
//     offered ones and hold VERSION_1 and ACCESS_PLATFORM; running() implies
//     FEATURES_OK and DRIVER_OK, and each queue runs in the negotiated
//     suppression mode.
//
// Input: byte 0 = config, then the script (commands: DeviceLinkCommand in
// commands.hpp).
//   config bits 0-1  link vectors 1..4
//   config bits 2-3  R/W section 0x2000 << k bytes
//   config bits 4-5  maximum queue size 4 << 2k (4, 16, 64, 256)
//   config bit 6     two queues instead of one
//   config bit 7     no device config (else a 12-byte console config)
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/layout.hpp"
#include "cellink/transports/virtio_ivshmem_device.hpp"
#include "cellink/transports/virtio_ivshmem_fault.hpp"
#include "cellink/transports/virtio_ivshmem_format.hpp"
#include "cellink/transports/virtq.hpp"
#include "commands.hpp"
#include "script.hpp"
#include "shared_region.hpp"

namespace {

using cellink::fuzz::DeviceLinkCommand;
using cellink::fuzz::Script;
using cellink::fuzz::SharedRegion;
using namespace cellink::transports;
using ull = unsigned long long;

constexpr std::uint32_t kBack = 0;
constexpr std::uint32_t kFront = 1;
constexpr std::uint64_t kPool = kVirtioIvshmemPoolOffset;
using Backend = VirtioIvshmemDevice<2, 256, 16>;
using Events = VirtioIvshmemEvents;

// The header offsets a front end may write, in DeviceLinkCommand order.
constexpr std::uint32_t kFields[] = {0x10, 0x14, 0x18, 0x1c, 0x20, 0x24,
                                     0x26, 0x28, 0x30, 0x38, 0x44};
constexpr std::uint32_t kWriteTransaction = 0x08;
constexpr std::uint32_t kDeviceStatus = 0x44;
constexpr std::uint32_t kConfigEvent = 0x40;

// A 2-peer link over the fuzzer's R/W section that counts doorbells.
class FuzzLink final : public cellink::ivshmem::Device {
 public:
  FuzzLink(SharedRegion& section, std::uint32_t vectors) : section_(section), vectors_(vectors) {
    (void)cellink::ivshmem::Layout::compute({2, section.size(), 0}, layout_);
  }
  std::uint32_t id() const noexcept override { return kBack; }
  std::uint32_t peer_count() const noexcept override { return 2; }
  std::uint32_t vector_count() const noexcept override { return vectors_; }
  bool peer_present(std::uint32_t peer) const noexcept override { return peer < 2; }
  const cellink::ivshmem::Layout& layout() const noexcept override { return layout_; }
  std::span<std::byte> rw_section() noexcept override { return section_.bytes(); }
  std::span<std::byte> own_output_section() noexcept override { return {}; }
  std::span<const std::byte> output_section(std::uint32_t) const noexcept override { return {}; }
  cellink::ivshmem::DoorbellStatus doorbell(std::uint32_t peer,
                                            std::uint32_t vector) noexcept override {
    FUZZ_CHECK(peer == kFront, "the back end rang peer %u", peer);
    FUZZ_CHECK(vector < vectors_, "the back end rang vector %u of %u", vector, vectors_);
    ++rings_[vector];
    return cellink::ivshmem::DoorbellStatus::ok;
  }
  void set_state(std::uint32_t value) noexcept override {
    FUZZ_CHECK(value == virtio_peer_state::kReset || value == virtio_peer_state::kReady,
               "the back end wrote state %u", value);
    states_[kBack] = value;
    ++rings_[0];
  }
  std::uint32_t peer_state(std::uint32_t peer) const noexcept override { return states_[peer]; }

  void set_front_state(std::uint32_t value) { states_[kFront] = value; }
  std::uint32_t front_state() const { return states_[kFront]; }
  unsigned rings(std::uint32_t vector) const { return rings_[vector]; }
  unsigned total_rings() const { return rings_[0] + rings_[1] + rings_[2] + rings_[3]; }

 private:
  SharedRegion& section_;
  std::uint32_t vectors_;
  cellink::ivshmem::Layout layout_;
  std::array<std::uint32_t, 2> states_{};
  std::array<unsigned, 4> rings_{};
};

class Harness {
 public:
  Harness(SharedRegion& section, std::uint32_t vectors, std::uint16_t queues,
          std::uint16_t max_size, std::span<const std::byte> config)
      : section_(section), link_(section, vectors), max_size_(max_size), config_(config) {
    spec_.device_id = virtio_device_id::kConsole;
    spec_.device_features = 1;
    spec_.queue_count = queues;
    spec_.max_queue_size = max_size;
    spec_.config = config_;
  }

  void attach() {
    FUZZ_CHECK(back_.attach(link_, spec_) == VirtioIvshmemError::ok, "attach() refused");
    FUZZ_CHECK(link_.peer_state(kBack) == virtio_peer_state::kReset, "attach() left state %u",
               link_.peer_state(kBack));
  }

  // --- the front end ---------------------------------------------------------

  template <typename T>
  void put(std::uint64_t offset, T value) {
    if (offset <= section_.size() && sizeof(T) <= section_.size() - offset) {
      section_.store(offset, value);
    }
  }
  // Reads 0 outside the section (a hostile layout may point there).
  template <typename T>
  T get(std::uint64_t offset) const {
    if (offset > section_.size() || sizeof(T) > section_.size() - offset) return T{};
    return section_.load<T>(offset);
  }

  // Stores the field with its size, its offset in write_transaction, then
  // lets the back end serve it.
  void write(std::uint32_t offset, std::uint64_t value) {
    switch (writable_field_size(offset)) {
      case 2: put(offset, static_cast<std::uint16_t>(value)); break;
      case 8: put(offset, value); break;
      default: put(offset, static_cast<std::uint32_t>(value)); break;
    }
    put(kWriteTransaction, offset);
    service();
  }
  void negotiate(unsigned how) {
    std::uint64_t features =
        feature_bit(virtio_feature::kVersion1) | feature_bit(virtio_feature::kAccessPlatform) | 1;
    if ((how & 1) != 0) features |= feature_bit(virtio_feature::kRingEventIdx);
    if ((how & 2) != 0) features &= ~feature_bit(virtio_feature::kVersion1);
    if ((how & 4) != 0) features &= ~feature_bit(virtio_feature::kAccessPlatform);
    if ((how & 8) != 0) features |= std::uint64_t{1} << 40;
    write(kDeviceStatus, 0);
    write(kDeviceStatus, virtio_status::kAcknowledge | virtio_status::kDriver);
    write(0x18, 0);
    write(0x14, static_cast<std::uint32_t>(features));
    write(0x18, 1);
    write(0x14, static_cast<std::uint32_t>(features >> 32));
    write(kDeviceStatus, kNegotiating);
  }
  void setup_queue(std::uint16_t index, std::uint32_t size, std::uint64_t offset,
                   std::uint16_t vector) {
    VirtqLayout layout;
    if (VirtqLayout::compute(offset, size, layout) != VirtqError::ok) return;
    layouts_[index & 1] = layout;
    avail_idx_[index & 1] = 0;
    write(0x1c, index);
    write(0x20, size);
    write(0x24, vector);
    write(0x28, layout.desc);
    write(0x30, layout.avail);
    write(0x38, layout.used);
    write(0x26, 1);
  }
  void driver_ok() { write(kDeviceStatus, kNegotiating | virtio_status::kDriverOk); }
  void set_front_state(std::uint32_t value) { link_.set_front_state(value); }

  // The queue the front end last placed at `index` (empty size: none).
  const VirtqLayout& front_layout(unsigned index) const { return layouts_[index & 1]; }
  std::uint16_t next_avail(unsigned index) { return avail_idx_[index & 1]++; }
  void set_avail(unsigned index, std::uint16_t idx) { avail_idx_[index & 1] = idx; }

  // --- the back end's calls, each checked ------------------------------------

  void service() {
    const State before = observe();
    const std::uint32_t front = link_.front_state();
    const Events events = back_.service();
    after(before, "service()", &events);
    if (back_.phase() == Backend::Phase::ready && front == virtio_peer_state::kReady &&
        !events.has(Events::kMorePending) && !events.has(Events::kReset)) {
      FUZZ_CHECK(get<std::uint32_t>(kWriteTransaction) == 0,
                 "service() left write_transaction %u pending",
                 get<std::uint32_t>(kWriteTransaction));
    }
    if (events.has(Events::kDriverOk)) {
      FUZZ_CHECK(back_.running(), "kDriverOk but not running");
    }
  }

  void pop(unsigned index, unsigned count, Script& script) {
    for (unsigned i = 0; i < count; ++i) {
      Backend::Queue* const queue = back_.queue(static_cast<std::uint16_t>(index));
      if (queue == nullptr) return;
      const State before = observe();
      Backend::Queue::Chain chain;
      const VirtqError error = queue->pop(chain);
      after(before, "pop()", nullptr);
      if (error != VirtqError::ok) {
        FUZZ_CHECK(chain.empty(), "pop() failed with %s and a chain", describe(error));
        if (is_peer_fault(error)) service();  // the caller reports it through the device
        return;
      }
      std::uint64_t writable = 0;
      for (std::size_t s = 0; s < chain.readable_count(); ++s) check_segment(chain.readable(s));
      for (std::size_t s = 0; s < chain.writable_count(); ++s) {
        const std::span<std::byte> out = chain.writable(s);
        check_segment(out);
        if (!out.empty()) std::memset(out.data(), 0x5a, out.size());
        writable += out.size();
      }
      const std::uint32_t written =
          static_cast<std::uint32_t>(writable == 0 ? 0 : script.u8() % (writable + 1));
      const State pushed = observe();
      FUZZ_CHECK(queue->push(chain.head(), written) == VirtqError::ok, "push() of a popped head");
      after(pushed, "push()", nullptr);
    }
  }

  void notify(unsigned index) {
    const State before = observe();
    const unsigned rang = link_.total_rings();
    const bool rings = back_.notify(static_cast<std::uint16_t>(index));
    after(before, "notify()", nullptr);
    if (rings) {
      FUZZ_CHECK(get<std::uint8_t>(0x41) == 1, "notify() rang without queue_event");
      FUZZ_CHECK(link_.total_rings() > rang, "notify() said it rang, no doorbell");
    }
  }

  void arm(unsigned index, bool disable_first) {
    Backend::Queue* const queue = back_.queue(static_cast<std::uint16_t>(index));
    if (disable_first && queue != nullptr) {
      const State before = observe();
      queue->disable_notify();
      after(before, "disable_notify()", nullptr);
    }
    const State before = observe();
    const bool idle = back_.arm(static_cast<std::uint16_t>(index));
    after(before, "arm()", nullptr);
    if (!idle) FUZZ_CHECK(back_.running(), "arm() asked a stopped queue to be popped");
  }

  void update_config(std::span<const std::byte> config) {
    const State before = observe();
    const VirtioIvshmemError error = back_.update_config(config);
    after(before, "update_config()", nullptr);
    FUZZ_CHECK(
        error == (config.size() == config_.size() ? VirtioIvshmemError::ok
                                                  : VirtioIvshmemError::config_size_mismatch),
        "update_config(%zu bytes): %s", config.size(), describe(error));
    if (error == VirtioIvshmemError::ok && back_.phase() == Backend::Phase::ready) {
      FUZZ_CHECK(get<std::uint32_t>(0x48) % 2 == 0, "config_generation odd after the update");
    }
  }

  void restart() {
    back_.stop();
    FUZZ_CHECK(link_.peer_state(kBack) == virtio_peer_state::kReset, "stop() left our state");
    FUZZ_CHECK(back_.queue(0) == nullptr && !back_.running(), "stop() left a queue running");
    attach();
  }

  std::size_t config_size() const { return config_.size(); }
  std::uint16_t max_size() const { return max_size_; }

 private:
  static constexpr std::uint32_t kNegotiating =
      virtio_status::kAcknowledge | virtio_status::kDriver | virtio_status::kFeaturesOk;

  struct State {
    bool broken;
    VirtioIvshmemFault fault;
    unsigned vector0_rings;
    std::array<const VirtqLayout*, 2> layouts;
    std::array<VirtqLayout, 2> layout_copies;
  };

  State observe() {
    section_.remember();
    State state{back_.broken(), back_.fault(), link_.rings(0), {}, {}};
    for (std::uint16_t i = 0; i < 2; ++i) {
      state.layouts[i] = back_.enabled_layout(i);
      if (state.layouts[i] != nullptr) state.layout_copies[i] = *state.layouts[i];
    }
    return state;
  }

  void check_segment(std::span<const std::byte> segment) const {
    const std::byte* base = section_.bytes().data();
    FUZZ_CHECK(segment.data() >= base + kPool && segment.size() <= section_.size() - kPool &&
                   segment.data() + segment.size() <= base + section_.size(),
               "segment [%td, +%zu) outside the pool [%llu, %zu)", segment.data() - base,
               segment.size(), ull(kPool), section_.size());
  }

  void check_layout(const VirtqLayout& layout) const {
    const std::uint64_t size = section_.size();
    FUZZ_CHECK(VirtqLayout::valid_queue_size(layout.queue_size) && layout.queue_size <= max_size_,
               "enabled queue of size %u, maximum %u", layout.queue_size, max_size_);
    FUZZ_CHECK(layout.desc % 16 == 0 && layout.avail % 2 == 0 && layout.used % 4 == 0,
               "enabled queue misaligned: %llx %llx %llx", ull(layout.desc), ull(layout.avail),
               ull(layout.used));
    FUZZ_CHECK(layout.desc >= kPool && layout.avail >= kPool && layout.used >= kPool &&
                   layout.desc_end() <= size && layout.avail_end() <= size &&
                   layout.used_end() <= size,
               "enabled queue outside the pool: desc %llx avail %llx used %llx", ull(layout.desc),
               ull(layout.avail), ull(layout.used));
    FUZZ_CHECK(
        !VirtqLayout::overlap(layout.desc, layout.desc_end(), layout.avail, layout.avail_end()) &&
            !VirtqLayout::overlap(layout.desc, layout.desc_end(), layout.used, layout.used_end()) &&
            !VirtqLayout::overlap(layout.avail, layout.avail_end(), layout.used, layout.used_end()),
        "enabled queue areas overlap");
  }

  // The checks after every back-end call; `events` only for service().
  void after(const State& before, const char* call, const Events* events) {
    // Writes: the header page and the used rings of enabled queues only.
    std::vector<SharedRegion::Range> allowed{{0, kPool}};
    for (std::uint16_t i = 0; i < 2; ++i) {
      if (before.layouts[i] != nullptr) {
        allowed.push_back({before.layout_copies[i].used, before.layout_copies[i].used_end()});
      }
      if (const VirtqLayout* layout = back_.enabled_layout(i)) {
        check_layout(*layout);
        allowed.push_back({layout->used, layout->used_end()});
      }
    }
    section_.expect_changed_only(allowed, call);

    const bool broken = back_.broken();
    const VirtioIvshmemFault& fault = back_.fault();
    if (broken) {
      FUZZ_CHECK(
          is_front_end_fault(fault.error) && fault.field != nullptr && fault.field[0] != '\0',
          "%s: broken with fault {%s, '%s'}", call, describe(fault.error),
          fault.field == nullptr ? "(null)" : fault.field);
      std::array<char, 512> text{};
      FUZZ_CHECK(describe_fault(fault, text) > 0 && text[0] != '\0', "empty fault message");
      FUZZ_CHECK(!back_.running() && back_.queue(0) == nullptr && back_.queue(1) == nullptr,
                 "%s: broken yet running", call);
      FUZZ_CHECK((back_.device_status() & virtio_status::kDeviceNeedsReset) != 0,
                 "%s: broken without DEVICE_NEEDS_RESET", call);
    }
    if (broken && !before.broken) {
      FUZZ_CHECK(get<std::uint32_t>(kDeviceStatus) & virtio_status::kDeviceNeedsReset,
                 "%s: latched without DEVICE_NEEDS_RESET in the header", call);
      FUZZ_CHECK(get<std::uint8_t>(kConfigEvent) == 1, "%s: latched without config_event", call);
      FUZZ_CHECK(link_.rings(0) > before.vector0_rings, "%s: latched without vector 0", call);
      if (events != nullptr) FUZZ_CHECK(events->has(Events::kBroken), "latched without kBroken");
    }
    if (broken && before.broken) {
      FUZZ_CHECK(fault.error == before.fault.error && fault.field == before.fault.field &&
                     fault.offset == before.fault.offset && fault.queue == before.fault.queue &&
                     fault.value == before.fault.value,
                 "%s: the latched fault changed", call);
    }
    if (!broken && before.broken) {
      FUZZ_CHECK(events != nullptr && events->has(Events::kReset),
                 "%s cleared broken without a reset", call);
    }

    const std::uint32_t status = back_.device_status();
    if ((status & virtio_status::kFeaturesOk) != 0) {
      const std::uint64_t negotiated = back_.negotiated_features();
      FUZZ_CHECK(
          (negotiated & ~back_.offered_features()) == 0 &&
              (negotiated & kVirtioIvshmemRequiredFeatures) == kVirtioIvshmemRequiredFeatures,
          "FEATURES_OK with features %llx of %llx", ull(negotiated), ull(back_.offered_features()));
    }
    if (back_.running()) {
      FUZZ_CHECK(!broken && (status & virtio_status::kDriverOk) != 0 &&
                     (status & virtio_status::kFeaturesOk) != 0,
                 "running with status %x", status);
      for (std::uint16_t i = 0; i < 2; ++i) {
        if (Backend::Queue* queue = back_.queue(i)) {
          FUZZ_CHECK(queue->event_idx() == back_.event_idx(), "queue %u in the wrong mode", i);
          FUZZ_CHECK(back_.enabled_layout(i) != nullptr, "queue %u handed out, not enabled", i);
        }
      }
    }
  }

  SharedRegion& section_;
  FuzzLink link_;
  std::uint16_t max_size_;
  std::span<const std::byte> config_;
  VirtioIvshmemSpec spec_;
  Backend back_;
  std::array<VirtqLayout, 2> layouts_{};
  std::array<std::uint16_t, 2> avail_idx_{};
};

void run(Script& script, Harness& test, SharedRegion& section) {
  test.attach();
  test.service();
  while (!script.done()) {
    const std::uint8_t op = script.u8();
    const unsigned a = op >> 4;
    switch (static_cast<DeviceLinkCommand>(op & 0x0f)) {
      case DeviceLinkCommand::write_field: {
        const std::uint32_t offset = a < 11 ? kFields[a] : script.u8();
        test.write(offset, script.u64());
        break;
      }
      case DeviceLinkCommand::write_small: {
        const std::uint32_t offset = a < 11 ? kFields[a] : kWriteTransaction + 4 * (a - 11);
        test.write(offset, script.u8());
        break;
      }
      case DeviceLinkCommand::front_state:
        test.set_front_state((a & 3) == 2 ? script.u32() : a & 1);
        if ((a & 4) == 0) test.service();
        break;
      case DeviceLinkCommand::service:
        for (unsigned i = 0; i <= a; ++i) test.service();
        break;
      case DeviceLinkCommand::negotiate: test.negotiate(a); break;
      case DeviceLinkCommand::setup_queue: {
        const std::uint32_t size = 1U << ((a >> 1) % 9);
        const std::uint64_t offset =
            kPool + 16 * (std::uint64_t{script.u16()} % ((section.size() - kPool) / 16));
        test.setup_queue(a & 1, size, offset, script.u8() & 3);
        break;
      }
      case DeviceLinkCommand::driver_ok: test.driver_ok(); break;
      case DeviceLinkCommand::driver_add: {
        const VirtqLayout& layout = test.front_layout(a & 1);
        if (layout.queue_size == 0) break;
        const std::uint32_t n = layout.queue_size;
        const unsigned count = ((a >> 1) & 3) + 1;
        const std::uint32_t first = script.u8() & (n - 1);
        for (unsigned i = 0; i < count; ++i) {
          const std::uint64_t at = layout.desc + 16 * std::uint64_t{(first + i) & (n - 1)};
          const bool last = i + 1 == count;
          const std::uint16_t flags = static_cast<std::uint16_t>(
              (last ? 0 : kVirtqDescNext) | (last && (a & 8) != 0 ? kVirtqDescWrite : 0));
          test.put(at, 4 * std::uint64_t{script.u16()});
          test.put(at + 8, 4 * std::uint32_t{script.u8()});
          test.put(at + 12, flags);
          test.put(at + 14, static_cast<std::uint16_t>((first + i + 1) & (n - 1)));
        }
        const std::uint16_t idx = test.next_avail(a & 1);
        test.put(layout.avail + 4 + 2 * std::uint64_t{idx & (n - 1)},
                 static_cast<std::uint16_t>(first));
        test.put(layout.avail + 2, static_cast<std::uint16_t>(idx + 1));
        break;
      }
      case DeviceLinkCommand::desc_raw: {
        const VirtqLayout& layout = test.front_layout(a & 1);
        if (layout.queue_size == 0) break;
        const std::uint64_t at =
            layout.desc + 16 * std::uint64_t{script.u8() & (layout.queue_size - 1)};
        test.put(at, script.u64());
        test.put(at + 8, script.u32());
        test.put(at + 12, script.u16());
        test.put(at + 14, script.u16());
        break;
      }
      case DeviceLinkCommand::avail_idx: {
        const VirtqLayout& layout = test.front_layout(a & 1);
        if (layout.queue_size == 0) break;
        const std::uint16_t idx =
            (a >> 1) == 7
                ? script.u16()
                : static_cast<std::uint16_t>(test.get<std::uint16_t>(layout.avail + 2) + (a >> 1));
        test.put(layout.avail + 2, idx);
        test.set_avail(a & 1, idx);
        break;
      }
      case DeviceLinkCommand::poke: {
        const std::uint64_t offset = (a & 1) != 0 ? script.u8() : script.u16() % section.size();
        test.put(offset, script.u8());
        break;
      }
      case DeviceLinkCommand::pop: test.pop(a & 1, (a >> 1) + 1, script); break;
      case DeviceLinkCommand::notify: {
        const VirtqLayout& layout = test.front_layout(a & 1);
        if (layout.queue_size != 0 && (a & 2) != 0) {
          test.put(layout.avail, static_cast<std::uint16_t>((a >> 2) & 1));  // NO_INTERRUPT
          test.put(layout.used_event_offset(), script.u16());
        }
        test.notify(a & 1);
        break;
      }
      case DeviceLinkCommand::arm: test.arm(a & 1, (a & 2) != 0); break;
      case DeviceLinkCommand::update_config: {
        std::array<std::byte, 16> config{};
        for (std::byte& b : config) b = static_cast<std::byte>(script.u8());
        const std::size_t size = (a & 1) != 0 ? (a >> 1) : test.config_size();
        test.update_config(std::span<const std::byte>(config).first(size));
        break;
      }
      case DeviceLinkCommand::restart:
        if ((a & 1) != 0) {
          test.restart();
          test.service();
        } else {
          // A write_transaction naming whatever is there, or garbage.
          test.put(kWriteTransaction, std::uint32_t{script.u16()});
          test.service();
        }
        break;
      default: break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  Script script({bytes, size});
  const std::uint8_t config = script.u8();
  const std::uint32_t vectors = (config & 3) + 1U;
  const std::size_t section_size = std::size_t{0x2000} << ((config >> 2) & 3);
  const auto max_size = static_cast<std::uint16_t>(4U << (2 * ((config >> 4) & 3)));
  const std::uint16_t queues = (config & 0x40) != 0 ? 2 : 1;
  static constexpr VirtioConsoleConfig kConsole{80, 25, 1, 0};
  const std::span<const std::byte> device_config =
      (config & 0x80) != 0 ? std::span<const std::byte>{} : std::as_bytes(std::span{&kConsole, 1});
  SharedRegion section(section_size);
  Harness test(section, vectors, queues, max_size, device_config);
  run(script, test, section);
  return 0;
}
