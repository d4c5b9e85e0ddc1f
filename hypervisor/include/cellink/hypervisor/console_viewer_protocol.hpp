// The console viewer protocol: what `cellink console CELL` and `cellink
// console serve` say to each other on RUNTIME_DIR/console/<cell>.sock.
//
// A UNIX stream socket carrying frames. Each frame is an 8-byte header and a
// payload of `length` bytes (at most kMaxPayload):
//
//   0  u16 type       FrameType below
//   2  u16 reserved   0; a receiver ignores it
//   4  u32 length     payload bytes that follow
//
// All integers are little-endian, written and read byte by byte (never by
// casting the buffer), so the encoding does not depend on the host.
//
//   viewer -> service   hello (first frame, exactly once), input, resize
//   service -> viewer   welcome or refused (the answer to hello), output,
//                       notice
//
// hello    u16 version (kViewerProtocolVersion), u8 mode (ViewerMode),
//          u8 reserved 0, u16 cols, u16 rows (0 when unknown)         8 bytes
// welcome  u16 version, u8 granted mode, u8 reserved, u32 reserved     8 bytes
//          then the scrollback as output frames, then live output
// refused  UTF-8 text: why; the service closes the connection after it
// output   guest output bytes
// input    keys for the guest; only from the viewer granted read_write
// resize   u16 cols, u16 rows; only from the viewer granted read_write
// notice   UTF-8 text for the person watching; the connection stays
//
// A frame of an unknown type, a hello that is not first, a payload longer
// than kMaxPayload or a short fixed-size payload is a protocol error: the
// service sends `refused` and closes. Version rule: a change that an old
// peer would misread bumps kViewerProtocolVersion; the service refuses a
// hello with another version, naming both.
//
// Threading: plain functions and values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace cellink::hypervisor::console_protocol {

inline constexpr std::uint16_t kViewerProtocolVersion = 1;
inline constexpr std::size_t kHeaderSize = 8;
inline constexpr std::uint32_t kMaxPayload = 64 * 1024;
inline constexpr std::size_t kHelloSize = 8;
inline constexpr std::size_t kWelcomeSize = 8;
inline constexpr std::size_t kResizeSize = 4;

enum class FrameType : std::uint16_t {
  hello = 1,
  welcome = 2,
  refused = 3,
  output = 4,
  input = 5,
  resize = 6,
  notice = 7,
};

enum class ViewerMode : std::uint8_t { read_only = 0, read_write = 1 };

struct TerminalSize {
  std::uint16_t cols = 0;
  std::uint16_t rows = 0;
  friend bool operator==(const TerminalSize&, const TerminalSize&) = default;
};

struct Hello {
  std::uint16_t version = kViewerProtocolVersion;
  ViewerMode mode = ViewerMode::read_only;
  TerminalSize size;
};

struct Welcome {
  std::uint16_t version = kViewerProtocolVersion;
  ViewerMode mode = ViewerMode::read_only;
};

struct Frame {
  FrameType type{};
  std::string payload;
};

// One whole frame, header and payload, ready to write. Payloads longer than
// kMaxPayload must be split by the caller (encode_output does).
[[nodiscard]] std::string encode_frame(FrameType type, std::string_view payload);
// Output or input bytes as as many frames as kMaxPayload needs.
[[nodiscard]] std::string encode_data(FrameType type, std::span<const std::byte> bytes);
[[nodiscard]] std::string encode_hello(const Hello& hello);
[[nodiscard]] std::string encode_welcome(const Welcome& welcome);
[[nodiscard]] std::string encode_resize(TerminalSize size);

// nullopt when the payload has the wrong size or an unknown mode.
[[nodiscard]] std::optional<Hello> decode_hello(std::string_view payload);
[[nodiscard]] std::optional<Welcome> decode_welcome(std::string_view payload);
[[nodiscard]] std::optional<TerminalSize> decode_resize(std::string_view payload);
[[nodiscard]] std::string_view describe(FrameType type) noexcept;

// Splits a byte stream into frames. Feed it what the socket gave; take
// frames with next(). A header announcing more than kMaxPayload latches an
// error (error() non-empty) and next() returns nothing from then on.
class FrameReader {
 public:
  void feed(const char* bytes, std::size_t size);
  [[nodiscard]] std::optional<Frame> next();
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  // Bytes fed but not yet returned as a frame.
  [[nodiscard]] std::size_t buffered() const noexcept { return buffer_.size() - consumed_; }

 private:
  std::string buffer_;
  std::size_t consumed_ = 0;
  std::string error_;
};

}  // namespace cellink::hypervisor::console_protocol
