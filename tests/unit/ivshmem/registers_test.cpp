// Register values and PCI identification for ivshmem v1 (QEMU) and v2
// (Jailhouse). Field offsets are static_asserted in the headers; these tests
// cover the values software computes. Spec: docs/ivshmem-layout.md,
// "Registers".
#include <cstddef>
#include <cstdint>

#include <gtest/gtest.h>

#include "cellink/ivshmem/device.hpp"
#include "cellink/ivshmem/protocol.hpp"
#include "cellink/ivshmem/registers_v1.hpp"
#include "cellink/ivshmem/registers_v2.hpp"

namespace cellink::ivshmem {
namespace {

// --- Doorbell encoding -------------------------------------------------------

TEST(RegistersV1, DoorbellPutsPeerInHighHalfAndVectorInLowByte) {
  EXPECT_EQ(v1::doorbell_value(0, 0), 0x0U);
  EXPECT_EQ(v1::doorbell_value(1, 0), 0x10000U);
  EXPECT_EQ(v1::doorbell_value(3, 5), 0x30005U);
  EXPECT_EQ(v1::doorbell_value(0xffff, 0xff), 0xffff00ffU);
}

TEST(RegistersV1, DoorbellMasksVectorTo8Bits) {
  // QEMU honours only 8 vector bits; the rest must not spill into bits 8..15.
  EXPECT_EQ(v1::doorbell_value(2, 0x100), 0x20000U);
  EXPECT_EQ(v1::doorbell_value(2, 0x1ff), 0x200ffU);
  EXPECT_EQ(v1::doorbell_value(2, 0xffffffff), 0x200ffU);
}

TEST(RegistersV2, DoorbellPutsPeerInHighHalfAndVectorInLowHalf) {
  EXPECT_EQ(v2::doorbell_value(0, 0), 0x0U);
  EXPECT_EQ(v2::doorbell_value(1, 0), 0x10000U);
  EXPECT_EQ(v2::doorbell_value(3, 0x1ff), 0x301ffU);
  EXPECT_EQ(v2::doorbell_value(0xffff, 0xffff), 0xffffffffU);
}

TEST(RegistersV2, DoorbellMasksVectorTo16Bits) {
  // A vector above 16 bits must not change the target peer.
  EXPECT_EQ(v2::doorbell_value(2, 0x10000), 0x20000U);
  EXPECT_EQ(v2::doorbell_value(2, 0x1abcd), 0x2abcdU);
  EXPECT_EQ(v2::doorbell_value(2, 0xffffffff), 0x2ffffU);
}

TEST(RegistersV2, InterruptEnableAndOneShotAreBitZero) {
  EXPECT_EQ(v2::kInterruptEnable, 0x1U);
  EXPECT_EQ(v2::kOneShotInterrupts, 0x1U);
}

// --- PCI identification ------------------------------------------------------

TEST(Registers, IdentifiesQemuAndJailhouseDevicesByTheirPciIds) {
  EXPECT_EQ(v1::kVendorId, 0x1af4);
  EXPECT_EQ(v1::kDeviceId, 0x1110);
  EXPECT_EQ(v1::kRevision, 1);
  EXPECT_EQ(v2::kVendorId, 0x110a);
  EXPECT_EQ(v2::kDeviceId, 0x4106);
  EXPECT_EQ(v2::kRevision, 0);
}

TEST(RegistersV2, VendorCapabilityLengthSaysWhetherBaseAddressIsPresent) {
  EXPECT_EQ(v2::kVendorCapabilityId, 0x09);
  EXPECT_EQ(v2::kVendorCapabilityLengthWithBase, sizeof(v2::VendorCapability));
  EXPECT_EQ(v2::kVendorCapabilityLengthWithoutBase, offsetof(v2::VendorCapability, base_address));
}

// --- Class code and protocol ids --------------------------------------------

TEST(Protocol, ClassCodeIsBaseClassFfWithProtocolInLow16Bits) {
  EXPECT_EQ(class_code(protocol::kUndefined), 0xff0000U);
  EXPECT_EQ(class_code(protocol::kVirtualEthernet), 0xff0001U);
  EXPECT_EQ(class_code(protocol::kCellink), 0xff4c11U);
  EXPECT_EQ(class_code(0xffff), 0xffffffU);
}

TEST(Protocol, SubClassIsHighByteAndInterfaceIsLowByte) {
  const std::uint32_t code = class_code(protocol::kVirtioBackBase + protocol::kVirtioDeviceConsole);
  EXPECT_EQ((code >> 16) & 0xffU, 0xffU);  // base class
  EXPECT_EQ((code >> 8) & 0xffU, 0xc0U);   // sub-class
  EXPECT_EQ(code & 0xffU, 0x03U);          // interface
}

TEST(Protocol, EveryProtocolIdRoundTripsThroughTheClassCode) {
  for (std::uint32_t id = 0; id <= 0xffff; ++id) {
    const auto protocol_id = static_cast<std::uint16_t>(id);
    ASSERT_EQ(protocol_from_class_code(class_code(protocol_id)), protocol_id) << std::hex << id;
  }
}

TEST(Protocol, ProtocolFromClassCodeIgnoresTheBaseClass) {
  EXPECT_EQ(protocol_from_class_code(0x054c11), protocol::kCellink);
  EXPECT_EQ(protocol_from_class_code(0xffffffffU), 0xffff);
}

TEST(Protocol, UserDefinedRangeIs4000To7fff) {
  EXPECT_FALSE(is_user_defined(0x3fff));
  EXPECT_TRUE(is_user_defined(0x4000));
  EXPECT_TRUE(is_user_defined(protocol::kCellink));
  EXPECT_TRUE(is_user_defined(0x7fff));
  EXPECT_FALSE(is_user_defined(0x8000));
}

TEST(Protocol, VirtioFrontRangeIs8000ToBfff) {
  EXPECT_FALSE(is_virtio_front(0x7fff));
  EXPECT_TRUE(is_virtio_front(protocol::kVirtioFrontBase));
  EXPECT_TRUE(is_virtio_front(protocol::kVirtioFrontBase + protocol::kVirtioDeviceConsole));
  EXPECT_TRUE(is_virtio_front(0xbfff));
  EXPECT_FALSE(is_virtio_front(0xc000));
}

TEST(Protocol, VirtioBackRangeIsC000ToFfff) {
  EXPECT_FALSE(is_virtio_back(0xbfff));
  EXPECT_TRUE(is_virtio_back(protocol::kVirtioBackBase));
  EXPECT_TRUE(is_virtio_back(protocol::kVirtioBackBase + protocol::kVirtioDeviceNet));
  EXPECT_TRUE(is_virtio_back(0xffff));
}

TEST(Protocol, RangesAreDisjoint) {
  for (std::uint32_t id = 0; id <= 0xffff; ++id) {
    const auto protocol_id = static_cast<std::uint16_t>(id);
    const int ranges = int{is_user_defined(protocol_id)} + int{is_virtio_front(protocol_id)} +
                       int{is_virtio_back(protocol_id)};
    ASSERT_LE(ranges, 1) << std::hex << id;
  }
}

// --- Device status -----------------------------------------------------------

TEST(Device, DescribesEveryDoorbellStatus) {
  for (const DoorbellStatus status :
       {DoorbellStatus::ok, DoorbellStatus::no_such_peer, DoorbellStatus::peer_absent,
        DoorbellStatus::no_such_vector, DoorbellStatus::failed}) {
    EXPECT_STRNE(describe(status), "unknown doorbell status") << static_cast<int>(status);
  }
  EXPECT_STREQ(describe(static_cast<DoorbellStatus>(200)), "unknown doorbell status");
}

}  // namespace
}  // namespace cellink::ivshmem
