// console: the 16550 UART at COM1 (0x3f8), 115200 8N1, polled, and the
// hand-over to another console (a ConsoleSink: the virtio console of
// console_virtio.cpp) once one is attached.
//
// Contract and threading: see console.hpp. No interrupts are used (IER = 0);
// each byte waits for the transmit holding register to empty, with a bound so
// a wedged UART slows output down but never hangs the inmate.
#include "cellink/inmate-lib/console.hpp"

#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/cpu.hpp"
#include "console_sink.hpp"

namespace cellink::inmate {
namespace {

constexpr std::uint16_t kCom1 = 0x3f8;
// Register offsets from the base port (DLAB = 0 unless noted).
constexpr std::uint16_t kTransmit = 0;         // THR (write)
constexpr std::uint16_t kInterruptEnable = 1;  // IER
constexpr std::uint16_t kDivisorLow = 0;       // DLL (DLAB = 1)
constexpr std::uint16_t kDivisorHigh = 1;      // DLM (DLAB = 1)
constexpr std::uint16_t kFifoControl = 2;      // FCR (write)
constexpr std::uint16_t kLineControl = 3;      // LCR
constexpr std::uint16_t kModemControl = 4;     // MCR
constexpr std::uint16_t kLineStatus = 5;       // LSR

constexpr std::uint8_t kLineControlDlab = 0x80;
constexpr std::uint8_t kLineControl8N1 = 0x03;
constexpr std::uint8_t kFifoEnableAndClear = 0x07;
constexpr std::uint8_t kModemControlDtrRts = 0x03;
constexpr std::uint16_t kReceive = 0;  // RBR (read)
constexpr std::uint8_t kLineStatusDataReady = 0x01;
constexpr std::uint8_t kLineStatusTransmitEmpty = 0x20;
// 115200 = 1.8432 MHz / 16 / 1.
constexpr std::uint16_t kDivisor115200 = 1;
// About a millisecond of polling on real hardware, far longer than one byte
// takes at 115200 baud.
constexpr unsigned kTransmitPolls = 1u << 16;

// Set by console_set_sink(), from the main loop; read by every write.
const ConsoleSink* g_sink = nullptr;
std::uint64_t g_uart_bytes = 0;
std::uint64_t g_received = 0;

void put_byte(char byte) {
  for (unsigned poll = 0; poll < kTransmitPolls; ++poll) {
    if (inb(kCom1 + kLineStatus) & kLineStatusTransmitEmpty) break;
    cpu_relax();
  }
  outb(kCom1 + kTransmit, static_cast<std::uint8_t>(byte));
}

}  // namespace

void console_init() {
  outb(kCom1 + kInterruptEnable, 0);
  outb(kCom1 + kLineControl, kLineControlDlab);
  outb(kCom1 + kDivisorLow, kDivisor115200 & 0xff);
  outb(kCom1 + kDivisorHigh, kDivisor115200 >> 8);
  outb(kCom1 + kLineControl, kLineControl8N1);
  outb(kCom1 + kFifoControl, kFifoEnableAndClear);
  outb(kCom1 + kModemControl, kModemControlDtrRts);
}

void console_write(const char* bytes, std::size_t size) {
  const ConsoleSink* const sink = g_sink;
  const std::size_t taken = sink != nullptr ? sink->write(bytes, size) : 0;
  for (std::size_t i = taken; i < size; ++i) {
    if (bytes[i] == '\n') put_byte('\r');
    put_byte(bytes[i]);
  }
  g_uart_bytes += size - taken;
}

std::size_t console_read(char* out, std::size_t size) {
  const ConsoleSink* const sink = g_sink;
  std::size_t got = sink != nullptr ? sink->read(out, size) : 0;
  // The 16550's receiver, polled: 0xff is a missing UART, not a byte.
  while (got < size) {
    const std::uint8_t status = inb(kCom1 + kLineStatus);
    if (status == 0xff || (status & kLineStatusDataReady) == 0) break;
    out[got++] = static_cast<char>(inb(kCom1 + kReceive));
  }
  g_received += got;
  return got;
}

void console_set_sink(const ConsoleSink* sink) noexcept {
  g_sink = sink;
}

std::uint64_t console_uart_bytes() noexcept {
  return g_uart_bytes;
}
std::uint64_t console_received_bytes() noexcept {
  return g_received;
}

}  // namespace cellink::inmate
