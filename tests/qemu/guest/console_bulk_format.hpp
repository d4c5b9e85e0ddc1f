// The bulk transfer of the console benchmark and tests: a guest program
// (guest_console_bulk.cpp) writes it to a terminal, the host reads it back
// from the console's PTY or from QEMU's 16550 chardev and checks every byte.
//
//   "CELLINK-BULK-BEGIN <bytes>\n"
//   <bytes> payload bytes: byte i is bulk_byte(i)
//   "\nCELLINK-BULK-END <bytes> <fnv1a64 of the payload, 16 hex digits>\n"
//
// bulk_byte() mixes every bit of the position, so a lost, duplicated or
// reordered block shows up as a mismatch at a known offset, not only as a
// wrong checksum.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace cellink::guest_test {

inline constexpr std::string_view kBulkBegin = "CELLINK-BULK-BEGIN ";
inline constexpr std::string_view kBulkEnd = "CELLINK-BULK-END ";

[[nodiscard]] constexpr std::uint8_t bulk_byte(std::uint64_t position) noexcept {
  std::uint64_t x = position + 1;
  x ^= x >> 7;
  x *= 0x9e3779b97f4a7c15ULL;
  x ^= x >> 29;
  return static_cast<std::uint8_t>(x >> 56);
}

struct Fnv1a64 {
  std::uint64_t value = 0xcbf29ce484222325ULL;
  constexpr void add(std::uint8_t byte) noexcept {
    value ^= byte;
    value *= 0x100000001b3ULL;
  }
};

[[nodiscard]] inline std::string bulk_end_line(std::uint64_t bytes, std::uint64_t checksum) {
  char line[96];
  std::snprintf(line, sizeof line, "\n%.*s%llu %016llx\n", static_cast<int>(kBulkEnd.size()),
                kBulkEnd.data(), static_cast<unsigned long long>(bytes),
                static_cast<unsigned long long>(checksum));
  return line;
}

// Checks a received stream incrementally: feed() every byte as it arrives;
// done() once the END line matched, failure() says what went wrong first.
class BulkChecker {
 public:
  // Returns false once a failure is known (nothing more will be accepted).
  bool feed(std::string_view data) {
    for (const char c : data) {
      if (!failure_.empty() || done_) return failure_.empty();
      step(static_cast<std::uint8_t>(c));
    }
    return failure_.empty();
  }

  [[nodiscard]] bool done() const noexcept { return done_; }
  [[nodiscard]] bool begun() const noexcept { return state_ != State::seek_begin; }
  [[nodiscard]] const std::string& failure() const noexcept { return failure_; }
  [[nodiscard]] std::uint64_t expected_bytes() const noexcept { return expected_; }
  [[nodiscard]] std::uint64_t payload_received() const noexcept { return received_; }

 private:
  enum class State { seek_begin, begin_count, payload, end_line };

  void step(std::uint8_t byte) {
    switch (state_) {
      case State::seek_begin:
        // Anything before the BEGIN marker (boot messages, a prompt) is skipped.
        line_.push_back(static_cast<char>(byte));
        if (line_.size() > kBulkBegin.size()) line_.erase(0, line_.size() - kBulkBegin.size());
        if (line_ == kBulkBegin) {
          line_.clear();
          state_ = State::begin_count;
        }
        return;
      case State::begin_count:
        if (byte == '\n') {
          if (line_.empty()) {
            failure_ = "BEGIN line without a byte count";
            return;
          }
          expected_ = std::stoull(line_);
          line_.clear();
          state_ = expected_ == 0 ? State::end_line : State::payload;
          return;
        }
        if (byte == '\r') return;
        if (byte < '0' || byte > '9' || line_.size() > 19) {
          failure_ = "BEGIN line has a malformed byte count";
          return;
        }
        line_.push_back(static_cast<char>(byte));
        return;
      case State::payload:
        if (byte != bulk_byte(received_)) {
          char text[128];
          std::snprintf(text, sizeof text,
                        "payload byte %llu is 0x%02x, expected 0x%02x (lost, duplicated, "
                        "reordered or altered data)",
                        static_cast<unsigned long long>(received_), byte, bulk_byte(received_));
          failure_ = text;
          return;
        }
        checksum_.add(byte);
        if (++received_ == expected_) state_ = State::end_line;
        return;
      case State::end_line:
        line_.push_back(static_cast<char>(byte));
        if (byte != '\n' || line_.size() < 2) return;
        {
          const std::string expected_line = bulk_end_line(expected_, checksum_.value);
          if (line_ != expected_line) {
            failure_ = "END line '" + line_.substr(1, line_.size() - 2) + "' does not match '" +
                       expected_line.substr(1, expected_line.size() - 2) + "'";
            return;
          }
          done_ = true;
        }
        return;
    }
  }

  State state_ = State::seek_begin;
  std::string line_;
  std::uint64_t expected_ = 0;
  std::uint64_t received_ = 0;
  Fnv1a64 checksum_;
  bool done_ = false;
  std::string failure_;
};

}  // namespace cellink::guest_test
