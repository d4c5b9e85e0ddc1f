// The console viewer protocol: byte-exact frames, decoding, and a reader
// that copes with any split of the stream and refuses oversized frames.
#include "cellink/hypervisor/console_viewer_protocol.hpp"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace cellink::hypervisor::console_protocol {
namespace {

TEST(ConsoleViewerProtocol, HelloIsLittleEndianByteForByte) {
  const std::string frame = encode_hello({1, ViewerMode::read_write, {132, 43}});
  const std::string expected(
      "\x01\x00\x00\x00\x08\x00\x00\x00"   // hello, 8 bytes
      "\x01\x00\x01\x00\x84\x00\x2b\x00",  // v1, rw, 132x43
      16);
  EXPECT_EQ(frame, expected);
}

TEST(ConsoleViewerProtocol, HelloWelcomeAndResizeRoundTrip) {
  FrameReader reader;
  const std::string stream = encode_hello({1, ViewerMode::read_only, {80, 24}}) +
                             encode_welcome({1, ViewerMode::read_write}) + encode_resize({200, 50});
  reader.feed(stream.data(), stream.size());
  auto hello_frame = reader.next();
  ASSERT_TRUE(hello_frame);
  ASSERT_EQ(hello_frame->type, FrameType::hello);
  const auto hello = decode_hello(hello_frame->payload);
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->mode, ViewerMode::read_only);
  EXPECT_EQ(hello->size, (TerminalSize{80, 24}));
  auto welcome = decode_welcome(reader.next()->payload);
  ASSERT_TRUE(welcome);
  EXPECT_EQ(welcome->mode, ViewerMode::read_write);
  EXPECT_EQ(decode_resize(reader.next()->payload), (TerminalSize{200, 50}));
  EXPECT_FALSE(reader.next());
}

TEST(ConsoleViewerProtocol, MalformedFixedPayloadsAreRejected) {
  EXPECT_FALSE(decode_hello(std::string(7, '\0')));
  EXPECT_FALSE(decode_hello(std::string("\x01\x00\x02\x00\x00\x00\x00\x00", 8)));  // mode 2
  EXPECT_FALSE(decode_resize("abc"));
  EXPECT_FALSE(decode_welcome(""));
}

TEST(ConsoleViewerProtocol, LargeDataIsSplitIntoFramesWithinTheLimit) {
  const std::string data(kMaxPayload * 2 + 5, 'd');
  const std::string stream = encode_data(FrameType::output, std::as_bytes(std::span(data)));
  FrameReader reader;
  reader.feed(stream.data(), stream.size());
  std::string joined;
  int frames = 0;
  while (auto frame = reader.next()) {
    EXPECT_EQ(frame->type, FrameType::output);
    EXPECT_LE(frame->payload.size(), kMaxPayload);
    joined += frame->payload;
    ++frames;
  }
  EXPECT_EQ(frames, 3);
  EXPECT_EQ(joined, data);
}

TEST(ConsoleViewerProtocol, TheReaderReassemblesAnySplitOfTheStream) {
  std::string stream;
  std::vector<std::string> payloads;
  for (int i = 0; i < 40; ++i) {
    payloads.emplace_back(static_cast<std::size_t>(i * 37 % 300), static_cast<char>('a' + i % 26));
    stream += encode_frame(FrameType::output, payloads.back());
  }
  for (unsigned seed = 1; seed <= 30; ++seed) {
    std::mt19937 random(seed);
    FrameReader reader;
    std::vector<std::string> seen;
    for (std::size_t at = 0; at < stream.size();) {
      const std::size_t size = std::min<std::size_t>(1 + random() % 50, stream.size() - at);
      reader.feed(stream.data() + at, size);
      at += size;
      while (auto frame = reader.next()) seen.push_back(frame->payload);
    }
    EXPECT_EQ(seen, payloads) << "seed " << seed;
    EXPECT_EQ(reader.buffered(), 0u);
  }
}

TEST(ConsoleViewerProtocol, AnOversizedFrameLatchesAnError) {
  std::string header("\x04\x00\x00\x00", 4);
  const std::uint32_t length = kMaxPayload + 1;
  for (int shift = 0; shift < 32; shift += 8) header.push_back(static_cast<char>(length >> shift));
  FrameReader reader;
  reader.feed(header.data(), header.size());
  EXPECT_FALSE(reader.next());
  EXPECT_NE(reader.error().find("65537"), std::string::npos) << reader.error();
  const std::string good = encode_frame(FrameType::output, "x");
  reader.feed(good.data(), good.size());
  EXPECT_FALSE(reader.next());
}

}  // namespace
}  // namespace cellink::hypervisor::console_protocol
