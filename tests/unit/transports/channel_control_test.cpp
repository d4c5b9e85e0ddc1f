// The control channel's wire format (channel_control.hpp): encode_control()
// and decode_control(), and every way decode_control() rejects a record a
// hostile peer wrote. Spec: docs/link.md.
#include "cellink/transports/channel_control.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <span>
#include <string>

#include <gtest/gtest.h>

namespace cellink::transports {

// gtest prints these by name (found by argument-dependent lookup).
void PrintTo(ControlError error, std::ostream* out) {
  *out << describe(error);
}

namespace {

ControlMessage encoded_open(std::uint16_t channel = 7, const std::string& name = "telemetry",
                            std::uint32_t max_message_size = 4096) {
  ControlMessage message{};
  EXPECT_TRUE(encode_control(ControlType::open, channel, name.data(), name.size(), max_message_size,
                             4096, message));
  return message;
}

// Decodes `message` as the record a peer would have written.
ControlError decode(const ControlMessage& message, ControlMessage& out) {
  return decode_control(std::as_bytes(std::span{&message, 1}), out);
}
ControlError decode(const ControlMessage& message) {
  ControlMessage out{};
  return decode(message, out);
}

// ---- round trip --------------------------------------------------------------

TEST(ChannelControl, OpenRoundTripsEveryField) {
  ControlMessage decoded{};
  ASSERT_EQ(decode(encoded_open(7, "telemetry", 4096), decoded), ControlError::none);
  EXPECT_EQ(decoded.type, static_cast<std::uint16_t>(ControlType::open));
  EXPECT_EQ(decoded.channel, 7);
  EXPECT_EQ(decoded.max_message_size, 4096U);
  ASSERT_EQ(decoded.name_length, 9);
  EXPECT_EQ(std::string(decoded.name, decoded.name_length), "telemetry");
}

TEST(ChannelControl, CloseRoundTripsWithAZeroMessageSize) {
  ControlMessage message{};
  ASSERT_TRUE(encode_control(ControlType::close, 255, "x", 1, 99999, 4096, message));
  ControlMessage decoded{};
  ASSERT_EQ(decode(message, decoded), ControlError::none);
  EXPECT_EQ(decoded.type, static_cast<std::uint16_t>(ControlType::close));
  EXPECT_EQ(decoded.channel, 255);
  EXPECT_EQ(decoded.max_message_size, 0U);
}

TEST(ChannelControl, LongestPrintableNameRoundTrips) {
  std::string name;
  for (char c = 0x20; name.size() < kMaxChannelName; ++c) name += c;
  ControlMessage decoded{};
  ASSERT_EQ(decode(encoded_open(1, name), decoded), ControlError::none);
  EXPECT_EQ(std::string(decoded.name, decoded.name_length), name);
}

TEST(ChannelControl, EncodedBytesFollowTheSpecLayout) {
  const ControlMessage message = encoded_open(0xfe, "ab", 0x03040506);
  std::byte raw[sizeof(ControlMessage)];
  std::memcpy(raw, &message, sizeof(raw));
  const auto at = [&](std::size_t offset) { return std::to_integer<unsigned>(raw[offset]); };
  EXPECT_EQ(at(0), 1U);  // type open, little-endian u16
  EXPECT_EQ(at(1), 0U);
  EXPECT_EQ(at(2), 0xfeU);  // channel
  EXPECT_EQ(at(3), 0U);
  EXPECT_EQ(at(4), 0x06U);  // max_message_size
  EXPECT_EQ(at(7), 0x03U);
  EXPECT_EQ(at(8), 2U);   // name_length
  EXPECT_EQ(at(10), 0U);  // reserved
  EXPECT_EQ(at(11), 0U);
  EXPECT_EQ(at(12), 0x00U);  // credit_window 4096, little-endian u32
  EXPECT_EQ(at(13), 0x10U);
  EXPECT_EQ(at(14), 0x00U);
  EXPECT_EQ(at(15), 0x00U);
  EXPECT_EQ(at(16), unsigned{'a'});
  EXPECT_EQ(at(17), unsigned{'b'});
  for (std::size_t offset = 18; offset < sizeof(raw); ++offset) EXPECT_EQ(at(offset), 0U) << offset;
}

TEST(ChannelControl, EncodeRefusesChannelZeroAndIdsAbove255) {
  ControlMessage message{};
  EXPECT_FALSE(encode_control(ControlType::open, 0, "a", 1, 1, 4096, message));
  EXPECT_FALSE(encode_control(ControlType::open, 256, "a", 1, 1, 4096, message));
  EXPECT_TRUE(encode_control(ControlType::open, 1, "a", 1, 1, 4096, message));
}

TEST(ChannelControl, EncodeRefusesInvalidNames) {
  ControlMessage message{};
  const std::string long_name(kMaxChannelName + 1, 'n');
  EXPECT_FALSE(encode_control(ControlType::open, 1, "", 0, 1, 4096, message));
  EXPECT_FALSE(
      encode_control(ControlType::open, 1, long_name.data(), long_name.size(), 1, 4096, message));
  EXPECT_FALSE(encode_control(ControlType::open, 1, "a\nb", 3, 1, 4096, message));
  EXPECT_FALSE(encode_control(ControlType::open, 1, "a\0b", 3, 1, 4096, message));
  EXPECT_FALSE(encode_control(ControlType::open, 1, "caf\xc3\xa9", 5, 1, 4096, message));
}

// ---- every ControlError ----------------------------------------------------

TEST(ChannelControl, RecordThatIsNot64BytesIsBadLength) {
  const ControlMessage message = encoded_open();
  const std::span<const std::byte> whole = std::as_bytes(std::span{&message, 1});
  std::byte longer[sizeof(ControlMessage) + 8] = {};
  std::memcpy(longer, &message, sizeof(message));
  ControlMessage out{};
  EXPECT_EQ(decode_control(whole.first(0), out), ControlError::bad_length);
  EXPECT_EQ(decode_control(whole.first(63), out), ControlError::bad_length);
  EXPECT_EQ(decode_control(std::span<const std::byte>(longer, 65), out), ControlError::bad_length);
  EXPECT_EQ(decode_control(std::span<const std::byte>(longer), out), ControlError::bad_length);
}

TEST(ChannelControl, UnknownTypeIsBadType) {
  for (const std::uint16_t type : {0, 4, 0x100, 0xffff}) {
    ControlMessage message = encoded_open();
    message.type = type;
    EXPECT_EQ(decode(message), ControlError::bad_type) << "type " << type;
  }
}

TEST(ChannelControl, ChannelZeroIsBadChannel) {
  ControlMessage message = encoded_open();
  message.channel = 0;
  EXPECT_EQ(decode(message), ControlError::bad_channel);
}

TEST(ChannelControl, ChannelAbove255IsBadChannel) {
  for (const std::uint16_t channel : {256, 0x1234, 0xffff}) {
    ControlMessage message = encoded_open();
    message.channel = channel;
    EXPECT_EQ(decode(message), ControlError::bad_channel) << "channel " << channel;
  }
}

TEST(ChannelControl, EmptyNameIsBadName) {
  ControlMessage message = encoded_open(7, "a");
  message.name[0] = 0;
  message.name_length = 0;
  EXPECT_EQ(decode(message), ControlError::bad_name);
}

TEST(ChannelControl, NameOf49BytesIsBadName) {
  ControlMessage message = encoded_open(7, std::string(kMaxChannelName, 'n'));
  message.name_length = kMaxChannelName + 1;
  EXPECT_EQ(decode(message), ControlError::bad_name);
  message.name_length = 0xffff;
  EXPECT_EQ(decode(message), ControlError::bad_name);
}

TEST(ChannelControl, ControlByteInTheNameIsBadName) {
  for (const char byte : {'\x01', '\t', '\x1f', '\x7f'}) {
    ControlMessage message = encoded_open(7, "abc");
    message.name[1] = byte;
    EXPECT_EQ(decode(message), ControlError::bad_name) << "byte " << int{byte};
  }
}

TEST(ChannelControl, NulInsideTheNameIsBadName) {
  ControlMessage message = encoded_open(7, "abc");
  message.name[1] = '\0';
  EXPECT_EQ(decode(message), ControlError::bad_name);
}

TEST(ChannelControl, JunkAfterTheNameIsBadName) {
  for (std::size_t position = 3; position < kMaxChannelName; ++position) {
    ControlMessage message = encoded_open(7, "abc");
    message.name[position] = 'x';
    EXPECT_EQ(decode(message), ControlError::bad_name) << "junk at name[" << position << "]";
  }
}

TEST(ChannelControl, NonAsciiByteInTheNameIsBadName) {
  for (const unsigned byte : {0x80U, 0xc3U, 0xffU}) {
    ControlMessage message = encoded_open(7, "abc");
    message.name[2] = static_cast<char>(byte);
    EXPECT_EQ(decode(message), ControlError::bad_name) << "byte " << byte;
  }
}

TEST(ChannelControl, NonZeroReservedBytesAreRejected) {
  ControlMessage message = encoded_open();
  message.reserved = 0x0100;
  EXPECT_EQ(decode(message), ControlError::nonzero_reserved);
}

TEST(ChannelControl, OpenCarriesItsCreditWindowAndRejectsOneOutOfRange) {
  ControlMessage decoded{};
  ASSERT_EQ(decode(encoded_open(), decoded), ControlError::none);
  EXPECT_EQ(decoded.credit_window, 4096U);
  for (const std::uint32_t window : {0U, kMinCreditWindow - 1, kMaxCreditWindow + 1, ~0U}) {
    ControlMessage message = encoded_open();
    message.credit_window = window;
    EXPECT_EQ(decode(message), ControlError::bad_window) << "credit_window " << window;
  }
  ControlMessage message{};
  EXPECT_FALSE(encode_control(ControlType::open, 1, "a", 1, 1, kMinCreditWindow - 1, message));
}

TEST(ChannelControl, CloseWithAWindowOrAMessageSizeIsRejected) {
  ControlMessage message{};
  ASSERT_TRUE(encode_control(ControlType::close, 3, "x", 1, 0, 0, message));
  message.credit_window = 64;
  EXPECT_EQ(decode(message), ControlError::bad_window);
  message.credit_window = 0;
  message.max_message_size = 1;
  EXPECT_EQ(decode(message), ControlError::bad_window);
}

// Whatever the peer writes, a record decode() accepts satisfies every rule.
TEST(ChannelControl, AcceptedRandomRecordsAreAlwaysWellFormed) {
  int accepted = 0;
  for (std::uint32_t seed = 1; seed <= 20000; ++seed) {
    std::mt19937 rng(seed);
    ControlMessage message = encoded_open(static_cast<std::uint16_t>(1 + rng() % 255));
    std::byte raw[sizeof(ControlMessage)];
    std::memcpy(raw, &message, sizeof(raw));
    for (unsigned flips = 1 + rng() % 3; flips > 0; --flips) {
      raw[rng() % sizeof(raw)] = static_cast<std::byte>(rng());
    }
    ControlMessage out{};
    if (decode_control(std::span<const std::byte>(raw), out) != ControlError::none) continue;
    ++accepted;
    ASSERT_TRUE(out.type >= 1 && out.type <= 3) << "seed " << seed;
    ASSERT_TRUE(out.channel >= 1 && out.channel <= kMaxChannelId) << "seed " << seed;
    ASSERT_TRUE(valid_channel_name(out.name, out.name_length)) << "seed " << seed;
    for (std::size_t i = out.name_length; i < kMaxChannelName; ++i) {
      ASSERT_EQ(out.name[i], 0) << "seed " << seed;
    }
  }
  EXPECT_GT(accepted, 0) << "the mutations never left a valid record: the property is untested";
}

}  // namespace
}  // namespace cellink::transports
