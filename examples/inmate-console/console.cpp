// inmate-console: a bare-metal cell whose console is a virtio console over
// ivshmem (docs/inmates.md, "The virtio console"). It waits for the host's
// back end (`cellink console serve`), prints a banner and boot information,
// then echoes what it is sent. Without a console link it does the same on
// the 16550 (input included), which is how the benchmark compares the two.
//
// Command line (QEMU's -append), every word optional:
//   wait-ms=N   how long to wait for the back end before printing on the
//               16550 anyway (default 0: wait for ever)
//   tick=HZ     the wake-up tick while idle (default 100)
//   event-idx=0 decline VIRTIO_F_EVENT_IDX: flag-based suppression, as with
//               a Jailhouse back end
//
// What it prints (host view, every line ends in "\r\n"):
//   console: inmate-console ready (virtio|16550)
//   console: boot: tsc HZ Hz (SOURCE), command line 'LINE'
//   console: link: BUFFER-byte buffers, EVENT_IDX|flags       (virtio only)
//   console: type a line; 'bulk N' sends N bytes; 'stats' prints counters
// Then every received byte is echoed at once (a key shows as it is typed;
// '\r' or '\n' echo as "\r\n"), and every complete line (ended by '\r' or
// '\n', at most 200 bytes; longer lines are cut) is answered:
//   echo: LINE                          for any other line
//   console: stats: ...                 for "stats"
//   bulk: begin N                       for "bulk N" (1 <= N <= 2^32), then
//   PAYLOAD                             exactly N bytes, no line breaks, then
//   bulk: end N fnv1a64 0xHHHHHHHHHHHHHHHH elapsed-us U
// on a line of its own after a "\r\n". PAYLOAD byte i is kPattern[(i + i /
// 64) % 64] (kPattern below: A-Z a-z 0-9 '+' '/'), so the host can check
// every byte; the checksum is FNV-1a 64 (offset basis 0xcbf29ce484222325,
// prime 0x100000001b3) over the N payload bytes. A bulk sent on the 16550
// is the same bytes.
#include "cellink/inmate-lib/console.hpp"

#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/boot.hpp"
#include "cellink/inmate-lib/cpu.hpp"
#include "cellink/inmate-lib/interrupts.hpp"
#include "cellink/inmate-lib/lapic.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "cellink/inmate-lib/timing.hpp"
#include "cellink/inmate-lib/wakeup.hpp"

namespace {

using cellink::inmate::console_write;
using cellink::inmate::print;

constexpr char kPattern[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static_assert(sizeof(kPattern) == 65);
constexpr std::size_t kLineCapacity = 200;
constexpr std::size_t kBulkChunk = 4096;
constexpr std::uint64_t kMaxBulk = std::uint64_t{1} << 32;
constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;

void on_tick(void*) noexcept {
  cellink::inmate::note_wakeup();
}

bool starts_with(const char* line, const char* prefix) {
  for (; *prefix != '\0'; ++line, ++prefix) {
    if (*line != *prefix) return false;
  }
  return true;
}

bool equals(const char* a, const char* b) {
  for (; *a != '\0' && *a == *b; ++a, ++b) {
  }
  return *a == *b;
}

// Decimal, 1..kMaxBulk, nothing after it.
bool parse_count(const char* text, std::uint64_t& out) {
  std::uint64_t value = 0;
  if (*text == '\0') return false;
  for (; *text != '\0'; ++text) {
    if (*text < '0' || *text > '9') return false;
    value = value * 10 + static_cast<std::uint64_t>(*text - '0');
    if (value > kMaxBulk) return false;
  }
  out = value;
  return value != 0;
}

void bulk(std::uint64_t count) {
  print("bulk: begin %llu\n", static_cast<unsigned long long>(count));
  static char chunk[kBulkChunk];
  std::uint64_t hash = kFnvOffset;
  const std::uint64_t start = cellink::inmate::now_ns();
  for (std::uint64_t at = 0; at < count;) {
    const std::uint64_t n = count - at < kBulkChunk ? count - at : kBulkChunk;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t index = at + i;
      const char byte = kPattern[(index + index / 64) % 64];
      chunk[i] = byte;
      hash = (hash ^ static_cast<std::uint8_t>(byte)) * kFnvPrime;
    }
    console_write(chunk, static_cast<std::size_t>(n));
    at += n;
  }
  const std::uint64_t elapsed_us = (cellink::inmate::now_ns() - start) / 1000;
  print("\nbulk: end %llu fnv1a64 0x%016llx elapsed-us %llu\n",
        static_cast<unsigned long long>(count), static_cast<unsigned long long>(hash),
        static_cast<unsigned long long>(elapsed_us));
}

void print_stats() {
  const cellink::inmate::ConsoleCounters c = cellink::inmate::console_counters();
  print(
      "console: stats: virtio %s, %llu bytes out over virtio, %llu on the 16550, %llu dropped, "
      "%llu received, %llu probes, %llu resets\n",
      c.virtio_up ? "up" : (c.virtio_attached ? "down" : "absent"),
      static_cast<unsigned long long>(c.virtio_bytes),
      static_cast<unsigned long long>(c.uart_bytes), static_cast<unsigned long long>(c.dropped),
      static_cast<unsigned long long>(c.received), static_cast<unsigned long long>(c.virtio_probes),
      static_cast<unsigned long long>(c.virtio_resets));
}

void answer(const char* line) {
  std::uint64_t count = 0;
  if (starts_with(line, "bulk ") && parse_count(line + 5, count)) {
    bulk(count);
  } else if (equals(line, "stats")) {
    print_stats();
  } else {
    print("echo: %s\n", line);
  }
}

void banner() {
  const cellink::inmate::ConsoleCounters c = cellink::inmate::console_counters();
  print("console: inmate-console ready (%s)\n", c.virtio_up ? "virtio" : "16550");
  print("console: boot: tsc %llu Hz (%s), command line '%s'\n",
        static_cast<unsigned long long>(cellink::inmate::tsc_hz()), cellink::inmate::tsc_source(),
        cellink::inmate::command_line());
  if (c.virtio_up) {
    print("console: link: %llu-byte buffers\n", static_cast<unsigned long long>(c.virtio_buffer));
  }
  print("console: type a line; 'bulk N' sends N bytes; 'stats' prints counters\n");
}

}  // namespace

int cellink::inmate::inmate_main() {
  std::uint64_t wait_ms = 0;
  std::uint64_t tick_hz = 100;
  (void)command_line_u64("wait-ms", wait_ms);
  std::uint64_t event_idx = 1;
  (void)command_line_u64("tick", tick_hz);
  (void)command_line_u64("event-idx", event_idx);
  if (tick_hz == 0 || tick_hz > 10000) tick_hz = 100;

  const bool linked = console_attach_virtio(event_idx != 0);
  // The tick bounds every halt: a doorbell we slept through, or the 16550
  // (which raises no interrupt), is looked at again within 1/tick_hz.
  const std::uint8_t vector = allocate_vector();
  if (vector == 0 || !set_interrupt_handler(vector, on_tick, nullptr) ||
      !lapic_timer_periodic(static_cast<std::uint32_t>(tick_hz), vector)) {
    print("console: cannot start the %llu Hz tick\n", static_cast<unsigned long long>(tick_hz));
    return 3;
  }
  interrupts_enable();

  if (linked) {
    const std::uint64_t deadline =
        wait_ms == 0 ? ~std::uint64_t{0} : now_ns() + wait_ms * 1'000'000;
    while (!console_service() && now_ns() < deadline) wait_for_wakeup();
  }
  banner();

  char line[kLineCapacity + 1];
  std::size_t used = 0;
  bool after_cr = false;  // "\r\n" ends one line, not two
  char input[256];
  for (;;) {
    const std::size_t got = console_read(input, sizeof(input));
    if (got == 0) {
      if (console_prepare_to_sleep()) wait_for_wakeup();
      continue;
    }
    // The echo of a batch goes out in one write, up to each line's end.
    std::size_t echo_from = 0;
    for (std::size_t i = 0; i < got; ++i) {
      const char c = input[i];
      if (c != '\r' && c != '\n') {
        after_cr = false;
        if (used < kLineCapacity) line[used++] = c;
        continue;
      }
      console_write(input + echo_from, i - echo_from);
      echo_from = i + 1;
      const bool second_half = c == '\n' && after_cr;
      after_cr = c == '\r';
      if (second_half) continue;
      console_write("\n", 1);
      line[used] = '\0';
      used = 0;
      if (line[0] != '\0') answer(line);
    }
    console_write(input + echo_from, got - echo_from);
  }
}
