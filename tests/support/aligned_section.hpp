// AlignedSection: zeroed, cache-line aligned memory standing in for an ivshmem
// output section in tests that run both ends of a ring in one process.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace cellink::test_support {

inline constexpr std::size_t kSectionAlignment = 64;

class AlignedSection {
 public:
  // `size` is rounded down to whole cache lines.
  explicit AlignedSection(std::size_t size) : lines_(size / kSectionAlignment) {}
  [[nodiscard]] std::span<std::byte> bytes() {
    return {reinterpret_cast<std::byte*>(lines_.data()), lines_.size() * kSectionAlignment};
  }

 private:
  struct alignas(kSectionAlignment) Line {
    std::byte bytes[kSectionAlignment];
  };
  std::vector<Line> lines_;
};

}  // namespace cellink::test_support
