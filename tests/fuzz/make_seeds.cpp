// make_seeds: writes the committed seed corpus, tests/fuzz/corpus/<fuzzer>/.
// Run through `cmake --build <build dir> --target fuzz-seeds`; CI never runs
// it. Each seed is a small, meaningful input in the format its fuzzer's
// header comment describes: valid ring images written by a real
// RingProducer, the normal call sequences, and one seed per error the
// fuzzer must reach. libFuzzer mutates from there.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cellink/transports/channel_control.hpp"
#include "cellink/transports/ring_format.hpp"
#include "cellink/transports/ring_producer.hpp"
#include "cellink/transports/virtq.hpp"
#include "commands.hpp"
#include "shared_region.hpp"

namespace {

using namespace cellink::transports;
using cellink::fuzz::kSkipEvents;
using cellink::fuzz::op;
using cellink::fuzz::PeerCommand;
using cellink::fuzz::SharedRegion;
using Bytes = std::vector<std::uint8_t>;

// Writes the seeds of one fuzzer into a fresh directory.
class SeedWriter {
 public:
  explicit SeedWriter(std::filesystem::path directory) : directory_(std::move(directory)) {
    std::filesystem::remove_all(directory_);
    std::filesystem::create_directories(directory_);
  }
  void write(const std::string& name, const Bytes& bytes) {
    std::ofstream file(directory_ / name, std::ios::binary);
    file.write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    if (!file) {
      std::fprintf(stderr, "make_seeds: cannot write %s\n", (directory_ / name).c_str());
      std::exit(1);
    }
  }

 private:
  std::filesystem::path directory_;
};

// --- ring_consumer_fuzzer ---------------------------------------------------

constexpr std::uint8_t kModeProducer = 1;
constexpr std::uint8_t kSmallHeld = 2;
constexpr std::uint8_t kRawHeader = 0x10;
constexpr std::uint8_t kConsumerFirst = 0x20;
constexpr std::uint8_t capacity_bits(std::uint64_t capacity) {
  std::uint8_t k = 0;
  while ((kMinRingCapacity << (2 * k)) < capacity) ++k;
  return static_cast<std::uint8_t>(k << 2);
}

// The input format of ring_consumer_fuzzer and virtq_device_fuzzer: flags
// (config), script length / 2, the script (padded with the no-op 0x0f),
// the image.
Bytes script_and_image(std::uint8_t flags, Bytes script, const Bytes& image) {
  if (script.size() % 2 != 0) script.push_back(0x0f);
  Bytes input{flags, static_cast<std::uint8_t>(script.size() / 2)};
  input.insert(input.end(), script.begin(), script.end());
  input.insert(input.end(), image.begin(), image.end());
  return input;
}

// A producer area written by a real RingProducer: `lengths` records on
// channels 1, 2, ..., all published. Trailing zeros are dropped (the fuzzer
// pads the image with zeros).
Bytes ring_image(std::uint64_t capacity, std::initializer_list<std::uint32_t> lengths) {
  SharedRegion area(kProducerAreaOverhead + capacity);
  SharedRegion consumer(kConsumerAreaSize);
  const std::span<std::byte> producer_area = area.bytes();
  RingProducer producer;
  if (!producer.init(producer_area, consumer.bytes())) std::abort();
  std::uint16_t channel = 1;
  for (const std::uint32_t length : lengths) {
    std::vector<std::byte> payload(length);
    for (std::uint32_t i = 0; i < length; ++i) payload[i] = std::byte(i + channel);
    if (producer.write(payload, channel++) != ProduceStatus::ok) std::abort();
  }
  (void)producer.publish();
  Bytes image(reinterpret_cast<const std::uint8_t*>(producer_area.data()),
              reinterpret_cast<const std::uint8_t*>(producer_area.data() + producer_area.size()));
  while (!image.empty() && image.back() == 0) image.pop_back();
  return image;
}

// Patches the record header at data offset `position` of an image.
Bytes with_record(Bytes image, std::uint64_t position, RecordHeader header) {
  const std::size_t at = kProducerAreaOverhead + position;
  if (image.size() < at + 8) image.resize(at + 8);
  const std::uint64_t word = pack(header);
  for (std::size_t i = 0; i < 8; ++i) image[at + i] = static_cast<std::uint8_t>(word >> (8 * i));
  return image;
}

Bytes with_produced(Bytes image, std::uint64_t produced) {
  if (image.size() < 0x48) image.resize(0x48);
  for (std::size_t i = 0; i < 8; ++i)
    image[0x40 + i] = static_cast<std::uint8_t>(produced >> (8 * i));
  return image;
}

// A command and its operands stay together on a line.
// clang-format off
void ring_consumer_seeds(SeedWriter& out) {
  const Bytes three = ring_image(4096, {5, 0, 64});
  {
    using enum cellink::fuzz::ImageCommand;
    out.write("image-three-records",
              script_and_image(capacity_bits(4096),
                               {op(peek, 2), op(release_all), op(arm), op(drain)}, three));
    out.write("image-held-out-of-order",
              script_and_image(kSmallHeld | capacity_bits(1024),
                               {op(peek, 5), op(release, 2), op(release, 0), op(peek),
                                op(release_all, 1), op(drain), op(arm)},
                               ring_image(1024, {1, 2, 3, 4, 5, 6, 7})));
    // Records that fill a 256-byte ring exactly (the last is a wrap
    // padding), presented again and again: the consumer reads around.
    Bytes cycle = ring_image(256, {40, 40, 40, 40, 40});
    cycle = with_record(cycle, 240, {8, 0, kRecordPadding});
    out.write(
        "image-wrap-cycles",
        script_and_image(capacity_bits(256),
                         {op(produced_full), op(drain), op(produced_full), op(drain),
                          op(peek, 3), op(release_all, 1), op(produced_full), op(drain), op(arm)},
                         with_produced(cycle, 0)));
    // Not ready until the magic appears, with a stale produced (5000, more
    // than the ring) that arm_wakeup() must not read; then produced = 96,
    // the magic, and a normal drain. (Regression: arm_wakeup() once
    // validated the stale value and broke the ring.)
    Bytes no_magic = with_produced(three, 5000);
    for (std::size_t i = 0; i < 4; ++i) no_magic[i] = 0;
    out.write("image-not-ready-then-magic",
              script_and_image(kRawHeader | capacity_bits(4096),
                               {op(peek), op(arm), op(peek),
                                op(produced_set), 96, 0, 0, 0, 0, 0, 0, 0, op(ring_header),
                                op(drain)},
                               no_magic));
    Bytes version2 = three;
    version2[4] = 2;
    out.write("image-geometry-mismatch",
              script_and_image(kRawHeader | capacity_bits(4096), {op(peek), op(drain)}, version2));
    out.write("image-bad-flags", script_and_image(capacity_bits(4096), {op(drain)},
                                                  with_record(three, 0, {5, 1, 0x8000})));
    out.write("image-record-crosses-end",
              script_and_image(capacity_bits(256), {op(produced_full), op(drain)},
                               with_produced(with_record(ring_image(256, {}), 0, {300, 1, 0}), 0)));
    out.write(
        "image-record-overruns-published",
        script_and_image(capacity_bits(4096), {op(drain)}, with_record(three, 0, {4000, 1, 0})));
    out.write(
        "image-produced-backwards",
        script_and_image(capacity_bits(4096), {op(drain), op(produced_back), op(peek)}, three));
    out.write(
        "image-produced-beyond-capacity",
        script_and_image(capacity_bits(64),
                         {op(drain), op(produced_set), 72, 0, 0, 0, 0, 0, 0, 0, op(peek)}, {}));
  }
  {
    using enum cellink::fuzz::ProducerModeCommand;
    out.write("producer-fifo",
              script_and_image(
                  kModeProducer | capacity_bits(4096),
                  {op(arm), op(write), 10, op(write, 2), 0, op(publish), op(peek, 1),
                   op(release_all), op(arm), op(write, 4), 200, op(publish), op(drain), op(arm)},
                  {}));
    out.write("producer-small-ring-full",
              script_and_image(kModeProducer | kSmallHeld | capacity_bits(64),
                               {op(write), 20, op(write), 20, op(write), 20, op(publish),
                                op(peek), op(write), 20, op(release_all), op(write), 20,
                                op(publish), op(drain), op(write), 16, op(write), 16,
                                op(publish), op(drain)},
                               {}));
    out.write(
        "producer-reservations",
        script_and_image(kModeProducer | capacity_bits(256),
                         {op(reserve_commit, 7), 30, 40, 50, 60, 5, 0, 50, 60, op(publish),
                          op(drain), op(reserve_commit, 3), 100, 100, 0, op(publish), op(drain)},
                         {}));
    out.write("producer-corrupt-header-word",
              script_and_image(kModeProducer | capacity_bits(1024),
                               {op(write), 10, op(write), 10, op(publish),
                                op(record_header), 3, 0, 0xff, 0, 0, 0, op(drain)},
                               {}));
    // Stale memory from an earlier ring (produced = 64), the consumer
    // attached and armed first. (Regression: arm_wakeup() once accepted
    // the stale produced and then yielded eight records nobody published.)
    out.write("producer-consumer-first-stale",
              script_and_image(kModeProducer | kConsumerFirst | capacity_bits(4096),
                               {op(drain), op(write), 10, op(publish), op(drain)},
                               with_produced(three, 64)));
  }
}
// clang-format on

// --- ring_producer_fuzzer ---------------------------------------------------

// byte 0: capacity selector; then ProducerCommand.
Bytes producer_input(std::uint64_t capacity, std::initializer_list<std::uint8_t> script) {
  Bytes input{static_cast<std::uint8_t>(capacity_bits(capacity) >> 2)};
  input.insert(input.end(), script.begin(), script.end());
  return input;
}

// A command and its operands stay together on a line.
// clang-format off
void ring_producer_seeds(SeedWriter& out) {
  using enum cellink::fuzz::ProducerCommand;
  out.write("fill-release-refill",
            producer_input(64, {op(write), 16, op(write), 16, op(write), 16, op(publish),
                                op(consumed_behind), op(write), 16, op(write), 16, op(publish),
                                op(consumed_behind, 1), op(write), 16, op(publish)}));
  out.write("wrap-cycles",
            producer_input(
                256, {op(write), 100, op(write), 100, op(publish), op(consumed_behind),
                      op(write), 100, op(publish), op(consumed_behind), op(write), 100,
                      op(write), 90, op(publish), op(consumed_behind), op(write), 120,
                      op(publish)}));
  // write() with reservations in flight must be refused without a trace.
  // (Regression: it once abandoned a reservation and wedged every later
  // commit; the final write shows it.)
  out.write("reservations-in-flight",
            producer_input(1024, {op(reserve), 10, op(reserve), 20, op(reserve), 30,
                                  op(commit, 3), 3, op(write), 5, op(commit), 0, op(commit), 50,
                                  op(publish), op(write), 5, op(publish)}));
  out.write("doorbell-armed",
            producer_input(
                256, {op(wake_after, 2), op(write), 8, op(publish), op(write), 8, op(publish),
                      op(wake_after, 4), op(write), 8, op(publish), op(write), 8, op(publish)}));
  out.write(
      "consumed-backwards",
      producer_input(64, {op(write), 16, op(write), 16, op(publish), op(consumed_behind),
                          op(write), 16, op(write), 16, op(write), 16, op(consumed_back),
                          op(write), 16}));
  out.write("consumed-beyond-published",
            producer_input(64, {op(write), 16, op(write), 16, op(publish), op(consumed_beyond),
                                op(write), 16, op(write), 16}));
  out.write("consumed-huge",
            producer_input(64, {op(consumed_set), 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                op(write), 24, op(write), 24, op(write), 24}));
  out.write("too-large",
            producer_input(64, {op(write), 25, op(reserve, 1), 0x00, 0x10, op(publish)}));
}
// clang-format on

// --- virtq_device_fuzzer ----------------------------------------------------

// The driver's areas as the device fuzzer's image lays them out: descriptor
// table, then avail ring (flags, idx, ring[N], used_event).
struct DriverImage {
  explicit DriverImage(std::uint32_t n)
      : n(n), bytes(VirtqLayout::desc_bytes(n) + VirtqLayout::avail_bytes(n)) {}
  DriverImage& desc(std::uint32_t i, std::uint64_t addr, std::uint32_t len, std::uint16_t flags,
                    std::uint16_t next) {
    put(16 * std::size_t{i}, addr, 8);
    put(16 * std::size_t{i} + 8, len, 4);
    put(16 * std::size_t{i} + 12, flags, 2);
    put(16 * std::size_t{i} + 14, next, 2);
    return *this;
  }
  // Publishes `heads` in order: ring[0..] and avail.idx.
  DriverImage& avail(std::initializer_list<std::uint16_t> heads) {
    std::uint16_t idx = 0;
    for (const std::uint16_t head : heads)
      put(VirtqLayout::desc_bytes(n) + 4 + 2 * std::size_t{idx++ % n}, head, 2);
    put(VirtqLayout::desc_bytes(n) + 2, idx, 2);
    return *this;
  }
  void put(std::size_t at, std::uint64_t value, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i)
      bytes[at + i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
  std::uint32_t n;
  Bytes bytes;
};

constexpr std::uint8_t log2(std::uint32_t n) {
  std::uint8_t k = 0;
  while ((1U << k) < n) ++k;
  return k;
}

// Where the device fuzzer puts its data area for a contiguous queue at 0.
std::uint64_t data_offset(std::uint32_t n) {
  VirtqLayout layout;
  if (VirtqLayout::compute(0, n, layout) != VirtqError::ok) std::abort();
  return (layout.end() + 15) / 16 * 16;
}

// A command and its operands stay together on a line.
// clang-format off
void virtq_device_seeds(SeedWriter& out) {
  using enum cellink::fuzz::DeviceCommand;
  const std::uint8_t n8 = log2(8);
  // A driver adds a 2-descriptor chain (1 readable, 1 writable) at desc[0];
  // the device pops, uses and pushes it, publishes, arms; twice.
  out.write("roundtrip", script_and_image(n8, {op(arm_notify), op(driver_add, 5), 0, 0, 4, 8, 8,
                                               op(pop), op(push_held), 32, 0, op(publish),
                                               op(arm_notify),
                                               op(driver_add, 5), 2, 16, 4, 24, 4, op(pop),
                                               op(push_held), 16, 0, op(publish), op(pop)},
                                          {}));
  out.write("many-rounds-small-queue",
            script_and_image(
                log2(2),
                {op(driver_add, 1), 0, 0, 4, 0, 4, op(pop), op(push_held), 4, 0, op(publish),
                 op(driver_add, 1), 0, 0, 4, 0, 4, op(pop), op(push_held), 4, 0, op(publish),
                 op(driver_add, 1), 0, 0, 4, 0, 4, op(pop), op(push_held), 4, 0, op(publish),
                 op(arm_notify), op(pop)},
                {}));
  const std::uint64_t data = data_offset(8);
  // Four chains published in the image; popped, pushed out of order.
  DriverImage four(8);
  four.desc(0, data, 16, kVirtqDescNext, 1).desc(1, data + 16, 16, kVirtqDescWrite, 0);
  four.desc(2, data + 32, 8, 0, 0).desc(3, data + 64, 32, kVirtqDescWrite, 0);
  four.desc(4, data + 96, 0, kVirtqDescNext, 5).desc(5, data + 96, 4, kVirtqDescNext, 6);
  four.desc(6, data + 100, 4, kVirtqDescWrite, 0);
  out.write(
      "image-four-chains",
      script_and_image(n8,
                       {op(pop, 3), op(push_held, 1), 8, 0, op(push_held), 0, 0, op(publish),
                        op(push_held), 16, 0, op(push_held), 0, 0, op(publish), op(arm_notify)},
                       four.avail({0, 2, 3, 4}).bytes));
  // One image per fault the device must latch.
  DriverImage loop(8);
  loop.desc(0, data, 4, kVirtqDescNext, 1).desc(1, data, 4, kVirtqDescNext, 0);
  out.write("chain-loop",
            script_and_image(n8, {op(pop), op(pop), op(publish)}, loop.avail({0}).bytes));
  DriverImage indirect(8);
  out.write("indirect",
            script_and_image(n8, {op(pop)},
                             indirect.desc(0, data, 16, kVirtqDescIndirect, 0).avail({0}).bytes));
  DriverImage beyond(8);
  out.write(
      "buffer-out-of-section",
      script_and_image(n8, {op(pop)}, beyond.desc(0, data + 1000, 100, 0, 0).avail({0}).bytes));
  DriverImage order(8);
  order.desc(0, data, 4, kVirtqDescNext | kVirtqDescWrite, 1).desc(1, data + 4, 4, 0, 0);
  out.write("bad-order", script_and_image(n8, {op(pop)}, order.avail({0}).bytes));
  DriverImage next(8);
  out.write(
      "bad-next",
      script_and_image(n8, {op(pop)}, next.desc(0, data, 4, kVirtqDescNext, 9).avail({0}).bytes));
  DriverImage head(8);
  out.write("bad-head", script_and_image(n8, {op(pop)}, head.avail({8}).bytes));
  DriverImage twice(8);
  out.write("head-in-use",
            script_and_image(n8, {op(pop, 1)}, twice.desc(0, data, 4, 0, 0).avail({0, 0}).bytes));
  out.write("avail-idx-jump",
            script_and_image(n8, {op(avail_idx, 9), op(pop), op(arm_notify)}, {}));
  // Six linked descriptors: too long for MaxSegments 4 (config bit 4).
  DriverImage six(8);
  for (std::uint16_t i = 0; i < 6; ++i) {
    const auto flags = static_cast<std::uint16_t>(i < 5 ? kVirtqDescNext : 0);
    six.desc(i, data + 8 * std::uint64_t{i}, 8, flags, static_cast<std::uint16_t>(i + 1));
  }
  out.write("six-segments-max-4", script_and_image(0x10 | n8, {op(pop)}, six.avail({0}).bytes));
  // The device's own mistakes, refused without latching.
  out.write("push-misuse", script_and_image(n8,
                                            {op(push), 3, 0, 0, 0,
                                             op(driver_add, 1), 0, 0, 4, 0, 4, op(pop),
                                             op(push_held), 0xff, 0xff, op(push_held), 4, 0,
                                             op(push), 0, 0, 0, 0, op(publish)},
                                            {}));
  out.write("queue-too-large", script_and_image(log2(512), {op(pop)}, {}));
  // Areas placed by the script (config bit 5): desc 0x1000, avail 0x800,
  // used 0x2000; then an overlapping placement that init() must refuse.
  out.write("separate-areas",
            script_and_image(0x20 | n8,
                             {0x00, 0x10, 0x00, 0x08, 0x00, 0x20, op(driver_add, 5), 0, 0, 4, 0, 4,
                              op(pop), op(push_held), 4, 0, op(publish)},
                             {}));
  out.write("separate-areas-overlap",
            script_and_image(0x20 | n8, {0x00, 0x10, 0x40, 0x10, 0x00, 0x20, op(pop)}, {}));
  // Flag-based suppression with the pool starting at the queue (offset 16):
  // a round trip, then NO_INTERRUPT set in avail.flags (at 16 + 128) so the
  // next publish() does not notify.
  out.write("flags-roundtrip",
            script_and_image(0x40 | n8, {op(reinit_flags, 1), op(disable_notify),
                                         op(driver_add, 5), 0, 0, 4, 8, 8, op(pop),
                                         op(push_held), 32, 0, op(publish), op(arm_notify),
                                         op(poke), 144, 0, 1,
                                         op(driver_add, 5), 2, 16, 4, 24, 4, op(pop),
                                         op(push_held), 16, 0, op(publish), op(disable_notify),
                                         op(arm_notify)},
                             {}));
  out.write("pool-buffer-below",
            script_and_image(0x40 | n8, {op(reinit_flags, 1),
                                         op(desc_raw), 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0,
                                         0, 0,
                                         op(avail_slot), 0, 0, 0, op(avail_idx, 1), op(pop)},
                             {}));
  out.write("pool-above-areas", script_and_image(0x40 | n8, {op(reinit_flags, 2), op(pop)}, {}));
  out.write("event-idx-with-pool",
            script_and_image(0x40 | n8, {op(reinit_flags, 5), op(disable_notify),
                                         op(driver_add, 5), 0, 0, 4, 8, 8, op(pop),
                                         op(push_held), 32, 0, op(publish), op(arm_notify)},
                             {}));
}
// clang-format on

// --- virtq_driver_fuzzer ----------------------------------------------------

Bytes driver_input(std::uint32_t n, std::initializer_list<std::uint8_t> script) {
  Bytes input{log2(n)};
  input.insert(input.end(), script.begin(), script.end());
  return input;
}

// A command and its operands stay together on a line.
// clang-format off
void virtq_driver_seeds(SeedWriter& out) {
  using enum cellink::fuzz::DriverCommand;
  out.write("roundtrip", driver_input(8, {op(arm_interrupt), op(add, 5), 0, 4, 8, 8, op(publish),
                                          op(device_complete), 16, 0, op(collect),
                                          op(arm_interrupt), op(add, 4), 0, 4, op(publish),
                                          op(device_complete), 4, 0, op(collect),
                                          op(arm_interrupt)}));
  out.write("out-of-order-completion", driver_input(8, {op(add, 1), 0, 4, op(add, 4), 4, 4,
                                                        op(add, 4), 8, 4, op(publish),
                                                        op(device_complete, 1), 2, 0,
                                                        op(device_complete), 16, 0,
                                                        op(collect, 2),
                                                        op(device_complete), 0, 0, op(collect),
                                                        op(arm_interrupt)}));
  out.write("many-rounds-small-queue", driver_input(2, {op(add, 1), 0, 1, op(publish),
                                                        op(device_complete), 0, 0, op(collect),
                                                        op(add, 1), 0, 1, op(publish),
                                                        op(device_complete), 0, 0, op(collect),
                                                        op(add, 1), 0, 1, op(publish),
                                                        op(device_complete), 0, 0, op(collect),
                                                        op(add, 1), 0, 1, op(add, 1), 0, 1,
                                                        op(add, 1), 0, 1, op(publish),
                                                        op(device_complete), 0, 0,
                                                        op(device_complete, 1), 0, 0,
                                                        op(collect, 1), op(arm_interrupt)}));
  // The caller's own mistakes, refused without latching.
  out.write("no-space-too-many", driver_input(4, {op(add_all), op(add_all, 1),
                                                  op(add, 3), 0, 1, 0, 1, 0, 1,
                                                  op(add, 2), 0, 1, 0, 1}));
  out.write("caller-buffer-errors",
            driver_input(8, {op(add), op(add, 1), 0x80, 0, 0, 16, 0,
                             op(add, 1), 0x80, 0xff, 0xff, 0xff, 0xff, op(add, 1), 0x7f, 0xff,
                             op(add, 1), 0x80, 0x20, 0, 4, 0}));
  // One script per fault the driver must latch.
  out.write("bad-used-id",
            driver_input(8, {op(add, 1), 0, 4, op(publish),
                             op(used_slot), 0, 7, 0, 0, 0, 0, 0, 0, 0, op(used_idx, 1),
                             op(collect), op(collect)}));
  out.write("bad-used-len", driver_input(8, {op(add, 4), 0, 4, op(publish),
                                             op(device_complete, 8), 0xe8, 0x03, op(collect),
                                             op(publish)}));
  out.write("used-idx-jump", driver_input(8, {op(add, 1), 0, 4, op(publish), op(used_idx, 5),
                                              op(collect), op(arm_interrupt)}));
  out.write(
      "event-idx",
      driver_input(
          8,
          {op(avail_event), 0, 0, op(add, 1), 0, 1, op(publish), op(add, 1), 0, 1, op(publish),
           op(avail_event), 2, 0, op(add, 1), 0, 1, op(publish), op(add, 1), 0, 1, op(publish)}));
}
// clang-format on

// --- virtio_ivshmem_device_fuzzer -------------------------------------------

Bytes link_input(std::uint8_t config,
                 std::initializer_list<std::initializer_list<std::uint8_t>> steps) {
  Bytes input{config};
  for (const auto& step : steps) input.insert(input.end(), step.begin(), step.end());
  return input;
}

// A command and its operands stay together on a line.
// clang-format off
void virtio_ivshmem_device_seeds(SeedWriter& out) {
  using enum cellink::fuzz::DeviceLinkCommand;
  // 2 vectors, a 16 KiB R/W section, queues of up to 16, two queues.
  constexpr std::uint8_t kConsole = 0x01 | 0x04 | 0x10 | 0x40;
  const std::initializer_list<std::uint8_t> ready = {op(front_state, 1)};
  // Queue 0 (receive) at 0x1000 and queue 1 (transmit) at 0x1400, 8 entries
  // each, driver vector 1; then DRIVER_OK.
  const std::initializer_list<std::uint8_t> queues = {op(setup_queue, 6), 0x00, 0x00, 1,
                                                      op(setup_queue, 7), 0x40, 0x00, 1,
                                                      op(driver_ok)};
  // The front end sends 16 bytes at 0x2000 on queue 1; the back end pops,
  // notifies and arms; the front end offers 64 writable bytes at 0x2100 on
  // queue 0; the back end fills 10 of them.
  const std::initializer_list<std::uint8_t> traffic = {
      op(driver_add, 1), 0, 0x00, 0x08, 4, op(pop, 1), op(notify, 1), op(arm, 3),
      op(driver_add, 8), 0, 0x40, 0x08, 16, op(pop, 0), 10, op(notify, 0), op(arm, 2),
      op(driver_add, 1), 1, 0x80, 0x08, 4, op(arm, 3), op(pop, 1), op(notify, 1), op(arm, 1)};
  out.write("handshake", link_input(kConsole, {ready, {op(service)}}));
  out.write("console-event-idx", link_input(kConsole, {ready, {op(negotiate, 1)}, queues, traffic}));
  out.write("console-flags", link_input(kConsole, {ready, {op(negotiate, 0)}, queues, traffic,
                                                   {op(driver_add, 1), 2, 0xc0, 0x08, 4, op(pop, 1),
                                                    op(notify, 1 | 2 | 4), 0, 0, op(notify, 1 | 2),
                                                    0, 0}}));
  out.write("one-vector-one-queue", link_input(0x00, {ready, {op(negotiate, 1),
                                                              op(setup_queue, 4), 0x00, 0x00, 0,
                                                              op(driver_ok),
                                                              op(driver_add, 8), 0, 0x00, 0x06, 4,
                                                              op(pop, 0), 3, op(notify, 0),
                                                              op(arm, 2)}}));
  out.write("features-refused", link_input(kConsole, {ready, {op(negotiate, 2), op(negotiate, 4),
                                                              op(negotiate, 8), op(driver_ok)}}));
  // One seed per malformed write the back end must latch.
  const std::initializer_list<std::uint8_t> negotiated = {op(front_state, 1), op(negotiate, 0)};
  out.write("bad-write-offset", link_input(kConsole, {negotiated, {op(write_small, 11), 0}}));
  out.write("misaligned-offset", link_input(kConsole, {negotiated, {op(write_field, 11), 0x2a,
                                                                    1, 0, 0, 0, 0, 0, 0, 0}}));
  out.write("features-sel-2", link_input(kConsole, {negotiated, {op(write_small, 0), 2}}));
  out.write("queue-sel-5", link_input(kConsole, {negotiated, {op(write_small, 3), 5}}));
  out.write("queue-size-3", link_input(kConsole, {negotiated, {op(write_small, 4), 3}}));
  out.write("driver-vector-3", link_input(kConsole, {negotiated, {op(write_small, 5), 3}}));
  out.write("queue-enable-2", link_input(kConsole, {negotiated, {op(write_small, 6), 2}}));
  out.write("area-in-header-page", link_input(kConsole, {negotiated, {op(write_small, 7), 0x40,
                                                                      op(write_small, 6), 1}}));
  out.write("area-misaligned", link_input(kConsole, {negotiated, {
                                              op(write_field, 7), 0x08, 0x10, 0, 0, 0, 0, 0, 0,
                                              op(write_field, 8), 0x00, 0x12, 0, 0, 0, 0, 0, 0,
                                              op(write_field, 9), 0x00, 0x13, 0, 0, 0, 0, 0, 0,
                                              op(write_small, 6), 1}}));
  out.write("areas-overlap", link_input(kConsole, {negotiated, {
                                            op(write_field, 7), 0x00, 0x10, 0, 0, 0, 0, 0, 0,
                                            op(write_field, 8), 0x10, 0x10, 0, 0, 0, 0, 0, 0,
                                            op(write_field, 9), 0x00, 0x14, 0, 0, 0, 0, 0, 0,
                                            op(write_small, 6), 1}}));
  out.write("changed-while-enabled", link_input(kConsole, {negotiated, {op(setup_queue, 6), 0, 0, 1,
                                                                        op(write_small, 4), 4}}));
  out.write("ring-avail-jump", link_input(kConsole, {negotiated, queues,
                                                     {op(avail_idx, 15), 100, 0, op(pop, 1)}}));
  out.write("ring-buffer-in-header", link_input(kConsole, {negotiated, queues,
                                                           {op(driver_add, 1), 0, 0x04, 0x00, 4,
                                                            op(pop, 1)}}));
  out.write("reset-clears-broken", link_input(kConsole, {negotiated, {op(write_small, 3), 5,
                                                                      op(write_small, 10), 0,
                                                                      op(negotiate, 1)},
                                                         queues, traffic}));
  out.write("front-reset-mid-stream",
            link_input(kConsole, {ready, {op(negotiate, 1)}, queues,
                                  {op(driver_add, 1), 0, 0x00, 0x08, 4, op(front_state, 0),
                                   op(pop, 1), op(front_state, 1), op(negotiate, 0)},
                                  queues, traffic}));
  out.write("update-config", link_input(kConsole, {ready, {op(update_config, 0), 132, 0, 43, 0,
                                                           1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                           op(update_config, 9), 1, 2, 3, 4, 5, 6,
                                                           7, 8, 9, 10, 11, 12, 13, 14, 15, 16}}));
  out.write("restart", link_input(kConsole, {ready, {op(negotiate, 1)}, queues,
                                             {op(restart, 1), op(front_state, 0),
                                              op(front_state, 1), op(negotiate, 1)},
                                             queues, traffic}));
  out.write("garbage-transaction", link_input(kConsole, {ready, {op(restart, 0), 0x34, 0x12}}));
}
// clang-format on

// --- message_layer_fuzzer ---------------------------------------------------
//
// Scripts of PeerCommand (commands.hpp); each command's operands are listed
// in message_layer_fuzzer.cpp (Harness::step()). One seed per path of the
// channel core the hostile peer must reach.

// The command byte: `channel` 1 is "b"; `skip` leaves the Session's events
// unprocessed after it.
std::uint8_t peer(PeerCommand command, unsigned channel = 0, bool skip = false) {
  return op(command, (channel != 0 ? 8U : 0U) | (skip ? kSkipEvents : 0U));
}
constexpr std::uint8_t lo(unsigned value) {
  return static_cast<std::uint8_t>(value);
}
constexpr std::uint8_t hi(unsigned value) {
  return static_cast<std::uint8_t>(value >> 8);
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

// clang-format off
// Announces channel `c` by the rules: any free id, max 1 MiB, window 16 KiB
// (or `window`, 64..65599).
Bytes announce(unsigned c) { return {peer(PeerCommand::by_the_rules, c), 0, 0}; }
Bytes announce_window(unsigned c, unsigned window) {
  return {peer(PeerCommand::by_the_rules, c), 0x0c, 0, lo(4096), hi(4096), lo(window - 64),
          hi(window - 64)};
}
// A tagged message of `size` bytes (% 200, or % 4096 with `large`), waiting
// for credit with `wait`.
Bytes tagged(unsigned c, unsigned size, bool wait = false, bool large = false) {
  const unsigned word = size | (wait ? 0x8000U : 0U) | (large ? 0x4000U : 0U);
  return {peer(PeerCommand::tagged_message, c), lo(word), hi(word), 0x11};
}
Bytes receive(unsigned c, bool hold = false) {
  return {peer(PeerCommand::receive, c), static_cast<std::uint8_t>(hold ? 1 : 0)};
}
// `size`: bit 15 set: size % 40000 (41000: 1000 bytes, fragments), else % 600.
Bytes victim_send(unsigned c, unsigned size) {
  return {peer(PeerCommand::victim_send, c), lo(size), hi(size), 0x22};
}
// Our credit table entry for channel c's id: `mode` as in the fuzzer.
Bytes credit(unsigned c, std::uint8_t mode, Bytes operands = {}) {
  return concat({{peer(PeerCommand::credit_table, c), 1, mode}, operands});
}
// crafted_control: type 0 open, 1 close, 2 abort; name index 0 "a", 1 "b",
// 2 "c", 3 "a "; an open's window is 64 + `window` unless `window_mode` says
// otherwise; `at` >= 64: no mutation.
Bytes crafted(unsigned type, unsigned name, unsigned id, unsigned window = 448,
              std::uint8_t window_mode = 6, std::uint8_t at = 0xff, std::uint8_t value = 0) {
  Bytes out{peer(PeerCommand::crafted_control), static_cast<std::uint8_t>(name | type << 3),
            static_cast<std::uint8_t>(id)};
  if (type != 0) {
    out.push_back(0);
  } else {
    out.insert(out.end(), {window_mode, lo(4096), hi(4096)});
    if (window_mode == 0) out.insert(out.end(), {lo(window), hi(window), 0, 0});
    if (window_mode >= 6) out.insert(out.end(), {lo(window), hi(window)});
  }
  out.push_back(at);
  if (at < 64) out.push_back(value);
  return out;
}
// `which`: < 0x80 the channel's id (bit 0: "b"), < 0xc0 id which & 3;
// else `id` names it (one byte below 0xff, two at 0xff).
Bytes data_record(std::uint8_t which, bool more, const Bytes& payload, unsigned id = 0) {
  Bytes out{peer(PeerCommand::data_record), which};
  if (which >= 0xc0) out.push_back(lo(id));
  if (which == 0xff) out.push_back(hi(id));
  const auto size = static_cast<unsigned>(payload.size());
  return concat({out, {static_cast<std::uint8_t>(more ? 1 : 0), lo(size), hi(size)}, payload});
}
// A raw control record: a well-formed open of "a" under `id`, window 512.
Bytes raw_open(std::uint16_t id) {
  ControlMessage message;
  if (!encode_control(ControlType::open, id, "a", 1, 4096, 512, message)) std::abort();
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(&message);
  return concat({{peer(PeerCommand::raw_control), sizeof message},
                 Bytes(bytes, bytes + sizeof message)});
}

void message_layer_seeds(SeedWriter& out) {
  // Minimised inputs that broke the channel core once (each fixed with the
  // change that added it), kept as seeds so the fuzzer keeps checking them:
  // opens read during a drain outliving it; a latched diagnostic renamed by
  // a later fault; an empty first fragment (memcpy of nothing to null);
  // queued views of a broken session's ring after the peer restarted; and
  // send() cut into chunks before the rendezvous brought a smaller window.
  out.write("regression-drain-control", {0xff, 0x00, 0x09, 0x66});
  out.write("regression-latched-diagnostic", {0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                              0x00, 0x00, 0x01, 0x09, 0x09, 0x00, 0xff});
  out.write("regression-empty-fragment", {0x5f, 0x00, 0x00, 0x12, 0x70, 0x7f});
  out.write("regression-broken-restart", {0x0f, 0x40, 0x00, 0x09, 0x1e, 0x00, 0x11, 0x07, 0x40,
                                          0x00, 0x00, 0x06, 0x8f, 0x00, 0x02, 0x89});
  out.write("regression-send-before-window",
            {0x7f, 0x08, 0x00, 0x00, 0x00, 0x05, 0xe8, 0xfd, 0x22});
  // The rules, both ways: announcements, tagged messages, the Session's
  // sends, truthful credits, a fragmented message that waits for credit.
  out.write("rules-both-ways",
            concat({announce(0), announce(1), tagged(0, 40), tagged(1, 40), receive(0), receive(1),
                    victim_send(0, 100), victim_send(1, 100), credit(0, 0), victim_send(0, 100),
                    tagged(0, 3000, true, true), receive(0), receive(0)}));
  out.write("held-zero-copy",
            concat({announce(0), tagged(0, 100), tagged(0, 100), receive(0, true),
                    receive(0, true), tagged(0, 100), {peer(PeerCommand::drop_held)}, receive(0)}));
  // Records past the window we were granted.
  out.write("past-window",
            concat({announce(0), {peer(PeerCommand::past_window), 14, lo(100), hi(100), 0x33},
                    receive(0, true), receive(0, true), receive(0, true),
                    {peer(PeerCommand::past_window), 3, lo(500), hi(500), 0x33}, {peer(PeerCommand::drop_held)},
                    tagged(0, 50), receive(0), receive(0)}));
  // Lies in our credit table, each read by the Session's next send.
  const Bytes small_window = announce_window(0, 64);
  out.write("credit-returned-beyond",
            concat({small_window, victim_send(0, 40), credit(0, 1, {100, 0}), victim_send(0, 40),
                    victim_send(1, 40)}));
  out.write("credit-returned-backwards",
            concat({small_window, victim_send(0, 40), credit(0, 0), victim_send(0, 40),
                    credit(0, 2, {0}), victim_send(0, 40)}));
  out.write("credit-delivered-beyond",
            concat({small_window, victim_send(0, 40), credit(0, 4, {0}), victim_send(0, 40)}));
  out.write("credit-delivered-backwards",
            concat({small_window, victim_send(0, 40), credit(0, 0), victim_send(0, 40),
                    credit(0, 5, {0}), victim_send(0, 40)}));
  out.write("credit-arbitrary",
            concat({small_window, victim_send(0, 40), credit(0, 3, {1, 2, 3, 4, 5, 6, 7, 8}),
                    victim_send(0, 40), credit(0, 6), victim_send(0, 40)}));
  out.write("credit-fragmented-send",
            concat({announce_window(0, 200), victim_send(0, 41000), credit(0, 7, {0x18}),
                    victim_send(0, 41000)}));
  // The name service: a name twice under two ids, an id twice under two
  // names, a close and an abort for what was never announced, windows out
  // of range, a mutated open.
  out.write("announced-twice",
            concat({crafted(0, 0, 5), crafted(0, 0, 6), crafted(0, 2, 5), crafted(0, 1, 6),
                    crafted(1, 2, 9), crafted(2, 2, 7), crafted(2, 0, 1), crafted(1, 0, 6),
                    crafted(1, 0, 5), tagged(0, 10), receive(0)}));
  out.write("open-windows",
            concat({crafted(0, 0, 5, 0, 1), crafted(0, 0, 5, 0, 2), crafted(0, 1, 6, 0, 3),
                    crafted(0, 2, 7, 0, 4), crafted(0, 3, 8, 0, 5),
                    crafted(0, 3, 9, 0x1000, 0), crafted(0, 2, 10, 448, 6, 12, 0xff),
                    crafted(0, 2, 11, 448, 6, 10, 1), tagged(0, 10), receive(0)}));
  out.write("raw-control", concat({{peer(PeerCommand::raw_control), 8, 1, 0, 1, 0, 0, 0, 0, 0}, raw_open(3),
                                   tagged(0, 10), receive(0)}));
  // More than 255 names; one name under many ids; many names under one id;
  // closes for names never announced. Then a channel must still connect.
  for (const auto& [name, mode] : {std::pair{"flood-names", 4}, std::pair{"flood-one-name", 1},
                                   std::pair{"flood-one-id", 2}, std::pair{"flood-closes", 7}}) {
    out.write(name, concat({{peer(PeerCommand::flood), static_cast<std::uint8_t>(mode), 0, 60}, announce(0),
                            tagged(0, 10), receive(0)}));
  }
  // Records on a channel never announced, and on ids nobody opened.
  out.write("never-announced",
            concat({data_record(0, false, Bytes(10, 1)), data_record(1, true, Bytes(10, 2)),
                    data_record(0xc5, false, Bytes(10, 3), 200),
                    data_record(0xff, false, Bytes(10, 3), 1000), announce(0),
                    data_record(0, false, Bytes(10, 4)), receive(0)}));
  // Fragments past max_message_size, with and without a final record.
  out.write("reassembly-overflow",
            concat({announce(0), {peer(PeerCommand::overflow), lo(500), hi(500), 0, 0x55}, receive(0),
                    receive(0), {peer(PeerCommand::overflow), lo(300), hi(300), 0x80, 0x55}, tagged(0, 20),
                    receive(0), receive(0)}));
  // Our space_wanted word, bumped and set.
  out.write("space-wanted",
            concat({announce_window(0, 64), victim_send(0, 40), {peer(PeerCommand::space_wanted), 1},
                    {peer(PeerCommand::space_wanted), 0, 0x78, 0x56, 0x34, 0x12}, receive(0),
                    credit(0, 0), {peer(PeerCommand::space_wanted), 1}, tagged(0, 10), receive(0)}));
  // Restarts, and a ring corrupted (which breaks the pair until the next one).
  out.write("restart",
            concat({announce(0), tagged(0, 30), {peer(PeerCommand::restart)}, receive(0), announce(0),
                    tagged(0, 30), receive(0)}));
  out.write("corrupt-ring",
            concat({announce(0), tagged(0, 30), {peer(PeerCommand::corrupt), 0x80, 0, 0x7f}, receive(0),
                    receive(0), {peer(PeerCommand::restart)}, announce(1), tagged(1, 30), receive(1)}));
}
// clang-format on

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <tests/fuzz/corpus directory>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root = argv[1];
  {
    SeedWriter out(root / "ring_consumer_fuzzer");
    ring_consumer_seeds(out);
  }
  {
    SeedWriter out(root / "ring_producer_fuzzer");
    ring_producer_seeds(out);
  }
  {
    SeedWriter out(root / "virtq_device_fuzzer");
    virtq_device_seeds(out);
  }
  {
    SeedWriter out(root / "virtq_driver_fuzzer");
    virtq_driver_seeds(out);
  }
  {
    SeedWriter out(root / "virtio_ivshmem_device_fuzzer");
    virtio_ivshmem_device_seeds(out);
  }
  {
    SeedWriter out(root / "message_layer_fuzzer");
    message_layer_seeds(out);
  }
  return 0;
}
