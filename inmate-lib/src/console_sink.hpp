// console_sink: how console.cpp hands output and input to another console
// than the 16550 (console_virtio.cpp installs one). Private to inmate-lib.
//
// A program that never attaches a sink links none of its code: console.cpp
// only calls through the pointer.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cellink::inmate {

struct ConsoleSink {
  // Takes console_write()'s bytes (and turns '\n' into "\r\n" itself).
  // Returns how many it consumed (sent, or dropped and counted);
  // console.cpp writes the rest to the 16550. Returns 0 at once when it is
  // busy (a nested call) or down.
  std::size_t (*write)(const char* bytes, std::size_t size) noexcept;
  // Bytes received, or 0; never blocks.
  std::size_t (*read)(char* out, std::size_t size) noexcept;
};

void console_set_sink(const ConsoleSink* sink) noexcept;
// console.cpp's counts, for console_counters().
std::uint64_t console_uart_bytes() noexcept;
std::uint64_t console_received_bytes() noexcept;

}  // namespace cellink::inmate
