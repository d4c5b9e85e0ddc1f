// What the guest programs share: their console lines and their options.
//
// Every progress line starts with "CELLINK-GUEST: "; the last line a program
// prints is "CELLINK-GUEST-RESULT: ok ..." or "CELLINK-GUEST-RESULT: fail
// <reason>", which the QEMU tests match (tests/qemu/guest_fixture.hpp).
// Options are `--name=VALUE` with a whole number (decimal, or hex with 0x)
// up to 2^31 - 1, as init.sh passes them from `cellink.arg=` words.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace cellink::guest_test {

inline void say(const std::string& line) {
  std::printf("CELLINK-GUEST: %s\n", line.c_str());
  std::fflush(stdout);
}

// Prints the failure result; returns the program's exit status.
inline int fail(const std::string& reason) {
  std::printf("CELLINK-GUEST-RESULT: fail %s\n", reason.c_str());
  std::fflush(stdout);
  return 1;
}

// The value of `arg` when it is `name` followed by a number.
inline std::optional<std::uint64_t> parse_option(std::string_view arg, std::string_view name) {
  if (!arg.starts_with(name) || arg.size() == name.size()) return std::nullopt;
  const std::string value(arg.substr(name.size()));
  char* end = nullptr;
  const unsigned long long parsed = std::strtoull(value.c_str(), &end, 0);
  if (*end != '\0' || value[0] == '-' || parsed > 0x7fffffffULL) return std::nullopt;
  return parsed;
}

}  // namespace cellink::guest_test
