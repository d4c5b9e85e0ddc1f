// ConsoleScrollback: the most recent guest output of one console, a bounded
// byte ring replayed to each newly attached viewer, so that nothing said
// while nobody watched is lost (up to the capacity).
//
// When full, the oldest bytes go. The replay may therefore start in the
// middle of a line or of an escape sequence; a viewer shows it as is.
//
// Threading: one thread at a time (the console loop).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace cellink::hypervisor {

class ConsoleScrollback {
 public:
  static constexpr std::size_t kDefaultCapacity = std::size_t{64} * 1024;

  // A capacity of 0 keeps nothing.
  explicit ConsoleScrollback(std::size_t capacity = kDefaultCapacity);

  void append(std::span<const std::byte> bytes);
  // The kept bytes, oldest first.
  [[nodiscard]] std::string contents() const;
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return ring_.size(); }
  // Every byte ever appended, kept or not.
  [[nodiscard]] std::uint64_t total() const noexcept { return total_; }

 private:
  std::vector<char> ring_;
  std::size_t start_ = 0;  // index of the oldest kept byte
  std::size_t size_ = 0;
  std::uint64_t total_ = 0;
};

}  // namespace cellink::hypervisor
