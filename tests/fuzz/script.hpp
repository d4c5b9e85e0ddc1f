// Script: reads a fuzzer input as a little program of commands and
// operands, and FUZZ_CHECK, the fuzzers' oracle. Private to tests/fuzz/.
//
// Every read past the end yields zeros, so any byte string is a valid
// script and a truncated one simply ends; libFuzzer explores the command
// stream freely and every seed stays meaningful after mutation.
//
// Hosted (the fuzzers run on Linux with libFuzzer): uses <cstdio> and
// <cstdlib>, unlike the freestanding code it tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

namespace cellink::fuzz {

// A property the code under test must keep, whatever the peer wrote. Prints
// what broke and aborts, so libFuzzer saves the input as a crash-* file.
#define FUZZ_CHECK(condition, ...)                                                            \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, __LINE__, #condition); \
      std::fprintf(stderr, __VA_ARGS__);                                                      \
      std::fputc('\n', stderr);                                                               \
      std::abort();                                                                           \
    }                                                                                         \
  } while (false)

class Script {
 public:
  explicit Script(std::span<const std::uint8_t> bytes) noexcept : bytes_(bytes) {}

  [[nodiscard]] bool done() const noexcept { return next_ >= bytes_.size(); }
  [[nodiscard]] std::span<const std::uint8_t> rest() const noexcept {
    return done() ? std::span<const std::uint8_t>{} : bytes_.subspan(next_);
  }

  std::uint8_t u8() noexcept { return done() ? 0 : bytes_[next_++]; }
  std::uint16_t u16() noexcept { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() noexcept { return u16() | (std::uint32_t{u16()} << 16); }
  std::uint64_t u64() noexcept { return u32() | (std::uint64_t{u32()} << 32); }

  // Takes the next `count` bytes (fewer at the end) as a sub-script.
  Script take(std::size_t count) noexcept {
    const std::size_t available = done() ? 0 : bytes_.size() - next_;
    const std::size_t taken = count < available ? count : available;
    Script part(bytes_.subspan(next_, taken));
    next_ += taken;
    return part;
  }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t next_ = 0;
};

}  // namespace cellink::fuzz
