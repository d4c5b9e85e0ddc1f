// Layout: the section geometry of one link's shared memory.
// Spec: docs/ivshmem-layout.md, "Sections" and "Memory object size".
#include "cellink/ivshmem/layout.hpp"

#include <cstdint>
#include <limits>
#include <random>

#include <gtest/gtest.h>

namespace cellink::ivshmem {
namespace {

constexpr std::uint64_t kPage = kPageSize;
constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();

LayoutError compute(std::uint32_t peers, std::uint64_t rw, std::uint64_t output, Layout& out) {
  return Layout::compute(LayoutRequest{peers, rw, output}, out);
}

Layout computed(std::uint32_t peers, std::uint64_t rw, std::uint64_t output) {
  Layout layout;
  EXPECT_EQ(compute(peers, rw, output, layout), LayoutError::ok)
      << "peers=" << peers << " rw=" << rw << " output=" << output;
  return layout;
}

// --- Hand-computed layouts -------------------------------------------------

TEST(Layout, TwoPeersPlacesSectionsBackToBack) {
  const Layout layout = computed(2, 0x4000, 0x10000);
  EXPECT_EQ(layout.peers(), 2U);
  EXPECT_EQ(layout.state_table(), (Section{0x0, 0x1000}));
  EXPECT_EQ(layout.rw_section(), (Section{0x1000, 0x4000}));
  EXPECT_EQ(layout.output_section(0), (Section{0x5000, 0x10000}));
  EXPECT_EQ(layout.output_section(1), (Section{0x15000, 0x10000}));
  EXPECT_EQ(layout.used_size(), 0x25000U);
  EXPECT_EQ(layout.memory_size(), 0x40000U);
}

TEST(Layout, ThreePeersWithEmptyRwSectionStartOutputsAfterStateTable) {
  const Layout layout = computed(3, 0, 0x2000);
  EXPECT_EQ(layout.state_table(), (Section{0x0, 0x1000}));
  EXPECT_EQ(layout.rw_section(), (Section{0x1000, 0x0}));
  EXPECT_EQ(layout.output_section(0), (Section{0x1000, 0x2000}));
  EXPECT_EQ(layout.output_section(1), (Section{0x3000, 0x2000}));
  EXPECT_EQ(layout.output_section(2), (Section{0x5000, 0x2000}));
  EXPECT_EQ(layout.used_size(), 0x7000U);
  EXPECT_EQ(layout.memory_size(), 0x8000U);
}

TEST(Layout, SixteenPeersFitTheirStateEntriesInOnePage) {
  const Layout layout = computed(16, 0x1000, 0x1000);
  EXPECT_EQ(layout.state_table(), (Section{0x0, 0x1000}));
  EXPECT_EQ(layout.rw_section(), (Section{0x1000, 0x1000}));
  EXPECT_EQ(layout.output_section(0), (Section{0x2000, 0x1000}));
  EXPECT_EQ(layout.output_section(7), (Section{0x9000, 0x1000}));
  EXPECT_EQ(layout.output_section(15), (Section{0x11000, 0x1000}));
  EXPECT_EQ(layout.used_size(), 0x12000U);
  EXPECT_EQ(layout.memory_size(), 0x20000U);
  EXPECT_EQ(layout.state_entry_offset(0), 0U);
  EXPECT_EQ(layout.state_entry_offset(15), 60U);
}

TEST(Layout, OnlyRwSectionLeavesOutputSectionsEmptyAtTheEnd) {
  const Layout layout = computed(2, 0x2000, 0);
  EXPECT_EQ(layout.output_section(0), (Section{0x3000, 0}));
  EXPECT_EQ(layout.output_section(1), (Section{0x3000, 0}));
  EXPECT_EQ(layout.used_size(), 0x3000U);
  EXPECT_EQ(layout.memory_size(), 0x4000U);
}

TEST(Layout, StateEntriesAreConsecutiveU32s) {
  const Layout layout = computed(5, 0, kPage);
  for (std::uint32_t peer = 0; peer < 5; ++peer) {
    EXPECT_EQ(layout.state_entry_offset(peer), std::uint64_t{peer} * 4U);
  }
}

// --- Page rounding ---------------------------------------------------------

TEST(Layout, StateTableIsRoundedUpToOnePageForEveryPeerCount) {
  for (std::uint32_t peers = kMinPeers; peers <= kMaxPeers; ++peers) {
    const Layout layout = computed(peers, 0, kPage);
    EXPECT_EQ(layout.state_table().size, kPage) << "peers=" << peers;
    EXPECT_GE(layout.state_table().size, std::uint64_t{peers} * 4U);
  }
}

TEST(Layout, RoundUpToPageRoundsToTheNextPageBoundary) {
  EXPECT_EQ(Layout::round_up_to_page(1), kPage);
  EXPECT_EQ(Layout::round_up_to_page(64), kPage);
  EXPECT_EQ(Layout::round_up_to_page(kPage - 1), kPage);
  EXPECT_EQ(Layout::round_up_to_page(kPage), kPage);
  EXPECT_EQ(Layout::round_up_to_page(kPage + 1), 2 * kPage);
  EXPECT_EQ(Layout::round_up_to_page(5 * kPage), 5 * kPage);
}

TEST(Layout, RoundUpToPageGivesAtLeastOnePageForZero) {
  EXPECT_EQ(Layout::round_up_to_page(0), kPage);
}

// --- Power-of-two memory object ------------------------------------------

TEST(Layout, MemorySizeEqualsUsedSizeWhenThatIsAPowerOfTwo) {
  // 0x1000 state + 0x1000 rw + 2 * 0x1000 outputs = 0x4000.
  const Layout layout = computed(2, 0x1000, 0x1000);
  EXPECT_EQ(layout.used_size(), 0x4000U);
  EXPECT_EQ(layout.memory_size(), 0x4000U);
}

TEST(Layout, MemorySizeIsTheNextPowerOfTwoAboveUsedSize) {
  // 0x1000 state + 0x1000 rw + 3 * 0x1000 outputs = 0x5000.
  const Layout layout = computed(3, 0x1000, 0x1000);
  EXPECT_EQ(layout.used_size(), 0x5000U);
  EXPECT_EQ(layout.memory_size(), 0x8000U);
}

TEST(Layout, NextPowerOfTwoOfPowersAndNeighbours) {
  EXPECT_EQ(Layout::next_power_of_two(1), 1U);
  EXPECT_EQ(Layout::next_power_of_two(2), 2U);
  EXPECT_EQ(Layout::next_power_of_two(3), 4U);
  for (unsigned bit = 2; bit < 63; ++bit) {
    const std::uint64_t power = std::uint64_t{1} << bit;
    EXPECT_EQ(Layout::next_power_of_two(power), power) << "bit " << bit;
    EXPECT_EQ(Layout::next_power_of_two(power - 1), power) << "bit " << bit;
    EXPECT_EQ(Layout::next_power_of_two(power + 1), power << 1) << "bit " << bit;
  }
}

TEST(Layout, IsPowerOfTwoRejectsZeroAndComposites) {
  EXPECT_FALSE(is_power_of_two(0));
  EXPECT_TRUE(is_power_of_two(1));
  EXPECT_TRUE(is_power_of_two(std::uint64_t{1} << 63));
  EXPECT_FALSE(is_power_of_two(3));
  EXPECT_FALSE(is_power_of_two(0x30000));
  EXPECT_FALSE(is_power_of_two(kU64Max));
}

// --- Errors ---------------------------------------------------------------

TEST(Layout, RejectsFewerThanTwoPeers) {
  Layout layout;
  EXPECT_EQ(compute(0, kPage, kPage, layout), LayoutError::too_few_peers);
  EXPECT_EQ(compute(1, kPage, kPage, layout), LayoutError::too_few_peers);
}

TEST(Layout, RejectsMoreThanSixteenPeers) {
  Layout layout;
  EXPECT_EQ(compute(kMaxPeers + 1, kPage, kPage, layout), LayoutError::too_many_peers);
  EXPECT_EQ(compute(std::numeric_limits<std::uint32_t>::max(), kPage, kPage, layout),
            LayoutError::too_many_peers);
}

TEST(Layout, RejectsRwSectionThatIsNotAPageMultiple) {
  Layout layout;
  for (const std::uint64_t rw : {std::uint64_t{1}, kPage - 1, kPage + 1, kU64Max}) {
    EXPECT_EQ(compute(2, rw, kPage, layout), LayoutError::rw_section_not_page_multiple)
        << "rw=" << rw;
  }
}

TEST(Layout, RejectsOutputSectionThatIsNotAPageMultiple) {
  Layout layout;
  for (const std::uint64_t output : {std::uint64_t{1}, kPage - 1, kPage + 1, kU64Max}) {
    EXPECT_EQ(compute(2, kPage, output, layout), LayoutError::output_section_not_page_multiple)
        << "output=" << output;
  }
}

TEST(Layout, RejectsLinkWithoutAnyDataSection) {
  Layout layout;
  EXPECT_EQ(compute(2, 0, 0, layout), LayoutError::no_data_sections);
}

TEST(Layout, RejectsOutputSectionsWhoseTotalOverflows64Bits) {
  Layout layout;
  // 2^63 per peer times 2 peers is exactly 2^64.
  EXPECT_EQ(compute(2, 0, std::uint64_t{1} << 63, layout), LayoutError::overflow);
  // The largest page multiple times 16 peers.
  EXPECT_EQ(compute(16, 0, kU64Max - (kPage - 1), layout), LayoutError::overflow);
}

TEST(Layout, RejectsRwSectionThatOverflowsPastTheStateTable) {
  Layout layout;
  // 0x1000 state table + (2^64 - 0x1000) wraps to exactly 0.
  EXPECT_EQ(compute(2, kU64Max - (kPage - 1), 0, layout), LayoutError::overflow);
}

TEST(Layout, RejectsSizesThatOverflowOnlyWhenAdded) {
  Layout layout;
  // Each part fits in 64 bits, their sum does not: 2^63 + 0x1000 + 2 * 2^62.
  EXPECT_EQ(compute(2, std::uint64_t{1} << 63, std::uint64_t{1} << 62, layout),
            LayoutError::overflow);
}

TEST(Layout, RejectsUsedSizeAboveMaxMemorySize) {
  Layout layout;
  EXPECT_EQ(compute(2, Layout::kMaxMemorySize, 0, layout), LayoutError::overflow);
  // One page past the limit, reached through the output sections.
  EXPECT_EQ(compute(2, 0, Layout::kMaxMemorySize / 2, layout), LayoutError::overflow);
}

TEST(Layout, AcceptsUsedSizeOfExactlyMaxMemorySize) {
  const Layout layout = computed(2, Layout::kMaxMemorySize - kPage, 0);
  EXPECT_EQ(layout.used_size(), Layout::kMaxMemorySize);
  EXPECT_EQ(layout.memory_size(), Layout::kMaxMemorySize);
}

TEST(Layout, LeavesOutputUntouchedOnError) {
  const Layout before = computed(3, 0x1000, 0x2000);
  Layout layout = before;
  EXPECT_EQ(compute(1, 0x1000, 0x1000, layout), LayoutError::too_few_peers);
  EXPECT_EQ(compute(2, 0, 0, layout), LayoutError::no_data_sections);
  EXPECT_EQ(compute(2, kU64Max - (kPage - 1), 0, layout), LayoutError::overflow);
  EXPECT_EQ(layout, before);
}

TEST(Layout, ChecksPeerCountBeforeSectionSizes) {
  Layout layout;
  EXPECT_EQ(compute(1, 1, 1, layout), LayoutError::too_few_peers);
  EXPECT_EQ(compute(17, 1, 1, layout), LayoutError::too_many_peers);
}

TEST(Layout, DescribesEveryError) {
  for (const LayoutError error :
       {LayoutError::ok, LayoutError::too_few_peers, LayoutError::too_many_peers,
        LayoutError::rw_section_not_page_multiple, LayoutError::output_section_not_page_multiple,
        LayoutError::no_data_sections, LayoutError::overflow}) {
    EXPECT_STRNE(describe(error), "unknown layout error") << static_cast<int>(error);
  }
  EXPECT_STREQ(describe(static_cast<LayoutError>(200)), "unknown layout error");
}

TEST(Layout, IsUsableInConstantExpressions) {
  constexpr Layout layout = [] {
    Layout result;
    (void)Layout::compute(LayoutRequest{2, 0x4000, 0x10000}, result);
    return result;
  }();
  static_assert(layout.memory_size() == 0x40000);
  EXPECT_EQ(layout.output_section(1).offset, 0x15000U);
}

// --- Properties over random requests -----------------------------------------

// A request whose size fields are page multiples spread over the whole range
// the layout accepts, plus a share that lands just below or above the limits.
LayoutRequest random_request(std::mt19937_64& random) {
  std::uniform_int_distribution<std::uint32_t> peers(kMinPeers, kMaxPeers);
  std::uniform_int_distribution<unsigned> bits(0, 62);
  const auto random_pages = [&] {
    // Choose the magnitude first so that small and huge sizes are equally
    // likely; 1 in 8 sections is empty.
    if (random() % 8 == 0) return std::uint64_t{0};
    const std::uint64_t limit = std::uint64_t{1} << bits(random);
    const std::uint64_t bytes = random() % limit;
    return bytes / kPage * kPage;
  };
  return LayoutRequest{peers(random), random_pages(), random_pages()};
}

// The expected result, in 128-bit arithmetic that cannot overflow.
bool fits(const LayoutRequest& request) {
  const unsigned __int128 used =
      kPage + static_cast<unsigned __int128>(request.rw_section_size) +
      static_cast<unsigned __int128>(request.output_section_size) * request.peers;
  return used <= Layout::kMaxMemorySize;
}

void expect_well_formed(const Layout& layout, const LayoutRequest& request) {
  SCOPED_TRACE(testing::Message() << "peers=" << request.peers << " rw=" << request.rw_section_size
                                  << " output=" << request.output_section_size);
  ASSERT_EQ(layout.peers(), request.peers);
  EXPECT_EQ(layout.state_table().offset, 0U);
  EXPECT_EQ(layout.rw_section().size, request.rw_section_size);

  // Contiguous and non-overlapping: each section starts where the last ended.
  std::uint64_t cursor = layout.state_table().end();
  EXPECT_EQ(layout.rw_section().offset, cursor);
  cursor = layout.rw_section().end();
  for (std::uint32_t peer = 0; peer < layout.peers(); ++peer) {
    const Section output = layout.output_section(peer);
    EXPECT_EQ(output.offset, cursor) << "output " << peer;
    EXPECT_EQ(output.size, request.output_section_size) << "output " << peer;
    EXPECT_EQ(output.offset % kPage, 0U) << "output " << peer;
    cursor = output.end();
  }
  EXPECT_EQ(cursor, layout.used_size());

  // Page aligned.
  EXPECT_EQ(layout.state_table().size % kPage, 0U);
  EXPECT_GE(layout.state_table().size, std::uint64_t{layout.peers()} * 4U);
  EXPECT_EQ(layout.rw_section().offset % kPage, 0U);
  EXPECT_EQ(layout.used_size() % kPage, 0U);

  // Inside a power-of-two memory object that is no bigger than needed.
  EXPECT_TRUE(is_power_of_two(layout.memory_size()));
  EXPECT_LE(layout.used_size(), layout.memory_size());
  EXPECT_GT(layout.used_size(), layout.memory_size() / 2);
  EXPECT_LE(layout.memory_size(), Layout::kMaxMemorySize);
}

TEST(Layout, RandomValidRequestsGiveContiguousAlignedSectionsInsideMemory) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 random(seed);
    int accepted = 0;
    for (int i = 0; i < 2000; ++i) {
      const LayoutRequest request = random_request(random);
      if (request.rw_section_size == 0 && request.output_section_size == 0) continue;
      Layout layout;
      const LayoutError error = Layout::compute(request, layout);
      if (!fits(request)) {
        EXPECT_EQ(error, LayoutError::overflow) << "seed " << seed << " request " << i;
        continue;
      }
      ASSERT_EQ(error, LayoutError::ok) << "seed " << seed << " request " << i;
      expect_well_formed(layout, request);
      ++accepted;
    }
    // The generator must exercise the success path, not just the limits.
    EXPECT_GT(accepted, 500) << "seed " << seed;
  }
}

TEST(Layout, RandomSmallRequestsAreAlwaysAccepted) {
  std::mt19937_64 random(0x6c61796f7574);
  std::uniform_int_distribution<std::uint32_t> peers(kMinPeers, kMaxPeers);
  std::uniform_int_distribution<std::uint64_t> pages(0, 1024);
  for (int i = 0; i < 20000; ++i) {
    const LayoutRequest request{peers(random), pages(random) * kPage, (pages(random) + 1) * kPage};
    Layout layout;
    ASSERT_EQ(Layout::compute(request, layout), LayoutError::ok) << "request " << i;
    expect_well_formed(layout, request);
  }
}

}  // namespace
}  // namespace cellink::ivshmem
