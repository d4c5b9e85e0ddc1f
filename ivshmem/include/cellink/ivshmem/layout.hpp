// Layout: where each section of one link's shared memory lives.
//
//  +-------------------+ 0
//  | state table       |  one u32 per peer, page-rounded (at least a page);
//  |                   |  on v1 links the link descriptor sits at 0x800
//  +-------------------+ state_table().size
//  | R/W section       |  writable by all peers (may be empty)
//  +-------------------+
//  | output section 0  |  writable only by peer 0, readable by all
//  | output section 1  |  writable only by peer 1 ...
//  | ...               |
//  +-------------------+ used_size()
//  | unused padding    |  up to memory_size(), the next power of two,
//  +-------------------+  because QEMU maps the whole object as a PCI BAR
//
// All arithmetic is checked: compute() rejects any request whose sizes would
// overflow 64 bits instead of wrapping. Every offset is relative to the start
// of the memory object; no pointer ever lives in shared memory.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

namespace cellink::ivshmem {

inline constexpr std::uint64_t kPageSize = 4096;

// cellink supports links of 2..kMaxPeers peers (Jailhouse allows 12).
inline constexpr std::uint32_t kMinPeers = 2;
inline constexpr std::uint32_t kMaxPeers = 16;

// QEMU's ivshmem-server protocol allows at most 64 vectors per peer.
inline constexpr std::uint32_t kMaxVectors = 64;

struct Section {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;

  [[nodiscard]] constexpr std::uint64_t end() const noexcept { return offset + size; }
  friend constexpr bool operator==(const Section&, const Section&) = default;
};

struct LayoutRequest {
  std::uint32_t peers = 0;
  std::uint64_t rw_section_size = 0;      // a page multiple, may be 0
  std::uint64_t output_section_size = 0;  // a page multiple, may be 0
};

enum class LayoutError : std::uint8_t {
  ok,
  too_few_peers,
  too_many_peers,
  rw_section_not_page_multiple,
  output_section_not_page_multiple,
  no_data_sections,
  overflow,
};

[[nodiscard]] constexpr const char* describe(LayoutError error) noexcept {
  switch (error) {
    case LayoutError::ok: return "ok";
    case LayoutError::too_few_peers: return "a link needs at least 2 peers";
    case LayoutError::too_many_peers: return "cellink supports at most 16 peers per link";
    case LayoutError::rw_section_not_page_multiple:
      return "the R/W section size is not a multiple of the 4096-byte page";
    case LayoutError::output_section_not_page_multiple:
      return "the output section size is not a multiple of the 4096-byte page";
    case LayoutError::no_data_sections:
      return "the R/W and output sections are both empty, so the link cannot carry data";
    case LayoutError::overflow: return "the section sizes overflow a 64-bit address space";
  }
  return "unknown layout error";
}

[[nodiscard]] constexpr bool is_power_of_two(std::uint64_t value) noexcept {
  return value != 0 && (value & (value - 1)) == 0;
}

class Layout {
 public:
  // Largest object we hand out: 2^62 bytes keeps every offset sum below 2^63.
  static constexpr std::uint64_t kMaxMemorySize = std::uint64_t{1} << 62;

  constexpr Layout() noexcept = default;

  // Computes the layout for `request`, or returns why it is impossible.
  [[nodiscard]] static constexpr LayoutError compute(const LayoutRequest& request,
                                                     Layout& out) noexcept {
    if (request.peers < kMinPeers) return LayoutError::too_few_peers;
    if (request.peers > kMaxPeers) return LayoutError::too_many_peers;
    if (request.rw_section_size % kPageSize != 0) return LayoutError::rw_section_not_page_multiple;
    if (request.output_section_size % kPageSize != 0) {
      return LayoutError::output_section_not_page_multiple;
    }
    if (request.rw_section_size == 0 && request.output_section_size == 0) {
      return LayoutError::no_data_sections;
    }
    const std::uint64_t state_table_size = round_up_to_page(std::uint64_t{request.peers} * 4U);

    std::uint64_t outputs = 0;
    std::uint64_t used = 0;
    if (__builtin_mul_overflow(request.output_section_size, std::uint64_t{request.peers},
                               &outputs) ||
        __builtin_add_overflow(state_table_size, request.rw_section_size, &used) ||
        __builtin_add_overflow(used, outputs, &used) || used > kMaxMemorySize) {
      return LayoutError::overflow;
    }
    Layout layout;
    layout.peers_ = request.peers;
    layout.state_table_size_ = state_table_size;
    layout.rw_section_size_ = request.rw_section_size;
    layout.output_section_size_ = request.output_section_size;
    layout.used_size_ = used;
    layout.memory_size_ = next_power_of_two(used);
    out = layout;
    return LayoutError::ok;
  }

  [[nodiscard]] constexpr std::uint32_t peers() const noexcept { return peers_; }

  [[nodiscard]] constexpr Section state_table() const noexcept { return {0, state_table_size_}; }
  [[nodiscard]] constexpr Section rw_section() const noexcept {
    return {state_table_size_, rw_section_size_};
  }
  // Precondition: peer < peers().
  [[nodiscard]] constexpr Section output_section(std::uint32_t peer) const noexcept {
    return {state_table_size_ + rw_section_size_ + std::uint64_t{peer} * output_section_size_,
            output_section_size_};
  }
  // Offset of peer's u32 entry in the state table. Precondition: peer < peers().
  [[nodiscard]] constexpr std::uint64_t state_entry_offset(std::uint32_t peer) const noexcept {
    return std::uint64_t{peer} * 4U;
  }
  // Bytes the sections occupy, a prefix of the memory object.
  [[nodiscard]] constexpr std::uint64_t used_size() const noexcept { return used_size_; }
  // Size of the memory object: used_size() rounded up to a power of two.
  [[nodiscard]] constexpr std::uint64_t memory_size() const noexcept { return memory_size_; }

  friend constexpr bool operator==(const Layout&, const Layout&) = default;

  [[nodiscard]] static constexpr std::uint64_t round_up_to_page(std::uint64_t value) noexcept {
    return value == 0 ? kPageSize : (value + kPageSize - 1) / kPageSize * kPageSize;
  }

  // Precondition: value <= 2^63.
  [[nodiscard]] static constexpr std::uint64_t next_power_of_two(std::uint64_t value) noexcept {
    std::uint64_t power = 1;
    while (power < value) power <<= 1;
    return power;
  }

 private:
  std::uint32_t peers_ = 0;
  std::uint64_t state_table_size_ = 0;
  std::uint64_t rw_section_size_ = 0;
  std::uint64_t output_section_size_ = 0;
  std::uint64_t used_size_ = 0;
  std::uint64_t memory_size_ = 0;
};

}  // namespace cellink::ivshmem
