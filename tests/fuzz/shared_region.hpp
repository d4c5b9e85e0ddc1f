// SharedRegion: memory a fuzzer shares with the code under test (a ring
// area, a virtqueue's R/W section), with the byte-level tools the oracles
// need. Private to tests/fuzz/.
//
// The region is its own 64-byte aligned allocation of exactly its size, so
// ASan reports any access outside it. Fields are read and written with
// memcpy at byte offsets, as a hostile peer would, independent of the
// structs under test.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include "script.hpp"

namespace cellink::fuzz {

class SharedRegion {
 public:
  explicit SharedRegion(std::size_t size, std::byte fill = std::byte{0})
      : size_(size),
        bytes_(static_cast<std::byte*>(::operator new[](size, std::align_val_t{kAlignment}))) {
    std::memset(bytes_.get(), static_cast<int>(fill), size_);
  }

  [[nodiscard]] std::span<std::byte> bytes() const { return {bytes_.get(), size_}; }
  [[nodiscard]] std::size_t size() const { return size_; }

  template <typename T>
  [[nodiscard]] T load(std::uint64_t offset) const {
    FUZZ_CHECK(offset <= size_ && sizeof(T) <= size_ - offset, "harness load at %llu",
               static_cast<unsigned long long>(offset));
    T value;
    std::memcpy(&value, bytes_.get() + offset, sizeof value);
    return value;
  }
  template <typename T>
  void store(std::uint64_t offset, T value) {
    FUZZ_CHECK(offset <= size_ && sizeof(T) <= size_ - offset, "harness store at %llu",
               static_cast<unsigned long long>(offset));
    std::memcpy(bytes_.get() + offset, &value, sizeof value);
  }

  // Copies `image` (at most `length` bytes of it) to `offset`.
  void fill(std::uint64_t offset, std::uint64_t length, std::span<const std::uint8_t> image) {
    if (offset >= size_) return;
    const std::uint64_t count = std::min({length, std::uint64_t{image.size()}, size_ - offset});
    if (count != 0) std::memcpy(bytes_.get() + offset, image.data(), count);
  }
  [[nodiscard]] static std::span<const std::uint8_t> skip(std::span<const std::uint8_t> image,
                                                          std::uint64_t count) {
    return count >= image.size() ? std::span<const std::uint8_t>{} : image.subspan(count);
  }

  // Remembers the contents, for the expect_* checks after a call.
  void remember() { std::memcpy(before_.data(), bytes_.get(), size_); }

  struct Range {
    std::uint64_t begin;
    std::uint64_t end;
  };
  // The code under test wrote nothing since remember().
  void expect_unchanged(const char* what) const { expect_changed_only({}, what); }
  // ... or only bytes in [begin, end).
  void expect_changed_only(std::uint64_t begin, std::uint64_t end, const char* what) const {
    expect_changed_only({Range{begin, end}}, what);
  }
  // ... or only bytes inside `allowed`.
  void expect_changed_only(std::vector<Range> allowed, const char* what) const {
    std::sort(allowed.begin(), allowed.end(),
              [](const Range& a, const Range& b) { return a.begin < b.begin; });
    std::uint64_t from = 0;
    for (const Range& range : allowed) {
      expect_same(from, std::min<std::uint64_t>(range.begin, size_), what);
      from = std::max(from, range.end);
    }
    expect_same(from, size_, what);
  }

 private:
  static constexpr std::size_t kAlignment = 64;

  void expect_same(std::uint64_t from, std::uint64_t to, const char* what) const {
    if (from >= to || std::memcmp(before_.data() + from, bytes_.get() + from, to - from) == 0) {
      return;
    }
    while (before_[from] == bytes_[from]) ++from;
    FUZZ_CHECK(false, "%s wrote byte %llu, which it does not own", what,
               static_cast<unsigned long long>(from));
  }

  struct Free {
    void operator()(std::byte* bytes) const noexcept {
      ::operator delete[](bytes, std::align_val_t{kAlignment});
    }
  };

  std::size_t size_;
  std::unique_ptr<std::byte[], Free> bytes_;
  std::vector<std::byte> before_ = std::vector<std::byte>(size_);
};

}  // namespace cellink::fuzz
