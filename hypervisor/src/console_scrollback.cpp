// ConsoleScrollback: a byte ring (contract in the header).
#include "cellink/hypervisor/console_scrollback.hpp"

#include <algorithm>

namespace cellink::hypervisor {

ConsoleScrollback::ConsoleScrollback(std::size_t capacity) : ring_(capacity) {}

void ConsoleScrollback::append(std::span<const std::byte> bytes) {
  total_ += bytes.size();
  const std::size_t capacity = ring_.size();
  if (capacity == 0) return;
  // Only the last `capacity` bytes of a long append can survive it.
  if (bytes.size() > capacity) bytes = bytes.subspan(bytes.size() - capacity);
  const auto* data = reinterpret_cast<const char*>(bytes.data());
  std::size_t end = (start_ + size_) % capacity;
  std::size_t left = bytes.size();
  while (left > 0) {
    const std::size_t chunk = std::min(left, capacity - end);
    std::copy_n(data, chunk, ring_.begin() + static_cast<std::ptrdiff_t>(end));
    data += chunk;
    left -= chunk;
    end = (end + chunk) % capacity;
  }
  const std::size_t grown = size_ + bytes.size();
  if (grown > capacity) {
    start_ = (start_ + grown - capacity) % capacity;
    size_ = capacity;
  } else {
    size_ = grown;
  }
}

std::string ConsoleScrollback::contents() const {
  std::string out;
  out.reserve(size_);
  const std::size_t capacity = ring_.size();
  const std::size_t first = std::min(size_, capacity - start_);
  out.append(ring_.data() + start_, first);
  out.append(ring_.data(), size_ - first);
  return out;
}

}  // namespace cellink::hypervisor
