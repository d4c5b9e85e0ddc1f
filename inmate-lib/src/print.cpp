// print: the printf subset of print.hpp, one formatting engine for two
// outputs: ConsoleOutput (chunks of 128 bytes to console_write(), flushed at
// the end of each call) and BufferOutput (snprintf semantics).
//
// Contract and threading: see print.hpp. All state lives in the caller's
// frame, so a handler may print while the code it interrupted is printing.
#include "cellink/inmate-lib/print.hpp"

#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/console.hpp"

namespace cellink::inmate {
namespace {

class ConsoleOutput {
 public:
  void put(char c) {
    if (used_ == sizeof(chunk_)) flush();
    chunk_[used_++] = c;
    ++total_;
  }
  void flush() {
    console_write(chunk_, used_);
    used_ = 0;
  }
  std::size_t total() const { return total_; }

 private:
  char chunk_[128]{};
  std::size_t used_ = 0;
  std::size_t total_ = 0;
};

class BufferOutput {
 public:
  // Keeps room for the NUL; size 0 stores nothing.
  BufferOutput(char* out, std::size_t size) : out_(out), capacity_(size == 0 ? 0 : size - 1) {}
  void put(char c) {
    if (total_ < capacity_) out_[total_] = c;
    ++total_;
  }
  void terminate(std::size_t size) {
    if (size != 0) out_[total_ < capacity_ ? total_ : capacity_] = '\0';
  }
  std::size_t total() const { return total_; }

 private:
  char* out_;
  std::size_t capacity_;
  std::size_t total_ = 0;
};

enum class Length : std::uint8_t { plain, h, hh, l, ll, z };

struct Spec {
  bool left = false;       // '-'
  bool zero = false;       // '0'
  bool alternate = false;  // '#': 0x before %x
  char sign = 0;           // '+' or ' ' before non-negative %d
  int width = 0;
  int precision = -1;  // digits for integers, bytes for %s; -1 when absent
  Length length = Length::plain;
};

template <class Output>
void pad(Output& out, char c, int count) {
  for (int i = 0; i < count; ++i) out.put(c);
}

template <class Output>
void emit_string(Output& out, const Spec& spec, const char* text) {
  if (text == nullptr) text = "(null)";
  int length = 0;
  while (text[length] != '\0' && (spec.precision < 0 || length < spec.precision)) ++length;
  if (!spec.left) pad(out, ' ', spec.width - length);
  for (int i = 0; i < length; ++i) out.put(text[i]);
  if (spec.left) pad(out, ' ', spec.width - length);
}

// Prints `magnitude` in `base` with an optional sign or prefix, honouring
// width, precision, '0' and '-'.
template <class Output>
void emit_number(Output& out, const Spec& spec, std::uint64_t magnitude, unsigned base, bool upper,
                 char sign, const char* prefix) {
  char digits[24];
  int count = 0;
  const char* alphabet = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  do {
    digits[count++] = alphabet[magnitude % base];
    magnitude /= base;
  } while (magnitude != 0);
  if (spec.precision == 0 && count == 1 && digits[0] == '0') count = 0;
  const int zeros = spec.precision > count ? spec.precision - count : 0;
  int prefix_length = 0;
  while (prefix[prefix_length] != '\0') ++prefix_length;
  const int body = (sign != 0 ? 1 : 0) + prefix_length + zeros + count;
  const int fill = spec.width > body ? spec.width - body : 0;
  // '0' pads between sign/prefix and digits, and is ignored with '-' or a precision.
  const bool zero_fill = spec.zero && !spec.left && spec.precision < 0;
  if (!spec.left && !zero_fill) pad(out, ' ', fill);
  if (sign != 0) out.put(sign);
  for (int i = 0; i < prefix_length; ++i) out.put(prefix[i]);
  if (zero_fill) pad(out, '0', fill);
  pad(out, '0', zeros);
  while (count > 0) out.put(digits[--count]);
  if (spec.left) pad(out, ' ', fill);
}

std::int64_t signed_argument(const Spec& spec, __builtin_va_list& arguments) {
  switch (spec.length) {
    case Length::l: return __builtin_va_arg(arguments, long);
    case Length::ll: return __builtin_va_arg(arguments, long long);
    case Length::z: return static_cast<std::int64_t>(__builtin_va_arg(arguments, std::size_t));
    case Length::h: return static_cast<short>(__builtin_va_arg(arguments, int));
    case Length::hh: return static_cast<signed char>(__builtin_va_arg(arguments, int));
    case Length::plain: break;
  }
  return __builtin_va_arg(arguments, int);
}

std::uint64_t unsigned_argument(const Spec& spec, __builtin_va_list& arguments) {
  switch (spec.length) {
    case Length::l: return __builtin_va_arg(arguments, unsigned long);
    case Length::ll: return __builtin_va_arg(arguments, unsigned long long);
    case Length::z: return __builtin_va_arg(arguments, std::size_t);
    case Length::h: return static_cast<unsigned short>(__builtin_va_arg(arguments, unsigned));
    case Length::hh: return static_cast<unsigned char>(__builtin_va_arg(arguments, unsigned));
    case Length::plain: break;
  }
  return __builtin_va_arg(arguments, unsigned);
}

int parse_count(const char*& cursor) {
  int value = 0;
  while (*cursor >= '0' && *cursor <= '9') {
    if (value < 100000) value = value * 10 + (*cursor - '0');
    ++cursor;
  }
  return value;
}

template <class Output>
void format_to(Output& out, const char* format, __builtin_va_list& arguments) {
  const char* cursor = format;
  while (*cursor != '\0') {
    if (*cursor != '%') {
      out.put(*cursor++);
      continue;
    }
    const char* conversion_start = cursor++;
    Spec spec;
    for (;; ++cursor) {
      if (*cursor == '-')
        spec.left = true;
      else if (*cursor == '0')
        spec.zero = true;
      else if (*cursor == '#')
        spec.alternate = true;
      else if (*cursor == '+')
        spec.sign = '+';
      else if (*cursor == ' ' && spec.sign == 0)
        spec.sign = ' ';
      else
        break;
    }
    if (*cursor == '*') {
      spec.width = __builtin_va_arg(arguments, int);
      if (spec.width < 0) {
        spec.left = true;
        spec.width = -spec.width;
      }
      ++cursor;
    } else {
      spec.width = parse_count(cursor);
    }
    if (*cursor == '.') {
      ++cursor;
      if (*cursor == '*') {
        spec.precision = __builtin_va_arg(arguments, int);
        ++cursor;
      } else {
        spec.precision = parse_count(cursor);
      }
    }
    if (*cursor == 'l') {
      ++cursor;
      spec.length = Length::l;
      if (*cursor == 'l') {
        ++cursor;
        spec.length = Length::ll;
      }
    } else if (*cursor == 'h') {
      ++cursor;
      spec.length = Length::h;
      if (*cursor == 'h') {
        ++cursor;
        spec.length = Length::hh;
      }
    } else if (*cursor == 'z') {
      ++cursor;
      spec.length = Length::z;
    }
    const char conversion = *cursor;
    if (conversion == '\0') {
      // A lone '%' at the end: print it as written.
      for (const char* c = conversion_start; c != cursor; ++c) out.put(*c);
      break;
    }
    ++cursor;
    switch (conversion) {
      case 'd':
      case 'i': {
        const std::int64_t value = signed_argument(spec, arguments);
        const std::uint64_t magnitude = value < 0
                                            ? std::uint64_t{0} - static_cast<std::uint64_t>(value)
                                            : static_cast<std::uint64_t>(value);
        emit_number(out, spec, magnitude, 10, false, value < 0 ? '-' : spec.sign, "");
        break;
      }
      case 'u': emit_number(out, spec, unsigned_argument(spec, arguments), 10, false, 0, ""); break;
      case 'x':
      case 'X': {
        const std::uint64_t value = unsigned_argument(spec, arguments);
        const char* prefix = spec.alternate && value != 0 ? (conversion == 'x' ? "0x" : "0X") : "";
        emit_number(out, spec, value, 16, conversion == 'X', 0, prefix);
        break;
      }
      case 'p': {
        Spec pointer = spec;
        pointer.precision = 16;
        const auto value = reinterpret_cast<std::uintptr_t>(__builtin_va_arg(arguments, void*));
        emit_number(out, pointer, value, 16, false, 0, "0x");
        break;
      }
      case 'c': out.put(static_cast<char>(__builtin_va_arg(arguments, int))); break;
      case 's': emit_string(out, spec, __builtin_va_arg(arguments, const char*)); break;
      case '%': out.put('%'); break;
      default:
        // Unknown conversion: print it as written and consume no argument.
        for (const char* c = conversion_start; c != cursor; ++c) out.put(*c);
        break;
    }
  }
}

int clamp_to_int(std::size_t value) {
  return value > 0x7fffffff ? 0x7fffffff : static_cast<int>(value);
}

}  // namespace

void vprint(const char* format, __builtin_va_list arguments) {
  // A local copy is a real va_list object (the parameter decayed to a
  // pointer), so the engine can take it by reference.
  __builtin_va_list local;
  __builtin_va_copy(local, arguments);
  ConsoleOutput out;
  format_to(out, format, local);
  out.flush();
  __builtin_va_end(local);
}

void print(const char* format, ...) {
  __builtin_va_list arguments;
  __builtin_va_start(arguments, format);
  vprint(format, arguments);
  __builtin_va_end(arguments);
}

int vformat(char* out, std::size_t size, const char* format, __builtin_va_list arguments) {
  __builtin_va_list local;
  __builtin_va_copy(local, arguments);
  BufferOutput buffer(out, size);
  format_to(buffer, format, local);
  buffer.terminate(size);
  __builtin_va_end(local);
  return clamp_to_int(buffer.total());
}

int format(char* out, std::size_t size, const char* format, ...) {
  __builtin_va_list arguments;
  __builtin_va_start(arguments, format);
  const int length = vformat(out, size, format, arguments);
  __builtin_va_end(arguments);
  return length;
}

}  // namespace cellink::inmate
