// console: the inmate's text output, a 16550 UART at I/O port 0x3f8 (COM1)
// programmed for 115200 baud, 8 data bits, no parity, 1 stop bit.
//
// Contract: console_init() once before the first write (the boot code does
// it before any constructor or inmate_main() runs). console_write() sends
// every byte, turning '\n' into "\r\n", and busy-waits for the transmitter;
// it never allocates and never fails. Without a UART (the port reads all
// ones) the bytes are dropped without waiting.
//
// Threading and interrupts: one CPU, no lock. Callable from interrupt
// handlers; output of a handler may then land in the middle of a line the
// interrupted code was writing.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstddef>

namespace cellink::inmate {

void console_init();
void console_write(const char* bytes, std::size_t size);

}  // namespace cellink::inmate
