// virtq_device_fuzzer: VirtqDevice (virtq_device.hpp) against a hostile
// driver that writes any descriptor table, avail ring and used_event, and
// any other byte of the R/W section, between device calls.
//
// What it proves, for every input:
//   - every segment pop() hands out lies inside the R/W section (and ASan:
//     the section is its own allocation, so no access leaves it);
//   - pop() yields exactly the chain the descriptor table describes, or the
//     first error docs/virtq.md's validation table names for it; a loop or
//     an over-long chain ends in chain_too_long, so nothing hangs;
//   - avail.idx is re-read exactly when every head seen was taken: then
//     empty when it did not move, avail_idx_jump when it is more than N
//     ahead;
//   - the device writes only what it owns: pop() writes nothing, push()
//     exactly its used entry, publish() used.idx, arm_notify() avail_event;
//   - push() rejects heads not in flight and over-long lengths, unlatched;
//   - publish() and arm_notify() answer by the event-idx rule, or, after a
//     reinit_flags (flag-based suppression), by avail.flags' NO_INTERRUPT and
//     by clearing used.flags' NO_NOTIFY, which disable_notify() sets;
//   - with a pool offset P, no area or buffer below P is accepted;
//   - the first peer fault is latched: every later call returns it, pop()
//     yields nothing, nothing more is written, and the fault stays the same;
//   - init() with a bad layout fails with a set-up error, writes nothing,
//     and leaves every call answering not_initialized.
//
// Input: byte 0 = config, byte 1 = script length / 2, the script, then the
// image copied over the descriptor table, the avail ring and the data area.
//   config bits 0-3  log2(N) (taken mod 10: N = 1 .. 512; above 256, the
//                    MaxQueueSize, init() must refuse)
//   config bit 4     MaxSegments 4 instead of 16
//   config bit 5     place the three areas from the script (from_areas)
//   config bits 6-7  queue offset 16 * k in the section
// The script is DeviceCommand (commands.hpp); with config bit 5 it starts
// with the three area offsets (u16 each).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "cellink/transports/virtq.hpp"
#include "cellink/transports/virtq_device.hpp"
#include "commands.hpp"
#include "script.hpp"
#include "shared_region.hpp"

namespace {

using cellink::fuzz::DeviceCommand;
using cellink::fuzz::Script;
using cellink::fuzz::SharedRegion;
using namespace cellink::transports;
using ull = unsigned long long;

constexpr std::uint32_t kMaxQueueSize = 256;

template <std::size_t MaxSegments>
class DeviceUnderTest {
 public:
  using Device = VirtqDevice<kMaxQueueSize, MaxSegments>;
  using Chain = typename Device::Chain;

  DeviceUnderTest(SharedRegion& section, const VirtqLayout& layout)
      : section_(section), layout_(layout), n_(layout.queue_size) {}

  // init(); false when it failed (and was checked to fail cleanly).
  bool init(bool event_idx = true, std::uint64_t pool = 0) {
    section_.remember();
    const VirtqError error = device_.init(section_.bytes(), layout_, {event_idx, pool});
    const bool below_pool = layout_.desc < pool || layout_.avail < pool || layout_.used < pool;
    if (error != VirtqError::ok) {
      FUZZ_CHECK(!is_peer_fault(error) && error != VirtqError::empty, "init failed with %s",
                 describe(error));
      section_.expect_unchanged("a failed init()");
      if (below_pool && layout_.queue_size <= kMaxQueueSize) {
        FUZZ_CHECK(
            error == VirtqError::queue_out_of_section || error == VirtqError::bad_queue_size ||
                error == VirtqError::misaligned_area || error == VirtqError::overlapping_areas,
            "an area below the pool: %s", describe(error));
      }
      Chain chain;
      FUZZ_CHECK(device_.pop(chain) == VirtqError::not_initialized && chain.empty(),
                 "pop() after a failed init()");
      FUZZ_CHECK(device_.push(0, 0) == VirtqError::not_initialized, "push() before init()");
      FUZZ_CHECK(!device_.publish() && !device_.arm_notify(), "publish() before init()");
      section_.expect_unchanged("calls before a successful init()");
      return false;
    }
    FUZZ_CHECK(layout_.queue_size <= kMaxQueueSize, "init() accepted N %u", layout_.queue_size);
    FUZZ_CHECK(!below_pool, "init() accepted an area below the pool %llu", ull(pool));
    FUZZ_CHECK(device_.event_idx() == event_idx, "init() chose the wrong suppression mode");
    event_idx_ = event_idx;
    pool_ = pool;
    used_flags_ = 0;
    in_flight_.assign(n_, false);
    writable_.assign(n_, 0);
    last_avail_ = 0;
    avail_seen_ = 0;
    pushed_ = 0;
    published_ = 0;
    fault_ = VirtqError::ok;
    return true;
  }

  std::uint16_t last_avail() const { return last_avail_; }
  std::vector<std::uint16_t> in_flight_heads() const {
    std::vector<std::uint16_t> heads;
    for (std::uint32_t i = 0; i < n_; ++i) {
      if (in_flight_[i]) heads.push_back(static_cast<std::uint16_t>(i));
    }
    return heads;
  }

  void pop() {
    section_.remember();
    const std::uint16_t avail_idx = section_.load<std::uint16_t>(layout_.avail + 2);
    const std::uint16_t ahead = static_cast<std::uint16_t>(avail_idx - last_avail_);
    const std::uint16_t head =
        section_.load<std::uint16_t>(layout_.avail + 4 + 2 * std::uint64_t{last_avail_ & (n_ - 1)});
    Chain chain;
    const VirtqError error = device_.pop(chain);
    section_.expect_unchanged("pop()");
    if (fault_ != VirtqError::ok) {
      FUZZ_CHECK(error == fault_ && chain.empty(), "latched %s, pop() returned %s",
                 describe(fault_), describe(error));
      check_fault_stable();
      return;
    }
    // avail.idx is read again only once every head seen at the last read
    // was taken; then it must be at most N ahead.
    VirtqError expected_index = VirtqError::ok;
    if (last_avail_ == avail_seen_) {
      if (ahead > n_) {
        expected_index = VirtqError::avail_idx_jump;
      } else if (ahead == 0) {
        expected_index = VirtqError::empty;
      } else {
        avail_seen_ = avail_idx;
      }
    }
    if (expected_index != VirtqError::ok) {
      FUZZ_CHECK(error == expected_index && chain.empty(),
                 "avail.idx %u ahead of N %u: %s, expected %s", ahead, n_, describe(error),
                 describe(expected_index));
      if (error == VirtqError::avail_idx_jump) latch(error);
      return;
    }
    const Expected expected = walk(head);
    FUZZ_CHECK(error == expected.error, "head %u: pop() returned %s, the rules say %s", head,
               describe(error), describe(expected.error));
    if (error != VirtqError::ok) {
      FUZZ_CHECK(is_peer_fault(error) && chain.empty(), "pop() failed with %s and a chain",
                 describe(error));
      latch(error);
      return;
    }
    check_chain(chain, expected);
    in_flight_[head] = true;
    writable_[head] = expected.writable_bytes;
    ++last_avail_;
    use_chain(chain);
  }

  void push(std::uint16_t head, std::uint32_t written) {
    section_.remember();
    const VirtqError error = device_.push(head, written);
    if (fault_ != VirtqError::ok) {
      FUZZ_CHECK(error == fault_, "latched %s, push() returned %s", describe(fault_),
                 describe(error));
      section_.expect_unchanged("push() after a fault");
      return;
    }
    if (head >= n_ || !in_flight_[head]) {
      FUZZ_CHECK(error == VirtqError::not_in_flight, "push(%u) of a head not in flight: %s", head,
                 describe(error));
      section_.expect_unchanged("a refused push()");
      return;
    }
    if (written > writable_[head]) {
      FUZZ_CHECK(error == VirtqError::written_too_long, "push(%u, %u) above %llu: %s", head,
                 written, ull(writable_[head]), describe(error));
      section_.expect_unchanged("a refused push()");
      return;
    }
    FUZZ_CHECK(error == VirtqError::ok, "push(%u, %u) returned %s", head, written, describe(error));
    const std::uint64_t entry = layout_.used + 4 + 8 * std::uint64_t{pushed_ & (n_ - 1)};
    section_.expect_changed_only(entry, entry + 8, "push()");
    FUZZ_CHECK(section_.load<std::uint32_t>(entry) == head &&
                   section_.load<std::uint32_t>(entry + 4) == written,
               "used entry {%u, %u}, pushed {%u, %u}", section_.load<std::uint32_t>(entry),
               section_.load<std::uint32_t>(entry + 4), head, written);
    in_flight_[head] = false;
    ++pushed_;
  }

  void publish() {
    section_.remember();
    const std::uint16_t used_event = section_.load<std::uint16_t>(layout_.used_event_offset());
    const std::uint16_t avail_flags = section_.load<std::uint16_t>(layout_.avail);
    const bool notify = device_.publish();
    if (fault_ != VirtqError::ok) {
      FUZZ_CHECK(!notify, "a faulted device asked to notify");
      section_.expect_unchanged("publish() after a fault");
      return;
    }
    section_.expect_changed_only(layout_.used + 2, layout_.used + 4, "publish()");
    FUZZ_CHECK(section_.load<std::uint16_t>(layout_.used + 2) == pushed_,
               "used.idx %u after %u pushes", section_.load<std::uint16_t>(layout_.used + 2),
               pushed_);
    if (event_idx_) {
      FUZZ_CHECK(notify == vring_need_event(used_event, pushed_, published_),
                 "publish %u -> %u with used_event %u: notify %d", published_, pushed_, used_event,
                 int(notify));
    } else {
      FUZZ_CHECK(
          notify == (pushed_ != published_ && (avail_flags & kVirtqAvailFlagNoInterrupt) == 0),
          "flags: publish %u -> %u with avail.flags %u: notify %d", published_, pushed_,
          avail_flags, int(notify));
    }
    published_ = pushed_;
  }

  void disable_notify() {
    section_.remember();
    device_.disable_notify();
    if (fault_ != VirtqError::ok || event_idx_) {
      section_.expect_unchanged("disable_notify() after a fault or with EVENT_IDX");
      return;
    }
    check_used_flags(kVirtqUsedFlagNoNotify, "disable_notify()");
  }

  void arm_notify() {
    section_.remember();
    const std::uint16_t avail_idx = section_.load<std::uint16_t>(layout_.avail + 2);
    const bool idle = device_.arm_notify();
    if (fault_ != VirtqError::ok) {
      FUZZ_CHECK(!idle, "a faulted device said it may sleep");
      section_.expect_unchanged("arm_notify() after a fault");
      return;
    }
    if (event_idx_) {
      const std::uint64_t event = layout_.avail_event_offset();
      section_.expect_changed_only(event, event + 2, "arm_notify()");
      FUZZ_CHECK(section_.load<std::uint16_t>(event) == last_avail_, "avail_event %u, expected %u",
                 section_.load<std::uint16_t>(event), last_avail_);
    } else {
      check_used_flags(0, "arm_notify()");
    }
    FUZZ_CHECK(idle == (avail_idx == last_avail_), "arm_notify() %d with avail.idx %u, taken %u",
               int(idle), avail_idx, last_avail_);
  }

 private:
  struct Expected {
    VirtqError error = VirtqError::ok;
    std::vector<VirtqBuffer> readable;
    std::vector<VirtqBuffer> writable;
    std::uint64_t writable_bytes = 0;
  };

  // docs/virtq.md, "Validation by the device", applied to the table as it is.
  Expected walk(std::uint16_t head) const {
    Expected out;
    const auto fail = [&](VirtqError error) {
      out.error = error;
      return out;
    };
    if (head >= n_) return fail(VirtqError::bad_head);
    if (in_flight_[head]) return fail(VirtqError::head_in_use);
    const std::uint64_t size = section_.size();
    const std::uint64_t max_length = n_ < MaxSegments ? n_ : MaxSegments;
    std::uint32_t index = head;
    for (std::uint64_t length = 1;; ++length) {
      if (length > max_length) return fail(VirtqError::chain_too_long);
      const std::uint64_t at = layout_.desc + 16 * std::uint64_t{index};
      const VirtqDesc desc{section_.load<std::uint64_t>(at), section_.load<std::uint32_t>(at + 8),
                           section_.load<std::uint16_t>(at + 12),
                           section_.load<std::uint16_t>(at + 14)};
      if ((desc.flags & kVirtqDescIndirect) != 0) return fail(VirtqError::indirect_unsupported);
      if (desc.len > size - pool_ || desc.addr < pool_ || desc.addr > size - desc.len) {
        return fail(VirtqError::buffer_out_of_section);
      }
      if ((desc.flags & kVirtqDescWrite) != 0) {
        out.writable.push_back({desc.addr, desc.len});
        out.writable_bytes += desc.len;
      } else if (!out.writable.empty()) {
        return fail(VirtqError::bad_order);
      } else {
        out.readable.push_back({desc.addr, desc.len});
      }
      if ((desc.flags & kVirtqDescNext) == 0) return out;
      if (desc.next >= n_) return fail(VirtqError::bad_next);
      index = desc.next;
    }
  }

  void check_chain(const Chain& chain, const Expected& expected) const {
    FUZZ_CHECK(chain.readable_count() == expected.readable.size() &&
                   chain.writable_count() == expected.writable.size() &&
                   chain.writable_bytes() == expected.writable_bytes,
               "chain of %zu+%zu segments, table says %zu+%zu", chain.readable_count(),
               chain.writable_count(), expected.readable.size(), expected.writable.size());
    std::uint64_t readable_bytes = 0;
    for (std::size_t i = 0; i < expected.readable.size(); ++i) {
      check_segment(chain.readable(i), expected.readable[i]);
      readable_bytes += expected.readable[i].len;
    }
    FUZZ_CHECK(chain.readable_bytes() == readable_bytes, "readable bytes %llu, expected %llu",
               ull(chain.readable_bytes()), ull(readable_bytes));
    for (std::size_t i = 0; i < expected.writable.size(); ++i) {
      check_segment(chain.writable(i), expected.writable[i]);
    }
    FUZZ_CHECK(chain.readable(expected.readable.size()).empty() &&
                   chain.writable(expected.writable.size()).empty(),
               "a segment past the counts is not empty");
  }

  void check_segment(std::span<const std::byte> segment, const VirtqBuffer& expected) const {
    const std::byte* base = section_.bytes().data();
    FUZZ_CHECK(segment.data() >= base && segment.size() <= section_.size() &&
                   segment.data() + segment.size() <= base + section_.size(),
               "segment [%td, +%zu) outside the %zu-byte section", segment.data() - base,
               segment.size(), section_.size());
    FUZZ_CHECK(static_cast<std::uint64_t>(segment.data() - base) == expected.offset &&
                   segment.size() == expected.len,
               "segment [%td, +%zu), descriptor says [%llu, +%u)", segment.data() - base,
               segment.size(), ull(expected.offset), expected.len);
  }

  // What a device does with a chain: reads the readable bytes, writes the
  // writable ones (ASan checks both against the section allocation).
  static void use_chain(const Chain& chain) {
    unsigned sum = 0;
    for (std::size_t i = 0; i < chain.readable_count(); ++i) {
      for (const std::byte b : chain.readable(i)) sum += static_cast<unsigned>(b);
    }
    for (std::size_t i = 0; i < chain.writable_count(); ++i) {
      const std::span<std::byte> out = chain.writable(i);
      if (!out.empty()) std::memset(out.data(), static_cast<int>(sum & 0xff), out.size());
    }
  }

  // Flags mode: the call wrote at most used.flags, and left `flags` there
  // (or, when the device's copy already said so, wrote nothing).
  void check_used_flags(std::uint16_t flags, const char* call) {
    const std::uint16_t now = section_.load<std::uint16_t>(layout_.used);
    if (used_flags_ == flags) {
      section_.expect_unchanged(call);
    } else {
      section_.expect_changed_only(layout_.used, layout_.used + 2, call);
      FUZZ_CHECK(now == flags, "%s left used.flags %u, expected %u", call, now, flags);
    }
    used_flags_ = flags;
  }

  void latch(VirtqError error) {
    fault_ = error;
    const VirtqFault& fault = device_.fault();
    FUZZ_CHECK(fault.error == error && fault.field != nullptr && fault.field[0] != '\0',
               "fault record {%s, '%s'} for %s", describe(fault.error),
               fault.field == nullptr ? "(null)" : fault.field, describe(error));
    fault_record_ = fault;
  }

  void check_fault_stable() const {
    const VirtqFault& fault = device_.fault();
    FUZZ_CHECK(fault.error == fault_record_.error && fault.field == fault_record_.field &&
                   fault.position == fault_record_.position && fault.value == fault_record_.value &&
                   fault.expected_min == fault_record_.expected_min &&
                   fault.expected_max == fault_record_.expected_max,
               "the latched fault changed");
  }

  SharedRegion& section_;
  VirtqLayout layout_;
  std::uint32_t n_;
  Device device_;
  std::vector<bool> in_flight_;
  std::vector<std::uint64_t> writable_;
  std::uint16_t last_avail_ = 0;  // chains popped
  std::uint16_t avail_seen_ = 0;  // avail.idx as the device last read it
  std::uint16_t pushed_ = 0;      // used entries pushed
  std::uint16_t published_ = 0;   // used.idx as published
  VirtqError fault_ = VirtqError::ok;
  VirtqFault fault_record_;
  bool event_idx_ = true;         // the suppression mode of the last init()
  std::uint64_t pool_ = 0;        // the pool offset of the last init()
  std::uint16_t used_flags_ = 0;  // used.flags as the device last wrote it (flags mode)
};

// Runs the script (commands: DeviceCommand, commands.hpp).
template <std::size_t MaxSegments>
void run(Script script, SharedRegion& section, const VirtqLayout& layout, std::uint64_t data,
         std::span<const std::uint8_t> image) {
  DeviceUnderTest<MaxSegments> test(section, layout);
  if (!test.init()) return;
  const std::uint32_t n = layout.queue_size;
  // The image: descriptor table, then avail ring, then the data area (which
  // is the whole section when the areas are placed by the script).
  const std::uint64_t table = VirtqLayout::desc_bytes(n);
  const std::uint64_t ring = VirtqLayout::avail_bytes(n);
  section.fill(data, section.size() - data, SharedRegion::skip(image, table + ring));
  section.fill(layout.desc, table, image);
  section.fill(layout.avail, ring, SharedRegion::skip(image, table));
  const auto desc_at = [&](std::uint32_t index) {
    return layout.desc + 16 * std::uint64_t{index & (n - 1)};
  };
  while (!script.done()) {
    const std::uint8_t op = script.u8();
    const unsigned a = op >> 4;
    switch (static_cast<DeviceCommand>(op & 0x0f)) {
      case DeviceCommand::pop:
        for (unsigned i = 0; i <= a; ++i) test.pop();
        break;
      case DeviceCommand::push_held: {
        const std::vector<std::uint16_t> heads = test.in_flight_heads();
        const std::uint16_t written = script.u16();
        if (!heads.empty()) test.push(heads[a % heads.size()], written);
        break;
      }
      case DeviceCommand::push: {
        const std::uint16_t head = script.u16();
        test.push(head, script.u16());
        break;
      }
      case DeviceCommand::publish: test.publish(); break;
      case DeviceCommand::arm_notify: test.arm_notify(); break;
      case DeviceCommand::driver_add: {
        const unsigned count = (a & 3) + 1;
        const unsigned writable = a >> 2;
        const std::uint32_t first = script.u8() & (n - 1);
        for (unsigned i = 0; i < count; ++i) {
          const std::uint32_t index = (first + i) & (n - 1);
          const bool last = i + 1 == count;
          const std::uint16_t flags = static_cast<std::uint16_t>(
              (last ? 0 : kVirtqDescNext) | (i + writable >= count ? kVirtqDescWrite : 0));
          section.store<std::uint64_t>(desc_at(index), data + 4 * std::uint64_t{script.u8()});
          section.store<std::uint32_t>(desc_at(index) + 8, 4 * std::uint32_t{script.u8()});
          section.store<std::uint16_t>(desc_at(index) + 12, flags);
          section.store<std::uint16_t>(desc_at(index) + 14,
                                       static_cast<std::uint16_t>((index + 1) & (n - 1)));
        }
        const std::uint16_t avail_idx = section.load<std::uint16_t>(layout.avail + 2);
        section.store<std::uint16_t>(layout.avail + 4 + 2 * std::uint64_t{avail_idx & (n - 1)},
                                     static_cast<std::uint16_t>(first));
        section.store<std::uint16_t>(layout.avail + 2, static_cast<std::uint16_t>(avail_idx + 1));
        break;
      }
      case DeviceCommand::avail_idx: {
        const std::uint16_t avail_idx = section.load<std::uint16_t>(layout.avail + 2);
        section.store<std::uint16_t>(
            layout.avail + 2, a == 15 ? script.u16() : static_cast<std::uint16_t>(avail_idx + a));
        break;
      }
      case DeviceCommand::avail_slot: {
        const std::uint32_t slot = script.u8() & (n - 1);
        section.store<std::uint16_t>(layout.avail + 4 + 2 * std::uint64_t{slot}, script.u16());
        break;
      }
      case DeviceCommand::desc_raw: {
        const std::uint64_t at = desc_at(script.u8());
        section.store<std::uint64_t>(at, script.u64());
        section.store<std::uint32_t>(at + 8, script.u32());
        section.store<std::uint16_t>(at + 12, script.u16());
        section.store<std::uint16_t>(at + 14, script.u16());
        break;
      }
      case DeviceCommand::desc_coarse: {
        const std::uint64_t at = desc_at(script.u8());
        section.store<std::uint64_t>(at, 16 * std::uint64_t{script.u16()});
        section.store<std::uint32_t>(at + 8, script.u16());
        break;
      }
      case DeviceCommand::poke: {
        const std::size_t offset = script.u16() % section.size();
        section.store<std::uint8_t>(offset, script.u8());
        break;
      }
      case DeviceCommand::used_event:
        section.store<std::uint16_t>(layout.used_event_offset(), script.u16());
        break;
      case DeviceCommand::reinit:
        if (!test.init()) return;
        break;
      case DeviceCommand::reinit_flags: {
        // a & 1: the pool starts at the first area; a & 2: 16 bytes past it.
        const std::uint64_t first = std::min({layout.desc, layout.avail, layout.used});
        const std::uint64_t pool = (a & 2) != 0 ? first + 16 : (a & 1) != 0 ? first : 0;
        if (!test.init((a & 4) != 0, pool)) return;
        break;
      }
      case DeviceCommand::disable_notify: test.disable_notify(); break;
      default: break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  Script input({bytes, size});
  const std::uint8_t config = input.u8();
  Script script = input.take(std::size_t{input.u8()} * 2);
  const std::span<const std::uint8_t> image = input.rest();

  const std::uint32_t n = 1U << ((config & 0x0f) % 10);
  const std::uint64_t offset = 16 * static_cast<std::uint64_t>(config >> 6);
  VirtqLayout layout;
  std::uint64_t data = 0;
  std::size_t section_size = 0;
  if ((config & 0x20) != 0) {
    // Areas anywhere in a 16 KiB section, possibly misaligned or overlapping.
    section_size = 16384;
    layout = {n, script.u16(), script.u16(), script.u16()};
    data = 0;
  } else {
    FUZZ_CHECK(VirtqLayout::compute(offset, n, layout) == VirtqError::ok,
               "compute() refused N %u at %llu", n, static_cast<unsigned long long>(offset));
    data = (layout.end() + 15) / 16 * 16;
    section_size = data + 1024;
  }
  SharedRegion section(section_size);
  if ((config & 0x10) != 0) {
    run<4>(script, section, layout, data, image);
  } else {
    run<16>(script, section, layout, data, image);
  }
  return 0;
}
