// InmateBulkChecker: checks the answer of examples/inmate-console to
// "bulk N" (its header comment is the format) as it arrives:
//   "bulk: begin N\r\n"
//   N payload bytes, byte i is kPattern[(i + i / 64) % 64]
//   "\r\nbulk: end N fnv1a64 0xHHHHHHHHHHHHHHHH elapsed-us U\r\n"
// The same interface as guest_test::BulkChecker, so that a row can use
// either: feed() every byte, done() once the END line matched, failure()
// says what went wrong first.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "console_bulk_format.hpp"

namespace cellink::bench::console {

class InmateBulkChecker {
 public:
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

  [[nodiscard]] static char pattern_byte(std::uint64_t index) noexcept {
    constexpr std::string_view kPattern =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static_assert(kPattern.size() == 64);
    return kPattern[(index + index / 64) % 64];
  }

 private:
  enum class State { seek_begin, begin_count, payload, end_line };
  static constexpr std::string_view kBegin = "bulk: begin ";
  static constexpr std::string_view kEnd = "bulk: end ";

  void step(std::uint8_t byte) {
    switch (state_) {
      case State::seek_begin:
        // The echo of the typed command and the banner come first.
        line_.push_back(static_cast<char>(byte));
        if (line_.size() > kBegin.size()) line_.erase(0, line_.size() - kBegin.size());
        if (line_ == kBegin) {
          line_.clear();
          state_ = State::begin_count;
        }
        return;
      case State::begin_count:
        if (byte == '\r') return;
        if (byte == '\n') {
          if (line_.empty()) {
            failure_ = "'bulk: begin' line without a byte count";
            return;
          }
          expected_ = std::stoull(line_);
          line_.clear();
          state_ = State::payload;
          return;
        }
        if (byte < '0' || byte > '9' || line_.size() > 19) {
          failure_ = "'bulk: begin' line has a malformed byte count";
          return;
        }
        line_.push_back(static_cast<char>(byte));
        return;
      case State::payload:
        if (static_cast<char>(byte) != pattern_byte(received_)) {
          char text[128];
          std::snprintf(text, sizeof text,
                        "payload byte %llu is 0x%02x, expected 0x%02x (lost, duplicated, "
                        "reordered or altered data)",
                        static_cast<unsigned long long>(received_), byte,
                        static_cast<unsigned>(static_cast<std::uint8_t>(pattern_byte(received_))));
          failure_ = text;
          return;
        }
        checksum_.add(byte);
        if (++received_ == expected_) state_ = State::end_line;
        return;
      case State::end_line:
        if (byte == '\r' || (byte == '\n' && line_.empty())) return;
        if (byte != '\n') {
          if (line_.size() < 200) line_.push_back(static_cast<char>(byte));
          return;
        }
        {
          char expected[96];
          std::snprintf(expected, sizeof expected, "%.*s%llu fnv1a64 0x%016llx elapsed-us ",
                        static_cast<int>(kEnd.size()), kEnd.data(),
                        static_cast<unsigned long long>(expected_),
                        static_cast<unsigned long long>(checksum_.value));
          if (!line_.starts_with(expected)) {
            failure_ = "end line '" + line_ + "' does not start with '" + expected + "'";
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
  guest_test::Fnv1a64 checksum_;
  bool done_ = false;
  std::string failure_;
};

}  // namespace cellink::bench::console
