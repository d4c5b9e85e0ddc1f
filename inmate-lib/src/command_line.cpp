// command_line: the boot command line (QEMU's -append), copied into the
// image at boot, and a parser for its "key=value" words.
//
// Contract: load_command_line() runs once, in start.cpp, before anything
// reads the line; afterwards the copy never changes, so the readers may run
// anywhere, handlers included. Words are separated by spaces or tabs; the
// first word "key=value" with a matching key wins.
#include <cstddef>
#include <cstdint>

#include "cellink/inmate-lib/boot.hpp"
#include "cellink/inmate-lib/print.hpp"
#include "hvm_start_info.hpp"

namespace cellink::inmate {
namespace {

// Boot maps only the first 1 GiB; the loader's structures must lie inside it.
constexpr std::uint64_t kBootMappedLimit = 1ull << 30;

char stored_line[kCommandLineCapacity];

bool is_separator(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// The value of `key` in the stored line, as [begin, end); false when absent.
bool find_value(const char* key, const char*& begin, const char*& end) {
  std::size_t key_length = 0;
  while (key[key_length] != '\0') ++key_length;
  if (key_length == 0) return false;
  const char* word = stored_line;
  while (*word != '\0') {
    while (is_separator(*word)) ++word;
    const char* word_end = word;
    while (*word_end != '\0' && !is_separator(*word_end)) ++word_end;
    std::size_t i = 0;
    while (i < key_length && word + i < word_end && word[i] == key[i]) ++i;
    if (i == key_length && word + i < word_end && word[i] == '=') {
      begin = word + i + 1;
      end = word_end;
      return true;
    }
    word = word_end;
  }
  return false;
}

int digit_value(char c, unsigned base) {
  int value = -1;
  if (c >= '0' && c <= '9') value = c - '0';
  if (c >= 'a' && c <= 'f') value = c - 'a' + 10;
  if (c >= 'A' && c <= 'F') value = c - 'A' + 10;
  return value >= 0 && static_cast<unsigned>(value) < base ? value : -1;
}

}  // namespace

void load_command_line(std::uint32_t start_info_address) {
  stored_line[0] = '\0';
  if (start_info_address == 0 || start_info_address + sizeof(HvmStartInfo) > kBootMappedLimit) {
    print("inmate: boot: no hvm_start_info (ebx=%#x); empty command line\n", start_info_address);
    return;
  }
  // Identity-mapped physical address.
  const auto* info = reinterpret_cast<const HvmStartInfo*>(  // NOLINT(performance-no-int-to-ptr)
      std::uintptr_t{start_info_address});
  if (info->magic != kHvmStartMagic) {
    print("inmate: boot: hvm_start_info magic %#x, expected %#x; empty command line\n", info->magic,
          kHvmStartMagic);
    return;
  }
  const std::uint64_t address = info->cmdline_paddr;
  if (address == 0) return;
  if (address >= kBootMappedLimit) {
    print("inmate: boot: command line at %#llx is above the mapped 1 GiB; ignored\n",
          static_cast<unsigned long long>(address));
    return;
  }
  const auto* source = reinterpret_cast<const char*>(address);  // NOLINT(performance-no-int-to-ptr)
  std::size_t length = 0;
  while (length + 1 < kCommandLineCapacity && address + length < kBootMappedLimit &&
         source[length] != '\0') {
    stored_line[length] = source[length];
    ++length;
  }
  stored_line[length] = '\0';
  if (source[length] != '\0') {
    print("inmate: boot: command line longer than %zu bytes; cut\n", kCommandLineCapacity - 1);
  }
}

const char* command_line() {
  return stored_line;
}

bool command_line_u64(const char* key, std::uint64_t& value) {
  const char* begin;
  const char* end;
  if (!find_value(key, begin, end)) return false;
  unsigned base = 10;
  if (end - begin > 2 && begin[0] == '0' && (begin[1] == 'x' || begin[1] == 'X')) {
    base = 16;
    begin += 2;
  }
  if (begin == end) return false;
  std::uint64_t result = 0;
  for (const char* c = begin; c != end; ++c) {
    const int digit = digit_value(*c, base);
    if (digit < 0) return false;
    if (result > (~std::uint64_t{0} - static_cast<unsigned>(digit)) / base) return false;
    result = result * base + static_cast<unsigned>(digit);
  }
  value = result;
  return true;
}

bool command_line_string(const char* key, char* out, std::size_t size) {
  const char* begin;
  const char* end;
  if (!find_value(key, begin, end)) return false;
  const auto length = static_cast<std::size_t>(end - begin);
  if (length + 1 > size) return false;
  for (std::size_t i = 0; i < length; ++i) out[i] = begin[i];
  out[length] = '\0';
  return true;
}

}  // namespace cellink::inmate
