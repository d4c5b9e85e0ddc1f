// Link (link.hpp) over in-process LoopbackLinks: the handshake, peer
// restarts and departures, the delivery counter, hostile headers and state
// words, LinkGeometry, and the ring features the message layer relies on.
// Spec: docs/link.md. The LoopbackDevice these tests stand on has its own
// tests in tests/unit/linux-uio/loopback_device_test.cpp.
//
// No threads drive the Links: each test polls every live cell in a bounded
// loop until the pair states settle, and fails loudly when they do not.
#include "cellink/transports/link.hpp"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cellink/ivshmem/peer_state.hpp"
#include "cellink/linux-uio/loopback_device.hpp"
#include "cellink/transports/link_format.hpp"

namespace cellink::transports {

// gtest prints these by name (found by argument-dependent lookup).
void PrintTo(PairState state, std::ostream* out) {
  *out << pair_state_name(state);
}
void PrintTo(PairFault fault, std::ostream* out) {
  constexpr const char* kNames[] = {"none", "header_mismatch", "ring_broken"};
  *out << kNames[static_cast<int>(fault)];
}
void PrintTo(ProduceStatus status, std::ostream* out) {
  constexpr const char* kNames[] = {"ok",    "full", "too_large", "out_of_order", "bad_reservation",
                                    "broken"};
  *out << kNames[static_cast<int>(status)];
}

namespace {

using ivshmem::PeerState;
using ivshmem::Phase;
using linux_uio::DeviceEvent;
using linux_uio::LoopbackLink;
using Kind = LinkEvent::Kind;

constexpr std::uint64_t k64KiB = 0x10000;  // LoopbackLink's default output section
constexpr std::uint64_t k1MiB = 0x100000;
constexpr int kMaxRounds = 100;  // poll rounds a handshake may take before the test fails
constexpr std::uint32_t A = 0;
constexpr std::uint32_t B = 1;

std::span<const std::byte> bytes(std::string_view text) {
  return std::as_bytes(std::span{text.data(), text.size()});
}

struct Received {
  std::string text;
  std::uint16_t channel = 0;
};

// One cell (process): its Link and every event the Link reported to it.
struct Cell {
  Link<> link;
  std::vector<LinkEvent> events;

  void poll() {
    link.poll([this](const LinkEvent& event) { events.push_back(event); });
  }
  [[nodiscard]] int count(Kind kind, std::uint32_t peer) const {
    return static_cast<int>(std::count_if(events.begin(), events.end(), [&](const LinkEvent& e) {
      return e.kind == kind && e.peer == peer;
    }));
  }
  void send(std::uint32_t peer, std::string_view text, std::uint16_t channel = 1) {
    ASSERT_EQ(link.producer(peer).write(bytes(text), channel), ProduceStatus::ok) << text;
    (void)link.publish(peer);
  }
  // The next record from `peer`, released; nullopt when there is none or the
  // ring is not readable (peek() is only allowed then).
  std::optional<Received> receive(std::uint32_t peer) {
    Record record;
    if (!link.readable(peer) || link.consumer(peer).peek(record) != ConsumeStatus::ok) {
      return std::nullopt;
    }
    Received received{{reinterpret_cast<const char*>(record.payload.data()), record.payload.size()},
                      record.channel};
    EXPECT_EQ(link.consumer(peer).release(record), ConsumeStatus::ok);
    return received;
  }
  std::vector<std::string> receive_all(std::uint32_t peer) {
    std::vector<std::string> texts;
    while (auto received = receive(peer)) texts.push_back(received->text);
    return texts;
  }
};

// A LoopbackLink with one Cell per peer. A cell is live from init() until
// it dies; only live cells are polled.
class Cells {
 public:
  explicit Cells(std::uint32_t peers, std::uint64_t section = k64KiB)
      : loopback(peers, section), live_(peers, false) {
    for (std::uint32_t id = 0; id < peers; ++id) cells_.push_back(std::make_unique<Cell>());
  }

  Cell& operator[](std::uint32_t id) { return *cells_[id]; }
  [[nodiscard]] std::uint32_t size() const { return static_cast<std::uint32_t>(cells_.size()); }
  [[nodiscard]] bool live(std::uint32_t id) const { return live_[id]; }

  void init(std::uint32_t id) {
    ASSERT_EQ(cells_[id]->link.init(loopback.device(id)), LinkInitStatus::ok);
    live_[id] = true;
  }
  // The process dies: the daemon (here the LoopbackLink) notices.
  void kill(std::uint32_t id) {
    live_[id] = false;
    loopback.detach(id);
  }
  // A new process takes the dead one's place; it is live once init()ed.
  void respawn(std::uint32_t id) {
    loopback.attach(id);
    cells_[id] = std::make_unique<Cell>();
  }

  void poll_live() {
    for (std::uint32_t id = 0; id < size(); ++id) {
      if (live_[id]) cells_[id]->poll();
    }
  }
  // Polls every live cell until `done()`; false after kMaxRounds rounds.
  template <typename Done>
  [[nodiscard]] bool settle(Done&& done) {
    for (int round = 0; round < kMaxRounds; ++round) {
      if (done()) return true;
      poll_live();
    }
    return done();
  }
  [[nodiscard]] bool pair_running(std::uint32_t a, std::uint32_t b) {
    return live_[a] && live_[b] && (*this)[a].link.running(b) && (*this)[b].link.running(a);
  }
  [[nodiscard]] bool all_running() {
    for (std::uint32_t a = 0; a < size(); ++a) {
      for (std::uint32_t b = a + 1; b < size(); ++b) {
        if (!pair_running(a, b)) return false;
      }
    }
    return true;
  }
  // "0->1 running, 1->0 acked, ..." for failure messages.
  [[nodiscard]] std::string states() {
    std::string text;
    for (std::uint32_t a = 0; a < size(); ++a) {
      for (std::uint32_t b = 0; b < size(); ++b) {
        if (a == b) continue;
        text += std::to_string(a) + "->" + std::to_string(b) + " " +
                pair_state_name((*this)[a].link.state(b)) + (live_[a] ? ", " : " (dead), ");
      }
    }
    return text;
  }

  LoopbackLink loopback;

 private:
  std::vector<std::unique_ptr<Cell>> cells_;
  std::vector<bool> live_;
};

LinkHeader& header_of(LoopbackLink& loopback, std::uint32_t peer) {
  return *reinterpret_cast<LinkHeader*>(loopback.device(peer).own_output_section().data() +
                                        kLinkHeaderOffset);
}

// ---- handshake -------------------------------------------------------------

class TwoPeerInitOrder : public testing::TestWithParam<std::uint32_t> {};

TEST_P(TwoPeerInitOrder, BothSidesReachRunningWithOnePeerUpEach) {
  const std::uint32_t first = GetParam();
  const std::uint32_t second = 1 - first;
  Cells cells(2);
  cells.init(first);
  for (int round = 0; round < 5; ++round) cells.poll_live();  // alone: nothing to hand-shake with
  EXPECT_EQ(cells[first].link.state(second), PairState::idle);
  cells.init(second);
  ASSERT_TRUE(cells.settle([&] { return cells.all_running(); })) << cells.states();
  for (int round = 0; round < 5; ++round) cells.poll_live();
  for (const std::uint32_t self : {first, second}) {
    const std::uint32_t other = 1 - self;
    ASSERT_EQ(cells[self].events.size(), 1U) << "cell " << self;
    EXPECT_EQ(cells[self].events[0].kind, Kind::peer_up);
    EXPECT_EQ(cells[self].events[0].peer, other);
    EXPECT_EQ(cells[self].events[0].peer_epoch, cells[other].link.epoch());
    PeerState state;
    ASSERT_TRUE(PeerState::decode(cells.loopback.device(self).peer_state(self), state));
    EXPECT_EQ(state, (PeerState{Phase::run, cells[self].link.epoch()}));
  }
}

INSTANTIATE_TEST_SUITE_P(Link, TwoPeerInitOrder, testing::Values(A, B), [](const auto& info) {
  return "Peer" + std::to_string(info.param) + "First";
});

TEST(Link, EveryPairReachesRunningInAnyInitAndPollOrder) {
  for (std::uint32_t seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    Cells cells(2 + seed % 4);
    for (int step = 0; step < 5000 && !cells.all_running(); ++step) {
      const std::uint32_t id = rng() % cells.size();
      if (cells.live(id)) {
        cells[id].poll();
      } else {
        cells.init(id);
      }
    }
    ASSERT_TRUE(cells.all_running()) << "seed " << seed << ": " << cells.states();
    for (std::uint32_t a = 0; a < cells.size(); ++a) {
      for (std::uint32_t b = 0; b < cells.size(); ++b) {
        if (a == b) continue;
        EXPECT_EQ(cells[a].count(Kind::peer_up, b), 1) << "seed " << seed;
      }
    }
  }
}

// Two live, running peers A and B.
class RunningPair : public testing::Test {
 protected:
  void SetUp() override {
    cells.init(A);
    cells.init(B);
    ASSERT_TRUE(cells.settle([&] { return cells.all_running(); })) << cells.states();
  }
  Cell& a() { return cells[A]; }
  Cell& b() { return cells[B]; }

  Cells cells{2};
};

TEST_F(RunningPair, RecordsFlowInBothDirections) {
  a().send(B, "ping", 3);
  b().send(A, "pong", 4);
  b().send(A, "pong again", 4);
  const auto at_b = b().receive(A);
  ASSERT_TRUE(at_b.has_value());
  EXPECT_EQ(at_b->text, "ping");
  EXPECT_EQ(at_b->channel, 3);
  EXPECT_EQ(a().receive_all(B), (std::vector<std::string>{"pong", "pong again"}));
  EXPECT_FALSE(b().receive(A).has_value());
}

class MultiPeerLink : public testing::TestWithParam<std::uint32_t> {
 protected:
  void SetUp() override {
    for (std::uint32_t id = 0; id < cells.size(); ++id) cells.init(id);
    ASSERT_TRUE(cells.settle([&] { return cells.all_running(); })) << cells.states();
  }
  Cells cells{GetParam()};
};

TEST_P(MultiPeerLink, EveryPairReachesRunningWithOnePeerUpPerPeer) {
  for (std::uint32_t a = 0; a < cells.size(); ++a) {
    EXPECT_EQ(cells[a].events.size(), cells.size() - 1);
    for (std::uint32_t b = 0; b < cells.size(); ++b) {
      if (a == b) continue;
      EXPECT_EQ(cells[a].count(Kind::peer_up, b), 1) << a << " about " << b;
    }
  }
}

TEST_P(MultiPeerLink, TrafficBetweenEveryOrderedPairLandsInTheRightRing) {
  const auto text = [](std::uint32_t from, std::uint32_t to, int k) {
    return std::to_string(from) + ">" + std::to_string(to) + "#" + std::to_string(k);
  };
  for (std::uint32_t from = 0; from < cells.size(); ++from) {
    for (std::uint32_t to = 0; to < cells.size(); ++to) {
      if (from == to) continue;
      for (int k = 0; k < 3; ++k) {
        cells[from].send(to, text(from, to, k), static_cast<std::uint16_t>(from + 1));
      }
    }
  }
  for (std::uint32_t to = 0; to < cells.size(); ++to) {
    for (std::uint32_t from = 0; from < cells.size(); ++from) {
      if (from == to) continue;
      for (int k = 0; k < 3; ++k) {
        const auto received = cells[to].receive(from);
        ASSERT_TRUE(received.has_value()) << text(from, to, k) << " missing";
        EXPECT_EQ(received->text, text(from, to, k));
        EXPECT_EQ(received->channel, from + 1);
      }
      EXPECT_FALSE(cells[to].receive(from).has_value()) << "extra record in " << from << ">" << to;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Link, MultiPeerLink, testing::Values(3U, 16U),
                         [](const auto& info) { return std::to_string(info.param) + "Peers"; });

// ---- restart ---------------------------------------------------------------

TEST_F(RunningPair, RestartedPeerPicksAGreaterEpoch) {
  const std::uint32_t old_epoch = b().link.epoch();
  cells.init(B);
  EXPECT_GT(b().link.epoch(), old_epoch);
  PeerState state;
  ASSERT_TRUE(PeerState::decode(cells.loopback.device(A).peer_state(B), state));
  EXPECT_EQ(state, (PeerState{Phase::ready, b().link.epoch()}));
}

TEST_F(RunningPair, SurvivorSeesExactlyOnePeerResetWithTheOldEpoch) {
  const std::uint32_t old_epoch = b().link.epoch();
  cells.init(B);
  for (int round = 0; round < 10; ++round) cells.poll_live();
  ASSERT_EQ(a().count(Kind::peer_reset, B), 1);
  const auto reset = std::find_if(a().events.begin(), a().events.end(),
                                  [](const LinkEvent& e) { return e.kind == Kind::peer_reset; });
  EXPECT_EQ(reset->peer_epoch, old_epoch);
  EXPECT_EQ(a().link.state(B), PairState::draining);
  EXPECT_EQ(b().count(Kind::peer_reset, A), 0) << "the restarted side has no session to end";
}

TEST_F(RunningPair, RecordsCommittedBeforeARestartStayReadableWhileDraining) {
  for (const char* text : {"one", "two", "three"}) b().send(A, text);
  EXPECT_EQ(a().receive(B)->text, "one");
  cells.init(B);
  ASSERT_TRUE(cells.settle([&] { return a().link.state(B) == PairState::draining; }))
      << cells.states();
  EXPECT_TRUE(a().link.readable(B));
  EXPECT_EQ(a().receive_all(B), (std::vector<std::string>{"two", "three"}));
}

TEST_F(RunningPair, AfterFinishDrainThePairRunsAgainWithTheNewEpoch) {
  cells.init(B);
  ASSERT_TRUE(cells.settle([&] { return a().link.state(B) == PairState::draining; }));
  a().link.finish_drain(B);
  ASSERT_TRUE(cells.settle([&] { return cells.all_running(); })) << cells.states();
  EXPECT_EQ(a().link.peer_epoch(B), b().link.epoch());
  ASSERT_EQ(a().count(Kind::peer_up, B), 2);
  EXPECT_EQ(a().events.back().kind, Kind::peer_up);
  EXPECT_EQ(a().events.back().peer_epoch, b().link.epoch());
  a().send(B, "to the new B");
  b().send(A, "from the new B");
  EXPECT_EQ(b().receive_all(A), std::vector<std::string>{"to the new B"});
  EXPECT_EQ(a().receive_all(B), std::vector<std::string>{"from the new B"});
}

TEST_F(RunningPair, NoRecordOfTheEndedSessionIsDeliveredAfterTheRehandshake) {
  for (const char* text : {"old 1", "old 2", "old 3"}) b().send(A, text);
  EXPECT_EQ(a().receive(B)->text, "old 1");
  cells.init(B);
  ASSERT_TRUE(cells.settle([&] { return a().link.state(B) == PairState::draining; }));
  EXPECT_EQ(a().receive(B)->text, "old 2");  // "old 3" is left behind on purpose
  a().link.finish_drain(B);
  ASSERT_TRUE(cells.settle([&] { return cells.all_running(); })) << cells.states();
  EXPECT_FALSE(a().receive(B).has_value());
  b().send(A, "new 1");
  EXPECT_EQ(a().receive_all(B), std::vector<std::string>{"new 1"});
}

TEST_F(RunningPair, RestartIsSeenEvenWhenTheSurvivorNeverSawTheZero) {
  const std::uint32_t old_epoch = b().link.epoch();
  cells.kill(B);  // the daemon writes 0 into B's state entry...
  cells.respawn(B);
  cells.init(B);  // ...and the new incarnation overwrites it before A polls
  EXPECT_NE(cells.loopback.device(A).peer_state(B), 0U);
  ASSERT_TRUE(cells.settle([&] { return a().link.state(B) == PairState::draining; }))
      << cells.states();
  ASSERT_EQ(a().count(Kind::peer_reset, B), 1);
  EXPECT_EQ(a().events.back().peer_epoch, old_epoch);
}

TEST_F(RunningPair, PeerThatLeavesIsResetAndRunsAgainAfterItRejoins) {
  const std::uint32_t old_epoch = b().link.epoch();
  cells.kill(B);
  ASSERT_TRUE(cells.settle([&] { return a().link.state(B) == PairState::draining; }));
  EXPECT_EQ(a().count(Kind::peer_reset, B), 1);
  a().link.finish_drain(B);
  for (int round = 0; round < 10; ++round) cells.poll_live();
  EXPECT_EQ(a().link.state(B), PairState::idle) << "nobody to hand-shake with";
  cells.respawn(B);
  cells.init(B);
  EXPECT_GT(b().link.epoch(), old_epoch);
  ASSERT_TRUE(cells.settle([&] { return cells.all_running(); })) << cells.states();
  EXPECT_EQ(a().count(Kind::peer_up, B), 2);
}

// ---- restarts at awkward moments ------------------------------------------

class LinkRestartRace : public RunningPair {};

// A peer that dies in the middle of init() (magic withdrawn, new epoch not
// yet in its header) and whose state word the daemon zeroes must still get
// an epoch above every one it published, or a survivor that missed the
// intermediate states would take the new incarnation for the old session.
TEST_F(LinkRestartRace, PeerThatDiedMidInitStillGetsAGreaterEpoch) {
  const std::uint32_t old_epoch = b().link.epoch();
  // B's next init() gets as far as withdrawing its header's magic, then dies.
  cells.loopback.device(B).set_state(PeerState{Phase::init, old_epoch + 1}.encode());
  std::atomic_ref<std::uint32_t>(header_of(cells.loopback, B).magic)
      .store(0, std::memory_order_relaxed);
  cells.kill(B);
  cells.respawn(B);
  cells.init(B);
  EXPECT_GT(b().link.epoch(), old_epoch) << "the new incarnation reused an old epoch";
  for (int round = 0; round < 10; ++round) cells.poll_live();
  EXPECT_EQ(a().count(Kind::peer_reset, B), 1) << "A never noticed that B restarted";
}

// A restarted receiver's ack() zeroes its consumer area for the sender's
// ring while the sender may still run the old session; the sender's ring then
// sees `consumed` go backwards. report_ring_broken() re-reads the peer and
// ends the session as a reset (draining what the receiver committed), not
// as a corrupt peer.
TEST_F(LinkRestartRace, ReceiverRestartDuringASendBurstIsAResetNotABreak) {
  b().send(A, "committed before the restart");
  // A fills its ring toward B, B releases everything, and A learns so.
  const std::string chunk(200, 'x');
  RingProducer& producer = a().link.producer(B);
  while (producer.write(bytes(chunk), 1) == ProduceStatus::ok) {
  }
  (void)a().link.publish(B);
  while (b().receive(A).has_value()) {
  }
  ASSERT_EQ(producer.write(bytes(chunk), 1), ProduceStatus::ok);
  // B restarts and acks A's unchanged epoch before A polls again.
  cells.init(B);
  b().poll();
  ASSERT_EQ(b().link.state(A), PairState::acked);
  // A keeps sending, as a running sender does, until the ring says no.
  ProduceStatus status = ProduceStatus::ok;
  for (int i = 0; i < 1000 && status == ProduceStatus::ok; ++i) {
    status = producer.write(bytes(chunk), 1);
  }
  ASSERT_TRUE(status == ProduceStatus::broken || status == ProduceStatus::full)
      << testing::PrintToString(status);
  const RingError error = producer.diagnostic().error;
  if (status == ProduceStatus::broken) {
    a().link.report_ring_broken(B, [&](const LinkEvent& event) { a().events.push_back(event); });
  }
  a().poll();
  EXPECT_EQ(a().count(Kind::peer_broken, B), 0) << "A's ring toward B broke: " << describe(error);
  EXPECT_EQ(a().count(Kind::peer_reset, B), 1);
  EXPECT_EQ(a().receive_all(B), std::vector<std::string>{"committed before the restart"});
}

// ---- delivery counter ------------------------------------------------------

constexpr int kSent = 10;
constexpr int kReleased = 4;

// A sends kSent messages to B; B releases kReleased of them.
void deliver_some(Cells& cells) {
  for (int i = 0; i < kSent; ++i) cells[A].send(B, "message " + std::to_string(i));
  for (int i = 0; i < kReleased; ++i) {
    ASSERT_TRUE(cells[B].receive(A).has_value());
    cells[B].link.note_delivered(A);
  }
}

void expect_count(DeliveryCount count, bool known, std::uint64_t delivered) {
  EXPECT_EQ(count.known, known);
  if (known) {
    EXPECT_EQ(count.delivered, delivered);
  }
}

TEST_F(RunningPair, SenderReadsHowManyMessagesADeadReceiverReleased) {
  ASSERT_NO_FATAL_FAILURE(deliver_some(cells));
  const std::uint32_t old_b = b().link.epoch();
  cells.kill(B);
  expect_count(a().link.delivered_in_session(B, a().link.epoch(), old_b), true, kReleased);
}

TEST_F(RunningPair, EndedSessionCountSurvivesTheReceiversRestart) {
  ASSERT_NO_FATAL_FAILURE(deliver_some(cells));
  const std::uint32_t old_b = b().link.epoch();
  cells.kill(B);
  cells.respawn(B);
  cells.init(B);
  ASSERT_TRUE(cells.settle([&] { return a().link.state(B) == PairState::draining; }));
  a().link.finish_drain(B);
  ASSERT_TRUE(cells.settle([&] { return cells.all_running(); })) << cells.states();
  expect_count(a().link.delivered_in_session(B, a().link.epoch(), old_b), true, kReleased);
  expect_count(a().link.delivered_in_session(B, a().link.epoch(), b().link.epoch()), true, 0);
}

TEST_F(RunningPair, RestartedSenderFindsItsPreviousIncarnationsCount) {
  ASSERT_NO_FATAL_FAILURE(deliver_some(cells));
  const std::uint32_t old_a = a().link.epoch();
  cells.init(A);
  ASSERT_TRUE(cells.settle([&] { return b().link.state(A) == PairState::draining; }));
  b().link.finish_drain(A);
  ASSERT_TRUE(cells.settle([&] { return cells.all_running(); })) << cells.states();
  expect_count(a().link.delivered_in_session(B, old_a, 0), true, kReleased);
  expect_count(a().link.delivered_in_session(B, a().link.epoch(), 0), true, 0);
}

TEST_F(RunningPair, CountOfASessionTheReceiverNeverHadIsUnknown) {
  ASSERT_NO_FATAL_FAILURE(deliver_some(cells));
  expect_count(a().link.delivered_in_session(B, a().link.epoch() + 7, 0), false, 0);
  expect_count(a().link.delivered_in_session(B, a().link.epoch(), b().link.epoch() + 7), false, 0);
  expect_count(a().link.delivered_in_session(B, 0, 0), false, 0);
}

// ---- hostile peer ----------------------------------------------------------

// B's header disagrees with the link after B's init(): A must refuse B.
void expect_header_mismatch(void (*corrupt)(LinkHeader&)) {
  Cells cells(2);
  cells.init(A);
  cells.init(B);
  corrupt(header_of(cells.loopback, B));
  for (int round = 0; round < kMaxRounds; ++round) cells.poll_live();
  EXPECT_EQ(cells[A].link.state(B), PairState::broken);
  EXPECT_EQ(cells[A].link.fault(B), PairFault::header_mismatch);
  EXPECT_EQ(cells[A].count(Kind::peer_broken, B), 1);
  EXPECT_EQ(cells[A].count(Kind::peer_up, B), 0);
  EXPECT_FALSE(cells[B].link.running(A));
}

TEST(LinkHostile, WrongPeerCountInThePeersHeaderBreaksThePair) {
  expect_header_mismatch([](LinkHeader& header) {
    std::atomic_ref<std::uint32_t>(header.peer_count).store(3, std::memory_order_relaxed);
  });
}

TEST(LinkHostile, WrongRingSlotSizeInThePeersHeaderBreaksThePair) {
  expect_header_mismatch([](LinkHeader& header) {
    std::atomic_ref<std::uint64_t>(header.ring_slot_size)
        .fetch_add(kCacheLine, std::memory_order_relaxed);
  });
}

TEST(LinkHostile, GarbageInTheStateWordLeavesThePairIdle) {
  std::vector<std::uint32_t> garbage = {0x4, 0xff, 0xffffffff, 0x2 /* READY, epoch 0 */};
  std::mt19937 rng(7);
  for (int i = 0; i < 20; ++i) garbage.push_back((rng() & ~0xffU) | (4 + rng() % 252));
  for (const std::uint32_t raw : garbage) {
    Cells cells(2);
    cells.init(A);
    cells.init(B);
    cells.loopback.device(B).set_state(raw);  // B is the hostile one
    for (int round = 0; round < kMaxRounds; ++round) cells.poll_live();
    EXPECT_EQ(cells[A].link.state(B), PairState::idle) << std::hex << "state word 0x" << raw;
    EXPECT_TRUE(cells[A].events.empty()) << std::hex << "state word 0x" << raw;
    EXPECT_FALSE(cells[B].link.running(A));
  }
}

// ---- geometry --------------------------------------------------------------

TEST(LinkGeometry, RejectsPeerCountsOutside2To16) {
  LinkGeometry geometry;
  EXPECT_FALSE(LinkGeometry::compute(0, k64KiB, geometry));
  EXPECT_FALSE(LinkGeometry::compute(1, k64KiB, geometry));
  EXPECT_FALSE(LinkGeometry::compute(17, k1MiB, geometry));
  EXPECT_TRUE(LinkGeometry::compute(16, k1MiB, geometry));
}

TEST(LinkGeometry, SmallestSectionHoldsA64ByteRingTowardEveryPeer) {
  for (std::uint32_t peers = 2; peers <= ivshmem::kMaxPeers; ++peers) {
    const std::uint64_t smallest =
        rings_offset(peers) + (peers - 1) * (kProducerAreaOverhead + kMinRingCapacity);
    LinkGeometry geometry;
    ASSERT_TRUE(LinkGeometry::compute(peers, smallest, geometry)) << peers << " peers";
    EXPECT_EQ(geometry.ring_capacity_bytes(), kMinRingCapacity) << peers << " peers";
    EXPECT_FALSE(LinkGeometry::compute(peers, smallest - 1, geometry)) << peers << " peers";
  }
  LinkGeometry geometry;
  EXPECT_FALSE(LinkGeometry::compute(2, 0, geometry));
  EXPECT_FALSE(LinkGeometry::compute(2, rings_offset(2), geometry));
}

// Version 2: fifteen 2 KiB credit tables come before the rings.
TEST(LinkGeometry, SixteenPeersOnTheDefaultSectionGet1KiBRings) {
  LinkGeometry geometry;
  ASSERT_TRUE(LinkGeometry::compute(16, k64KiB, geometry));
  EXPECT_EQ(geometry.ring_slot_size(), 2048U);
  EXPECT_EQ(geometry.ring_capacity_bytes(), 1024U);
}

TEST(LinkGeometry, AreasNeverOverlapAndStayInsideTheSection) {
  static_assert(kLinkHeaderOffset + sizeof(LinkHeader) <= kPeerSlotsOffset);
  EXPECT_LE(LinkGeometry::peer_slot_offset(ivshmem::kMaxPeers - 1) + sizeof(PeerSlot),
            kConsumerAreasOffset);
  EXPECT_LE(LinkGeometry::consumer_area_offset(ivshmem::kMaxPeers - 1) + kConsumerAreaSize,
            kCreditTablesOffset);
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 2000; ++trial) {
    const auto peers = static_cast<std::uint32_t>(2 + rng() % 15);
    const std::uint64_t size =
        rings_offset(peers) + rng() % (std::uint64_t{1} << (10 + rng() % 14));
    LinkGeometry geometry;
    if (!LinkGeometry::compute(peers, size, geometry)) continue;
    const std::uint64_t slot = geometry.ring_slot_size();
    ASSERT_EQ(slot % kCacheLine, 0U);
    ASSERT_LE(kProducerAreaOverhead + geometry.ring_capacity_bytes(), slot);
    for (std::uint32_t owner = 0; owner < peers; ++owner) {
      std::vector<std::uint64_t> offsets;
      for (std::uint32_t peer = 0; peer < peers; ++peer) {
        if (peer != owner) offsets.push_back(geometry.ring_slot_offset(owner, peer));
      }
      std::sort(offsets.begin(), offsets.end());
      ASSERT_GE(offsets.front(), rings_offset(peers));
      for (std::uint32_t peer = 0; peer < peers; ++peer) {
        if (peer == owner) continue;
        const std::uint64_t table = LinkGeometry::credit_table_offset(owner, peer);
        ASSERT_GE(table, kCreditTablesOffset);
        ASSERT_LE(table + sizeof(CreditTable), rings_offset(peers));
      }
      for (std::size_t i = 0; i + 1 < offsets.size(); ++i) {
        ASSERT_LE(offsets[i] + slot, offsets[i + 1]) << peers << " peers, section " << size;
      }
      ASSERT_LE(offsets.back() + slot, size) << peers << " peers, section " << size;
    }
  }
}

// ---- ring features the message layer relies on ----------------------------

TEST_F(RunningPair, MoreFragmentsFlagReachesTheConsumersRecord) {
  RingProducer& producer = a().link.producer(B);
  RingProducer::Reservation first;
  ASSERT_EQ(producer.reserve(5, 9, first), ProduceStatus::ok);
  std::memcpy(first.payload.data(), "part1", 5);
  ASSERT_EQ(producer.commit(first, 5, kRecordMoreFragments), ProduceStatus::ok);
  a().send(B, "last", 9);
  Record record;
  ASSERT_EQ(b().link.consumer(A).peek(record), ConsumeStatus::ok);
  EXPECT_EQ(record.flags, kRecordMoreFragments);
  EXPECT_EQ(record.channel, 9);
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(record.payload.data()), 5), "part1");
  ASSERT_EQ(b().link.consumer(A).release(record), ConsumeStatus::ok);
  ASSERT_EQ(b().link.consumer(A).peek(record), ConsumeStatus::ok);
  EXPECT_EQ(record.flags, 0);
}

TEST_F(RunningPair, AbandonedReservationIsNeverDelivered) {
  RingProducer& producer = a().link.producer(B);
  RingProducer::Reservation lost;
  ASSERT_EQ(producer.reserve(100, 2, lost), ProduceStatus::ok);
  ASSERT_EQ(producer.abandon(lost), ProduceStatus::ok);
  (void)a().link.publish(B);
  Record record;
  EXPECT_EQ(b().link.consumer(A).peek(record), ConsumeStatus::empty);
  a().send(B, "kept", 2);
  EXPECT_EQ(b().receive_all(A), std::vector<std::string>{"kept"});
}

TEST_F(RunningPair, CommitWithAnUnknownFlagIsABadReservation) {
  RingProducer& producer = a().link.producer(B);
  for (const std::uint16_t flags : {std::uint16_t{1U << 2}, kRecordPadding, std::uint16_t{0x8000},
                                    std::uint16_t{kRecordMoreFragments | (1U << 5)}}) {
    RingProducer::Reservation reservation;
    ASSERT_EQ(producer.reserve(8, 1, reservation), ProduceStatus::ok);
    EXPECT_EQ(producer.commit(reservation, 8, flags), ProduceStatus::bad_reservation)
        << "flags 0x" << std::hex << flags;
    ASSERT_EQ(producer.abandon(reservation), ProduceStatus::ok);
  }
  (void)a().link.publish(B);
  Record record;
  EXPECT_EQ(b().link.consumer(A).peek(record), ConsumeStatus::empty);
}

}  // namespace
}  // namespace cellink::transports
