// The console viewer protocol's encoding (spec in the header).
#include "cellink/hypervisor/console_viewer_protocol.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace cellink::hypervisor::console_protocol {
namespace {

void put_u16(std::string& out, std::uint16_t value) {
  out.push_back(static_cast<char>(value & 0xff));
  out.push_back(static_cast<char>(value >> 8));
}

void put_u32(std::string& out, std::uint32_t value) {
  for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<char>(value >> shift));
}

std::uint16_t get_u16(std::string_view in, std::size_t at) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(in[at]) |
                                    static_cast<unsigned char>(in[at + 1]) << 8);
}

std::uint32_t get_u32(std::string_view in, std::size_t at) {
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    value |= std::uint32_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  }
  return value;
}

bool valid_mode(std::uint8_t mode) {
  return mode == static_cast<std::uint8_t>(ViewerMode::read_only) ||
         mode == static_cast<std::uint8_t>(ViewerMode::read_write);
}

}  // namespace

std::string encode_frame(FrameType type, std::string_view payload) {
  std::string out;
  out.reserve(kHeaderSize + payload.size());
  put_u16(out, static_cast<std::uint16_t>(type));
  put_u16(out, 0);
  put_u32(out, static_cast<std::uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

std::string encode_data(FrameType type, std::span<const std::byte> bytes) {
  std::string out;
  const auto* data = reinterpret_cast<const char*>(bytes.data());
  for (std::size_t at = 0; at < bytes.size(); at += kMaxPayload) {
    const std::size_t size = std::min<std::size_t>(kMaxPayload, bytes.size() - at);
    out += encode_frame(type, std::string_view(data + at, size));
  }
  return out;
}

std::string encode_hello(const Hello& hello) {
  std::string payload;
  put_u16(payload, hello.version);
  payload.push_back(static_cast<char>(hello.mode));
  payload.push_back(0);
  put_u16(payload, hello.size.cols);
  put_u16(payload, hello.size.rows);
  return encode_frame(FrameType::hello, payload);
}

std::string encode_welcome(const Welcome& welcome) {
  std::string payload;
  put_u16(payload, welcome.version);
  payload.push_back(static_cast<char>(welcome.mode));
  payload.push_back(0);
  put_u32(payload, 0);
  return encode_frame(FrameType::welcome, payload);
}

std::string encode_resize(TerminalSize size) {
  std::string payload;
  put_u16(payload, size.cols);
  put_u16(payload, size.rows);
  return encode_frame(FrameType::resize, payload);
}

std::optional<Hello> decode_hello(std::string_view payload) {
  if (payload.size() != kHelloSize) return std::nullopt;
  const auto mode = static_cast<std::uint8_t>(payload[2]);
  if (!valid_mode(mode)) return std::nullopt;
  return Hello{get_u16(payload, 0), static_cast<ViewerMode>(mode),
               TerminalSize{get_u16(payload, 4), get_u16(payload, 6)}};
}

std::optional<Welcome> decode_welcome(std::string_view payload) {
  if (payload.size() != kWelcomeSize) return std::nullopt;
  const auto mode = static_cast<std::uint8_t>(payload[2]);
  if (!valid_mode(mode)) return std::nullopt;
  return Welcome{get_u16(payload, 0), static_cast<ViewerMode>(mode)};
}

std::optional<TerminalSize> decode_resize(std::string_view payload) {
  if (payload.size() != kResizeSize) return std::nullopt;
  return TerminalSize{get_u16(payload, 0), get_u16(payload, 2)};
}

std::string_view describe(FrameType type) noexcept {
  switch (type) {
    case FrameType::hello: return "hello";
    case FrameType::welcome: return "welcome";
    case FrameType::refused: return "refused";
    case FrameType::output: return "output";
    case FrameType::input: return "input";
    case FrameType::resize: return "resize";
    case FrameType::notice: return "notice";
  }
  return "unknown";
}

void FrameReader::feed(const char* bytes, std::size_t size) {
  if (!error_.empty()) return;
  if (consumed_ > 0 && consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ > kMaxPayload) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(bytes, size);
}

std::optional<Frame> FrameReader::next() {
  if (!error_.empty()) return std::nullopt;
  const std::string_view pending = std::string_view(buffer_).substr(consumed_);
  if (pending.size() < kHeaderSize) return std::nullopt;
  const std::uint32_t length = get_u32(pending, 4);
  if (length > kMaxPayload) {
    error_ = fmt::format("a frame announces {} payload bytes, more than the {} allowed", length,
                         kMaxPayload);
    return std::nullopt;
  }
  if (pending.size() < kHeaderSize + length) return std::nullopt;
  Frame frame{static_cast<FrameType>(get_u16(pending, 0)),
              std::string(pending.substr(kHeaderSize, length))};
  consumed_ += kHeaderSize + length;
  return frame;
}

}  // namespace cellink::hypervisor::console_protocol
