// virtq_driver_fuzzer: VirtqDriver (virtq_driver.hpp) against a hostile
// device that writes any used ring, used.idx and avail_event, and any other
// byte of the R/W section, between driver calls.
//
// What it proves, for every input:
//   - collect() hands back only chains the driver published and has not
//     collected, with their own token and a length no larger than their
//     writable bytes; anything else is the fault docs/virtq.md names
//     (used_idx_jump, bad_used_id, bad_used_len), latched for good;
//   - used.idx is re-read exactly when every entry seen was collected:
//     then empty when it did not move, used_idx_jump when it is more than
//     the outstanding chains ahead;
//   - add() applies the caller checks in the documented order, and on ok
//     writes exactly the new chain's descriptors (flags, links, buffers) and
//     one avail slot, never a descriptor of a chain still in flight;
//   - the free-descriptor count always matches the chains in flight;
//   - the driver writes only what it owns: collect() nothing, publish()
//     avail.idx, arm_interrupt() used_event; once faulted, nothing at all;
//   - publish() and arm_interrupt() answer by the event-idx rule;
//   - nothing reads or writes outside the section (ASan);
//   - init() of a queue above MaxQueueSize fails cleanly, and every call
//     then answers not_initialized and writes nothing.
//
// Input: byte 0 = config (bits 0-3: log2(N) mod 10, N = 1 .. 512, above
// the MaxQueueSize 256 init() must refuse; bits 6-7: queue offset 16 * k),
// then a script of DriverCommand (commands.hpp).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <vector>

#include "cellink/transports/virtq.hpp"
#include "cellink/transports/virtq_driver.hpp"
#include "commands.hpp"
#include "script.hpp"
#include "shared_region.hpp"

namespace {

using cellink::fuzz::DriverCommand;
using cellink::fuzz::Script;
using cellink::fuzz::SharedRegion;
using namespace cellink::transports;
using ull = unsigned long long;

constexpr std::uint32_t kMaxQueueSize = 256;

class DriverUnderTest {
 public:
  DriverUnderTest(SharedRegion& section, const VirtqLayout& layout)
      : section_(section), layout_(layout), n_(layout.queue_size) {}

  // init(); false when it failed (and was checked to fail cleanly).
  bool init() {
    section_.remember();
    const VirtqError error = driver_.init(section_.bytes(), layout_);
    if (error != VirtqError::ok) {
      FUZZ_CHECK(error == VirtqError::queue_too_large && n_ > kMaxQueueSize,
                 "init() of N %u failed with %s", n_, describe(error));
      section_.expect_unchanged("a failed init()");
      VirtqCompletion completion;
      const VirtqBuffer buffer{0, 0};
      FUZZ_CHECK(driver_.add({&buffer, 1}, {}, 0) == VirtqError::not_initialized &&
                     driver_.collect(completion) == VirtqError::not_initialized &&
                     !driver_.publish() && !driver_.arm_interrupt(),
                 "calls after a failed init() did not answer not_initialized");
      section_.expect_unchanged("calls before a successful init()");
      return false;
    }
    FUZZ_CHECK(n_ <= kMaxQueueSize, "init() accepted N %u", n_);
    chains_.clear();
    owner_.assign(n_, kFree);
    added_ = published_ = collected_ = used_seen_ = 0;
    fault_ = VirtqError::ok;
    check_free();
    return true;
  }

  std::vector<std::uint16_t> published_heads() const {
    std::vector<std::uint16_t> heads;
    for (const auto& [head, chain] : chains_) {
      if (chain.published) heads.push_back(head);
    }
    return heads;
  }
  std::uint64_t writable_of(std::uint16_t head) const { return chains_.at(head).writable; }

  void add(const std::vector<VirtqBuffer>& out, const std::vector<VirtqBuffer>& in) {
    section_.remember();
    const std::uint32_t token = next_token_++;
    const VirtqError error = driver_.add(out, in, token);
    if (fault_ != VirtqError::ok) {
      FUZZ_CHECK(error == fault_, "latched %s, add() returned %s", describe(fault_),
                 describe(error));
      section_.expect_unchanged("add() after a fault");
      return;
    }
    const VirtqError expected = expect_add(out, in);
    FUZZ_CHECK(error == expected, "add(%zu out, %zu in) returned %s, the rules say %s", out.size(),
               in.size(), describe(error), describe(expected));
    if (error != VirtqError::ok) {
      section_.expect_unchanged("a refused add()");
      return;
    }
    // Walk the new chain in the table: fresh descriptors, the right buffers.
    const std::uint64_t slot = layout_.avail + 4 + 2 * std::uint64_t{added_ & (n_ - 1)};
    const std::uint16_t head = section_.load<std::uint16_t>(slot);
    FUZZ_CHECK(head < n_, "avail slot holds head %u", head);
    Chain chain{token, 0, {}, false};
    std::vector<SharedRegion::Range> written{{slot, slot + 2}};
    std::uint16_t index = head;
    const std::size_t count = out.size() + in.size();
    for (std::size_t i = 0; i < count; ++i) {
      FUZZ_CHECK(index < n_ && owner_[index] == kFree,
                 "chain uses descriptor %u, which is not free", index);
      owner_[index] = head;
      chain.descriptors.push_back(index);
      const std::uint64_t at = layout_.desc + 16 * std::uint64_t{index};
      written.push_back({at, at + 16});
      const bool is_in = i >= out.size();
      const VirtqBuffer& buffer = is_in ? in[i - out.size()] : out[i];
      const bool last = i + 1 == count;
      const std::uint16_t flags = section_.load<std::uint16_t>(at + 12);
      FUZZ_CHECK(section_.load<std::uint64_t>(at) == buffer.offset &&
                     section_.load<std::uint32_t>(at + 8) == buffer.len &&
                     flags == ((last ? 0 : kVirtqDescNext) | (is_in ? kVirtqDescWrite : 0)),
                 "descriptor %u does not describe buffer %zu", index, i);
      if (is_in) chain.writable += buffer.len;
      index = section_.load<std::uint16_t>(at + 14);
    }
    section_.expect_changed_only(written, "add() (outside its chain and avail slot)");
    chains_[head] = chain;
    ++added_;
    check_free();
  }

  void publish() {
    section_.remember();
    const std::uint16_t avail_event = section_.load<std::uint16_t>(layout_.avail_event_offset());
    const bool notify = driver_.publish();
    if (fault_ != VirtqError::ok) {
      FUZZ_CHECK(!notify, "a faulted driver asked to notify");
      section_.expect_unchanged("publish() after a fault");
      return;
    }
    section_.expect_changed_only(layout_.avail + 2, layout_.avail + 4, "publish()");
    FUZZ_CHECK(section_.load<std::uint16_t>(layout_.avail + 2) == added_,
               "avail.idx %u after %u adds", section_.load<std::uint16_t>(layout_.avail + 2),
               added_);
    FUZZ_CHECK(notify == vring_need_event(avail_event, added_, published_),
               "publish %u -> %u with avail_event %u: notify %d", published_, added_, avail_event,
               int(notify));
    for (auto& [head, chain] : chains_) chain.published = true;
    published_ = added_;
  }

  void collect() {
    section_.remember();
    const std::uint16_t used_idx = section_.load<std::uint16_t>(layout_.used + 2);
    const std::uint16_t ahead = static_cast<std::uint16_t>(used_idx - collected_);
    const std::uint16_t outstanding = static_cast<std::uint16_t>(published_ - collected_);
    const std::uint64_t entry = layout_.used + 4 + 8 * std::uint64_t{collected_ & (n_ - 1)};
    const std::uint32_t id = section_.load<std::uint32_t>(entry);
    const std::uint32_t len = section_.load<std::uint32_t>(entry + 4);
    VirtqCompletion completion;
    const VirtqError error = driver_.collect(completion);
    section_.expect_unchanged("collect()");
    if (fault_ != VirtqError::ok) {
      FUZZ_CHECK(error == fault_, "latched %s, collect() returned %s", describe(fault_),
                 describe(error));
      return;
    }
    // docs/virtq.md: used.idx is read again only once every entry seen at
    // the last read was collected; then it must be at most `outstanding`
    // ahead.
    VirtqError expected = VirtqError::ok;
    if (collected_ == used_seen_) {
      if (ahead > outstanding) {
        expected = VirtqError::used_idx_jump;
      } else if (ahead == 0) {
        expected = VirtqError::empty;
      } else {
        used_seen_ = used_idx;
      }
    }
    if (expected != VirtqError::ok) {
      FUZZ_CHECK(error == expected, "used.idx %u ahead, %u outstanding: %s, expected %s", ahead,
                 outstanding, describe(error), describe(expected));
      if (error == VirtqError::used_idx_jump) latch(error);
      return;
    }
    const auto chain = id < n_ ? chains_.find(static_cast<std::uint16_t>(id)) : chains_.end();
    const bool known = chain != chains_.end() && chain->second.published;
    if (!known) {
      FUZZ_CHECK(error == VirtqError::bad_used_id, "used id %u (not in flight): %s", id,
                 describe(error));
      latch(error);
      return;
    }
    if (len > chain->second.writable) {
      FUZZ_CHECK(error == VirtqError::bad_used_len, "used len %u above %llu: %s", len,
                 ull(chain->second.writable), describe(error));
      latch(error);
      return;
    }
    FUZZ_CHECK(error == VirtqError::ok, "valid used entry {%u, %u}: %s", id, len, describe(error));
    FUZZ_CHECK(completion.token == chain->second.token && completion.len == len,
               "completion {token %u, len %u}, expected {%u, %u}", completion.token, completion.len,
               chain->second.token, len);
    for (const std::uint16_t index : chain->second.descriptors) owner_[index] = kFree;
    chains_.erase(chain);
    ++collected_;
    check_free();
  }

  void arm_interrupt() {
    section_.remember();
    const std::uint16_t used_idx = section_.load<std::uint16_t>(layout_.used + 2);
    const bool idle = driver_.arm_interrupt();
    if (fault_ != VirtqError::ok) {
      FUZZ_CHECK(!idle, "a faulted driver said it may sleep");
      section_.expect_unchanged("arm_interrupt() after a fault");
      return;
    }
    const std::uint64_t event = layout_.used_event_offset();
    section_.expect_changed_only(event, event + 2, "arm_interrupt()");
    FUZZ_CHECK(section_.load<std::uint16_t>(event) == collected_, "used_event %u, expected %u",
               section_.load<std::uint16_t>(event), collected_);
    FUZZ_CHECK(idle == (used_idx == collected_), "arm_interrupt() %d with used.idx %u, taken %u",
               int(idle), used_idx, collected_);
  }

 private:
  static constexpr std::uint32_t kFree = ~std::uint32_t{0};

  struct Chain {
    std::uint32_t token = 0;
    std::uint64_t writable = 0;
    std::vector<std::uint16_t> descriptors;
    bool published = false;
  };

  // docs/virtq.md, "add() rejects the caller's own mistakes", in order.
  VirtqError expect_add(const std::vector<VirtqBuffer>& out,
                        const std::vector<VirtqBuffer>& in) const {
    const std::size_t count = out.size() + in.size();
    if (count == 0) return VirtqError::no_buffers;
    if (count > n_) return VirtqError::too_many_buffers;
    if (count > free_count()) return VirtqError::no_space;
    const std::uint64_t size = section_.size();
    for (const auto* list : {&out, &in}) {
      for (const VirtqBuffer& buffer : *list) {
        if (buffer.len > size || buffer.offset > size - buffer.len) {
          return VirtqError::out_of_section;
        }
        const std::uint64_t end = buffer.offset + buffer.len;
        if (VirtqLayout::overlap(buffer.offset, end, layout_.desc, layout_.desc_end()) ||
            VirtqLayout::overlap(buffer.offset, end, layout_.avail, layout_.avail_end()) ||
            VirtqLayout::overlap(buffer.offset, end, layout_.used, layout_.used_end())) {
          return VirtqError::overlaps_queue;
        }
      }
    }
    return VirtqError::ok;
  }

  std::uint32_t free_count() const {
    return static_cast<std::uint32_t>(std::count(owner_.begin(), owner_.end(), kFree));
  }

  void check_free() const {
    FUZZ_CHECK(driver_.free_descriptors() == free_count(),
               "free_descriptors() %u, %u not in a chain", driver_.free_descriptors(),
               free_count());
  }

  void latch(VirtqError error) {
    const VirtqFault& fault = driver_.fault();
    FUZZ_CHECK(driver_.error() == error && fault.error == error && fault.field != nullptr &&
                   fault.field[0] != '\0',
               "fault record %s for %s", describe(fault.error), describe(error));
    fault_ = error;
  }

  SharedRegion& section_;
  VirtqLayout layout_;
  std::uint32_t n_;
  VirtqDriver<kMaxQueueSize> driver_;
  std::map<std::uint16_t, Chain> chains_;  // by head: added or published, not collected
  std::vector<std::uint32_t> owner_;       // head owning each descriptor, or kFree
  std::uint16_t added_ = 0;
  std::uint16_t published_ = 0;
  std::uint16_t collected_ = 0;
  std::uint16_t used_seen_ = 0;  // used.idx as the driver last read it
  std::uint32_t next_token_ = 1;
  VirtqError fault_ = VirtqError::ok;
};

// Runs the script (commands: DriverCommand, commands.hpp).
void run(Script script, SharedRegion& section, const VirtqLayout& layout, std::uint64_t data) {
  DriverUnderTest test(section, layout);
  if (!test.init()) return;
  const std::uint32_t n = layout.queue_size;
  const auto buffer = [&]() {
    const std::uint8_t b = script.u8();
    if (b < 0x80) return VirtqBuffer{data + 4 * std::uint64_t{b}, 4 * std::uint32_t{script.u8()}};
    const std::uint16_t offset = script.u16();
    return VirtqBuffer{offset, script.u16()};
  };
  while (!script.done()) {
    const std::uint8_t op = script.u8();
    const unsigned a = op >> 4;
    switch (static_cast<DriverCommand>(op & 0x0f)) {
      case DriverCommand::add: {
        std::vector<VirtqBuffer> out;
        std::vector<VirtqBuffer> in;
        for (unsigned i = 0; i < (a & 3); ++i) out.push_back(buffer());
        for (unsigned i = 0; i < (a >> 2); ++i) in.push_back(buffer());
        test.add(out, in);
        break;
      }
      case DriverCommand::publish: test.publish(); break;
      case DriverCommand::collect:
        for (unsigned i = 0; i <= a; ++i) test.collect();
        break;
      case DriverCommand::arm_interrupt: test.arm_interrupt(); break;
      case DriverCommand::device_complete: {
        const std::vector<std::uint16_t> heads = test.published_heads();
        const std::uint16_t wanted = script.u16();
        if (heads.empty()) break;
        const std::uint16_t head = heads[a % heads.size()];
        const std::uint64_t writable = test.writable_of(head);
        const std::uint32_t len =
            (a & 8) != 0 || wanted <= writable ? wanted : static_cast<std::uint32_t>(writable);
        const std::uint16_t used_idx = section.load<std::uint16_t>(layout.used + 2);
        const std::uint64_t entry = layout.used + 4 + 8 * std::uint64_t{used_idx & (n - 1)};
        section.store<std::uint32_t>(entry, head);
        section.store<std::uint32_t>(entry + 4, len);
        section.store<std::uint16_t>(layout.used + 2, static_cast<std::uint16_t>(used_idx + 1));
        break;
      }
      case DriverCommand::used_idx: {
        const std::uint16_t used_idx = section.load<std::uint16_t>(layout.used + 2);
        section.store<std::uint16_t>(
            layout.used + 2, a == 15 ? script.u16() : static_cast<std::uint16_t>(used_idx + a));
        break;
      }
      case DriverCommand::used_slot: {
        const std::uint64_t entry = layout.used + 4 + 8 * std::uint64_t{script.u8() & (n - 1)};
        section.store<std::uint32_t>(entry, script.u32());
        section.store<std::uint32_t>(entry + 4, script.u32());
        break;
      }
      case DriverCommand::avail_event:
        section.store<std::uint16_t>(layout.avail_event_offset(), script.u16());
        break;
      case DriverCommand::poke: {
        const std::size_t offset = script.u16() % section.size();
        section.store<std::uint8_t>(offset, script.u8());
        break;
      }
      case DriverCommand::reinit:
        if (!test.init()) return;
        break;
      case DriverCommand::add_all: {
        const std::vector<VirtqBuffer> out(n + (a & 1), VirtqBuffer{data, 0});
        test.add(out, {});
        break;
      }
      default: break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  Script script({bytes, size});
  const std::uint8_t config = script.u8();
  const std::uint32_t n = 1U << ((config & 0x0f) % 10);
  const std::uint64_t offset = 16 * static_cast<std::uint64_t>(config >> 6);
  VirtqLayout layout;
  FUZZ_CHECK(VirtqLayout::compute(offset, n, layout) == VirtqError::ok, "compute() refused");
  const std::uint64_t data = (layout.end() + 15) / 16 * 16;
  SharedRegion section(data + 1024);
  run(script, section, layout, data);
  return 0;
}
