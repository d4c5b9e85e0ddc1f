// What the two ping-pong programs share: the command line, the message
// format and the latency report. cellink-ping-pong (ping_pong.cpp) uses the
// blocking and polling Channel calls, cellink-ping-pong-async
// (ping_pong_async.cpp) AsyncChannel with callbacks.
//
// The protocol: the ping sends message n (n = 0, 1, ...), the pong sends it
// back unchanged, the ping checks it and takes the round-trip time. Message n
// is `size` bytes: n as 8 bytes little-endian, then byte i = (n * 31 + i) &
// 0xff, so an echo that is late, early or corrupt is caught. The pong echoes
// until the ping leaves the link.
#pragma once

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cellink/linux-uio/host_device.hpp"

namespace cellink::examples::ping_pong {

static_assert(std::endian::native == std::endian::little, "message n carries n little-endian");

inline constexpr std::size_t kSequenceBytes = sizeof(std::uint64_t);

struct Options {
  std::string runtime_dir;
  std::string link = "demo";
  std::string cell;
  std::string role;
  std::string channel = "ping-pong";
  std::uint64_t count = 1000;  // ping: measured round trips
  std::uint64_t warmup = 100;  // ping: round trips before measuring
  std::size_t size = 64;
  double timeout_s = 10;  // the longest any one step may take

  [[nodiscard]] std::chrono::nanoseconds timeout() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(timeout_s));
  }
  [[nodiscard]] linux_uio::HostDeviceOptions device() const {
    linux_uio::HostDeviceOptions options;
    options.runtime_dir = runtime_dir;
    options.link = link;
    options.cell = cell;
    return options;
  }
};

// The flags both programs take.
inline void add_options(CLI::App& app, Options& options) {
  app.add_option("--runtime-dir", options.runtime_dir, "Runtime directory of `cellink daemon`")
      ->required();
  app.add_option("--link", options.link, "Link to attach to")->capture_default_str();
  app.add_option("--cell", options.cell, "This process's cell name in the daemon's config")
      ->required();
  app.add_option("--role", options.role, "ping: measure; pong: echo until the ping leaves")
      ->required()
      ->check(CLI::IsMember({"ping", "pong"}));
  app.add_option("--channel", options.channel, "Channel name")->capture_default_str();
  app.add_option("--count", options.count, "ping: round trips to measure")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}));
  app.add_option("--warmup", options.warmup, "ping: round trips before measuring")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{100'000'000}));
  app.add_option("--size", options.size, "ping: message size in bytes (fragmented above a record)")
      ->capture_default_str()
      ->check(CLI::Range(kSequenceBytes, std::size_t{1} << 20));
  app.add_option("--timeout", options.timeout_s, "Seconds any one step may take")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
}

// Writes message n into `out`.
inline void fill_message(std::span<std::byte> out, std::uint64_t n) {
  std::memcpy(out.data(), &n, kSequenceBytes);
  for (std::size_t i = kSequenceBytes; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>((n * 31 + i) & 0xff);
  }
}

// Empty when `echo` is message n of `size` bytes; otherwise what is wrong.
inline std::string check_echo(std::span<const std::byte> echo, std::uint64_t n, std::size_t size) {
  if (echo.size() != size) {
    return fmt::format("echo {} has {} bytes, expected {}", n, echo.size(), size);
  }
  std::uint64_t carried = 0;
  std::memcpy(&carried, echo.data(), kSequenceBytes);
  if (carried != n) return fmt::format("expected echo {}, got echo {}", n, carried);
  for (std::size_t i = kSequenceBytes; i < size; ++i) {
    if (echo[i] != static_cast<std::byte>((n * 31 + i) & 0xff)) {
      return fmt::format("echo {} differs at byte {}", n, i);
    }
  }
  return {};
}

// Round-trip times, and the report the ping prints at the end.
class RoundTrips {
 public:
  explicit RoundTrips(std::size_t expected) { samples_.reserve(expected); }

  void add(std::chrono::nanoseconds round_trip) { samples_.push_back(round_trip.count()); }
  [[nodiscard]] std::size_t size() const { return samples_.size(); }

  // "ping: round trip us  p50 12.4  p90 15.1  p99 30.2  p99.9 80.5  max 120.3"
  void print(const Options& options, const std::string& mode) {
    std::sort(samples_.begin(), samples_.end());
    fmt::print("ping: {} round trips of {} B, mode {}, every echo intact\n", samples_.size(),
               options.size, mode);
    fmt::print(
        "ping: round trip us  p50 {:.1f}  p90 {:.1f}  p99 {:.1f}  p99.9 {:.1f}  max {:.1f}\n",
        percentile(50), percentile(90), percentile(99), percentile(99.9), percentile(100));
    std::fflush(stdout);
  }

 private:
  // Nearest rank, in microseconds.
  [[nodiscard]] double percentile(double percent) const {
    if (samples_.empty()) return 0;
    const auto rank =
        static_cast<std::size_t>(std::ceil(percent / 100.0 * static_cast<double>(samples_.size())));
    return static_cast<double>(samples_[std::clamp<std::size_t>(rank, 1, samples_.size()) - 1]) /
           1000.0;
  }

  std::vector<std::int64_t> samples_;  // nanoseconds
};

}  // namespace cellink::examples::ping_pong
