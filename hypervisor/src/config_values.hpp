// Private to hypervisor/src: the value grammars of the configuration (sizes,
// protocol ids, backing paths) and key suggestions, used by the validator in
// config.cpp beside the public helpers in config_values.cpp.
// Spec: docs/config.md.
//
// Threading: pure functions; no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace cellink::hypervisor::detail {

enum class SizeParse : std::uint8_t { ok, malformed, overflow };

// parse_size() with the reason for a rejection, so the validator can tell
// "not a size" from "too big" in its messages.
[[nodiscard]] SizeParse parse_size_checked(std::string_view text, std::uint64_t& bytes) noexcept;

// Accepts every name protocol_name() prints: the named protocols and
// "0x" followed by one to four hex digits.
[[nodiscard]] bool parse_protocol(std::string_view text, std::uint16_t& protocol) noexcept;

// The protocol names a config may use, comma-separated, for error messages.
[[nodiscard]] std::string protocol_names();

// What is wrong with a backing path (the end of a sentence that starts with
// "backing '/x'"), or nothing when the path is usable. Accepts a plain
// absolute path directly in /dev/shm, under /dev/hugepages or /mnt/huge*, or,
// for tests, under /tmp.
[[nodiscard]] std::optional<std::string> backing_path_problem(std::string_view text);

// " (did you mean 'x'?)" when `key` is a near miss of one of `valid`, else "".
[[nodiscard]] std::string key_suggestion(std::string_view key,
                                         std::span<const std::string_view> valid);

}  // namespace cellink::hypervisor::detail
