// libc_functions: the C library functions GCC may call even in freestanding
// code (memcpy, memset, memmove, memcmp for struct copies and builtins),
// plus strlen. The inmate links no libc, so inmate-lib provides them.
//
// The copying ones use `rep movsb` / `rep stosb`, which are fast on every
// CPU with ERMSB and cannot be turned back into a call to themselves by the
// optimizer (a C loop could: GCC recognises copy loops as memcpy).
// memcmp and strlen are plain loops; GCC has no idiom that rewrites them
// into calls to themselves on x86-64.
//
// Threading and interrupts: reentrant; callable from handlers.
#include <cstddef>

extern "C" {

void* memcpy(void* destination, const void* source, std::size_t size) {
  void* result = destination;
  asm volatile("rep movsb" : "+D"(destination), "+S"(source), "+c"(size) : : "memory");
  return result;
}

void* memset(void* destination, int value, std::size_t size) {
  void* result = destination;
  asm volatile("rep stosb" : "+D"(destination), "+c"(size) : "a"(value) : "memory");
  return result;
}

void* memmove(void* destination, const void* source, std::size_t size) {
  auto* to = static_cast<unsigned char*>(destination);
  const auto* from = static_cast<const unsigned char*>(source);
  if (to <= from || to >= from + size) return memcpy(destination, source, size);
  // Overlapping with the destination above the source: copy backwards, from
  // the last byte down (DF = 1), then restore DF = 0 as the ABI requires.
  to += size - 1;
  from += size - 1;
  asm volatile("std; rep movsb; cld" : "+D"(to), "+S"(from), "+c"(size) : : "memory");
  return destination;
}

int memcmp(const void* left, const void* right, std::size_t size) {
  const auto* a = static_cast<const unsigned char*>(left);
  const auto* b = static_cast<const unsigned char*>(right);
  for (std::size_t i = 0; i < size; ++i) {
    if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return 0;
}

std::size_t strlen(const char* text) {
  std::size_t length = 0;
  while (text[length] != '\0') ++length;
  return length;
}

}  // extern "C"
