// capnp_message.hpp over an in-process link: peer 0 sends telemetry Samples,
// peer 1 receives them. Malformed messages are sent as raw bytes with
// Channel::send(), the way a hostile or corrupt peer would write them.
#include "cellink/linux-uio/capnp_message.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <capnp/message.h>
#include <gtest/gtest.h>

#include "cellink/linux-uio/channel.hpp"
#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/linux-uio/message_error.hpp"
#include "cellink/linux-uio/session.hpp"
#include "telemetry/telemetry.capnp.h"

namespace cellink::linux_uio {
namespace {

using examples::telemetry::Sample;
using examples::telemetry::Status;

constexpr std::chrono::seconds kTimeout{5};
constexpr std::uint32_t kSenderId = 0;

// Wire pointers (Cap'n Proto encoding spec), for hand-made messages. Offsets
// count words from the end of the pointer.
constexpr std::uint64_t struct_pointer(std::int32_t offset, std::uint16_t data_words,
                                       std::uint16_t pointers) {
  return (std::uint64_t{static_cast<std::uint32_t>(offset)} << 2 & 0xffff'fffc) |
         std::uint64_t{data_words} << 32 | std::uint64_t{pointers} << 48;
}
enum class ElementSize : std::uint64_t { byte = 2, four_bytes = 4, inline_composite = 7 };
constexpr std::uint64_t list_pointer(std::int32_t offset, ElementSize size, std::uint32_t count) {
  return 1 | (std::uint64_t{static_cast<std::uint32_t>(offset)} << 2 & 0xffff'fffc) |
         static_cast<std::uint64_t>(size) << 32 | std::uint64_t{count} << 35;
}
// Sample's pointer section: cell, temperatures, components.
constexpr std::uint16_t kSamplePointers = 3;

bool contains(std::span<const std::byte> region, const void* address) {
  const auto begin = reinterpret_cast<std::uintptr_t>(region.data());
  const auto at = reinterpret_cast<std::uintptr_t>(address);
  return at >= begin && at < begin + region.size();
}

void fill_example(Sample::Builder sample, std::uint64_t sequence) {
  sample.setSequence(sequence);
  sample.setTimestampNs(1'700'000'000'123'456'789);
  sample.setCell("rt-0");
  auto temperatures = sample.initTemperatures(3);
  temperatures.set(0, 20.5F);
  temperatures.set(1, 21.0F);
  temperatures.set(2, -3.25F);
  sample.setStatus(Status::DEGRADED);
  auto board = sample.initComponents(1)[0];
  board.setCell("rt-0/board");
  board.setStatus(Status::FAULT);
}

// Nests `depth` levels of components below `sample`.
void nest(Sample::Builder sample, int depth) {
  for (int level = 0; level < depth; ++level) {
    sample = sample.initComponents(1)[0];
    sample.setSequence(static_cast<std::uint64_t>(level));
  }
}

// Reads every field the way a consumer would; throws kj::Exception on a
// message that validation should have rejected.
std::size_t read_everything(Sample::Reader sample) {
  std::size_t seen = sample.getSequence() + sample.getTimestampNs();
  seen += sample.getCell().size();
  for (float temperature : sample.getTemperatures()) seen += temperature > 0 ? 1 : 0;
  seen += static_cast<std::size_t>(sample.getStatus());
  for (Sample::Reader component : sample.getComponents()) seen += read_everything(component);
  return seen;
}

// The words of a valid example message, built off the ring.
std::vector<std::uint64_t> example_words(std::uint64_t sequence) {
  capnp::MallocMessageBuilder builder;
  fill_example(builder.initRoot<Sample>(), sequence);
  const auto segments = builder.getSegmentsForOutput();
  EXPECT_EQ(segments.size(), 1U);
  std::vector<std::uint64_t> words(segments[0].size());
  std::memcpy(words.data(), segments[0].begin(), words.size() * sizeof(std::uint64_t));
  return words;
}

class CapnpMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(out_.wait_connected(kTimeout));
    ASSERT_FALSE(in_.wait_connected(kTimeout));
  }

  std::error_code send_raw(std::span<const std::uint64_t> words) {
    return out_.send(std::as_bytes(words), kTimeout);
  }
  std::error_code send_example(std::uint64_t sequence, std::size_t max_bytes = 1024) {
    return send_capnp<Sample>(
        out_, max_bytes, [sequence](Sample::Builder sample) { fill_example(sample, sequence); },
        kTimeout);
  }
  CapnpMessage<Sample> receive(const CapnpReadOptions& options = {}) {
    return receive_capnp<Sample>(in_, kTimeout, options);
  }
  // The next message must be rejected as malformed.
  void expect_malformed(const CapnpReadOptions& options = {}) {
    CapnpMessage<Sample> message = receive(options);
    EXPECT_FALSE(message);
    EXPECT_EQ(message.error(), MessageErrc::malformed_message) << message.error().message();
    EXPECT_THROW((void)message.root(), std::logic_error);
  }

  LoopbackLink link_{2};
  Session sender_{link_.device(kSenderId)};
  Session receiver_{link_.device(1)};
  Channel out_ = sender_.open("telemetry");
  Channel in_ = receiver_.open("telemetry");
};

TEST_F(CapnpMessageTest, RoundTripBuildsInTheLoanAndReadsInPlace) {
  const char* built_text = nullptr;
  ASSERT_FALSE(send_capnp<Sample>(
      out_, sender_.max_record_payload(),
      [&](Sample::Builder sample) {
        fill_example(sample, 7);
        built_text = sample.getCell().begin();
      },
      kTimeout));
  EXPECT_TRUE(contains(link_.device(kSenderId).own_output_section(), built_text));

  CapnpMessage<Sample> message = receive();
  ASSERT_TRUE(message) << message.error().message() << ": " << message.error_detail();
  EXPECT_TRUE(message.zero_copy());
  const Sample::Reader sample = message.root();
  EXPECT_TRUE(contains(link_.device(1).output_section(kSenderId), sample.getCell().begin()));
  EXPECT_EQ(sample.getSequence(), 7U);
  EXPECT_EQ(sample.getTimestampNs(), 1'700'000'000'123'456'789U);
  EXPECT_EQ(sample.getCell(), "rt-0");
  ASSERT_EQ(sample.getTemperatures().size(), 3U);
  EXPECT_EQ(sample.getTemperatures()[0], 20.5F);
  EXPECT_EQ(sample.getTemperatures()[1], 21.0F);
  EXPECT_EQ(sample.getTemperatures()[2], -3.25F);
  EXPECT_EQ(sample.getStatus(), Status::DEGRADED);
  ASSERT_EQ(sample.getComponents().size(), 1U);
  EXPECT_EQ(sample.getComponents()[0].getCell(), "rt-0/board");
  EXPECT_EQ(sample.getComponents()[0].getStatus(), Status::FAULT);
}

TEST_F(CapnpMessageTest, CommitsExactlyTheWordsOfTheSegment) {
  ASSERT_FALSE(send_example(1, sender_.max_record_payload()));
  Message raw = in_.receive(kTimeout);
  ASSERT_TRUE(raw) << raw.error().message();
  EXPECT_EQ(raw.size(), example_words(1).size() * sizeof(std::uint64_t));

  CapnpMessage<Sample> message = read_capnp<Sample>(std::move(raw));
  ASSERT_TRUE(message) << message.error_detail();
  EXPECT_EQ(message.root().getSequence(), 1U);
}

// Disabled until the ring skips the padding that a shrunk commit (or an
// abandoned loan) leaves behind without waiting for the next peek: today the
// second max-size loan waits for space that only the next message frees.
TEST_F(CapnpMessageTest, MaxSizeSendsFollowOneAnother) {
  for (std::uint64_t sequence = 0; sequence < 3; ++sequence) {
    ASSERT_FALSE(send_example(sequence, sender_.max_record_payload())) << "message " << sequence;
    CapnpMessage<Sample> message = receive();
    ASSERT_TRUE(message) << message.error_detail();
    EXPECT_EQ(message.root().getSequence(), sequence);
  }
}

TEST_F(CapnpMessageTest, MessagesBuiltElsewhereAreReadToo) {
  ASSERT_FALSE(send_raw(example_words(3)));
  CapnpMessage<Sample> message = receive();
  ASSERT_TRUE(message) << message.error_detail();
  EXPECT_EQ(message.root().getSequence(), 3U);
  EXPECT_EQ(message.root().getComponents()[0].getCell(), "rt-0/board");
}

TEST_F(CapnpMessageTest, MessageLargerThanMaxBytesSendsNothing) {
  const std::string long_name(1000, 'x');
  EXPECT_EQ(send_capnp<Sample>(
                out_, 256, [&](Sample::Builder sample) { sample.setCell(long_name); }, kTimeout),
            MessageErrc::message_too_large);
  EXPECT_EQ(in_.try_receive().error(), MessageErrc::would_block);

  ASSERT_FALSE(send_example(2));
  CapnpMessage<Sample> message = receive();
  ASSERT_TRUE(message) << message.error_detail();
  EXPECT_EQ(message.root().getSequence(), 2U);
  EXPECT_EQ(message.root().getCell(), "rt-0");
}

TEST_F(CapnpMessageTest, FillExceptionPropagatesAndSendsNothing) {
  EXPECT_THROW(
      (void)send_capnp<Sample>(
          out_, 256, [](Sample::Builder) { throw std::runtime_error("fill failed"); }, kTimeout),
      std::runtime_error);
  EXPECT_EQ(in_.try_receive().error(), MessageErrc::would_block);

  ASSERT_FALSE(send_example(4));
  CapnpMessage<Sample> message = receive();
  ASSERT_TRUE(message) << message.error_detail();
  EXPECT_EQ(message.root().getSequence(), 4U);
}

TEST_F(CapnpMessageTest, MaxBytesBelowOneWordIsInvalid) {
  EXPECT_EQ(send_capnp<Sample>(
                out_, 7, [](Sample::Builder) {}, kTimeout),
            std::errc::invalid_argument);
}

TEST_F(CapnpMessageTest, MaxBytesAboveOneRecordIsRefusedByTheLoan) {
  EXPECT_EQ(send_capnp<Sample>(
                out_, sender_.max_record_payload() + 8, [](Sample::Builder) {}, kTimeout),
            MessageErrc::loan_too_large);
}

TEST_F(CapnpMessageTest, ReceiveErrorsPassThrough) {
  CapnpMessage<Sample> message = receive_capnp<Sample>(in_, kNoWait);
  EXPECT_FALSE(message);
  EXPECT_EQ(message.error(), MessageErrc::would_block);
  EXPECT_THROW((void)message.root(), std::logic_error);
}

TEST_F(CapnpMessageTest, ReleaseGivesTheMessageUp) {
  ASSERT_FALSE(send_example(5));
  CapnpMessage<Sample> message = receive();
  ASSERT_TRUE(message) << message.error_detail();
  message.release();
  EXPECT_FALSE(message);
  EXPECT_FALSE(message.error());
  message.release();
}

TEST_F(CapnpMessageTest, RejectsAPayloadThatIsNotWholeWords) {
  const std::array<std::byte, 12> bytes{};
  ASSERT_FALSE(out_.send(bytes, kTimeout));
  expect_malformed();
}

TEST_F(CapnpMessageTest, RejectsAnEmptyPayload) {
  ASSERT_FALSE(out_.send(std::span<const std::byte>{}, kTimeout));
  expect_malformed();
}

TEST_F(CapnpMessageTest, RejectsARootPointerOutOfBounds) {
  const std::array<std::uint64_t, 2> words{struct_pointer(100, 1, 0), 0};
  ASSERT_FALSE(send_raw(words));
  expect_malformed();
}

TEST_F(CapnpMessageTest, RejectsARootThatIsAList) {
  const std::array<std::uint64_t, 2> words{list_pointer(0, ElementSize::byte, 8), 0};
  ASSERT_FALSE(send_raw(words));
  expect_malformed();
}

TEST_F(CapnpMessageTest, RejectsAFieldPointerOutOfBounds) {
  // temperatures: 1000 floats claimed, none present.
  const std::array<std::uint64_t, 4> words{struct_pointer(0, 0, kSamplePointers), 0,
                                           list_pointer(1, ElementSize::four_bytes, 1000), 0};
  ASSERT_FALSE(send_raw(words));
  expect_malformed();
}

// capnp checks these only when the field is read; validation reads it first.
TEST_F(CapnpMessageTest, RejectsTextWithoutTerminatorBeforeTheFieldIsRead) {
  std::uint64_t text = 0;
  std::memcpy(&text, "abcdefgh", sizeof text);
  const std::array<std::uint64_t, 5> words{struct_pointer(0, 0, kSamplePointers),
                                           list_pointer(2, ElementSize::byte, 8), 0, 0, text};
  ASSERT_FALSE(send_raw(words));
  expect_malformed();
}

TEST_F(CapnpMessageTest, RejectsAListOfTheWrongElementSizeBeforeTheFieldIsRead) {
  // temperatures (List(Float32)) pointing at a list of bytes.
  const std::array<std::uint64_t, 5> words{struct_pointer(0, 0, kSamplePointers), 0,
                                           list_pointer(1, ElementSize::byte, 8), 0, 0};
  ASSERT_FALSE(send_raw(words));
  expect_malformed();
}

TEST_F(CapnpMessageTest, RejectsNestingDeeperThanTheLimit) {
  // Each level is a list and a struct: 40 levels nest 80 deep.
  constexpr int kLevels = 40;
  const auto deep = [](Sample::Builder sample) { nest(sample, kLevels); };
  ASSERT_FALSE(send_capnp<Sample>(out_, 4096, deep, kTimeout));
  expect_malformed({.nesting_limit = 64});

  ASSERT_FALSE(send_capnp<Sample>(out_, 4096, deep, kTimeout));
  CapnpMessage<Sample> accepted = receive({.nesting_limit = 2 * kLevels + 2});
  ASSERT_TRUE(accepted) << accepted.error_detail();
  EXPECT_NO_THROW((void)read_everything(accepted.root()));
}

TEST_F(CapnpMessageTest, RejectsAListBeyondTheTraversalLimit) {
  // 2048 floats: 1024 words, in one record of the default link.
  constexpr unsigned kTemperatures = 2048;
  constexpr std::size_t kMaxBytes = kTemperatures * sizeof(float) + 256;
  const auto large = [](Sample::Builder sample) { sample.initTemperatures(kTemperatures); };
  ASSERT_FALSE(send_capnp<Sample>(out_, kMaxBytes, large, kTimeout));
  expect_malformed({.traversal_limit_words = 1000});

  ASSERT_FALSE(send_capnp<Sample>(out_, kMaxBytes, large, kTimeout));
  CapnpMessage<Sample> accepted = receive();
  ASSERT_TRUE(accepted) << accepted.error_detail();
  EXPECT_EQ(accepted.root().getTemperatures().size(), kTemperatures);
}

TEST_F(CapnpMessageTest, RejectsAnAmplifiedListOfEmptyStructs) {
  // components: 2^28 empty structs in a 5-word message; the default limit
  // charges each one.
  const std::array<std::uint64_t, 5> words{
      struct_pointer(0, 0, kSamplePointers), 0, 0,
      list_pointer(0, ElementSize::inline_composite, 0),
      struct_pointer(std::int32_t{1} << 28, 0, 0)};  // the tag: element count in the offset
  ASSERT_FALSE(send_raw(words));
  expect_malformed();
}

TEST_F(CapnpMessageTest, RandomGarbageIsRejectedOrFullyReadable) {
  int rejected = 0;
  constexpr int kSeeds = 300;
  for (int seed = 0; seed < kSeeds; ++seed) {
    std::mt19937_64 random(static_cast<std::uint64_t>(seed));
    std::vector<std::uint64_t> words(1 + random() % 64);
    for (std::uint64_t& word : words) word = random();
    ASSERT_FALSE(send_raw(words)) << "seed " << seed;
    CapnpMessage<Sample> message = receive();
    if (message) {
      EXPECT_NO_THROW((void)read_everything(message.root())) << "seed " << seed;
    } else {
      EXPECT_EQ(message.error(), MessageErrc::malformed_message) << "seed " << seed;
      ++rejected;
    }
  }
  EXPECT_GT(rejected, kSeeds * 9 / 10);
}

TEST_F(CapnpMessageTest, MutatedMessagesAreRejectedOrFullyReadable) {
  const std::vector<std::uint64_t> valid = example_words(9);
  int rejected = 0;
  constexpr int kSeeds = 500;
  for (int seed = 0; seed < kSeeds; ++seed) {
    std::mt19937_64 random(static_cast<std::uint64_t>(seed));
    std::vector<std::uint64_t> words = valid;
    const auto bytes = std::as_writable_bytes(std::span{words});
    for (int flips = 1 + static_cast<int>(random() % 4); flips > 0; --flips) {
      bytes[random() % bytes.size()] ^= static_cast<std::byte>(1U << random() % 8);
    }
    ASSERT_FALSE(send_raw(words)) << "seed " << seed;
    CapnpMessage<Sample> message = receive();
    if (message) {
      EXPECT_NO_THROW((void)read_everything(message.root())) << "seed " << seed;
    } else {
      EXPECT_EQ(message.error(), MessageErrc::malformed_message) << "seed " << seed;
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_LT(rejected, kSeeds);
}

// The documented hazard of zero copy: the record stays the peer's memory.
TEST_F(CapnpMessageTest, ZeroCopyReaderSeesThePeerRewriteTheRecord) {
  char* built_text = nullptr;
  ASSERT_FALSE(send_capnp<Sample>(
      out_, 1024,
      [&](Sample::Builder sample) {
        fill_example(sample, 6);
        built_text = sample.getCell().begin();
      },
      kTimeout));
  CapnpMessage<Sample> message = receive();
  ASSERT_TRUE(message) << message.error_detail();

  built_text[0] = 'X';
  EXPECT_EQ(message.root().getCell(), "Xt-0");
}

TEST_F(CapnpMessageTest, StableCopyIsImmuneToThePeerRewritingTheRecord) {
  char* built_text = nullptr;
  ASSERT_FALSE(send_capnp<Sample>(
      out_, 1024,
      [&](Sample::Builder sample) {
        fill_example(sample, 8);
        built_text = sample.getCell().begin();
      },
      kTimeout));
  CapnpMessage<Sample> message = receive({.stable_copy = true});
  ASSERT_TRUE(message) << message.error_detail();
  EXPECT_FALSE(message.zero_copy());
  EXPECT_FALSE(
      contains(link_.device(1).output_section(kSenderId), message.root().getCell().begin()));

  built_text[0] = 'X';
  EXPECT_EQ(message.root().getCell(), "rt-0");
  EXPECT_EQ(message.root().getSequence(), 8U);
}

}  // namespace
}  // namespace cellink::linux_uio
