// LinkDescriptor: how a v1 peer learns its link's geometry.
// Spec: docs/ivshmem-layout.md, "The v1 link descriptor".
#include "cellink/ivshmem/link_descriptor.hpp"

#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "cellink/ivshmem/layout.hpp"
#include "cellink/ivshmem/protocol.hpp"

namespace cellink::ivshmem {
namespace {

constexpr std::uint32_t kVectors = 4;

// 2 peers, 16 KiB R/W, 64 KiB outputs: used 0x25000, memory 0x40000.
Layout example_layout() {
  Layout layout;
  EXPECT_EQ(Layout::compute(LayoutRequest{2, 0x4000, 0x10000}, layout), LayoutError::ok);
  return layout;
}

LinkDescriptor valid_descriptor() {
  return make_link_descriptor(example_layout(), kVectors, protocol::kCellink, "rt-link");
}

constexpr std::uint64_t kMappedSize = 0x40000;

DescriptorError validate_copy(const LinkDescriptor& descriptor,
                              std::uint64_t mapped_size = kMappedSize) {
  Layout layout;
  return validate(descriptor, mapped_size, layout);
}

std::string name_of(const LinkDescriptor& descriptor) {
  const std::string bytes(descriptor.name, kLinkNameCapacity);
  return bytes.substr(0, bytes.find('\0'));
}

// --- Building and round trip ----------------------------------------------

TEST(LinkDescriptor, MakeFillsEveryFieldFromTheLayout) {
  const LinkDescriptor descriptor = valid_descriptor();
  EXPECT_EQ(descriptor.magic, kLinkDescriptorMagic);
  EXPECT_EQ(descriptor.version, kLinkDescriptorVersion);
  EXPECT_EQ(descriptor.descriptor_size, sizeof(LinkDescriptor));
  EXPECT_EQ(descriptor.peers, 2U);
  EXPECT_EQ(descriptor.vectors, kVectors);
  EXPECT_EQ(descriptor.protocol, protocol::kCellink);
  EXPECT_EQ(descriptor.flags, 0U);
  EXPECT_EQ(descriptor.state_table_size, 0x1000U);
  EXPECT_EQ(descriptor.rw_section_size, 0x4000U);
  EXPECT_EQ(descriptor.output_section_size, 0x10000U);
  EXPECT_EQ(descriptor.memory_size, 0x40000U);
  EXPECT_EQ(descriptor.reserved0, 0U);
  EXPECT_EQ(name_of(descriptor), "rt-link");
  for (const std::uint8_t byte : descriptor.reserved1) EXPECT_EQ(byte, 0U);
}

TEST(LinkDescriptor, MagicReadsClnkInMemory) {
  const LinkDescriptor descriptor = valid_descriptor();
  char bytes[4];
  std::memcpy(bytes, &descriptor.magic, sizeof(bytes));
  EXPECT_EQ(std::string(bytes, sizeof(bytes)), "CLNK");
}

TEST(LinkDescriptor, ValidDescriptorRoundTripsToTheSameLayout) {
  const Layout original = example_layout();
  const LinkDescriptor descriptor =
      make_link_descriptor(original, kVectors, protocol::kCellink, "rt-link");
  Layout decoded;
  ASSERT_EQ(validate(descriptor, original.memory_size(), decoded), DescriptorError::ok);
  EXPECT_EQ(decoded, original);
}

TEST(LinkDescriptor, RoundTripsSurviveACopyThroughBytes) {
  // A reader copies the descriptor out of shared memory once; the copy must
  // validate exactly as the original does.
  const LinkDescriptor original = valid_descriptor();
  unsigned char shared[sizeof(LinkDescriptor)];
  std::memcpy(shared, &original, sizeof(shared));
  LinkDescriptor copy{};
  std::memcpy(&copy, shared, sizeof(copy));
  EXPECT_EQ(validate_copy(copy), DescriptorError::ok);
}

TEST(LinkDescriptor, RandomLayoutsRoundTrip) {
  std::mt19937_64 random(0x434c4e4b);
  std::uniform_int_distribution<std::uint32_t> peers(kMinPeers, kMaxPeers);
  std::uniform_int_distribution<std::uint64_t> pages(0, 4096);
  std::uniform_int_distribution<std::uint32_t> vectors(1, kMaxVectors);
  std::uniform_int_distribution<std::uint32_t> protocol_id(0, 0xffff);
  for (int i = 0; i < 5000; ++i) {
    const LayoutRequest request{peers(random), pages(random) * kPageSize,
                                (pages(random) + 1) * kPageSize};
    Layout original;
    ASSERT_EQ(Layout::compute(request, original), LayoutError::ok);
    const LinkDescriptor descriptor = make_link_descriptor(
        original, vectors(random), static_cast<std::uint16_t>(protocol_id(random)), "random");
    Layout decoded;
    ASSERT_EQ(validate(descriptor, original.memory_size(), decoded), DescriptorError::ok)
        << "request " << i;
    EXPECT_EQ(decoded, original) << "request " << i;
  }
}

TEST(LinkDescriptor, AcceptsTheVectorLimits) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.vectors = 1;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::ok);
  descriptor.vectors = kMaxVectors;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::ok);
}

TEST(LinkDescriptor, AcceptsTheLargestProtocolId) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.protocol = 0xffff;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::ok);
}

// --- Name handling ---------------------------------------------------------

TEST(LinkDescriptor, NameIsNulPadded) {
  const LinkDescriptor descriptor = valid_descriptor();
  for (std::size_t i = std::strlen("rt-link"); i < kLinkNameCapacity; ++i) {
    EXPECT_EQ(descriptor.name[i], '\0') << "byte " << i;
  }
}

TEST(LinkDescriptor, NameOf31CharactersIsKeptWhole) {
  const std::string name(kLinkNameCapacity - 1, 'a');
  const LinkDescriptor descriptor =
      make_link_descriptor(example_layout(), kVectors, protocol::kCellink, name.c_str());
  EXPECT_EQ(name_of(descriptor), name);
  EXPECT_EQ(descriptor.name[kLinkNameCapacity - 1], '\0');
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::ok);
}

TEST(LinkDescriptor, LongerNamesAreTruncatedTo31Characters) {
  const std::string name = "0123456789abcdefghijklmnopqrstuvwxyz";
  const LinkDescriptor descriptor =
      make_link_descriptor(example_layout(), kVectors, protocol::kCellink, name.c_str());
  EXPECT_EQ(name_of(descriptor), name.substr(0, kLinkNameCapacity - 1));
  EXPECT_EQ(descriptor.name[kLinkNameCapacity - 1], '\0');
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::ok);
}

TEST(LinkDescriptor, NullNameGivesAnEmptyName) {
  const LinkDescriptor descriptor =
      make_link_descriptor(example_layout(), kVectors, protocol::kCellink, nullptr);
  EXPECT_EQ(name_of(descriptor), "");
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::ok);
}

// --- Each error, produced by mutating one field of a valid descriptor --------

TEST(LinkDescriptor, RejectsBadMagic) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.magic = 0;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_magic);
  descriptor.magic = kLinkDescriptorMagic ^ 1U;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_magic);
}

TEST(LinkDescriptor, RejectsOtherVersions) {
  for (const std::uint16_t version : {0, 2, 0xffff}) {
    LinkDescriptor descriptor = valid_descriptor();
    descriptor.version = version;
    EXPECT_EQ(validate_copy(descriptor), DescriptorError::unsupported_version)
        << "version " << version;
  }
}

TEST(LinkDescriptor, RejectsWrongDescriptorSize) {
  for (const std::uint16_t size : {0, 0x7f, 0x81, 0x100}) {
    LinkDescriptor descriptor = valid_descriptor();
    descriptor.descriptor_size = size;
    EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_descriptor_size) << "size " << size;
  }
}

TEST(LinkDescriptor, RejectsNonzeroFlags) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.flags = 1;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::nonzero_reserved);
}

TEST(LinkDescriptor, RejectsNonzeroReserved0) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.reserved0 = std::uint64_t{1} << 63;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::nonzero_reserved);
}

TEST(LinkDescriptor, RejectsAnyNonzeroByteInReserved1) {
  for (std::size_t i = 0; i < sizeof(LinkDescriptor::reserved1); ++i) {
    LinkDescriptor descriptor = valid_descriptor();
    descriptor.reserved1[i] = 0x80;
    EXPECT_EQ(validate_copy(descriptor), DescriptorError::nonzero_reserved) << "byte " << i;
  }
}

TEST(LinkDescriptor, RejectsUnterminatedName) {
  LinkDescriptor descriptor = valid_descriptor();
  std::memset(descriptor.name, 'x', sizeof(descriptor.name));
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::name_not_terminated);
}

TEST(LinkDescriptor, AcceptsNameTerminatedOnlyInItsLastByte) {
  LinkDescriptor descriptor = valid_descriptor();
  std::memset(descriptor.name, 'x', sizeof(descriptor.name) - 1);
  descriptor.name[kLinkNameCapacity - 1] = '\0';
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::ok);
}

TEST(LinkDescriptor, RejectsProtocolAbove16Bits) {
  for (const std::uint32_t protocol_id : {0x10000U, 0x14c11U, 0xffffffffU}) {
    LinkDescriptor descriptor = valid_descriptor();
    descriptor.protocol = protocol_id;
    EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_protocol) << protocol_id;
  }
}

TEST(LinkDescriptor, RejectsZeroVectors) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.vectors = 0;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_vectors);
}

TEST(LinkDescriptor, RejectsMoreThan64Vectors) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.vectors = kMaxVectors + 1;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_vectors);
}

TEST(LinkDescriptor, RejectsPeerCountsOutsideTheLayoutLimits) {
  for (const std::uint32_t peers : {0U, 1U, kMaxPeers + 1, 0xffffffffU}) {
    LinkDescriptor descriptor = valid_descriptor();
    descriptor.peers = peers;
    EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_layout) << "peers " << peers;
  }
}

TEST(LinkDescriptor, RejectsSectionSizesThatAreNotPageMultiples) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.rw_section_size = 0x4001;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_layout);
  descriptor = valid_descriptor();
  descriptor.output_section_size = 0xfff0;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_layout);
}

TEST(LinkDescriptor, RejectsSectionSizesThatOverflow) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.output_section_size = 0xfffffffffffff000U;
  EXPECT_EQ(validate_copy(descriptor), DescriptorError::bad_layout);
}

TEST(LinkDescriptor, RejectsStateTableSizeThatDisagreesWithTheLayout) {
  for (const std::uint64_t size : {std::uint64_t{0}, std::uint64_t{0x800}, std::uint64_t{0x2000}}) {
    LinkDescriptor descriptor = valid_descriptor();
    descriptor.state_table_size = size;
    EXPECT_EQ(validate_copy(descriptor), DescriptorError::layout_mismatch) << "size " << size;
  }
}

TEST(LinkDescriptor, RejectsMemorySizeThatDiffersFromTheMappedSize) {
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.memory_size = 0x80000;
  EXPECT_EQ(validate_copy(descriptor, 0x40000), DescriptorError::memory_size_mismatch);
  descriptor = valid_descriptor();
  EXPECT_EQ(validate_copy(descriptor, 0x80000), DescriptorError::memory_size_mismatch);
}

TEST(LinkDescriptor, RejectsMappingThatIsNotAPowerOfTwo) {
  // Big enough for the sections (0x25000), and agreeing with the field, but
  // QEMU can never map it as a BAR.
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.memory_size = 0x30000;
  EXPECT_EQ(validate_copy(descriptor, 0x30000), DescriptorError::memory_size_mismatch);
}

TEST(LinkDescriptor, RejectsMappingSmallerThanTheSections) {
  // A power of two that agrees with the field but cannot hold the 0x25000
  // bytes the sections need.
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.memory_size = 0x20000;
  EXPECT_EQ(validate_copy(descriptor, 0x20000), DescriptorError::memory_size_mismatch);
}

TEST(LinkDescriptor, RejectsMappingTooSmallToHoldTheDescriptor) {
  const LinkDescriptor descriptor = valid_descriptor();
  const std::uint64_t needed = kLinkDescriptorOffset + sizeof(LinkDescriptor);
  EXPECT_EQ(validate_copy(descriptor, 0), DescriptorError::mapping_too_small);
  EXPECT_EQ(validate_copy(descriptor, needed - 1), DescriptorError::mapping_too_small);
  EXPECT_NE(validate_copy(descriptor, needed), DescriptorError::mapping_too_small);
}

TEST(LinkDescriptor, ChecksMappingSizeBeforeReadingAnyField) {
  LinkDescriptor descriptor{};
  EXPECT_EQ(validate_copy(descriptor, 0x100), DescriptorError::mapping_too_small);
}

TEST(LinkDescriptor, LeavesLayoutUntouchedOnError) {
  Layout other;
  ASSERT_EQ(Layout::compute(LayoutRequest{5, 0, 0x3000}, other), LayoutError::ok);
  LinkDescriptor descriptor = valid_descriptor();
  descriptor.vectors = 0;
  Layout layout = other;
  EXPECT_EQ(validate(descriptor, kMappedSize, layout), DescriptorError::bad_vectors);
  EXPECT_EQ(layout, other);
}

TEST(LinkDescriptor, DescribesEveryError) {
  for (const DescriptorError error :
       {DescriptorError::ok, DescriptorError::mapping_too_small, DescriptorError::bad_magic,
        DescriptorError::unsupported_version, DescriptorError::bad_descriptor_size,
        DescriptorError::nonzero_reserved, DescriptorError::name_not_terminated,
        DescriptorError::bad_protocol, DescriptorError::bad_vectors, DescriptorError::bad_layout,
        DescriptorError::layout_mismatch, DescriptorError::memory_size_mismatch}) {
    EXPECT_STRNE(describe(error), "unknown descriptor error") << static_cast<int>(error);
  }
  EXPECT_STREQ(describe(static_cast<DescriptorError>(200)), "unknown descriptor error");
}

}  // namespace
}  // namespace cellink::ivshmem
