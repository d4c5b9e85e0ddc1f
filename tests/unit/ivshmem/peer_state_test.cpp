// PeerState: the u32 each peer publishes in its state-table entry.
// Spec: docs/ivshmem-layout.md, "Peer state encoding".
#include "cellink/ivshmem/peer_state.hpp"

#include <cstdint>
#include <random>

#include <gtest/gtest.h>

namespace cellink::ivshmem {
namespace {

constexpr Phase kPhases[] = {Phase::reset, Phase::init, Phase::ready, Phase::run};
constexpr std::uint32_t kEpochs[] = {0, 1, 2, 0xff, 0x100, 0x7fffff, 0x800000, 0xfffffe, 0xffffff};

TEST(PeerState, EncodesPhaseInLowByteAndEpochAbove) {
  EXPECT_EQ((PeerState{Phase::init, 0x123456}.encode()), 0x12345601U);
  EXPECT_EQ((PeerState{Phase::ready, 1}.encode()), 0x102U);
  EXPECT_EQ((PeerState{Phase::run, 0xffffff}.encode()), 0xffffff03U);
}

TEST(PeerState, DefaultIsRawZero) {
  EXPECT_EQ(PeerState{}.encode(), 0U);
  PeerState state{Phase::run, 9};
  ASSERT_TRUE(PeerState::decode(0, state));
  EXPECT_EQ(state, PeerState{});
}

TEST(PeerState, RoundTripsEveryPhaseAndEdgeEpoch) {
  for (const Phase phase : kPhases) {
    for (const std::uint32_t epoch : kEpochs) {
      const PeerState original{phase, epoch};
      PeerState decoded{};
      ASSERT_TRUE(PeerState::decode(original.encode(), decoded))
          << phase_name(phase) << " epoch " << epoch;
      EXPECT_EQ(decoded, original) << phase_name(phase) << " epoch " << epoch;
    }
  }
}

TEST(PeerState, RoundTripsRandomEpochs) {
  std::mt19937 random(0x50454552);
  std::uniform_int_distribution<std::uint32_t> epochs(0, PeerState::kEpochMask);
  for (int i = 0; i < 10000; ++i) {
    const PeerState original{kPhases[i % 4], epochs(random)};
    PeerState decoded{};
    ASSERT_TRUE(PeerState::decode(original.encode(), decoded)) << "epoch " << original.epoch;
    EXPECT_EQ(decoded, original);
  }
}

TEST(PeerState, EncodeDropsEpochBitsAbove24) {
  EXPECT_EQ((PeerState{Phase::run, 0x1000000}.encode()), 0x3U);
  EXPECT_EQ((PeerState{Phase::init, 0xffffffff}.encode()), 0xffffff01U);
}

TEST(PeerState, DecodeRejectsUnknownPhasesAndLeavesOutputUntouched) {
  const PeerState sentinel{Phase::ready, 0xabcdef};
  for (std::uint32_t phase = 4; phase <= 255; ++phase) {
    for (const std::uint32_t epoch : kEpochs) {
      PeerState out = sentinel;
      EXPECT_FALSE(PeerState::decode((epoch << 8) | phase, out))
          << "phase " << phase << " epoch " << epoch;
      EXPECT_EQ(out, sentinel) << "phase " << phase << " epoch " << epoch;
    }
  }
}

TEST(PeerState, DecodeAcceptsAnyRawValueWithAKnownPhase) {
  std::mt19937 random(7);
  for (int i = 0; i < 10000; ++i) {
    const std::uint32_t raw = random();
    PeerState out{};
    const bool known = (raw & 0xffU) <= 3;
    EXPECT_EQ(PeerState::decode(raw, out), known) << std::hex << raw;
    if (known) {
      EXPECT_EQ(out.encode(), raw) << std::hex << raw;
    }
  }
}

TEST(PeerState, NextEpochCountsUp) {
  EXPECT_EQ(PeerState::next_epoch(0), 1U);
  EXPECT_EQ(PeerState::next_epoch(1), 2U);
  EXPECT_EQ(PeerState::next_epoch(0x7fffff), 0x800000U);
  EXPECT_EQ(PeerState::next_epoch(0xfffffe), 0xffffffU);
}

TEST(PeerState, NextEpochWrapsFromMaxToZero) {
  EXPECT_EQ(PeerState::next_epoch(PeerState::kEpochMask), 0U);
}

TEST(PeerState, NamesEveryPhase) {
  EXPECT_STREQ(phase_name(Phase::reset), "RESET");
  EXPECT_STREQ(phase_name(Phase::init), "INIT");
  EXPECT_STREQ(phase_name(Phase::ready), "READY");
  EXPECT_STREQ(phase_name(Phase::run), "RUN");
  EXPECT_STREQ(phase_name(static_cast<Phase>(4)), "INVALID");
}

}  // namespace
}  // namespace cellink::ivshmem
