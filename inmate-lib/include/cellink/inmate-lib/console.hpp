// console: the inmate's text console. By default a 16550 UART at I/O port
// 0x3f8 (COM1) programmed for 115200 baud, 8 data bits, no parity, 1 stop
// bit. When the program calls console_attach_virtio() and the cell has a
// console link (an ivshmem link whose protocol is virtio-front:console,
// 0x8003), output and input go over a virtio console instead, as soon as
// the host's back end is READY (console_virtio.cpp, virtio_console.hpp).
//
// Contract: console_init() once before the first write (the boot code does
// it before any constructor or inmate_main() runs). console_write() sends
// every byte, turning '\n' into "\r\n"; it never allocates.
//   - 16550: busy-waits for the transmitter; without a UART (the port reads
//     all ones) the bytes are dropped without waiting.
//   - virtio: copies into fixed transmit buffers. When all of them stay in
//     flight for a second (a host that does not read), the rest of that
//     write is dropped and counted (console_counters().dropped), and a line
//     on the 16550 says so (once per stall); later writes drop at once until
//     the host takes a buffer back. While the back end is not READY (before it starts,
//     after it leaves) output goes to the 16550: nothing is held back.
// console_read() returns bytes typed at the host (virtio), or read from the
// 16550's receiver; 0 when none are waiting. It never blocks.
//
// Threading and interrupts: one CPU, no lock. console_write() is callable
// from interrupt handlers: a write that interrupts the virtio path (or comes
// from a handler while the main loop is inside it) goes to the 16550, so
// the virtio rings have one user at a time. Output of a handler may land in
// the middle of a line the interrupted code was writing.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cellink::inmate {

void console_init();
void console_write(const char* bytes, std::size_t size);
std::size_t console_read(char* out, std::size_t size);

// Looks for the first ivshmem function whose link is virtio-front:console
// (v1: the link descriptor's protocol; v2: class code 0xff8003), maps it,
// and brings the virtio console up if the back end is READY (else on a
// later call). Prints what it found. False when the cell has no console
// link: the console stays on the 16550. Call once, from the main loop,
// before starting the LAPIC timer (it runs lapic_init(), which masks it).
// The link's doorbells wake wait_for_wakeup() (wakeup.hpp).
// event_idx = false declines VIRTIO_F_EVENT_IDX (flag-based suppression, as
// with a Jailhouse back end), for tests and comparisons.
bool console_attach_virtio(bool event_idx = true);
// The link's work: a probe when the back end became READY, a reset when it
// left. True while output goes over virtio. console_write() and
// console_read() call it too; a program that waits for input calls it (or
// console_read()) after each wake-up.
bool console_service();
// Before halting: asks the host for an interrupt on the next received
// bytes. True when halting is safe (wait_for_wakeup()); false when bytes
// are already waiting.
bool console_prepare_to_sleep();

struct ConsoleCounters {
  std::uint64_t virtio_bytes = 0;   // handed to the virtio console
  std::uint64_t uart_bytes = 0;     // written to the 16550
  std::uint64_t dropped = 0;        // virtio output dropped (the host did not take it)
  std::uint64_t received = 0;       // bytes console_read() returned
  std::uint64_t virtio_probes = 0;  // bring-ups tried
  std::uint64_t virtio_resets = 0;  // back ends that left while up
  std::uint64_t virtio_buffer = 0;  // bytes per virtio buffer (0 before the first bring-up)
  bool virtio_attached = false;     // a console link was found
  bool virtio_up = false;           // output goes over virtio now
};
ConsoleCounters console_counters();

}  // namespace cellink::inmate
