// print: printf-style formatting for the inmate, to the console or a buffer.
//
// Conversions: %s %c %d %i %u %x %X %p %%, with the length modifiers l, ll
// and z, a decimal width (or '*'), and the flags '0' (pad with zeros) and '-'
// (left-align). %p prints 0x and 16 hex digits. A null %s prints "(null)".
// Anything else is printed as written, so a bad format never reads a
// missing argument past the one it names.
//
// Contract: print() formats straight to console_write() in small chunks (no
// line limit, no static buffer). format() has snprintf semantics: it writes
// at most `size` bytes including the terminating NUL, always terminates
// when size > 0, and returns the length the whole output would have.
//
// Threading and interrupts: reentrant (state lives on the caller's stack),
// so both may be called from interrupt handlers. One CPU, so no lock.
//
// Freestanding: no exceptions, no heap, no libc; va_list is the compiler's
// __builtin_va_list, as <cstdarg> is not a freestanding-allowed header.
#pragma once

#include <cstddef>

namespace cellink::inmate {

void print(const char* format, ...) __attribute__((format(printf, 1, 2)));
void vprint(const char* format, __builtin_va_list arguments);

int format(char* out, std::size_t size, const char* format, ...)
    __attribute__((format(printf, 3, 4)));
int vformat(char* out, std::size_t size, const char* format, __builtin_va_list arguments);

}  // namespace cellink::inmate
